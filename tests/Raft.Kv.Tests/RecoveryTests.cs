using Raft.Kv.Server;
using Raft.Kv.State;
using Raft.Transport.Grpc.Wire;
using Xunit.Abstractions;

namespace Raft.Kv.Tests;

/// <summary>
/// Durability and recovery of a 3-member cluster: members killed with SIGKILL and restarted,
/// a follower behind log compaction caught up by a snapshot, the leader killed under writes,
/// a learner added, caught up and promoted, and removed members that stop, also when they
/// missed the entry that removed them.
/// </summary>
public class RecoveryTests(ITestOutputHelper output)
{
    private static async Task<(List<MemberProcess> Members, List<EtcdClient> Clients)> StartProcessClusterAsync()
    {
        var members = Enumerable.Range(1, 3).Select(i => ClusterKit.NewMember((ulong)i)).ToList();
        var processes = new List<MemberProcess>();
        foreach (var m in members)
        {
            var p = new MemberProcess(m, members, await ClusterKit.NewDatabaseAsync());
            p.Start();
            processes.Add(p);
        }
        return (processes, members.Select(m => new EtcdClient(m.ClientUrl)).ToList());
    }

    private static async Task<ulong> LeaderAsync(IEnumerable<EtcdClient> clients, Func<string> logs)
    {
        ulong leader = 0;
        await ClusterKit.EventuallyAsync(async () =>
        {
            foreach (var c in clients)
            {
                try
                {
                    var s = await c.StatusAsync();
                    if (s.Leader != 0 && s.Leader == s.Header.MemberId) { leader = s.Leader; return true; }
                }
                catch (GrpcCallException) { }
            }
            return false;
        }, "a leader", 60, logs);
        return leader;
    }

    /// <summary>Puts with retries on any member; true once acknowledged.</summary>
    private static async Task<bool> PutAnywhereAsync(IReadOnlyList<EtcdClient> clients, string key, string value, int seconds = 30)
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

    private const string ChangeInProgress = "raftv: another membership change is in progress; retry once it has been applied";

    /// <summary>
    /// A membership change, tried again while the member answers that another is in progress. That
    /// refusal is transient by design: the member has not yet applied the previous change (one made
    /// through another member answers once applied there, not everywhere). Any other answer,
    /// refusals included, is returned or thrown as it came.
    /// </summary>
    private static async Task<T> ChangeMembershipAsync<T>(Func<Task<T>> change, int seconds = 30)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(seconds);
        while (true)
        {
            try
            {
                return await change();
            }
            catch (GrpcCallException e) when (e.StatusMessage == ChangeInProgress && DateTime.UtcNow < deadline)
            {
                await Task.Delay(100);
            }
        }
    }

    private static string Logs(IEnumerable<MemberProcess> members) =>
        string.Join("\n", members.Select(m => $"== member {m.Self.Id}\n{Tail(m.Log)}"));

    private static string Tail(string text) => text.Length <= 4000 ? text : text[^4000..];

    [Fact]
    public async Task A_member_killed_with_sigkill_catches_up_and_serves_the_writes_acknowledged_while_it_was_down()
    {
        var (members, clients) = await StartProcessClusterAsync();
        try
        {
            await LeaderAsync(clients, () => Logs(members));
            for (var i = 0; i < 10; i++) Assert.True(await PutAnywhereAsync(clients, $"before/{i:D3}", $"v{i}"), Logs(members));

            await members[2].KillAsync();
            var up = clients.Take(2).ToList();
            for (var i = 0; i < 50; i++) Assert.True(await PutAnywhereAsync(up, $"during/{i:D3}", $"w{i}"), Logs(members));

            members[2].Start();
            await ClusterKit.EventuallyAsync(async () => (await clients[2].GetPrefixAsync("during/", serializable: true)).Count == 50,
                "the restarted member applying the writes made while it was down", 60, () => Logs(members));
            var during = await clients[2].GetPrefixAsync("during/", serializable: true);
            var before = await clients[2].GetPrefixAsync("before/", serializable: true);
            Assert.Equal(10, before.Count);
            for (var i = 0; i < 50; i++) Assert.Equal($"w{i}", during[$"during/{i:D3}"]);
            // And it takes part again: a write through it is read back linearizably from it.
            await clients[2].PutAsync("after", "restart");
            Assert.Equal("restart", await clients[2].GetAsync("after"));
        }
        finally
        {
            foreach (var c in clients) c.Dispose();
            foreach (var m in members) await m.DisposeAsync();
        }
    }

    [Fact]
    public async Task The_leader_killed_under_a_stream_of_writes_loses_no_acknowledged_write()
    {
        var (members, clients) = await StartProcessClusterAsync();
        try
        {
            var leader = await LeaderAsync(clients, () => Logs(members));
            var acknowledged = new List<int>();
            var failed = 0;
            using var stopWriting = new CancellationTokenSource();
            var writer = Task.Run(async () =>
            {
                var target = 0;
                for (var i = 0; i < 2000 && !stopWriting.IsCancellationRequested; i++)
                {
                    try
                    {
                        await clients[target % clients.Count].PutAsync($"stream/{i:D5}", $"value{i}");
                        lock (acknowledged) acknowledged.Add(i);
                    }
                    catch (GrpcCallException)
                    {
                        // Unknown outcome (the member died or lost its leader): try the next member.
                        failed++;
                        target++;
                    }
                }
            });
            await ClusterKit.EventuallyAsync(() => { lock (acknowledged) return Task.FromResult(acknowledged.Count >= 30); }, "30 writes before the kill", 30);
            var leaderIndex = members.FindIndex(m => m.Self.Id == leader);
            await members[leaderIndex].KillAsync();
            int ackedAtKill;
            lock (acknowledged) ackedAtKill = acknowledged.Count;
            var survivors = clients.Where((_, i) => i != leaderIndex).ToList();
            await ClusterKit.EventuallyAsync(() => { lock (acknowledged) return Task.FromResult(acknowledged.Count >= ackedAtKill + 30); },
                "30 more writes after the leader was killed", 60, () => Logs(members));
            await stopWriting.CancelAsync();
            await writer;
            output.WriteLine($"acknowledged {acknowledged.Count} writes, {failed} failed or unknown; leader {leader:x} killed after {ackedAtKill}");

            foreach (var c in survivors)
            {
                var stored = await c.GetPrefixAsync("stream/");
                foreach (var i in acknowledged)
                    Assert.True(stored.TryGetValue($"stream/{i:D5}", out var v) && v == $"value{i}", $"acknowledged write {i} missing at {c.Url}");
            }
            // The old leader comes back and has them too.
            members[leaderIndex].Start();
            await ClusterKit.EventuallyAsync(async () =>
            {
                var stored = await clients[leaderIndex].GetPrefixAsync("stream/", serializable: true);
                return acknowledged.All(i => stored.ContainsKey($"stream/{i:D5}"));
            }, "the restarted old leader holding every acknowledged write", 60, () => Logs(members));
        }
        finally
        {
            foreach (var c in clients) c.Dispose();
            foreach (var m in members) await m.DisposeAsync();
        }
    }

    private static async Task<KvServerOptions> OptionsAsync(KvMember self, IReadOnlyList<KvMember> members, bool join = false) => new()
    {
        NodeId = self.Id,
        Members = members,
        ConnectionString = await ClusterKit.NewDatabaseAsync(),
        TickInterval = TimeSpan.FromMilliseconds(50),
        RequestTimeout = TimeSpan.FromSeconds(4),
        Compaction = new LogCompactionPolicy(SnapshotEvery: 20, KeepEntries: 5),
        JoinExisting = join,
    };

    [Fact]
    public async Task A_follower_behind_log_compaction_receives_a_snapshot_and_serves_the_same_data()
    {
        var members = Enumerable.Range(1, 3).Select(i => ClusterKit.NewMember((ulong)i)).ToList();
        var options = new List<KvServerOptions>();
        foreach (var m in members) options.Add(await OptionsAsync(m, members));
        var servers = new List<KvServer?>();
        var clients = members.Select(m => new EtcdClient(m.ClientUrl)).ToList();
        try
        {
            foreach (var o in options) servers.Add(await KvServer.StartAsync(o));
            await LeaderAsync(clients, () => "");
            for (var i = 0; i < 5; i++) Assert.True(await PutAnywhereAsync(clients, $"k/{i:D3}", $"a{i}"));
            await ClusterKit.EventuallyAsync(() => Task.FromResult(servers[2]!.Applied >= servers[0]!.Applied), "member 3 applying the first writes");
            var lagging = servers[2]!.Applied;
            await servers[2]!.DisposeAsync();
            servers[2] = null;

            var up = clients.Take(2).ToList();
            for (var i = 0; i < 100; i++) Assert.True(await PutAnywhereAsync(up, $"k/{i:D3}", $"b{i}"));
            // The entries member 3 needs are gone from the live members' logs: only a snapshot can bring it up to date.
            await ClusterKit.EventuallyAsync(() => Task.FromResult(servers[0]!.FirstLogIndex > lagging + 1 && servers[1]!.FirstLogIndex > lagging + 1),
                "log compaction past the lagging member");

            servers[2] = await KvServer.StartAsync(options[2]);
            await ClusterKit.EventuallyAsync(async () => (await clients[2].GetAsync("k/099", serializable: true)) == "b99",
                "the lagging member catching up");
            Assert.True(servers[2]!.SnapshotIndex > lagging, $"member 3 has no snapshot past {lagging} (it has {servers[2]!.SnapshotIndex})");
            var expected = await clients[0].GetPrefixAsync("k/");
            await ClusterKit.EventuallyAsync(async () => (await clients[2].GetPrefixAsync("k/", serializable: true)).Count == expected.Count, "same data");
            Assert.Equal(expected, await clients[2].GetPrefixAsync("k/", serializable: true));
            // Its member table came with the snapshot: it lists everyone with their URLs.
            var list = await clients[2].MemberListAsync();
            Assert.Equal(members.Select(m => (m.Id, m.PeerUrl, m.ClientUrl)),
                list.Members.Select(m => (m.ID, m.PeerURLs.Single(), m.ClientURLs.Single())));
        }
        finally
        {
            foreach (var c in clients) c.Dispose();
            foreach (var s in servers) if (s is not null) await s.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_learner_added_catches_up_is_promoted_and_then_counts_in_the_quorum()
    {
        var members = Enumerable.Range(1, 3).Select(i => ClusterKit.NewMember((ulong)i)).ToList();
        var servers = new List<KvServer?>();
        var clients = members.Select(m => new EtcdClient(m.ClientUrl)).ToList();
        try
        {
            foreach (var m in members) servers.Add(await KvServer.StartAsync(await OptionsAsync(m, members)));
            await LeaderAsync(clients, () => "");
            for (var i = 0; i < 30; i++) Assert.True(await PutAnywhereAsync(clients, $"k/{i:D3}", $"v{i}"));

            // etcd's refusals.
            var dup = await Assert.ThrowsAsync<GrpcCallException>(() => ChangeMembershipAsync(() => clients[0].MemberAddAsync(members[1].PeerUrl, learner: true)));
            Assert.Equal("etcdserver: Peer URLs already exists", dup.StatusMessage);
            var notFound = await Assert.ThrowsAsync<GrpcCallException>(() => ChangeMembershipAsync(() => clients[0].MemberRemoveAsync(999)));
            Assert.Equal((StatusCode.NotFound, "etcdserver: member not found"), (notFound.StatusCode, notFound.StatusMessage));
            var voter = await Assert.ThrowsAsync<GrpcCallException>(() => ChangeMembershipAsync(() => clients[1].MemberPromoteAsync(members[0].Id)));
            Assert.Equal("etcdserver: can only promote a learner member", voter.StatusMessage);

            var fourthPeer = $"http://127.0.0.1:{ClusterKit.FreePort()}";
            var added = await ChangeMembershipAsync(() => clients[1].MemberAddAsync(fourthPeer, learner: true));
            Assert.True(added.Member.IsLearner);
            var id = added.Member.ID;
            Assert.Contains(added.Members, m => m.ID == id && m.IsLearner && m.Name == "");
            // Member 1 may not have applied the addition yet: it says so until it has, then refuses a second learner.
            var second = await Assert.ThrowsAsync<GrpcCallException>(() =>
                ChangeMembershipAsync(() => clients[0].MemberAddAsync($"http://127.0.0.1:{ClusterKit.FreePort()}", learner: true)));
            Assert.Equal("etcdserver: too many learner members in cluster", second.StatusMessage);

            var fourth = new KvMember(id, "learner4", fourthPeer, $"http://127.0.0.1:{ClusterKit.FreePort()}");
            var all = members.Append(fourth).ToList();
            servers.Add(await KvServer.StartAsync((await OptionsAsync(fourth, all, join: true)) with { Name = "learner4" }));
            clients.Add(new EtcdClient(fourth.ClientUrl));
            await ClusterKit.EventuallyAsync(async () => (await clients[3].GetAsync("k/029", serializable: true)) == "v29", "the learner catching up");
            // It published its name and client URL through raft: every member lists it as started.
            await ClusterKit.EventuallyAsync(async () => (await clients[0].MemberListAsync()).Members
                .Any(m => m.ID == id && m.Name == "learner4" && m.ClientURLs.SequenceEqual([fourth.ClientUrl])), "the learner's attributes");
            // A learner does not vote: a write needs 2 of the 3 voters still.
            var status = await clients[3].StatusAsync();
            Assert.True(status.IsLearner);

            await ClusterKit.EventuallyAsync(async () =>
            {
                try
                {
                    await clients[2].MemberPromoteAsync(id);
                    return true;
                }
                catch (GrpcCallException e) when (e.StatusMessage is "etcdserver: can only promote a learner member which is in sync with leader" or ChangeInProgress)
                {
                    return false;
                }
            }, "promotion");
            var list = await clients[0].MemberListAsync();
            Assert.Equal(4, list.Members.Count);
            Assert.All(list.Members, m => Assert.False(m.IsLearner));

            // Four voters need three. Stop one of the first three: the write must be acknowledged by the promoted member.
            var leader = await LeaderAsync(clients, () => "");
            var stop = members.FindIndex(m => m.Id != leader);
            await servers[stop]!.DisposeAsync();
            servers[stop] = null;
            var live = clients.Where((_, i) => i != stop).ToList();
            Assert.True(await PutAnywhereAsync(live, "with-three-of-four", "yes"));
            // Two of four is no quorum: with a second original member stopped, writes cannot commit.
            var stop2 = members.FindIndex(m => m.Id != leader && servers[members.IndexOf(m)] is not null);
            await servers[stop2]!.DisposeAsync();
            servers[stop2] = null;
            var noQuorum = await Assert.ThrowsAsync<GrpcCallException>(() => clients[members.FindIndex(m => m.Id == leader)].PutAsync("with-two-of-four", "no"));
            Assert.Equal(StatusCode.Unavailable, noQuorum.StatusCode);
        }
        finally
        {
            foreach (var c in clients) c.Dispose();
            foreach (var s in servers) if (s is not null) await s.DisposeAsync();
        }
    }

    [Fact]
    public async Task Member_update_changes_peer_urls_everywhere_and_a_removed_member_stops_serving()
    {
        var members = Enumerable.Range(1, 3).Select(i => ClusterKit.NewMember((ulong)i)).ToList();
        var servers = new List<KvServer>();
        var clients = members.Select(m => new EtcdClient(m.ClientUrl)).ToList();
        try
        {
            foreach (var m in members) servers.Add(await KvServer.StartAsync(await OptionsAsync(m, members)));
            var leader = await LeaderAsync(clients, () => "");
            var victim = members.First(m => m.Id != leader);
            var victimIndex = members.IndexOf(victim);
            var other = clients[members.FindIndex(m => m.Id != leader && m.Id != victim.Id)];

            var taken = await Assert.ThrowsAsync<GrpcCallException>(() =>
                ChangeMembershipAsync(() => other.MemberUpdateAsync(victim.Id, members.First(m => m.Id == leader).PeerUrl)));
            Assert.Equal("etcdserver: Peer URLs already exists", taken.StatusMessage);
            var moved = $"http://127.0.0.1:{ClusterKit.FreePort()}";
            await ChangeMembershipAsync(() => other.MemberUpdateAsync(victim.Id, moved));
            // (The member itself is cut off now: peers dial the new address, where nothing listens.)
            foreach (var c in clients.Where((_, i) => i != victimIndex))
                await ClusterKit.EventuallyAsync(async () => (await c.MemberListAsync()).Members.Single(m => m.ID == victim.Id).PeerURLs.SequenceEqual([moved]),
                    $"the new peer URL at {c.Url}");

            // Back to the address it listens on. Whether or not it receives the entry that removes it
            // (the leader stops sending to it once it applies it), it learns of its removal: from the
            // entry, or from the others refusing its messages as a removed member's.
            await ChangeMembershipAsync(() => other.MemberUpdateAsync(victim.Id, victim.PeerUrl));
            await ClusterKit.EventuallyAsync(async () => (await clients[0].MemberListAsync()).Members.Single(m => m.ID == victim.Id).PeerURLs.SequenceEqual([victim.PeerUrl]),
                "the original peer URL");
            var removed = await ChangeMembershipAsync(() => other.MemberRemoveAsync(victim.Id));
            Assert.DoesNotContain(removed.Members, m => m.ID == victim.Id);
            await servers[victimIndex].Removed.WaitAsync(TimeSpan.FromSeconds(20));
            var refused = await Assert.ThrowsAsync<GrpcCallException>(() => clients[victimIndex].PutAsync("k", "v"));
            Assert.Equal((StatusCode.Unavailable, "etcdserver: server stopped"), (refused.StatusCode, refused.StatusMessage));
            // Two voters remain and both are needed; they still take writes.
            Assert.True(await PutAnywhereAsync(clients.Where((_, i) => i != victimIndex).ToList(), "after-remove", "ok"));
            var notFound = await Assert.ThrowsAsync<GrpcCallException>(() => ChangeMembershipAsync(() => other.MemberRemoveAsync(victim.Id)));
            Assert.Equal("etcdserver: member not found", notFound.StatusMessage);
        }
        finally
        {
            foreach (var c in clients) c.Dispose();
            foreach (var s in servers) await s.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_member_removed_while_it_was_down_learns_it_from_the_others_refusal_when_it_comes_back_and_stops()
    {
        var members = Enumerable.Range(1, 3).Select(i => ClusterKit.NewMember((ulong)i)).ToList();
        var options = new List<KvServerOptions>();
        foreach (var m in members) options.Add(await OptionsAsync(m, members));
        var servers = new List<KvServer?>();
        var clients = members.Select(m => new EtcdClient(m.ClientUrl)).ToList();
        try
        {
            foreach (var o in options) servers.Add(await KvServer.StartAsync(o));
            var leader = await LeaderAsync(clients, () => "");
            for (var i = 0; i < 5; i++) Assert.True(await PutAnywhereAsync(clients, $"k/{i}", $"v{i}"));
            var victimIndex = members.FindIndex(m => m.Id != leader);
            var victim = members[victimIndex];
            var live = Enumerable.Range(0, 3).Where(i => i != victimIndex).ToList();

            // Down while it is removed: the entry that removes it never reaches it.
            await servers[victimIndex]!.DisposeAsync();
            servers[victimIndex] = null;
            var left = await ChangeMembershipAsync(() => clients[live.First(i => members[i].Id != leader)].MemberRemoveAsync(victim.Id));
            Assert.DoesNotContain(left.Members, m => m.ID == victim.Id);
            await ClusterKit.EventuallyAsync(() => Task.FromResult(live.All(i => servers[i]!.RemovedMembers.Contains(victim.Id))),
                "both remaining members remembering the removal");

            // Back on its own data, it still counts itself a member; the leader no longer sends to it, so
            // its log never gets further. Its first messages (a pre-vote once it hears no leader) are
            // refused as a removed member's, and it stops as if it had applied its removal.
            servers[victimIndex] = await KvServer.StartAsync(options[victimIndex]);
            var back = servers[victimIndex]!;
            Assert.Contains(back.Members(), m => m.ID == victim.Id);
            await back.Removed.WaitAsync(TimeSpan.FromSeconds(30));
            Assert.Contains(back.Members(), m => m.ID == victim.Id);
            Assert.DoesNotContain(victim.Id, back.RemovedMembers);
            Assert.True(back.PeerTransport.RemovedRefusals > 0, "the member was told by no peer that it was removed");
            Assert.True(live.Sum(i => servers[i]!.PeerService.RefusedRemovedMember) > 0, "no remaining member refused the removed member");
            Assert.Equal(0, live.Sum(i => servers[i]!.PeerService.RefusedNonMember));
            var refused = await Assert.ThrowsAsync<GrpcCallException>(() => clients[victimIndex].PutAsync("k", "v"));
            Assert.Equal((StatusCode.Unavailable, "etcdserver: server stopped"), (refused.StatusCode, refused.StatusMessage));
            Assert.True(await PutAnywhereAsync(live.Select(i => clients[i]).ToList(), "after-remove", "ok"));
        }
        finally
        {
            foreach (var c in clients) c.Dispose();
            foreach (var s in servers) if (s is not null) await s.DisposeAsync();
        }
    }
}
