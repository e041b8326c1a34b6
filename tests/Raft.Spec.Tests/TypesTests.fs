module Raft.Spec.Tests.TypesTests

open Xunit
open FsCheck
open FsCheck.FSharp
open Raft.Spec

[<Fact>]
let ``message types keep raftpb's wire numbers`` () =
    // raftpb numbers its message types in this order; the wire form depends on it.
    Assert.Equal(0, MessageType.toWire MsgHup)
    Assert.Equal(3, MessageType.toWire MsgApp)
    Assert.Equal(17, MessageType.toWire MsgPreVote)
    Assert.Equal(19, MessageType.toWire MsgStorageAppend)
    Assert.Equal(23, MessageType.toWire MsgForgetLeader)
    Assert.Equal(24, MessageType.all.Length)

[<Fact>]
let ``every message type round-trips through its wire number`` () =
    for t in MessageType.all do
        Assert.Equal(Ok t, MessageType.ofWire (MessageType.toWire t))

[<Fact>]
let ``unknown wire numbers are refused, never mapped`` () =
    let prop (n: int32) =
        let r = MessageType.ofWire n
        (n >= 0 && n < 24) = Result.isOk r
    Check.One(Config.QuickThrowOnFailure.WithReplay(Some { Rnd = Rnd(1UL, 3UL); Size = None }), Prop.forAll (ArbMap.defaults |> ArbMap.arbitrary<int32>) prop)

[<Fact>]
let ``local and response classifications match etcd`` () =
    let locals = MessageType.all |> List.filter MessageType.isLocal |> set
    Assert.Equal<Set<MessageType>>(
        set [ MsgHup; MsgBeat; MsgUnreachable; MsgSnapStatus; MsgCheckQuorum
              MsgStorageAppend; MsgStorageAppendResp; MsgStorageApply; MsgStorageApplyResp ],
        locals)
    Assert.True(MessageType.isResponse MsgPreVoteResp)
    Assert.False(MessageType.isResponse MsgVote)
    Assert.Equal(Some MsgPreVoteResp, MessageType.voteResponse MsgPreVote)
    Assert.Equal(None, MessageType.voteResponse MsgApp)

[<Fact>]
let ``conf states compare as sets of members`` () =
    let a = { ConfState.empty with Voters = [ 3UL; 1UL; 2UL ]; Learners = [ 5UL ] }
    let b = { ConfState.empty with Voters = [ 1UL; 2UL; 3UL ]; Learners = [ 5UL ] }
    Assert.True(ConfState.equivalent a b)
    Assert.False(ConfState.equivalent a { b with AutoLeave = true })

[<Fact>]
let ``conf change text round-trips and names bad tokens`` () =
    let changes =
        [ { Type = ConfChangeAddNode; NodeId = 1UL }
          { Type = ConfChangeAddLearnerNode; NodeId = 2UL }
          { Type = ConfChangeRemoveNode; NodeId = 3UL }
          { Type = ConfChangeUpdateNode; NodeId = 14UL } ]
    Assert.Equal("v1 l2 r3 u14", ConfChangeText.format changes)
    Assert.Equal(Ok changes, ConfChangeText.parse "v1  l2 r3 u14")
    Assert.Equal(Ok [], ConfChangeText.parse "")
    Assert.Equal(Error "unknown conf change type 'x' in 'x1'", ConfChangeText.parse "v1 x1")
    Assert.Equal(Error "bad node id in 'vq'", ConfChangeText.parse "vq")
