/// The implementation side of the conformance check: a concrete cluster of RawNodes and
/// MemoryStorages for a spec state (concretize: the inverse of SpecMap.toSpecState, picking
/// one implementation state per spec state), the spec's view of such a cluster (view:
/// SpecMap.toSpecState plus the messages), and the inputs that drive it.
module Raft.Conformance.Impl

open System
open System.Buffers.Binary
open System.Text
open Raft.Spec
open Raft.Conformance.SpecState

/// The implementation's settings for a model.
type Settings =
    { PreVote: bool
      CheckQuorum: bool
      /// Ticks of the election timeout (the randomized one is pinned to it).
      ElectionTick: int }

// ---- values ---------------------------------------------------------------------------------

let private valueBytes (v: string) = if v = Nil then [||] else Encoding.UTF8.GetBytes v

let private op (t: ConfChangeType) =
    match t with
    | ConfChangeAddNode -> "AddNode"
    | ConfChangeAddLearnerNode -> "AddLearner"
    | ConfChangeRemoveNode -> "Remove"
    | ConfChangeUpdateNode -> "Update"

let private changeType (op: string) =
    match op with
    | "AddNode" -> ConfChangeAddNode
    | "AddLearner" -> ConfChangeAddLearnerNode
    | "Remove" -> ConfChangeRemoveNode
    | _ -> invalidArg "op" op

/// A spec conf change as the ConfChangeV2 an application proposes for it.
let confChangeV2 (cc: SCC) : ConfChangeV2 =
    let changes =
        cc.Changes
        |> Seq.map (fun c -> { Type = changeType c.Op; NodeId = idOf c.Node } : ConfChangeSingle)
        |> List.ofSeq
    let transition =
        match cc.Kind with
        | "joint" -> if cc.AutoLeave then ConfChangeTransitionJointImplicit else ConfChangeTransitionJointExplicit
        | _ -> ConfChangeTransitionAuto
    { Transition = transition; Changes = changes; Context = [||] }

/// The spec's conf change of an implementation one.
let specCC (cc: ConfChangeV2) : SCC =
    let changes = cc.Changes |> List.map (fun c -> { Op = op c.Type; Node = nameOf c.NodeId }) |> Set.ofList
    if ConfChangeV2.leaveJoint cc then leaveJointCC
    else
        match ConfChangeV2.enterJoint cc with
        | Some auto -> { Kind = "joint"; Changes = changes; AutoLeave = auto }
        | None -> { Kind = "simple"; Changes = changes; AutoLeave = false }

let implEntry (index: uint64) (e: SEntry) : Entry =
    if e.Type = "conf" then
        // The leave request is etcd's empty ConfChangeV2 (what auto-leave proposes).
        let typ, data =
            if e.CC.Kind = "leave" then Codec.marshalConfChange None
            else Codec.marshalConfChange (Some(ConfChangeV2Change(confChangeV2 e.CC)))
        { Term = e.Term; Index = index; Type = typ; Data = data }
    else { Term = e.Term; Index = index; Type = EntryNormal; Data = valueBytes e.Value }

let specEntry (e: Entry) : SEntry =
    match Codec.confChangeOfEntry e with
    | Ok None ->
        { Term = e.Term; Type = "normal"; Value = (if e.Data.Length = 0 then Nil else Encoding.UTF8.GetString e.Data); CC = noCC }
    | Ok(Some cc) -> { Term = e.Term; Type = "conf"; Value = Nil; CC = specCC (ConfChangeI.asV2 cc) }
    | Error err -> failwithf "entry %d: undecodable conf change: %s" e.Index err

let confStateOf (c: SConfig) : ConfState =
    let ids (s: Set<string>) = s |> Seq.map idOf |> Seq.sort |> List.ofSeq
    { Voters = ids c.Voters
      VotersOutgoing = ids c.Outgoing
      Learners = ids c.Learners
      LearnersNext = ids c.LearnersNext
      AutoLeave = c.AutoLeave }

let private names (s: Set<uint64>) = s |> Seq.map nameOf |> Set.ofSeq

let configOfSpecMap (c: SpecConfig) : SConfig =
    { Voters = names c.Voters
      Outgoing = names c.Outgoing
      Learners = names c.Learners
      LearnersNext = names c.LearnersNext
      AutoLeave = c.AutoLeave }

let configOfConfState (cs: ConfState) : SConfig = configOfSpecMap (SpecConfig.ofConfState cs)

// ---- messages -------------------------------------------------------------------------------

let transferContext = Encoding.ASCII.GetBytes(CampaignType.name CampaignTransfer)

/// A read position as a heartbeat context (little-endian); 0 is no context.
let ctxBytes (n: uint64) : byte[] =
    if n = 0UL then [||]
    else
        let b = Array.zeroCreate<byte> 8
        BinaryPrimitives.WriteUInt64LittleEndian(Span b, n)
        b

let ctxValue (b: byte[]) : uint64 =
    if b.Length = 0 then 0UL else BinaryPrimitives.ReadUInt64LittleEndian(ReadOnlySpan b)

let snapshotOf (index: uint64) (term: uint64) (c: SConfig) : Snapshot =
    { Data = [||]; Metadata = { Index = index; Term = term; ConfState = confStateOf c } }

/// The implementation's message for a spec message.
let implMsg (m: SMsg) : Message =
    let b = { Message.empty with From = idOf m.From; To = idOf m.To; Term = m.Term }
    match m.Type with
    | "Vote" | "PreVote" ->
        { b with
            Type = (if m.Type = "Vote" then MsgVote else MsgPreVote)
            Index = m.LastIndex
            LogTerm = m.LastTerm
            Context = (if m.Force then transferContext else [||]) }
    | "VoteResp" -> { b with Type = MsgVoteResp; Reject = m.Reject }
    | "PreVoteResp" -> { b with Type = MsgPreVoteResp; Reject = m.Reject }
    | "App" ->
        { b with
            Type = MsgApp
            Index = m.PrevIndex
            LogTerm = m.PrevTerm
            Entries = m.Entries |> List.mapi (fun k e -> implEntry (m.PrevIndex + 1UL + uint64 k) e) |> Array.ofList
            Commit = m.Commit }
    | "AppResp" -> { b with Type = MsgAppResp; Reject = m.Reject; Index = m.Index; RejectHint = m.Hint; LogTerm = m.HintTerm }
    | "Heartbeat" -> { b with Type = MsgHeartbeat; Commit = m.Commit; Context = ctxBytes m.Ctx }
    | "HeartbeatResp" -> { b with Type = MsgHeartbeatResp; Context = ctxBytes m.Ctx }
    | "Snap" -> { b with Type = MsgSnap; Snapshot = Some(snapshotOf m.SnapIndex m.SnapTerm m.SnapConfig.Value) }
    | "TimeoutNow" -> { b with Type = MsgTimeoutNow }
    | t -> failwithf "unknown spec message type %s" t

/// The spec's message for an implementation message; Error for messages the spec does not
/// model (forwarded proposals, read index responses, ...).
let specMsg (m: Message) : Result<SMsg, string> =
    let b = { emptyMsg with From = nameOf m.From; To = nameOf m.To; Term = m.Term }
    match m.Type with
    | MsgVote | MsgPreVote ->
        Ok
            { b with
                Type = (if m.Type = MsgVote then "Vote" else "PreVote")
                LastIndex = m.Index
                LastTerm = m.LogTerm
                Force = (m.Context = transferContext) }
    | MsgVoteResp -> Ok { b with Type = "VoteResp"; Reject = m.Reject }
    | MsgPreVoteResp -> Ok { b with Type = "PreVoteResp"; Reject = m.Reject }
    | MsgApp ->
        Ok
            { b with
                Type = "App"
                PrevIndex = m.Index
                PrevTerm = m.LogTerm
                Entries = m.Entries |> Array.map specEntry |> List.ofArray
                Commit = m.Commit }
    | MsgAppResp -> Ok { b with Type = "AppResp"; Reject = m.Reject; Index = m.Index; Hint = m.RejectHint; HintTerm = m.LogTerm }
    | MsgHeartbeat -> Ok { b with Type = "Heartbeat"; Commit = m.Commit; Ctx = ctxValue m.Context }
    | MsgHeartbeatResp -> Ok { b with Type = "HeartbeatResp"; Ctx = ctxValue m.Context }
    | MsgSnap ->
        let s = m.Snapshot |> Option.defaultValue Snapshot.empty
        Ok
            { b with
                Type = "Snap"
                SnapIndex = s.Metadata.Index
                SnapTerm = s.Metadata.Term
                SnapConfig = Some(configOfConfState s.Metadata.ConfState) }
    | MsgTimeoutNow -> Ok { b with Type = "TimeoutNow" }
    | t -> Error(sprintf "%A %d->%d" t m.From m.To)

// ---- the concrete cluster -------------------------------------------------------------------

/// One node: its RawNode and the storage it writes to.
type ImplNode = { Raw: RawNode; Storage: MemoryStorage }

type ImplCluster =
    { Nodes: Map<string, ImplNode>
      Network: Map<SMsg, int>
      /// Reads answered during the replayed step: (server, read index).
      Answered: (string * uint64) list
      /// Messages sent that the spec does not model.
      Foreign: string list }

let private ok what (r: Result<'a, string>) =
    match r with
    | Ok v -> v
    | Error e -> failwithf "%s: %s" what e

let nodeConfig (st: Settings) (id: uint64) (storage: IStorage) (applied: uint64) : Config =
    { Config.create id storage with
        ElectionTick = st.ElectionTick
        HeartbeatTick = 1
        Applied = applied
        AsyncStorageWrites = true
        // One entry per MsgApp (the models' MaxAppendEntries = 1).
        MaxSizePerMsg = 0UL
        MaxCommittedSizePerReady = Config.NoLimit
        CheckQuorum = st.CheckQuorum
        PreVote = st.PreVote
        // The spec's leader steps down when removed, and never forwards proposals.
        StepDownOnRemoval = true
        DisableProposalForwarding = true }

/// The commit index on disk: the spec's (or the snapshot's where the spec keeps none), and
/// never below the snapshot (the spec's restored snapshot is durable at once, its commit
/// index written with the next HardState; etcd writes both in one Ready).
let storedCommit (n: NodeS) = max n.SnapshotIndex (defaultArg n.HardCommit 0UL)

/// The storage of a spec node: its snapshot, durable entries and durable HardState.
let storageOf (n: NodeS) : MemoryStorage =
    let entries = [ for k in n.SnapshotIndex + 1UL .. n.StableIndex -> implEntry k (entryAt n k) ]
    let hs = { Term = n.HardTerm; Vote = idOf n.HardVote; Commit = storedCommit n }
    MemoryStorage.restore hs (snapshotOf n.SnapshotIndex n.SnapshotTerm n.SnapshotConfig) n.SnapshotIndex n.SnapshotTerm entries
    |> ok (sprintf "storage of %s" n.Id)

let private stateType (role: string) =
    match role with
    | "Follower" -> StateFollower
    | "PreCandidate" -> StatePreCandidate
    | "Candidate" -> StateCandidate
    | "Leader" -> StateLeader
    | r -> invalidArg "role" r

/// The implementation state chosen for a spec node. Choices where the spec abstracts:
/// progress of every follower is probing and not paused (the spec may send an append at
/// any time); the election clock is at 0 (heard from the leader) or at the election
/// timeout (not heard); the randomized timeout is the election timeout; read positions
/// are numbered like the spec's read ids.
let concretizeNode (st: Settings) (s: ClusterS) (n: NodeS) : ImplNode =
    let id = idOf n.Id
    let storage = storageOf n
    let raw = RawNode.create (nodeConfig st id storage n.SnapshotIndex) |> ok (sprintf "RawNode of %s" n.Id)
    let r = raw.Raft
    let last = lastIndex n
    // The unstable tail: entries not yet durable.
    let log =
        let tail = [| for k in n.StableIndex + 1UL .. last -> implEntry k (entryAt n k) |]
        if tail.Length = 0 then r.RaftLog else RaftLog.append tail r.RaftLog |> fst
    let log = { log with Committed = n.CommitIndex; Applied = n.Applied; Applying = n.Applied }
    // The configuration in force, which the application applied after the snapshot.
    let trk = ProgressTracker.create r.Trk.MaxInflight r.Trk.MaxInflightBytes
    let cfg, prs = Restore.restore trk last (confStateOf n.Config) |> ok (sprintf "configuration of %s" n.Id)
    let leading = n.Role = "Leader"
    let prs =
        if not leading then prs
        else
            prs
            |> Map.map (fun j pr ->
                let name = nameOf j
                if name = n.Id then
                    { pr with Match = n.StableIndex; Next = last + 1UL; State = StateReplicate; RecentActive = true }
                else
                    let next = n.NextIndex[name]
                    { pr with
                        Match = n.MatchIndex[name]
                        Next = next
                        SentCommit = min n.CommitIndex (next - 1UL)
                        State = StateProbe
                        RecentActive = n.RecentActive.Contains name
                        MsgAppFlowPaused = false })
    let votes =
        match n.Role with
        | "Candidate" -> Oracle.granted n |> Seq.map (fun v -> idOf v, true) |> Map.ofSeq
        | "PreCandidate" -> n.VotesGranted |> Seq.map (fun v -> idOf v, true) |> Map.ofSeq
        | _ -> Map.empty
    let readOnly =
        let ro = ReadOnly.create ReadOnlySafe
        if n.ReadPending.Id = 0UL then { ro with ConfirmedReads = (if leading then s.ReadCount else 0UL) }
        else
            let req = { Message.empty with Type = MsgReadIndex; Entries = [| Entry.create 0UL 0UL (ctxBytes n.ReadPending.Id) |] }
            { ro with
                UnconfirmedReads = [ { Req = req; Index = n.ReadPending.Index } ]
                ConfirmedReads = n.ReadPending.Id - 1UL
                Acks = n.ReadPending.Acks |> Seq.map (fun a -> idOf a, n.ReadPending.Id) |> Map.ofSeq }
    // Responses waiting for the next write; the node's own acknowledgements are among them
    // until its entries or its vote are durable.
    let selfAcks =
        [ if leading && n.StableIndex < last then
              { Message.empty with Type = MsgAppResp; From = id; To = id; Term = n.CurrentTerm; Index = last }
          if n.Role = "Candidate" && not (n.HardTerm = n.CurrentTerm && n.HardVote = n.Id) then
              { Message.empty with Type = MsgVoteResp; From = id; To = id; Term = n.CurrentTerm } ]
    let afterAppend = selfAcks @ [ for KeyValue(m, k) in n.Outbox do for _ in 1..k -> implMsg m ]
    let r =
        { r with
            Term = n.CurrentTerm
            Vote = idOf n.VotedFor
            State = stateType n.Role
            Lead = idOf n.Leader
            RaftLog = log
            Trk = { trk with Config = cfg; Progress = prs; Votes = votes }
            IsLearner = (learners n.Config).Contains n.Id
            Msgs = Outbox.empty
            MsgsAfterAppend = Outbox.ofList afterAppend
            LeadTransferee = idOf n.LeadTransferee
            PendingConfIndex = n.PendingConfIndex
            UncommittedSize = 0UL
            ReadOnly = readOnly
            ElectionElapsed = (if n.Heard || leading then 0 else st.ElectionTick)
            HeartbeatElapsed = 0
            // One tick more than the lease: a node first loses its lease, then campaigns.
            RandomizedElectionTimeout = st.ElectionTick + 1
            PendingReadIndexMessages = []
            ReadStates = []
            Logs = Outbox.empty
            Traces = Outbox.empty }
    { Raw =
        { raw with
            Raft = r
            PrevSoftState = Raft.softState r
            PrevHardState = MemoryStorage.hardState storage
            StepsOnAdvance = [] }
      Storage = storage }

/// Concretized nodes, by spec node (the graph shares equal nodes) and read count.
type private NodeKey(n: NodeS, reads: uint64) =
    member _.Node = n
    member _.Reads = reads
    override _.GetHashCode() = LanguagePrimitives.PhysicalHash n ^^^ int reads
    override _.Equals(o) =
        match o with
        | :? NodeKey as k -> obj.ReferenceEquals(k.Node, n) && k.Reads = reads
        | _ -> false

let private concrete = Collections.Concurrent.ConcurrentDictionary<NodeKey, ImplNode>()

let concretize (st: Settings) (s: ClusterS) : ImplCluster =
    let node (n: NodeS) =
        // Only a leader without a pending read depends on the read count.
        let reads = if n.Role = "Leader" && n.ReadPending.Id = 0UL then s.ReadCount else 0UL
        if concrete.Count > 2_000_000 then concrete.Clear()
        concrete.GetOrAdd(NodeKey(n, reads), fun _ -> concretizeNode st s n)
    { Nodes = s.Nodes |> Map.map (fun _ n -> node n)
      Network = s.Network
      Answered = []
      Foreign = [] }

// ---- the spec's view of the implementation --------------------------------------------------

/// The spec's variables of one implementation node (SpecMap.toSpecState, messages mapped).
/// Where the implementation keeps more than the spec (its own acknowledgements waiting for
/// a write), they are folded into the variables the spec keeps them in: a pre-candidate's
/// own pending pre-vote counts as granted, a candidate's own vote is not among
/// votesGranted (Raft.tla's Granted adds it once durable).
let viewNode (node: ImplNode) : NodeS * Map<string, uint64 * uint64> =
    let r = node.Raw.Raft
    let sp = SpecMap.toSpecState r node.Storage
    let me = nameOf r.Id
    let waiting = Outbox.toList r.MsgsAfterAppend
    let outbox =
        waiting
        |> List.filter (fun m -> m.To <> r.Id)
        |> List.countBy (fun m -> specMsg m |> ok "waiting response")
        |> Map.ofList
    let granted = names sp.VotesGranted
    let granted =
        match r.State with
        | StatePreCandidate ->
            let ownPending =
                waiting |> List.exists (fun m -> m.To = r.Id && m.Type = MsgPreVoteResp && not m.Reject)
            if ownPending then granted.Add me else granted
        | StateCandidate -> granted.Remove me
        | _ -> Set.empty
    let leading = r.State = StateLeader
    let peers = if leading then r.Trk.Progress |> Map.filter (fun j _ -> j <> r.Id) else Map.empty
    // etcd's Next runs ahead of acknowledgements for replicating or snapshotting followers:
    // there the spec's nextIndex is only known to lie in [Match+1, Next].
    let lenient =
        peers
        |> Map.toSeq
        |> Seq.filter (fun (_, pr) -> pr.State <> StateProbe)
        |> Seq.map (fun (j, pr) -> nameOf j, (pr.Match + 1UL, pr.Next))
        |> Map.ofSeq
    let read =
        match r.ReadOnly.UnconfirmedReads with
        | [] -> noRead
        | first :: _ ->
            let id = r.ReadOnly.ConfirmedReads + 1UL
            { Id = id
              Index = first.Index
              Acks = r.ReadOnly.Acks |> Map.filter (fun _ p -> p >= id) |> Map.keys |> Seq.map nameOf |> Set.ofSeq
              MustSee = 0UL }
    let n =
        { Id = me
          CurrentTerm = sp.CurrentTerm
          VotedFor = nameOf sp.VotedFor
          Log = sp.Log |> Array.map specEntry |> List.ofArray
          SnapshotIndex = sp.SnapshotIndex
          SnapshotTerm = sp.SnapshotTerm
          SnapshotConfig = configOfSpecMap sp.SnapshotConfig
          HardTerm = sp.HardState.Term
          HardVote = nameOf sp.HardState.Vote
          HardCommit = Some sp.HardState.Commit
          StableIndex = sp.StableIndex
          Outbox = outbox
          Role = SpecState.roleName sp.Role
          Leader = nameOf sp.Leader
          Heard = sp.Heard
          CommitIndex = sp.CommitIndex
          Applied = sp.Applied
          Config = configOfSpecMap sp.Config
          VotesGranted = granted
          MatchIndex = peers |> Map.toSeq |> Seq.map (fun (j, pr) -> nameOf j, pr.Match) |> Map.ofSeq
          NextIndex = peers |> Map.toSeq |> Seq.map (fun (j, pr) -> nameOf j, pr.Next) |> Map.ofSeq
          RecentActive =
            peers |> Map.filter (fun _ pr -> pr.RecentActive) |> Map.keys |> Seq.map nameOf |> Set.ofSeq
          PendingConfIndex = sp.PendingConfIndex
          LeadTransferee = nameOf sp.LeadTransferee
          ReadPending = read }
    n, lenient

/// A node's variables as compared: the lease only matters with a known leader; leader
/// state only on leaders, about the other members; votes only while campaigning; history
/// fields left out.
let normalize (n: NodeS) : NodeS =
    let leading = n.Role = "Leader"
    let hardCommit = n.HardCommit |> Option.map (fun _ -> storedCommit n)
    let others = (members n.Config).Remove n.Id
    let onOthers (m: Map<string, 'a>) = if leading then m |> Map.filter (fun j _ -> others.Contains j) else Map.empty
    { n with
        HardCommit = hardCommit
        Heard = n.Heard && n.Leader <> Nil
        VotesGranted = (if n.Role = "Candidate" || n.Role = "PreCandidate" then n.VotesGranted else Set.empty)
        MatchIndex = onOthers n.MatchIndex
        NextIndex = onOthers n.NextIndex
        RecentActive = (if leading then Set.intersect n.RecentActive others else Set.empty)
        ReadPending = (if leading then { n.ReadPending with MustSee = 0UL } else noRead) }

/// The implementation's next index where the spec's lies within etcd's optimistic range.
let private settleNext (spec: NodeS) (impl: NodeS) (lenient: Map<string, uint64 * uint64>) : NodeS =
    if lenient.IsEmpty then impl
    else
        let next =
            impl.NextIndex
            |> Map.map (fun j v ->
                match lenient.TryFind j, spec.NextIndex.TryFind j with
                | Some(lo, hi), Some x when x >= lo && x <= hi -> x
                | _ -> v)
        { impl with NextIndex = next }

let private normalized = Runtime.CompilerServices.ConditionalWeakTable<NodeS, NodeS>()

/// The differences between a spec node and an implementation node's view, as text.
let diffNode (spec: NodeS) (impl: NodeS) (lenient: Map<string, uint64 * uint64>) : string list =
    // Spec nodes are shared by many states: normalized once each.
    let a = normalized.GetValue(spec, fun n -> normalize n)
    let b = normalize (settleNext a impl lenient)
    // Where the spec keeps no commit index on disk, neither side's is compared.
    let b = if a.HardCommit.IsNone then { b with HardCommit = None } else b
    if a = b then []
    else
    let d name (x: 'a) (y: 'a) = if x = y then [] else [ sprintf "%s: spec %A, impl %A" name x y ]
    let next =
        [ for j in Set.union (a.NextIndex.Keys |> Set.ofSeq) (b.NextIndex.Keys |> Set.ofSeq) do
              let x, y = a.NextIndex.TryFind j, b.NextIndex.TryFind j
              if x <> y then
                  let range = match lenient.TryFind j with Some(lo, hi) -> sprintf " (allowed %d..%d)" lo hi | None -> ""
                  yield sprintf "nextIndex[%s]: spec %A, impl %A%s" j x y range ]
    let showLog (l: SEntry list) = l |> List.map showEntry |> String.concat " "
    let showMsgs (m: Map<SMsg, int>) =
        m |> Seq.map (fun (KeyValue(x, k)) -> if k = 1 then showMsg x else sprintf "%dx %s" k (showMsg x)) |> String.concat "; "
    [ yield! d "currentTerm" a.CurrentTerm b.CurrentTerm
      yield! d "votedFor" a.VotedFor b.VotedFor
      if a.Log <> b.Log then yield! d "log" (showLog a.Log) (showLog b.Log)
      yield! d "snapshotIndex" a.SnapshotIndex b.SnapshotIndex
      yield! d "snapshotTerm" a.SnapshotTerm b.SnapshotTerm
      if a.SnapshotConfig <> b.SnapshotConfig then
          yield! d "snapshotConfig" (showConfig a.SnapshotConfig) (showConfig b.SnapshotConfig)
      yield! d "hardState" (a.HardTerm, a.HardVote, a.HardCommit) (b.HardTerm, b.HardVote, b.HardCommit)
      yield! d "stableIndex" a.StableIndex b.StableIndex
      if a.Outbox <> b.Outbox then yield! d "outbox" (showMsgs a.Outbox) (showMsgs b.Outbox)
      yield! d "role" a.Role b.Role
      yield! d "leader" a.Leader b.Leader
      yield! d "lease (heard)" a.Heard b.Heard
      yield! d "commitIndex" a.CommitIndex b.CommitIndex
      yield! d "applied" a.Applied b.Applied
      if a.Config <> b.Config then yield! d "config" (showConfig a.Config) (showConfig b.Config)
      yield! d "votesGranted" a.VotesGranted b.VotesGranted
      yield! d "matchIndex" a.MatchIndex b.MatchIndex
      yield! next
      yield! d "recentActive" a.RecentActive b.RecentActive
      yield! d "pendingConfIndex" a.PendingConfIndex b.PendingConfIndex
      yield! d "leadTransferee" a.LeadTransferee b.LeadTransferee
      yield! d "readPending" a.ReadPending b.ReadPending ]
    |> List.map (fun line -> sprintf "%s %s" spec.Id line)

// ---- driving the implementation -------------------------------------------------------------

/// Moves the node's messages to send into the network, and its answered reads out.
let private drain (name: string) (node: ImplNode) (c: ImplCluster) : ImplCluster =
    let r, msgs = Raft.takeMessages node.Raw.Raft
    let r, reads = Raft.takeReadStates r
    let net, foreign =
        msgs
        |> List.fold
            (fun (net, foreign) m ->
                match specMsg m with
                | Ok sm -> Oracle.withMessage sm net, foreign
                | Error e -> net, e :: foreign)
            (c.Network, c.Foreign)
    { c with
        Nodes = c.Nodes.Add(name, { node with Raw = { node.Raw with Raft = r } })
        Network = net
        Foreign = foreign
        Answered = c.Answered @ (reads |> List.map (fun rs -> name, rs.Index)) }

/// Runs f on node i's RawNode, then drains its output.
let onRaw (i: string) (f: RawNode -> RawNode) (c: ImplCluster) : ImplCluster =
    let node = c.Nodes[i]
    drain i { node with Raw = f node.Raw } c

/// Runs f on node i's RaftState (the core's functions below RawNode).
let onRaft (i: string) (f: RaftState -> RaftState) (c: ImplCluster) : ImplCluster =
    onRaw i (fun rn -> { rn with Raft = f rn.Raft }) c

let stepRaw (m: Message) (rn: RawNode) : RawNode = RawNode.step m rn |> fst

/// Delivers a message from the network (one copy) to its addressee.
let deliver (m: SMsg) (c: ImplCluster) : ImplCluster =
    let c = { c with Network = Oracle.withoutMessage m c.Network }
    onRaw m.To (stepRaw (implMsg m)) c

/// The storage thread: one Ready's HardState, snapshot and entries written, then the
/// responses that waited for them (etcd's MsgStorageAppend with async storage writes).
/// Committed entries handed out for applying are left to Apply.
let persist (i: string) (c: ImplCluster) : ImplCluster =
    let node = c.Nodes[i]
    let rn, rd = RawNode.ready node.Raw
    let c = { c with Nodes = c.Nodes.Add(i, { node with Raw = rn }) }
    rd.Messages
    |> Array.fold
        (fun (c: ImplCluster) m ->
            if m.To = NodeId.LocalAppendThread then
                let node = c.Nodes[i]
                let s = node.Storage
                let s =
                    if m.Term = 0UL && m.Vote = 0UL && m.Commit = 0UL then s
                    else MemoryStorage.setHardState { Term = m.Term; Vote = m.Vote; Commit = m.Commit } s
                let s =
                    match m.Snapshot with
                    | Some snap -> MemoryStorage.applySnapshot snap s |> Result.defaultWith (fun e -> failwithf "%A" e)
                    | None -> s
                let s = MemoryStorage.append m.Entries s
                let c = { c with Nodes = c.Nodes.Add(i, { node with Storage = s; Raw = RawNode.withStorage s node.Raw }) }
                m.Responses
                |> Array.fold
                    (fun (c: ImplCluster) resp ->
                        if resp.To = idOf i then onRaw i (stepRaw resp) c
                        else
                            match specMsg resp with
                            | Ok sm -> { c with Network = Oracle.withMessage sm c.Network }
                            | Error e -> { c with Foreign = e :: c.Foreign })
                    c
            elif m.To = NodeId.LocalApplyThread then c
            else
                match specMsg m with
                | Ok sm -> { c with Network = Oracle.withMessage sm c.Network }
                | Error e -> { c with Foreign = e :: c.Foreign })
        c

/// The snapshot the node restored is written at once and reported applied (the spec's
/// restore is durable at once); the responses keep waiting for the next write.
let completeRestore (i: string) (c: ImplCluster) : ImplCluster =
    let node = c.Nodes[i]
    let r = node.Raw.Raft
    match r.RaftLog.Unstable.Snapshot with
    | None -> c
    | Some snap ->
        let s = MemoryStorage.applySnapshot snap node.Storage |> Result.defaultWith (fun e -> failwithf "%A" e)
        let c = { c with Nodes = c.Nodes.Add(i, { node with Storage = s; Raw = RawNode.withStorage s node.Raw }) }
        let resp =
            { Message.empty with
                Type = MsgStorageAppendResp
                From = NodeId.LocalAppendThread
                To = r.Id
                Term = r.Term
                Snapshot = Some snap }
        onRaw i (stepRaw resp) c

/// Delivers a message; a snapshot the node restores from it is durable at once.
let receive (m: SMsg) (c: ImplCluster) : ImplCluster =
    let c = deliver m c
    if m.Type = "Snap" then completeRestore m.To c else c

/// The application applies the next committed entry (and, for a conf change, tells Raft).
let applyNext (i: string) (c: ImplCluster) : ImplCluster =
    let r = c.Nodes[i].Raw.Raft
    let index = r.RaftLog.Applied + 1UL
    let e =
        match RaftLog.slice index (index + 1UL) RaftLog.NoLimit r.RaftLog with
        | Ok [| e |] -> e
        | other -> failwithf "%s: no entry %d to apply: %A" i index other
    let c =
        match Codec.confChangeOfEntry e with
        | Ok(Some cc) -> onRaw i (fun rn -> RawNode.applyConfChange cc rn |> fst) c
        | _ -> c
    let resp = { Message.empty with Type = MsgStorageApplyResp; From = NodeId.LocalApplyThread; To = r.Id; Entries = [| e |] }
    onRaw i (stepRaw resp) c

/// The application compacts its storage up to k, snapshotting the configuration in force
/// there (which it knows from the conf changes it applied).
let compact (i: string) (k: uint64) (config: SConfig) (c: ImplCluster) : ImplCluster =
    let node = c.Nodes[i]
    let s, _ =
        MemoryStorage.createSnapshot k (Some(confStateOf config)) [||] node.Storage
        |> Result.defaultWith (fun e -> failwithf "%s: snapshot at %d: %A" i k e)
    let s = MemoryStorage.compact k s |> Result.defaultWith (fun e -> failwithf "%s: compact %d: %A" i k e)
    let c = { c with Nodes = c.Nodes.Add(i, { node with Storage = s }) }
    onRaft i (Actions.CompactLog s) c

/// A crash and restart: a new node from what the storage holds.
let restart (st: Settings) (i: string) (c: ImplCluster) : ImplCluster =
    let node = c.Nodes[i]
    let snapIndex = (MemoryStorage.snapshot node.Storage).Metadata.Index
    let raw = RawNode.create (nodeConfig st (idOf i) node.Storage snapIndex) |> ok (sprintf "restart of %s" i)
    let raw =
        { raw with
            Raft = Raft.setRandomizedElectionTimeout (st.ElectionTick + 1) { raw.Raft with Logs = Outbox.empty; Traces = Outbox.empty } }
    { c with Nodes = c.Nodes.Add(i, { node with Raw = raw }) }

/// Ticks the node until the spec sees a change: a follower or candidate loses its lease
/// or campaigns (or is refused a campaign, which restarts its clock), a leader checks its
/// quorum (sending heartbeats every tick on the way). A node that may not campaign keeps
/// ticking: at most twice the timeout.
let tickUntilTimeout (st: Settings) (i: string) (c: ImplCluster) : ImplCluster =
    let before = c.Nodes[i].Raw.Raft
    let lease (r: RaftState) = r.ElectionElapsed < r.ElectionTimeout
    let rec go k (c: ImplCluster) =
        if k = 0 then c
        else
            let c = onRaw i RawNode.tick c
            let r = c.Nodes[i].Raw.Raft
            if r.ElectionElapsed = 0 || r.State <> before.State || r.Term <> before.Term || lease r <> lease before then c
            else go (k - 1) c
    go (2 * (st.ElectionTick + 1)) c
