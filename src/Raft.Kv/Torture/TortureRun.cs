using System.Diagnostics;
using System.Globalization;
using Google.Protobuf;
using Raft.Check;
using Raft.Kv.Etcd.Serverpb;
using Raft.Transport.Grpc.Wire;

namespace Raft.Kv.Torture;

/// <summary>One verdict of a run: its name, whether it holds, and why not.</summary>
public sealed record TortureVerdict(string Name, bool Holds, string Detail);

/// <summary>What a torture run did and found.</summary>
public sealed record TortureReport
{
    public required TortureOptions Options { get; init; }
    public required IReadOnlyList<FaultStep> Schedule { get; init; }
    public required IReadOnlyDictionary<string, int> FaultsInjected { get; init; }
    public required IReadOnlyDictionary<(string F, string Type), int> Operations { get; init; }
    public required IReadOnlyList<TortureVerdict> Verdicts { get; init; }
    public required IReadOnlyList<string> HistoryLines { get; init; }
    public required IReadOnlyList<string> Notes { get; init; }
    public required IReadOnlyDictionary<string, int> ClientErrors { get; init; }
    public required string DataDirectory { get; init; }
    public required TimeSpan Elapsed { get; init; }
    public bool Passed => Verdicts.All(v => v.Holds);

    /// <summary>The summary table: operations by outcome, faults by kind, verdicts.</summary>
    public void Print(TextWriter w)
    {
        var ci = CultureInfo.InvariantCulture;
        w.WriteLine();
        w.WriteLine(string.Create(ci, $"torture: seed {Options.Seed}, {Options.Nodes} nodes, {Options.Clients} clients, {Options.Keys} keys, " +
            $"{Options.Duration.TotalSeconds:0.#} s of load, nemesis {(Options.Nemesis.Count == 0 ? "none" : string.Join(",", Options.Nemesis.Select(FaultStep.KindName)))}"));
        w.WriteLine();
        w.WriteLine($"{"operation",-10}{"ok",8}{"fail",8}{"info",8}{"total",8}");
        foreach (var f in new[] { "put", "get", "cas" })
        {
            int N(string t) => Operations.GetValueOrDefault((f, t));
            w.WriteLine($"{f,-10}{N("ok"),8}{N("fail"),8}{N("info"),8}{N("ok") + N("fail") + N("info"),8}");
        }
        int All(string t) => Operations.Where(kv => kv.Key.Type == t).Sum(kv => kv.Value);
        w.WriteLine($"{"all",-10}{All("ok"),8}{All("fail"),8}{All("info"),8}{All("ok") + All("fail") + All("info"),8}");
        w.WriteLine();
        w.WriteLine($"{"fault",-28}{"injected",9}");
        foreach (var (name, count) in FaultsInjected.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            w.WriteLine($"{name,-28}{count,9}");
        if (FaultsInjected.Count == 0) w.WriteLine($"{"(none)",-28}{0,9}");
        w.WriteLine();
        if (ClientErrors.Count > 0)
        {
            w.WriteLine("client errors seen (most frequent):");
            foreach (var (text, count) in ClientErrors.OrderByDescending(kv => kv.Value).Take(8))
                w.WriteLine($"  {count,6}  {text}");
            w.WriteLine();
        }
        foreach (var note in Notes) w.WriteLine($"note: {note}");
        if (Notes.Count > 0) w.WriteLine();
        w.WriteLine($"{"verdict",-34}result");
        foreach (var v in Verdicts)
            w.WriteLine($"{v.Name,-34}{(v.Holds ? "ok" : "VIOLATED")}{(v.Detail.Length > 0 ? "  " + v.Detail : "")}");
        w.WriteLine();
        w.WriteLine(string.Create(ci, $"{(Passed ? "PASSED" : "FAILED")} in {Elapsed.TotalSeconds:F1} s; history {Options.HistoryPath}; replay with --seed {Options.Seed}"));
    }
}

/// <summary>
/// 'raftv torture': a multi-process cluster under a seeded nemesis, clients recording a history,
/// then heal, converge and check: the history is linearizable, acknowledged writes survived,
/// replicas agree.
/// </summary>
public static class TortureRun
{
    public static async Task<TortureReport> RunAsync(TortureOptions options, TextWriter log, CancellationToken ct = default)
    {
        options.Validate();
        var ownData = options.DataDirectory is null;
        var dataDir = Path.GetFullPath(options.DataDirectory ?? Path.Combine(Path.GetTempPath(), "raftv-torture-" + Guid.NewGuid().ToString("N")[..8]));
        Directory.CreateDirectory(dataDir);
        var total = Stopwatch.StartNew();
        void Log(string line)
        {
            lock (log) log.WriteLine(line);
        }

        var schedule = NemesisSchedule.Generate(options.Seed, options.Duration, options.Nodes, options.Nemesis);
        Log($"torture: seed {options.Seed}; data and member logs in {dataDir}");
        Log($"nemesis schedule ({schedule.Count} faults):");
        foreach (var s in schedule) Log("  " + s);

        var verdicts = new List<TortureVerdict>();
        var notes = new List<string>();
        TortureReport Report(HistoryRecorder history, Workload? workload, NemesisRunner? nemesis) => new()
        {
            Options = options,
            Schedule = schedule,
            FaultsInjected = nemesis?.Injected.ToDictionary() ?? [],
            Operations = workload?.Outcomes.ToDictionary() ?? [],
            Verdicts = verdicts,
            HistoryLines = history.Lines,
            Notes = notes,
            ClientErrors = workload?.Errors.ToDictionary() ?? [],
            DataDirectory = dataDir,
            Elapsed = total.Elapsed,
        };

        using var history = new HistoryRecorder(options.HistoryPath);
        TortureReport report;
        await using (var cluster = await TortureCluster.StartAsync(options, dataDir, Log, ct))
        {
            var workload = new Workload(cluster.Endpoints, history, options);
            var nemesis = new NemesisRunner(cluster, schedule, Log);

            if (!await WaitForLeaderAsync(cluster, TimeSpan.FromSeconds(60), ct))
            {
                verdicts.Add(new("cluster started", false, "no leader within 60 s of starting the members; see the member logs"));
                return Report(history, null, null);
            }
            Log("cluster up; clients start");

            var clock = Stopwatch.StartNew();
            using var stopClients = CancellationTokenSource.CreateLinkedTokenSource(ct);
            using var stopNemesis = CancellationTokenSource.CreateLinkedTokenSource(ct);
            stopClients.CancelAfter(options.Duration);
            stopNemesis.CancelAfter(options.Duration);
            var clients = Enumerable.Range(0, options.Clients).Select(c => Task.Run(() => workload.RunClientAsync(c, stopClients.Token))).ToArray();
            var faults = Task.Run(() => nemesis.RunAsync(clock, stopNemesis.Token));
            var progress = Task.Run(async () =>
            {
                try
                {
                    while (!stopClients.IsCancellationRequested)
                    {
                        await Task.Delay(5000, stopClients.Token);
                        var o = workload.Outcomes;
                        Log(string.Create(CultureInfo.InvariantCulture,
                            $"{clock.Elapsed.TotalSeconds,7:F1}s ops ok {o.Where(x => x.Key.Type == "ok").Sum(x => x.Value)}, fail {o.Where(x => x.Key.Type == "fail").Sum(x => x.Value)}, info {o.Where(x => x.Key.Type == "info").Sum(x => x.Value)}"));
                    }
                }
                catch (OperationCanceledException)
                {
                }
            });
            await Task.WhenAll(clients);
            await faults;
            await progress;

            if (nemesis.MemberChanges > 0) notes.Add($"{nemesis.MemberChanges} membership changes took effect (spare members added, promoted, removed)");
            Log($"{clock.Elapsed.TotalSeconds,7:F1}s load over; healing everything");
            await cluster.HealAllAsync(ct);
            var converged = await ConvergeAsync(cluster, options.ConvergenceTimeout, Log, ct);
            verdicts.Add(converged);

            // A final linearizable read of every key on every member, as ok operations of the history.
            var finalReadsFailed = 0;
            if (converged.Holds)
            {
                foreach (var endpoint in cluster.Endpoints)
                for (var k = 0; k < options.Keys; k++)
                {
                    var outcome = await workload.GetAsync(workload.NewProcess(), Workload.KeyName(k), new Random(0), endpoint, TimeSpan.FromSeconds(10));
                    if (outcome != "ok") finalReadsFailed++;
                }
                verdicts.Add(new("final reads answered", finalReadsFailed == 0,
                    finalReadsFailed == 0 ? $"{cluster.Endpoints.Count * options.Keys} reads" : $"{finalReadsFailed} final linearizable reads failed"));
            }
            history.Flush();

            (TortureVerdict Verdict, IReadOnlyDictionary<string, KeyState>? FinalState)? replicas = converged.Holds ? await CompareReplicasAsync(cluster, options, ct) : null;
            if (replicas is not null) verdicts.Add(replicas.Value.Verdict);
            verdicts.Add(CheckHistory(history.Lines, options.CheckTimeout));
            verdicts.Add(CheckAckedWrites([.. workload.Acked], replicas?.FinalState, workload));
            if (cluster.UnexpectedExits > 0)
                notes.AddRange(cluster.UnexpectedExitNotes.GroupBy(n => n).Select(g => g.Count() == 1 ? g.Key : $"{g.Key} ({g.Count()} times)"));
            report = Report(history, workload, nemesis);
        }
        if (report.Passed && ownData) Directory.Delete(dataDir, recursive: true);
        else if (!report.Passed) notes.Add($"member logs kept in {dataDir}");
        return report;
    }

    private static async Task<bool> WaitForLeaderAsync(TortureCluster cluster, TimeSpan timeout, CancellationToken ct)
    {
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < timeout)
        {
            if (await cluster.LeaderAsync(ct) is not null) return true;
            await Task.Delay(250, ct);
        }
        return false;
    }

    /// <summary>Waits until every member answers, names the same leader, and has applied the same index, which is its commit index.</summary>
    private static async Task<TortureVerdict> ConvergeAsync(TortureCluster cluster, TimeSpan timeout, Action<string> log, CancellationToken ct)
    {
        var clock = Stopwatch.StartNew();
        string last = "";
        var stable = 0;
        ulong previous = 0;
        while (clock.Elapsed < timeout)
        {
            var statuses = await Task.WhenAll(cluster.Endpoints.Select(e => e.TryStatusAsync(TimeSpan.FromSeconds(2), ct)));
            last = string.Join("; ", statuses.Select((s, i) => s is null
                ? $"node{i + 1} no answer"
                : $"node{i + 1} leader {s.Leader} term {s.RaftTerm} commit {s.RaftIndex} applied {s.RaftAppliedIndex}"));
            if (statuses.All(s => s is not null))
            {
                var leaders = statuses.Select(s => s!.Leader).Distinct().ToList();
                var applied = statuses.Select(s => s!.RaftAppliedIndex).Distinct().ToList();
                if (leaders is [> 0] && applied.Count == 1 && statuses.All(s => s!.RaftIndex == s.RaftAppliedIndex))
                {
                    stable = applied[0] == previous ? stable + 1 : 1;
                    previous = applied[0];
                    if (stable >= 2)
                    {
                        log($"converged in {clock.Elapsed.TotalSeconds:F1} s: {last}");
                        return new("converged after healing", true, $"applied index {previous} on every member, {clock.Elapsed.TotalSeconds:F1} s");
                    }
                }
                else stable = 0;
            }
            await Task.Delay(500, ct);
        }
        return new("converged after healing", false, $"not within {timeout.TotalSeconds:0} s: {last}");
    }

    internal sealed record KeyState(string Value, long CreateRevision, long ModRevision, long Version);

    /// <summary>Serializable reads of every key on each member, bracketed by Status so the applied index is known; all must agree.</summary>
    private static async Task<(TortureVerdict Verdict, IReadOnlyDictionary<string, KeyState>? FinalState)> CompareReplicasAsync(
        TortureCluster cluster, TortureOptions options, CancellationToken ct)
    {
        var states = new List<(ulong Applied, long Revision, SortedDictionary<string, KeyState> Keys)>();
        foreach (var e in cluster.Endpoints)
        {
            try
            {
                var before = await e.CallAsync(EtcdEndpoint.Status, new StatusRequest(), TimeSpan.FromSeconds(5), ct);
                var range = await e.CallAsync(EtcdEndpoint.Range,
                    new RangeRequest { Key = ByteString.CopyFromUtf8("k"), RangeEnd = ByteString.CopyFromUtf8("l"), Serializable = true },
                    TimeSpan.FromSeconds(5), ct);
                var after = await e.CallAsync(EtcdEndpoint.Status, new StatusRequest(), TimeSpan.FromSeconds(5), ct);
                if (before.RaftAppliedIndex != after.RaftAppliedIndex)
                    return (new("replicas agree", false, $"node{e.Index + 1} applied moved from {before.RaftAppliedIndex} to {after.RaftAppliedIndex} after convergence"), null);
                var keys = new SortedDictionary<string, KeyState>(StringComparer.Ordinal);
                foreach (var kv in range.Kvs)
                    keys[kv.Key.ToStringUtf8()] = new KeyState(kv.Value.ToStringUtf8(), kv.CreateRevision, kv.ModRevision, kv.Version);
                states.Add((after.RaftAppliedIndex, range.Header.Revision, keys));
            }
            catch (Exception x) when (x is GrpcCallException or OperationCanceledException && !ct.IsCancellationRequested)
            {
                return (new("replicas agree", false, $"node{e.Index + 1}: {x.Message}"), null);
            }
        }
        var reference = states[0];
        for (var i = 1; i < states.Count; i++)
        {
            var s = states[i];
            if (s.Applied != reference.Applied)
                return (new("replicas agree", false, $"applied index: node1 {reference.Applied}, node{i + 1} {s.Applied}"), null);
            if (s.Revision != reference.Revision)
                return (new("replicas agree", false, $"revision: node1 {reference.Revision}, node{i + 1} {s.Revision}"), null);
            var diff = reference.Keys.Keys.Union(s.Keys.Keys).FirstOrDefault(k =>
                reference.Keys.GetValueOrDefault(k) != s.Keys.GetValueOrDefault(k));
            if (diff is not null)
                return (new("replicas agree", false,
                    $"key {diff}: node1 {reference.Keys.GetValueOrDefault(diff)?.ToString() ?? "absent"}, node{i + 1} {s.Keys.GetValueOrDefault(diff)?.ToString() ?? "absent"}"), null);
        }
        return (new("replicas agree", true, $"{reference.Keys.Count} keys, revision {reference.Revision}, applied index {reference.Applied} on {states.Count} members"),
            reference.Keys);
    }

    /// <summary>The history checked for linearizability by Raft.Check.</summary>
    public static TortureVerdict CheckHistory(IReadOnlyList<string> lines, TimeSpan timeout)
    {
        var result = Checker.checkLines(timeout, lines);
        if (result.IsError)
            return new("history well-formed", false, $"line {result.ErrorValue.Line}: {result.ErrorValue.Message}");
        var report = result.ResultValue;
        return report.Overall.IsLinearizable
            ? new("linearizable", true, string.Create(CultureInfo.InvariantCulture, $"{report.Operations} operations on {report.Keys.Length} keys, checked in {report.Elapsed.TotalSeconds:F1} s"))
            : new("linearizable", false, report.Overall.IsUnknown
                ? $"unknown: the checker's budget of {timeout.TotalSeconds:0} s ran out"
                : ReportText.render(report).TrimEnd());
    }

    /// <summary>
    /// Durability of acknowledged writes, from the revisions their responses named: no two
    /// acknowledged writes share a revision (one would have been lost and its revision reused), and
    /// each key's final modification revision is at least that of every acknowledged write to it,
    /// holding that write's value when equal, and holding the value of a write that may have
    /// happened when newer.
    /// </summary>
    internal static TortureVerdict CheckAckedWrites(IReadOnlyList<AckedWrite> acked, IReadOnlyDictionary<string, KeyState>? final, Workload workload)
    {
        const string name = "acknowledged writes kept";
        foreach (var group in acked.GroupBy(a => a.Revision))
        {
            var distinct = group.Select(a => (a.Key, a.Value)).Distinct().ToList();
            if (distinct.Count > 1)
                return new(name, false, $"revision {group.Key} acknowledged for {string.Join(" and ", distinct.Select(d => $"{d.Key}={d.Value}"))}");
        }
        if (final is null) return new(name, acked.Count > 0, $"{acked.Count} acknowledged writes have distinct revisions; final state not read");
        var ackedValues = acked.Select(a => (a.Key, a.Value)).ToHashSet();
        foreach (var byKey in acked.GroupBy(a => a.Key))
        {
            var newest = byKey.MaxBy(a => a.Revision)!;
            if (!final.TryGetValue(byKey.Key, out var state))
                return new(name, false, $"key {byKey.Key} is absent, but {newest.F} of {newest.Value} was acknowledged at revision {newest.Revision}");
            if (state.ModRevision < newest.Revision)
                return new(name, false, $"key {byKey.Key} was last modified at revision {state.ModRevision} ({state.Value}), but {newest.F} of {newest.Value} was acknowledged at revision {newest.Revision}");
            if (state.ModRevision == newest.Revision && state.Value != newest.Value)
                return new(name, false, $"key {byKey.Key} holds {state.Value} at revision {state.ModRevision}, where {newest.F} of {newest.Value} was acknowledged");
        }
        foreach (var (key, state) in final)
            if (!ackedValues.Contains((key, state.Value)) && !workload.Unknown.ContainsKey((key, state.Value)))
                return new(name, false, $"key {key} holds {state.Value}, which no acknowledged or unknown write wrote");
        return new(name, true, $"{acked.Count} acknowledged writes, distinct revisions, none lost");
    }
}
