using Raft.Host.Tests.Cluster;
using Raft.Spec;
using static Raft.Host.Tests.Cluster.TestCluster;

namespace Raft.Host.Tests;

public class NodeClusterTests
{
    [Theory]
    [InlineData(3)]
    [InlineData(5)]
    public async Task A_campaigning_node_is_elected_and_its_proposals_commit_everywhere(int size)
    {
        await using var cluster = TestCluster.Start(size);
        var leader = await cluster.ElectAsync(1);
        var status = await leader.Node.StatusAsync();
        Assert.True(status.IsLeader);
        Assert.Equal(Enumerable.Range(1, size).Select(i => (ulong)i), status.Voters);
        Assert.Equal(size, status.Progress.Count);

        string[] payloads = ["a", "b", "c"];
        foreach (var p in payloads) await leader.Node.ProposeAsync(Bytes(p));
        await cluster.WaitForAppliedAsync(payloads);
        foreach (var m in cluster.Members.Values)
        {
            Assert.Equal(payloads, m.Applied);
            Assert.Equal(m.AppliedIndex, m.Storage.HardState.Commit);
        }
        // Everything applied was persisted first: the entries are in every storage.
        var last = leader.Storage.LastIndex;
        foreach (var m in cluster.Members.Values) Assert.Equal(last, m.Storage.LastIndex);
    }

    [Fact]
    public async Task A_proposal_on_a_follower_is_forwarded_to_the_leader()
    {
        await using var cluster = TestCluster.Start(3);
        await cluster.ElectAsync(1);
        await cluster[3].Node.ProposeAsync(Bytes("from-3"));
        await cluster.WaitForAppliedAsync(["from-3"]);
    }

    [Fact]
    public async Task A_proposal_without_a_leader_fails_with_the_reason()
    {
        await using var cluster = TestCluster.Start(3);
        var ex = await Assert.ThrowsAsync<ProposalDroppedException>(() => cluster[2].Node.ProposeAsync(Bytes("x")));
        Assert.Equal(ProposalDropReason.NoLeader, ex.Reason);
        Assert.Contains("raft proposal dropped", ex.Message);
        Assert.Contains("no leader at term 1; dropping proposal", ex.Message);
    }

    [Fact]
    public async Task A_follower_with_forwarding_disabled_drops_proposals()
    {
        await using var cluster = TestCluster.Start(3, o => o with { DisableProposalForwarding = true });
        await cluster.ElectAsync(1);
        var ex = await Assert.ThrowsAsync<ProposalDroppedException>(() => cluster[2].Node.ProposeAsync(Bytes("x")));
        Assert.Equal(ProposalDropReason.ForwardingDisabled, ex.Reason);
        Assert.Contains("not forwarding to leader 1", ex.Message);
    }

    [Fact]
    public async Task A_leader_drops_proposals_beyond_the_uncommitted_size_limit()
    {
        await using var cluster = TestCluster.Start(3, o => o with { MaxUncommittedEntriesSize = 16 });
        var leader = await cluster.ElectAsync(1);
        cluster.Network.Isolate(1);
        // Nothing commits while the leader is cut off: the uncommitted tail grows to the limit.
        await leader.Node.ProposeAsync(new byte[10]);
        var ex = await Assert.ThrowsAsync<ProposalDroppedException>(() => leader.Node.ProposeAsync(new byte[10]));
        Assert.Equal(ProposalDropReason.UncommittedSizeLimit, ex.Reason);
        Assert.Contains("uncommitted entry size limit", ex.Message);
    }

    [Fact]
    public async Task Leadership_moves_to_the_transferee_and_proposals_wait_meanwhile()
    {
        await using var cluster = TestCluster.Start(3);
        var leader = await cluster.ElectAsync(1);
        await leader.Node.ProposeAsync(Bytes("before"));
        await cluster.WaitForAppliedAsync(["before"]);

        // Towards an unreachable transferee the transfer stays pending and proposals are refused.
        cluster.Network.Isolate(3);
        await leader.Node.TransferLeadershipAsync(3);
        var ex = await Assert.ThrowsAsync<ProposalDroppedException>(() => leader.Node.ProposeAsync(Bytes("x")));
        Assert.Equal(ProposalDropReason.LeadershipTransferInProgress, ex.Reason);
        Assert.Equal(3UL, (await leader.Node.StatusAsync()).LeadTransferee);
        // An election timeout later the leader gives up the transfer.
        await cluster.EventuallyTicking(async () => (await leader.Node.StatusAsync()).LeadTransferee == 0, "transfer aborted");

        cluster.Network.Heal(3);
        await leader.Node.TransferLeadershipAsync(3);
        await cluster.EventuallyTicking(async () => (await cluster[3].Node.StatusAsync()).IsLeader, "node 3 leads");
        await cluster.WaitForLeaderEverywhereAsync(3);
        await cluster[1].Node.ProposeAsync(Bytes("after"));
        await cluster.WaitForAppliedAsync(["before", "after"]);
    }

    [Fact]
    public async Task A_follower_forgets_its_leader_until_the_next_heartbeat()
    {
        await using var cluster = TestCluster.Start(3);
        await cluster.ElectAsync(1);
        // Cut off so that no heartbeat can reach node 2 in between.
        cluster.Network.Isolate(1);
        await cluster[2].Node.ForgetLeaderAsync();
        Assert.Equal(0UL, (await cluster[2].Node.StatusAsync()).Lead);
        cluster.Network.Heal(1);
        await cluster.EventuallyTicking(async () => (await cluster[2].Node.StatusAsync()).Lead == 1, "node 2 follows 1 again");
        Assert.True((await cluster[1].Node.StatusAsync()).IsLeader);
    }

    [Fact]
    public async Task ReadIndex_on_the_leader_and_on_a_follower_returns_a_read_point_past_the_writes()
    {
        await using var cluster = TestCluster.Start(3);
        var leader = await cluster.ElectAsync(1);
        await leader.Node.ProposeAsync(Bytes("w"));
        await cluster.WaitForAppliedAsync(["w"]);
        var commit = (await leader.Node.StatusAsync()).Commit;

        await leader.Node.ReadIndexAsync(Bytes("read-1"));
        await cluster[2].Node.ReadIndexAsync(Bytes("read-2"));
        // Safe reads are confirmed by a heartbeat round.
        foreach (var (id, ctx) in new[] { (1UL, "read-1"), (2UL, "read-2") })
        {
            await cluster.EventuallyTicking(() => Task.FromResult(cluster[id].ReadStates.Any(r => r.RequestCtx.SequenceEqual(Bytes(ctx)))),
                $"node {id} gets its read state");
            var rs = cluster[id].ReadStates.Single(r => r.RequestCtx.SequenceEqual(Bytes(ctx)));
            Assert.True(rs.Index >= commit, $"read index {rs.Index} before the commit {commit}");
        }
    }

    [Fact]
    public async Task A_learner_is_added_catches_up_and_is_promoted_then_a_voter_is_removed()
    {
        await using var cluster = TestCluster.Start(3);
        var leader = await cluster.ElectAsync(1);
        await leader.Node.ProposeAsync(Bytes("one"));
        await cluster.WaitForAppliedAsync(["one"]);

        var learner = cluster.Join(4);
        await leader.Node.ProposeConfChangeAsync(ConfChanges.AddLearner(4));
        await Eventually(async () => (await leader.Node.StatusAsync()).Learners.Contains(4UL), "4 is a learner");
        await AppliedEverythingAsync(leader);
        await leader.Node.ProposeAsync(Bytes("two"));
        await cluster.EventuallyTicking(() => Task.FromResult(learner.Applied.SequenceEqual(["one", "two"])), "the learner catches up");
        Assert.Equal([4UL], learner.ConfState.Learners);

        await leader.Node.ProposeConfChangeAsync(ConfChanges.AddNode(4));
        await Eventually(async () => (await leader.Node.StatusAsync()).Voters.SequenceEqual([1UL, 2UL, 3UL, 4UL]), "4 is promoted");
        await cluster.EventuallyTicking(() => Task.FromResult(learner.ConfState.Voters.Contains(4UL)), "4 knows it votes");
        await AppliedEverythingAsync(leader);

        await leader.Node.ProposeConfChangeAsync(ConfChanges.RemoveNode(3));
        await Eventually(async () => (await leader.Node.StatusAsync()).Voters.SequenceEqual([1UL, 2UL, 4UL]), "3 is removed");
        await cluster[3].StopAsync();
        // The new majority (of 1, 2, 4) commits without 3.
        await leader.Node.ProposeAsync(Bytes("three"));
        await cluster.WaitForAppliedAsync(["one", "two", "three"], [1UL, 2UL, 4UL]);
        Assert.Equal([1UL, 2UL, 4UL], cluster[4].ConfState.Voters);
    }

    /// <summary>
    /// Raft takes a new conf change only once the previous one is applied (it would turn it into
    /// an empty entry otherwise), and learns of applying at Advance.
    /// </summary>
    private static Task AppliedEverythingAsync(TestMember m) =>
        Eventually(async () => { var s = await m.Node.StatusAsync(); return s.Applied >= s.Commit; }, $"node {m.Id} applied its log");

    [Fact]
    public async Task A_lagging_follower_catches_up_from_a_snapshot_after_compaction()
    {
        await using var cluster = TestCluster.Start(3);
        var leader = await cluster.ElectAsync(1);
        await leader.Node.ProposeAsync(Bytes("p0"));
        await cluster.WaitForAppliedAsync(["p0"]);

        cluster.Network.Isolate(3);
        var payloads = Enumerable.Range(1, 20).Select(i => $"p{i}").ToArray();
        foreach (var p in payloads) await leader.Node.ProposeAsync(Bytes(p));
        await cluster.WaitForAppliedAsync(payloads, [1UL, 2UL]);
        var snapIndex = leader.SnapshotAndCompact();
        Assert.True(leader.Storage.FirstIndex > cluster[3].Storage.LastIndex + 1, "the follower's next entries are compacted");

        cluster.Network.Heal(3);
        await cluster.EventuallyTicking(() => Task.FromResult(cluster[3].AppliedIndex >= snapIndex), "node 3 restores the snapshot");
        Assert.Equal(snapIndex, cluster[3].Storage.Snapshot.Metadata.Index);
        Assert.Equal(["p0", .. payloads], cluster[3].Applied);

        // Replication carries on from the snapshot.
        await leader.Node.ProposeAsync(Bytes("later"));
        await cluster.WaitForAppliedAsync([.. payloads, "later"]);
    }

    [Fact]
    public async Task A_restarted_node_recovers_its_state_from_storage_and_catches_up()
    {
        await using var cluster = TestCluster.Start(3);
        var leader = await cluster.ElectAsync(1);
        await leader.Node.ProposeAsync(Bytes("a"));
        await cluster.WaitForAppliedAsync(["a"]);

        var follower = cluster[2];
        var before = await follower.Node.StatusAsync();
        await follower.StopAsync();
        await Assert.ThrowsAsync<NodeStoppedException>(() => follower.Node.ProposeAsync(Bytes("late")));
        await leader.Node.ProposeAsync(Bytes("b"));
        await cluster.WaitForAppliedAsync(["a", "b"], [1UL, 3UL]);

        follower.Start(null);
        var after = await follower.Node.StatusAsync();
        Assert.Equal(before.Term, after.Term);
        Assert.Equal(before.HardState.Vote, after.HardState.Vote);
        Assert.True(after.Commit >= before.Commit);
        // The configuration lives in the log's conf change entries here (no snapshot yet): it is
        // back once they are applied again, as with etcd.
        await Eventually(async () => (await follower.Node.StatusAsync()).Voters.SequenceEqual([1UL, 2UL, 3UL]), "node 2 knows the members", cluster);
        await cluster.EventuallyTicking(() => Task.FromResult(follower.Applied.SequenceEqual(["a", "b"])), "node 2 catches up");
    }

    [Fact]
    public async Task With_async_storage_writes_the_storage_threads_persist_and_apply()
    {
        await using var cluster = TestCluster.Start(3, o => o with { AsyncStorageWrites = true });
        var leader = await cluster.ElectAsync(1);
        string[] payloads = ["x", "y", "z"];
        foreach (var p in payloads) await leader.Node.ProposeAsync(Bytes(p));
        await cluster[2].Node.ProposeAsync(Bytes("forwarded"));
        await cluster.WaitForAppliedAsync([.. payloads, "forwarded"]);
        foreach (var m in cluster.Members.Values)
        {
            // Entries are applied only once durable; raft hears of the apply from the apply thread.
            Assert.True(m.Storage.HardState.Commit >= m.AppliedIndex);
            await Eventually(async () => (await m.Node.StatusAsync()).Applied == m.AppliedIndex, $"node {m.Id} hears of the apply");
        }
        Assert.Throws<InvalidOperationException>(() => leader.Node.Advance());
    }

    [Fact]
    public async Task A_cluster_on_its_tick_timers_elects_a_leader_and_commits()
    {
        await using var cluster = TestCluster.Start(3, o => o with { TickInterval = TimeSpan.FromMilliseconds(5) });
        TestMember? leader = null;
        await Eventually(async () => (leader = await cluster.LeaderAsync()) is not null, "a leader is elected");
        await Eventually(async () =>
        {
            try
            {
                await leader!.Node.ProposeAsync(Bytes("timed"));
                return true;
            }
            catch (ProposalDroppedException)
            {
                leader = await cluster.LeaderAsync() ?? leader;
                return false;
            }
        }, "a proposal is accepted");
        await cluster.WaitForAppliedAsync(["timed"]);
    }
}
