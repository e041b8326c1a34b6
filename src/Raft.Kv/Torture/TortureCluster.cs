using System.Net;
using System.Net.Sockets;
using Npgsql;
using Raft.Storage.Postgres;
using Raft.Transport.Grpc.Wire;

namespace Raft.Kv.Torture;

/// <summary>
/// The system under test: PostgreSQL (the run's own server, or databases of its own on a given
/// one), N 'raftv serve' processes, and a <see cref="LinkProxy"/> per directed peer link. Member i
/// is told that member j's peer address is the proxy of link i->j, so every raft message passes
/// through the proxy of its link; members listen on their real peer addresses. A supervisor
/// restarts members that exit without the nemesis killing them, and counts those exits.
/// </summary>
internal sealed class TortureCluster : IAsyncDisposable
{
    private readonly Action<string> _log;
    private readonly List<MemberProcess> _members = [];
    private readonly List<EtcdEndpoint> _endpoints = [];
    private readonly Dictionary<(int, int), LinkProxy> _links = [];
    private readonly List<string> _databases = [];
    private readonly CancellationTokenSource _stopSupervisor = new();
    private readonly object _gate = new();
    private LocalPostgres? _postgres;
    private string _adminConnection = "";
    private Task _supervisor = Task.CompletedTask;
    private bool _postgresDown;
    private string _run = "";
    private int[] _peerPorts = [];
    private int _sparePeerPort;
    private int _spareClientPort;
    private string _dataDir = "";
    private int _spareGeneration;
    private (MemberProcess Process, ulong Id, string Database)? _spare;

    private TortureCluster(Action<string> log) => _log = log;

    public IReadOnlyList<MemberProcess> Members => _members;
    public IReadOnlyList<EtcdEndpoint> Endpoints => _endpoints;
    public IEnumerable<LinkProxy> Links => _links.Values;
    public int UnexpectedExits { get; private set; }
    public List<string> UnexpectedExitNotes { get; } = [];

    public static async Task<TortureCluster> StartAsync(TortureOptions options, string dataDir, Action<string> log, CancellationToken ct)
    {
        var cluster = new TortureCluster(log);
        try
        {
            await cluster.StartCoreAsync(options, dataDir, ct);
            return cluster;
        }
        catch
        {
            await cluster.DisposeAsync();
            throw;
        }
    }

    private async Task StartCoreAsync(TortureOptions options, string dataDir, CancellationToken ct)
    {
        if (options.PostgresConnection is { } external) _adminConnection = external;
        else
        {
            // Durable: the postgres nemesis stops the server immediately, which must lose no committed transaction.
            _postgres = await LocalPostgres.StartAsync(new LocalPostgresOptions(Path.Combine(dataDir, "pg"), Database: "postgres", Durable: true),
                cancellationToken: ct);
            _adminConnection = _postgres.ConnectionString;
            _log($"PostgreSQL {_postgres.ConnectionString} (data in {_postgres.DataDirectory})");
        }
        var run = _run = Guid.NewGuid().ToString("N")[..10];
        _dataDir = dataDir;
        var n = options.Nodes;
        var peerPorts = _peerPorts = Enumerable.Range(0, n).Select(_ => FreePort()).ToArray();
        var clientPorts = Enumerable.Range(0, n).Select(_ => FreePort()).ToArray();
        _sparePeerPort = FreePort();
        _spareClientPort = FreePort();
        for (var i = 0; i < n; i++)
        for (var j = 0; j < n; j++)
        {
            if (i == j) continue;
            var proxy = new LinkProxy(i, j, new IPEndPoint(IPAddress.Loopback, peerPorts[j]));
            proxy.Start();
            _links[(i, j)] = proxy;
        }
        for (var i = 0; i < n; i++)
        {
            var db = await CreateDatabaseAsync($"torture_{run}_n{i + 1}", ct);
            var args = new List<string> { "serve", "--id", (i + 1).ToString(), "--pg", db, "--stop-on-stdin-eof" };
            for (var j = 0; j < n; j++)
            {
                var peer = i == j ? $"http://127.0.0.1:{peerPorts[j]}" : _links[(i, j)].Url;
                args.AddRange(["--member", $"{j + 1},{peer},http://127.0.0.1:{clientPorts[j]}"]);
            }
            var member = new MemberProcess(i, (ulong)(i + 1), $"http://127.0.0.1:{clientPorts[i]}", args, Path.Combine(dataDir, $"node{i + 1}.log"));
            _members.Add(member);
            _endpoints.Add(new EtcdEndpoint(i, member.ClientUrl));
        }
        foreach (var m in _members) m.Start();
        _supervisor = Task.Run(() => SuperviseAsync(_stopSupervisor.Token));
    }

    private async Task<string> CreateDatabaseAsync(string name, CancellationToken ct)
    {
        await using (var conn = new NpgsqlConnection(_adminConnection))
        {
            await conn.OpenAsync(ct);
            await using var create = new NpgsqlCommand($"CREATE DATABASE \"{name}\"", conn);
            await create.ExecuteNonQueryAsync(ct);
        }
        _databases.Add(name);
        return new NpgsqlConnectionStringBuilder(_adminConnection) { Database = name, Pooling = true }.ConnectionString;
    }

    private async Task SuperviseAsync(CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            try { await Task.Delay(500, ct); } catch (OperationCanceledException) { return; }
            foreach (var m in _members)
            {
                lock (_gate)
                {
                    if (m.Killed || !m.HasExited || ct.IsCancellationRequested) continue;
                    // A member that cannot start (PostgreSQL down) exits at once: do not relaunch it more than every 2 s.
                    if (DateTime.UtcNow - m.LastStart < TimeSpan.FromSeconds(2)) continue;
                    UnexpectedExits++;
                    var note = $"node{m.Id} exited on its own with status {m.ExitCode}{(_postgresDown ? " (PostgreSQL was down)" : "")}; restarted";
                    UnexpectedExitNotes.Add(note);
                    _log(note);
                    m.Start();
                }
            }
        }
    }

    public async Task KillAsync(int index)
    {
        await _members[index].KillAsync();
    }

    public void Restart(int index)
    {
        lock (_gate)
        {
            if (_members[index].HasExited) _members[index].Start();
        }
    }

    public void Pause(int index) => _members[index].Pause();
    public void Resume(int index) => _members[index].Resume();

    public void SetLinks(IEnumerable<(int From, int To)> links, LinkFault fault, TimeSpan delay)
    {
        foreach (var l in links) _links[l].Set(fault, delay);
    }

    public void HealLinks()
    {
        foreach (var p in _links.Values) p.Set(null);
    }

    public async Task StopPostgresAsync(bool immediate, CancellationToken ct)
    {
        if (_postgres is null) throw new InvalidOperationException("the postgres nemesis needs the run's own PostgreSQL");
        _postgresDown = true;
        await _postgres.StopAsync(immediate, ct);
    }

    public async Task StartPostgresAsync(CancellationToken ct)
    {
        if (_postgres is null || !_postgresDown) return;
        await _postgres.RestartAsync(ct);
        _postgresDown = false;
    }

    // ---- the spare member of the membership nemesis ------------------------------------------
    // It joins through Cluster.MemberAdd with a fresh database and a new id each time, talks to the
    // others on their real peer addresses (partitions are not applied to it: one fault at a time),
    // and leaves through MemberRemove, after which it stops by itself as a removed etcd member does.

    /// <summary>The spare's id while it is a member (or being added), else null.</summary>
    public ulong? SpareId => _spare?.Id;

    /// <summary>Adds the spare (as a learner or a voter) through the leader and starts it; returns its new id.</summary>
    public async Task<ulong> AddSpareAsync(bool learner, TimeSpan within, CancellationToken ct)
    {
        if (_spare is not null) throw new InvalidOperationException("the spare member is already in the cluster");
        var peerUrl = $"http://127.0.0.1:{_sparePeerPort}";
        var added = await OnLeaderAsync(EtcdEndpoint.MemberAdd, new Etcd.Serverpb.MemberAddRequest { PeerURLs = { peerUrl }, IsLearner = learner }, within, ct);
        var id = added.Member.ID;
        var db = await CreateDatabaseAsync($"torture_{_run}_spare{++_spareGeneration}", ct);
        var args = new List<string> { "serve", "--id", id.ToString(), "--pg", db, "--stop-on-stdin-eof", "--initial-cluster-state", "existing" };
        foreach (var m in added.Members)
        {
            var client = m.ID == id ? $"http://127.0.0.1:{_spareClientPort}" : m.ClientURLs.FirstOrDefault() ?? "";
            var peer = m.ID == id ? peerUrl : m.ID >= 1 && m.ID <= (ulong)_peerPorts.Length ? $"http://127.0.0.1:{_peerPorts[m.ID - 1]}" : m.PeerURLs[0];
            args.AddRange(["--member", $"{m.ID},{peer},{client}"]);
        }
        var process = new MemberProcess(_members.Count, id, $"http://127.0.0.1:{_spareClientPort}", args,
            Path.Combine(_dataDir, $"spare{_spareGeneration}.log"));
        _spare = (process, id, db);
        process.Start();
        return id;
    }

    /// <summary>Promotes the spare learner; false while it has not caught up (etcd refuses then) or no leader answers.</summary>
    public async Task<bool> TryPromoteSpareAsync(CancellationToken ct)
    {
        if (_spare is not { } spare) return false;
        try
        {
            await OnLeaderAsync(EtcdEndpoint.MemberPromote, new Etcd.Serverpb.MemberPromoteRequest { ID = spare.Id }, TimeSpan.FromSeconds(3), ct);
            return true;
        }
        catch (Exception e) when (e is GrpcCallException or TimeoutException && !ct.IsCancellationRequested)
        {
            return false;
        }
    }

    /// <summary>Removes the spare through the leader (retrying until <paramref name="within"/>), then waits for it to stop.</summary>
    public async Task RemoveSpareAsync(TimeSpan within, CancellationToken ct)
    {
        if (_spare is not { } spare) return;
        try
        {
            await OnLeaderAsync(EtcdEndpoint.MemberRemove, new Etcd.Serverpb.MemberRemoveRequest { ID = spare.Id }, within, ct);
        }
        catch (GrpcCallException e) when (e.StatusCode == StatusCode.NotFound)
        {
            // Already removed: an earlier attempt was applied but its answer lost.
        }
        // A removed member stops by itself; give it a moment, then make sure.
        await spare.Process.StopAsync(TimeSpan.FromSeconds(10));
        await spare.Process.DisposeAsync();
        _spare = null;
        await DropDatabaseAsync(spare.Database);
    }

    /// <summary>Calls a Cluster method on the member that leads, retrying on refusals and timeouts until <paramref name="within"/>.</summary>
    private async Task<TResp> OnLeaderAsync<TReq, TResp>(GrpcMethod<TReq, TResp> method, TReq request, TimeSpan within, CancellationToken ct)
    {
        var deadline = DateTime.UtcNow + within;
        Exception? last = null;
        for (var attempt = 0; ; attempt++)
        {
            // The leader when one of the original members leads; otherwise (none known, or the spare
            // leads) each member in turn: a follower forwards the change to the leader.
            var target = await LeaderAsync(ct) ?? attempt % _endpoints.Count;
            try
            {
                return await _endpoints[target].CallAsync(method, request, TimeSpan.FromSeconds(3), ct);
            }
            catch (GrpcCallException e) when (e.StatusCode is not (StatusCode.NotFound or StatusCode.InvalidArgument))
            {
                last = e;
            }
            if (DateTime.UtcNow >= deadline)
                throw last as GrpcCallException ?? (Exception)new TimeoutException($"{method.FullName}: no leader answered within {within.TotalSeconds:0} s");
            await Task.Delay(300, ct);
        }
    }

    private async Task DropDatabaseAsync(string connectionString)
    {
        var name = new NpgsqlConnectionStringBuilder(connectionString).Database;
        try
        {
            NpgsqlConnection.ClearAllPools();
            await using var conn = new NpgsqlConnection(_adminConnection);
            await conn.OpenAsync();
            await using var drop = new NpgsqlCommand($"DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)", conn);
            await drop.ExecuteNonQueryAsync();
            _databases.Remove(name!);
        }
        catch (NpgsqlException e)
        {
            _log($"dropping the spare's database {name}: {e.Message} (dropped with the run)");
        }
    }

    /// <summary>The index of the member some member names as leader, or null.</summary>
    public async Task<int?> LeaderAsync(CancellationToken ct)
    {
        var answers = await Task.WhenAll(_endpoints.Select(e => e.TryStatusAsync(TimeSpan.FromMilliseconds(700), ct)));
        var leader = answers.Where(a => a is { Leader: > 0 }).GroupBy(a => a!.Leader).OrderByDescending(g => g.Count()).FirstOrDefault()?.Key;
        return leader is { } id && (int)id - 1 < _members.Count ? (int)id - 1 : null;
    }

    /// <summary>Undoes every fault: links pass, paused members resume, killed ones start, PostgreSQL runs.</summary>
    public async Task HealAllAsync(CancellationToken ct)
    {
        HealLinks();
        await StartPostgresAsync(ct);
        for (var i = 0; i < _members.Count; i++)
        {
            Resume(i);
            Restart(i);
        }
    }

    private static int FreePort() => Raft.Host.FreePorts.Next();

    public async ValueTask DisposeAsync()
    {
        await _stopSupervisor.CancelAsync();
        try { await _supervisor; } catch (Exception) { }
        if (_spare is { } spare) await spare.Process.DisposeAsync();
        foreach (var e in _endpoints) e.Dispose();
        await Task.WhenAll(_members.Select(m => m.DisposeAsync().AsTask()));
        foreach (var p in _links.Values) await p.DisposeAsync();
        try
        {
            if (_postgres is not null && _postgresDown) await _postgres.RestartAsync();
            if (_databases.Count > 0 && _postgres is null)
            {
                NpgsqlConnection.ClearAllPools();
                await using var conn = new NpgsqlConnection(_adminConnection);
                await conn.OpenAsync();
                foreach (var db in _databases)
                {
                    await using var drop = new NpgsqlCommand($"DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)", conn);
                    await drop.ExecuteNonQueryAsync();
                }
            }
            if (_postgres is not null) await _postgres.StopAsync();
        }
        catch (Exception e) when (e is NpgsqlException or LocalPostgresException)
        {
            _log($"cleanup: {e.Message}");
        }
        _stopSupervisor.Dispose();
    }
}
