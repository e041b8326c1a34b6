using System.Collections.Immutable;
using System.Reflection;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using Microsoft.FSharp.Reflection;
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

    private static readonly FSharpOption<BindingFlags> AnyVisibility = FSharpOption<BindingFlags>.Some(BindingFlags.Public | BindingFlags.NonPublic);

    /// <summary>
    /// A MemoryStorage holding exactly this state. The F# module only builds storages through its
    /// operations, and some stored states (a log compacted past the snapshot, as etcd's own
    /// tests do) are not reachable that way from empty; so the record is made directly and then
    /// checked through the public API. Asking Raft.Spec for a MemoryStorage.restore would remove this.
    /// </summary>
    public static MemoryStorage Restore(HardState hs, Spec.Snapshot snapshot, ulong offset, ulong offsetTerm, IReadOnlyList<Entry> entries)
    {
        var ents = ImmutableList.CreateBuilder<Entry>();
        ents.Add(new Entry(offsetTerm, offset, EntryType.EntryNormal, []));
        ents.AddRange(entries);
        var fields = FSharpType.GetRecordFields(typeof(MemoryStorage), AnyVisibility);
        if (fields.Length != 3 || fields[0].PropertyType != typeof(HardState) || fields[1].PropertyType != typeof(Spec.Snapshot)
            || fields[2].PropertyType != typeof(ImmutableList<Entry>))
            throw new InvalidOperationException(
                "Raft.Spec's MemoryStorage changed its representation; update RaftValues.Restore to build it.");
        var restored = (MemoryStorage)FSharpValue.MakeRecord(typeof(MemoryStorage), [hs, snapshot, ents.ToImmutable()], AnyVisibility);
        if (restored.FirstIndex != offset + 1 || restored.LastIndex != offset + (ulong)entries.Count
            || !restored.HardState.Equals(hs) || !MemoryStorageModule.snapshot(restored).Equals(snapshot))
            throw new InvalidOperationException("the restored MemoryStorage does not hold the loaded state");
        return restored;
    }
}
