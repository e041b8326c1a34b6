using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Npgsql;
using Raft.Kv.Server;
using Raft.Storage.Postgres;

namespace Raft.Kv.Cli;

/// <summary>'raftv up' (a local cluster of member processes) and 'raftv serve' (one member).</summary>
internal static class UpCommand
{
    public const string UpUsage = "raftv up [--nodes N] [--pg CONNSTRING] [--data DIR] [--host 127.0.0.1]";
    public const string ServeUsage = "raftv serve --id ID --member ID,PEER_URL,CLIENT_URL [--member ...] --pg CONNSTRING [--name NAME]\n"
        + "                [--initial-cluster-state new|existing] [--stop-on-stdin-eof]\n"
        + "  ID: decimal, or hex with 0x (as 'etcdctl member add' prints it). --member lists the cluster with this member;\n"
        + "  with --initial-cluster-state existing the member was added by 'etcdctl member add' and joins the running cluster.";

    /// <summary>A member id: decimal, or hexadecimal with 0x (etcdctl prints ids in hex).</summary>
    internal static ulong ParseMemberId(string text, string what)
    {
        var ok = text.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
            ? ulong.TryParse(text.AsSpan(2), System.Globalization.NumberStyles.AllowHexSpecifier, null, out var id)
            : ulong.TryParse(text, out id);
        return ok && id != 0 ? id : throw new CommandArgsException($"{what} '{text}' is not a member id (decimal, or hex with 0x; not 0)");
    }

    /// <summary>Cancelled by Ctrl-C or SIGTERM (and, for members started by 'up', by their stdin closing).</summary>
    private static CancellationTokenSource StopSignal(CancellationToken outer, out IDisposable registrations)
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

    public static async Task<int> Serve(CommandArgs args, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var id = ParseMemberId(args.Option("--id") ?? throw new CommandArgsException("--id ID is required"), "--id");
        var pg = args.Option("--pg") ?? throw new CommandArgsException("--pg CONNSTRING is required");
        var name = args.Option("--name") ?? $"node{id}";
        var clusterState = args.Option("--initial-cluster-state") ?? "new";
        if (clusterState is not ("new" or "existing"))
            throw new CommandArgsException($"--initial-cluster-state must be new or existing, not '{clusterState}'");
        var stopOnEof = args.Flag("--stop-on-stdin-eof");
        var members = new List<KvMember>();
        while (args.Option("--member") is { } spec)
        {
            var parts = spec.Split(',');
            if (parts.Length != 3) throw new CommandArgsException($"--member '{spec}' is not ID,PEER_URL,CLIENT_URL");
            var mid = ParseMemberId(parts[0], "--member");
            members.Add(new KvMember(mid, $"node{mid}", parts[1], parts[2]));
        }
        args.EnsureNoneLeft();
        var options = new KvServerOptions { NodeId = id, Members = members, ConnectionString = pg, JoinExisting = clusterState == "existing", Name = name };
        try
        {
            options.Validate();
        }
        catch (ArgumentException e)
        {
            throw new CommandArgsException(e.Message);
        }

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

        await using var server = await KvServer.StartAsync(options, new StderrLogger(name), stop.Token);
        stdout.WriteLine($"{name} ({id:x}) serving etcd v3 clients at {server.ClientAddress}, peers at {server.PeerAddress}");
        stdout.Flush();
        await Task.WhenAny(server.Removed, server.RaftLoop, Task.Delay(Timeout.Infinite, stop.Token)).ContinueWith(_ => { }, CancellationToken.None);
        if (server.RaftLoop.IsFaulted && !stop.IsCancellationRequested)
        {
            // Crash-only, as etcd on a storage error: a member whose raft loop died would otherwise stay up without
            // serving; exiting lets a supervisor restart it from its durable state.
            stderr.WriteLine($"{name} ({id:x}): the raft loop failed ({server.RaftLoop.Exception?.GetBaseException().Message}); exiting");
            return 1;
        }
        if (server.Removed.IsCompleted && !stop.IsCancellationRequested)
        {
            // Like etcd: a member removed from the cluster stops; the MemberRemove answer gets a moment to leave first.
            stdout.WriteLine($"{name} ({id:x}) was removed from the cluster; stopping");
            await Task.Delay(TimeSpan.FromSeconds(1), CancellationToken.None);
        }
        stdout.WriteLine($"{name} stopping");
        return 0;
    }

    public static async Task<int> Up(CommandArgs args, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var nodes = args.IntOption("--nodes") ?? 3;
        if (nodes < 1 || nodes > 9) throw new CommandArgsException("--nodes must be between 1 and 9");
        var pg = args.Option("--pg");
        var dataDir = args.Option("--data");
        var host = args.Option("--host") ?? "127.0.0.1";
        if (!IPAddress.TryParse(host, out var address)) throw new CommandArgsException($"--host '{host}' is not an IP address");
        args.EnsureNoneLeft();

        using var stop = StopSignal(ct, out var signals);
        using var signalScope = signals;
        LocalPostgres? local = null;
        var ownData = dataDir is null;
        dataDir ??= Path.Combine(Path.GetTempPath(), "raftv-up-" + Guid.NewGuid().ToString("N")[..8]);
        var children = new List<Process>();
        try
        {
            if (pg is null)
            {
                local = await LocalPostgres.StartAsync(new LocalPostgresOptions(Path.Combine(dataDir, "pg"), Database: "postgres"), cancellationToken: stop.Token);
                pg = local.ConnectionString;
                stdout.WriteLine($"PostgreSQL: {pg} (data in {dataDir})");
            }
            var members = new List<KvMember>();
            for (var i = 1; i <= nodes; i++)
                members.Add(new KvMember((ulong)i, $"node{i}", $"http://{host}:{FreePort(address)}", $"http://{host}:{FreePort(address)}"));

            foreach (var m in members)
            {
                var db = await EnsureDatabaseAsync(pg, $"raftv_node{m.Id}", stop.Token);
                var argv = new List<string> { "serve", "--id", m.Id.ToString(), "--pg", db, "--stop-on-stdin-eof" };
                foreach (var x in members) argv.AddRange(["--member", $"{x.Id},{x.PeerUrl},{x.ClientUrl}"]);
                children.Add(StartChild(m.Name, argv, stdout, stderr));
            }
            stdout.WriteLine($"client endpoints: {string.Join(",", members.Select(m => m.ClientUrl))}");
            stdout.WriteLine($"try: etcdctl --endpoints={string.Join(",", members.Select(m => m.ClientUrl))} endpoint status");
            stdout.WriteLine("Ctrl-C stops the cluster.");
            stdout.Flush();

            var exited = Task.WhenAny(children.Select(c => c.WaitForExitAsync(CancellationToken.None)));
            await Task.WhenAny(exited, Task.Delay(Timeout.Infinite, stop.Token)).ContinueWith(_ => { }, CancellationToken.None);
            if (!stop.IsCancellationRequested)
            {
                var dead = children.First(c => c.HasExited);
                stderr.WriteLine($"raftv up: a member exited with status {dead.ExitCode}; stopping the cluster");
            }
            return stop.IsCancellationRequested ? 0 : 1;
        }
        finally
        {
            await StopChildrenAsync(children, stderr);
            if (local is not null)
            {
                if (ownData) await local.DestroyAsync(CancellationToken.None);
                else await local.StopAsync(cancellationToken: CancellationToken.None);
            }
            if (ownData && Directory.Exists(dataDir)) Directory.Delete(dataDir, recursive: true);
            stdout.WriteLine("cluster stopped");
        }
    }

    private static int FreePort(IPAddress address)
    {
        using var listener = new TcpListener(address, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    private static async Task<string> EnsureDatabaseAsync(string connectionString, string database, CancellationToken ct)
    {
        await using (var conn = new NpgsqlConnection(connectionString))
        {
            await conn.OpenAsync(ct);
            await using var exists = new NpgsqlCommand("SELECT 1 FROM pg_database WHERE datname = $1", conn) { Parameters = { new() { Value = database } } };
            if (await exists.ExecuteScalarAsync(ct) is null)
            {
                await using var create = new NpgsqlCommand($"CREATE DATABASE \"{database}\"", conn);
                await create.ExecuteNonQueryAsync(ct);
            }
        }
        return new NpgsqlConnectionStringBuilder(connectionString) { Database = database }.ConnectionString;
    }

    private static Process StartChild(string name, List<string> argv, TextWriter stdout, TextWriter stderr)
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
        var process = Process.Start(info) ?? throw new InvalidOperationException($"could not start {name}");
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (stdout) stdout.WriteLine($"[{name}] {e.Data}"); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (stderr) stderr.WriteLine($"[{name}] {e.Data}"); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return process;
    }

    private static async Task StopChildrenAsync(List<Process> children, TextWriter stderr)
    {
        foreach (var c in children)
        {
            try { c.StandardInput.Close(); } catch (Exception e) when (e is IOException or InvalidOperationException) { }
        }
        using var grace = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        foreach (var c in children)
        {
            try
            {
                await c.WaitForExitAsync(grace.Token);
            }
            catch (OperationCanceledException)
            {
                stderr.WriteLine($"raftv up: member {c.Id} did not stop in time; killing it");
                c.Kill(entireProcessTree: true);
            }
            c.Dispose();
        }
    }

    /// <summary>Warnings and errors to stderr; members' stderr is shown by 'raftv up'.</summary>
    private sealed class StderrLogger(string name) : ILogger
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
