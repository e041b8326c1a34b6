using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using Raft.Spec;

namespace Raft.Storage.Postgres;

/// <summary>Conversions between the F# core's values and PostgreSQL columns.</summary>
internal static class RaftValues
{
    /// <summary>Indexes and terms are stored as bigint; they must keep their order, so they must fit.</summary>
    public static long Ordered(ulong v, string what) => v <= long.MaxValue
        ? (long)v
        : throw new ArgumentOutOfRangeException(what, v, $"{what} {v} does not fit PostgreSQL's bigint (at most {long.MaxValue}).");

    /// <summary>Node ids are only compared for equality: stored bit for bit, any uint64 fits.</summary>
    public static long Bits(ulong v) => unchecked((long)v);
    public static ulong Unbits(long v) => unchecked((ulong)v);

    public static long[] Ids(FSharpList<ulong> ids) => ids.Select(Bits).ToArray();
    public static FSharpList<ulong> Ids(long[] ids) => ListModule.OfSeq(ids.Select(Unbits));

    public static EntryType EntryTypeOf(short wire, long index)
    {
        var r = EntryTypeModule.ofWire(wire);
        return r.IsOk ? r.ResultValue
            : throw new PostgresStorageException(PostgresStorageErrorKind.Corrupt, $"entry {index} has unknown type {wire}");
    }

    public static short Wire(EntryType t) => (short)EntryTypeModule.toWire(t);

    public static T Ok<T>(FSharpResult<T, StorageError> r) =>
        r.IsOk ? r.ResultValue : throw new RaftStorageErrorException(r.ErrorValue);

    /// <summary>
    /// A MemoryStorage holding exactly the loaded state: the log starts after (offset, offsetTerm),
    /// which may lie past the snapshot when the log was compacted beyond it. A state no
    /// MemoryStorage can hold (a gap, a snapshot the log contradicts) is corrupt.
    /// </summary>
    public static MemoryStorage Restore(long groupId, HardState hs, Spec.Snapshot snapshot, ulong offset, ulong offsetTerm, IReadOnlyList<Entry> entries)
    {
        var restored = MemoryStorageModule.restore(hs, snapshot, offset, offsetTerm, entries);
        return restored.IsOk ? restored.ResultValue
            : throw new PostgresStorageException(PostgresStorageErrorKind.Corrupt, $"Raft group {groupId}: {restored.ErrorValue}");
    }
}
