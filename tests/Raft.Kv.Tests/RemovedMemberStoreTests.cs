using Google.Protobuf;
using Raft.Kv.Etcd.Serverpb;
using Raft.Kv.Storage;
using Raft.Spec;
using static Raft.Kv.Tests.Kv;

namespace Raft.Kv.Tests;

/// <summary>
/// The member table remembers removed members for good (etcd's membership store keeps removed ids):
/// a removal applied, or received in a snapshot, is never forgotten, so every member can refuse a
/// removed member's messages and tell it to stop.
/// </summary>
public class RemovedMemberStoreTests
{
    private static Entry PutEntry(ulong index, string key) => new(1, index, EntryType.EntryNormal, Command(Kv.Put(key, "v")).ToByteArray());

    private static Entry Remove(ulong index, ulong id) =>
        new(1, index, EntryType.EntryConfChange, Codec.encodeConfChange(new ConfChange(ConfChangeType.ConfChangeRemoveNode, id, [], 0UL)));

    private static Member Seed(ulong id) => new() { ID = id, Name = $"n{id}", PeerURLs = { $"http://127.0.0.1:{2380 + id}" } };

    [Fact]
    public async Task A_removal_is_remembered_durably_and_travels_in_snapshots_which_never_make_a_store_forget_one()
    {
        var cs = await TestDatabase.ConnectionStringAsync();
        var options = new PostgresKvStoreOptions { Schema = TestDatabase.NewSchema() };
        var snapshot = new MemoryStream();
        await using (var source = await PostgresKvStore.OpenAsync(cs, 1, options))
        {
            await source.SeedMembersAsync([Seed(1), Seed(2), Seed(3)]);
            Assert.Empty(await source.ReadRemovedMemberIdsAsync());
            await source.ApplyAsync([PutEntry(1, "a"), Remove(2, 3), PutEntry(3, "b")]);
            Assert.Equal([1UL, 2UL], (await source.ReadMembersAsync()).Select(m => m.ID));
            Assert.Equal([3UL], await source.ReadRemovedMemberIdsAsync());
            // What the server reloads after a membership change: both, from one read.
            var (members, removed) = await source.ReadMembershipAsync();
            Assert.Equal([1UL, 2UL], members.Select(m => m.ID));
            Assert.Equal([3UL], removed);
            // Applying the removal again (a replay after a restart) changes nothing.
            await source.ApplyAsync([Remove(2, 3)]);
            Assert.Equal([3UL], await source.ReadRemovedMemberIdsAsync());
            var header = await source.ExportSnapshotAsync(snapshot);
            Assert.Equal([3UL], header.RemovedMemberIds);
        }
        await using (var reopened = await PostgresKvStore.OpenAsync(cs, 1, options))
            Assert.Equal([3UL], await reopened.ReadRemovedMemberIdsAsync());

        // A store that removed member 9 itself, then installs the snapshot (which does not name 9): it knows both.
        await using var target = await PostgresKvStore.OpenAsync(cs, 2, options);
        await target.SeedMembersAsync([Seed(1), Seed(2), Seed(3), Seed(9)]);
        await target.ApplyAsync([Remove(1, 9)]);
        snapshot.Position = 0;
        await target.ImportSnapshotAsync(snapshot);
        Assert.Equal([3UL, 9UL], (await target.ReadRemovedMemberIdsAsync()).Order());
        Assert.Equal([1UL, 2UL], (await target.ReadMembersAsync()).Select(m => m.ID));
        // Group 1's removals stay group 1's.
        await using var other = await PostgresKvStore.OpenAsync(cs, 3, options);
        Assert.Empty(await other.ReadRemovedMemberIdsAsync());
    }
}
