/// Stable storage as Raft sees it (etcd's storage.go): the read interface the log uses,
/// its errors, and MemoryStorage, an in-memory storage kept as an immutable value.
namespace Raft.Spec

open System.Collections.Immutable

/// The errors a storage reports that Raft knows how to handle (etcd's ErrCompacted,
/// ErrUnavailable, ErrSnapOutOfDate, ErrSnapshotTemporarilyUnavailable). Any other
/// storage failure is not recoverable by Raft and is raised as an exception.
[<RequireQualifiedAccess>]
type StorageError =
    /// The requested index predates the last snapshot.
    | Compacted
    /// The requested entry is not (yet) in the storage.
    | Unavailable
    /// A snapshot at or before the existing one was offered.
    | SnapOutOfDate
    /// The snapshot is being prepared; ask again later.
    | SnapshotTemporarilyUnavailable

module StorageError =
    /// etcd's error strings; they show up in etcd's log lines and panics.
    let message (e: StorageError) : string =
        match e with
        | StorageError.Compacted -> "requested index is unavailable due to compaction"
        | StorageError.Unavailable -> "requested entry at index is unavailable"
        | StorageError.SnapOutOfDate -> "requested index is older than the existing snapshot"
        | StorageError.SnapshotTemporarilyUnavailable -> "snapshot is temporarily unavailable"

/// What Raft reads from the application's stable storage (etcd's Storage interface).
/// The log treats it as a snapshot of the stable state; the host hands the log a new
/// storage value (or a wrapper that sees the latest one) after each write.
type IStorage =
    /// The persisted HardState (empty if none) and the ConfState of the latest snapshot.
    abstract InitialState: unit -> Result<HardState * ConfState, string>
    /// Entries [lo, hi), at most maxSize bytes (protobuf size) but at least one entry.
    /// Compacted if lo predates the first index; Unavailable if the range is not stored.
    abstract Entries: lo: uint64 * hi: uint64 * maxSize: uint64 -> Result<Entry[], StorageError>
    /// The term of entry i, for i in [FirstIndex-1, LastIndex]: the entry just before
    /// the first one keeps its term for matching appends.
    abstract Term: index: uint64 -> Result<uint64, StorageError>
    abstract LastIndex: unit -> Result<uint64, StorageError>
    /// The first index possibly available through Entries (the one after the snapshot).
    abstract FirstIndex: unit -> Result<uint64, StorageError>
    /// The most recent snapshot.
    abstract Snapshot: unit -> Result<Snapshot, StorageError>

/// etcd's MemoryStorage as an immutable value: every write returns a new storage and
/// leaves the old one intact, so a reader holding the old value is never disturbed.
/// Entries live in a persistent list (O(log n) append, truncate, compact and lookup).
[<NoComparison; CustomEquality>]
type MemoryStorage =
    private
        { HardStateValue: HardState
          SnapshotValue: Snapshot
          /// Element 0 is a dummy entry carrying the index and term of the snapshot (or
          /// 0/0 when starting from scratch); element i has index Ents[0].Index + i.
          Ents: ImmutableList<Entry> }

    member s.HardState = s.HardStateValue

    member private s.Offset = s.Ents[0].Index

    member s.FirstIndex = s.Offset + 1UL

    member s.LastIndex = s.Offset + uint64 s.Ents.Count - 1UL

    /// The stored entries after the dummy one, in order (for inspection and tests).
    member s.StoredEntries: Entry[] = s.Ents |> Seq.skip 1 |> Seq.toArray

    // Two storages are equal when they hold the same state.
    override s.Equals(o: obj) =
        match o with
        | :? MemoryStorage as t ->
            s.HardStateValue = t.HardStateValue
            && s.SnapshotValue = t.SnapshotValue
            && Seq.forall2 (=) s.Ents t.Ents
            && s.Ents.Count = t.Ents.Count
        | _ -> false

    override s.GetHashCode() = hash (s.HardStateValue, s.SnapshotValue.Metadata, s.Ents.Count)

    interface IStorage with
        member s.InitialState() = Ok(s.HardStateValue, s.SnapshotValue.Metadata.ConfState)

        member s.Entries(lo, hi, maxSize) =
            let offset = s.Offset
            if lo <= offset then Error StorageError.Compacted
            elif hi > s.LastIndex + 1UL then
                invalidOp (sprintf "entries' hi(%d) is out of bound lastindex(%d)" hi s.LastIndex)
            elif s.Ents.Count = 1 then Error StorageError.Unavailable
            else
                // etcd's limitSize, walking only as far as the limit allows: a lagging
                // follower's request may span a long log but is answered with a small prefix.
                let taken = ResizeArray<Entry>()
                let mutable size = 0UL
                let mutable i = int (lo - offset)
                let stop = int (hi - offset)
                while i < stop do
                    let e = s.Ents[i]
                    size <- size + Codec.entrySize e
                    if taken.Count > 0 && size > maxSize then i <- stop
                    else
                        taken.Add e
                        i <- i + 1
                Ok(taken.ToArray())

        member s.Term(i) =
            let offset = s.Offset
            if i < offset then Error StorageError.Compacted
            elif i - offset >= uint64 s.Ents.Count then Error StorageError.Unavailable
            else Ok s.Ents[int (i - offset)].Term

        member s.LastIndex() = Ok s.LastIndex
        member s.FirstIndex() = Ok s.FirstIndex
        member s.Snapshot() = Ok s.SnapshotValue

module MemoryStorage =
    let private dummy (term: uint64) (index: uint64) : Entry =
        { Term = term; Index = index; Type = EntryNormal; Data = [||] }

    /// A storage with nothing in it: a dummy entry at index 0, term 0 (NewMemoryStorage).
    let empty: MemoryStorage =
        { HardStateValue = HardState.empty
          SnapshotValue = Snapshot.empty
          Ents = ImmutableList.Create(dummy 0UL 0UL) }

    let asStorage (s: MemoryStorage) : IStorage = s :> IStorage

    /// Rebuilds a storage from its persisted parts (for storages that keep a MemoryStorage
    /// as their in-memory image): the hard state, the latest snapshot, the entry just before
    /// the first stored one (its index and term: the snapshot's, or a later one when the log
    /// was compacted past the snapshot, or an earlier one when the snapshot was taken without
    /// compacting), and the stored entries after it, in order. Every state the operations
    /// above can reach is accepted; anything else is an error saying what does not fit.
    let restore
        (hardState: HardState)
        (snapshot: Snapshot)
        (offsetIndex: uint64)
        (offsetTerm: uint64)
        (entries: Entry seq)
        : Result<MemoryStorage, string> =
        let ents = ImmutableList.CreateBuilder<Entry>()
        ents.Add(dummy offsetTerm offsetIndex)
        let mutable problem: string option = None
        use e = entries.GetEnumerator()
        while problem.IsNone && e.MoveNext() do
            let expected = offsetIndex + uint64 ents.Count
            if e.Current.Index <> expected then
                problem <-
                    Some(
                        sprintf "entries are not contiguous: expected index %d, found %d (first index %d)"
                            expected e.Current.Index (offsetIndex + 1UL)
                    )
            else ents.Add e.Current
        let last = offsetIndex + uint64 ents.Count - 1UL
        let snapIndex, snapTerm = snapshot.Metadata.Index, snapshot.Metadata.Term
        match problem with
        | Some p -> Error p
        | None when snapIndex > last ->
            Error(sprintf "snapshot at index %d is beyond the last index %d" snapIndex last)
        | None when snapIndex >= offsetIndex && ents[int (snapIndex - offsetIndex)].Term <> snapTerm ->
            Error(
                sprintf "snapshot at index %d has term %d but the log has term %d there"
                    snapIndex snapTerm ents[int (snapIndex - offsetIndex)].Term
            )
        | None -> Ok { HardStateValue = hardState; SnapshotValue = snapshot; Ents = ents.ToImmutable() }

    let hardState (s: MemoryStorage) = s.HardState
    let firstIndex (s: MemoryStorage) = s.FirstIndex
    let lastIndex (s: MemoryStorage) = s.LastIndex
    let snapshot (s: MemoryStorage) = s.SnapshotValue

    let setHardState (hs: HardState) (s: MemoryStorage) : MemoryStorage = { s with HardStateValue = hs }

    /// Replaces the whole content with the snapshot's (ApplySnapshot). A snapshot not
    /// newer than the existing one is refused, except over the empty initial snapshot
    /// (bootstrapping may install a snapshot of index 0 carrying only a ConfState).
    let applySnapshot (snap: Snapshot) (s: MemoryStorage) : Result<MemoryStorage, StorageError> =
        let current = s.SnapshotValue.Metadata.Index
        if current <> 0UL && current >= snap.Metadata.Index then Error StorageError.SnapOutOfDate
        else
            Ok
                { s with
                    SnapshotValue = snap
                    Ents = ImmutableList.Create(dummy snap.Metadata.Term snap.Metadata.Index) }

    /// Makes the snapshot at index i (CreateSnapshot): its term is that of entry i, its
    /// ConfState the given one or else the previous snapshot's. The log is not compacted.
    let createSnapshot
        (i: uint64)
        (cs: ConfState option)
        (data: byte[])
        (s: MemoryStorage)
        : Result<MemoryStorage * Snapshot, StorageError> =
        if i <= s.SnapshotValue.Metadata.Index then Error StorageError.SnapOutOfDate
        elif i > s.LastIndex then
            invalidOp (sprintf "snapshot %d is out of bound lastindex(%d)" i s.LastIndex)
        else
            let term = s.Ents[int (i - s.Ents[0].Index)].Term
            let meta = s.SnapshotValue.Metadata
            let snap =
                { Data = data
                  Metadata =
                    { meta with
                        Index = i
                        Term = term
                        ConfState = defaultArg cs meta.ConfState } }
            Ok({ s with SnapshotValue = snap }, snap)

    /// Discards the entries before compactIndex (Compact); entry compactIndex becomes the
    /// dummy entry, keeping only its index and term. Compacting what is already compacted
    /// is refused; compacting beyond the last index is a programming error.
    let compact (compactIndex: uint64) (s: MemoryStorage) : Result<MemoryStorage, StorageError> =
        let offset = s.Ents[0].Index
        if compactIndex <= offset then Error StorageError.Compacted
        elif compactIndex > s.LastIndex then
            invalidOp (sprintf "compact %d is out of bound lastindex(%d)" compactIndex s.LastIndex)
        else
            let i = int (compactIndex - offset)
            let kept = s.Ents.RemoveRange(0, i)
            let first = kept[0]
            Ok { s with Ents = kept.SetItem(0, dummy first.Term first.Index) }

    /// Appends entries (Append), replacing any stored entries from the first new index on.
    /// Entries already compacted are skipped. A gap after the last index is a programming
    /// error. The entries must be contiguous.
    let append (entries: Entry[]) (s: MemoryStorage) : MemoryStorage =
        if entries.Length = 0 then s
        else
            let first = s.FirstIndex
            let last = entries[0].Index + uint64 entries.Length - 1UL
            if last < first then s // everything is compacted already
            else
                let entries =
                    if first > entries[0].Index then entries[int (first - entries[0].Index) ..]
                    else entries
                let offset = entries[0].Index - s.Ents[0].Index
                let count = uint64 s.Ents.Count
                if count > offset then
                    let kept = s.Ents.RemoveRange(int offset, int (count - offset))
                    { s with Ents = kept.AddRange entries }
                elif count = offset then { s with Ents = s.Ents.AddRange entries }
                else
                    invalidOp (
                        sprintf "missing log entry [last: %d, append at: %d]" s.LastIndex entries[0].Index
                    )
