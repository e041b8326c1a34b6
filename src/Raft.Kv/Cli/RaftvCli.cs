using System.Reflection;
using Raft.Storage.Postgres;

namespace Raft.Kv.Cli;

/// <summary>The raftv command line: one entry per command, dispatched by name.</summary>
public static class RaftvCli
{
    /// <summary>Exit status for a usage error (unknown command or bad arguments).</summary>
    public const int UsageError = 2;

    private sealed record Command(string Name, string Summary, string Usage,
        Func<CommandArgs, TextWriter, TextWriter, CancellationToken, Task<int>> Run);

    private static readonly Command[] Commands =
    [
        new("version", "print the version of raftv", "raftv version", Version),
        new("pg", "start or stop a private PostgreSQL server (used by ./test.sh and ./raftv up)",
            "raftv pg start --data DIR [--port P] [--database NAME] [--no-sync]\n  raftv pg stop --data DIR [--destroy]",
            Postgres),
        new("bench", "print performance figures (storage: PostgreSQL Raft storage write and read paths; core: the pure Raft core; put/range: load on etcd v3 endpoints)",
            "raftv bench storage [--seconds N] [--connection CONNSTRING]\n  " + SimulateCommand.BenchUsage + "\n  " + Raft.Kv.Bench.KvLoadCommand.Usage, Bench),
        new("simulate", "run a deterministic simulated cluster with faults, checking the spec's invariants at every step",
            SimulateCommand.SimulateUsage, SimulateCommand.Simulate),
        new("check-history", "check a client history (JSON lines) for linearizability, per key and overall",
            CheckHistoryCommand.Usage, CheckHistoryCommand.Run),
        new("up", "start (or recover) a local cluster of raftv members serving etcd's v3 API; --detach runs it in the background", UpCommand.UpUsage, UpCommand.Up),
        new("down", "stop the local cluster 'raftv up' runs from a data directory", UpCommand.DownUsage, UpCommand.Down),
        new("node", "run one member of a cluster (etcd's flags: --name, --initial-cluster, --listen-client-urls, ...)", NodeCommand.Usage, NodeCommand.Run),
        new("serve", "the older name of 'node'", NodeCommand.Usage, NodeCommand.Run),
        new("put", "write a key (etcd v3 API, any endpoint: raftv's or etcd's)", ClientCommands.PutUsage, ClientCommands.Put),
        new("get", "read a key or a range of keys", ClientCommands.GetUsage, ClientCommands.Get),
        new("del", "delete a key or a range of keys", ClientCommands.DelUsage, ClientCommands.Del),
        new("txn", "a transaction: compares, then the operations on success or on failure (stdin as etcdctl txn, or flags)", ClientCommands.TxnUsage, ClientCommands.Txn),
        new("compact", "compact the key-value history up to a revision", ClientCommands.CompactUsage, ClientCommands.Compact),
        new("status", "a table of every endpoint: id, version, db size, leader, raft term and indexes", ClientCommands.StatusUsage, ClientCommands.Status),
        new("endpoint", "etcdctl's spelling: 'endpoint status' (simple output by default)", ClientCommands.StatusUsage, ClientCommands.Endpoint),
        new("member", "list, add, remove, promote or update members", ClientCommands.MemberUsage, ClientCommands.Member),
        new("move-leader", "hand leadership to another member", ClientCommands.MoveLeaderUsage, ClientCommands.MoveLeader),
        new("torture", "run a local cluster under injected faults with clients recording a history, then check it", TortureCommand.Usage, TortureCommand.Run),
    ];

    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        if (args.Length == 0 || args[0] is "--help" or "-h" or "help")
        {
            PrintHelp(stdout);
            return args.Length == 0 ? UsageError : 0;
        }
        if (args[0] == "--version") return await Version(new CommandArgs([]), stdout, stderr, ct);

        args = GlobalOptionsAfterCommand(args);
        var command = Commands.FirstOrDefault(c => c.Name == args[0]);
        if (command is null)
        {
            stderr.WriteLine($"raftv: unknown command '{args[0]}'. Run 'raftv --help' for the list.");
            return UsageError;
        }
        var rest = args[1..];
        if (rest.Contains("--help") || rest.Contains("-h"))
        {
            stdout.WriteLine($"{command.Name}: {command.Summary}\n\nusage:\n  {command.Usage}");
            return 0;
        }
        try
        {
            return await command.Run(new CommandArgs(rest), stdout, stderr, ct);
        }
        catch (CommandArgsException e)
        {
            stderr.WriteLine($"raftv {command.Name}: {e.Message}\nusage:\n  {command.Usage}");
            return UsageError;
        }
        catch (Exception e) when (e is LocalPostgresException or UpException or NodeStartException)
        {
            stderr.WriteLine($"raftv {command.Name}: {e.Message}");
            return 1;
        }
    }

    /// <summary>
    /// etcdctl takes its global flags before the command too (raftv --endpoints=X get k): they are moved
    /// after it, where the command reads them.
    /// </summary>
    private static string[] GlobalOptionsAfterCommand(string[] args)
    {
        var globals = new List<string>();
        var i = 0;
        while (i < args.Length)
        {
            var a = args[i];
            if (ClientCommands.GlobalOptions.Contains(a) && i + 1 < args.Length) { globals.AddRange([a, args[i + 1]]); i += 2; }
            else if (ClientCommands.GlobalOptions.Any(g => a.StartsWith(g + "=", StringComparison.Ordinal))) { globals.Add(a); i++; }
            else break;
        }
        if (globals.Count == 0 || i >= args.Length) return args;
        return [args[i], .. args[(i + 1)..], .. globals];
    }

    private static void PrintHelp(TextWriter w)
    {
        w.WriteLine("raftv: RaftVerified, a verified Raft for .NET, and its replicated key-value service.");
        w.WriteLine();
        w.WriteLine("usage: raftv <command> [arguments]");
        w.WriteLine();
        w.WriteLine("commands:");
        foreach (var c in Commands)
            w.WriteLine($"  {c.Name,-12} {c.Summary}");
        w.WriteLine();
        w.WriteLine("Run 'raftv <command> --help' for the arguments of a command.");
    }

    public static string VersionText()
    {
        var assembly = typeof(RaftvCli).Assembly;
        var informational = assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
            ?? assembly.GetName().Version?.ToString() ?? "unknown";
        // The SDK appends "+<commit>" when it knows the source revision; keep it, it says what was built.
        return $"raftv {informational} (.NET {Environment.Version})";
    }

    private static Task<int> Version(CommandArgs args, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        args.EnsureNoneLeft();
        stdout.WriteLine(VersionText());
        return Task.FromResult(0);
    }

    private static async Task<int> Postgres(CommandArgs args, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        // Options first: their values must not be mistaken for the verb.
        var data = args.Option("--data") ?? throw new CommandArgsException("--data DIR is required");
        var port = args.IntOption("--port") ?? 0;
        var database = args.Option("--database") ?? "raftverified";
        var noSync = args.Flag("--no-sync");
        var destroy = args.Flag("--destroy");
        var verb = args.Positional("start|stop");
        args.EnsureNoneLeft();
        switch (verb)
        {
            case "start":
            {
                var server = await LocalPostgres.StartAsync(new LocalPostgresOptions(data, port, database, Durable: !noSync), cancellationToken: ct);
                // The server keeps running after this process exits; 'raftv pg stop' ends it.
                stdout.WriteLine(server.ConnectionString);
                return 0;
            }
            case "stop":
            {
                if (!File.Exists(Path.Combine(data, "postmaster.pid")))
                {
                    if (destroy && Directory.Exists(data)) Directory.Delete(data, recursive: true);
                    return 0;
                }
                var server = LocalPostgres.Attach(data);
                if (destroy) await server.DestroyAsync(ct);
                else await server.StopAsync(cancellationToken: ct);
                return 0;
            }
            default:
                throw new CommandArgsException($"unknown pg verb '{verb}'");
        }
    }

    private static async Task<int> Bench(CommandArgs args, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        if (args.Flag("core")) return await SimulateCommand.BenchCore(args, stdout, stderr, ct);
        if (args.Flag("transport")) return await Raft.Kv.Bench.TransportBenchmark.RunCommand(args, stdout, ct);
        if (args.Flag("node")) return await Raft.Kv.Bench.NodeBenchmark.Run(args, stdout, ct);
        foreach (var kind in new[] { "put", "range" })
            if (args.Flag(kind)) return await Raft.Kv.Bench.KvLoadCommand.Run(kind, args, stdout, stderr, ct);
        var seconds = args.IntOption("--seconds") ?? 3;
        if (seconds < 1) throw new CommandArgsException("--seconds must be at least 1");
        var connection = args.Option("--connection");
        var what = args.Positional("what to measure (storage)");
        args.EnsureNoneLeft();
        if (what != "storage") throw new CommandArgsException($"unknown benchmark '{what}'");
        await Raft.Storage.Postgres.Benchmarks.StorageBenchmark.RunAsync(
            new(TimeSpan.FromSeconds(seconds), connection), stdout, cancellationToken: ct);
        return 0;
    }
}
