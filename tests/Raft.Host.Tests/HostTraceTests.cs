using Raft.Host.Tests.Cluster;
using Raft.Host.Tracing;
using Raft.Spec;
using Xunit.Abstractions;
using static Raft.Host.Tests.Cluster.TestCluster;

namespace Raft.Host.Tests;

/// <summary>
/// In-process clusters of Raft.Host Nodes that log etcd trace events, one scenario a trace:
/// elections with PreVote and CheckQuorum on and off, replication, conf changes (learner,
/// promotion, removal, a joint change), a snapshot catch-up, a leadership transfer, ReadIndex,
/// message loss and restarts. Each test checks its trace without TLC (well-formed lines, the
/// options line the run started with, the events the scenario must produce, sends before
/// receives, terms that only grow); tlaplus/check-traces.sh validates the committed copies
/// (tests/Raft.Host.Tests/traces/) against Raft.tla with TLC.
///
/// RAFTV_WRITE_HOST_TRACES=1 rewrites those copies:
///   RAFTV_WRITE_HOST_TRACES=1 dotnet test tests/Raft.Host.Tests --filter HostTraceTests
/// The random-fault run takes its seeds from RAFTV_HOST_TRACE_SEEDS (N: seeds 1..N, or A..B;
/// default: seed 1), runs RAFTV_HOST_TRACE_STEPS steps (default 30) and writes into
/// RAFTV_HOST_TRACE_DIR when set (the sweep of tlaplus/check-traces.sh --host-sweep N).
/// </summary>
public class HostTraceTests(ITestOutputHelper output)
{
    private const string WriteVariable = "RAFTV_WRITE_HOST_TRACES";
    private const string SeedsVariable = "RAFTV_HOST_TRACE_SEEDS";
    private const string DirVariable = "RAFTV_HOST_TRACE_DIR";
    private const string StepsVariable = "RAFTV_HOST_TRACE_STEPS";

    /// <summary>Few heartbeats keep the traces small (and TLC's search short).</summary>
    private static RaftNodeOptions Traced(RaftNodeOptions o, bool preVote, bool checkQuorum, bool asyncWrites) =>
        o with { ElectionTick = 10, HeartbeatTick = 3, PreVote = preVote, CheckQuorum = checkQuorum, AsyncStorageWrites = asyncWrites };

    [Fact]
    public async Task Election_with_PreVote_and_CheckQuorum_an_isolated_leader_steps_down_and_rejoins()
    {
        var events = await RunAsync("election-prevote-checkquorum", preVote: true, checkQuorum: true, asyncWrites: false, async (cluster, _) =>
        {
            var leader = await cluster.ElectAsync(1);
            await leader.Node.ProposeAsync(Bytes("a"));
            await cluster.WaitForAppliedAsync(["a"]);
            cluster.Network.Isolate(1);
            // CheckQuorum: the cut-off leader steps down; the others elect one of themselves.
            await SettleAsync(cluster, async () => !(await leader.Node.StatusAsync()).IsLeader, "node 1 steps down");
            var next = await NewLeaderAsync(cluster, exceptId: 1);
            cluster.Network.Heal(1);
            await SettleAsync(cluster, async () => (await leader.Node.StatusAsync()).Lead == next.Id, $"node 1 follows {next.Id}");
            await next.Node.ProposeAsync(Bytes("b"));
            await cluster.WaitForAppliedAsync(["a", "b"]);
        });
        Assert.Contains(events, e => e.Name == "BecomeFollower" && e.NodeId == 1 && e.Role.IsStateFollower);
        Assert.True(events.Count(e => e.Name == "BecomeLeader") >= 2, "two elections");
        // PreVote: the new campaign shows pre-candidates.
        Assert.Contains(events, e => e.Role.IsStatePreCandidate);
    }

    [Fact]
    public async Task Election_without_PreVote_and_CheckQuorum_a_deposed_leader_learns_the_new_term()
    {
        var events = await RunAsync("election-plain", preVote: false, checkQuorum: false, asyncWrites: false, async (cluster, _) =>
        {
            var leader = await cluster.ElectAsync(1);
            await leader.Node.ProposeAsync(Bytes("a"));
            await cluster.WaitForAppliedAsync(["a"]);
            cluster.Network.Isolate(1);
            var next = await NewLeaderAsync(cluster, exceptId: 1);
            // Without CheckQuorum node 1 leads on until it hears of the higher term.
            Assert.True((await leader.Node.StatusAsync()).IsLeader);
            cluster.Network.Heal(1);
            await SettleAsync(cluster, async () => (await leader.Node.StatusAsync()).Lead == next.Id, $"node 1 follows {next.Id}");
            await next.Node.ProposeAsync(Bytes("b"));
            await cluster.WaitForAppliedAsync(["a", "b"]);
        });
        Assert.DoesNotContain(events, e => e.Role.IsStatePreCandidate);
        Assert.Contains(events, e => e.Name == "SendRequestVoteRequest");
        Assert.Contains(events, e => e.Name == "ReceiveRequestVoteResponse" && e.Message!.Value.Reject == false);
        Assert.Contains(events, e => e.Name == "BecomeFollower" && e.NodeId == 1 && e.Term > 1);
    }

    [Fact]
    public async Task Conf_changes_add_a_learner_promote_it_remove_a_voter_and_go_through_a_joint_configuration()
    {
        var events = await RunAsync("confchange", preVote: true, checkQuorum: false, asyncWrites: true, async (cluster, _) =>
        {
            var leader = await cluster.ElectAsync(1);
            await leader.Node.ProposeAsync(Bytes("one"));
            await cluster.WaitForAppliedAsync(["one"]);

            var learner = cluster.Join(4);
            await ChangeAsync(cluster, leader, ConfChanges.AddLearner(4), s => s.Learners.Contains(4UL));
            await leader.Node.ProposeAsync(Bytes("two"));
            await SettleAsync(cluster, () => Task.FromResult(learner.Applied.SequenceEqual(["one", "two"])), "the learner catches up");
            await ChangeAsync(cluster, leader, ConfChanges.AddNode(4), s => s.Voters.SequenceEqual([1UL, 2UL, 3UL, 4UL]));
            await ChangeAsync(cluster, leader, ConfChanges.RemoveNode(3), s => s.Voters.SequenceEqual([1UL, 2UL, 4UL]));
            await cluster[3].StopAsync();

            // Joint consensus: 5 comes in and 2 goes out in one change, left automatically.
            cluster.Join(5);
            await ChangeAsync(cluster, leader,
                ConfChanges.Joint(new ConfChangeSingle(ConfChangeType.ConfChangeAddNode, 5), new ConfChangeSingle(ConfChangeType.ConfChangeRemoveNode, 2)),
                s => s.Voters.SequenceEqual([1UL, 4UL, 5UL]) && s.VotersOutgoing.Count == 0);
            await cluster[2].StopAsync();
            await leader.Node.ProposeAsync(Bytes("three"));
            await cluster.WaitForAppliedAsync(["one", "two", "three"], [1UL, 4UL, 5UL]);
        });
        Assert.Contains(events, e => e.Name == "ChangeConf" && Changes(e).Any(c => c.Type.IsConfChangeAddLearnerNode));
        Assert.Contains(events, e => e.Name == "ChangeConf" && Changes(e).Any(c => c.Type.IsConfChangeRemoveNode));
        Assert.Contains(events, e => e.Name == "ChangeConf" && Changes(e).Count == 2);
        // Somebody was in the joint configuration, and 4 applied its promotion.
        Assert.Contains(events, e => e.Name == "ApplyConfChange" && !e.Conf.Item2.IsEmpty);
        Assert.Contains(events, e => e.Name == "ApplyConfChange" && e.NodeId == 4 && NewConf(e).Contains(4UL));
    }

    [Fact]
    public async Task A_lagging_follower_catches_up_from_a_snapshot()
    {
        var events = await RunAsync("snapshot", preVote: false, checkQuorum: true, asyncWrites: false, async (cluster, _) =>
        {
            var leader = await cluster.ElectAsync(1);
            await leader.Node.ProposeAsync(Bytes("p0"));
            await cluster.WaitForAppliedAsync(["p0"]);
            cluster.Network.Isolate(3);
            string[] payloads = ["p1", "p2", "p3", "p4"];
            foreach (var p in payloads) await leader.Node.ProposeAsync(Bytes(p));
            await cluster.WaitForAppliedAsync(payloads, [1UL, 2UL]);
            var snapIndex = leader.SnapshotAndCompact();
            cluster.Network.Heal(3);
            await SettleAsync(cluster, () => Task.FromResult(cluster[3].AppliedIndex >= snapIndex), "node 3 restores the snapshot");
            await leader.Node.ProposeAsync(Bytes("later"));
            await cluster.WaitForAppliedAsync([.. payloads, "later"]);
        });
        Assert.Contains(events, e => e.Name == "SendAppendEntriesRequest" && e.Message!.Value.Type.IsMsgSnap);
        Assert.Contains(events, e => e.Name == "ReceiveAppendEntriesRequest" && e.NodeId == 3 && e.Message!.Value.Type.IsMsgSnap);
    }

    [Fact]
    public async Task Leadership_moves_by_transfer_and_ReadIndex_is_answered_on_leader_and_follower()
    {
        var events = await RunAsync("transfer-readindex", preVote: true, checkQuorum: true, asyncWrites: true, async (cluster, _) =>
        {
            await cluster.ElectAsync(1);
            await cluster[1].Node.ProposeAsync(Bytes("w"));
            await cluster.WaitForAppliedAsync(["w"]);
            await cluster[1].Node.TransferLeadershipAsync(2);
            await SettleAsync(cluster, async () => (await cluster[2].Node.StatusAsync()).IsLeader, "node 2 leads");
            await cluster.WaitForLeaderEverywhereAsync(2);
            await cluster[2].Node.ReadIndexAsync(Bytes("read-leader"));
            await cluster[3].Node.ReadIndexAsync(Bytes("read-follower"));
            foreach (var (id, ctx) in new[] { (2UL, "read-leader"), (3UL, "read-follower") })
                await SettleAsync(cluster, () => Task.FromResult(cluster[id].ReadStates.Any(r => r.RequestCtx.SequenceEqual(Bytes(ctx)))),
                    $"node {id} gets its read state");
            await cluster[1].Node.ProposeAsync(Bytes("after"));
            await cluster.WaitForAppliedAsync(["w", "after"]);
        });
        // The transferee campaigns without a pre-vote round (MsgTimeoutNow forces the election).
        var becameLeader = events.Where(e => e.Name == "BecomeLeader").Select(e => e.NodeId).ToList();
        Assert.Equal([1UL, 2UL], becameLeader);
    }

    /// <summary>Seed 1 in CI (its trace is a committed copy); more with RAFTV_HOST_TRACE_SEEDS.</summary>
    public static TheoryData<int> Seeds()
    {
        var data = new TheoryData<int>();
        var value = Environment.GetEnvironmentVariable(SeedsVariable);
        if (string.IsNullOrEmpty(value)) data.Add(1);
        else
        {
            // "N" (seeds 1..N) or "A..B"
            var bounds = value.Split("..");
            var (from, to) = bounds.Length == 2 ? (Parse(bounds[0]), Parse(bounds[1])) : (1, Parse(value));
            for (var seed = from; seed <= to; seed++) data.Add(seed);
        }
        return data;

        static int Parse(string s) => int.TryParse(s, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var n) && n > 0
            ? n : throw new ArgumentException($"{SeedsVariable}: '{s}' is not a positive seed (give N for seeds 1..N, or A..B)");
    }

    /// <summary>Steps of a random-fault run: 30, or RAFTV_HOST_TRACE_STEPS (longer runs for sweeps).</summary>
    private static int Steps() =>
        Environment.GetEnvironmentVariable(StepsVariable) is { Length: > 0 } v
            ? int.TryParse(v, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var n) && n > 0
                ? n : throw new ArgumentException($"{StepsVariable}: '{v}' is not a positive number of steps")
            : 30;

    /// <summary>
    /// Random message loss, proposals, restarts (storage kept), leadership transfers,
    /// compactions and reads chosen by the seed, then the losses stop and the cluster commits.
    /// The Node loops' thread timing still varies, so the same seed makes the same choices but
    /// not always the same trace.
    /// </summary>
    [Theory]
    [MemberData(nameof(Seeds))]
    public async Task Random_loss_restarts_transfers_and_compactions(int seed)
    {
        // The settings cycle with the seed (seed 1: PreVote on, CheckQuorum off, synchronous writes).
        var (preVote, checkQuorum, asyncWrites) = (seed % 2 == 1, seed % 4 >= 2, seed % 8 >= 4);
        var kinds = new Dictionary<string, int>();
        var events = await RunAsync($"loss-restart-seed{seed}", preVote, checkQuorum, asyncWrites, async (cluster, choices) =>
        {
            // Losses start once a leader is known: ElectAsync waits without ticking, so nothing lost would be resent.
            await cluster.ElectAsync(1);
            // Loss decisions have their own generator: they are drawn on the nodes' threads, in
            // an order that varies, and must not shift the scenario's choices.
            var loss = new Random(seed * 7919 + 1);
            cluster.Network.Drop = _ => { lock (loss) return loss.NextDouble() < 0.15; };
            var proposed = 0;
            var steps = Steps();
            for (var step = 0; step < steps; step++)
            {
                var roll = choices.NextDouble();
                var running = cluster.Running.ToArray();
                var target = running[choices.Next(running.Length)];
                var down = cluster.Members.Values.FirstOrDefault(m => !m.Running);
                string kind;
                if (roll < 0.3)
                {
                    kind = "propose";
                    try { await target.Node.ProposeAsync(Bytes($"s{seed}-p{proposed++}")); }
                    catch (ProposalDroppedException) { kind = "propose-dropped"; }
                }
                else if (roll < 0.38)
                {
                    // At most one member down at a time, so that a majority can make progress.
                    kind = down is null ? "stop" : "restart";
                    if (down is not null) down.Start(null);
                    else await cluster[(ulong)choices.Next(1, 4)].StopAsync();
                }
                else if (roll < 0.42)
                {
                    kind = "transfer";
                    await target.Node.TransferLeadershipAsync((ulong)choices.Next(1, 4));
                }
                else if (roll < 0.46)
                {
                    // The application compacts what it applied (nothing if a snapshot already covers it).
                    kind = target.AppliedIndex > target.Storage.Snapshot.Metadata.Index ? "compact" : "compact-none";
                    if (kind == "compact") target.SnapshotAndCompact();
                }
                else if (roll < 0.5)
                {
                    kind = "read";
                    await target.Node.ReadIndexAsync(Bytes($"r{step}"));
                }
                else kind = "tick";
                kinds[kind] = kinds.GetValueOrDefault(kind) + 1;
                await cluster.TickAllAsync();
            }
            cluster.Heal();
            var final = $"s{seed}-final";
            await cluster.CommitEverywhereAsync(final, $"seed {seed}: the healed cluster commits '{final}'",
                (condition, what) => SettleAsync(cluster, condition, what));
        }, seed);
        output.WriteLine($"seed {seed}: prevote={preVote} checkquorum={checkQuorum} async={asyncWrites}; " +
            string.Join(" ", kinds.OrderBy(k => k.Key).Select(k => $"{k.Key}={k.Value}")));
        Assert.Contains(events, e => e.Name == "BecomeLeader");
        Assert.Contains(events, e => e.Name == "Commit");
    }

    /// <summary>The checks fail on a receive with no send before it and on another run's options line.</summary>
    [Fact]
    public void The_trace_checks_catch_a_lost_send_line_and_a_wrong_options_line()
    {
        var path = Path.Combine(TestPaths.RepositoryRoot(), "tests", "Raft.Host.Tests", "traces", "election-plain.ndjson");
        var lines = File.ReadAllLines(path);
        var options = TraceNdjson.ParseOptions(lines[0]);
        CheckTrace(lines, options);

        Assert.ThrowsAny<Xunit.Sdk.XunitException>(() => CheckTrace(lines, options with { PreVote = !options.PreVote }));
        Assert.ThrowsAny<Xunit.Sdk.XunitException>(() => CheckTrace(lines, options with { Voters = [1UL, 2UL] }));
        Assert.ThrowsAny<Xunit.Sdk.XunitException>(() => CheckTrace(lines, options with { AsyncStorageWrites = !options.AsyncStorageWrites }));

        var send = Array.FindIndex(lines, l => l.Contains("\"name\":\"SendAppendEntriesRequest\"", StringComparison.Ordinal));
        Assert.True(send > 0, "the trace has a SendAppendEntriesRequest line");
        var withoutSend = lines.Where((_, k) => k != send).ToArray();
        var e = Assert.ThrowsAny<Xunit.Sdk.XunitException>(() => CheckTrace(withoutSend, options));
        Assert.Contains("no line sent before", e.Message);
    }

    // ---- running a scenario and checking its trace -----------------------------------------

    /// <summary>
    /// Runs a scenario on a 3-node cluster bootstrapped etcd's way, tracing into a file: the
    /// committed copy when RAFTV_WRITE_HOST_TRACES=1, RAFTV_HOST_TRACE_DIR's when set, a
    /// temporary file otherwise. Returns the trace's events once checked.
    /// </summary>
    private async Task<List<TraceEvent>> RunAsync(string name, bool preVote, bool checkQuorum, bool asyncWrites,
        Func<TestCluster, Random, Task> scenario, int seed = 1)
    {
        var (path, keep) = TracePath(name);
        var options = new TraceRunOptions
        {
            Voters = [1UL, 2UL, 3UL],
            Boot = TraceBoot.Entries,
            PreVote = preVote,
            CheckQuorum = checkQuorum,
            AsyncStorageWrites = asyncWrites,
            Replay = name.StartsWith("loss-restart", StringComparison.Ordinal)
                ? $"{SeedsVariable}={seed}..{seed} {WriteVariable}=1 dotnet test tests/Raft.Host.Tests --filter HostTraceTests.Random_loss_restarts_transfers_and_compactions"
                : $"{WriteVariable}=1 dotnet test tests/Raft.Host.Tests --filter HostTraceTests",
        };
        try
        {
            File.Delete(path);
            await using (var trace = new NdjsonTraceFile(path, new CountingClock()))
            {
                trace.WriteOptions(options);
                await using var cluster = TestCluster.Start(3,
                    o => Traced(o, preVote, checkQuorum, asyncWrites) with { RandomSeed = (ulong)(seed * 10) + o.Id }, trace);
                try
                {
                    await scenario(cluster, new Random(seed));
                }
                catch (Exception e)
                {
                    throw new Xunit.Sdk.XunitException($"{name} (seed {seed}) failed; replay: {options.Replay}\n{e}");
                }
            }
            var lines = File.ReadAllLines(path);
            output.WriteLine($"{name}: {lines.Length - 1} events, {new FileInfo(path).Length / 1024} KiB{(keep ? $", written to {path}" : "")}");
            return CheckTrace(lines, options);
        }
        finally
        {
            if (!keep) File.Delete(path);
        }
    }

    private static (string Path, bool Keep) TracePath(string name)
    {
        if (Environment.GetEnvironmentVariable(DirVariable) is { Length: > 0 } dir)
        {
            Directory.CreateDirectory(dir);
            return (Path.Combine(dir, name + ".ndjson"), true);
        }
        if (Environment.GetEnvironmentVariable(WriteVariable) == "1")
            return (Path.Combine(TestPaths.RepositoryRoot(), "tests", "Raft.Host.Tests", "traces", name + ".ndjson"), true);
        return (Path.Combine(Path.GetTempPath(), $"raftv-hosttrace-{name}-{Guid.NewGuid():N}.ndjson"), false);
    }


    /// <summary>
    /// What a trace must satisfy whatever TLC says: the options line first, as the run
    /// started; every other line an event; per node, terms that only grow (a restart logs
    /// term 0 before it loads its HardState) and a commit within the log; every message a
    /// node received from a peer sent before by that peer.
    /// </summary>
    internal static List<TraceEvent> CheckTrace(IReadOnlyList<string> lines, TraceRunOptions expected)
    {
        Assert.True(lines.Count > 1, "the trace has no events");
        var header = TraceNdjson.ParseOptions(lines[0]);
        Assert.Equal(expected.Voters, header.Voters);
        Assert.Equal(expected.Boot, header.Boot);
        Assert.Equal(expected.PreVote, header.PreVote);
        Assert.Equal(expected.CheckQuorum, header.CheckQuorum);
        Assert.Equal(expected.AsyncStorageWrites, header.AsyncStorageWrites);

        var events = new List<TraceEvent>();
        var term = new Dictionary<ulong, ulong>();
        var sent = new HashSet<TraceMessage>();
        for (var k = 1; k < lines.Count; k++)
        {
            TraceEvent e;
            try { e = TraceNdjson.Parse(lines[k]); }
            catch (TraceFormatException ex) { throw new Xunit.Sdk.XunitException($"line {k + 1}: {ex.Message}\n{lines[k]}"); }
            var where = $"line {k + 1} ({e.Name} of node {e.NodeId})";
            if (e.Name == "InitState") term[e.NodeId] = 0;
            else
            {
                Assert.True(e.Term >= term.GetValueOrDefault(e.NodeId), $"{where}: term {e.Term} after {term.GetValueOrDefault(e.NodeId)}");
                term[e.NodeId] = e.Term;
            }
            Assert.True(e.Commit <= e.LogLength, $"{where}: commit {e.Commit} past the log's last index {e.LogLength}");
            if (e.Message is { } opt && opt.Value is var m && m.From != m.To)
            {
                if (e.Name.StartsWith("Send", StringComparison.Ordinal)) sent.Add(m);
                else if (e.Name.StartsWith("Receive", StringComparison.Ordinal))
                    Assert.True(sent.Contains(m), $"{where}: received a message no line sent before: {lines[k]}");
            }
            events.Add(e);
        }
        Assert.Contains(events, e => e.Name == "Ready");
        return events;
    }

    /// <summary>
    /// Waits for the condition, ticking every member only when nothing happens for a while:
    /// ticks bring heartbeats, and heartbeats make traces long (and TLC's search slower).
    /// </summary>
    private static async Task SettleAsync(TestCluster cluster, Func<Task<bool>> condition, string what)
    {
        var polls = 0;
        await cluster.EventuallyTicking(async () =>
        {
            while (!await condition())
            {
                if (++polls % 25 == 0) return false; // tick
                await Task.Delay(2);
            }
            return true;
        }, what);
    }

    private static async Task<TestMember> NewLeaderAsync(TestCluster cluster, ulong exceptId)
    {
        TestMember? next = null;
        await SettleAsync(cluster, async () =>
        {
            foreach (var m in cluster.Running.Where(m => m.Id != exceptId))
                if ((await m.Node.StatusAsync()).IsLeader) { next = m; return true; }
            return false;
        }, $"a node other than {exceptId} leads");
        await SettleAsync(cluster, async () =>
        {
            foreach (var m in cluster.Running.Where(m => m.Id != exceptId))
                if ((await m.Node.StatusAsync()).Lead != next!.Id) return false;
            return true;
        }, $"the others follow {next!.Id}");
        return next!;
    }

    /// <summary>Proposes a conf change once the leader applied the previous one, and waits until it holds.</summary>
    private static async Task ChangeAsync(TestCluster cluster, TestMember leader, ConfChangeI change, Func<RaftStatus, bool> done)
    {
        await Eventually(async () => { var s = await leader.Node.StatusAsync(); return s.Applied >= s.Commit; }, $"node {leader.Id} applied its log", cluster);
        await leader.Node.ProposeConfChangeAsync(change);
        await SettleAsync(cluster, async () => done(await leader.Node.StatusAsync()), "the conf change is in force");
    }

    private static IReadOnlyList<ConfChangeSingle> Changes(TraceEvent e) =>
        e.ConfChange is { } cc ? [.. cc.Value.Changes] : [];

    private static IReadOnlyList<ulong> NewConf(TraceEvent e) =>
        e.ConfChange is { } cc ? [.. cc.Value.NewConf] : [];

    /// <summary>Timestamps that count lines (1 ms apart), so that traces differ only in what happened.</summary>
    private sealed class CountingClock : TimeProvider
    {
        private long _ticks;

        public override DateTimeOffset GetUtcNow() => DateTimeOffset.UnixEpoch.AddMilliseconds(Interlocked.Increment(ref _ticks));
    }
}
