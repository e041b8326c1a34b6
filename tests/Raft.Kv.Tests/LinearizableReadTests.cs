using Raft.Kv.Server;
using Raft.Kv.State;

namespace Raft.Kv.Tests;

/// <summary>
/// Linearizable reads share ReadIndex requests (one leadership check for all reads that arrived
/// meanwhile), never answer with less than what was acknowledged before they began, and survive
/// the loss of the leader that their first request went to.
/// </summary>
public class LinearizableReadTests
{
    private static async Task<KvServerOptions> OptionsAsync(KvMember self, IReadOnlyList<KvMember> members) => new()
    {
        NodeId = self.Id,
        Members = members,
        ConnectionString = await ClusterKit.NewDatabaseAsync(),
        TickInterval = TimeSpan.FromMilliseconds(50),
        RequestTimeout = TimeSpan.FromSeconds(6),
        Compaction = new LogCompactionPolicy(SnapshotEvery: 1000, KeepEntries: 100),
    };

    [Fact]
    public async Task Concurrent_reads_share_read_index_requests_and_each_sees_every_write_acknowledged_before_it()
    {
        var members = Enumerable.Range(1, 3).Select(i => ClusterKit.NewMember((ulong)i)).ToList();
        var servers = new List<KvServer>();
        var clients = members.Select(m => new EtcdClient(m.ClientUrl)).ToList();
        try
        {
            foreach (var m in members) servers.Add(await KvServer.StartAsync(await OptionsAsync(m, members)));
            var leader = await PeerKit.LeaderAsync(3, i => clients[i].StatusAsync());
            var leaderClient = clients[members.FindIndex(m => m.Id == leader)];
            const int rounds = 5, readsPerRound = 60;
            var before = servers.Sum(s => s.ReadIndexRequests);
            for (var round = 0; round < rounds; round++)
            {
                await leaderClient.PutAsync("k", $"v{round}");
                var reads = Enumerable.Range(0, readsPerRound).Select(i => clients[i % 3].GetAsync("k")).ToList();
                var seen = await Task.WhenAll(reads);
                Assert.All(seen, v => Assert.Equal($"v{round}", v));
            }
            var requests = servers.Sum(s => s.ReadIndexRequests) - before;
            Assert.True(requests < rounds * readsPerRound / 2,
                $"{rounds * readsPerRound} concurrent reads sent {requests} ReadIndex requests: they should share them");
        }
        finally
        {
            foreach (var c in clients) c.Dispose();
            foreach (var s in servers) await s.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_read_whose_request_went_to_a_stopped_leader_is_asked_again_and_answered_by_the_next_one()
    {
        var members = Enumerable.Range(1, 3).Select(i => ClusterKit.NewMember((ulong)i)).ToList();
        var servers = new List<KvServer?>();
        var clients = members.Select(m => new EtcdClient(m.ClientUrl)).ToList();
        try
        {
            foreach (var m in members) servers.Add(await KvServer.StartAsync(await OptionsAsync(m, members)));
            var leader = await PeerKit.LeaderAsync(3, i => clients[i].StatusAsync());
            var down = members.FindIndex(m => m.Id == leader);
            await clients[down].PutAsync("k", "acknowledged");
            var follower = (down + 1) % 3;
            var requestsBefore = servers[follower]!.ReadIndexRequests;
            await servers[down]!.DisposeAsync();
            servers[down] = null;
            // The follower still takes the stopped member for its leader until an election timeout
            // passes: its first ReadIndex is lost, and only asking again gets an answer.
            Assert.Equal("acknowledged", await clients[follower].GetAsync("k"));
            Assert.True(servers[follower]!.ReadIndexRequests - requestsBefore >= 2,
                "the read was answered by its first ReadIndex request: the stopped leader cannot have answered it");
        }
        finally
        {
            foreach (var c in clients) c.Dispose();
            foreach (var s in servers) if (s is not null) await s.DisposeAsync();
        }
    }
}
