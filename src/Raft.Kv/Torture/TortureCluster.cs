using System.Net;
using System.Net.Sockets;
using Npgsql;
using Raft.Storage.Postgres;

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
        var run = Guid.NewGuid().ToString("N")[..10];
        var n = options.Nodes;
        var peerPorts = Enumerable.Range(0, n).Select(_ => FreePort()).ToArray();
        var clientPorts = Enumerable.Range(0, n).Select(_ => FreePort()).ToArray();
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

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    public async ValueTask DisposeAsync()
    {
        await _stopSupervisor.CancelAsync();
        try { await _supervisor; } catch (Exception) { }
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
