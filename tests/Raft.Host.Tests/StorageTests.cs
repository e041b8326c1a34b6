using Raft.Spec;

namespace Raft.Host.Tests;

public class StorageTests
{
    private static Entry E(ulong term, ulong index) => new(term, index, EntryType.EntryNormal, [(byte)index]);

    [Fact]
    public void MemoryStorage_appends_snapshots_and_compacts_like_etcd()
    {
        var s = new MemoryStorage();
        s.Append([E(1, 1), E(1, 2), E(2, 3), E(2, 4)]);
        s.SetHardState(new HardState(2, 1, 3));
        Assert.Equal((1UL, 4UL), (s.FirstIndex, s.LastIndex));
        Assert.Equal(2UL, s.Term(3));
        // Appending over existing entries replaces the tail.
        s.Append([E(3, 3)]);
        Assert.Equal(3UL, s.LastIndex);
        Assert.Equal(3UL, s.Term(3));

        var cs = new ConfState(Microsoft.FSharp.Collections.ListModule.OfArray(new[] { 1UL, 2UL }), [], [], [], false);
        var snap = s.CreateSnapshot(2, cs, [9]);
        Assert.Equal((2UL, 1UL), (snap.Metadata.Index, snap.Metadata.Term));
        s.Compact(2);
        Assert.Equal(3UL, s.FirstIndex);
        var ex = Assert.Throws<RaftStorageException>(() => s.Entries(2, 3));
        Assert.True(ex.Error.IsCompacted);
        Assert.Equal("requested index is unavailable due to compaction", ex.Message);
        Assert.Throws<RaftStorageException>(() => s.Compact(2));
        Assert.Throws<RaftStorageException>(() => s.CreateSnapshot(2, null, []));
        Assert.Equal(new HardState(2, 1, 3), s.HardState);
        Assert.Equal(cs, s.GetInitialState().ConfState);

        s.ApplySnapshot(new Snapshot([], new SnapshotMetadata(cs, 10, 4)));
        Assert.Equal((11UL, 10UL), (s.FirstIndex, s.LastIndex));
        Assert.True(Assert.Throws<RaftStorageException>(() => s.ApplySnapshot(snap)).Error.IsSnapOutOfDate);
    }

    [Fact]
    public async Task Concurrent_writers_and_readers_always_see_a_consistent_log()
    {
        var s = new MemoryStorage();
        const int writes = 2000;
        var writer = Task.Run(() =>
        {
            for (ulong i = 1; i <= writes; i++) s.Append([E(i, i)]);
        });
        var reader = Task.Run(() =>
        {
            while (!writer.IsCompleted)
            {
                // One value at a time: first and last index always belong to the same log.
                var current = s.Current;
                var last = current.LastIndex;
                if (last >= 1) Assert.Equal(last, ((IStorage)current).Term(last).ResultValue);
                Assert.Equal(1UL, current.FirstIndex);
            }
        });
        await Task.WhenAll(writer, reader);
        Assert.Equal((ulong)writes, s.LastIndex);
        Assert.Equal(writes, s.Entries(1, writes + 1).Length);
    }

    /// <summary>A storage written the C# way: exceptions for the errors raft understands.</summary>
    private sealed class ListStorage(List<Entry> entries) : RaftStorage
    {
        public override (HardState HardState, ConfState ConfState) InitialState() => (HardStateModule.empty, ConfStateModule.empty);

        public override IReadOnlyList<Entry> Entries(ulong lo, ulong hi, ulong maxSize)
        {
            if (lo < FirstIndex()) throw new RaftStorageException(StorageError.Compacted);
            if (hi > LastIndex() + 1) throw new RaftStorageException(StorageError.Unavailable);
            return entries.Where(e => e.Index >= lo && e.Index < hi).ToList();
        }

        public override ulong Term(ulong index) =>
            index == 0 ? 0 : entries.FirstOrDefault(e => e.Index == index)?.Term ?? throw new RaftStorageException(StorageError.Unavailable);

        public override ulong FirstIndex() => 1;
        public override ulong LastIndex() => (ulong)entries.Count;
        public override Snapshot Snapshot() => throw new RaftStorageException(StorageError.SnapshotTemporarilyUnavailable);
    }

    [Fact]
    public void A_CSharp_storage_is_adapted_to_the_core_interface()
    {
        IStorage storage = new ListStorage([E(1, 1), E(1, 2)]);
        Assert.Equal(2, storage.Entries(1, 3, ulong.MaxValue).ResultValue.Length);
        Assert.True(storage.Entries(0, 1, ulong.MaxValue).ErrorValue.IsCompacted);
        Assert.True(storage.Term(5).ErrorValue.IsUnavailable);
        Assert.True(storage.Snapshot().ErrorValue.IsSnapshotTemporarilyUnavailable);
        Assert.Equal(2UL, storage.LastIndex().ResultValue);
        // And a node runs on it.
        var rn = RawNode.Create(new RaftNodeOptions { Id = 1 }, storage);
        Assert.Equal(0UL, rn.Status().Commit);
    }
}
