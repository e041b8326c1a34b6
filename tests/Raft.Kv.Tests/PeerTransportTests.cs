using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using Raft.Kv.Etcd.Serverpb;
using Raft.Kv.Server;
using Raft.Kv.State;
using Raft.Spec;
using Raft.Transport.Grpc.Peers;
using Raft.Transport.Grpc.Wire;
using Xunit.Abstractions;

namespace Raft.Kv.Tests;

/// <summary>Leader discovery and retried writes shared by the peer and TLS tests.</summary>
internal static class PeerKit
{
    /// <summary>The id of a member that reports itself leader, as seen through <paramref name="status"/> on each member.</summary>
    public static async Task<ulong> LeaderAsync(int members, Func<int, Task<StatusResponse>> status, Func<string>? details = null)
    {
        ulong leader = 0;
        await ClusterKit.EventuallyAsync(async () =>
        {
            for (var i = 0; i < members; i++)
            {
                try
                {
                    var s = await status(i);
                    if (s.Leader != 0 && s.Leader == s.Header.MemberId) { leader = s.Leader; return true; }
                }
                catch (GrpcCallException) { }
            }
            return false;
        }, "a leader", 60, details);
        return leader;
    }

    /// <summary>Puts on any of <paramref name="clients"/>, retrying until acknowledged; false when none acknowledged it in time.</summary>
    public static async Task<bool> PutAnywhereAsync(IReadOnlyList<EtcdClient> clients, string key, string value, int seconds = 30)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(seconds);
        for (var i = 0; DateTime.UtcNow < deadline; i++)
        {
            try
            {
                await clients[i % clients.Count].PutAsync(key, value);
                return true;
            }
            catch (GrpcCallException)
            {
                await Task.Delay(100);
            }
        }
        return false;
    }

    /// <summary>A raft message from <paramref name="from"/> to <paramref name="to"/> with no entries.</summary>
    public static Message Message(MessageType type, ulong from, ulong to, ulong term, Snapshot? snapshot = null) =>
        new(type, to, from, term, 0, 0, [], 0, 0, snapshot is null ? FSharpOption<Snapshot>.None : FSharpOption<Snapshot>.Some(snapshot),
            false, 0, [], []);

    public static Snapshot SnapshotOf(int bytes, ulong index, ulong term, params ulong[] voters) =>
        new(new byte[bytes], new SnapshotMetadata(
            new ConfState(ListModule.OfSeq(voters), FSharpList<ulong>.Empty, FSharpList<ulong>.Empty, FSharpList<ulong>.Empty, false), index, term));
}

/// <summary>
/// The key-value server's members talk over the library's Raft transport (RaftTransport and
/// RaftPeerService): elections, replication, restarts and snapshot catch-up in chunks, and
/// refusal of messages from another cluster or from a non-member.
/// </summary>
public class PeerTransportTests(ITestOutputHelper output)
{
    private static async Task<KvServerOptions> OptionsAsync(KvMember self, IReadOnlyList<KvMember> members) => new()
    {
        NodeId = self.Id,
        Members = members,
        ConnectionString = await ClusterKit.NewDatabaseAsync(),
        TickInterval = TimeSpan.FromMilliseconds(50),
        RequestTimeout = TimeSpan.FromSeconds(4),
        Compaction = new LogCompactionPolicy(SnapshotEvery: 20, KeepEntries: 5),
        // Small chunks: a snapshot of the test's data goes in dozens of them.
        PeerSnapshotChunkBytes = 4096,
    };

    [Fact]
    public async Task A_three_member_cluster_elects_replicates_and_loses_no_acknowledged_write_across_a_restart_of_its_leader()
    {
        var members = Enumerable.Range(1, 3).Select(i => ClusterKit.NewMember((ulong)i)).ToList();
        var options = new List<KvServerOptions>();
        foreach (var m in members) options.Add(await OptionsAsync(m, members));
        var servers = new List<KvServer?>();
        var clients = members.Select(m => new EtcdClient(m.ClientUrl)).ToList();
        var acknowledged = new Dictionary<string, string>();
        try
        {
            foreach (var o in options) servers.Add(await KvServer.StartAsync(o));
            var leader = await PeerKit.LeaderAsync(3, i => clients[i].StatusAsync());
            for (var i = 0; i < 20; i++)
            {
                Assert.True(await PeerKit.PutAnywhereAsync(clients, $"k/{i:D3}", $"first{i}"), $"write {i} was not acknowledged");
                acknowledged[$"k/{i:D3}"] = $"first{i}";
            }
            // Every member has them.
            foreach (var c in clients)
                await ClusterKit.EventuallyAsync(async () => (await c.GetPrefixAsync("k/", serializable: true)).Count == 20, $"20 keys at {c.Url}");

            // The leader goes down; the other two elect a new one and take writes, compacting their
            // logs past what the old leader has, so it can only catch up from a snapshot.
            var down = members.FindIndex(m => m.Id == leader);
            var lagging = servers[down]!.Applied;
            await servers[down]!.DisposeAsync();
            servers[down] = null;
            var up = clients.Where((_, i) => i != down).ToList();
            var value = new string('v', 1024);
            for (var i = 20; i < 80; i++)
            {
                Assert.True(await PeerKit.PutAnywhereAsync(up, $"k/{i:D3}", $"{value}{i}"), $"write {i} was not acknowledged");
                acknowledged[$"k/{i:D3}"] = $"{value}{i}";
            }
            var live = servers.Where(s => s is not null).Select(s => s!).ToList();
            await ClusterKit.EventuallyAsync(() => Task.FromResult(live.All(s => s.FirstLogIndex > lagging + 1)), "log compaction past the stopped member");

            servers[down] = await KvServer.StartAsync(options[down]);
            await ClusterKit.EventuallyAsync(async () => (await clients[down].GetAsync("k/079", serializable: true)) == $"{value}79",
                "the restarted member catching up");
            Assert.True(servers[down]!.SnapshotIndex > lagging, $"the restarted member has no snapshot past {lagging}");
            var sent = live.Sum(s => s.PeerTransport.SnapshotsSent);
            output.WriteLine($"leader {leader:x} restarted; snapshots sent {sent}, failed {live.Sum(s => s.PeerTransport.SnapshotsFailed)}");
            Assert.True(sent >= 1, "no snapshot was sent over the transport");

            // No acknowledged write is lost, on any member.
            foreach (var c in clients)
            {
                await ClusterKit.EventuallyAsync(async () => (await c.GetPrefixAsync("k/", serializable: true)).Count == acknowledged.Count, $"every key at {c.Url}");
                Assert.Equal(acknowledged, await c.GetPrefixAsync("k/"));
            }
            // The restarted member takes part again.
            await clients[down].PutAsync("after", "restart");
            Assert.Equal("restart", await clients[(down + 1) % 3].GetAsync("after"));
            Assert.All(servers, s => Assert.Equal((0L, 0L), (s!.PeerService.RefusedForeignCluster, s.PeerService.RefusedNonMember)));
            Assert.All(servers, s => Assert.True(s!.PeerService.AcceptedMessages > 0));
        }
        finally
        {
            foreach (var c in clients) c.Dispose();
            foreach (var s in servers) if (s is not null) await s.DisposeAsync();
        }
    }

    [Fact]
    public async Task Messages_from_another_cluster_or_a_non_member_are_refused_counted_and_change_nothing()
    {
        var self = ClusterKit.NewMember(1);
        await using var server = await KvServer.StartAsync(await OptionsAsync(self, [self]));
        using var client = new EtcdClient(self.ClientUrl);
        await PeerKit.LeaderAsync(1, _ => client.StatusAsync());
        await client.PutAsync("before", "1");
        var term = (await client.StatusAsync()).RaftTerm;

        var unreachable = 0;
        var snapshots = new List<bool>();
        RaftTransport Sender(ulong cluster, ulong node) =>
            new(new RaftTransportOptions { ClusterId = cluster, NodeId = node, ReconnectDelayMin = TimeSpan.FromMilliseconds(20) },
                _ => Interlocked.Increment(ref unreachable), (_, ok) => { lock (snapshots) snapshots.Add(ok); });
        var peerUrl = new GrpcClientOptions { Address = new Uri(self.PeerUrl) };

        // Another cluster's member 2, and a stranger in ours: each asks for votes at a far higher
        // term, which would depose the leader if it got through.
        await using (var foreign = Sender(0xBAD, 2))
        {
            foreign.AddPeer(1, peerUrl);
            foreign.Send(PeerKit.Message(MessageType.MsgVote, 2, 1, term + 100));
            await ClusterKit.EventuallyAsync(() => Task.FromResult(server.PeerService.RefusedForeignCluster >= 1), "the foreign cluster's message refused");
        }
        await using (var stranger = Sender(0x7261667476, 99))
        {
            stranger.AddPeer(1, peerUrl);
            stranger.Send(PeerKit.Message(MessageType.MsgVote, 99, 1, term + 100));
            await ClusterKit.EventuallyAsync(() => Task.FromResult(server.PeerService.RefusedNonMember >= 1), "the non-member's message refused");
            stranger.Send(PeerKit.Message(MessageType.MsgSnap, 99, 1, term + 100, PeerKit.SnapshotOf(10_000, 1000, term + 100, 99)));
            await ClusterKit.EventuallyAsync(() => { lock (snapshots) return Task.FromResult(snapshots.Count == 1); }, "the non-member's snapshot reported");
            Assert.Equal((0L, 1L), (stranger.SnapshotsSent, stranger.SnapshotsFailed));
        }
        lock (snapshots) Assert.Equal([false], snapshots);
        Assert.True(server.PeerService.RefusedNonMember >= 2, "the snapshot was not counted as refused");

        // A peer URL this cluster cannot dial (https:// without peer TLS) is refused before it reaches raft.
        var https = await Assert.ThrowsAsync<GrpcCallException>(() => client.MemberAddAsync($"https://127.0.0.1:{ClusterKit.FreePort()}", learner: true));
        Assert.Equal((StatusCode.InvalidArgument, "etcdserver: given member URLs are invalid"), (https.StatusCode, https.StatusMessage));

        var status = await client.StatusAsync();
        Assert.Equal((term, 1UL), (status.RaftTerm, status.Leader));
        Assert.True(server.SnapshotIndex < 1000);
        await client.PutAsync("after", "2");
        Assert.Equal("2", await client.GetAsync("after"));
    }
}
