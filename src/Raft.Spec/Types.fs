/// The data of the protocol, mirroring etcd's raftpb: messages and their types,
/// log entries, the persisted hard state, configuration state, snapshots and
/// configuration changes. Values only; behaviour lives in later modules.
namespace Raft.Spec

/// The kind of a log entry (raftpb.EntryType).
type EntryType =
    | EntryNormal
    | EntryConfChange
    | EntryConfChangeV2

/// Every message kind of the protocol (raftpb.MessageType), including the local
/// ones (MsgHup, MsgBeat, ...) and the storage-thread ones used by async storage writes.
type MessageType =
    | MsgHup
    | MsgBeat
    | MsgProp
    | MsgApp
    | MsgAppResp
    | MsgVote
    | MsgVoteResp
    | MsgSnap
    | MsgHeartbeat
    | MsgHeartbeatResp
    | MsgUnreachable
    | MsgSnapStatus
    | MsgCheckQuorum
    | MsgTransferLeader
    | MsgTimeoutNow
    | MsgReadIndex
    | MsgReadIndexResp
    | MsgPreVote
    | MsgPreVoteResp
    | MsgStorageAppend
    | MsgStorageAppendResp
    | MsgStorageApply
    | MsgStorageApplyResp
    | MsgForgetLeader

/// One change of a single node (raftpb.ConfChangeType).
type ConfChangeType =
    | ConfChangeAddNode
    | ConfChangeRemoveNode
    | ConfChangeUpdateNode
    | ConfChangeAddLearnerNode

/// How a ConfChangeV2 moves through joint consensus (raftpb.ConfChangeTransition).
type ConfChangeTransition =
    /// Joint consensus when needed (more than one change), left automatically.
    | ConfChangeTransitionAuto
    /// Joint consensus always, left automatically.
    | ConfChangeTransitionJointImplicit
    /// Joint consensus always, left only by an explicit empty ConfChangeV2.
    | ConfChangeTransitionJointExplicit

/// A log entry (raftpb.Entry).
type Entry =
    { Term: uint64
      Index: uint64
      Type: EntryType
      Data: byte[] }

/// The state Raft must persist before it speaks (raftpb.HardState).
type HardState =
    { Term: uint64
      Vote: uint64
      Commit: uint64 }

/// A configuration as stored in snapshots (raftpb.ConfState). Ids are kept sorted.
type ConfState =
    { Voters: uint64 list
      Learners: uint64 list
      /// The outgoing voters while in a joint configuration; empty otherwise.
      VotersOutgoing: uint64 list
      /// Voters of the outgoing config that become learners when the joint config is left.
      LearnersNext: uint64 list
      /// Leave the joint configuration automatically once it is applied.
      AutoLeave: bool }

type SnapshotMetadata =
    { ConfState: ConfState
      Index: uint64
      Term: uint64 }

/// A snapshot of the application's state up to Metadata.Index (raftpb.Snapshot).
type Snapshot =
    { Data: byte[]
      Metadata: SnapshotMetadata }

/// A protocol message (raftpb.Message), all fields present.
type Message =
    { Type: MessageType
      To: uint64
      From: uint64
      Term: uint64
      /// The term of the entry at Index (MsgApp), or a hint term on rejection.
      LogTerm: uint64
      Index: uint64
      Entries: Entry[]
      Commit: uint64
      /// Used by storage-thread messages to carry the vote of the HardState.
      Vote: uint64
      Snapshot: Snapshot option
      Reject: bool
      RejectHint: uint64
      Context: byte[]
      /// Local messages of async storage writes carry the messages to deliver once done.
      Responses: Message[] }

/// A single-node configuration change (raftpb.ConfChange, the "v1" form).
type ConfChange =
    { Type: ConfChangeType
      NodeId: uint64
      Context: byte[]
      /// Unused by Raft; kept for compatibility with etcd's encoding.
      Id: uint64 }

/// One change inside a ConfChangeV2 (raftpb.ConfChangeSingle).
type ConfChangeSingle =
    { Type: ConfChangeType
      NodeId: uint64 }

/// A configuration change of any number of nodes (raftpb.ConfChangeV2).
/// With no changes it is the request to leave a joint configuration.
type ConfChangeV2 =
    { Transition: ConfChangeTransition
      Changes: ConfChangeSingle list
      Context: byte[] }

/// Either form of configuration change (etcd's ConfChangeI).
type ConfChangeI =
    | ConfChangeV1 of ConfChange
    | ConfChangeV2Change of ConfChangeV2

/// The role of a node (etcd's StateType).
type StateType =
    | StateFollower
    | StateCandidate
    | StateLeader
    | StatePreCandidate

/// Node id 0 means "nobody": no vote, no leader.
module NodeId =
    [<Literal>]
    let None = 0UL

    /// The pseudo node of the local append thread (async storage writes): the target of
    /// MsgStorageAppend and the sender of MsgStorageAppendResp (etcd's LocalAppendThread).
    [<Literal>]
    let LocalAppendThread = 18446744073709551615UL

    /// The pseudo node of the local apply thread (etcd's LocalApplyThread).
    [<Literal>]
    let LocalApplyThread = 18446744073709551614UL

    /// Whether an id names one of the local storage threads (etcd's IsLocalMsgTarget).
    let isLocalThread (id: uint64) = id = LocalAppendThread || id = LocalApplyThread

module EntryType =
    let toWire (t: EntryType) : int32 =
        match t with
        | EntryNormal -> 0
        | EntryConfChange -> 1
        | EntryConfChangeV2 -> 2

    let ofWire (v: int32) : Result<EntryType, string> =
        match v with
        | 0 -> Ok EntryNormal
        | 1 -> Ok EntryConfChange
        | 2 -> Ok EntryConfChangeV2
        | _ -> Error(sprintf "unknown entry type %d" v)

module MessageType =
    /// All message types in wire order.
    let all: MessageType list =
        [ MsgHup; MsgBeat; MsgProp; MsgApp; MsgAppResp; MsgVote; MsgVoteResp; MsgSnap
          MsgHeartbeat; MsgHeartbeatResp; MsgUnreachable; MsgSnapStatus; MsgCheckQuorum
          MsgTransferLeader; MsgTimeoutNow; MsgReadIndex; MsgReadIndexResp; MsgPreVote
          MsgPreVoteResp; MsgStorageAppend; MsgStorageAppendResp; MsgStorageApply
          MsgStorageApplyResp; MsgForgetLeader ]

    let private wire = all |> List.mapi (fun i t -> t, int32 i) |> Map.ofList
    let private byWire = all |> List.toArray

    /// The raftpb enum value of a message type.
    let toWire (t: MessageType) : int32 = Map.find t wire

    let ofWire (v: int32) : Result<MessageType, string> =
        if v >= 0 && v < byWire.Length then Ok byWire[int v]
        else Error(sprintf "unknown message type %d" v)

    /// Messages a node generates for itself, never sent over the network.
    let isLocal (t: MessageType) =
        match t with
        | MsgHup | MsgBeat | MsgUnreachable | MsgSnapStatus | MsgCheckQuorum
        | MsgStorageAppend | MsgStorageAppendResp | MsgStorageApply | MsgStorageApplyResp -> true
        | _ -> false

    /// Responses to requests (etcd's IsResponseMsg).
    let isResponse (t: MessageType) =
        match t with
        | MsgAppResp | MsgVoteResp | MsgHeartbeatResp | MsgUnreachable | MsgReadIndexResp
        | MsgPreVoteResp | MsgStorageAppendResp | MsgStorageApplyResp -> true
        | _ -> false

    /// The response type that answers a vote request.
    let voteResponse (t: MessageType) : MessageType option =
        match t with
        | MsgVote -> Some MsgVoteResp
        | MsgPreVote -> Some MsgPreVoteResp
        | _ -> None

module HardState =
    let empty: HardState = { Term = 0UL; Vote = 0UL; Commit = 0UL }
    let isEmpty (hs: HardState) = hs = empty

module ConfState =
    let empty: ConfState =
        { Voters = []; Learners = []; VotersOutgoing = []; LearnersNext = []; AutoLeave = false }

    /// Equal as configurations: same members in each role, in any order.
    let equivalent (a: ConfState) (b: ConfState) =
        let norm (cs: ConfState) =
            { cs with
                Voters = List.sort cs.Voters
                Learners = List.sort cs.Learners
                VotersOutgoing = List.sort cs.VotersOutgoing
                LearnersNext = List.sort cs.LearnersNext }
        norm a = norm b

module Snapshot =
    let empty: Snapshot =
        { Data = [||]
          Metadata = { ConfState = ConfState.empty; Index = 0UL; Term = 0UL } }

    let isEmpty (s: Snapshot) = s.Metadata.Index = 0UL

module Message =
    /// A message with every field at its zero value.
    let empty: Message =
        { Type = MsgHup; To = 0UL; From = 0UL; Term = 0UL; LogTerm = 0UL; Index = 0UL
          Entries = [||]; Commit = 0UL; Vote = 0UL; Snapshot = None; Reject = false
          RejectHint = 0UL; Context = [||]; Responses = [||] }

module Entry =
    let create term index data : Entry =
        { Term = term; Index = index; Type = EntryNormal; Data = data }

/// Severity of a log line, as etcd's raft logger distinguishes them.
[<RequireQualifiedAccess>]
type LogLevel =
    | Debug
    | Info
    | Warn
    | Error

/// A log line produced by the pure core. The core never writes logs itself: it returns
/// lines and the host hands them to its logger (etcd's interaction tests print them as "INFO text").
type LogLine = { Level: LogLevel; Text: string }

module LogLine =
    let debug text = { Level = LogLevel.Debug; Text = text }
    let info text = { Level = LogLevel.Info; Text = text }
    let warn text = { Level = LogLevel.Warn; Text = text }
    let error text = { Level = LogLevel.Error; Text = text }
