/// Stable storage as Raft sees it (etcd's storage.go): the read interface the log uses,
/// its errors, and MemoryStorage, an in-memory storage kept as an immutable value.
namespace Raft.Spec


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

/// The backing array of stored entries, shared by storages derived from one another by
/// appends, like the array under Go slices. Used is the high-water mark: slots at and
/// after it are seen by no storage value, so an append that starts exactly there may
/// claim them and write in place; any other append copies. This is MemoryStorage's only
/// mutation and no storage value can observe it: appends at the end (the common case)
/// cost O(1) amortized and lookups O(1), where the persistent tree used before cost
/// O(log n) allocations per append and O(log n) pointer chasing per lookup
/// (bench/Raft.Spec.Benchmarks: 'core' and 'allocs').
[<Sealed; AllowNullLiteral>]
type internal EntryBuffer(items: Entry[], initiallyUsed: int) =
    let mutable used = initiallyUsed

    member _.Items = items

    /// Claims the n slots from `from` on for the caller to fill, if they are free and fit.
    member _.TryClaim(from: int, n: int) : bool =
        from + n <= items.Length
        && System.Threading.Interlocked.CompareExchange(&used, from + n, from) = from

    /// A new buffer holding `kept` (a copy of part of another) then `added`, with room to grow.
    static member Create(source: Entry[], start: int, kept: int, added: Entry[]) : EntryBuffer =
        let count = kept + added.Length
        let items = Array.zeroCreate (max 16 (2 * count))
        Array.blit source start items 0 kept
        Array.blit added 0 items kept added.Length
        EntryBuffer(items, count)

/// etcd's MemoryStorage as an immutable value: every write returns a new storage and
/// leaves the old one intact, so a reader holding the old value is never disturbed.
[<NoComparison; CustomEquality>]
type MemoryStorage =
    private
        { HardStateValue: HardState
          SnapshotValue: Snapshot
          /// The dummy entry before the first stored one (etcd's ents[0]): the index and term
          /// of the snapshot, or of the last compacted entry (0/0 when starting from scratch).
          DummyIndex: uint64
          DummyTerm: uint64
          /// Stored entry i (1 <= i <= Count) has index DummyIndex + i, at Buffer.Items[Start + i - 1].
          Buffer: EntryBuffer
          Start: int
          Count: int }

    member s.HardState = s.HardStateValue

    member s.FirstIndex = s.DummyIndex + 1UL

    member s.LastIndex = s.DummyIndex + uint64 s.Count

    /// The term of the entry `rel` places after the dummy one (0: the dummy's).
    member internal s.TermAt(rel: int) = if rel = 0 then s.DummyTerm else s.Buffer.Items[s.Start + rel - 1].Term

    /// The stored entries after the dummy one, in order (for inspection and tests).
    member s.StoredEntries: Entry[] = Array.sub s.Buffer.Items s.Start s.Count

    // Two storages are equal when they hold the same state.
    override s.Equals(o: obj) =
        match o with
        | :? MemoryStorage as t ->
            s.HardStateValue = t.HardStateValue
            && s.SnapshotValue = t.SnapshotValue
            && s.DummyIndex = t.DummyIndex
            && s.DummyTerm = t.DummyTerm
            && s.Count = t.Count
            && Seq.forall2 (=) s.StoredEntries t.StoredEntries
        | _ -> false

    override s.GetHashCode() = hash (s.HardStateValue, s.SnapshotValue.Metadata, s.Count)

    interface IStorage with
        member s.InitialState() = Ok(s.HardStateValue, s.SnapshotValue.Metadata.ConfState)

        member s.Entries(lo, hi, maxSize) =
            let offset = s.DummyIndex
            if lo <= offset then Error StorageError.Compacted
            elif hi > s.LastIndex + 1UL then
                invalidOp (sprintf "entries' hi(%d) is out of bound lastindex(%d)" hi s.LastIndex)
            elif s.Count = 0 then Error StorageError.Unavailable
            else
                // etcd's limitSize, walking only as far as the limit allows: a lagging
                // follower's request may span a long log but is answered with a small prefix.
                let first = s.Start + int (lo - offset) - 1
                let stop = s.Start + int (hi - offset) - 1
                let items = s.Buffer.Items
                if first >= stop then Ok [||]
                else
                    let mutable size = Codec.entrySize items[first]
                    let mutable taken = 1
                    let mutable full = false
                    while not full && first + taken < stop do
                        size <- size + Codec.entrySize items[first + taken]
                        if size > maxSize then full <- true else taken <- taken + 1
                    Ok(Array.sub items first taken)

        member s.Term(i) =
            if i < s.DummyIndex then Error StorageError.Compacted
            elif i - s.DummyIndex > uint64 s.Count then Error StorageError.Unavailable
            else Ok(s.TermAt(int (i - s.DummyIndex)))

        member s.LastIndex() = Ok s.LastIndex
        member s.FirstIndex() = Ok s.FirstIndex
        member s.Snapshot() = Ok s.SnapshotValue

module MemoryStorage =
    let private noEntries () = EntryBuffer([||], 0)

    /// A storage with nothing in it: a dummy entry at index 0, term 0 (NewMemoryStorage).
    let empty: MemoryStorage =
        { HardStateValue = HardState.empty
          SnapshotValue = Snapshot.empty
          DummyIndex = 0UL
          DummyTerm = 0UL
          Buffer = noEntries ()
          Start = 0
          Count = 0 }

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
        let ents = ResizeArray<Entry>()
        let mutable problem: string option = None
        use e = entries.GetEnumerator()
        while problem.IsNone && e.MoveNext() do
            let expected = offsetIndex + 1UL + uint64 ents.Count
            if e.Current.Index <> expected then
                problem <-
                    Some(
                        sprintf "entries are not contiguous: expected index %d, found %d (first index %d)"
                            expected e.Current.Index (offsetIndex + 1UL)
                    )
            else ents.Add e.Current
        let restored =
            { HardStateValue = hardState
              SnapshotValue = snapshot
              DummyIndex = offsetIndex
              DummyTerm = offsetTerm
              Buffer = EntryBuffer.Create([||], 0, 0, ents.ToArray())
              Start = 0
              Count = ents.Count }
        let last = restored.LastIndex
        let snapIndex, snapTerm = snapshot.Metadata.Index, snapshot.Metadata.Term
        match problem with
        | Some p -> Error p
        | None when snapIndex > last ->
            Error(sprintf "snapshot at index %d is beyond the last index %d" snapIndex last)
        | None when snapIndex >= offsetIndex && restored.TermAt(int (snapIndex - offsetIndex)) <> snapTerm ->
            Error(
                sprintf "snapshot at index %d has term %d but the log has term %d there"
                    snapIndex snapTerm (restored.TermAt(int (snapIndex - offsetIndex)))
            )
        | None -> Ok restored

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
                    DummyIndex = snap.Metadata.Index
                    DummyTerm = snap.Metadata.Term
                    Buffer = noEntries ()
                    Start = 0
                    Count = 0 }

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
            let term = s.TermAt(int (i - s.DummyIndex))
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
        if compactIndex <= s.DummyIndex then Error StorageError.Compacted
        elif compactIndex > s.LastIndex then
            invalidOp (sprintf "compact %d is out of bound lastindex(%d)" compactIndex s.LastIndex)
        else
            // The window moves past the compacted entries; the buffer's copy on the next
            // growth leaves them behind.
            let i = int (compactIndex - s.DummyIndex)
            Ok
                { s with
                    DummyIndex = compactIndex
                    DummyTerm = s.TermAt i
                    Start = s.Start + i
                    Count = s.Count - i }

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
                // The stored entries before the first new one are kept.
                let kept = entries[0].Index - s.DummyIndex - 1UL
                if kept <= uint64 s.Count then
                    let kept = int kept
                    let at = s.Start + kept
                    if s.Buffer.TryClaim(at, entries.Length) then
                        Array.blit entries 0 s.Buffer.Items at entries.Length
                        { s with Count = kept + entries.Length }
                    else
                        { s with
                            Buffer = EntryBuffer.Create(s.Buffer.Items, s.Start, kept, entries)
                            Start = 0
                            Count = kept + entries.Length }
                else
                    invalidOp (
                        sprintf "missing log entry [last: %d, append at: %d]" s.LastIndex entries[0].Index
                    )
