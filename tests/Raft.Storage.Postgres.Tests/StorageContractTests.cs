using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using Raft.Spec;
using SpecSnapshot = Raft.Spec.Snapshot;

namespace Raft.Storage.Postgres.Tests;

/// <summary>A storage under test: the reads Raft makes and the writes a host makes.</summary>
public interface IStorageUnderTest : IAsyncDisposable
{
    IStorage Reads { get; }
    Task SaveAsync(HardState? hs, Entry[] entries, SpecSnapshot? snapshot = null);
    Task ApplySnapshotAsync(SpecSnapshot snapshot);
    Task CompactAsync(ulong index);
    Task<SpecSnapshot> CreateSnapshotAsync(ulong index, ConfState? cs, byte[] data);
    /// <summary>Closes and opens again (a no-op in memory); the state must be the same.</summary>
    Task ReopenAsync();
    MemoryStorage State { get; }
}

/// <summary>
/// The storage contract (etcd's storage_test.go cases and more), run against the F# MemoryStorage
/// and against PostgreSQL. Every case ends by reopening and checking nothing changed.
/// </summary>
public abstract class StorageContractTests
{
    protected abstract Task<IStorageUnderTest> CreateAsync();

    internal static Entry E(ulong index, ulong term, byte[]? data = null) => new(term, index, EntryType.EntryNormal, data ?? []);

    internal static ConfState Cs(params ulong[] voters) =>
        new(ListModule.OfSeq(voters), FSharpList<ulong>.Empty, FSharpList<ulong>.Empty, FSharpList<ulong>.Empty, false);

    internal static SpecSnapshot Snap(ulong index, ulong term, ConfState? cs = null, byte[]? data = null) =>
        new(data ?? [], new SnapshotMetadata(cs ?? Cs(1, 2, 3), index, term));

    /// <summary>A storage holding entries 3/3 (the dummy), 4/4, 5/5 …, like etcd's tests.</summary>
    private async Task<IStorageUnderTest> WithEntriesAsync(params ulong[] indexes)
    {
        var s = await CreateAsync();
        await s.ApplySnapshotAsync(Snap(indexes[0], indexes[0]));
        await s.SaveAsync(null, indexes[1..].Select(i => E(i, i)).ToArray());
        return s;
    }

    private static async Task EndAsync(IStorageUnderTest s)
    {
        var before = s.State;
        await s.ReopenAsync();
        Assert.Equal(before, s.State);
        Assert.Equal(before.StoredEntries, s.State.StoredEntries);
        Assert.Equal(MemoryStorageModule.snapshot(before), MemoryStorageModule.snapshot(s.State));
        await s.DisposeAsync();
    }

    private static T Ok<T>(FSharpResult<T, StorageError> r) => r.IsOk ? r.ResultValue : throw new Xunit.Sdk.XunitException($"expected Ok, got {r.ErrorValue}");

    private static void IsError<T>(StorageError expected, FSharpResult<T, StorageError> r)
    {
        Assert.True(r.IsError, $"expected {expected}, got {(r.IsOk ? r.ResultValue : default)}");
        Assert.Equal(expected, r.ErrorValue);
    }

    [Fact]
    public async Task Term_lookups()
    {
        var s = await WithEntriesAsync(3, 4, 5);
        IsError(StorageError.Compacted, s.Reads.Term(2));
        Assert.Equal(3UL, Ok(s.Reads.Term(3)));
        Assert.Equal(4UL, Ok(s.Reads.Term(4)));
        Assert.Equal(5UL, Ok(s.Reads.Term(5)));
        IsError(StorageError.Unavailable, s.Reads.Term(6));
        await EndAsync(s);
    }

    [Theory]
    // Limits are given in half entries (entries 4..6 have the same encoded size) minus some bytes; -1 = no limit.
    [InlineData(2, 6, -1, 0, -1)]
    [InlineData(3, 4, -1, 0, -1)]
    [InlineData(4, 5, -1, 0, 1)]
    [InlineData(4, 6, -1, 0, 2)]
    [InlineData(4, 7, -1, 0, 3)]
    [InlineData(4, 7, 0, 0, 1)] // at least one entry, whatever the limit
    [InlineData(4, 7, 4, 0, 2)] // size(4)+size(5)
    [InlineData(4, 7, 5, 0, 2)] // size(4)+size(5)+size(6)/2
    [InlineData(4, 7, 6, 1, 2)] // size(4)+size(5)+size(6)-1
    [InlineData(4, 7, 6, 0, 3)] // size(4)+size(5)+size(6)
    public async Task Entries_with_size_limits(ulong lo, ulong hi, int halfEntries, int minusBytes, int expected)
    {
        var s = await WithEntriesAsync(3, 4, 5, 6);
        var size = Codec.entrySize(E(4, 4));
        var limit = halfEntries < 0 ? ulong.MaxValue : (ulong)halfEntries * size / 2 - (ulong)minusBytes;
        var r = s.Reads.Entries(lo, hi, limit);
        if (expected < 0) IsError(StorageError.Compacted, r);
        else Assert.Equal(Enumerable.Range((int)lo, expected).Select(i => E((ulong)i, (ulong)i)), Ok(r));
        await EndAsync(s);
    }

    [Fact]
    public async Task Empty_storage_reports_unavailable()
    {
        var s = await CreateAsync();
        Assert.Equal(1UL, Ok(s.Reads.FirstIndex()));
        Assert.Equal(0UL, Ok(s.Reads.LastIndex()));
        Assert.Equal(0UL, Ok(s.Reads.Term(0)));
        IsError(StorageError.Unavailable, s.Reads.Term(1));
        IsError(StorageError.Unavailable, s.Reads.Entries(1, 1, ulong.MaxValue));
        Assert.Throws<InvalidOperationException>(() => s.Reads.Entries(1, 2, ulong.MaxValue));
        var (hs, cs) = Ok2(s.Reads.InitialState());
        Assert.Equal(HardStateModule.empty, hs);
        Assert.Equal(ConfStateModule.empty, cs);
        await EndAsync(s);
    }

    private static (HardState, ConfState) Ok2(FSharpResult<Tuple<HardState, ConfState>, string> r) =>
        r.IsOk ? r.ResultValue.ToValueTuple() : throw new Xunit.Sdk.XunitException(r.ErrorValue);

    [Fact]
    public async Task First_and_last_index_follow_appends_and_compaction()
    {
        var s = await WithEntriesAsync(3, 4, 5);
        Assert.Equal(5UL, Ok(s.Reads.LastIndex()));
        Assert.Equal(4UL, Ok(s.Reads.FirstIndex()));
        await s.SaveAsync(null, [E(6, 5)]);
        Assert.Equal(6UL, Ok(s.Reads.LastIndex()));
        await s.CompactAsync(4);
        Assert.Equal(5UL, Ok(s.Reads.FirstIndex()));
        Assert.Equal(4UL, Ok(s.Reads.Term(4)));
        IsError(StorageError.Compacted, s.Reads.Entries(4, 5, ulong.MaxValue));
        await EndAsync(s);
    }

    [Theory]
    [InlineData(2, false, 0, 0)]
    [InlineData(3, false, 0, 0)]
    [InlineData(4, true, 4, 2)]
    [InlineData(5, true, 5, 1)]
    public async Task Compaction(ulong index, bool ok, ulong firstKeptIndex, int kept)
    {
        var s = await WithEntriesAsync(3, 4, 5);
        if (!ok)
        {
            var e = await Assert.ThrowsAsync<RaftStorageErrorException>(() => s.CompactAsync(index));
            Assert.Equal(StorageError.Compacted, e.Error);
            Assert.Equal(4UL, Ok(s.Reads.FirstIndex()));
        }
        else
        {
            await s.CompactAsync(index);
            Assert.Equal(firstKeptIndex, Ok(s.Reads.FirstIndex()) - 1);
            Assert.Equal(firstKeptIndex, Ok(s.Reads.Term(firstKeptIndex)));
            Assert.Equal(kept, s.State.StoredEntries.Length + 1);
        }
        await EndAsync(s);
    }

    [Fact]
    public async Task Compacting_beyond_the_last_index_is_a_programming_error_and_writes_nothing()
    {
        var s = await WithEntriesAsync(3, 4, 5);
        await Assert.ThrowsAsync<InvalidOperationException>(() => s.CompactAsync(6));
        Assert.Equal(5UL, Ok(s.Reads.LastIndex()));
        await EndAsync(s);
    }

    [Fact]
    public async Task Create_snapshot()
    {
        var s = await WithEntriesAsync(3, 4, 5);
        var cs = Cs(1, 2, 3);
        var snap = await s.CreateSnapshotAsync(4, cs, [1, 2, 3]);
        Assert.Equal(Snap(4, 4, cs, [1, 2, 3]), snap);
        Assert.Equal(snap, Ok(s.Reads.Snapshot()));
        // The log is not compacted by a snapshot.
        Assert.Equal(4UL, Ok(s.Reads.FirstIndex()));
        var e = await Assert.ThrowsAsync<RaftStorageErrorException>(() => s.CreateSnapshotAsync(4, cs, []));
        Assert.Equal(StorageError.SnapOutOfDate, e.Error);
        var later = await s.CreateSnapshotAsync(5, null, [9]);
        Assert.Equal(Snap(5, 5, cs, [9]), later);
        await EndAsync(s);
    }

    [Fact]
    public async Task Snapshot_install()
    {
        var s = await CreateAsync();
        await s.SaveAsync(new HardState(1, 1, 2), [E(1, 1), E(2, 1), E(3, 1)]);
        var snap = Snap(4, 4, Cs(1, 2), [7, 7]);
        await s.ApplySnapshotAsync(snap);
        Assert.Equal(snap, Ok(s.Reads.Snapshot()));
        Assert.Equal(5UL, Ok(s.Reads.FirstIndex()));
        Assert.Equal(4UL, Ok(s.Reads.LastIndex()));
        Assert.Equal(4UL, Ok(s.Reads.Term(4)));
        Assert.Equal(Cs(1, 2), Ok2(s.Reads.InitialState()).Item2);
        var e = await Assert.ThrowsAsync<RaftStorageErrorException>(() => s.ApplySnapshotAsync(Snap(3, 3)));
        Assert.Equal(StorageError.SnapOutOfDate, e.Error);
        Assert.Equal(snap, Ok(s.Reads.Snapshot()));
        await EndAsync(s);
    }

    public static TheoryData<ulong[][], ulong[][]> AppendCases => new()
    {
        // (index, term) appended to 3/3 (dummy), 4/4, 5/5 -> the stored entries after it.
        { [[1, 1], [2, 2]], [[4, 4], [5, 5]] },
        { [[3, 3], [4, 4], [5, 5]], [[4, 4], [5, 5]] },
        { [[3, 3], [4, 6], [5, 6]], [[4, 6], [5, 6]] },
        { [[3, 3], [4, 4], [5, 5], [6, 5]], [[4, 4], [5, 5], [6, 5]] },
        { [[2, 3], [3, 3], [4, 5]], [[4, 5]] },
        { [[4, 5]], [[4, 5]] },
        { [[5, 6], [6, 6]], [[4, 4], [5, 6], [6, 6]] },
        { [[6, 5]], [[4, 4], [5, 5], [6, 5]] },
    };

    [Theory]
    [MemberData(nameof(AppendCases))]
    public async Task Append_truncates_a_conflicting_suffix(ulong[][] appended, ulong[][] stored)
    {
        var s = await WithEntriesAsync(3, 4, 5);
        await s.SaveAsync(null, appended.Select(p => E(p[0], p[1])).ToArray());
        Assert.Equal(stored.Select(p => E(p[0], p[1])), s.State.StoredEntries);
        await EndAsync(s);
    }

    [Fact]
    public async Task Append_after_a_gap_is_a_programming_error_and_writes_nothing()
    {
        var s = await WithEntriesAsync(3, 4, 5);
        await Assert.ThrowsAsync<InvalidOperationException>(() => s.SaveAsync(new HardState(9, 9, 9), [E(7, 5)]));
        Assert.Equal(HardStateModule.empty, s.State.HardState);
        Assert.Equal(5UL, Ok(s.Reads.LastIndex()));
        await EndAsync(s);
    }

    [Fact]
    public async Task Save_stores_hard_state_entries_and_snapshot_together()
    {
        var s = await CreateAsync();
        await s.SaveAsync(new HardState(2, 3, 1), [E(1, 1, [1]), E(2, 2, [2, 2])]);
        Assert.Equal(new HardState(2, 3, 1), s.State.HardState);
        await s.SaveAsync(new HardState(3, ulong.MaxValue, 12), [E(11, 3, [11]), E(12, 3, new byte[3000])], Snap(10, 3, Cs(1, ulong.MaxValue)));
        Assert.Equal(11UL, Ok(s.Reads.FirstIndex()));
        Assert.Equal(12UL, Ok(s.Reads.LastIndex()));
        Assert.Equal(new HardState(3, ulong.MaxValue, 12), Ok2(s.Reads.InitialState()).Item1);
        Assert.Equal(Cs(1, ulong.MaxValue), Ok2(s.Reads.InitialState()).Item2);
        await EndAsync(s);
    }

    [Fact]
    public async Task Conf_change_entries_keep_their_type()
    {
        var s = await CreateAsync();
        Entry[] ents = [new(1, 1, EntryType.EntryConfChange, [8]), new(1, 2, EntryType.EntryConfChangeV2, []), E(3, 1)];
        await s.SaveAsync(null, ents);
        Assert.Equal(ents, Ok(s.Reads.Entries(1, 4, ulong.MaxValue)));
        await EndAsync(s);
    }
}

/// <summary>The reference: the F# core's MemoryStorage, behind the same write calls.</summary>
public sealed class MemoryStorageContractTests : StorageContractTests
{
    protected override Task<IStorageUnderTest> CreateAsync() => Task.FromResult<IStorageUnderTest>(new InMemory());

    private sealed class InMemory : IStorageUnderTest
    {
        public MemoryStorage State { get; private set; } = MemoryStorageModule.empty;
        public IStorage Reads => State;

        private static T Ok<T>(FSharpResult<T, StorageError> r) => r.IsOk ? r.ResultValue : throw new RaftStorageErrorException(r.ErrorValue);

        public Task SaveAsync(HardState? hs, Entry[] entries, SpecSnapshot? snapshot = null)
        {
            var s = State;
            if (snapshot is not null) s = Ok(MemoryStorageModule.applySnapshot(snapshot, s));
            s = MemoryStorageModule.append(entries, s);
            if (hs is not null) s = MemoryStorageModule.setHardState(hs, s);
            State = s;
            return Task.CompletedTask;
        }

        public Task ApplySnapshotAsync(SpecSnapshot snapshot)
        {
            State = Ok(MemoryStorageModule.applySnapshot(snapshot, State));
            return Task.CompletedTask;
        }

        public Task CompactAsync(ulong index)
        {
            State = Ok(MemoryStorageModule.compact(index, State));
            return Task.CompletedTask;
        }

        public Task<SpecSnapshot> CreateSnapshotAsync(ulong index, ConfState? cs, byte[] data)
        {
            var (s, snap) = Ok(MemoryStorageModule.createSnapshot(index, cs is null ? FSharpOption<ConfState>.None : cs, data, State)).ToValueTuple();
            State = s;
            return Task.FromResult(snap);
        }

        public Task ReopenAsync() => Task.CompletedTask;
        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}

/// <summary>The same contract against PostgreSQL, each test in a schema of its own.</summary>
public sealed class PostgresStorageContractTests : StorageContractTests
{
    protected override async Task<IStorageUnderTest> CreateAsync()
    {
        var cs = await TestDatabase.ConnectionStringAsync();
        var options = new PostgresRaftStorageOptions { Schema = TestDatabase.NewSchema() };
        return new InPostgres(cs, options, await PostgresRaftStorage.OpenAsync(cs, 7, options));
    }

    private sealed class InPostgres(string cs, PostgresRaftStorageOptions options, PostgresRaftStorage storage) : IStorageUnderTest
    {
        private PostgresRaftStorage _storage = storage;
        public IStorage Reads => _storage;
        public MemoryStorage State => _storage.State;
        public Task SaveAsync(HardState? hs, Entry[] entries, SpecSnapshot? snapshot = null) => _storage.SaveAsync(hs, entries, snapshot);
        public Task ApplySnapshotAsync(SpecSnapshot snapshot) => _storage.ApplySnapshotAsync(snapshot);
        public Task CompactAsync(ulong index) => _storage.CompactAsync(index);
        public Task<SpecSnapshot> CreateSnapshotAsync(ulong index, ConfState? confState, byte[] data) => _storage.CreateSnapshotAsync(index, confState, data);

        public async Task ReopenAsync()
        {
            await _storage.DisposeAsync();
            _storage = await PostgresRaftStorage.OpenAsync(cs, 7, options);
        }

        public ValueTask DisposeAsync() => _storage.DisposeAsync();
    }
}
