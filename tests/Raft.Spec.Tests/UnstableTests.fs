module Raft.Spec.Tests.UnstableTests

open Xunit
open FsCheck
open FsCheck.FSharp
open Raft.Spec
open Raft.Spec.Tests.LogFixtures

let private unstable (snapshot: Snapshot option) (offset: uint64) (terms: uint64 list) (inProgress: uint64) : Unstable =
    { Snapshot = snapshot
      Entries = entsFrom offset terms
      Offset = offset
      SnapshotInProgress = false
      OffsetInProgress = inProgress }

[<Fact>]
let ``first index comes only from the unstable snapshot`` () =
    Assert.Equal(None, Unstable.maybeFirstIndex (unstable None 5UL [ 1UL ] 5UL))
    Assert.Equal(Some 5UL, Unstable.maybeFirstIndex (unstable (Some(snapAt 4UL 1UL)) 5UL [ 1UL ] 5UL))
    Assert.Equal(Some 5UL, Unstable.maybeFirstIndex (unstable (Some(snapAt 4UL 1UL)) 5UL [] 5UL))

[<Fact>]
let ``last index comes from the entries, else the snapshot`` () =
    Assert.Equal(Some 6UL, Unstable.maybeLastIndex (unstable None 5UL [ 1UL; 1UL ] 5UL))
    Assert.Equal(Some 5UL, Unstable.maybeLastIndex (unstable (Some(snapAt 4UL 1UL)) 5UL [ 1UL ] 5UL))
    Assert.Equal(Some 4UL, Unstable.maybeLastIndex (unstable (Some(snapAt 4UL 1UL)) 5UL [] 5UL))
    Assert.Equal(None, Unstable.maybeLastIndex (Unstable.create 0UL))

[<Fact>]
let ``term is known for the unstable entries and the snapshot's index only`` () =
    let plain = unstable None 5UL [ 1UL ] 5UL
    Assert.Equal(Some 1UL, Unstable.maybeTerm 5UL plain)
    Assert.Equal(None, Unstable.maybeTerm 6UL plain)
    Assert.Equal(None, Unstable.maybeTerm 4UL plain)
    let withSnap = unstable (Some(snapAt 4UL 1UL)) 5UL [ 1UL ] 5UL
    Assert.Equal(Some 1UL, Unstable.maybeTerm 5UL withSnap)
    Assert.Equal(Some 1UL, Unstable.maybeTerm 4UL withSnap)
    Assert.Equal(None, Unstable.maybeTerm 3UL withSnap)
    Assert.Equal(None, Unstable.maybeTerm 6UL withSnap)
    let onlySnap = unstable (Some(snapAt 4UL 1UL)) 5UL [] 5UL
    Assert.Equal(Some 1UL, Unstable.maybeTerm 4UL onlySnap)
    Assert.Equal(None, Unstable.maybeTerm 5UL onlySnap)
    Assert.Equal(None, Unstable.maybeTerm 5UL (Unstable.create 5UL))

[<Fact>]
let ``restore drops the entries and starts after the snapshot`` () =
    let u = { unstable (Some(snapAt 4UL 1UL)) 5UL [ 1UL ] 6UL with SnapshotInProgress = true }
    let s = snapAt 6UL 2UL
    let r = Unstable.restore s u
    Assert.Equal(7UL, r.Offset)
    Assert.Equal(7UL, r.OffsetInProgress)
    Assert.Empty(r.Entries)
    Assert.Equal(Some s, r.Snapshot)
    Assert.False(r.SnapshotInProgress)

[<Fact>]
let ``next entries are those not yet in progress`` () =
    Assert.Equal<Entry[]>(entsFrom 5UL [ 1UL; 1UL ], Unstable.nextEntries (unstable None 5UL [ 1UL; 1UL ] 5UL))
    Assert.Equal<Entry[]>(entsFrom 6UL [ 1UL ], Unstable.nextEntries (unstable None 5UL [ 1UL; 1UL ] 6UL))
    Assert.Empty(Unstable.nextEntries (unstable None 5UL [ 1UL; 1UL ] 7UL))
    Assert.Empty(Unstable.nextEntries (Unstable.create 5UL))

[<Fact>]
let ``next snapshot is the snapshot not yet in progress`` () =
    let u = unstable (Some(snapAt 4UL 1UL)) 5UL [] 5UL
    Assert.Equal(Some(snapAt 4UL 1UL), Unstable.nextSnapshot u)
    Assert.Equal(None, Unstable.nextSnapshot { u with SnapshotInProgress = true })
    Assert.Equal(None, Unstable.nextSnapshot (Unstable.create 5UL))

[<Fact>]
let ``accepting marks all current entries and the snapshot in progress`` () =
    let a = Unstable.acceptInProgress (unstable None 5UL [ 1UL; 1UL ] 5UL)
    Assert.Equal(7UL, a.OffsetInProgress)
    Assert.False(a.SnapshotInProgress)
    let b = Unstable.acceptInProgress (unstable (Some(snapAt 4UL 1UL)) 5UL [] 5UL)
    Assert.Equal(5UL, b.OffsetInProgress)
    Assert.True(b.SnapshotInProgress)
    Assert.Empty(Unstable.nextEntries a)
    Assert.Equal(None, Unstable.nextSnapshot b)
    // Entries added afterwards are handed out next time.
    let c, _ = Unstable.truncateAndAppend (entsFrom 7UL [ 2UL ]) a
    Assert.Equal<Entry[]>(entsFrom 7UL [ 2UL ], Unstable.nextEntries c)

[<Fact>]
let ``stableTo drops written entries and ignores stale reports`` () =
    let u = unstable None 5UL [ 1UL; 1UL; 2UL ] 7UL
    let s, lines = Unstable.stableTo (EntryId.create 1UL 5UL) u
    Assert.Empty(lines)
    Assert.Equal(6UL, s.Offset)
    Assert.Equal(7UL, s.OffsetInProgress)
    Assert.Equal<Entry[]>(entsFrom 6UL [ 1UL; 2UL ], s.Entries)
    // Stabilizing past the in-progress mark moves it along.
    let all, _ = Unstable.stableTo (EntryId.create 2UL 7UL) u
    Assert.Equal(8UL, all.Offset)
    Assert.Equal(8UL, all.OffsetInProgress)
    Assert.Empty(all.Entries)
    let ignored (id: EntryId) (u: Unstable) (text: string) =
        let r, lines = Unstable.stableTo id u
        Assert.Equal(u, r)
        Assert.Equal<string list>([ text ], texts lines)
        Assert.True(lines |> List.forall (fun l -> l.Level = LogLevel.Info))
    ignored (EntryId.create 1UL 8UL) u "entry at index 8 missing from unstable log; ignoring"
    ignored (EntryId.create 1UL 4UL) u "entry at index 4 missing from unstable log; ignoring"
    ignored (EntryId.create 1UL 7UL) u "entry at (index,term)=(7,1) mismatched with entry at (7,2) in unstable log; ignoring"
    let withSnap = unstable (Some(snapAt 4UL 1UL)) 5UL [ 1UL ] 5UL
    ignored (EntryId.create 1UL 4UL) withSnap "entry at index 4 matched unstable snapshot; ignoring"

[<Fact>]
let ``stableSnapTo clears only the matching snapshot`` () =
    let u = { unstable (Some(snapAt 4UL 1UL)) 5UL [] 5UL with SnapshotInProgress = true }
    Assert.Equal(u, Unstable.stableSnapTo 3UL u)
    let s = Unstable.stableSnapTo 4UL u
    Assert.Equal(None, s.Snapshot)
    Assert.False(s.SnapshotInProgress)

[<Fact>]
let ``truncateAndAppend appends, replaces or truncates, keeping in-progress marks consistent`` () =
    let u = unstable None 5UL [ 1UL; 1UL; 1UL ] 7UL
    // Directly after the last entry.
    let a, la = Unstable.truncateAndAppend (entsFrom 8UL [ 1UL ]) u
    Assert.Empty(la)
    Assert.Equal<Entry[]>(entsFrom 5UL [ 1UL; 1UL; 1UL; 1UL ], a.Entries)
    Assert.Equal(7UL, a.OffsetInProgress)
    // At or before the offset: everything is replaced and nothing is in progress.
    let r, lr = Unstable.truncateAndAppend (entsFrom 4UL [ 2UL; 2UL ]) u
    Assert.Equal<string list>([ "replace the unstable entries from index 4" ], texts lr)
    Assert.Equal(4UL, r.Offset)
    Assert.Equal(4UL, r.OffsetInProgress)
    Assert.Equal<Entry[]>(entsFrom 4UL [ 2UL; 2UL ], r.Entries)
    let r5, _ = Unstable.truncateAndAppend (entsFrom 5UL [ 2UL ]) u
    Assert.Equal(5UL, r5.OffsetInProgress)
    Assert.Equal<Entry[]>(entsFrom 5UL [ 2UL ], r5.Entries)
    // Inside the tail: the prefix stays, and stays in progress only below the new entries.
    let t, lt = Unstable.truncateAndAppend (entsFrom 6UL [ 2UL ]) u
    Assert.Equal<string list>([ "truncate the unstable entries before index 6" ], texts lt)
    Assert.Equal<Entry[]>(entsFrom 5UL [ 1UL; 2UL ], t.Entries)
    Assert.Equal(5UL, t.Offset)
    Assert.Equal(6UL, t.OffsetInProgress)
    let t7, _ = Unstable.truncateAndAppend (entsFrom 7UL [ 2UL; 2UL ]) u
    Assert.Equal(7UL, t7.OffsetInProgress)
    Assert.Equal<Entry[]>(entsFrom 5UL [ 1UL; 1UL; 2UL; 2UL ], t7.Entries)
    panicsWith "unstable.slice[5,10) out of bound [5,8]" (fun () -> Unstable.truncateAndAppend (entsFrom 10UL [ 2UL ]) u)

[<Fact>]
let ``slice checks its bounds`` () =
    let u = unstable None 5UL [ 1UL; 2UL; 3UL ] 5UL
    Assert.Equal<Entry[]>(entsFrom 6UL [ 2UL; 3UL ], Unstable.slice 6UL 8UL u)
    Assert.Empty(Unstable.slice 8UL 8UL u)
    panicsWith "invalid unstable.slice 7 > 6" (fun () -> Unstable.slice 7UL 6UL u)
    panicsWith "unstable.slice[4,6) out of bound [5,8]" (fun () -> Unstable.slice 4UL 6UL u)
    panicsWith "unstable.slice[6,9) out of bound [5,8]" (fun () -> Unstable.slice 6UL 9UL u)

/// What the application and the leader do to the unstable tail in the async-write model.
type private WriteOp =
    /// Entries of a new term from index (last + 1 - back), as a new leader would send.
    | AppendFrom of back: int * count: int
    /// Hand the next entries out for writing.
    | Accept
    /// The oldest pending write completes and is acknowledged.
    | Complete

[<Fact>]
let ``stableTo never loses an entry that is not in storage`` () =
    let opGen =
        Gen.frequency
            [ 3, Gen.map2 (fun b c -> AppendFrom(b, c)) (Gen.choose (0, 3)) (Gen.choose (1, 3))
              2, Gen.constant Accept
              2, Gen.constant Complete ]
    let prop (ops: WriteOp list) =
        // truth: the log as the leaders made it; storage: what writes reached the disk;
        // pending: handed-out batches in write order. Terms grow with every append, so an
        // (index, term) pair names one entry forever, as in Raft.
        let step (u: Unstable, storage: MemoryStorage, pending: Entry[] list, truth: Entry[], term: uint64) op =
            match op with
            | AppendFrom(back, count) ->
                let from = uint64 (max 1 (truth.Length + 1 - back))
                let ents = Array.init count (fun i -> ent (from + uint64 i) (term + 1UL))
                let u, _ = Unstable.truncateAndAppend ents u
                u, storage, pending, Array.append truth[.. int from - 2] ents, term + 1UL
            | Accept ->
                let batch = Unstable.nextEntries u
                let pending = if batch.Length = 0 then pending else pending @ [ batch ]
                Unstable.acceptInProgress u, storage, pending, truth, term
            | Complete ->
                match pending with
                | [] -> u, storage, pending, truth, term
                | batch :: rest ->
                    let storage = MemoryStorage.append batch storage
                    let u, _ = Unstable.stableTo (EntryId.ofEntry batch[batch.Length - 1]) u
                    u, storage, rest, truth, term
        let check (u: Unstable, storage: MemoryStorage, _, truth: Entry[], _) =
            Assert.True(u.Offset <= u.OffsetInProgress && u.OffsetInProgress <= u.Offset + uint64 u.Entries.Length)
            // Below the offset, storage must hold exactly the true entries; from it on,
            // the unstable tail must.
            let stable = int u.Offset - 1
            Assert.True(storage.LastIndex >= uint64 stable, "storage lacks entries below the unstable offset")
            Assert.Equal<Entry[]>(truth[.. stable - 1], storage.StoredEntries[.. stable - 1])
            Assert.Equal<Entry[]>(truth[stable..], u.Entries)
        ((Unstable.create 1UL, MemoryStorage.empty, [], [||], 0UL), ops)
        ||> List.scan step
        |> List.iter check
    Check.One(replayable 77UL, Prop.forAll (Arb.fromGen (Gen.listOf opGen)) prop)
