using Microsoft.Extensions.Logging;
using Raft.Host.Tracing;
using Raft.Spec;
using static Raft.Host.Tests.Cluster.TestCluster;
using MsLogLevel = Microsoft.Extensions.Logging.LogLevel;

namespace Raft.Host.Tests;

/// <summary>Collects log lines as (level, text).</summary>
public sealed class ListLogger : ILogger
{
    public List<(MsLogLevel Level, string Text)> Lines { get; } = [];

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(MsLogLevel logLevel) => true;

    public void Log<TState>(MsLogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        lock (Lines) Lines.Add((logLevel, formatter(state, exception)));
    }
}

public class RawNodeTests
{
    private static RawNode Bootstrapped(ulong[] peers, MemoryStorage storage, ILogger? logger = null, IRaftTraceSink? trace = null,
        Func<RaftNodeOptions, RaftNodeOptions>? configure = null)
    {
        var options = new RaftNodeOptions { Id = 1 };
        var rn = RawNode.Create(configure?.Invoke(options) ?? options, storage, logger, trace);
        rn.Bootstrap(peers);
        return rn;
    }

    /// <summary>Handles Readies the synchronous way until there is nothing left; returns the applied payloads.</summary>
    private static List<string> Pump(RawNode rn, MemoryStorage storage)
    {
        var applied = new List<string>();
        while (rn.HasReady)
        {
            var rd = rn.Ready();
            storage.Save(rd);
            foreach (var e in rd.CommittedEntries)
            {
                if (e.TryGetConfChange(out var cc)) rn.ApplyConfChange(cc);
                else if (e.Data.Length > 0) applied.Add(System.Text.Encoding.UTF8.GetString(e.Data));
            }
            rn.Advance();
        }
        return applied;
    }

    [Fact]
    public void A_single_node_elects_itself_and_commits_proposals()
    {
        var storage = new MemoryStorage();
        var rn = Bootstrapped([1], storage);
        Pump(rn, storage);
        rn.Campaign();
        Pump(rn, storage);
        Assert.True(rn.Status().IsLeader);
        rn.Propose(Bytes("hello"));
        Assert.Equal(["hello"], Pump(rn, storage));
        var status = rn.Status();
        Assert.Equal(status.Commit, status.Applied);
        Assert.Equal(status.Commit, storage.HardState.Commit);
        Assert.Equal("hello", System.Text.Encoding.UTF8.GetString(storage.Entries(storage.LastIndex, storage.LastIndex + 1)[0].Data));
    }

    [Fact]
    public void Ready_twice_without_Advance_and_Advance_without_Ready_are_refused()
    {
        var storage = new MemoryStorage();
        var rn = Bootstrapped([1], storage);
        var misuse = Assert.Throws<InvalidOperationException>(rn.Advance);
        Assert.Contains("Advance was called without a Ready", misuse.Message);
        var rd = rn.Ready();
        storage.Save(rd);
        misuse = Assert.Throws<InvalidOperationException>(() => rn.Ready());
        Assert.Contains("Ready was called again before Advance", misuse.Message);
        rn.Advance();
        Assert.Throws<InvalidOperationException>(rn.Advance);
    }

    [Fact]
    public void With_async_storage_writes_Advance_is_refused_and_work_comes_as_storage_messages()
    {
        var storage = new MemoryStorage();
        var rn = Bootstrapped([1], storage, configure: o => o with { AsyncStorageWrites = true });
        var rd = rn.Ready();
        Assert.NotNull(rd.StorageAppend);
        Assert.Single(rd.StorageAppend!.Entries); // the bootstrap conf change
        Assert.Empty(rd.PeerMessages);
        Assert.Contains(rd.Messages, m => m.To == NodeId.LocalAppendThread);
        var ex = Assert.Throws<InvalidOperationException>(rn.Advance);
        Assert.Contains("AsyncStorageWrites", ex.Message);
        // Persisting and stepping the responses is what Advance does otherwise.
        storage.Save(rd.StorageAppend);
        foreach (var response in rd.StorageAppend.Responses) rn.Step(response);
        var next = rn.Ready();
        Assert.NotNull(next.StorageApply);
        Assert.Single(next.StorageApply!.Entries);
        foreach (var e in next.StorageApply.Entries)
            if (e.TryGetConfChange(out var cc)) rn.ApplyConfChange(cc);
        foreach (var response in next.StorageApply.Responses) rn.Step(response);
        Assert.Equal(1UL, rn.Status().Applied);
    }

    [Fact]
    public void Proposals_without_a_leader_are_dropped_with_the_reason()
    {
        var storage = new MemoryStorage();
        var rn = Bootstrapped([1, 2, 3], storage);
        Pump(rn, storage);
        var ex = Assert.Throws<ProposalDroppedException>(() => rn.Propose(Bytes("x")));
        Assert.Equal(ProposalDropReason.NoLeader, ex.Reason);
        Assert.Equal("raft proposal dropped: 1 no leader at term 1; dropping proposal", ex.Message);
        // A candidate has no leader either.
        rn.Campaign();
        ex = Assert.Throws<ProposalDroppedException>(() => rn.ProposeConfChange(ConfChanges.AddNode(4)));
        Assert.Equal(ProposalDropReason.NoLeader, ex.Reason);
    }

    [Fact]
    public void Local_messages_from_the_network_and_responses_from_strangers_are_refused()
    {
        var storage = new MemoryStorage();
        var rn = Bootstrapped([1, 2, 3], storage);
        var local = new Message(MessageType.MsgHup, 1, 2, 0, 0, 0, [], 0, 0, null, false, 0, [], []);
        var ex = Assert.Throws<RaftStepException>(() => rn.Step(local));
        Assert.Equal("raft: cannot step raft local message", ex.Message);
        var stranger = new Message(MessageType.MsgAppResp, 1, 7, 1, 0, 0, [], 0, 0, null, false, 0, [], []);
        ex = Assert.Throws<RaftStepException>(() => rn.Step(stranger));
        Assert.True(ex.Error.IsStepPeerNotFound);
    }

    [Fact]
    public void The_cores_log_lines_reach_the_logger_with_etcds_texts_and_levels()
    {
        var logger = new ListLogger();
        var storage = new MemoryStorage();
        var rn = Bootstrapped([1], storage, logger);
        Pump(rn, storage);
        rn.Campaign();
        Pump(rn, storage);
        Assert.Contains((MsLogLevel.Information, "newRaft 1 [peers: [], term: 0, commit: 0, applied: 0, lastindex: 0, lastterm: 0]"), logger.Lines);
        Assert.Contains((MsLogLevel.Information, "1 became candidate at term 2"), logger.Lines);
        Assert.Contains((MsLogLevel.Information, "1 became leader at term 2"), logger.Lines);
        Assert.Contains(logger.Lines, l => l.Level == MsLogLevel.Information && l.Text.StartsWith("1 switched to configuration voters=(1)"));
    }

    [Fact]
    public async Task Trace_events_are_written_as_etcd_ndjson()
    {
        var path = Path.Combine(Path.GetTempPath(), $"raft-trace-{Guid.NewGuid():N}.ndjson");
        try
        {
            await using (var sink = new NdjsonTraceFile(path))
            {
                var storage = new MemoryStorage();
                var rn = Bootstrapped([1], storage, trace: sink);
                Pump(rn, storage);
                rn.Campaign();
                Pump(rn, storage);
                rn.Propose(Bytes("traced"));
                Pump(rn, storage);
            }
            var events = File.ReadAllLines(path).Select(TraceNdjson.Parse).ToList();
            Assert.Equal("InitState", events[0].Name);
            var names = events.Select(e => e.Name).ToList();
            Assert.Contains("BecomeCandidate", names);
            Assert.Contains("BecomeLeader", names);
            Assert.Contains("Replicate", names);
            Assert.Contains("Commit", names);
            Assert.All(events, e => Assert.Equal(1UL, e.NodeId));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public async Task Node_refuses_Ready_twice_and_Advance_without_Ready()
    {
        await using var node = Node.Start(new RaftNodeOptions { Id = 1 }, new MemoryStorage(), [1UL]);
        Assert.Throws<InvalidOperationException>(node.Advance);
        var rd = await node.ReadyAsync();
        Assert.Single(rd.Entries);
        var ex = await Assert.ThrowsAsync<InvalidOperationException>(() => node.ReadyAsync());
        Assert.Contains("before Advance", ex.Message);
        node.Advance();
        Assert.Throws<InvalidOperationException>(node.Advance);
    }

    [Fact]
    public async Task A_cancelled_ReadyAsync_loses_no_Ready()
    {
        var storage = new MemoryStorage();
        await using var node = Node.Start(new RaftNodeOptions { Id = 1 }, storage, [1UL]);
        var first = await node.ReadyAsync();
        storage.Save(first);
        foreach (var e in first.CommittedEntries)
            if (e.TryGetConfChange(out var cc)) await node.ApplyConfChangeAsync(cc);
        node.Advance();
        // Nothing is pending now: the wait is cancelled, and the work that comes later is not lost.
        using (var cts = new CancellationTokenSource())
        {
            var waiting = node.ReadyAsync(cts.Token);
            await cts.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting);
        }
        await node.CampaignAsync();
        // Candidate first (its self-vote becomes durable with that Ready), then leader.
        var rd = await node.ReadyAsync();
        Assert.Equal(StateType.StateCandidate, rd.SoftState!.RaftState);
        storage.Save(rd);
        node.Advance();
        rd = await node.ReadyAsync();
        Assert.Equal(StateType.StateLeader, rd.SoftState!.RaftState);
    }

    [Fact]
    public async Task A_cancelled_proposal_is_not_proposed()
    {
        await using var node = Node.Start(new RaftNodeOptions { Id = 1 }, new MemoryStorage(), [1UL]);
        using var cts = new CancellationTokenSource();
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => node.ProposeAsync(Bytes("x"), cts.Token));
        var rd = await node.ReadyAsync();
        Assert.DoesNotContain(rd.Entries, e => e.Type.IsEntryNormal);
    }

    [Fact]
    public async Task A_failed_call_reports_to_its_caller_and_leaves_the_node_as_it_was()
    {
        var storage = new MemoryStorage();
        await using var node = Node.Start(new RaftNodeOptions { Id = 1 }, storage, [1UL]);
        var before = await node.StatusAsync();
        // An empty ConfChangeV2 asks to leave a joint configuration, and there is none.
        var ex = await Assert.ThrowsAsync<InvalidOperationException>(() => node.ApplyConfChangeAsync(ConfChanges.Joint()));
        Assert.Contains("joint", ex.Message);
        var after = await node.StatusAsync();
        Assert.Equal(before.Voters, after.Voters);
        Assert.Equal(before.HardState, after.HardState);
        Assert.False(node.Completion.IsCompleted);
    }

    [Fact]
    public async Task Calls_after_stop_fail_with_NodeStoppedException()
    {
        var node = Node.Start(new RaftNodeOptions { Id = 1 }, new MemoryStorage(), [1UL]);
        await node.DisposeAsync();
        await Assert.ThrowsAsync<NodeStoppedException>(() => node.ProposeAsync(Bytes("x")));
        await Assert.ThrowsAsync<NodeStoppedException>(() => node.StatusAsync());
        Assert.Throws<NodeStoppedException>(node.Tick);
        await node.StopAsync(); // stopping twice is harmless
    }
}
