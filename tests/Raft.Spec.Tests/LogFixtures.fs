/// Small builders shared by the storage, unstable and log tests.
module Raft.Spec.Tests.LogFixtures

open System
open Xunit
open FsCheck
open Raft.Spec

/// A normal entry without data: its encoded size is 4 bytes for small terms and indexes.
let ent (index: uint64) (term: uint64) : Entry = Entry.create term index [||]

/// Entries with consecutive indexes from first, one per term given.
let entsFrom (first: uint64) (terms: uint64 list) : Entry[] =
    terms |> List.mapi (fun i t -> ent (first + uint64 i) t) |> List.toArray

let snapAt (index: uint64) (term: uint64) : Snapshot =
    { Snapshot.empty with Metadata = { Snapshot.empty.Metadata with Index = index; Term = term } }

let ok (r: Result<'a, 'e>) : 'a =
    match r with
    | Ok v -> v
    | Error e -> failwithf "expected Ok, got Error %A" e

/// A storage holding the snapshot (index, term) followed by the entries.
let storageWith (snapIndex: uint64) (snapTerm: uint64) (ents: Entry[]) : MemoryStorage =
    MemoryStorage.empty |> MemoryStorage.applySnapshot (snapAt snapIndex snapTerm) |> ok |> MemoryStorage.append ents

/// The call fails as etcd panics: with exactly this message.
let panicsWith (message: string) (f: unit -> 'a) =
    let ex = Assert.Throws<InvalidOperationException>(fun () -> f () |> ignore)
    Assert.Equal(message, ex.Message)

let texts (lines: LogLine list) = lines |> List.map (fun l -> l.Text)

/// FsCheck settings for a replayable run: the seed is fixed and FsCheck prints it on failure.
let replayable (seed: uint64) =
    FsCheck.Config.QuickThrowOnFailure.WithReplay(Some { Rnd = Rnd(seed, 3UL); Size = None }).WithMaxTest(300)
