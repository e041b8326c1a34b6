/// The protobuf codec against raftpb's field numbers and presence rules, and round trips.
module Raft.Spec.Tests.CodecTests

open Xunit
open FsCheck
open FsCheck.FSharp
open Raft.Spec

let private hex (b: byte[]) = System.Convert.ToHexString b

[<Fact>]
let ``v1 conf change: type (2) and node id (3) always, id (1) and context (4) when set`` () =
    let cc = { Type = ConfChangeAddNode; NodeId = 2UL; Context = [||]; Id = 0UL }
    Assert.Equal("10001802", hex (Codec.encodeConfChange cc))
    let cc = { cc with Type = ConfChangeAddLearnerNode; NodeId = 300UL; Id = 7UL; Context = [| 0xAAuy |] }
    Assert.Equal("0807100318AC022201AA", hex (Codec.encodeConfChange cc))

[<Fact>]
let ``v2 conf change: transition (1) always, changes (2) as nested messages`` () =
    let cc =
        { Transition = ConfChangeTransitionAuto
          Changes = [ { Type = ConfChangeAddNode; NodeId = 2UL }; { Type = ConfChangeAddLearnerNode; NodeId = 3UL } ]
          Context = [||] }
    Assert.Equal("0800120408001002120408031003", hex (Codec.encodeConfChangeV2 cc))
    // The explicit leave-joint change of etcd's tests: just the transition.
    Assert.Equal("0800", hex (Codec.encodeConfChangeV2 { cc with Changes = [] }))
    Assert.Equal("08021A0178", hex (Codec.encodeConfChangeV2 { cc with Changes = []; Transition = ConfChangeTransitionJointExplicit; Context = [| 0x78uy |] }))

[<Fact>]
let ``entry encoding and size`` () =
    let e = Entry.create 1UL 2UL [| 0x61uy; 0x62uy |]
    Assert.Equal("100118022202" + "6162", hex (Codec.encodeEntry e))
    Assert.Equal(8UL, Codec.entrySize e)
    // An empty normal entry has neither type nor data: 4 bytes.
    Assert.Equal(4UL, Codec.entrySize (Entry.create 1UL 1UL [||]))
    // Conf change entries carry their type (field 1).
    Assert.Equal(6UL, Codec.entrySize { Entry.create 1UL 1UL [||] with Type = EntryConfChangeV2 })
    Assert.Equal(5UL, Codec.entrySize (Entry.create 1UL 300UL [||]))
    Assert.Equal(2UL, Codec.payloadSize e)

[<Fact>]
let ``limitSize keeps at least one entry and stops before exceeding`` () =
    let ents = [| for i in 1UL .. 5UL -> Entry.create 1UL i [| 1uy |] |] // 7 bytes each
    Assert.Equal(1, (Codec.limitSize 0UL ents).Length)
    Assert.Equal(2, (Codec.limitSize 14UL ents).Length)
    Assert.Equal(2, (Codec.limitSize 20UL ents).Length)
    Assert.Equal(5, (Codec.limitSize System.UInt64.MaxValue ents).Length)

[<Fact>]
let ``decoding rejects truncated input and skips unknown fields`` () =
    Assert.True(Result.isError (Codec.decodeConfChange [| 0x10uy |]))
    // Field 9 (varint) is unknown: skipped.
    match Codec.decodeConfChange [| 0x48uy; 0x01uy; 0x18uy; 0x05uy |] with
    | Ok cc -> Assert.Equal(5UL, cc.NodeId)
    | Error e -> failwith e

[<Fact>]
let ``empty data is the empty leave-joint ConfChangeV2`` () =
    match Codec.confChangeOfEntry { Entry.create 1UL 1UL [||] with Type = EntryConfChangeV2 } with
    | Ok(Some(ConfChangeV2Change cc)) ->
        Assert.Empty(cc.Changes)
        Assert.Equal(ConfChangeTransitionAuto, cc.Transition)
    | other -> failwithf "unexpected %A" other

let private genChangeType =
    Gen.elements [ ConfChangeAddNode; ConfChangeRemoveNode; ConfChangeUpdateNode; ConfChangeAddLearnerNode ]

let private genBytes = Gen.arrayOf (Gen.choose (0, 255) |> Gen.map byte)
let private genU64 = Gen.oneof [ Gen.choose (0, 300) |> Gen.map uint64; ArbMap.defaults |> ArbMap.generate<uint64> ]

[<Fact>]
let ``round trips of conf changes and entries (seed 20240611)`` () =
    let genV1 =
        gen {
            let! t = genChangeType
            let! n = genU64
            let! id = genU64
            let! ctx = genBytes
            return { Type = t; NodeId = n; Id = id; Context = ctx }
        }
    let genV2 =
        gen {
            let! tr = Gen.elements [ ConfChangeTransitionAuto; ConfChangeTransitionJointImplicit; ConfChangeTransitionJointExplicit ]
            let! changes = Gen.listOf (Gen.map2 (fun t n -> { Type = t; NodeId = n }) genChangeType genU64)
            let! ctx = genBytes
            return { Transition = tr; Changes = changes; Context = ctx }
        }
    let genEntry =
        gen {
            let! t = genU64
            let! i = genU64
            let! ty = Gen.elements [ EntryNormal; EntryConfChange; EntryConfChangeV2 ]
            let! d = genBytes
            return { Term = t; Index = i; Type = ty; Data = d }
        }
    let config = Tests.LogFixtures.replayable 20240611UL
    Check.One(config, Prop.forAll (Arb.fromGen genV1) (fun cc -> Codec.decodeConfChange (Codec.encodeConfChange cc) = Ok cc))
    Check.One(config, Prop.forAll (Arb.fromGen genV2) (fun cc -> Codec.decodeConfChangeV2 (Codec.encodeConfChangeV2 cc) = Ok cc))
    Check.One(
        config,
        Prop.forAll (Arb.fromGen genEntry) (fun e ->
            let bytes = Codec.encodeEntry e
            Codec.decodeEntry bytes = Ok e && uint64 bytes.Length = Codec.entrySize e)
    )
