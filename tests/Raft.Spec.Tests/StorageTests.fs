module Raft.Spec.Tests.StorageTests

open Xunit
open FsCheck
open FsCheck.FSharp
open Raft.Spec
open Raft.Spec.Tests.LogFixtures

/// Snapshot at 3 (term 3), then entries 4 and 5 of terms 4 and 5.
let private threeToFive () = storageWith 3UL 3UL (entsFrom 4UL [ 4UL; 5UL ])

let private stored (s: MemoryStorage) =
    s.StoredEntries |> Array.map (fun e -> e.Index, e.Term) |> Array.toList

[<Fact>]
let ``storage errors carry etcd's texts`` () =
    Assert.Equal("requested index is unavailable due to compaction", StorageError.message StorageError.Compacted)
    Assert.Equal("requested entry at index is unavailable", StorageError.message StorageError.Unavailable)
    Assert.Equal("requested index is older than the existing snapshot", StorageError.message StorageError.SnapOutOfDate)
    Assert.Equal("snapshot is temporarily unavailable", StorageError.message StorageError.SnapshotTemporarilyUnavailable)

[<Fact>]
let ``an empty storage has only the dummy entry at index 0`` () =
    let s = MemoryStorage.asStorage MemoryStorage.empty
    Assert.Equal(Ok 1UL, s.FirstIndex())
    Assert.Equal(Ok 0UL, s.LastIndex())
    Assert.Equal(Ok 0UL, s.Term 0UL)
    Assert.Equal(Error StorageError.Unavailable, s.Term 1UL)
    Assert.Equal(Error StorageError.Unavailable, s.Entries(1UL, 1UL, RaftLog.NoLimit))
    Assert.Equal(Error StorageError.Compacted, s.Entries(0UL, 1UL, RaftLog.NoLimit))
    Assert.Equal(Ok(HardState.empty, ConfState.empty), s.InitialState())

[<Fact>]
let ``term is known from the snapshot's index to the last index`` () =
    let s = threeToFive () :> IStorage
    Assert.Equal(Error StorageError.Compacted, s.Term 2UL)
    Assert.Equal(Ok 3UL, s.Term 3UL)
    Assert.Equal(Ok 4UL, s.Term 4UL)
    Assert.Equal(Ok 5UL, s.Term 5UL)
    Assert.Equal(Error StorageError.Unavailable, s.Term 6UL)
    Assert.Equal(Ok 4UL, s.FirstIndex())
    Assert.Equal(Ok 5UL, s.LastIndex())

[<Fact>]
let ``entries are refused at or before the snapshot, limited by size but never empty`` () =
    let s = threeToFive () :> IStorage
    let e4, e5 = ent 4UL 4UL, ent 5UL 5UL
    Assert.Equal(Error StorageError.Compacted, s.Entries(2UL, 6UL, RaftLog.NoLimit))
    Assert.Equal(Error StorageError.Compacted, s.Entries(3UL, 4UL, RaftLog.NoLimit))
    Assert.Equal(Ok [| e4 |], s.Entries(4UL, 5UL, RaftLog.NoLimit))
    Assert.Equal(Ok [| e4; e5 |], s.Entries(4UL, 6UL, RaftLog.NoLimit))
    // Each entry encodes in 4 bytes: a limit of 0 still yields the first entry.
    Assert.Equal(Ok [| e4 |], s.Entries(4UL, 6UL, 0UL))
    Assert.Equal(Ok [| e4 |], s.Entries(4UL, 6UL, 7UL))
    Assert.Equal(Ok [| e4; e5 |], s.Entries(4UL, 6UL, 8UL))
    Assert.Equal(Ok [||], s.Entries(4UL, 4UL, RaftLog.NoLimit))
    panicsWith "entries' hi(7) is out of bound lastindex(5)" (fun () -> s.Entries(4UL, 7UL, RaftLog.NoLimit))

[<Fact>]
let ``compact keeps the compacted entry's index and term as the dummy`` () =
    let s = threeToFive ()
    Assert.Equal(Error StorageError.Compacted, MemoryStorage.compact 2UL s)
    Assert.Equal(Error StorageError.Compacted, MemoryStorage.compact 3UL s)
    let c = MemoryStorage.compact 4UL s |> ok
    Assert.Equal(5UL, c.FirstIndex)
    Assert.Equal(5UL, c.LastIndex)
    Assert.Equal(Ok 4UL, (c :> IStorage).Term 4UL)
    Assert.Equal(Error StorageError.Compacted, (c :> IStorage).Term 3UL)
    Assert.Equal<(uint64 * uint64) list>([ 5UL, 5UL ], stored c)
    let all = MemoryStorage.compact 5UL s |> ok
    Assert.Equal(6UL, all.FirstIndex)
    Assert.Equal(5UL, all.LastIndex)
    panicsWith "compact 6 is out of bound lastindex(5)" (fun () -> MemoryStorage.compact 6UL s)
    // The original value is untouched.
    Assert.Equal(4UL, s.FirstIndex)

[<Fact>]
let ``createSnapshot takes the entry's term and the given or previous conf state`` () =
    let cs = { ConfState.empty with Voters = [ 1UL; 2UL; 3UL ] }
    let s = threeToFive ()
    Assert.Equal(Error StorageError.SnapOutOfDate, MemoryStorage.createSnapshot 3UL (Some cs) [||] s)
    let s4, snap = MemoryStorage.createSnapshot 4UL (Some cs) [| 7uy |] s |> ok
    Assert.Equal(4UL, snap.Metadata.Index)
    Assert.Equal(4UL, snap.Metadata.Term)
    Assert.Equal(cs, snap.Metadata.ConfState)
    Assert.Equal<byte[]>([| 7uy |], snap.Data)
    Assert.Equal(Ok snap, (s4 :> IStorage).Snapshot())
    Assert.Equal(Ok(HardState.empty, cs), (s4 :> IStorage).InitialState())
    // Creating a snapshot does not compact.
    Assert.Equal(4UL, s4.FirstIndex)
    let _, snap5 = MemoryStorage.createSnapshot 5UL None [||] s4 |> ok
    Assert.Equal(cs, snap5.Metadata.ConfState)
    Assert.Equal(5UL, snap5.Metadata.Term)
    Assert.Equal(Error StorageError.SnapOutOfDate, MemoryStorage.createSnapshot 4UL None [||] s4 |> Result.map fst)
    panicsWith "snapshot 6 is out of bound lastindex(5)" (fun () -> MemoryStorage.createSnapshot 6UL None [||] s)

[<Fact>]
let ``applySnapshot replaces everything and refuses older snapshots`` () =
    let s = threeToFive ()
    Assert.Equal(Error StorageError.SnapOutOfDate, MemoryStorage.applySnapshot (snapAt 3UL 3UL) s)
    Assert.Equal(Error StorageError.SnapOutOfDate, MemoryStorage.applySnapshot (snapAt 2UL 2UL) s)
    let r = MemoryStorage.applySnapshot (snapAt 8UL 6UL) s |> ok
    Assert.Equal(9UL, r.FirstIndex)
    Assert.Equal(8UL, r.LastIndex)
    Assert.Equal(Ok 6UL, (r :> IStorage).Term 8UL)
    Assert.Empty(r.StoredEntries)
    // Bootstrap may install an index-0 snapshot carrying only a conf state, over the empty one.
    let cs = { ConfState.empty with Voters = [ 1UL ] }
    let boot = { Snapshot.empty with Metadata = { Snapshot.empty.Metadata with ConfState = cs } }
    let b = MemoryStorage.applySnapshot boot MemoryStorage.empty |> ok
    Assert.Equal(Ok(HardState.empty, cs), (b :> IStorage).InitialState())
    Assert.Equal(1UL, b.FirstIndex)

[<Fact>]
let ``append truncates conflicting entries and skips compacted ones`` () =
    let s = threeToFive ()
    let check (incoming: Entry[]) (expected: (uint64 * uint64) list) =
        Assert.Equal<(uint64 * uint64) list>(expected, stored (MemoryStorage.append incoming s))
    check (entsFrom 3UL [ 3UL; 4UL; 5UL ]) [ 4UL, 4UL; 5UL, 5UL ]
    check (entsFrom 3UL [ 3UL; 6UL; 6UL ]) [ 4UL, 6UL; 5UL, 6UL ]
    check (entsFrom 3UL [ 3UL; 4UL; 5UL; 5UL ]) [ 4UL, 4UL; 5UL, 5UL; 6UL, 5UL ]
    check (entsFrom 2UL [ 3UL; 3UL; 5UL ]) [ 4UL, 5UL ]
    check (entsFrom 4UL [ 5UL ]) [ 4UL, 5UL ]
    check (entsFrom 5UL [ 6UL ]) [ 4UL, 4UL; 5UL, 6UL ]
    check (entsFrom 6UL [ 5UL ]) [ 4UL, 4UL; 5UL, 5UL; 6UL, 5UL ]
    check (entsFrom 1UL [ 1UL; 2UL ]) [ 4UL, 4UL; 5UL, 5UL ]
    check [||] [ 4UL, 4UL; 5UL, 5UL ]
    panicsWith "missing log entry [last: 5, append at: 7]" (fun () -> MemoryStorage.append (entsFrom 7UL [ 5UL ]) s)
    // Writes never disturb the value they started from.
    Assert.Equal<(uint64 * uint64) list>([ 4UL, 4UL; 5UL, 5UL ], stored s)

[<Fact>]
let ``hard state is kept as given`` () =
    let hs = { Term = 3UL; Vote = 2UL; Commit = 1UL }
    let s = MemoryStorage.empty |> MemoryStorage.setHardState hs
    Assert.Equal(hs, MemoryStorage.hardState s)
    Assert.Equal(Ok(hs, ConfState.empty), (s :> IStorage).InitialState())

/// An operation on a storage and on a model (the terms of indexes first..last).
type private StorageOp =
    | Append of fromBack: int * terms: uint64 list
    | Compact of fromFront: int

[<Fact>]
let ``appended entries read back as the model log, through compactions`` () =
    let opGen =
        Gen.oneof
            [ gen {
                  let! back = Gen.choose (0, 4)
                  let! n = Gen.choose (0, 4)
                  let! terms = Gen.listOfLength n (Gen.choose (1, 9) |> Gen.map uint64)
                  return Append(back, terms)
              }
              Gen.choose (0, 3) |> Gen.map Compact ]
    let prop (ops: StorageOp list) =
        // The model: the snapshot index and the terms of the entries after it.
        let step (s: MemoryStorage, snapIndex: uint64, terms: uint64 list) op =
            match op with
            | Append(back, newTerms) ->
                let last = snapIndex + uint64 terms.Length
                let from = max 1UL (last + 1UL - uint64 (min back (int last)))
                let s = MemoryStorage.append (entsFrom from newTerms) s
                let keptBefore = int (max snapIndex (from - 1UL) - snapIndex)
                let skipped = int (snapIndex + 1UL - min (snapIndex + 1UL) from)
                let added = if skipped >= newTerms.Length then [] else List.skip skipped newTerms
                let terms =
                    if newTerms.Length <= skipped then terms
                    else List.truncate keptBefore terms @ added
                s, snapIndex, terms
            | Compact k ->
                let k = min k terms.Length
                if k = 0 then
                    Assert.Equal(Error StorageError.Compacted, MemoryStorage.compact snapIndex s |> Result.map ignore)
                    s, snapIndex, terms
                else (MemoryStorage.compact (snapIndex + uint64 k) s |> ok), snapIndex + uint64 k, List.skip k terms
        let s, snapIndex, terms = ((MemoryStorage.empty, 0UL, []), ops) ||> List.fold step
        let st = s :> IStorage
        let expected = entsFrom (snapIndex + 1UL) terms
        Assert.Equal(Ok(snapIndex + 1UL), st.FirstIndex())
        Assert.Equal(Ok(snapIndex + uint64 terms.Length), st.LastIndex())
        if terms.IsEmpty then Assert.Empty(s.StoredEntries)
        else Assert.Equal<Entry[]>(expected, st.Entries(snapIndex + 1UL, snapIndex + 1UL + uint64 terms.Length, RaftLog.NoLimit) |> ok)
        // The same state rebuilt from its persisted parts (the log compacted past the snapshot).
        let offsetTerm = st.Term snapIndex |> ok
        let restored =
            MemoryStorage.restore s.HardState (MemoryStorage.snapshot s) snapIndex offsetTerm s.StoredEntries |> ok
        Assert.Equal(s, restored)
    Check.One(replayable 20240611UL, Prop.forAll (Arb.fromGen (Gen.listOf opGen)) prop)

[<Fact>]
let ``restore rebuilds a storage whose snapshot was taken without compacting`` () =
    let s = MemoryStorage.empty |> MemoryStorage.append (entsFrom 1UL [ 1UL; 2UL; 2UL ]) |> MemoryStorage.setHardState { Term = 2UL; Vote = 1UL; Commit = 3UL }
    let s, snap = MemoryStorage.createSnapshot 2UL (Some { ConfState.empty with Voters = [ 1UL ] }) [| 7uy |] s |> ok
    let restored = MemoryStorage.restore s.HardState snap 0UL 0UL s.StoredEntries |> ok
    Assert.Equal(s, restored)
    Assert.Equal(Ok 1UL, (restored :> IStorage).FirstIndex())
    Assert.Equal(Ok snap, (restored :> IStorage).Snapshot())

[<Fact>]
let ``restore refuses parts no storage can hold, saying why`` () =
    let restore snap offset offsetTerm ents =
        match MemoryStorage.restore HardState.empty snap offset offsetTerm ents with
        | Ok _ -> "ok"
        | Error e -> e
    Assert.Equal("ok", restore (snapAt 3UL 3UL) 3UL 3UL (entsFrom 4UL [ 4UL; 5UL ]))
    Assert.Equal("ok", restore (snapAt 3UL 3UL) 5UL 4UL (entsFrom 6UL [ 4UL ]))
    Assert.Equal(
        "entries are not contiguous: expected index 5, found 6 (first index 4)",
        restore (snapAt 3UL 3UL) 3UL 3UL [| ent 4UL 4UL; ent 6UL 4UL |]
    )
    Assert.Equal(
        "entries are not contiguous: expected index 4, found 5 (first index 4)",
        restore (snapAt 3UL 3UL) 3UL 3UL (entsFrom 5UL [ 4UL ])
    )
    Assert.Equal("snapshot at index 9 is beyond the last index 5", restore (snapAt 9UL 3UL) 3UL 3UL (entsFrom 4UL [ 4UL; 5UL ]))
    Assert.Equal(
        "snapshot at index 3 has term 3 but the log has term 2 there",
        restore (snapAt 3UL 3UL) 3UL 2UL (entsFrom 4UL [ 4UL ])
    )
    Assert.Equal(
        "snapshot at index 4 has term 3 but the log has term 4 there",
        restore (snapAt 4UL 3UL) 3UL 3UL (entsFrom 4UL [ 4UL ])
    )

[<Fact>]
let ``storages derived from one value by appends, compactions and truncations never see each other's entries`` () =
    let rnd = System.Random 20261121
    let terms n = List.init n (fun _ -> uint64 (rnd.Next(1, 9)))
    // A family of storages, each derived from a random earlier one; every one must still
    // hold exactly what it held when it was made, whatever was derived from it later.
    let family = ResizeArray<MemoryStorage * (uint64 * uint64) list>()
    family.Add(MemoryStorage.empty, [])
    for _ in 1..400 do
        let s, _ = family[rnd.Next family.Count]
        let next =
            if rnd.Next 4 = 0 && s.LastIndex > s.FirstIndex then
                MemoryStorage.compact (s.FirstIndex + uint64 (rnd.Next(int (s.LastIndex - s.FirstIndex)))) s |> ok
            else
                let from = s.LastIndex + 1UL - uint64 (rnd.Next(int (min 3UL (s.LastIndex - s.FirstIndex + 1UL)) + 1))
                MemoryStorage.append (entsFrom (max from s.FirstIndex) (terms (rnd.Next(1, 4)))) s
        family.Add(next, stored next)
        for s, expected in family do
            Assert.Equal<(uint64 * uint64) list>(expected, stored s)
