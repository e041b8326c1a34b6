/// The values of tlaplus/Raft.tla's variables as the stored state graph holds them, typed:
/// one record per server (NodeS) and the cluster around them (ClusterS). Server ids are the
/// model values' names ("s1"); the implementation's id of "sN" is N.
module Raft.Conformance.SpecState

open System
open System.Text.Json

/// The spec's Nil (no vote, no leader, no transferee).
[<Literal>]
let Nil = "Nil"

/// A ConfChangeSingle: [op |-> "AddNode" | "AddLearner" | "Remove", node].
type SChange = { Op: string; Node: string }

/// A conf change record: kind "none" | "simple" | "joint" | "leave".
type SCC = { Kind: string; Changes: Set<SChange>; AutoLeave: bool }

let noCC = { Kind = "none"; Changes = Set.empty; AutoLeave = false }
let leaveJointCC = { Kind = "leave"; Changes = Set.empty; AutoLeave = false }

/// A log entry: type "normal" (value, Nil for a leader's empty entry) or "conf".
type SEntry = { Term: uint64; Type: string; Value: string; CC: SCC }

/// Raft.tla's Config record.
type SConfig =
    { Voters: Set<string>
      Outgoing: Set<string>
      Learners: Set<string>
      LearnersNext: Set<string>
      AutoLeave: bool }

/// A message; the fields a type does not use stay at their zero value.
type SMsg =
    { Type: string
      From: string
      To: string
      Term: uint64
      // Vote, PreVote
      LastIndex: uint64
      LastTerm: uint64
      Force: bool
      // VoteResp, PreVoteResp, AppResp
      Reject: bool
      // App
      PrevIndex: uint64
      PrevTerm: uint64
      Entries: SEntry list
      Commit: uint64
      // AppResp
      Index: uint64
      Hint: uint64
      HintTerm: uint64
      // Heartbeat, HeartbeatResp
      Ctx: uint64
      // Snap
      SnapIndex: uint64
      SnapTerm: uint64
      SnapConfig: SConfig option }

let emptyMsg =
    { Type = ""; From = Nil; To = Nil; Term = 0UL; LastIndex = 0UL; LastTerm = 0UL; Force = false
      Reject = false; PrevIndex = 0UL; PrevTerm = 0UL; Entries = []; Commit = 0UL; Index = 0UL
      Hint = 0UL; HintTerm = 0UL; Ctx = 0UL; SnapIndex = 0UL; SnapTerm = 0UL; SnapConfig = None }

/// readPending: the pending ReadIndex (id 0: none).
type SRead = { Id: uint64; Index: uint64; Acks: Set<string>; MustSee: uint64 }

let noRead = { Id = 0UL; Index = 0UL; Acks = Set.empty; MustSee = 0UL }

/// One server's part of every per-server variable.
type NodeS =
    { Id: string
      CurrentTerm: uint64
      VotedFor: string
      Log: SEntry list
      SnapshotIndex: uint64
      SnapshotTerm: uint64
      SnapshotConfig: SConfig
      HardTerm: uint64
      HardVote: string
      /// The commit index on disk, when the spec keeps it (Raft.tla's hardState.commit).
      HardCommit: uint64 option
      StableIndex: uint64
      /// The responses waiting for the next write: a bag, message -> copies.
      Outbox: Map<SMsg, int>
      Role: string
      Leader: string
      Heard: bool
      CommitIndex: uint64
      Applied: uint64
      Config: SConfig
      VotesGranted: Set<string>
      MatchIndex: Map<string, uint64>
      NextIndex: Map<string, uint64>
      RecentActive: Set<string>
      PendingConfIndex: uint64
      LeadTransferee: string
      ReadPending: SRead }

/// A whole state of the spec, with the history variables the graph stores (the replay reads
/// ReadCount and Reads).
type ClusterS =
    { Nodes: Map<string, NodeS>
      /// The bag of messages in flight: message -> copies.
      Network: Map<SMsg, int>
      ReadCount: uint64
      RestartCount: uint64
      ConfCount: uint64
      /// reads: every ReadIndex answered, <<index, mustSee>>.
      Reads: Set<uint64 * uint64> }

// ---- server ids -------------------------------------------------------------------------

/// The implementation's id of a server ("s3" -> 3); Nil -> 0.
let idOf (s: string) : uint64 =
    if s = Nil then 0UL
    elif s.Length > 1 && s[0] = 's' then UInt64.Parse(s.AsSpan(1))
    else invalidArg "s" (sprintf "not a server name: %s" s)

/// The spec's name of an implementation id (0 -> Nil).
let nameOf (id: uint64) : string = if id = 0UL then Nil else sprintf "s%d" id

// ---- helpers on a node, as Raft.tla defines them ------------------------------------------

let lastIndex (n: NodeS) = n.SnapshotIndex + uint64 n.Log.Length

/// TermAt: None for -1 (compacted or beyond the end).
let termAt (n: NodeS) (k: uint64) : uint64 option =
    if k = n.SnapshotIndex then Some n.SnapshotTerm
    elif k > n.SnapshotIndex && k <= lastIndex n then Some n.Log[int (k - n.SnapshotIndex - 1UL)].Term
    else None

let entryAt (n: NodeS) (k: uint64) : SEntry = n.Log[int (k - n.SnapshotIndex - 1UL)]

let voters (c: SConfig) = Set.union c.Voters c.Outgoing
let learners (c: SConfig) = Set.union c.Learners c.LearnersNext
let members (c: SConfig) = Set.union (voters c) (learners c)
let isJoint (c: SConfig) = not c.Outgoing.IsEmpty

// ---- JSON decoding (the value forms of tlaplus/graph/dot2graph.py) -------------------------

let private str (e: JsonElement) = e.GetString() |> Option.ofObj |> Option.defaultValue ""
let private u64 (e: JsonElement) = e.GetUInt64()
let private boolean (e: JsonElement) = e.GetBoolean()
let private prop (name: string) (e: JsonElement) = e.GetProperty name

let private strSet (e: JsonElement) : Set<string> = e.EnumerateArray() |> Seq.map str |> Set.ofSeq

/// A function of the servers (a JSON object keyed by server name).
let byServer (f: JsonElement -> 'a) (e: JsonElement) : Map<string, 'a> =
    e.EnumerateObject() |> Seq.map (fun p -> p.Name, f p.Value) |> Map.ofSeq

let decodeConfig (e: JsonElement) : SConfig =
    { Voters = strSet (prop "voters" e)
      Outgoing = strSet (prop "outgoing" e)
      Learners = strSet (prop "learners" e)
      LearnersNext = strSet (prop "learnersNext" e)
      AutoLeave = boolean (prop "autoLeave" e) }

let decodeCC (e: JsonElement) : SCC =
    { Kind = str (prop "kind" e)
      Changes =
        (prop "changes" e).EnumerateArray()
        |> Seq.map (fun c -> { Op = str (prop "op" c); Node = str (prop "node" c) })
        |> Set.ofSeq
      AutoLeave = boolean (prop "autoLeave" e) }

let decodeEntry (e: JsonElement) : SEntry =
    { Term = u64 (prop "term" e)
      Type = str (prop "type" e)
      Value = str (prop "value" e)
      CC = decodeCC (prop "cc" e) }

let decodeMsg (e: JsonElement) : SMsg =
    let field name (f: JsonElement -> 'a) (zero: 'a) =
        match e.TryGetProperty(name: string) with
        | true, v -> f v
        | _ -> zero
    { Type = str (prop "type" e)
      From = str (prop "from" e)
      To = str (prop "to" e)
      Term = u64 (prop "term" e)
      LastIndex = field "lastIndex" u64 0UL
      LastTerm = field "lastTerm" u64 0UL
      Force = field "force" boolean false
      Reject = field "reject" boolean false
      PrevIndex = field "prevIndex" u64 0UL
      PrevTerm = field "prevTerm" u64 0UL
      Entries = field "entries" (fun a -> a.EnumerateArray() |> Seq.map decodeEntry |> List.ofSeq) []
      Commit = field "commit" u64 0UL
      Index = field "index" u64 0UL
      Hint = field "hint" u64 0UL
      HintTerm = field "hintTerm" u64 0UL
      Ctx = field "ctx" u64 0UL
      SnapIndex = field "snapIndex" u64 0UL
      SnapTerm = field "snapTerm" u64 0UL
      SnapConfig = field "snapConfig" (decodeConfig >> Some) None }

/// The network: a function from message records to counts, {"$fn": [[msg, n], ...]}, or
/// the empty function, printed as an empty sequence.
let decodeNetwork (e: JsonElement) : Map<SMsg, int> =
    if e.ValueKind = JsonValueKind.Array then Map.empty
    else
        (prop "$fn" e).EnumerateArray()
        |> Seq.map (fun p -> decodeMsg p[0], p[1].GetInt32())
        |> Map.ofSeq

let decodeRead (e: JsonElement) : SRead =
    { Id = u64 (prop "id" e)
      Index = u64 (prop "index" e)
      Acks = strSet (prop "acks" e)
      MustSee = u64 (prop "mustSee" e) }

/// A decoded value: of a variable, or of one server's component of a variable that is a
/// function of the servers.
type VarValue =
    | VU64 of uint64
    | VStr of string
    | VBool of bool
    | VSet of Set<string>
    | VLog of SEntry list
    | VConfig of SConfig
    | VHard of uint64 * string * uint64 option
    | VMsgs of Map<SMsg, int>
    | VMap of Map<string, uint64>
    | VRead of SRead
    | VNetwork of Map<SMsg, int>
    | VReads of Set<uint64 * uint64>
    | VIgnored

/// How each variable's values (or components) are decoded.
let decodeVar (name: string) (e: JsonElement) : VarValue =
    match name with
    | "currentTerm" | "snapshotIndex" | "snapshotTerm" | "stableIndex" | "commitIndex" | "applied"
    | "pendingConfIndex" | "readCount" | "restartCount" | "confCount" -> VU64(u64 e)
    | "votedFor" | "role" | "leader" | "leadTransferee" -> VStr(str e)
    | "heard" -> VBool(boolean e)
    | "votesGranted" | "recentActive" -> VSet(strSet e)
    | "log" -> VLog(e.EnumerateArray() |> Seq.map decodeEntry |> List.ofSeq)
    | "snapshotConfig" | "config" -> VConfig(decodeConfig e)
    | "hardState" ->
        let commit = match e.TryGetProperty "commit" with | true, c -> Some(u64 c) | _ -> None
        VHard(u64 (prop "term" e), str (prop "vote" e), commit)
    // A bag like the network.
    | "outbox" -> VMsgs(decodeNetwork e)
    | "matchIndex" | "nextIndex" -> VMap(byServer u64 e)
    | "readPending" -> VRead(decodeRead e)
    | "network" -> VNetwork(decodeNetwork e)
    | "reads" ->
        VReads(e.EnumerateArray() |> Seq.map (fun r -> u64 (prop "index" r), u64 (prop "mustSee" r)) |> Set.ofSeq)
    | _ -> VIgnored

/// One server's node from the components of the per-server variables, by variable name.
let assembleNode (id: string) (v: string -> VarValue) : NodeS =
    let u name = match v name with VU64 x -> x | x -> failwithf "%s: unexpected %A" name x
    let s name = match v name with VStr x -> x | x -> failwithf "%s: unexpected %A" name x
    let set name = match v name with VSet x -> x | x -> failwithf "%s: unexpected %A" name x
    let cfg name = match v name with VConfig x -> x | x -> failwithf "%s: unexpected %A" name x
    let mp name = match v name with VMap x -> x | x -> failwithf "%s: unexpected %A" name x
    let hardTerm, hardVote, hardCommit =
        match v "hardState" with
        | VHard(t, w, c) -> t, w, c
        | x -> failwithf "hardState: %A" x
    { Id = id
      CurrentTerm = u "currentTerm"
      VotedFor = s "votedFor"
      Log = (match v "log" with VLog l -> l | x -> failwithf "log: %A" x)
      SnapshotIndex = u "snapshotIndex"
      SnapshotTerm = u "snapshotTerm"
      SnapshotConfig = cfg "snapshotConfig"
      HardTerm = hardTerm
      HardVote = hardVote
      HardCommit = hardCommit
      StableIndex = u "stableIndex"
      Outbox = (match v "outbox" with VMsgs m -> m | x -> failwithf "outbox: %A" x)
      Role = s "role"
      Leader = s "leader"
      Heard = (match v "heard" with VBool b -> b | x -> failwithf "heard: %A" x)
      CommitIndex = u "commitIndex"
      Applied = u "applied"
      Config = cfg "config"
      VotesGranted = set "votesGranted"
      MatchIndex = mp "matchIndex"
      NextIndex = mp "nextIndex"
      RecentActive = set "recentActive"
      PendingConfIndex = u "pendingConfIndex"
      LeadTransferee = s "leadTransferee"
      ReadPending = (match v "readPending" with VRead r -> r | x -> failwithf "readPending: %A" x) }

/// The cluster from its nodes and the other variables, by name.
let assembleCluster (nodes: Map<string, NodeS>) (v: string -> VarValue) : ClusterS =
    let u name = match v name with VU64 x -> x | x -> failwithf "%s: unexpected %A" name x
    { Nodes = nodes
      Network = (match v "network" with VNetwork n -> n | x -> failwithf "network: %A" x)
      ReadCount = u "readCount"
      RestartCount = u "restartCount"
      ConfCount = u "confCount"
      Reads = (match v "reads" with VReads r -> r | x -> failwithf "reads: %A" x) }

// ---- printing (failure messages) --------------------------------------------------------

let showConfig (c: SConfig) =
    let ids (s: Set<string>) = String.Join(",", s)
    sprintf "[voters {%s}%s%s%s%s]" (ids c.Voters)
        (if c.Outgoing.IsEmpty then "" else sprintf " outgoing {%s}" (ids c.Outgoing))
        (if c.Learners.IsEmpty then "" else sprintf " learners {%s}" (ids c.Learners))
        (if c.LearnersNext.IsEmpty then "" else sprintf " learnersNext {%s}" (ids c.LearnersNext))
        (if c.AutoLeave then " autoLeave" else "")

let showCC (cc: SCC) =
    let changes = cc.Changes |> Seq.map (fun c -> sprintf "%s %s" c.Op c.Node) |> String.concat ", "
    sprintf "%s{%s}%s" cc.Kind changes (if cc.AutoLeave then " auto" else "")

let showEntry (e: SEntry) =
    if e.Type = "conf" then sprintf "%d:conf %s" e.Term (showCC e.CC) else sprintf "%d:%s" e.Term e.Value

let showMsg (m: SMsg) =
    let head = sprintf "%s %s->%s t%d" m.Type m.From m.To m.Term
    match m.Type with
    | "Vote" | "PreVote" -> sprintf "%s last=(%d,%d)%s" head m.LastIndex m.LastTerm (if m.Force then " force" else "")
    | "VoteResp" | "PreVoteResp" -> sprintf "%s%s" head (if m.Reject then " reject" else "")
    | "App" ->
        sprintf "%s prev=(%d,%d) [%s] commit=%d" head m.PrevIndex m.PrevTerm
            (m.Entries |> List.map showEntry |> String.concat " ") m.Commit
    | "AppResp" ->
        if m.Reject then sprintf "%s reject index=%d hint=(%d,%d)" head m.Index m.Hint m.HintTerm
        else sprintf "%s index=%d" head m.Index
    | "Heartbeat" -> sprintf "%s commit=%d ctx=%d" head m.Commit m.Ctx
    | "HeartbeatResp" -> sprintf "%s ctx=%d" head m.Ctx
    | "Snap" ->
        sprintf "%s snap=(%d,%d) %s" head m.SnapIndex m.SnapTerm
            (m.SnapConfig |> Option.map showConfig |> Option.defaultValue "")
    | _ -> head
