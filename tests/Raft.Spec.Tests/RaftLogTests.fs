module Raft.Spec.Tests.RaftLogTests

open Xunit
open FsCheck
open FsCheck.FSharp
open Raft.Spec
open Raft.Spec.Tests.LogFixtures

let private logOver (s: MemoryStorage) = RaftLog.create (MemoryStorage.asStorage s) RaftLog.NoLimit

let private appended (ents: Entry[]) (log: RaftLog) = RaftLog.append ents log |> fst

/// Entries 1:1, 2:2, 3:3, all unstable.
let private oneTwoThree () = logOver MemoryStorage.empty |> appended (entsFrom 1UL [ 1UL; 2UL; 3UL ])

/// Writes what is unstable to the storage and acknowledges it, as the application does.
let private persist (storage: MemoryStorage) (log: RaftLog) : MemoryStorage * RaftLog =
    let ents = RaftLog.nextUnstableEnts log
    let log = RaftLog.acceptUnstable log
    if ents.Length = 0 then storage, log
    else
        let storage = MemoryStorage.append ents storage
        let log = log |> RaftLog.withStorage (MemoryStorage.asStorage storage) |> RaftLog.stableTo (EntryId.ofEntry ents[ents.Length - 1]) |> fst
        storage, log

let private ids (ents: Entry[]) = ents |> Array.map (fun e -> e.Index) |> Array.toList

[<Fact>]
let ``a new log is committed and applied up to the storage's snapshot`` () =
    let log = logOver (storageWith 3UL 2UL (entsFrom 4UL [ 2UL; 2UL ]))
    Assert.Equal(3UL, log.Committed)
    Assert.Equal(3UL, log.Applying)
    Assert.Equal(3UL, log.Applied)
    Assert.Equal(6UL, log.Unstable.Offset)
    Assert.Equal(6UL, log.Unstable.OffsetInProgress)
    Assert.Equal(4UL, RaftLog.firstIndex log)
    Assert.Equal(5UL, RaftLog.lastIndex log)
    Assert.Equal(EntryId.create 2UL 5UL, RaftLog.lastEntryId log)
    Assert.Equal(
        "committed=3, applied=3, applying=3, unstable.offset=6, unstable.offsetInProgress=6, len(unstable.Entries)=0",
        RaftLog.describe log
    )

[<Fact>]
let ``term lookup across snapshot, storage and unstable entries`` () =
    let log = logOver (storageWith 3UL 3UL (entsFrom 4UL [ 4UL; 5UL ])) |> appended (entsFrom 6UL [ 6UL; 6UL ])
    Assert.Equal(Error StorageError.Compacted, RaftLog.term 1UL log)
    Assert.Equal(Error StorageError.Compacted, RaftLog.term 2UL log)
    Assert.Equal(Ok 3UL, RaftLog.term 3UL log)
    Assert.Equal(Ok 4UL, RaftLog.term 4UL log)
    Assert.Equal(Ok 5UL, RaftLog.term 5UL log)
    Assert.Equal(Ok 6UL, RaftLog.term 7UL log)
    Assert.Equal(Error StorageError.Unavailable, RaftLog.term 8UL log)
    Assert.Equal(0UL, RaftLog.zeroTermOnOutOfBounds (RaftLog.term 2UL log))
    Assert.Equal(0UL, RaftLog.zeroTermOnOutOfBounds (RaftLog.term 8UL log))
    Assert.Equal(5UL, RaftLog.zeroTermOnOutOfBounds (RaftLog.term 5UL log))
    panicsWith "unexpected error (requested index is older than the existing snapshot)" (fun () ->
        RaftLog.zeroTermOnOutOfBounds (Error StorageError.SnapOutOfDate))
    Assert.True(RaftLog.matchTerm (EntryId.create 3UL 3UL) log)
    Assert.False(RaftLog.matchTerm (EntryId.create 2UL 3UL) log)
    Assert.False(RaftLog.matchTerm (EntryId.create 6UL 8UL) log)

[<Fact>]
let ``term lookup with an unstable snapshot`` () =
    let log, lines = logOver (storageWith 3UL 3UL [||]) |> RaftLog.restore (snapAt 10UL 5UL)
    Assert.Equal<string list>(
        [ "log [committed=3, applied=3, applying=3, unstable.offset=4, unstable.offsetInProgress=4, len(unstable.Entries)=0] starts to restore snapshot [index: 10, term: 5]" ],
        texts lines
    )
    Assert.Equal(Ok 5UL, RaftLog.term 10UL log)
    Assert.Equal(Error StorageError.Compacted, RaftLog.term 9UL log)
    Assert.Equal(Error StorageError.Compacted, RaftLog.term 3UL log)
    Assert.Equal(Error StorageError.Unavailable, RaftLog.term 11UL log)
    Assert.Equal(11UL, RaftLog.firstIndex log)
    Assert.Equal(10UL, RaftLog.lastIndex log)
    Assert.Equal(10UL, log.Committed)
    Assert.Equal(3UL, log.Applied)
    Assert.True(RaftLog.hasNextUnstableSnapshot log)
    Assert.True(RaftLog.hasNextOrInProgressSnapshot log)
    Assert.Equal(Ok(snapAt 10UL 5UL), RaftLog.snapshot log)
    // Once written, the snapshot is no longer unstable and the storage answers.
    let log = log |> RaftLog.acceptUnstable
    Assert.False(RaftLog.hasNextUnstableSnapshot log)
    Assert.True(RaftLog.hasNextOrInProgressSnapshot log)
    let storage = storageWith 3UL 3UL [||] |> MemoryStorage.applySnapshot (snapAt 10UL 5UL) |> ok
    let log = log |> RaftLog.withStorage (MemoryStorage.asStorage storage) |> RaftLog.stableSnapTo 10UL
    Assert.False(RaftLog.hasNextOrInProgressSnapshot log)
    Assert.Equal(Ok 5UL, RaftLog.term 10UL log)
    Assert.Equal(11UL, RaftLog.firstIndex log)

[<Fact>]
let ``findConflict returns the first disagreeing index and logs real conflicts`` () =
    let log = oneTwoThree ()
    let check terms first (expected: uint64) (lines: string list) =
        let ci, ls = RaftLog.findConflict (entsFrom first terms) log
        Assert.Equal(expected, ci)
        Assert.Equal<string list>(lines, texts ls)
    check [] 1UL 0UL []
    check [ 1UL; 2UL; 3UL ] 1UL 0UL []
    check [ 2UL; 3UL ] 2UL 0UL []
    check [ 3UL ] 3UL 0UL []
    check [ 1UL; 2UL; 3UL; 4UL; 4UL ] 1UL 4UL []
    check [ 4UL; 4UL ] 4UL 4UL []
    check [ 4UL; 4UL ] 1UL 1UL [ "found conflict at index 1 [existing term: 1, conflicting term: 4]" ]
    check [ 1UL; 4UL; 4UL ] 2UL 2UL [ "found conflict at index 2 [existing term: 2, conflicting term: 1]" ]
    check [ 3UL; 4UL; 4UL; 4UL ] 3UL 4UL []

[<Fact>]
let ``findConflictByTerm backs up to a term no greater, or to an unknown term`` () =
    // Snapshot at 10 (term 3), then 11:3 12:3 13:4 14:4 15:4 16:6.
    let log = logOver (storageWith 10UL 3UL (entsFrom 11UL [ 3UL; 3UL; 4UL; 4UL; 4UL; 6UL ]))
    let check index term expected = Assert.Equal(expected, RaftLog.findConflictByTerm index term log)
    check 16UL 6UL (16UL, 6UL)
    check 16UL 7UL (16UL, 6UL)
    check 16UL 5UL (15UL, 4UL)
    check 16UL 4UL (15UL, 4UL)
    check 14UL 4UL (14UL, 4UL)
    check 13UL 3UL (12UL, 3UL)
    check 15UL 3UL (12UL, 3UL)
    // Below the snapshot the terms are unknown: a possible match, term 0.
    check 12UL 2UL (9UL, 0UL)
    check 10UL 2UL (9UL, 0UL)
    check 10UL 3UL (10UL, 3UL)
    // Beyond the log the term is unknown too.
    check 18UL 9UL (18UL, 0UL)
    check 0UL 0UL (0UL, 0UL)
    Assert.Equal((0UL, 0UL), RaftLog.findConflictByTerm 2UL 0UL (oneTwoThree ()))

[<Fact>]
let ``isUpToDate prefers the later last term, then the longer log`` () =
    let log = oneTwoThree ()
    let check index term expected =
        Assert.Equal(expected, RaftLog.isUpToDate (EntryId.create term index) log)
    check 2UL 4UL true
    check 3UL 4UL true
    check 4UL 4UL true
    check 2UL 2UL false
    check 3UL 2UL false
    check 4UL 2UL false
    check 2UL 3UL false
    check 3UL 3UL true
    check 4UL 3UL true
    Assert.Equal(3UL, RaftLog.lastTerm log)

[<Fact>]
let ``append replaces entries from the first new index and never touches committed ones`` () =
    let storage = storageWith 0UL 0UL (entsFrom 1UL [ 1UL; 2UL ])
    let log = logOver storage
    let after (ents: Entry[]) =
        let l = appended ents log
        RaftLog.allEntries l |> Array.map (fun e -> e.Index, e.Term) |> Array.toList, l.Unstable.Offset
    Assert.Equal(([ 1UL, 1UL; 2UL, 2UL ], 3UL), after [||])
    Assert.Equal(([ 1UL, 1UL; 2UL, 2UL; 3UL, 2UL ], 3UL), after (entsFrom 3UL [ 2UL ]))
    Assert.Equal(([ 1UL, 2UL ], 1UL), after (entsFrom 1UL [ 2UL ]))
    Assert.Equal(([ 1UL, 1UL; 2UL, 3UL; 3UL, 3UL ], 2UL), after (entsFrom 2UL [ 3UL; 3UL ]))
    let _, lines = RaftLog.append (entsFrom 2UL [ 3UL ]) log
    Assert.Equal<string list>([ "replace the unstable entries from index 2" ], texts lines)
    let committed = RaftLog.commitTo 1UL log
    panicsWith "after(0) is out of range [committed(1)]" (fun () -> RaftLog.append (entsFrom 1UL [ 3UL ]) committed)

[<Fact>]
let ``maybeAppend accepts slices that follow a matching entry`` () =
    let log = oneTwoThree () |> RaftLog.commitTo 1UL
    let run prevIndex prevTerm (ents: Entry[]) committed =
        RaftLog.maybeAppend (LogSlice.create 9UL (EntryId.create prevTerm prevIndex) ents) committed log
    let accepted prevIndex prevTerm ents committed (lastNew: uint64) (wantCommit: uint64) (wantTerms: uint64 list) lines =
        match run prevIndex prevTerm ents committed with
        | Some(l, li), ls ->
            Assert.Equal(lastNew, li)
            Assert.Equal(wantCommit, l.Committed)
            Assert.Equal<uint64 list>(wantTerms, RaftLog.allEntries l |> Array.map (fun e -> e.Term) |> Array.toList)
            Assert.Equal<string list>(lines, texts ls)
        | None, _ -> failwith "expected the slice to be accepted"
    // No matching previous entry: refused, nothing logged.
    Assert.Equal((None, []), run 3UL 2UL [||] 3UL |> fun (r, ls) -> Option.map snd r, ls)
    Assert.Equal((None, []), run 4UL 3UL (entsFrom 5UL [ 4UL ]) 3UL |> fun (r, ls) -> Option.map snd r, ls)
    // Matching: commit up to min(leader commit, last new index), never down.
    accepted 3UL 3UL [||] 3UL 3UL 3UL [ 1UL; 2UL; 3UL ] []
    accepted 3UL 3UL [||] 4UL 3UL 3UL [ 1UL; 2UL; 3UL ] []
    accepted 3UL 3UL [||] 0UL 3UL 1UL [ 1UL; 2UL; 3UL ] []
    accepted 3UL 3UL (entsFrom 4UL [ 4UL ]) 4UL 4UL 4UL [ 1UL; 2UL; 3UL; 4UL ] []
    accepted 3UL 3UL (entsFrom 4UL [ 4UL; 4UL ]) 4UL 5UL 4UL [ 1UL; 2UL; 3UL; 4UL; 4UL ] []
    accepted 1UL 1UL (entsFrom 2UL [ 2UL; 3UL; 4UL ]) 2UL 4UL 2UL [ 1UL; 2UL; 3UL; 4UL ] []
    accepted 0UL 0UL (entsFrom 1UL [ 1UL ]) 3UL 1UL 1UL [ 1UL; 2UL; 3UL ] []
    // A conflict replaces our entries from it on.
    accepted
        2UL
        2UL
        (entsFrom 3UL [ 4UL ])
        3UL
        3UL
        3UL
        [ 1UL; 2UL; 4UL ]
        [ "found conflict at index 3 [existing term: 3, conflicting term: 4]"
          "truncate the unstable entries before index 3" ]
    accepted
        1UL
        1UL
        (entsFrom 2UL [ 4UL; 4UL ])
        3UL
        3UL
        3UL
        [ 1UL; 4UL; 4UL ]
        [ "found conflict at index 2 [existing term: 2, conflicting term: 4]"
          "truncate the unstable entries before index 2" ]
    // Replacing a committed entry is a broken invariant.
    panicsWith "entry 1 conflict with committed entry [committed(1)]" (fun () -> run 0UL 0UL (entsFrom 1UL [ 4UL ]) 3UL)

[<Fact>]
let ``commitTo never decreases and refuses to pass the last index`` () =
    let log = oneTwoThree () |> RaftLog.commitTo 1UL
    Assert.Equal(3UL, (RaftLog.commitTo 3UL log).Committed)
    Assert.Equal(1UL, (RaftLog.commitTo 0UL log).Committed)
    Assert.Equal(2UL, (log |> RaftLog.commitTo 2UL |> RaftLog.commitTo 1UL).Committed)
    panicsWith "tocommit(4) is out of range [lastIndex(3)]. Was the raft log corrupted, truncated, or lost?" (fun () ->
        RaftLog.commitTo 4UL log)

[<Fact>]
let ``maybeCommit commits only a matching entry of a non-zero term beyond the commit`` () =
    let log = oneTwoThree () |> RaftLog.commitTo 1UL
    let committed id = RaftLog.maybeCommit id log |> fun (l, moved) -> l.Committed, moved
    Assert.Equal((3UL, true), committed (EntryId.create 3UL 3UL))
    Assert.Equal((1UL, false), committed (EntryId.create 2UL 3UL))
    Assert.Equal((1UL, false), committed (EntryId.create 1UL 1UL))
    Assert.Equal((1UL, false), committed (EntryId.create 0UL 2UL))
    Assert.Equal((2UL, true), committed (EntryId.create 2UL 2UL))

/// Snapshot at 3 (term 1), stored 4:1, unstable 5:1 6:1, committed 5, applied 3.
let private applyFixture (maxSize: uint64) =
    let storage = storageWith 3UL 1UL (entsFrom 4UL [ 1UL ])
    let log, _ =
        RaftLog.create (MemoryStorage.asStorage storage) maxSize
        |> appended (entsFrom 4UL [ 1UL; 1UL; 1UL ])
        |> RaftLog.stableTo (EntryId.create 1UL 4UL)
    log |> RaftLog.maybeCommit (EntryId.create 1UL 5UL) |> fst

[<Fact>]
let ``committed entries are handed out from applying on, stable only unless allowed`` () =
    let cases =
        // applied, applying, allowUnstable, paused, snapshot, expected indexes
        [ 3UL, 3UL, true, false, false, [ 4UL; 5UL ]
          3UL, 4UL, true, false, false, [ 5UL ]
          3UL, 5UL, true, false, false, []
          4UL, 4UL, true, false, false, [ 5UL ]
          5UL, 5UL, true, false, false, []
          3UL, 3UL, false, false, false, [ 4UL ]
          3UL, 4UL, false, false, false, []
          4UL, 4UL, false, false, false, []
          3UL, 3UL, true, true, false, []
          3UL, 3UL, true, false, true, [] ]
    for applied, applying, allowUnstable, paused, snap, expected in cases do
        let log =
            applyFixture RaftLog.NoLimit
            |> RaftLog.appliedTo applied 0UL
            |> RaftLog.acceptApplying applying 0UL allowUnstable
        let log = { log with ApplyingEntsPaused = paused }
        let log = if snap then RaftLog.restore (snapAt 4UL 1UL) log |> fst else log
        Assert.Equal<uint64 list>(expected, ids (RaftLog.nextCommittedEnts allowUnstable log))
        Assert.Equal(not expected.IsEmpty, RaftLog.hasNextCommittedEnts allowUnstable log)

[<Fact>]
let ``handing out entries for applying stays within the byte budget`` () =
    // Five stable committed entries of 4 bytes each, a budget of 8 bytes.
    let storage = MemoryStorage.empty |> MemoryStorage.append (entsFrom 1UL [ 1UL; 1UL; 1UL; 1UL; 1UL ])
    let log = RaftLog.create (MemoryStorage.asStorage storage) 8UL |> RaftLog.commitTo 5UL
    let first = RaftLog.nextCommittedEnts false log
    Assert.Equal<uint64 list>([ 1UL; 2UL ], ids first)
    // The batch used the budget up: paused until something is applied.
    let log = RaftLog.acceptApplying 2UL 8UL false log
    Assert.True(log.ApplyingEntsPaused)
    Assert.Empty(RaftLog.nextCommittedEnts false log)
    Assert.False(RaftLog.hasNextCommittedEnts false log)
    let log = RaftLog.appliedTo 1UL 4UL log
    Assert.False(log.ApplyingEntsPaused)
    Assert.Equal(4UL, log.ApplyingEntsSize)
    Assert.Equal<uint64 list>([ 3UL ], ids (RaftLog.nextCommittedEnts false log))
    // A batch cut short by the budget also pauses, though the budget is not used up.
    let log = RaftLog.acceptApplying 3UL 4UL false (RaftLog.appliedTo 2UL 4UL log)
    Assert.True(log.ApplyingEntsPaused)
    // A budget smaller than one entry still lets one entry through.
    let tiny = RaftLog.create (MemoryStorage.asStorage storage) 1UL |> RaftLog.commitTo 5UL
    Assert.Equal<uint64 list>([ 1UL ], ids (RaftLog.nextCommittedEnts false tiny))
    panicsWith "applying entry size (8-8)=0 not positive" (fun () ->
        RaftLog.nextCommittedEnts false { log with ApplyingEntsSize = 8UL; ApplyingEntsPaused = false })

[<Fact>]
let ``acceptApplying pauses at the budget or when the batch stopped short`` () =
    let max = 100UL
    let cases =
        // index, allowUnstable, size, paused
        [ 3UL, true, max - 1UL, true
          4UL, true, max - 1UL, true
          5UL, true, max - 1UL, false
          5UL, true, max, true
          5UL, true, max + 1UL, true
          3UL, false, max - 1UL, true
          4UL, false, max - 1UL, false
          4UL, false, max, true
          5UL, false, max - 1UL, false ]
    for index, allowUnstable, size, paused in cases do
        let log = applyFixture max |> RaftLog.acceptApplying index size allowUnstable
        Assert.Equal(paused, log.ApplyingEntsPaused)
        Assert.Equal(index, log.Applying)
        Assert.Equal(size, log.ApplyingEntsSize)
    panicsWith "applying(6) is out of range [prevApplying(3), committed(5)]" (fun () ->
        RaftLog.acceptApplying 6UL 0UL true (applyFixture max))

[<Fact>]
let ``appliedTo releases budget without underflow and checks its range`` () =
    let max = 100UL
    let busy = applyFixture max |> RaftLog.acceptApplying 5UL (max + 5UL) false
    let check index size (wantSize: uint64) paused =
        let log = RaftLog.appliedTo index size busy
        Assert.Equal(index, log.Applied)
        Assert.Equal(5UL, log.Applying)
        Assert.Equal(wantSize, log.ApplyingEntsSize)
        Assert.Equal(paused, log.ApplyingEntsPaused)
    check 4UL 4UL (max + 1UL) true
    check 4UL 5UL max true
    check 5UL 6UL (max - 1UL) false
    check 4UL (max + 5UL) 0UL false
    check 4UL (max + 6UL) 0UL false
    // Applied moves applying along when the application applied more than it was given.
    let log = applyFixture max |> RaftLog.appliedTo 5UL 0UL
    Assert.Equal(5UL, log.Applying)
    panicsWith "applied(6) is out of range [prevApplied(3), committed(5)]" (fun () -> RaftLog.appliedTo 6UL 0UL busy)
    panicsWith "applied(2) is out of range [prevApplied(3), committed(5)]" (fun () -> RaftLog.appliedTo 2UL 0UL busy)

[<Fact>]
let ``unstable entries are handed out once and dropped when written`` () =
    let storage = storageWith 0UL 0UL (entsFrom 1UL [ 1UL; 2UL ])
    let fresh = logOver storage |> appended (entsFrom 3UL [ 3UL; 3UL ])
    let log = fresh
    Assert.True(RaftLog.hasNextUnstableEnts log)
    Assert.Equal<uint64 list>([ 3UL; 4UL ], ids (RaftLog.nextUnstableEnts log))
    let log = RaftLog.acceptUnstable log
    Assert.False(RaftLog.hasNextUnstableEnts log)
    Assert.True(RaftLog.hasNextOrInProgressUnstableEnts log)
    // A stale acknowledgement (the entry was replaced meanwhile) is ignored.
    let replaced = appended (entsFrom 4UL [ 4UL ]) log
    let after, lines = RaftLog.stableTo (EntryId.create 3UL 4UL) replaced
    Assert.Equal(replaced.Unstable, after.Unstable)
    Assert.Equal<string list>(
        [ "entry at (index,term)=(4,3) mismatched with entry at (4,4) in unstable log; ignoring" ],
        texts lines
    )
    Assert.Equal<uint64 list>([ 4UL ], ids (RaftLog.nextUnstableEnts replaced))
    let storage, written = persist storage fresh
    Assert.False(RaftLog.hasNextOrInProgressUnstableEnts written)
    Assert.Equal(5UL, written.Unstable.Offset)
    Assert.Equal(4UL, storage.LastIndex)
    Assert.Equal<uint64 list>([ 1UL; 2UL; 3UL; 4UL ], ids (RaftLog.allEntries written))

[<Fact>]
let ``slice reads storage then unstable entries within the byte limit`` () =
    // Snapshot at 3; stored 4..6; unstable 7..9; every entry 4 bytes.
    let log = logOver (storageWith 3UL 1UL (entsFrom 4UL [ 1UL; 1UL; 1UL ])) |> appended (entsFrom 7UL [ 2UL; 2UL; 2UL ])
    let slice lo hi max = RaftLog.slice lo hi max log |> Result.map ids
    Assert.Equal(Ok [ 4UL .. 9UL ], slice 4UL 10UL RaftLog.NoLimit)
    Assert.Equal(Ok [ 5UL; 6UL ], slice 5UL 8UL 8UL)
    Assert.Equal(Ok [ 6UL; 7UL ], slice 6UL 9UL 8UL)
    Assert.Equal(Ok [ 6UL; 7UL ], slice 6UL 9UL 11UL)
    Assert.Equal(Ok [ 6UL; 7UL; 8UL ], slice 6UL 9UL 12UL)
    Assert.Equal(Ok [ 6UL ], slice 6UL 9UL 0UL)
    Assert.Equal(Ok [ 7UL ], slice 7UL 9UL 5UL)
    Assert.Equal(Ok [ 4UL; 5UL; 6UL ], slice 4UL 9UL 12UL)
    Assert.Equal(Ok [], slice 6UL 6UL 0UL)
    Assert.Equal(Error StorageError.Compacted, slice 3UL 5UL RaftLog.NoLimit)
    panicsWith "slice[4,11) out of bound [4,9]" (fun () -> slice 4UL 11UL RaftLog.NoLimit)
    panicsWith "invalid slice 6 > 5" (fun () -> slice 6UL 5UL RaftLog.NoLimit)
    Assert.Equal(Ok [ 8UL; 9UL ], RaftLog.entries 8UL RaftLog.NoLimit log |> Result.map ids)
    Assert.Equal(Ok [], RaftLog.entries 10UL RaftLog.NoLimit log |> Result.map ids)

[<Fact>]
let ``slice drops a single unstable entry that would exceed the limit`` () =
    // Stored 4 (4 bytes), unstable 5 with 10 bytes of data (16 bytes).
    let big = Entry.create 1UL 5UL (Array.zeroCreate 10)
    let log = logOver (storageWith 3UL 1UL (entsFrom 4UL [ 1UL ])) |> appended [| big |]
    Assert.Equal(16UL, Codec.entrySize big)
    Assert.Equal(Ok [ 4UL ], RaftLog.slice 4UL 6UL 10UL log |> Result.map ids)
    Assert.Equal(Ok [ 4UL; 5UL ], RaftLog.slice 4UL 6UL 20UL log |> Result.map ids)
    Assert.Equal(Ok [ 5UL ], RaftLog.slice 5UL 6UL 1UL log |> Result.map ids)

[<Fact>]
let ``scan visits pages in order and stops when asked`` () =
    let log = logOver (storageWith 3UL 1UL (entsFrom 4UL [ 1UL; 1UL; 1UL ])) |> appended (entsFrom 7UL [ 2UL; 2UL ])
    let pages = System.Collections.Generic.List<uint64 list>()
    let r = RaftLog.scan 4UL 9UL 8UL (fun ents -> pages.Add(ids ents); false) log
    Assert.Equal(Ok false, r)
    Assert.Equal<uint64 list list>([ [ 4UL; 5UL ]; [ 6UL; 7UL ]; [ 8UL ] ], Seq.toList pages)
    let seen = System.Collections.Generic.List<uint64>()
    let stopped = RaftLog.scan 4UL 9UL 0UL (fun ents -> seen.AddRange(ids ents); ents[0].Index = 5UL) log
    Assert.Equal(Ok true, stopped)
    Assert.Equal<uint64 list>([ 4UL; 5UL ], Seq.toList seen)
    Assert.Equal(Error "requested index is unavailable due to compaction", RaftLog.scan 2UL 5UL 8UL (fun _ -> false) log)

[<Fact>]
let ``log slices are checked as etcd checks them`` () =
    Assert.Equal(Ok(), LogSlice.valid (LogSlice.create 3UL (EntryId.create 1UL 1UL) (entsFrom 2UL [ 1UL; 3UL ])))
    Assert.Equal(
        Error "leader term 3: entries {term:1 index:2} and {term:1 index:4} not consistent",
        LogSlice.valid (LogSlice.create 3UL (EntryId.create 1UL 1UL) [| ent 2UL 1UL; ent 4UL 1UL |])
    )
    Assert.Equal(
        Error "leader term 2: entry {term:3 index:2} has a newer term",
        LogSlice.valid (LogSlice.create 2UL (EntryId.create 1UL 1UL) (entsFrom 2UL [ 3UL ]))
    )
    Assert.Equal(4UL, LogSlice.lastIndex (LogSlice.create 2UL (EntryId.create 1UL 1UL) (entsFrom 2UL [ 1UL; 1UL; 2UL ])))

/// Operations of a follower's log: leader appends after the commit index, persistence
/// of the unstable tail, and commits.
type private LogOp =
    | LeaderAppend of back: int * count: int
    | Persist
    | CommitUpTo of ahead: int

[<Fact>]
let ``the log reads back what was appended, and slices are the size-limited prefix`` () =
    let opGen =
        Gen.frequency
            [ 3, Gen.map2 (fun b c -> LeaderAppend(b, c)) (Gen.choose (0, 3)) (Gen.choose (1, 3))
              2, Gen.constant Persist
              1, Gen.choose (0, 2) |> Gen.map CommitUpTo ]
    let caseGen =
        gen {
            let! ops = Gen.listOf opGen
            let! probes = Gen.listOfLength 5 (Gen.three (Gen.choose (0, 40)))
            return ops, probes
        }
    let prop (ops: LogOp list, probes: (int * int * int) list) =
        let step (log: RaftLog, storage: MemoryStorage, truth: Entry[], term: uint64) op =
            match op with
            | LeaderAppend(back, count) ->
                // New leaders never replace committed entries; data sizes vary the byte sizes.
                let from = uint64 (max (int log.Committed + 1) (truth.Length + 1 - back))
                let ents = Array.init count (fun i -> Entry.create (term + 1UL) (from + uint64 i) (Array.zeroCreate (i * 3)))
                let log, _ = RaftLog.append ents log
                log, storage, Array.append truth[.. int from - 2] ents, term + 1UL
            | Persist ->
                let storage, log = persist storage log
                log, storage, truth, term
            | CommitUpTo ahead ->
                RaftLog.commitTo (min (uint64 truth.Length) (log.Committed + uint64 ahead)) log, storage, truth, term
        let log, _, truth, _ = ((logOver MemoryStorage.empty, MemoryStorage.empty, [||], 0UL), ops) ||> List.fold step
        Assert.Equal<Entry[]>(truth, RaftLog.allEntries log)
        Assert.Equal(uint64 truth.Length, RaftLog.lastIndex log)
        for a, b, maxSize in probes do
            let lo, hi = 1 + min a b % (truth.Length + 1), 1 + max a b % (truth.Length + 1)
            let lo, hi = min lo hi, max lo hi
            let expected = Codec.limitSize (uint64 maxSize) truth[lo - 1 .. hi - 2]
            Assert.Equal<Entry[]>(expected, RaftLog.slice (uint64 lo) (uint64 hi) (uint64 maxSize) log |> ok)
    Check.One(replayable 4242UL, Prop.forAll (Arb.fromGen caseGen) prop)
