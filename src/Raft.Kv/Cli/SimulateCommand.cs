using System.Diagnostics;
using Raft.Host.Tracing;
using Raft.Spec;

namespace Raft.Kv.Cli;

/// <summary>
/// 'raftv simulate': a deterministic simulated cluster with faults, checking the spec's
/// invariants after every step; and 'raftv bench core': the pure core's throughput.
/// </summary>
public static class SimulateCommand
{
    public const string SimulateUsage =
        "raftv simulate [--nodes N] [--seed S] [--steps K] [--faults drop,duplicate,reorder,delay,partition,crash,slowdisk|all|none]\n" +
        "                 [--prevote true|false] [--checkquorum true|false] [--trace FILE]\n" +
        "                 [--schedule \"tick 0; deliver 0; ...\"] [--mutant NAME]";

    public const string BenchUsage = "raftv bench core [--entries N] [--batch 1|64]";

    public static Task<int> Simulate(CommandArgs args, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var nodes = args.IntOption("--nodes") ?? 3;
        var seedText = args.Option("--seed") ?? "1";
        if (!ulong.TryParse(seedText, out var seed))
            throw new CommandArgsException($"--seed must be a non-negative integer, not '{seedText}'");
        var steps = args.IntOption("--steps") ?? 2000;
        var faultsText = args.Option("--faults") ?? "all";
        var tracePath = args.Option("--trace");
        var scheduleText = args.Option("--schedule");
        var preVote = BoolOption(args, "--prevote");
        var checkQuorum = BoolOption(args, "--checkquorum");
        var mutants = new List<string>();
        for (var m = args.Option("--mutant"); m is not null; m = args.Option("--mutant")) mutants.Add(m);
        args.EnsureNoneLeft();

        var faults = FaultModule.parseList(faultsText);
        if (faults.IsError) throw new CommandArgsException(faults.ErrorValue);
        var options = SimOptionsModule.create(nodes, seed, steps, faults.ResultValue);
        options = SimOptionsModule.withTracing(tracePath is not null, options);
        if (preVote is { } pv) options = SimOptionsModule.withPreVote(pv, options);
        if (checkQuorum is { } cq) options = SimOptionsModule.withCheckQuorum(cq, options);
        foreach (var name in mutants)
        {
            var mutant = MutantModule.parse(name);
            if (mutant.IsError) throw new CommandArgsException(mutant.ErrorValue);
            options = SimOptionsModule.withMutant(mutant.ResultValue, options);
        }

        var clock = Stopwatch.StartNew();
        Microsoft.FSharp.Core.FSharpResult<SimOutcome, string> result;
        if (scheduleText is null)
        {
            result = Simulator.run(options);
        }
        else
        {
            var schedule = SimEventModule.parseSchedule(scheduleText);
            if (schedule.IsError) throw new CommandArgsException(schedule.ErrorValue);
            result = Simulator.runSchedule(options, schedule.ResultValue);
        }
        clock.Stop();
        if (result.IsError) throw new CommandArgsException(result.ErrorValue);
        var outcome = result.ResultValue;
        var sim = outcome.Final;

        stdout.WriteLine(Simulator.summary(sim));
        var seconds = Math.Max(clock.Elapsed.TotalSeconds, 1e-9);
        stdout.WriteLine($"{sim.Step} steps in {clock.Elapsed.TotalSeconds:F2} s ({sim.Step / seconds:F0} steps/s)");

        if (tracePath is not null)
        {
            // Timestamps count events from the epoch, so that a seed always writes the same file.
            using var writer = new StreamWriter(tracePath);
            var i = 0;
            foreach (var e in Simulator.traces(sim))
                writer.WriteLine(TraceNdjson.Format(e, DateTimeOffset.UnixEpoch.AddMilliseconds(i++)));
            stdout.WriteLine($"trace: {i} events written to {tracePath}");
        }

        var violation = outcome.Violation?.Value;
        if (violation is null)
        {
            stdout.WriteLine("no invariant violated");
            return Task.FromResult(0);
        }
        stderr.WriteLine($"VIOLATION: {Simulator.describeViolation(violation)}");
        var replay = scheduleText is null
            ? Simulator.replayCommand(options)
            : Simulator.replayScheduleCommand(options, outcome.Events);
        stderr.WriteLine($"replay: {replay}");
        return Task.FromResult(1);
    }

    private static bool? BoolOption(CommandArgs args, string name)
    {
        var text = args.Option(name);
        if (text is null) return null;
        return bool.TryParse(text, out var v) ? v : throw new CommandArgsException($"{name} must be true or false, not '{text}'");
    }

    /// <summary>'raftv bench core' (the word 'core' already taken from the arguments).</summary>
    public static Task<int> BenchCore(CommandArgs args, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var entries = args.IntOption("--entries") ?? 20000;
        var batch = args.IntOption("--batch");
        args.EnsureNoneLeft();
        if (entries < 1) throw new CommandArgsException("--entries must be at least 1");
        if (batch is < 1) throw new CommandArgsException("--batch must be at least 1");

        // A short run first, so that the figures do not include JIT compilation.
        CoreBench.run(Math.Min(entries, 500), batch ?? 64);
        stdout.WriteLine("core: 3 nodes in memory (RawNode, MemoryStorage, synchronous Ready handling), 16-byte proposals");
        foreach (var b in batch is { } only ? new[] { only } : new[] { 1, 64 })
        {
            var r = CoreBench.run(entries, b);
            stdout.WriteLine(
                $"  batch {r.Batch,3}: {r.Entries} entries in {r.Seconds:F2} s = {r.EntriesPerSecond:F0} committed entries/s, " +
                $"{r.BytesPerEntry:F0} bytes allocated per entry");
        }
        return Task.FromResult(0);
    }
}
