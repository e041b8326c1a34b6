/// The Raft log (etcd's log.go): stable storage plus the unstable tail, with the commit,
/// applying and applied positions. Functions return the new log; functions etcd logs from
/// return their log lines too, in order, for the caller to pass on.
namespace Raft.Spec

/// Invariants: Applied <= Applying <= Committed <= last index.
[<RequireQualifiedAccess; NoComparison; NoEquality>]
type RaftLog =
    { /// The stable entries since the last snapshot.
      Storage: IStorage
      /// Entries and snapshot not yet known to be stable.
      Unstable: Unstable
      /// The highest index known to be stable on a quorum.
      Committed: uint64
      /// The highest index handed to the application to apply (some may still be applying).
      Applying: uint64
      /// The highest index the application reported as applied.
      Applied: uint64
      /// Limit on the bytes of entries handed out for applying but not yet applied.
      MaxApplyingEntsSize: uint64
      /// Bytes of entries handed out for applying but not yet applied.
      ApplyingEntsSize: uint64
      /// No more entries are handed out for applying until some are reported applied.
      ApplyingEntsPaused: bool }

module RaftLog =
    /// No limit on byte sizes (etcd's noLimit).
    [<Literal>]
    let NoLimit = System.UInt64.MaxValue

    /// Storage failures Raft cannot handle: etcd panics with the error.
    let private storageFailure (e: StorageError) : 'a = invalidOp (StorageError.message e)

    let private orFail (r: Result<'a, StorageError>) : 'a =
        match r with
        | Ok v -> v
        | Error e -> storageFailure e

    /// A log over the storage, committed and applied up to the storage's snapshot
    /// (etcd's newLogWithSize).
    let create (storage: IStorage) (maxApplyingEntsSize: uint64) : RaftLog =
        let firstIndex = storage.FirstIndex() |> orFail
        let lastIndex = storage.LastIndex() |> orFail
        { Storage = storage
          Unstable = Unstable.create (lastIndex + 1UL)
          Committed = firstIndex - 1UL
          Applying = firstIndex - 1UL
          Applied = firstIndex - 1UL
          MaxApplyingEntsSize = maxApplyingEntsSize
          ApplyingEntsSize = 0UL
          ApplyingEntsPaused = false }

    /// The same log reading from another storage value (after the application wrote to it).
    let withStorage (storage: IStorage) (log: RaftLog) : RaftLog = { log with Storage = storage }

    /// etcd's raftLog.String(), part of its log lines.
    let describe (log: RaftLog) : string =
        sprintf
            "committed=%d, applied=%d, applying=%d, unstable.offset=%d, unstable.offsetInProgress=%d, len(unstable.Entries)=%d"
            log.Committed
            log.Applied
            log.Applying
            log.Unstable.Offset
            log.Unstable.OffsetInProgress
            log.Unstable.Entries.Length

    // firstIndex, lastIndex and term read the unstable part directly (what
    // Unstable.maybeFirstIndex etc. answer) to spare an option on every call.

    let firstIndex (log: RaftLog) : uint64 =
        match log.Unstable.Snapshot with
        | Some s -> s.Metadata.Index + 1UL
        | None -> log.Storage.FirstIndex() |> orFail

    let lastIndex (log: RaftLog) : uint64 =
        let u = log.Unstable
        if u.Entries.Length > 0 then u.Offset + uint64 u.Entries.Length - 1UL
        else
            match u.Snapshot with
            | Some s -> s.Metadata.Index
            | None -> log.Storage.LastIndex() |> orFail

    /// The term of entry i, for i in [firstIndex-1, lastIndex] (the entry before the first
    /// keeps its term for matching); Compacted below that range, Unavailable above it.
    let term (i: uint64) (log: RaftLog) : Result<uint64, StorageError> =
        // The unstable tail first: if it knows the entry, the entry is in range, and the
        // range check (which may read storage) is not needed.
        let u = log.Unstable
        let fromUnstable =
            if i < u.Offset then
                match u.Snapshot with
                | Some s when s.Metadata.Index = i -> ValueSome s.Metadata.Term
                | _ -> ValueNone
            elif i - u.Offset < uint64 u.Entries.Length then ValueSome u.Entries[int (i - u.Offset)].Term
            else ValueNone
        match fromUnstable with
        | ValueSome t -> Ok t
        | ValueNone ->
            if i + 1UL < firstIndex log then Error StorageError.Compacted
            elif i > lastIndex log then Error StorageError.Unavailable
            else
                match log.Storage.Term i with
                | Ok t -> Ok t
                | Error(StorageError.Compacted | StorageError.Unavailable as e) -> Error e
                | Error e -> storageFailure e

    /// The term, or 0 when the index is compacted or beyond the log (etcd's zeroTermOnOutOfBounds).
    let zeroTermOnOutOfBounds (t: Result<uint64, StorageError>) : uint64 =
        match t with
        | Ok t -> t
        | Error(StorageError.Compacted | StorageError.Unavailable) -> 0UL
        | Error e -> invalidOp (sprintf "unexpected error (%s)" (StorageError.message e))

    let lastEntryId (log: RaftLog) : EntryId =
        let index = lastIndex log
        match term index log with
        | Ok t -> EntryId.create t index
        | Error e ->
            invalidOp (
                sprintf "unexpected error when getting the last term at %d: %s" index (StorageError.message e)
            )

    let lastTerm (log: RaftLog) : uint64 = (lastEntryId log).Term

    /// Whether the log holds an entry with this id.
    let matchTerm (id: EntryId) (log: RaftLog) : bool =
        match term id.Index log with
        | Ok t -> t = id.Term
        | Error _ -> false

    /// Whether a log ending at their last entry is at least as up to date as this one:
    /// a later last term wins, then a longer log (the vote rule).
    let isUpToDate (their: EntryId) (log: RaftLog) : bool =
        let our = lastEntryId log
        their.Term > our.Term || (their.Term = our.Term && their.Index >= our.Index)

    /// Checks lo <= hi is a range whose entries are not compacted and not beyond the log.
    let private checkOutOfBounds (lo: uint64) (hi: uint64) (log: RaftLog) : Result<unit, StorageError> =
        if lo > hi then invalidOp (sprintf "invalid slice %d > %d" lo hi)
        let fi = firstIndex log
        if lo < fi then Error StorageError.Compacted
        else
            let li = lastIndex log
            if hi > li + 1UL then invalidOp (sprintf "slice[%d,%d) out of bound [%d,%d]" lo hi fi li)
            Ok()

    /// Entries [lo, hi) of at most maxSize bytes, but at least one entry when the range
    /// is not empty. Compacted if lo has been compacted.
    let slice (lo: uint64) (hi: uint64) (maxSize: uint64) (log: RaftLog) : Result<Entry[], StorageError> =
        let offset = log.Unstable.Offset
        match checkOutOfBounds lo hi log with
        | Error e -> Error e
        | Ok() when lo = hi -> Ok [||]
        | Ok() when lo >= offset -> Ok(Unstable.slice lo hi log.Unstable |> Codec.limitSize maxSize)
        | Ok() ->
            let cut = min hi offset
            match log.Storage.Entries(lo, cut, maxSize) with
            | Error StorageError.Compacted -> Error StorageError.Compacted
            | Error StorageError.Unavailable -> invalidOp (sprintf "entries[%d:%d) is unavailable from storage" lo cut)
            | Error e -> storageFailure e
            | Ok stored ->
                // Fewer entries than asked for means the size limit was reached.
                if hi <= offset || uint64 stored.Length < cut - lo then Ok stored
                else
                    let size = Codec.entriesSize stored
                    if size >= maxSize then Ok stored
                    else
                        let tail = Unstable.slice offset hi log.Unstable |> Codec.limitSize (maxSize - size)
                        // limitSize keeps a first entry even when it alone exceeds the limit;
                        // here the stored entries already provide the "at least one".
                        if tail.Length = 1 && size + Codec.entriesSize tail > maxSize then Ok stored
                        else Ok(Array.append stored tail)

    /// Entries from i to the end, at most maxSize bytes (at least one); empty past the end.
    let entries (i: uint64) (maxSize: uint64) (log: RaftLog) : Result<Entry[], StorageError> =
        let li = lastIndex log
        if i > li then Ok [||] else slice i (li + 1UL) maxSize log

    /// Every entry of the log, from the first index.
    let rec allEntries (log: RaftLog) : Entry[] =
        match entries (firstIndex log) NoLimit log with
        | Ok ents -> ents
        // A compaction racing with the read: read again from the new first index.
        | Error StorageError.Compacted -> allEntries log
        | Error e -> storageFailure e

    /// Visits the entries [lo, hi) in pages of at most pageSize bytes (or a single larger
    /// entry), in order, until visit returns true ("stop"). Ok true if the visit was stopped,
    /// Ok false if every page was visited, Error with etcd's error text otherwise.
    let scan (lo: uint64) (hi: uint64) (pageSize: uint64) (visit: Entry[] -> bool) (log: RaftLog) : Result<bool, string> =
        let rec go lo =
            if lo >= hi then Ok false
            else
                match slice lo hi pageSize log with
                | Error e -> Error(StorageError.message e)
                | Ok [||] -> Error(sprintf "got 0 entries in [%d, %d)" lo hi)
                | Ok ents -> if visit ents then Ok true else go (lo + uint64 ents.Length)
        go lo

    /// The first index at which ents disagree with the log: the first entry whose term
    /// differs from ours, or the first one beyond our last index; 0 when the log already
    /// holds all of them. ents must have consecutive indexes.
    let findConflict (ents: Entry[]) (log: RaftLog) : uint64 * LogLine list =
        match ents |> Array.tryFind (fun e -> not (matchTerm (EntryId.ofEntry e) log)) with
        | None -> 0UL, []
        | Some e ->
            if e.Index <= lastIndex log then
                let existing = zeroTermOnOutOfBounds (term e.Index log)
                e.Index,
                [ LogLine.info (
                      sprintf
                          "found conflict at index %d [existing term: %d, conflicting term: %d]"
                          e.Index
                          existing
                          e.Term
                  ) ]
            else e.Index, []

    /// The best guess at where this log stops matching another one, knowing only that the
    /// other has an entry (index, term): the largest index <= the given one whose term is
    /// <= term, or whose term is unknown here (compacted or not stored). Returns that index
    /// and its term (0 when unknown).
    let findConflictByTerm (index: uint64) (term': uint64) (log: RaftLog) : uint64 * uint64 =
        let rec go index =
            if index = 0UL then 0UL, 0UL
            else
                match term index log with
                | Error _ -> index, 0UL
                | Ok ourTerm when ourTerm <= term' -> index, ourTerm
                | Ok _ -> go (index - 1UL)
        go index

    /// Commits up to tocommit; never decreases the commit index. Committing beyond the
    /// last index means the log was corrupted or lost: a programming error.
    let commitTo (tocommit: uint64) (log: RaftLog) : RaftLog =
        if log.Committed < tocommit then
            let li = lastIndex log
            if li < tocommit then
                invalidOp (
                    sprintf
                        "tocommit(%d) is out of range [lastIndex(%d)]. Was the raft log corrupted, truncated, or lost?"
                        tocommit
                        li
                )
            { log with Committed = tocommit }
        else log

    /// Appends entries to the unstable tail, replacing any from the first new index on.
    /// Entries at or before the commit index may never be replaced. The new last index
    /// is lastIndex of the result.
    let append (ents: Entry[]) (log: RaftLog) : RaftLog * LogLine list =
        if ents.Length = 0 then log, []
        else
            let after = ents[0].Index - 1UL
            if after < log.Committed then
                invalidOp (sprintf "after(%d) is out of range [committed(%d)]" after log.Committed)
            let unstable, lines = Unstable.truncateAndAppend ents log.Unstable
            { log with Unstable = unstable }, lines

    /// Appends the leader's slice if our log has its Prev entry, keeping entries we
    /// already have and replacing ours from the first conflict on, then commits up to
    /// min(committed, last new index). None when Prev does not match; otherwise the new
    /// log and the index of the slice's last entry.
    let maybeAppend (a: LogSlice) (committed: uint64) (log: RaftLog) : (RaftLog * uint64) option * LogLine list =
        if not (matchTerm a.Prev log) then None, []
        else
            let lastNew = LogSlice.lastIndex a
            let ci, conflictLines = findConflict a.Entries log
            let log, appendLines =
                if ci = 0UL then log, []
                elif ci <= log.Committed then
                    invalidOp (sprintf "entry %d conflict with committed entry [committed(%d)]" ci log.Committed)
                else
                    let offset = a.Prev.Index + 1UL
                    if ci - offset > uint64 a.Entries.Length then
                        invalidOp (sprintf "index, %d, is out of range [%d]" (ci - offset) a.Entries.Length)
                    append a.Entries[int (ci - offset) ..] log
            Some(commitTo (min committed lastNew) log, lastNew), conflictLines @ appendLines

    /// Commits up to `at` if it names an entry of our log, of a non-zero term, beyond the
    /// commit index. Returns the log and whether the commit index moved.
    let maybeCommit (at: EntryId) (log: RaftLog) : RaftLog * bool =
        // A leader campaigned at term 1 at least, so a zero term never commits.
        if at.Term <> 0UL && at.Index > log.Committed && matchTerm at log then commitTo at.Index log, true
        else log, false

    /// The highest committed index that may be applied: with allowUnstable, entries not
    /// yet stable locally may be applied too (they are committed on a quorum).
    let maxAppliableIndex (allowUnstable: bool) (log: RaftLog) : uint64 =
        if allowUnstable then log.Committed else min log.Committed (log.Unstable.Offset - 1UL)

    /// Whether a snapshot is waiting to be written or being written.
    let hasNextOrInProgressSnapshot (log: RaftLog) : bool = log.Unstable.Snapshot.IsSome

    /// Whether there are committed entries to hand out for applying. While a snapshot is
    /// pending none are handed out: which to apply first would be unclear.
    let hasNextCommittedEnts (allowUnstable: bool) (log: RaftLog) : bool =
        not log.ApplyingEntsPaused
        && not (hasNextOrInProgressSnapshot log)
        && log.Applying + 1UL < maxAppliableIndex allowUnstable log + 1UL

    /// The committed entries to hand out for applying, within the remaining applying budget
    /// (at least one entry when any).
    let nextCommittedEnts (allowUnstable: bool) (log: RaftLog) : Entry[] =
        if not (hasNextCommittedEnts allowUnstable log) then [||]
        else
            let lo, hi = log.Applying + 1UL, maxAppliableIndex allowUnstable log + 1UL
            if log.MaxApplyingEntsSize <= log.ApplyingEntsSize then
                invalidOp (
                    sprintf
                        "applying entry size (%d-%d)=%d not positive"
                        log.MaxApplyingEntsSize
                        log.ApplyingEntsSize
                        (log.MaxApplyingEntsSize - log.ApplyingEntsSize)
                )
            match slice lo hi (log.MaxApplyingEntsSize - log.ApplyingEntsSize) log with
            | Ok ents -> ents
            | Error e ->
                invalidOp (sprintf "unexpected error when getting unapplied entries (%s)" (StorageError.message e))

    /// The unstable entries to hand out for writing.
    let nextUnstableEnts (log: RaftLog) : Entry[] = Unstable.nextEntries log.Unstable

    let hasNextUnstableEnts (log: RaftLog) : bool =
        let u = log.Unstable
        u.Entries.Length > int (u.OffsetInProgress - u.Offset)

    /// Whether any entries are unstable, handed out for writing or not.
    let hasNextOrInProgressUnstableEnts (log: RaftLog) : bool = log.Unstable.Entries.Length > 0

    /// The unstable snapshot to hand out for writing, if not already handed out.
    let nextUnstableSnapshot (log: RaftLog) : Snapshot option = Unstable.nextSnapshot log.Unstable

    let hasNextUnstableSnapshot (log: RaftLog) : bool = (nextUnstableSnapshot log).IsSome

    /// The latest snapshot: the unstable one, else the storage's.
    let snapshot (log: RaftLog) : Result<Snapshot, StorageError> =
        match log.Unstable.Snapshot with
        | Some s -> Ok s
        | None -> log.Storage.Snapshot()

    /// The application reports entries up to i applied, size bytes of them since the last
    /// report. Resumes handing out entries once the outstanding bytes are below the limit.
    let appliedTo (i: uint64) (size: uint64) (log: RaftLog) : RaftLog =
        if log.Committed < i || i < log.Applied then
            invalidOp (
                sprintf "applied(%d) is out of range [prevApplied(%d), committed(%d)]" i log.Applied log.Committed
            )
        let outstanding = if log.ApplyingEntsSize > size then log.ApplyingEntsSize - size else 0UL
        { log with
            Applied = i
            Applying = max log.Applying i
            ApplyingEntsSize = outstanding
            ApplyingEntsPaused = outstanding >= log.MaxApplyingEntsSize }

    /// Entries up to i (size bytes) were handed out for applying. Further entries are held
    /// back when the outstanding bytes reach the limit, or when the batch stopped short of
    /// what was appliable (the size limit cut it, so the next entry would exceed it).
    let acceptApplying (i: uint64) (size: uint64) (allowUnstable: bool) (log: RaftLog) : RaftLog =
        if log.Committed < i then
            invalidOp (
                sprintf "applying(%d) is out of range [prevApplying(%d), committed(%d)]" i log.Applying log.Committed
            )
        let outstanding = log.ApplyingEntsSize + size
        { log with
            Applying = i
            ApplyingEntsSize = outstanding
            ApplyingEntsPaused =
                outstanding >= log.MaxApplyingEntsSize || i < maxAppliableIndex allowUnstable log }

    /// The unstable entries and snapshot were handed out for writing.
    let acceptUnstable (log: RaftLog) : RaftLog =
        { log with Unstable = Unstable.acceptInProgress log.Unstable }

    /// The application wrote the entries up to id (stale reports are ignored, with a line).
    let stableTo (id: EntryId) (log: RaftLog) : RaftLog * LogLine list =
        let unstable, lines = Unstable.stableTo id log.Unstable
        { log with Unstable = unstable }, lines

    /// The application wrote the snapshot at index i.
    let stableSnapTo (i: uint64) (log: RaftLog) : RaftLog =
        { log with Unstable = Unstable.stableSnapTo i log.Unstable }

    /// Replaces the log with the snapshot, which becomes the commit point.
    let restore (s: Snapshot) (log: RaftLog) : RaftLog * LogLine list =
        let line =
            LogLine.info (
                sprintf
                    "log [%s] starts to restore snapshot [index: %d, term: %d]"
                    (describe log)
                    s.Metadata.Index
                    s.Metadata.Term
            )
        { log with
            Committed = s.Metadata.Index
            Unstable = Unstable.restore s log.Unstable },
        [ line ]
