/// The unstable tail of the log (etcd's log_unstable.go): entries and a snapshot Raft has
/// accepted but the application has not yet confirmed as written to stable storage.
namespace Raft.Spec

/// Identifies a log entry: there is at most one entry with a given (term, index)
/// (etcd's entryID). Labels must be qualified so they don't shadow Entry's in inference.
[<RequireQualifiedAccess>]
type EntryId = { Term: uint64; Index: uint64 }

module EntryId =
    let create (term: uint64) (index: uint64) : EntryId = { Term = term; Index = index }

    let ofEntry (e: Entry) : EntryId = { Term = e.Term; Index = e.Index }

    /// Go's %+v form of etcd's entryID, used in its error texts.
    let describe (id: EntryId) = sprintf "{term:%d index:%d}" id.Term id.Index

/// Consecutive entries as the leader of term Term sent them, following Prev (etcd's
/// logSlice). Well formed when indexes are consecutive after Prev, terms never go down
/// and none exceeds Term; slices built from received messages should be checked with valid.
[<RequireQualifiedAccess>]
type LogSlice =
    { Term: uint64
      Prev: EntryId
      Entries: Entry[] }

module LogSlice =
    let create (term: uint64) (prev: EntryId) (entries: Entry[]) : LogSlice =
        { Term = term; Prev = prev; Entries = entries }

    /// The slice a MsgApp carries (etcd's logSliceFromMsgApp).
    let ofMsgApp (m: Message) : LogSlice =
        { Term = m.Term
          Prev = EntryId.create m.LogTerm m.Index
          Entries = m.Entries }

    /// Index of the last entry, or Prev's when there are none.
    let lastIndex (s: LogSlice) = s.Prev.Index + uint64 s.Entries.Length

    let lastEntryId (s: LogSlice) : EntryId =
        if s.Entries.Length = 0 then s.Prev else EntryId.ofEntry s.Entries[s.Entries.Length - 1]

    /// Checks the slice is well formed; the error text is etcd's.
    let valid (s: LogSlice) : Result<unit, string> =
        let rec check (prev: EntryId) i =
            if i = s.Entries.Length then
                if s.Term < prev.Term then
                    Error(sprintf "leader term %d: entry %s has a newer term" s.Term (EntryId.describe prev))
                else Ok()
            else
                let id = EntryId.ofEntry s.Entries[i]
                if id.Term < prev.Term || id.Index <> prev.Index + 1UL then
                    Error(
                        sprintf
                            "leader term %d: entries %s and %s not consistent"
                            s.Term
                            (EntryId.describe prev)
                            (EntryId.describe id)
                    )
                else check id (i + 1)
        check s.Prev 0

/// Entries (and possibly a snapshot) not yet known to be in stable storage. Entries[i]
/// has index Offset + i. Offset may be at or below the last stored index: the next
/// storage write then truncates the stored log before appending these entries.
/// The entries before OffsetInProgress (and the snapshot, when SnapshotInProgress) have
/// been handed to the application for writing, so they are not handed out again.
/// Invariant: Offset <= OffsetInProgress <= Offset + Entries.Length.
[<RequireQualifiedAccess>]
type Unstable =
    { Snapshot: Snapshot option
      Entries: Entry[]
      Offset: uint64
      SnapshotInProgress: bool
      OffsetInProgress: uint64 }

module Unstable =
    /// No entries and no snapshot; the next entry to arrive has index offset.
    let create (offset: uint64) : Unstable =
        { Snapshot = None
          Entries = [||]
          Offset = offset
          SnapshotInProgress = false
          OffsetInProgress = offset }

    /// The first index after the unstable snapshot, if there is one.
    let maybeFirstIndex (u: Unstable) : uint64 option =
        u.Snapshot |> Option.map (fun s -> s.Metadata.Index + 1UL)

    /// The index of the last unstable entry, else of the unstable snapshot.
    let maybeLastIndex (u: Unstable) : uint64 option =
        if u.Entries.Length > 0 then Some(u.Offset + uint64 u.Entries.Length - 1UL)
        else u.Snapshot |> Option.map (fun s -> s.Metadata.Index)

    /// The term at index i, if the unstable entries or snapshot know it.
    let maybeTerm (i: uint64) (u: Unstable) : uint64 option =
        if i < u.Offset then
            match u.Snapshot with
            | Some s when s.Metadata.Index = i -> Some s.Metadata.Term
            | _ -> None
        else
            match maybeLastIndex u with
            | Some last when i <= last -> Some u.Entries[int (i - u.Offset)].Term
            | _ -> None

    /// The entries not yet handed out for writing.
    let nextEntries (u: Unstable) : Entry[] =
        let inProgress = int (u.OffsetInProgress - u.Offset)
        if u.Entries.Length = inProgress then [||] else u.Entries[inProgress..]

    /// The snapshot, if there is one not yet handed out for writing.
    let nextSnapshot (u: Unstable) : Snapshot option =
        if u.SnapshotInProgress then None else u.Snapshot

    /// Marks everything currently unstable as handed out for writing; later additions
    /// are handed out by the next call.
    let acceptInProgress (u: Unstable) : Unstable =
        { u with
            OffsetInProgress =
                if u.Entries.Length > 0 then u.Entries[u.Entries.Length - 1].Index + 1UL
                else u.OffsetInProgress
            SnapshotInProgress = u.Snapshot.IsSome || u.SnapshotInProgress }

    /// The application reports entries up to id as written. A report that no longer
    /// matches the unstable entries (they were replaced, or were already reported, or it
    /// names the snapshot) is stale and ignored with a log line: dropping entries on it
    /// could lose ones that were never written.
    let stableTo (id: EntryId) (u: Unstable) : Unstable * LogLine list =
        match maybeTerm id.Index u with
        | None ->
            u, [ LogLine.info (sprintf "entry at index %d missing from unstable log; ignoring" id.Index) ]
        | Some _ when id.Index < u.Offset ->
            u, [ LogLine.info (sprintf "entry at index %d matched unstable snapshot; ignoring" id.Index) ]
        | Some term when term <> id.Term ->
            u,
            [ LogLine.info (
                  sprintf
                      "entry at (index,term)=(%d,%d) mismatched with entry at (%d,%d) in unstable log; ignoring"
                      id.Index
                      id.Term
                      id.Index
                      term
              ) ]
        | Some _ ->
            let offset = id.Index + 1UL
            { u with
                Entries = u.Entries[int (offset - u.Offset) ..]
                Offset = offset
                OffsetInProgress = max u.OffsetInProgress offset },
            []

    /// The application reports the snapshot at index i as written.
    let stableSnapTo (i: uint64) (u: Unstable) : Unstable =
        match u.Snapshot with
        | Some s when s.Metadata.Index = i -> { u with Snapshot = None; SnapshotInProgress = false }
        | _ -> u

    /// Replaces everything with the snapshot; entries continue after it.
    let restore (s: Snapshot) (_previous: Unstable) : Unstable =
        let offset = s.Metadata.Index + 1UL
        { Snapshot = Some s
          Entries = [||]
          Offset = offset
          SnapshotInProgress = false
          OffsetInProgress = offset }

    /// Entries [lo, hi); the whole range must be unstable (a programming error otherwise).
    let slice (lo: uint64) (hi: uint64) (u: Unstable) : Entry[] =
        if lo > hi then invalidOp (sprintf "invalid unstable.slice %d > %d" lo hi)
        let upper = u.Offset + uint64 u.Entries.Length
        if lo < u.Offset || hi > upper then
            invalidOp (sprintf "unstable.slice[%d,%d) out of bound [%d,%d]" lo hi u.Offset upper)
        u.Entries[int (lo - u.Offset) .. int (hi - u.Offset) - 1]

    /// Adds entries that follow on from, or replace part of, the unstable tail; entries
    /// at and after the first new index are dropped. Replaced entries are no longer
    /// considered in progress.
    let truncateAndAppend (ents: Entry[]) (u: Unstable) : Unstable * LogLine list =
        if ents.Length = 0 then u, []
        else
            let fromIndex = ents[0].Index
            if fromIndex = u.Offset + uint64 u.Entries.Length then
                { u with Entries = Array.append u.Entries ents }, []
            elif fromIndex <= u.Offset then
                // The new entries start at or before the unstable tail: they replace it all,
                // and storage will be truncated before them when they are written.
                { u with
                    Entries = ents
                    Offset = fromIndex
                    OffsetInProgress = fromIndex },
                [ LogLine.info (sprintf "replace the unstable entries from index %d" fromIndex) ]
            else
                let keep = slice u.Offset fromIndex u
                { u with
                    Entries = Array.append keep ents
                    OffsetInProgress = min u.OffsetInProgress fromIndex },
                [ LogLine.info (sprintf "truncate the unstable entries before index %d" fromIndex) ]
