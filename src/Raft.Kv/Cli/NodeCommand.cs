using System.Net;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Raft.Kv.Etcd.Serverpb;
using Raft.Kv.Server;
using Raft.Kv.State;
using Raft.Storage.Postgres;
using Raft.Transport.Grpc.Wire;

namespace Raft.Kv.Cli;

/// <summary>
/// 'raftv node' (and its older name 'raftv serve'): one member of a cluster, for a real deployment
/// across machines, configured as etcd is (see <see cref="NodeConfig"/> for where settings come from).
/// </summary>
internal static class NodeCommand
{
    public const string Usage =
        "raftv node [--name NAME] [--data-dir DIR] [--pg CONNSTRING]\n"
        + "             [--listen-client-urls URL] [--advertise-client-urls URL] [--listen-peer-urls URL] [--initial-advertise-peer-urls URL]\n"
        + "             [--initial-cluster NAME=PEER_URL,...] [--initial-cluster-state new|existing] [--initial-cluster-token TOKEN] [--member-id HEX]\n"
        + "             [--heartbeat-interval MS] [--election-timeout MS] [--snapshot-count N] [--max-request-bytes N] [--max-txn-ops N]\n"
        + "             [--auto-compaction-retention REVISIONS (default 10000; 0 keeps all history)]\n"
        + "             [--cert-file F --key-file F [--trusted-ca-file F] [--client-cert-auth]]\n"
        + "             [--peer-cert-file F --peer-key-file F --peer-trusted-ca-file F [--peer-client-cert-auth]] [--config-file FILE.json]\n"
        + "  Every setting may also come from the environment (RAFTV_NAME, RAFTV_INITIAL_CLUSTER, ...) or a JSON file (--config-file,\n"
        + "  keys named as the flags); flags win over the environment, which wins over the file. Defaults are etcd's: name 'default',\n"
        + "  clients at http://localhost:2379, peers at http://localhost:2380, data in NAME.raftv.\n"
        + "  Without --pg the member keeps a private PostgreSQL in DATA_DIR/pg (as root, DATA_DIR must be reachable by the postgres user).\n"
        + "  Member ids of a new cluster follow from --initial-cluster and the token, so every member computes the same ones. With\n"
        + "  --initial-cluster-state existing the member was added first ('raftv member add' or 'etcdctl member add') and learns its id\n"
        + "  from the members listed in --initial-cluster; --member-id gives it when they cannot be asked. DATA_DIR/member.json remembers\n"
        + "  the identity: a restart reuses it, whatever the initial-* settings say.\n"
        + "  raftv serve --id ID --member ID,PEER_URL,CLIENT_URL [--member ...] --pg CONNSTRING [--name NAME] [--stop-on-stdin-eof]\n"
        + "  is the older spelling, used by 'raftv up': explicit ids and URLs for every member.";

    /// <summary>etcd's default --max-request-bytes (1.5 MiB).</summary>
    public const int DefaultMaxRequestBytes = 1536 * 1024;

    public static Task<int> Run(CommandArgs args, TextWriter stdout, TextWriter stderr, CancellationToken ct) =>
        RunAsync(args, NodeConfig.ProcessEnvironment(), stdout, stderr, ct);

    internal static async Task<int> RunAsync(CommandArgs args, IReadOnlyDictionary<string, string> environment, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var legacyId = args.Option("--id");
        var legacyMembers = args.Options("--member");
        var stopOnEof = args.Flag("--stop-on-stdin-eof");
        var config = NodeConfig.Read(args, environment);
        args.EnsureNoneLeft();
        foreach (var w in config.Warnings) stderr.WriteLine($"raftv node: warning: {w}");
        var plan = NodePlan.Resolve(config, legacyId, legacyMembers);

        using var stop = StopSignal(ct, out var signals);
        using var signalScope = signals;
        if (stopOnEof)
            _ = Task.Run(async () =>
            {
                // 'raftv up' closes our stdin to stop us cleanly.
                var input = Console.OpenStandardInput();
                var buffer = new byte[64];
                while (await input.ReadAsync(buffer) > 0) { }
                await stop.CancelAsync();
            }, CancellationToken.None);

        LocalPostgres? privatePg = null;
        try
        {
            var identity = await plan.IdentifyAsync(stop.Token);
            var pg = plan.Pg;
            if (pg is null)
            {
                privatePg = await PrivatePostgres.StartAsync(Path.Combine(plan.DataDir, "pg"), "raftv", stop.Token);
                pg = privatePg.ConnectionString;
            }
            var options = plan.ServerOptions(identity, pg);
            try
            {
                options.Validate();
            }
            catch (ArgumentException e)
            {
                throw new CommandArgsException(e.Message);
            }
            var name = options.Name ?? options.Self.Name;
            await using var server = await StartServerAsync(options, name, stop.Token);
            plan.Remember(identity);
            stdout.WriteLine($"{name} ({options.NodeId:x}) serving etcd v3 clients at {options.Self.ClientUrl}, peers at {options.Self.PeerUrl}");
            stdout.Flush();
            await Task.WhenAny(server.Removed, server.RaftLoop, Task.Delay(Timeout.Infinite, stop.Token)).ContinueWith(_ => { }, CancellationToken.None);
            if (server.RaftLoop.IsFaulted && !stop.IsCancellationRequested)
            {
                // Crash-only, as etcd on a storage error: a member whose raft loop died would otherwise stay up without
                // serving; exiting lets a supervisor restart it from its durable state.
                stderr.WriteLine($"{name} ({options.NodeId:x}): the raft loop failed ({server.RaftLoop.Exception?.GetBaseException().Message}); exiting");
                return 1;
            }
            if (server.Removed.IsCompleted && !stop.IsCancellationRequested)
            {
                // Like etcd: a member removed from the cluster stops; the MemberRemove answer gets a moment to leave first.
                stdout.WriteLine($"{name} ({options.NodeId:x}) was removed from the cluster; stopping");
                await Task.Delay(TimeSpan.FromSeconds(1), CancellationToken.None);
            }
            stdout.WriteLine($"{name} stopping");
            return 0;
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            stdout.WriteLine("stopped before serving");
            return 0;
        }
        finally
        {
            if (privatePg is not null) await privatePg.StopAsync(cancellationToken: CancellationToken.None);
        }
    }

    private static async Task<KvServer> StartServerAsync(KvServerOptions options, string name, CancellationToken ct)
    {
        try
        {
            return await KvServer.StartAsync(options, new StderrLogger(name), ct);
        }
        catch (IOException e) when (e.InnerException is System.Net.Sockets.SocketException { SocketErrorCode: System.Net.Sockets.SocketError.AddressAlreadyInUse }
                                    || e.Message.Contains("address already in use", StringComparison.OrdinalIgnoreCase))
        {
            throw new NodeStartException($"{name}: {e.Message} (is another member or etcd using the port?)");
        }
        catch (Raft.Kv.Storage.KvStoreException e)
        {
            throw new NodeStartException($"{name}: {e.Message}");
        }
        catch (Npgsql.NpgsqlException e)
        {
            throw new NodeStartException($"{name}: PostgreSQL: {e.Message}");
        }
        catch (Raft.Storage.Postgres.PostgresStorageException e)
        {
            // The raft log's storage says what went wrong (unreachable, no such database, ...) and what to do.
            throw new NodeStartException($"{name}: PostgreSQL: {e.Message}");
        }
    }

    /// <summary>Cancelled by Ctrl-C or SIGTERM.</summary>
    internal static CancellationTokenSource StopSignal(CancellationToken outer, out IDisposable registrations)
    {
        var stop = CancellationTokenSource.CreateLinkedTokenSource(outer);
        var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });
        var interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.Cancel(); });
        registrations = new Both(term, interrupt);
        return stop;
    }

    private sealed class Both(IDisposable a, IDisposable b) : IDisposable
    {
        public void Dispose() { a.Dispose(); b.Dispose(); }
    }

    /// <summary>Warnings and errors to stderr; members' stderr is shown by 'raftv up'.</summary>
    internal sealed class StderrLogger(string name) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Warning;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!IsEnabled(logLevel)) return;
            Console.Error.WriteLine($"{logLevel} {name}: {formatter(state, exception)}{(exception is null ? "" : " " + exception)}");
        }
    }
}

/// <summary>A member could not start for a reason outside its arguments (a port taken, PostgreSQL unreachable...).</summary>
internal sealed class NodeStartException(string message) : Exception(message);

/// <summary>Who this member is and who it starts with: its id and the member list given to the server.</summary>
internal sealed record NodeIdentity(ulong Id, IReadOnlyList<KvMember> Members, bool JoinExisting);

/// <summary>A member's settings, checked and resolved; identity (ids) comes after, from the cluster or member.json.</summary>
internal sealed record NodePlan
{
    public required string Name { get; init; }
    public required string DataDir { get; init; }
    public string? Pg { get; init; }
    public required string ListenClientUrl { get; init; }
    public required string AdvertiseClientUrl { get; init; }
    public required string ListenPeerUrl { get; init; }
    public required string AdvertisePeerUrl { get; init; }
    /// <summary>--initial-cluster: names and peer URLs, in the order given.</summary>
    public required IReadOnlyList<(string Name, string PeerUrl)> InitialCluster { get; init; }
    public required bool JoinExisting { get; init; }
    public required string ClusterToken { get; init; }
    public ulong? MemberId { get; init; }
    /// <summary>The older 'serve' spelling: every member's id and URLs given.</summary>
    public NodeIdentity? Explicit { get; init; }
    public TimeSpan HeartbeatInterval { get; init; } = TimeSpan.FromMilliseconds(100);
    public int ElectionTicks { get; init; } = 10;
    public ulong SnapshotCount { get; init; } = 10_000;
    public int MaxRequestBytes { get; init; } = NodeCommand.DefaultMaxRequestBytes;
    public int MaxTxnOps { get; init; } = KvApplier.DefaultMaxTxnOps;
    public long AutoCompactionRetention { get; init; } = 10_000;
    public TlsFiles? ClientTls { get; init; }
    public TlsFiles? PeerTls { get; init; }
    /// <summary>Whether the data directory is ours to write member.json to (not for the older spelling without --data-dir).</summary>
    public bool KeepsIdentity { get; init; } = true;

    public string IdentityFile => Path.Combine(DataDir, "member.json");

    public static NodePlan Resolve(NodeConfig c, string? legacyId, IReadOnlyList<string> legacyMembers)
    {
        var name = c.Get("name") ?? "default";
        if (string.IsNullOrWhiteSpace(name) || name.Contains('=') || name.Contains(','))
            throw new CommandArgsException($"{c.SourceOf("name")} '{name}' is not a member name (not empty, no '=' or ',')");

        var heartbeatMs = c.Long("heartbeat-interval", 100, 1);
        var electionMs = c.Long("election-timeout", 1000, 1);
        if (electionMs < 5 * heartbeatMs)
            throw new CommandArgsException($"--election-timeout ({electionMs} ms) must be at least 5 times --heartbeat-interval ({heartbeatMs} ms)");
        if (electionMs > 50_000) throw new CommandArgsException($"--election-timeout ({electionMs} ms) must be at most 50000 ms");
        var maxRequest = c.Long("max-request-bytes", NodeCommand.DefaultMaxRequestBytes, 1);
        // Room for gRPC's own framing under the 2 GiB a message may take.
        if (maxRequest > int.MaxValue - 1024 * 1024) throw new CommandArgsException($"--max-request-bytes ({maxRequest}) must be below {int.MaxValue - 1024 * 1024}");
        var maxTxnOps = c.Long("max-txn-ops", KvApplier.DefaultMaxTxnOps, 1);
        if (maxTxnOps > int.MaxValue) throw new CommandArgsException($"--max-txn-ops ({maxTxnOps}) is too large");
        var snapshotCount = c.Long("snapshot-count", 10_000, 1);
        if (c.Get("auto-compaction-mode") is { } mode && mode != "revision")
            throw new CommandArgsException($"{c.SourceOf("auto-compaction-mode")} must be revision, not '{mode}': raftv keeps a number of revisions");
        var retention = c.Long("auto-compaction-retention", 10_000, 0);

        var state = c.Get("initial-cluster-state") ?? "new";
        if (state is not ("new" or "existing"))
            throw new CommandArgsException($"{c.SourceOf("initial-cluster-state")} must be new or existing, not '{state}'");
        var token = c.Get("initial-cluster-token") ?? "raftv-cluster";
        if (token.Length == 0) throw new CommandArgsException($"{c.SourceOf("initial-cluster-token")} must not be empty");
        ulong? memberId = c.Get("member-id") is { } idText ? ParseHexId(idText, c.SourceOf("member-id")) : null;

        var clientTls = Tls(c, "");
        var peerTls = Tls(c, "peer-");

        var listenClient = SingleUrl(c, "listen-client-urls", clientTls is null ? "http://localhost:2379" : "https://localhost:2379", listen: true);
        var listenPeer = SingleUrl(c, "listen-peer-urls", peerTls is null ? "http://localhost:2380" : "https://localhost:2380", listen: true);
        var advertiseClient = c.Has("advertise-client-urls") ? SingleUrl(c, "advertise-client-urls", "", listen: false)
            : IsUnspecified(listenClient) ? throw new CommandArgsException($"--advertise-client-urls is required when --listen-client-urls is {listenClient}: clients and other members need an address to reach")
            : listenClient;
        var advertisePeer = c.Has("initial-advertise-peer-urls") ? SingleUrl(c, "initial-advertise-peer-urls", "", listen: false)
            : IsUnspecified(listenPeer) ? throw new CommandArgsException($"--initial-advertise-peer-urls is required when --listen-peer-urls is {listenPeer}")
            : listenPeer;

        NodeIdentity? explicitIdentity = null;
        IReadOnlyList<(string, string)> initialCluster;
        if (legacyId is not null || legacyMembers.Count > 0)
        {
            if (c.Has("initial-cluster")) throw new CommandArgsException("give either --id/--member (every member's id and URLs) or --initial-cluster, not both");
            if (legacyId is null) throw new CommandArgsException("--member needs --id: which of the members this one is");
            if (legacyMembers.Count == 0) throw new CommandArgsException("--id needs --member ID,PEER_URL,CLIENT_URL for every member, this one included");
            var id = ParseMemberId(legacyId, "--id");
            var members = legacyMembers.Select(spec =>
            {
                var parts = spec.Split(',');
                if (parts.Length != 3) throw new CommandArgsException($"--member '{spec}' is not ID,PEER_URL,CLIENT_URL");
                var mid = ParseMemberId(parts[0], "--member");
                return new KvMember(mid, $"node{mid}", parts[1], parts[2]);
            }).ToList();
            var self = members.FirstOrDefault(m => m.Id == id) ?? throw new CommandArgsException($"--id {legacyId} is not among the --member entries");
            if (!c.Has("name")) name = self.Name;
            explicitIdentity = new NodeIdentity(id, members, state == "existing");
            // The URLs of --member are this member's listen and advertised URLs alike.
            listenClient = advertiseClient = self.ClientUrl;
            listenPeer = advertisePeer = self.PeerUrl;
            initialCluster = [];
        }
        else
        {
            initialCluster = ParseInitialCluster(c.Get("initial-cluster") ?? $"{name}={advertisePeer}", c.SourceOf("initial-cluster"));
            var mine = initialCluster.Where(m => m.Item1 == name).ToList();
            if (mine.Count == 0)
                throw new CommandArgsException($"{c.SourceOf("initial-cluster")} does not list this member's name '{name}' (give --name, or add {name}={advertisePeer})");
            if (!SameUrl(mine[0].Item2, advertisePeer))
                throw new CommandArgsException($"{c.SourceOf("initial-cluster")} has {name}={mine[0].Item2} but --initial-advertise-peer-urls is {advertisePeer}: they must agree");
        }
        var dataDir = c.Get("data-dir") ?? $"{name}.raftv";

        return new NodePlan
        {
            Name = name,
            DataDir = Path.GetFullPath(dataDir),
            Pg = c.Get("pg") is { Length: > 0 } pg ? pg : null,
            ListenClientUrl = listenClient,
            AdvertiseClientUrl = advertiseClient,
            ListenPeerUrl = listenPeer,
            AdvertisePeerUrl = advertisePeer,
            InitialCluster = initialCluster,
            JoinExisting = state == "existing",
            ClusterToken = token,
            MemberId = memberId,
            Explicit = explicitIdentity,
            HeartbeatInterval = TimeSpan.FromMilliseconds(heartbeatMs),
            ElectionTicks = (int)Math.Max(2, electionMs / heartbeatMs),
            SnapshotCount = (ulong)snapshotCount,
            MaxRequestBytes = (int)maxRequest,
            MaxTxnOps = (int)maxTxnOps,
            AutoCompactionRetention = retention,
            ClientTls = clientTls,
            PeerTls = peerTls,
            KeepsIdentity = explicitIdentity is null || c.Has("data-dir"),
        };
    }

    private static TlsFiles? Tls(NodeConfig c, string prefix)
    {
        var cert = c.Get(prefix + "cert-file");
        var key = c.Get(prefix + "key-file");
        var ca = c.Get(prefix + "trusted-ca-file");
        var auth = c.Bool(prefix + "client-cert-auth");
        if (cert is null && key is null)
        {
            if (ca is not null || auth)
                throw new CommandArgsException($"--{prefix}trusted-ca-file and --{prefix}client-cert-auth need --{prefix}cert-file and --{prefix}key-file");
            return null;
        }
        if (cert is null || key is null) throw new CommandArgsException($"--{prefix}cert-file and --{prefix}key-file go together: give both");
        var tls = new TlsFiles(cert, key, ca, auth);
        try
        {
            tls.Validate(prefix);
        }
        catch (ArgumentException e)
        {
            throw new CommandArgsException(e.Message);
        }
        return tls;
    }

    private static string SingleUrl(NodeConfig c, string setting, string fallback, bool listen)
    {
        var text = c.Get(setting) ?? fallback;
        var urls = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (urls.Length == 0) throw new CommandArgsException($"{c.SourceOf(setting)} is empty");
        if (urls.Length > 1) throw new CommandArgsException($"{c.SourceOf(setting)}: raftv serves one URL per member, not {urls.Length} ('{text}')");
        CheckUrl(urls[0], c.SourceOf(setting), listen);
        return urls[0].TrimEnd('/');
    }

    internal static void CheckUrl(string url, string what, bool listen)
    {
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
            throw new CommandArgsException($"{what} '{url}' is not an http:// or https:// URL");
        if (uri.AbsolutePath != "/" || uri.Query.Length > 0) throw new CommandArgsException($"{what} '{url}' must not have a path");
        if (uri.IsDefaultPort && !url.Contains($":{uri.Port}", StringComparison.Ordinal))
            throw new CommandArgsException($"{what} '{url}' needs a port");
        if (listen && uri.Host != "localhost" && !IPAddress.TryParse(uri.Host.Trim('[', ']'), out _))
            throw new CommandArgsException($"{what} '{url}' must name an IP address (or localhost) to listen on, not a host name");
    }

    private static bool IsUnspecified(string url)
    {
        var host = new Uri(url).Host.Trim('[', ']');
        return IPAddress.TryParse(host, out var ip) && (ip.Equals(IPAddress.Any) || ip.Equals(IPAddress.IPv6Any));
    }

    internal static bool SameUrl(string a, string b) =>
        Uri.TryCreate(a, UriKind.Absolute, out var x) && Uri.TryCreate(b, UriKind.Absolute, out var y)
        && string.Equals(x.GetLeftPart(UriPartial.Authority), y.GetLeftPart(UriPartial.Authority), StringComparison.OrdinalIgnoreCase);

    internal static IReadOnlyList<(string Name, string PeerUrl)> ParseInitialCluster(string text, string what)
    {
        var list = new List<(string, string)>();
        foreach (var entry in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var eq = entry.IndexOf('=');
            if (eq <= 0 || eq == entry.Length - 1) throw new CommandArgsException($"{what}: '{entry}' is not NAME=PEER_URL");
            var (n, u) = (entry[..eq], entry[(eq + 1)..].TrimEnd('/'));
            CheckUrl(u, $"{what} entry {n}", listen: false);
            if (list.Any(m => m.Item1 == n))
                throw new CommandArgsException($"{what}: member {n} is listed twice; raftv serves one peer URL per member");
            if (list.Any(m => SameUrl(m.Item2, u)))
                throw new CommandArgsException($"{what}: peer URL {u} is given to two members");
            list.Add((n, u));
        }
        if (list.Count == 0) throw new CommandArgsException($"{what} is empty");
        return list;
    }

    /// <summary>A member id: decimal, or hexadecimal with 0x (etcdctl prints ids in hex).</summary>
    internal static ulong ParseMemberId(string text, string what)
    {
        var ok = text.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
            ? ulong.TryParse(text.AsSpan(2), System.Globalization.NumberStyles.AllowHexSpecifier, null, out var id)
            : ulong.TryParse(text, out id);
        return ok && id != 0 ? id : throw new CommandArgsException($"{what} '{text}' is not a member id (decimal, or hex with 0x; not 0)");
    }

    /// <summary>A member id as etcd prints it: hexadecimal, with or without 0x.</summary>
    internal static ulong ParseHexId(string text, string what)
    {
        var digits = text.StartsWith("0x", StringComparison.OrdinalIgnoreCase) ? text[2..] : text;
        return ulong.TryParse(digits, System.Globalization.NumberStyles.AllowHexSpecifier, null, out var id) && id != 0
            ? id
            : throw new CommandArgsException($"{what} '{text}' is not a member id (hexadecimal as etcdctl prints it, not 0)");
    }

    /// <summary>
    /// The id of a member of a new cluster: a hash of its peer URL and the cluster token, so every
    /// member computes everyone's id from the same --initial-cluster, and two clusters with different
    /// tokens never share ids.
    /// </summary>
    internal static ulong ComputeMemberId(string peerUrl, string token)
    {
        var normalized = new Uri(peerUrl).GetLeftPart(UriPartial.Authority).ToLowerInvariant();
        var hash = SHA256.HashData(Encoding.UTF8.GetBytes($"raftv-member\n{token}\n{normalized}"));
        var id = System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(hash);
        return id == 0 ? 1 : id;
    }

    // ---- identity --------------------------------------------------------------------------

    private sealed record StoredIdentity(string Id, string Name, string ClusterToken, bool JoinExisting, List<StoredMember> Members);
    private sealed record StoredMember(string Id, string Name, string PeerUrl, string ClientUrl);
    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.CamelCase };

    /// <summary>
    /// Who this member is: from member.json when it started before (the initial-* settings then no
    /// longer matter, as with etcd's data directory), from --id/--member, computed from
    /// --initial-cluster for a new cluster, or asked of the running members when joining one.
    /// </summary>
    public async Task<NodeIdentity> IdentifyAsync(CancellationToken ct)
    {
        if (KeepsIdentity && File.Exists(IdentityFile))
        {
            StoredIdentity stored;
            try
            {
                stored = JsonSerializer.Deserialize<StoredIdentity>(await File.ReadAllTextAsync(IdentityFile, ct), Json)
                         ?? throw new JsonException("empty");
            }
            catch (JsonException e)
            {
                throw new CommandArgsException($"{IdentityFile} is not a member identity ({e.Message}); remove it only if this member's data is gone too");
            }
            var id = ParseHexId(stored.Id, IdentityFile);
            if (stored.Name != Name) throw new CommandArgsException($"{IdentityFile} belongs to member '{stored.Name}', not '{Name}': give --name {stored.Name} or another --data-dir");
            var members = stored.Members.Select(m => new KvMember(ParseHexId(m.Id, IdentityFile), m.Name, m.PeerUrl, m.ClientUrl)).ToList();
            // This member's URLs are today's settings (a restart may move them, as etcd allows for client URLs).
            members = [.. members.Select(m => m.Id == id ? m with { ClientUrl = AdvertiseClientUrl } : m)];
            return new NodeIdentity(id, members, stored.JoinExisting);
        }
        if (Explicit is not null) return Explicit;
        if (!JoinExisting)
        {
            var members = InitialCluster.Select(m =>
                new KvMember(ComputeMemberId(m.PeerUrl, ClusterToken), m.Name, m.PeerUrl, m.Name == Name ? AdvertiseClientUrl : "")).ToList();
            if (members.Select(m => m.Id).Distinct().Count() != members.Count)
                throw new CommandArgsException("two members of --initial-cluster hash to the same id; change --initial-cluster-token");
            return new NodeIdentity(members.Single(m => m.Name == Name).Id, members, false);
        }
        return await DiscoverAsync(ct);
    }

    /// <summary>Asks the running members (at their peer URLs) for the member list and finds this member in it by its peer URL.</summary>
    private async Task<NodeIdentity> DiscoverAsync(CancellationToken ct)
    {
        var others = InitialCluster.Where(m => m.Name != Name).ToList();
        var errors = new List<string>();
        foreach (var (_, url) in others)
        {
            try
            {
                using var client = new GrpcClient(new GrpcClientOptions
                {
                    Address = new Uri(url),
                    ConnectTimeout = TimeSpan.FromSeconds(3),
                    Tls = PeerTls is { } t ? new GrpcTlsFiles(t.CertFile, t.KeyFile, t.TrustedCaFile) : null,
                });
                var list = await client.UnaryAsync(EtcdServices.PeerMemberListMethod, new MemberListRequest(),
                    new GrpcCallOptions(Timeout: TimeSpan.FromSeconds(5), CancellationToken: ct));
                var self = list.Members.FirstOrDefault(m => m.PeerURLs.Any(u => SameUrl(u, AdvertisePeerUrl)));
                if (self is null && MemberId is { } given) self = list.Members.FirstOrDefault(m => m.ID == given);
                if (self is null)
                    throw new CommandArgsException(
                        $"the cluster (asked at {url}) has no member with peer URL {AdvertisePeerUrl}: add it first with " +
                        $"'raftv member add {Name} --peer-urls={AdvertisePeerUrl}' (or etcdctl member add), then start it with the settings that prints");
                if (MemberId is { } expected && expected != self.ID)
                    throw new CommandArgsException($"--member-id {expected:x} does not match the id the cluster has for {AdvertisePeerUrl} ({self.ID:x})");
                var members = list.Members.Select(m => new KvMember(m.ID, m.ID == self.ID ? Name : m.Name,
                    m.PeerURLs.FirstOrDefault() ?? "", m.ID == self.ID ? AdvertiseClientUrl : m.ClientURLs.FirstOrDefault() ?? "")).ToList();
                return new NodeIdentity(self.ID, members, true);
            }
            catch (GrpcCallException e)
            {
                errors.Add($"{url}: {e.Message}");
            }
        }
        if (MemberId is { } id)
        {
            // Nobody answered; with the id given, start from --initial-cluster's URLs: the leader's snapshot brings the true table.
            var members = InitialCluster.Select(m => new KvMember(m.Name == Name ? id : ComputeMemberId(m.PeerUrl, ClusterToken), m.Name, m.PeerUrl,
                m.Name == Name ? AdvertiseClientUrl : "")).ToList();
            return new NodeIdentity(id, members, true);
        }
        throw new NodeStartException(others.Count == 0
            ? "--initial-cluster-state existing needs --initial-cluster to list the running members (NAME=PEER_URL) as well as this one"
            : $"could not learn this member's id from the running members ({string.Join("; ", errors)}); give --member-id as 'member add' printed it");
    }

    /// <summary>Records the identity once the member has started, so a restart is the same member.</summary>
    public void Remember(NodeIdentity identity)
    {
        if (!KeepsIdentity || File.Exists(IdentityFile)) return;
        Directory.CreateDirectory(DataDir);
        var stored = new StoredIdentity($"{identity.Id:x}", Name, ClusterToken, identity.JoinExisting,
            [.. identity.Members.Select(m => new StoredMember($"{m.Id:x}", m.Name, m.PeerUrl, m.ClientUrl))]);
        var temp = IdentityFile + ".tmp";
        File.WriteAllText(temp, JsonSerializer.Serialize(stored, Json));
        File.Move(temp, IdentityFile, overwrite: true);
    }

    public KvServerOptions ServerOptions(NodeIdentity identity, string connectionString) => new()
    {
        NodeId = identity.Id,
        Members = identity.Members,
        ConnectionString = connectionString,
        JoinExisting = identity.JoinExisting,
        Name = Name,
        TickInterval = HeartbeatInterval,
        ElectionTick = ElectionTicks,
        HeartbeatTick = 1,
        Compaction = new LogCompactionPolicy(SnapshotCount, SnapshotCount / 2),
        Store = new Raft.Kv.Storage.PostgresKvStoreOptions { MaxTxnOps = MaxTxnOps },
        MaxRequestBytes = MaxRequestBytes,
        AutoCompactionRetention = AutoCompactionRetention,
        ListenClientUrl = ListenClientUrl,
        ListenPeerUrl = ListenPeerUrl,
        ClientTls = ClientTls,
        PeerTls = PeerTls,
    };
}
