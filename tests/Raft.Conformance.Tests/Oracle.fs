/// A few of Raft.tla's definitions in F#, transcribed from the spec, for what the stored
/// graph alone cannot answer: the steps the implementation takes in the same call as the
/// one being replayed (etcd wins an election and appends its empty entry at once, commits
/// as soon as an acknowledgement arrives, answers reads, sends appends eagerly). Each
/// transcribed action is itself checked against every edge of the graph bearing its name
/// (ConformanceTests: the transcribed spec actions agree with the graph), so it is the spec's
/// behaviour, not a second guess of it.
module Raft.Conformance.Oracle

open Raft.Conformance.SpecState

// ---- quorums and configurations --------------------------------------------------------

/// TrueIsQuorum: a strict majority of each non-empty half.
let isQuorum (s: Set<string>) (c: SConfig) =
    let majority (v: Set<string>) = (Set.intersect s v).Count >= v.Count / 2 + 1
    majority c.Voters && (c.Outgoing.IsEmpty || majority c.Outgoing)

/// ApplyChanges / ApplyCC (etcd confchange).
let applyChanges (c: SConfig) (chs: Set<SChange>) (out: Set<string>) (auto: bool) : SConfig =
    let nodes op = chs |> Seq.filter (fun x -> x.Op = op) |> Seq.map (fun x -> x.Node) |> Set.ofSeq
    let adds, lrns, rems = nodes "AddNode", nodes "AddLearner", nodes "Remove"
    { Voters = Set.union (c.Voters - Set.union lrns rems) adds
      Outgoing = out
      Learners = Set.union (c.Learners - Set.union adds rems) (lrns |> Set.filter (fun n -> not (out.Contains n)))
      LearnersNext = Set.union (c.LearnersNext - Set.union adds rems) (lrns |> Set.filter out.Contains)
      AutoLeave = auto }

let applyCC (c: SConfig) (cc: SCC) : SConfig =
    match cc.Kind with
    | "simple" -> applyChanges c cc.Changes Set.empty false
    | "joint" -> applyChanges c cc.Changes c.Voters cc.AutoLeave
    | "leave" -> { Voters = c.Voters; Outgoing = Set.empty; Learners = learners c; LearnersNext = Set.empty; AutoLeave = false }
    | _ -> c

/// ValidCC: the changes a leader may propose in configuration c.
let validCC (c: SConfig) (cc: SCC) : bool =
    let n = applyCC c cc
    match cc.Kind with
    | "simple" ->
        not (isJoint c) && cc.Changes.Count = 1 && not n.Voters.IsEmpty
        && (Set.union (c.Voters - n.Voters) (n.Voters - c.Voters)).Count <= 1
    | "joint" -> not (isJoint c) && not c.Voters.IsEmpty && not cc.Changes.IsEmpty && not n.Voters.IsEmpty
    | "leave" -> isJoint c
    | _ -> false

/// ConfigAt(i, k): the configuration after applying the log up to k.
let configAt (n: NodeS) (k: uint64) : SConfig =
    let mutable c = n.SnapshotConfig
    for j in n.SnapshotIndex + 1UL .. k do
        let e = entryAt n j
        if e.Type = "conf" then c <- applyCC c e.CC
    c

// ---- node predicates -------------------------------------------------------------------

/// Granted(i): votes of the campaign, the candidate's own once durable.
let granted (n: NodeS) =
    if n.Role = "Candidate" && n.HardTerm = n.CurrentTerm && n.HardVote = n.Id then n.VotesGranted.Add n.Id
    else n.VotesGranted

let matchOf (n: NodeS) (j: string) = if j = n.Id then n.StableIndex else defaultArg (n.MatchIndex.TryFind j) 0UL

/// QuorumIndex(i).
let quorumIndex (servers: string list) (n: NodeS) =
    seq { 0UL .. lastIndex n }
    |> Seq.filter (fun k -> isQuorum (servers |> List.filter (fun j -> matchOf n j >= k) |> Set.ofList) n.Config)
    |> Seq.max

/// CanCampaign(i).
let canCampaign (n: NodeS) =
    (voters n.Config).Contains n.Id
    && not (seq { n.Applied + 1UL .. n.CommitIndex } |> Seq.exists (fun k -> (entryAt n k).Type = "conf"))

// ---- messages ------------------------------------------------------------------------------

let withMessage (m: SMsg) (net: Map<SMsg, int>) =
    net |> Map.change m (fun c -> Some(defaultArg c 0 + 1))

let withoutMessage (m: SMsg) (net: Map<SMsg, int>) =
    net |> Map.change m (fun c -> match c with Some k when k > 1 -> Some(k - 1) | _ -> None)

/// The entries after prev in n's log, at most max of them (SubSeq of AppendEntries).
let entriesAfter (n: NodeS) (prev: uint64) (max: int) : SEntry list =
    let last = min (lastIndex n) (prev + uint64 max)
    [ for k in prev + 1UL .. last -> entryAt n k ]

/// The MsgApp of AppendEntries(i, j), when enabled.
let appendEntriesMsg (maxAppend: int) (n: NodeS) (j: string) : SMsg option =
    if n.Role <> "Leader" || j = n.Id || not ((members n.Config).Contains j) then None
    else
        let next = n.NextIndex[j]
        if next - 1UL < n.SnapshotIndex || next = 0UL then None
        else
            let prev = next - 1UL
            Some
                { emptyMsg with
                    Type = "App"; From = n.Id; To = j; Term = n.CurrentTerm; PrevIndex = prev
                    PrevTerm = (termAt n prev).Value; Entries = entriesAfter n prev maxAppend; Commit = n.CommitIndex }

/// The MsgHeartbeat of Heartbeat(i, j), when enabled.
let heartbeatMsg (n: NodeS) (j: string) : SMsg option =
    if n.Role <> "Leader" || j = n.Id || not ((members n.Config).Contains j) then None
    else
        Some
            { emptyMsg with
                Type = "Heartbeat"; From = n.Id; To = j; Term = n.CurrentTerm
                Commit = min n.MatchIndex[j] n.CommitIndex; Ctx = n.ReadPending.Id }

/// The MsgSnap of SendSnapshot(i, j), when enabled.
let snapshotMsg (n: NodeS) (j: string) : SMsg option =
    if n.Role <> "Leader" || j = n.Id || not ((members n.Config).Contains j) || n.NextIndex[j] > n.SnapshotIndex then None
    else
        Some
            { emptyMsg with
                Type = "Snap"; From = n.Id; To = j; Term = n.CurrentTerm; SnapIndex = n.SnapshotIndex
                SnapTerm = n.SnapshotTerm; SnapConfig = Some n.SnapshotConfig }

/// An append the leader may pipeline: etcd streams appends to a replicating follower from
/// its optimistic Next, beyond the spec's nextIndex (which moves only on acknowledgement).
/// It must still be an append of the leader's own log: right term, previous entry and
/// entries as in the log, at most maxAppend of them, and the leader's commit index.
let isPipelinedAppend (maxAppend: int) (n: NodeS) (m: SMsg) =
    m.Type = "App" && m.From = n.Id && n.Role = "Leader" && m.Term = n.CurrentTerm && m.To <> n.Id
    && (members n.Config).Contains m.To
    && m.PrevIndex >= n.SnapshotIndex && m.PrevIndex <= lastIndex n
    && termAt n m.PrevIndex = Some m.PrevTerm
    && m.Entries = entriesAfter n m.PrevIndex maxAppend
    && m.Commit = n.CommitIndex

// ---- actions the implementation takes in the same call ---------------------------------

let private setNode (n: NodeS) (s: ClusterS) = { s with Nodes = s.Nodes.Add(n.Id, n) }

let private resetLeader (n: NodeS) =
    { n with
        VotesGranted = Set.empty
        MatchIndex = n.MatchIndex |> Map.map (fun _ _ -> 0UL)
        NextIndex = n.NextIndex |> Map.map (fun _ _ -> 1UL)
        RecentActive = Set.empty
        PendingConfIndex = 0UL
        LeadTransferee = Nil
        ReadPending = noRead }

/// BecomeFollower(i, t, l).
let becomeFollower (t: uint64) (l: string) (n: NodeS) : NodeS =
    resetLeader
        { n with
            Role = "Follower"
            CurrentTerm = t
            VotedFor = (if t = n.CurrentTerm then n.VotedFor else Nil)
            Leader = l
            Heard = (l <> Nil) }

/// Campaign(i, force, net).
let campaign (force: bool) (n: NodeS) (net: Map<SMsg, int>) : NodeS * Map<SMsg, int> =
    let lastT = defaultArg (termAt n (lastIndex n)) 0UL
    let reqs =
        voters n.Config
        |> Set.remove n.Id
        |> Seq.map (fun j ->
            { emptyMsg with
                Type = "Vote"; From = n.Id; To = j; Term = n.CurrentTerm + 1UL; LastIndex = lastIndex n
                LastTerm = lastT; Force = force })
    { n with
        CurrentTerm = n.CurrentTerm + 1UL
        VotedFor = n.Id
        Role = "Candidate"
        Leader = Nil
        Heard = false
        VotesGranted = Set.empty },
    Seq.fold (fun acc m -> withMessage m acc) net reqs

/// BecomeCandidate(i).
let becomeCandidate (i: string) (s: ClusterS) : ClusterS option =
    let n = s.Nodes[i]
    if n.Role = "PreCandidate" && isQuorum n.VotesGranted n.Config then
        let n, net = campaign false n s.Network
        Some { setNode n s with Network = net }
    else None

/// BecomeLeader(i).
let becomeLeader (i: string) (s: ClusterS) : ClusterS option =
    let n = s.Nodes[i]
    if n.Role = "Candidate" && isQuorum (granted n) n.Config then
        let last = lastIndex n
        Some(
            setNode
                { n with
                    Role = "Leader"
                    Leader = i
                    Heard = true
                    Log = n.Log @ [ { Term = n.CurrentTerm; Type = "normal"; Value = Nil; CC = noCC } ]
                    VotesGranted = Set.empty
                    NextIndex = n.NextIndex |> Map.map (fun _ _ -> last + 1UL)
                    PendingConfIndex = last }
                s
        )
    else None

/// AdvanceCommitIndex(i).
let advanceCommitIndex (servers: string list) (i: string) (s: ClusterS) : ClusterS option =
    let n = s.Nodes[i]
    if n.Role <> "Leader" then None
    else
        let mci = quorumIndex servers n
        if mci > n.CommitIndex && termAt n mci = Some n.CurrentTerm then Some(setNode { n with CommitIndex = mci } s)
        else None

/// HandleReadIndexQuorum(i).
let handleReadIndexQuorum (i: string) (s: ClusterS) : ClusterS option =
    let n = s.Nodes[i]
    if n.Role = "Leader" && n.ReadPending <> noRead && isQuorum n.ReadPending.Acks n.Config then
        Some
            { setNode { n with ReadPending = noRead } s with
                Reads = s.Reads.Add(n.ReadPending.Index, n.ReadPending.MustSee) }
    else None

/// AutoLeaveJoint(i).
let autoLeaveJoint (i: string) (s: ClusterS) : ClusterS option =
    let n = s.Nodes[i]
    if n.Role = "Leader" && n.LeadTransferee = Nil && isJoint n.Config && n.Config.AutoLeave
       && n.PendingConfIndex <= n.Applied then
        Some(
            setNode
                { n with
                    Log = n.Log @ [ { Term = n.CurrentTerm; Type = "conf"; Value = Nil; CC = leaveJointCC } ]
                    PendingConfIndex = lastIndex n + 1UL }
                s
        )
    else None

/// The follow-up steps of server i, by name.
let followUps (servers: string list) : (string * (string -> ClusterS -> ClusterS option)) list =
    [ "BecomeCandidate", becomeCandidate
      "BecomeLeader", becomeLeader
      "AdvanceCommitIndex", advanceCommitIndex servers
      "HandleReadIndexQuorum", handleReadIndexQuorum
      "AutoLeaveJoint", autoLeaveJoint ]
