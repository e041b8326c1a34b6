using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Raft.Kv.Etcd.Serverpb;
using Raft.Kv.Server;
using Raft.Storage.Postgres;
using Raft.Transport.Grpc.Wire;

namespace Raft.Kv.Cli;

/// <summary>
/// 'raftv up' (a local cluster of member processes, kept in a data directory so that running it
/// again recovers the same cluster) and 'raftv down' (stops one started with --detach, or running
/// in another terminal).
/// </summary>
internal static class UpCommand
{
    public const string UpUsage =
        "raftv up [--nodes N] [--data-dir DIR] [--detach] [--host 127.0.0.1] [--client-ports P1,P2,...] [--peer-ports P1,P2,...]\n"
        + "          [--pg CONNSTRING] [--max-request-bytes N] [--tls]\n"
        + "  Members listen for clients on 2379, 22379, 32379, 42379... and for peers on 2380, 22380, 32380... (etcd's local\n"
        + "  cluster ports) unless --client-ports/--peer-ports say otherwise. Everything lives in DIR (default ./.raftv): the\n"
        + "  cluster's members (cluster.json), a private PostgreSQL (pg/, unless --pg names a server) and logs (logs/).\n"
        + "  Running 'up' again on the same DIR restarts the same members on their data. --detach runs the cluster in the\n"
        + "  background and returns once it has a leader; 'raftv down' stops it. Without --detach, Ctrl-C stops it.\n"
        + "  --tls: a private CA and certificates in DIR/tls; members talk mutual TLS, clients TLS (https:// endpoints);\n"
        + "  the etcdctl flags to use are printed. A cluster made with --tls keeps it.";

    public const string DownUsage = "raftv down [--data-dir DIR]\n  stops the cluster 'raftv up' runs from DIR (default ./.raftv); its data is kept";

    private const string DefaultDataDir = ".raftv";
    private const string StateFile = "cluster.json";
    private const string PidFile = "up.pid";
    private const string ReadyFile = "up.ready";
    private static readonly TimeSpan ReadyTimeout = TimeSpan.FromSeconds(120);
    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.CamelCase };

    /// <summary>The members 'up' runs, as cluster.json keeps them.</summary>
    internal sealed record UpState(string Token, string? Pg, List<UpMember> Members, bool Tls = false);

    /// <summary>One member; <see cref="Removed"/> once 'member remove' took it out (it is not started again).</summary>
    internal sealed record UpMember(ulong Id, string Name, string PeerUrl, string ClientUrl, bool Removed = false);

    /// <summary>The settings of one 'up', as given on the command line.</summary>
    private sealed record UpSettings(int? Nodes, string DataDir, string Host, int[]? ClientPorts, int[]? PeerPorts, string? Pg, int? MaxRequestBytes, bool Tls)
    {
        /// <summary>The same settings as arguments, for the background process of --detach.</summary>
        public List<string> ToArgs()
        {
            var args = new List<string> { "up", "--data-dir", DataDir, "--host", Host };
            if (Nodes is { } n) args.AddRange(["--nodes", n.ToString()]);
            if (ClientPorts is { } c) args.AddRange(["--client-ports", string.Join(',', c)]);
            if (PeerPorts is { } p) args.AddRange(["--peer-ports", string.Join(',', p)]);
            if (Pg is not null) args.AddRange(["--pg", Pg]);
            if (MaxRequestBytes is { } m) args.AddRange(["--max-request-bytes", m.ToString()]);
            if (Tls) args.Add("--tls");
            return args;
        }
    }

    /// <summary>etcd's convention for local clusters: 2379/2380, then 22379/22380, 32379/32380, ...</summary>
    internal static int DefaultPort(int index, bool peer) => (index == 0 ? 2379 : (index + 1) * 10000 + 2379) + (peer ? 1 : 0);

    /// <summary>The most members the default ports serve (62379 is the last below 65536).</summary>
    internal const int MaxDefaultPortNodes = 6;

    private static int[]? Ports(string? text, string flag)
    {
        if (text is null) return null;
        var parts = text.Split(',', StringSplitOptions.TrimEntries);
        var ports = new int[parts.Length];
        for (var i = 0; i < parts.Length; i++)
            if (!int.TryParse(parts[i], out ports[i]) || ports[i] < 1 || ports[i] > 65535)
                throw new CommandArgsException($"{flag}: '{parts[i]}' is not a port (1-65535)");
        return ports;
    }

    private static string DataDirOption(CommandArgs args) =>
        Path.GetFullPath(args.Option("--data-dir") ?? args.Option("--data") ?? DefaultDataDir);

    public static async Task<int> Up(CommandArgs args, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var nodes = args.IntOption("--nodes");
        if (nodes is < 1 or > 9) throw new CommandArgsException("--nodes must be between 1 and 9");
        var dataDir = DataDirOption(args);
        var detach = args.Flag("--detach");
        var host = args.Option("--host") ?? "127.0.0.1";
        if (!IPAddress.TryParse(host, out var address)) throw new CommandArgsException($"--host '{host}' is not an IP address");
        var clientPorts = Ports(args.Option("--client-ports"), "--client-ports");
        var peerPorts = Ports(args.Option("--peer-ports"), "--peer-ports");
        var pg = args.Option("--pg");
        var maxRequestBytes = args.IntOption("--max-request-bytes");
        if (maxRequestBytes is 0) throw new CommandArgsException("--max-request-bytes must be positive");
        var tls = args.Flag("--tls");
        args.EnsureNoneLeft();
        var settings = new UpSettings(nodes, dataDir, host, clientPorts, peerPorts, pg, maxRequestBytes, tls);

        if (RunningSupervisor(dataDir) is { } running)
            throw new UpException($"a cluster is already running from {dataDir} (pid {running}); stop it with: raftv down --data-dir {dataDir}");
        if (detach) return await DetachAsync(settings, stdout, stderr, ct);
        return await SuperviseAsync(settings, address, stdout, stderr, ct);
    }

    // ---- the cluster's state in the data directory -----------------------------------------

    private static UpState NewState(UpSettings s)
    {
        var n = s.Nodes ?? s.ClientPorts?.Length ?? s.PeerPorts?.Length ?? 3;
        if (s.ClientPorts is { } c && c.Length != n) throw new CommandArgsException($"--client-ports lists {c.Length} ports for {n} members");
        if (s.PeerPorts is { } p && p.Length != n) throw new CommandArgsException($"--peer-ports lists {p.Length} ports for {n} members");
        if (n > MaxDefaultPortNodes && (s.ClientPorts is null || s.PeerPorts is null))
            throw new CommandArgsException($"--nodes {n} needs --client-ports and --peer-ports: the default ports serve at most {MaxDefaultPortNodes} members");
        var all = (s.ClientPorts ?? []).Concat(s.PeerPorts ?? []).ToList();
        if (all.Distinct().Count() != all.Count) throw new CommandArgsException("--client-ports and --peer-ports must all differ");
        var scheme = s.Tls ? "https" : "http";
        var members = Enumerable.Range(0, n).Select(i => new UpMember((ulong)(i + 1), $"node{i + 1}",
            $"{scheme}://{HostForUrl(s.Host)}:{s.PeerPorts?[i] ?? DefaultPort(i, peer: true)}",
            $"{scheme}://{HostForUrl(s.Host)}:{s.ClientPorts?[i] ?? DefaultPort(i, peer: false)}")).ToList();
        return new UpState(Guid.NewGuid().ToString("N")[..8], s.Pg, members, s.Tls);
    }

    private static string HostForUrl(string host) => host.Contains(':') ? $"[{host}]" : host;

    /// <summary>An existing cluster runs as it was created: settings that would change it are refused, not ignored.</summary>
    private static void CheckMatches(UpState state, UpSettings s, string dataDir)
    {
        var hint = $"(remove {dataDir} to start a new cluster, or give another --data-dir)";
        if (s.Nodes is { } n && n != state.Members.Count)
            throw new CommandArgsException($"{dataDir} holds a cluster of {state.Members.Count} members; --nodes {n} does not match {hint}");
        if (s.ClientPorts is { } c && !c.SequenceEqual(state.Members.Select(m => new Uri(m.ClientUrl).Port)))
            throw new CommandArgsException($"{dataDir} holds a cluster whose client ports are {string.Join(',', state.Members.Select(m => new Uri(m.ClientUrl).Port))} {hint}");
        if (s.PeerPorts is { } p && !p.SequenceEqual(state.Members.Select(m => new Uri(m.PeerUrl).Port)))
            throw new CommandArgsException($"{dataDir} holds a cluster whose peer ports are {string.Join(',', state.Members.Select(m => new Uri(m.PeerUrl).Port))} {hint}");
        if (s.Tls && !state.Tls)
            throw new CommandArgsException($"{dataDir} holds a cluster made without --tls; --tls does not match {hint}");
        if (s.Pg is not null && s.Pg != state.Pg)
            throw new CommandArgsException($"{dataDir} holds a cluster kept in {(state.Pg is null ? "its private PostgreSQL" : "another PostgreSQL")}; --pg does not match {hint}");
    }

    internal static UpState? LoadState(string dataDir)
    {
        var path = Path.Combine(dataDir, StateFile);
        if (!File.Exists(path)) return null;
        try
        {
            return JsonSerializer.Deserialize<UpState>(File.ReadAllText(path), Json) ?? throw new JsonException("empty");
        }
        catch (JsonException e)
        {
            throw new UpException($"{path} is not a raftv cluster description ({e.Message})");
        }
    }

    private static void SaveState(string dataDir, UpState state)
    {
        var path = Path.Combine(dataDir, StateFile);
        File.WriteAllText(path + ".tmp", JsonSerializer.Serialize(state, Json));
        File.Move(path + ".tmp", path, overwrite: true);
    }

    /// <summary>The pid of the 'up' process running from <paramref name="dataDir"/>, or null (a stale pid file does not count).</summary>
    internal static int? RunningSupervisor(string dataDir)
    {
        var path = Path.Combine(dataDir, PidFile);
        if (!File.Exists(path)) return null;
        if (!int.TryParse(File.ReadAllText(path).Trim(), out var pid) || pid == Environment.ProcessId) return null;
        return IsRaftvUp(pid) ? pid : null;
    }

    private static bool IsRaftvUp(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            if (stat[(stat.LastIndexOf(')') + 2)..].StartsWith('Z')) return false;
            var cmdline = File.ReadAllText($"/proc/{pid}/cmdline").Split('\0');
            return cmdline.Contains("up") && cmdline.Any(a => a.EndsWith("raftv", StringComparison.Ordinal) || a.EndsWith("raftv.dll", StringComparison.Ordinal));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    // ---- ports -------------------------------------------------------------------------------

    /// <summary>Every port the members will listen on must be free now: a clear error names the first one that is not.</summary>
    private static void CheckPortsFree(IEnumerable<UpMember> members, IPAddress address, bool fixedPorts)
    {
        foreach (var m in members)
        foreach (var (url, what) in new[] { (m.ClientUrl, "client"), (m.PeerUrl, "peer") })
        {
            var port = new Uri(url).Port;
            try
            {
                using var probe = new TcpListener(address, port);
                probe.Start();
            }
            catch (SocketException)
            {
                throw new UpException(fixedPorts
                    ? $"port {port} ({what} port of {m.Name}) is already in use on {address}: this cluster's members keep their ports, so stop what uses it (etcd? another 'raftv up'?)"
                    : $"port {port} ({what} port of {m.Name}) is already in use on {address}: stop what uses it (etcd? another 'raftv up'?) or choose other ports with --client-ports/--peer-ports");
            }
        }
    }

    // ---- running the cluster -----------------------------------------------------------------

    private sealed class Child(UpMember member, Process process, StreamWriter log)
    {
        public UpMember Member { get; } = member;
        public Process Process { get; } = process;
        public StreamWriter Log { get; } = log;
        public volatile bool Serving;
        public volatile bool Removed;
        public Task Exited { get; } = process.WaitForExitAsync(CancellationToken.None);
    }

    private static async Task<int> SuperviseAsync(UpSettings settings, IPAddress address, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var dataDir = settings.DataDir;
        Directory.CreateDirectory(Path.Combine(dataDir, "logs"));
        var pidPath = Path.Combine(dataDir, PidFile);
        var readyPath = Path.Combine(dataDir, ReadyFile);
        File.Delete(readyPath);
        File.WriteAllText(pidPath, Environment.ProcessId.ToString());

        using var stop = NodeCommand.StopSignal(ct, out var signals);
        using var signalScope = signals;
        LocalPostgres? local = null;
        var children = new List<Child>();
        var started = false;
        try
        {
            var existing = LoadState(dataDir);
            if (existing is not null) CheckMatches(existing, settings, dataDir);
            var state = existing ?? NewState(settings);
            var live = state.Members.Where(m => !m.Removed).ToList();
            if (live.Count == 0) throw new UpException($"every member of the cluster in {dataDir} was removed; remove {dataDir} to start a new one");
            CheckPortsFree(live, address, fixedPorts: existing is not null);

            var pg = state.Pg;
            if (pg is null)
            {
                local = await PrivatePostgres.StartAsync(Path.Combine(dataDir, "pg"), "postgres", stop.Token);
                pg = local.ConnectionString;
                stdout.WriteLine($"PostgreSQL: {pg} (data in {dataDir})");
            }
            // TLS files are made once and kept with the cluster (a member's certificate is renewed when it is about to expire).
            var certificates = state.Tls ? LocalClusterCertificates.Prepare(Path.Combine(dataDir, "tls"), live.Select(m => m.Name), address) : null;
            if (existing is null) SaveState(dataDir, state);
            stdout.WriteLine(existing is null
                ? $"starting a new cluster of {live.Count} members in {dataDir}"
                : $"recovering the cluster in {dataDir}: {live.Count} members on their data");

            foreach (var m in live)
            {
                var db = await PrivatePostgres.EnsureDatabaseAsync(pg, $"raftv_{state.Token}_{m.Name}", stop.Token);
                var argv = new List<string> { "serve", "--id", m.Id.ToString(), "--name", m.Name, "--pg", db, "--stop-on-stdin-eof" };
                if (settings.MaxRequestBytes is { } max) argv.AddRange(["--max-request-bytes", max.ToString()]);
                if (certificates is not null) argv.AddRange(certificates.NodeArgs(m.Name));
                foreach (var x in live) argv.AddRange(["--member", $"{x.Id},{x.PeerUrl},{x.ClientUrl}"]);
                children.Add(StartChild(m, argv, Path.Combine(dataDir, "logs", $"{m.Name}.log"), stdout, stderr));
            }

            if (await WaitReadyAsync(children, certificates?.ClientGrpc, stop.Token) is { } failure)
            {
                if (stop.IsCancellationRequested) return 0;
                stderr.WriteLine($"raftv up: {failure}; stopping the cluster (logs in {Path.Combine(dataDir, "logs")})");
                return 1;
            }
            var endpoints = string.Join(",", live.Select(m => m.ClientUrl));
            stdout.WriteLine($"client endpoints: {endpoints}");
            var tlsFlags = certificates is null ? "" : " " + certificates.ClientFlags;
            stdout.WriteLine($"try: raftv --endpoints={endpoints}{tlsFlags} status   (or etcdctl --endpoints={endpoints}{tlsFlags} endpoint status)");
            if (certificates is not null) stdout.WriteLine($"TLS: peers mutual TLS, clients TLS; etcdctl flags: {certificates.ClientFlags}");
            stdout.WriteLine("cluster ready");
            stdout.WriteLine("Ctrl-C (or 'raftv down') stops the cluster.");
            stdout.Flush();
            started = true;
            File.WriteAllText(readyPath, endpoints + "\n");

            while (true)
            {
                var running = children.Where(c => !c.Process.HasExited).ToList();
                if (running.Count == 0)
                {
                    stderr.WriteLine("raftv up: no member is left running; stopping");
                    return 1;
                }
                await Task.WhenAny(running.Select(c => c.Exited).Append(Task.Delay(Timeout.Infinite, stop.Token)))
                    .ContinueWith(_ => { }, CancellationToken.None);
                if (stop.IsCancellationRequested) return 0;
                foreach (var dead in running.Where(c => c.Process.HasExited))
                {
                    if (dead.Process.ExitCode == 0 && dead.Removed)
                    {
                        // 'member remove' took it out of the cluster, and it stopped as etcd's members do: not a failure.
                        stdout.WriteLine($"raftv up: {dead.Member.Name} was removed from the cluster and stopped; the others keep serving");
                        var i = state.Members.FindIndex(m => m.Id == dead.Member.Id);
                        state.Members[i] = state.Members[i] with { Removed = true };
                        SaveState(dataDir, state);
                        children.Remove(dead);
                        dead.Log.Dispose();
                        continue;
                    }
                    stderr.WriteLine($"raftv up: {dead.Member.Name} exited with status {dead.Process.ExitCode}; stopping the cluster (its log: {Path.Combine(dataDir, "logs", dead.Member.Name + ".log")})");
                    return 1;
                }
                File.WriteAllText(readyPath, string.Join(",", state.Members.Where(m => !m.Removed).Select(m => m.ClientUrl)) + "\n");
            }
        }
        finally
        {
            File.Delete(readyPath);
            await StopChildrenAsync(children, stderr);
            if (local is not null) await local.StopAsync(cancellationToken: CancellationToken.None);
            File.Delete(pidPath);
            if (started || children.Count > 0) stdout.WriteLine("cluster stopped");
        }
    }

    /// <summary>Until every member serves and one of them knows a leader; null when ready, else why not.</summary>
    private static async Task<string?> WaitReadyAsync(List<Child> children, GrpcTlsFiles? tls, CancellationToken ct)
    {
        var deadline = DateTime.UtcNow + ReadyTimeout;
        var status = GrpcMethod.Protobuf(GrpcMethodType.Unary, "etcdserverpb.Maintenance", "Status", StatusRequest.Parser, StatusResponse.Parser);
        while (DateTime.UtcNow < deadline && !ct.IsCancellationRequested)
        {
            if (children.FirstOrDefault(c => c.Process.HasExited) is { } dead)
                return $"{dead.Member.Name} exited with status {dead.Process.ExitCode} while starting";
            if (children.All(c => c.Serving))
            {
                foreach (var c in children)
                {
                    try
                    {
                        using var client = new GrpcClient(ClientOptions(c.Member.ClientUrl, tls));
                        var s = await client.UnaryAsync(status, new StatusRequest(), new GrpcCallOptions(Timeout: TimeSpan.FromSeconds(2), CancellationToken: ct));
                        if (s.Leader != 0) return null;
                    }
                    catch (GrpcCallException)
                    {
                    }
                }
            }
            try { await Task.Delay(200, ct); } catch (OperationCanceledException) { break; }
        }
        return ct.IsCancellationRequested ? "stopped while starting" : $"the cluster had no leader within {ReadyTimeout.TotalSeconds:0} s";
    }

    /// <summary>How 'up' reaches a member's client endpoint (its readiness check).</summary>
    private static GrpcClientOptions ClientOptions(string clientUrl, GrpcTlsFiles? tls) =>
        new() { Address = new Uri(clientUrl), Tls = clientUrl.StartsWith("https:", StringComparison.Ordinal) ? tls : null, ConnectTimeout = TimeSpan.FromSeconds(2) };

    private static Child StartChild(UpMember member, List<string> argv, string logPath, TextWriter stdout, TextWriter stderr)
    {
        var self = Environment.ProcessPath ?? throw new InvalidOperationException("cannot find the running executable");
        var info = new ProcessStartInfo(self)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        // Run as 'dotnet raftv.dll ...' or as the raftv apphost, whichever started us.
        if (Path.GetFileNameWithoutExtension(self) == "dotnet") info.ArgumentList.Add(typeof(UpCommand).Assembly.Location);
        foreach (var a in argv) info.ArgumentList.Add(a);
        var log = new StreamWriter(logPath, append: true, Encoding.UTF8) { AutoFlush = true };
        log.WriteLine($"--- {DateTime.Now:yyyy-MM-dd HH:mm:ss} raftv {string.Join(' ', argv)}");
        var process = Process.Start(info) ?? throw new InvalidOperationException($"could not start {member.Name}");
        var child = new Child(member, process, log);
        void Line(TextWriter to, string text)
        {
            lock (log) { try { log.WriteLine(text); } catch (ObjectDisposedException) { } }
            lock (to) to.WriteLine($"[{member.Name}] {text}");
        }
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            if (e.Data.Contains(" serving etcd v3 clients at ", StringComparison.Ordinal)) child.Serving = true;
            if (e.Data.Contains(" was removed from the cluster", StringComparison.Ordinal)) child.Removed = true;
            Line(stdout, e.Data);
        };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) Line(stderr, e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return child;
    }

    private static async Task StopChildrenAsync(List<Child> children, TextWriter stderr)
    {
        foreach (var c in children)
        {
            try { c.Process.StandardInput.Close(); } catch (Exception e) when (e is IOException or InvalidOperationException) { }
        }
        using var grace = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        foreach (var c in children)
        {
            try
            {
                await c.Process.WaitForExitAsync(grace.Token);
            }
            catch (OperationCanceledException)
            {
                stderr.WriteLine($"raftv up: {c.Member.Name} (pid {c.Process.Id}) did not stop in time; killing it");
                c.Process.Kill(entireProcessTree: true);
            }
            c.Process.Dispose();
            lock (c.Log) c.Log.Dispose();
        }
    }

    // ---- --detach and 'down' -----------------------------------------------------------------

    /// <summary>Starts 'up' again as a background process in its own session (output to logs/up.log) and waits until it is ready.</summary>
    private static async Task<int> DetachAsync(UpSettings settings, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var dataDir = settings.DataDir;
        var logs = Path.Combine(dataDir, "logs");
        Directory.CreateDirectory(logs);
        var upLog = Path.Combine(logs, "up.log");
        var readyPath = Path.Combine(dataDir, ReadyFile);
        File.Delete(readyPath);
        var startOffset = File.Exists(upLog) ? new FileInfo(upLog).Length : 0;

        var self = Environment.ProcessPath ?? throw new InvalidOperationException("cannot find the running executable");
        // sh redirects the output to the log and setsid leaves the terminal's session, so the cluster
        // outlives this command and no one's pipe stays open on its account.
        var info = new ProcessStartInfo("sh") { UseShellExecute = false };
        foreach (var a in new[] { "-c", "exec setsid \"$@\" </dev/null >>\"$0\" 2>&1", upLog, self }) info.ArgumentList.Add(a);
        if (Path.GetFileNameWithoutExtension(self) == "dotnet") info.ArgumentList.Add(typeof(UpCommand).Assembly.Location);
        foreach (var a in settings.ToArgs()) info.ArgumentList.Add(a);
        using var background = Process.Start(info) ?? throw new UpException("could not start the background process");

        var deadline = DateTime.UtcNow + ReadyTimeout + TimeSpan.FromSeconds(30);
        while (DateTime.UtcNow < deadline)
        {
            if (File.Exists(readyPath) && RunningSupervisor(dataDir) is { } pid)
            {
                var endpoints = (await File.ReadAllTextAsync(readyPath, ct)).Trim();
                stdout.WriteLine($"cluster ready (pid {pid}, data and logs in {dataDir})");
                stdout.WriteLine($"client endpoints: {endpoints}");
                if (LoadState(dataDir) is { Tls: true })
                    stdout.WriteLine($"TLS: peers mutual TLS, clients TLS; etcdctl flags: {LocalClusterCertificates.ClientFlagsIn(Path.Combine(dataDir, "tls"))}");
                stdout.WriteLine($"stop it with: raftv down --data-dir {dataDir}");
                return 0;
            }
            if (background.HasExited)
            {
                stderr.WriteLine($"raftv up: the cluster did not start (exit status {background.ExitCode}); from {upLog}:");
                foreach (var line in TailOf(upLog, startOffset, 25)) stderr.WriteLine("  " + line);
                return 1;
            }
            await Task.Delay(200, ct);
        }
        stderr.WriteLine($"raftv up: the cluster was not ready within {(ReadyTimeout + TimeSpan.FromSeconds(30)).TotalSeconds:0} s; stopping it (log: {upLog})");
        await StopSupervisorAsync(dataDir, background.Id, stderr, CancellationToken.None);
        return 1;
    }

    private static IEnumerable<string> TailOf(string path, long from, int lines)
    {
        if (!File.Exists(path)) return [];
        using var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        f.Seek(Math.Min(from, f.Length), SeekOrigin.Begin);
        var text = new StreamReader(f).ReadToEnd();
        return text.Split('\n', StringSplitOptions.RemoveEmptyEntries).TakeLast(lines);
    }

    public static async Task<int> Down(CommandArgs args, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var dataDir = DataDirOption(args);
        args.EnsureNoneLeft();
        if (!Directory.Exists(dataDir)) throw new UpException($"{dataDir} does not exist: no cluster was started there");
        if (RunningSupervisor(dataDir) is { } pid)
        {
            stdout.WriteLine($"stopping the cluster running from {dataDir} (pid {pid})");
            await StopSupervisorAsync(dataDir, pid, stderr, ct);
            stdout.WriteLine("cluster stopped");
            return 0;
        }
        File.Delete(Path.Combine(dataDir, PidFile));
        File.Delete(Path.Combine(dataDir, ReadyFile));
        // An 'up' killed outright leaves its PostgreSQL running (its members stop with it).
        var leftover = await PrivatePostgres.StopIfRunningAsync(Path.Combine(dataDir, "pg"), ct);
        stdout.WriteLine(leftover ? $"no cluster was running from {dataDir}; stopped the PostgreSQL it left behind" : $"no cluster is running from {dataDir}");
        return 0;
    }

    [DllImport("libc", SetLastError = true, EntryPoint = "kill")]
    private static extern int SendSignal(int pid, int signal);

    private const int SigTerm = 15;

    /// <summary>SIGTERM, as Ctrl-C: the supervisor stops its members and PostgreSQL; killed only if it does not within a minute.</summary>
    private static async Task StopSupervisorAsync(string dataDir, int pid, TextWriter stderr, CancellationToken ct)
    {
        SendSignal(pid, SigTerm);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (IsAlive(pid) && DateTime.UtcNow < deadline) await Task.Delay(100, ct);
        if (!IsAlive(pid)) return;
        stderr.WriteLine($"raftv down: pid {pid} did not stop within 60 s; killing it");
        try { Process.GetProcessById(pid).Kill(entireProcessTree: true); } catch (ArgumentException) { }
        File.Delete(Path.Combine(dataDir, PidFile));
        File.Delete(Path.Combine(dataDir, ReadyFile));
        await PrivatePostgres.StopIfRunningAsync(Path.Combine(dataDir, "pg"), ct);
    }

    private static bool IsAlive(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            return !stat[(stat.LastIndexOf(')') + 2)..].StartsWith('Z');
        }
        catch (IOException)
        {
            return false;
        }
    }
}

/// <summary>'up' or 'down' cannot do what was asked; the message says why and what to do.</summary>
internal sealed class UpException(string message) : Exception(message);
