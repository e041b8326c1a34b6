module Raft.Spec.Tests.RawNodeTests

open System.Text
open Xunit
open Raft.Spec

let private storageOf (voters: uint64 list) (index: uint64) : MemoryStorage =
    let snap =
        { Data = [||]
          Metadata = { ConfState = { ConfState.empty with Voters = voters }; Index = index; Term = 1UL } }
    match MemoryStorage.applySnapshot snap MemoryStorage.empty with
    | Ok s -> s
    | Error e -> failwith (StorageError.message e)

let private config (id: uint64) (storage: MemoryStorage) (applied: uint64) : Config =
    { Config.create id (MemoryStorage.asStorage storage) with
        ElectionTick = 10
        HeartbeatTick = 1
        Applied = applied }

let private create (cfg: Config) =
    match RawNode.create cfg with
    | Ok rn -> rn
    | Error e -> failwith e

/// Persists a Ready into the storage, hands raft the new storage and advances: the
/// synchronous Ready loop of an application.
let private handle (storage: MemoryStorage) (rn: RawNode) : MemoryStorage * RawNode * Ready =
    let rn, rd = RawNode.ready rn
    let s = rd.HardState |> Option.fold (fun s hs -> MemoryStorage.setHardState hs s) storage
    let s =
        match rd.Snapshot with
        | Some snap -> (match MemoryStorage.applySnapshot snap s with Ok s -> s | Error e -> failwith (StorageError.message e))
        | None -> MemoryStorage.append rd.Entries s
    let rn = rn |> RawNode.withStorage (MemoryStorage.asStorage s) |> RawNode.advance
    s, rn, rd

[<Fact>]
let ``a restarted node has no work until something happens`` () =
    let s = storageOf [ 1UL ] 10UL
    let rn = create (config 1UL s 10UL)
    Assert.False(RawNode.hasReady rn)
    let _, rd = RawNode.ready rn
    Assert.Equal("<empty Ready>", RawNode.describeReady rd)

[<Fact>]
let ``a single voter elects itself and commits its empty entry`` () =
    let s = storageOf [ 1UL ] 10UL
    let rn = create (config 1UL s 10UL)
    let rn, err = RawNode.campaign rn
    Assert.Equal(None, err)
    Assert.True(RawNode.hasReady rn)
    let s, rn, rd = handle s rn
    Assert.Equal(Some { Lead = 0UL; RaftState = StateCandidate }, rd.SoftState)
    Assert.Equal(Some { Term = 1UL; Vote = 1UL; Commit = 10UL }, rd.HardState)
    Assert.True rd.MustSync
    // The self-vote was stepped on Advance: the node leads and appends its empty entry.
    let s, rn, rd = handle s rn
    Assert.Equal(Some { Lead = 1UL; RaftState = StateLeader }, rd.SoftState)
    Assert.Equal<Entry[]>([| Entry.create 1UL 11UL [||] |], rd.Entries)
    let _, rn, rd = handle s rn
    Assert.Equal(Some { Term = 1UL; Vote = 1UL; Commit = 11UL }, rd.HardState)
    Assert.Equal<Entry[]>([| Entry.create 1UL 11UL [||] |], rd.CommittedEntries)
    Assert.False rd.MustSync
    Assert.False(RawNode.hasReady rn)
    Assert.Equal(11UL, (RawNode.basicStatus rn).Applied)

[<Fact>]
let ``proposals of a leader show up in the next Ready`` () =
    let s = storageOf [ 1UL ] 10UL
    let rn = create (config 1UL s 10UL)
    let rn, _ = RawNode.campaign rn
    let s, rn, _ = handle s rn
    let s, rn, _ = handle s rn
    let s, rn, _ = handle s rn
    let rn, err = RawNode.propose (Encoding.UTF8.GetBytes "foo") rn
    Assert.Equal(None, err)
    let s, rn, rd = handle s rn
    Assert.Equal("Ready MustSync=true:\nEntries:\n1/12 EntryNormal \"foo\"\n", RawNode.describeReady rd)
    let _, _, rd = handle s rn
    Assert.Equal<Entry[]>([| Entry.create 1UL 12UL (Encoding.UTF8.GetBytes "foo") |], rd.CommittedEntries)

[<Fact>]
let ``a follower without leader drops proposals`` () =
    let s = storageOf [ 1UL; 2UL ] 10UL
    let rn = create (config 1UL s 10UL)
    let _, err = RawNode.propose (Encoding.UTF8.GetBytes "foo") rn
    Assert.Equal(Some ProposalDropped, err)

[<Fact>]
let ``local messages from the network and responses from strangers are refused`` () =
    let s = storageOf [ 1UL; 2UL ] 10UL
    let rn = create (config 1UL s 10UL)
    let _, err = RawNode.step { Message.empty with Type = MsgHup; From = 2UL; To = 1UL } rn
    Assert.Equal(Some StepLocalMsg, err)
    let _, err = RawNode.step { Message.empty with Type = MsgAppResp; From = 7UL; To = 1UL; Term = 1UL } rn
    Assert.Equal(Some StepPeerNotFound, err)
    Assert.Equal("raft: cannot step as peer not found", StepError.message StepPeerNotFound)

[<Fact>]
let ``a second Ready before Advance is a programming error`` () =
    let s = storageOf [ 1UL ] 10UL
    let rn, _ = RawNode.campaign (create (config 1UL s 10UL))
    let rn, _ = RawNode.ready rn
    let ex = Assert.Throws<System.InvalidOperationException>(fun () -> RawNode.ready rn |> ignore)
    Assert.Equal("two accepted Ready structs without call to Advance", ex.Message)

[<Fact>]
let ``with async storage writes the Ready carries work orders for the storage threads`` () =
    let s = storageOf [ 1UL ] 10UL
    let rn = create { config 1UL s 10UL with AsyncStorageWrites = true }
    let rn, _ = RawNode.campaign rn
    let rn, rd = RawNode.ready rn
    let append = rd.Messages |> Array.exactlyOne
    Assert.Equal(MsgStorageAppend, append.Type)
    Assert.Equal(NodeId.LocalAppendThread, append.To)
    Assert.Equal((1UL, 1UL, 10UL), (append.Term, append.Vote, append.Commit))
    Assert.Equal(
        "1->AppendThread MsgStorageAppend Term:1 Log:0/0 Commit:10 Vote:1 Responses:[\n  1->1 MsgVoteResp Term:1 Log:0/0\n]",
        Describe.message append)
    Assert.Throws<System.InvalidOperationException>(fun () -> RawNode.advance rn |> ignore) |> ignore
    // Delivering the responses once "written" makes the node leader.
    let rn =
        append.Responses
        |> Array.fold (fun rn m -> match RawNode.step m rn with rn, None -> rn | _, Some e -> failwith (StepError.message e)) rn
    Assert.Equal(StateLeader, (RawNode.basicStatus rn).SoftState.RaftState)

[<Fact>]
let ``bootstrap commits one conf change entry per peer`` () =
    let rn = create (config 1UL MemoryStorage.empty 0UL)
    let rn =
        match RawNode.bootstrap [ { Id = 1UL; Context = [||] }; { Id = 2UL; Context = [||] } ] rn with
        | Ok rn -> rn
        | Error e -> failwith e
    let _, rd = RawNode.ready rn
    Assert.Equal(Some { Term = 1UL; Vote = 0UL; Commit = 2UL }, rd.HardState)
    Assert.Equal(
        "Ready MustSync=true:\nHardState Term:1 Commit:2\nEntries:\n1/1 EntryConfChange v1\n1/2 EntryConfChange v2\n"
        + "CommittedEntries:\n1/1 EntryConfChange v1\n1/2 EntryConfChange v2\n",
        RawNode.describeReady rd)
    Assert.Equal(Error "can't bootstrap a nonempty Storage",
                 RawNode.bootstrap [ { Id = 1UL; Context = [||] } ] (create (config 1UL (storageOf [ 1UL ] 10UL) 10UL)) |> Result.map ignore)

[<Fact>]
let ``DescribeReady prints read states as Go's %v`` () =
    let rd =
        { SoftState = None; HardState = None; Entries = [||]; Snapshot = None; CommittedEntries = [||]; Messages = [||]
          MustSync = false
          ReadStates = [ { Index = 10UL; RequestCtx = Encoding.UTF8.GetBytes "ab" }; { Index = 11UL; RequestCtx = [||] } ] }
    Assert.Equal("Ready MustSync=false:\nReadStates [{10 [97 98]} {11 []}]\n", RawNode.describeReady rd)
    Assert.Equal("<empty Ready>", RawNode.describeReady { rd with ReadStates = [] })

[<Fact>]
let ``a leader answers ReadIndex in a single-voter group with a ReadState`` () =
    let s = storageOf [ 1UL ] 10UL
    let rn, _ = RawNode.campaign (create (config 1UL s 10UL))
    let s, rn, _ = handle s rn
    let s, rn, _ = handle s rn
    let s, rn, _ = handle s rn
    let rn = RawNode.readIndex (Encoding.UTF8.GetBytes "ctx") rn
    Assert.True(RawNode.hasReady rn)
    let _, rn, rd = handle s rn
    Assert.Equal<ReadState list>([ { Index = 11UL; RequestCtx = Encoding.UTF8.GetBytes "ctx" } ], rd.ReadStates)
    // Accepted read states are not handed out twice.
    Assert.False(RawNode.hasReady rn)
