using Microsoft.FSharp.Core;
using Raft.Spec;

namespace Raft.Host;

/// <summary>
/// A base for storages written in C# (etcd's Storage interface). Implement the read methods
/// the ordinary way, throwing <see cref="RaftStorageException"/> for the errors Raft handles
/// (compacted, unavailable, snapshot temporarily unavailable); the class adapts them to the
/// core's <see cref="IStorage"/>. Any other exception is a storage failure Raft cannot recover
/// from and propagates to the caller of the node.
/// </summary>
public abstract class RaftStorage : IStorage
{
    /// <summary>The persisted hard state (empty if none) and the ConfState of the latest snapshot.</summary>
    public abstract (HardState HardState, ConfState ConfState) InitialState();

    /// <summary>
    /// Entries [lo, hi), at most <paramref name="maxSize"/> bytes but at least one entry.
    /// Throws Compacted if lo predates <see cref="FirstIndex"/>, Unavailable if the range is not stored.
    /// </summary>
    public abstract IReadOnlyList<Entry> Entries(ulong lo, ulong hi, ulong maxSize);

    /// <summary>The term of entry <paramref name="index"/>, for FirstIndex-1 ≤ index ≤ LastIndex.</summary>
    public abstract ulong Term(ulong index);

    public abstract ulong FirstIndex();

    public abstract ulong LastIndex();

    /// <summary>The most recent snapshot; may throw SnapshotTemporarilyUnavailable.</summary>
    public abstract Snapshot Snapshot();

    FSharpResult<Tuple<HardState, ConfState>, string> IStorage.InitialState()
    {
        try
        {
            var (hs, cs) = InitialState();
            return FSharpResult<Tuple<HardState, ConfState>, string>.NewOk(Tuple.Create(hs, cs));
        }
        catch (RaftStorageException e)
        {
            return FSharpResult<Tuple<HardState, ConfState>, string>.NewError(e.Message);
        }
    }

    FSharpResult<Entry[], StorageError> IStorage.Entries(ulong lo, ulong hi, ulong maxSize) =>
        Try(() => Entries(lo, hi, maxSize) as Entry[] ?? [.. Entries(lo, hi, maxSize)]);

    FSharpResult<ulong, StorageError> IStorage.Term(ulong index) => Try(() => Term(index));
    FSharpResult<ulong, StorageError> IStorage.LastIndex() => Try(LastIndex);
    FSharpResult<ulong, StorageError> IStorage.FirstIndex() => Try(FirstIndex);
    FSharpResult<Snapshot, StorageError> IStorage.Snapshot() => Try(Snapshot);

    private static FSharpResult<T, StorageError> Try<T>(Func<T> read)
    {
        try
        {
            return FSharpResult<T, StorageError>.NewOk(read());
        }
        catch (RaftStorageException e)
        {
            return FSharpResult<T, StorageError>.NewError(e.Error);
        }
    }
}

/// <summary>Reading any <see cref="IStorage"/> from C#: errors become <see cref="RaftStorageException"/>.</summary>
public static class StorageExtensions
{
    public static (HardState HardState, ConfState ConfState) GetInitialState(this IStorage storage)
    {
        var r = storage.InitialState();
        return r.IsOk ? (r.ResultValue.Item1, r.ResultValue.Item2) : throw new InvalidOperationException(r.ErrorValue);
    }

    public static Entry[] GetEntries(this IStorage storage, ulong lo, ulong hi, ulong maxSize = ulong.MaxValue) =>
        Unwrap(storage.Entries(lo, hi, maxSize));

    public static ulong GetTerm(this IStorage storage, ulong index) => Unwrap(storage.Term(index));
    public static ulong GetFirstIndex(this IStorage storage) => Unwrap(storage.FirstIndex());
    public static ulong GetLastIndex(this IStorage storage) => Unwrap(storage.LastIndex());
    public static Snapshot GetSnapshot(this IStorage storage) => Unwrap(storage.Snapshot());

    private static T Unwrap<T>(FSharpResult<T, StorageError> r) =>
        r.IsOk ? r.ResultValue : throw new RaftStorageException(r.ErrorValue);
}
