/// Replaying the spec's steps on the implementation and judging the result: each edge of
/// the stored graph is taken by the implementation from the concrete state of its source,
/// and the result must be the spec's view of the edge's target, possibly followed by the
/// steps etcd takes in the same call (Oracle.followUps) and eager sends.
module Raft.Conformance.Replay

open Raft.Spec
open Raft.Conformance.SpecState
open Raft.Conformance.Graph
open Raft.Conformance.Impl

type Model =
    { Graph: Graph
      Settings: Settings
      Servers: string list
      MaxAppend: int }

let model (g: Graph) : Model =
    { Graph = g
      Settings =
        { PreVote = configBool g "PreVoteEnabled"
          CheckQuorum = configBool g "CheckQuorumEnabled"
          ElectionTick = 3 }
      Servers = g.Servers
      MaxAppend = configInt g "MaxAppendEntries" }

/// How one replayed step went.
type Outcome =
    /// The implementation reached the spec's target (the text says along which steps).
    | Matched of string
    /// A documented difference (docs/conformance.md): the implementation legitimately
    /// does not take this spec step, or takes it differently.
    | Documented of string
    | Mismatch of string list

// ---- comparing an implementation result with spec states ------------------------------------

/// Multiset difference of two bags of messages: what a holds beyond b.
let private beyond (a: Map<SMsg, int>) (b: Map<SMsg, int>) : (SMsg * int) list =
    [ for KeyValue(m, k) in a do
          let extra = k - defaultArg (b.TryFind m) 0
          if extra > 0 then yield m, extra ]

/// Whether m is a message the leader n could send on its own at this point: an append of
/// its log (pipelined or not), a heartbeat or a snapshot as the spec's send actions build them.
let private eager (md: Model) (n: NodeS) (m: SMsg) : bool =
    m.From = n.Id
    && match m.Type with
       | "App" -> Oracle.isPipelinedAppend md.MaxAppend n m
       | "Heartbeat" -> Oracle.heartbeatMsg n m.To = Some m
       | "Snap" -> Oracle.snapshotMsg n m.To = Some m
       | _ -> false

/// The spec's view of every node of an implementation cluster.
type private View = Map<string, NodeS * Map<string, uint64 * uint64>>

/// Nodes the step left untouched are viewed as their spec state in s (the concretization
/// round-trips: ConformanceTests checks it on every state).
let private viewOf (s: ClusterS) (c0: ImplCluster) (impl: ImplCluster) : View =
    impl.Nodes
    |> Map.map (fun j n -> if obj.ReferenceEquals(n, c0.Nodes[j]) then s.Nodes[j], Map.empty else viewNode n)

/// What a comparison leaves out: per node, fields made equal on both sides (the identity
/// for a full comparison), and whether the network is compared.
type Relax = { Node: NodeS -> NodeS; Network: bool }

let strict = { Node = id; Network = true }

/// The differences between the implementation cluster and spec state c, reached from s
/// along the spec states `path` (the eager sends may come from any of them).
let private diffCluster (relax: Relax) (md: Model) (actor: string option) (s: ClusterS) (path: ClusterS list) (c: ClusterS) (view: View) (impl: ImplCluster) =
    let nodes =
        [ for KeyValue(j, spec) in c.Nodes do
              let v, lenient = view[j]
              // Nodes are shared between the graph's states: the same object is the same node.
              if not (obj.ReferenceEquals(spec, v)) then yield! diffNode (relax.Node spec) (relax.Node v) lenient ]
    let missing = if relax.Network then beyond c.Network impl.Network else []
    let extra = if relax.Network then beyond impl.Network c.Network else []
    let unexplained =
        extra
        |> List.filter (fun (m, _) ->
            match actor with
            | Some a when m.From = a -> not (path |> List.exists (fun p -> eager md p.Nodes[a] m))
            | _ -> true)
    let reads =
        let spec = Set.difference c.Reads s.Reads |> Set.map fst
        let impl = impl.Answered |> List.map snd |> Set.ofList
        if spec = impl then [] else [ sprintf "reads answered: spec %A, impl %A" spec impl ]
    [ yield! nodes
      for m, k in missing do
          yield sprintf "network: spec has %d more of %s" k (showMsg m)
      for m, k in unexplained do
          yield sprintf "network: impl sent %d of %s" k (showMsg m)
      for f in impl.Foreign do
          yield sprintf "network: impl sent a message the spec does not model: %s" f
      yield! reads ]

/// Spec states reachable from t by follow-up steps of the actor (at most three of them),
/// each with the states along the way (newest first) and the steps' names; t itself first.
let private closure (md: Model) (actor: string option) (t: ClusterS) : seq<ClusterS list * string list> =
    let follow = Oracle.followUps md.Servers
    let step (states: ClusterS list, names: string list) =
        match actor with
        | Some a ->
            follow |> List.choose (fun (name, f) -> f a states.Head |> Option.map (fun u -> u :: states, name :: names))
        | None -> []
    seq {
        let mutable frontier = [ [ t ], [] ]
        yield! frontier
        for _ in 1..3 do
            frontier <- frontier |> List.collect step
            yield! frontier
    }

/// Matches the implementation's result against t and t's follow-ups.
let judgeWith (relax: Relax) (follow: bool) (md: Model) (actor: string option) (s: ClusterS) (c0: ImplCluster) (t: ClusterS) (impl: ImplCluster) : Result<string, string list> =
    let view = viewOf s c0 impl
    let first = ref None
    // Follow-up steps change only the actor: when another node already differs, t's
    // follow-ups cannot match either.
    let othersDiffer () =
        t.Nodes
        |> Map.exists (fun j spec ->
            Some j <> actor
            && (let v, lenient = view[j]
                not (obj.ReferenceEquals(spec, v)) && not (diffNode (relax.Node spec) (relax.Node v) lenient).IsEmpty))
    let found =
        (if follow then Seq.append (Seq.singleton ([ t ], [])) (Seq.delay (fun () -> if othersDiffer () then Seq.empty else closure md actor t |> Seq.skip 1))
         else Seq.singleton ([ t ], []))
        |> Seq.tryPick (fun (states, names) ->
            // Eager sends may happen before the step's own change (a heartbeat before a step-down).
            let path = s :: List.rev states
            match diffCluster relax md actor s path states.Head view impl with
            | [] -> Some(if names.IsEmpty then "" else "+" + (List.rev names |> String.concat "+"))
            | d ->
                if first.Value.IsNone then first.Value <- Some d
                None)
    match found with
    | Some how -> Ok how
    | None -> Error(defaultArg first.Value [])

let judge md actor s c0 t impl = judgeWith strict true md actor s c0 t impl

// ---- the implementation input of each spec action ---------------------------------------------

let private server (a: Action) k =
    match a.Args[k] with
    | AName s -> s
    | _ -> failwithf "%O: argument %d is not a server" a k

/// The vote response that completes a won election, delivered again: etcd tallies on
/// every response and acts on the outcome at once.
let private winningVote (n: NodeS) (pre: bool) : Message =
    let from =
        n.VotesGranted |> Set.remove n.Id |> Seq.tryHead |> Option.defaultValue n.Id
    { Message.empty with
        Type = (if pre then MsgPreVoteResp else MsgVoteResp)
        From = idOf from
        To = idOf n.Id
        Term = (if pre then n.CurrentTerm + 1UL else n.CurrentTerm) }

/// What the implementation does for spec action a (not a message delivery) from s.
let implStep (md: Model) (s: ClusterS) (a: Action) (c: ImplCluster) : ImplCluster =
    let st = md.Settings
    match a.Name with
    | "Timeout" | "CheckQuorum" -> tickUntilTimeout st (server a 0) c
    | "BecomeCandidate" -> let i = server a 0 in onRaw i (stepRaw (winningVote s.Nodes[i] true)) c
    | "BecomeLeader" -> let i = server a 0 in onRaw i (stepRaw (winningVote s.Nodes[i] false)) c
    | "ForgetLeader" -> onRaw (server a 0) (fun rn -> RawNode.forgetLeader rn |> fst) c
    | "ClientRequest" ->
        let v = server a 1
        onRaw (server a 0) (fun rn -> RawNode.propose (System.Text.Encoding.UTF8.GetBytes v) rn |> fst) c
    | "ProposeConfChange" ->
        let cc =
            match a.Args[1] with
            | ACC cc -> cc
            | _ -> failwithf "%O: no conf change" a
        // A "leave" is the empty, automatic ConfChangeV2 that leaves a joint configuration.
        onRaw (server a 0) (fun rn -> RawNode.proposeConfChange (ConfChangeV2Change(confChangeV2 cc)) rn |> fst) c
    | "AutoLeaveJoint" -> onRaft (server a 0) Actions.AutoLeaveJoint c
    | "ApplyConfChange" | "Apply" -> applyNext (server a 0) c
    | "AppendEntries" -> onRaft (server a 0) (fun r -> Actions.AppendEntries (idOf (server a 1)) true r |> fst) c
    | "Heartbeat" ->
        onRaft (server a 0) (fun r -> Actions.Heartbeat (idOf (server a 1)) (ReadOnly.heartbeatCtx r.ReadOnly) r) c
    | "SendSnapshot" -> onRaft (server a 0) (fun r -> Actions.SendSnapshot (idOf (server a 1)) r |> fst) c
    | "AdvanceCommitIndex" -> onRaft (server a 0) (fun r -> Actions.AdvanceCommitIndex r |> fst) c
    | "CompactLog" ->
        let i = server a 0
        let k = match a.Args[1] with ANum k -> k | _ -> failwithf "%O: no index" a
        compact i k (Oracle.configAt s.Nodes[i] k) c
    | "Persist" -> persist (server a 0) c
    | "TransferLeadership" -> onRaw (server a 0) (RawNode.transferLeader (idOf (server a 1))) c
    | "ReadIndex" -> onRaw (server a 0) (RawNode.readIndex (ctxBytes (s.ReadCount + 1UL))) c
    | "HandleReadIndexQuorum" ->
        let i = server a 0
        let ack = { Message.empty with Type = MsgHeartbeatResp; From = idOf i; To = idOf i; Context = ctxBytes s.Nodes[i].ReadPending.Id }
        onRaft i (Actions.HandleReadIndexQuorum ack) c
    | "Restart" -> restart st (server a 0) c
    | other -> failwithf "no implementation input for action %s" other

/// The server an action is about.
let actor (a: Action) : string option =
    match a.Args with
    | AName s :: _ when s.StartsWith "s" -> Some s
    | _ -> None

// ---- documented differences --------------------------------------------------------------------

/// Spec steps the implementation does not take, or takes differently, on purpose (each
/// one is explained in docs/conformance.md): the reason, and the state the implementation
/// must reach instead of the edge's target t. None when the step is not one of them.
let documented (md: Model) (s: ClusterS) (a: Action) (t: ClusterS) : (string * ClusterS) option =
    match a.Name with
    | "SendSnapshot" ->
        let i, j = server a 0, server a 1
        if not (s.Nodes[i].RecentActive.Contains j) then
            Some("etcd sends a snapshot only to a follower it heard from since the last quorum check", s)
        else None
    | "ApplyConfChange" when s.Nodes[server a 0].Role = "Leader" && t.Nodes[server a 0].Role = "Leader" ->
        let i = server a 0
        let n, u = s.Nodes[i], t.Nodes[i]
        let added = members u.Config - members n.Config
        if added.IsEmpty then None
        else
            let next = max (lastIndex n) 1UL
            Some(
                "etcd starts a member added by a conf change at Next = last index (probing with the last entry) and recently active; the spec at last index + 1, not active",
                { t with
                    Nodes =
                        t.Nodes.Add(
                            i,
                            { u with
                                NextIndex = added |> Set.fold (fun m j -> m.Add(j, next)) u.NextIndex
                                RecentActive = Set.union u.RecentActive added }
                        ) }
            )
    | "CheckQuorum" when not md.Settings.CheckQuorum ->
        let i = server a 0
        Some(
            "without CheckQuorum etcd never clears RecentActive; the spec's CheckQuorum step does",
            { t with Nodes = t.Nodes.Add(i, { t.Nodes[i] with RecentActive = s.Nodes[i].RecentActive }) }
        )
    | _ -> None

/// Deliveries the implementation handles differently on purpose: the reason and the state
/// it must reach instead of t. None when the delivery of m is not one of them.
let documentedDelivery (s: ClusterS) (m: SMsg) (t: ClusterS) : (string * ClusterS) option =
    let n = s.Nodes[m.To]
    if m.Type = "AppResp" && not m.Reject && n.Role = "Leader" && m.Term = n.CurrentTerm
       && n.LeadTransferee = m.From && m.Index < defaultArg (n.MatchIndex.TryFind m.From) 0UL then
        let timeoutNow = { emptyMsg with Type = "TimeoutNow"; From = m.To; To = m.From; Term = n.CurrentTerm }
        if t.Network.ContainsKey timeoutNow then
            Some(
                "etcd sends MsgTimeoutNow on an acknowledgement that moves Match (or answers a probe), not on a stale one",
                { t with Network = Oracle.withoutMessage timeoutNow t.Network }
            )
        else None
    else None

// ---- replaying an edge -------------------------------------------------------------------------

let private label (a: Action) (how: string) = a.ToString() + how

/// Tries each message of s as the one delivered along a "Next" edge to t.
let private deliveries (md: Model) (s: ClusterS) (c0: ImplCluster) (t: ClusterS) : Outcome =
    let tries =
        [ for KeyValue(m, _) in s.Network do
              let dest = s.Nodes[m.To]
              // A higher term is first adopted (UpdateTerm, the message stays), then handled.
              if m.Term > dest.CurrentTerm then
                  let c = onRaft m.To (fun r -> fst (Actions.UpdateTerm (implMsg m) r)) c0
                  yield sprintf "UpdateTerm(%s)" (showMsg m), m, c
              yield sprintf "Receive(%s)" (showMsg m), m, receive m c0 ]
    let judged = tries |> List.map (fun (name, m, c) -> name, judge md (Some m.To) s c0 t c)
    // A documented delivery: the implementation's result against the expected state.
    let documentedMatch () =
        tries
        |> List.tryPick (fun (_, m, c) ->
            match documentedDelivery s m t with
            | Some(why, expected) when (judge md (Some m.To) s c0 expected c).IsOk -> Some why
            | _ -> None)
    match judged |> List.tryPick (fun (name, r) -> match r with Ok how -> Some(name + how) | Error _ -> None) with
    | Some how -> Matched how
    | None when judged.IsEmpty -> Mismatch [ "no message to deliver" ]
    | None ->
        match documentedMatch () with
        | Some why -> Documented why
        | None ->
            let name, r = judged |> List.minBy (fun (_, r) -> match r with Error d -> d.Length | Ok _ -> 0)
            Mismatch((sprintf "closest delivery: %s" name) :: (match r with Error d -> d | Ok _ -> []))

/// Replays edge s -a-> t on the implementation, from c0, the concrete state of s.
let rec replayEdge (md: Model) (s: ClusterS) (c0: ImplCluster) (a: Action) (t: ClusterS) : Outcome =
    if a.Name = "Next" then
        // The network alone moved: a message lost or duplicated (Simulator.Drop/Duplicate).
        let networkOnly =
            if s.Nodes <> t.Nodes then None
            else
                match beyond s.Network t.Network, beyond t.Network s.Network with
                | [ m, 1 ], [] -> Some(sprintf "DropMessage(%s)" (showMsg m))
                | [], [ m, 1 ] when s.Network.ContainsKey m -> Some(sprintf "DuplicateMessage(%s)" (showMsg m))
                | _ -> None
        // TLC cannot name CompactLog's index (its range depends on the state): the one
        // that moved a snapshot is the one compacted to.
        let compaction =
            if s.Network <> t.Network then None
            else
            s.Nodes
            |> Map.tryPick (fun i n ->
                let k = t.Nodes[i].SnapshotIndex
                if k > n.SnapshotIndex then Some { Name = "CompactLog"; Args = [ AName i; ANum k ] } else None)
        match networkOnly, compaction with
        | Some how, _ -> Matched how
        | None, Some a -> replayEdge md s c0 a t
        | None, None -> deliveries md s c0 t
    else
        let c =
            try Ok(implStep md s a c0) with e -> Error(sprintf "the implementation threw: %s" e.Message)
        match c with
        | Error e -> Mismatch [ e ]
        | Ok c ->
            match judge md (actor a) s c0 t c with
            | Ok how -> Matched(label a how)
            | Error d ->
                match documented md s a t with
                | Some(why, expected) ->
                    match judge md (actor a) s c0 expected c with
                    | Ok _ -> Documented why
                    | Error d2 -> Mismatch((sprintf "documented (%s), but:" why) :: d2)
                | None -> Mismatch d

// ---- the converse: what the implementation accepts is a step of the spec ----------------------

/// An input the implementation accepts, given to one node of a graph state.
type Input =
    | Deliver of SMsg
    | Tick of string
    | Propose of string * string
    | ProposeCC of string * SCC
    | Forget of string
    | Write of string
    | ApplyNext of string
    | Compact of string * uint64
    | Transfer of string * string
    | Read of string
    | Crash of string

    override i.ToString() =
        match i with
        | Deliver m -> sprintf "deliver %s" (showMsg m)
        | Tick n -> sprintf "tick %s until its election clock fires" n
        | Propose(n, v) -> sprintf "propose %s at %s" v n
        | ProposeCC(n, cc) -> sprintf "propose %s at %s" (showCC cc) n
        | Forget n -> sprintf "forget the leader at %s" n
        | Write n -> sprintf "persist %s's Ready" n
        | ApplyNext n -> sprintf "apply the next committed entry at %s" n
        | Compact(n, k) -> sprintf "compact %s's storage to %d" n k
        | Transfer(n, j) -> sprintf "transfer leadership from %s to %s" n j
        | Read n -> sprintf "ReadIndex at %s" n
        | Crash n -> sprintf "restart %s" n

/// MCGraph's GraphCCs: MCRaft's small set of conf changes restricted to CCNodes.
let modelConfChanges (g: Graph) : SCC list =
    let nodes = configNames g "CCNodes"
    [ for op in [ "AddNode"; "AddLearner"; "Remove" ] do
          for n in nodes do
              let ch = Set.singleton { Op = op; Node = n }
              yield { Kind = "simple"; Changes = ch; AutoLeave = false }
              yield { Kind = "joint"; Changes = ch; AutoLeave = false }
              yield { Kind = "joint"; Changes = ch; AutoLeave = true }
      yield leaveJointCC ]

/// The inputs tried in state s: every message delivered, and per node the clock, proposals,
/// the storage and application threads, a crash; transfers and reads at leaders (elsewhere
/// etcd forwards them to the leader, which the spec does not model).
let inputs (md: Model) (ccs: SCC list) (values: string list) (s: ClusterS) : Input list =
    [ for KeyValue(m, _) in s.Network do
          yield Deliver m
      for KeyValue(i, n) in s.Nodes do
          yield Tick i
          for v in values do
              yield Propose(i, v)
          if n.Role = "Leader" then
              // While a change is pending every proposal is refused alike: one stands for all.
              let pending = n.PendingConfIndex > n.Applied
              for cc in (if pending then List.truncate 1 ccs else ccs) do
                  yield ProposeCC(i, cc)
              for j in md.Servers do
                  yield Transfer(i, j)
              yield Read i
          yield Forget i
          yield Write i
          if n.Applied < n.CommitIndex then yield ApplyNext i
          for k in n.SnapshotIndex + 1UL .. min n.Applied n.StableIndex do
              yield Compact(i, k)
          yield Crash i ]

let inputStep (md: Model) (s: ClusterS) (c0: ImplCluster) (input: Input) : ImplCluster =
    let act name args = implStep md s { Name = name; Args = args } c0
    match input with
    | Deliver m -> receive m c0
    | Tick i -> tickUntilTimeout md.Settings i c0
    | Propose(i, v) -> act "ClientRequest" [ AName i; AName v ]
    | ProposeCC(i, cc) -> act "ProposeConfChange" [ AName i; ACC cc ]
    | Forget i -> act "ForgetLeader" [ AName i ]
    | Write i -> act "Persist" [ AName i ]
    | ApplyNext i -> act "Apply" [ AName i ]
    | Compact(i, k) -> act "CompactLog" [ AName i; ANum k ]
    | Transfer(i, j) -> act "TransferLeadership" [ AName i; AName j ]
    | Read i -> act "ReadIndex" [ AName i ]
    | Crash i -> act "Restart" [ AName i ]

let private inputActor (input: Input) =
    match input with
    | Deliver m -> m.To
    | Tick i | Propose(i, _) | ProposeCC(i, _) | Forget i | Write i | ApplyNext i | Compact(i, _)
    | Transfer(i, _) | Read i | Crash i -> i

/// The spec actions an input may be (deliveries and compactions are labelled "Next").
let private labels (input: Input) =
    match input with
    | Deliver _ | Compact _ -> [ "Next" ]
    | Tick _ -> [ "Timeout"; "CheckQuorum" ]
    | Propose _ -> [ "ClientRequest" ]
    | ProposeCC _ -> [ "ProposeConfChange" ]
    | Forget _ -> [ "ForgetLeader" ]
    | Write _ -> [ "Persist" ]
    | ApplyNext _ -> [ "Apply"; "ApplyConfChange" ]
    | Transfer _ -> [ "TransferLeadership" ]
    | Read _ -> [ "ReadIndex" ]
    | Crash _ -> [ "Restart" ]

/// Inputs whose effect the spec leaves out on purpose (docs/conformance.md): the reason,
/// and the spec-side state the implementation must reach instead. None otherwise.
let documentedInput (s: ClusterS) (input: Input) : (string * ClusterS) option =
    let withNode (n: NodeS) (c: ClusterS) = { c with Nodes = c.Nodes.Add(n.Id, n) }
    let append (n: NodeS) (e: SEntry) = { n with Log = n.Log @ [ e ] }
    match input with
    | ProposeCC(i, cc) ->
        let n = s.Nodes[i]
        let refused = n.PendingConfIndex > n.Applied || (isJoint n.Config <> (cc.Kind = "leave"))
        if refused then
            let empty = { Term = n.CurrentTerm; Type = "normal"; Value = Nil; CC = noCC }
            Some("etcd appends a refused conf change as an empty entry; the spec drops the proposal", withNode (append n empty) s)
        elif not (Oracle.validCC n.Config cc) then
            let e = { Term = n.CurrentTerm; Type = "conf"; Value = Nil; CC = cc }
            Some(
                "a change invalid in the leader's configuration: the application must not propose it (the spec's leader never does)",
                withNode { append n e with PendingConfIndex = lastIndex n + 1UL } s
            )
        else None
    | Tick i ->
        let n = s.Nodes[i]
        if not n.Heard && n.Role <> "Leader" && (voters n.Config).Contains n.Id && not (Oracle.canCampaign n) then
            Some(
                "etcd restarts the election clock when unapplied conf changes forbid a campaign: the lease comes back",
                withNode { n with Heard = true } s
            )
        else None
    | Transfer(i, j) when i = j && s.Nodes[i].LeadTransferee <> Nil ->
        Some(
            "a transfer to the leader itself aborts the transfer under way in etcd; the spec has no such step",
            withNode { s.Nodes[i] with LeadTransferee = Nil } s
        )
    | Deliver m when m.Reject && (m.Type = "VoteResp" || m.Type = "PreVoteResp") ->
        let n = s.Nodes[m.To]
        let mine = if n.Role = "PreCandidate" then "PreVoteResp" else "VoteResp"
        if (n.Role = "Candidate" || n.Role = "PreCandidate") && m.Type = mine && m.Term <= n.CurrentTerm then
            Some(
                "a lost election: etcd becomes a follower at once; the spec's candidate waits for its next timeout",
                { withNode (Oracle.becomeFollower n.CurrentTerm Nil n) s with Network = Oracle.withoutMessage m s.Network }
            )
        else None
    | _ -> None

/// How one input went.
type ConverseOutcome =
    | Step of string
    | Stutter
    | DocumentedInput of string
    /// The spec steps needed are beyond the explored graph.
    | Unchecked
    | Unmatched of string list

/// Gives the input to the implementation in s and finds the spec step it is.
let converse (md: Model) (sid: int) (s: ClusterS) (c0: ImplCluster) (input: Input) : ConverseOutcome =
    let g = md.Graph
    let actor = Some(inputActor input)
    match (try Ok(inputStep md s c0 input) with e -> Error e.Message) with
    | Error e -> Unmatched [ sprintf "the implementation threw: %s" e ]
    | Ok impl ->
        let judgeTo t = judge md actor s c0 t impl
        match judgeWith strict false md actor s c0 s impl with
        | Ok _ -> Stutter
        | Error stutterDiff ->
            let wanted = labels input
            let edges =
                g.Out[sid]
                |> Array.filter (fun (dst, aid) ->
                    let a = g.Actions[aid]
                    List.contains a.Name wanted
                    && match input with
                       // A delivery consumes its message (UpdateTerm alone, which keeps it, is below).
                       | Deliver m -> defaultArg ((state g dst).Network.TryFind m) 0 < s.Network[m]
                       // A compaction (labelled "Next" too) moves the snapshot and nothing in flight.
                       | Compact(i, k) -> let t = state g dst in t.Network = s.Network && t.Nodes[i].SnapshotIndex = k
                       | _ -> a.Args.Head = AName(inputActor input))
            let direct =
                edges
                |> Array.tryPick (fun (dst, aid) ->
                    match judgeTo (state g dst) with
                    | Ok how -> Some(Step(g.Actions[aid].ToString() + how))
                    | Error _ -> None)
            // A step etcd takes differently, as documented for the edge replay.
            let documentedStep () =
                edges
                |> Array.tryPick (fun (dst, aid) ->
                    match documented md s g.Actions[aid] (state g dst) with
                    | Some(why, expected) when (judgeTo expected).IsOk -> Some(DocumentedInput why)
                    | _ -> None)
            match (match direct with Some o -> Some o | None -> documentedStep ()) with
            | Some o -> o
            | None ->
                // A message of a higher term: UpdateTerm first (the message stays), then its handling.
                let twoSteps =
                    match input with
                    | Deliver m when m.Term > s.Nodes[m.To].CurrentTerm ->
                        let firsts =
                            g.Out[sid]
                            |> Array.filter (fun (dst, aid) ->
                                g.Actions[aid].Name = "Next"
                                && (let t1 = state g dst
                                    t1.Network = s.Network && t1.Nodes[m.To].CurrentTerm = m.Term))
                        if firsts |> Array.exists (fun (dst, _) -> not g.Expanded[dst]) then Some Unchecked
                        else
                            firsts
                            |> Array.tryPick (fun (t1, _) ->
                                g.Out[t1]
                                |> Array.tryPick (fun (dst, aid) ->
                                    if g.Actions[aid].Name <> "Next" then None
                                    else
                                        match judgeTo (state g dst) with
                                        | Ok how -> Some(Step("UpdateTerm; Receive" + how))
                                        | Error _ -> None))
                    | _ -> None
                // The spec delays a delivery that truncates the log (or restores a snapshot)
                // until the node's earlier responses are out: its Persist step first. etcd
                // takes the message at once, its storage writes being ordered: the effect on
                // the node must be the spec's after that Persist, outbox and disk aside.
                let afterWrite =
                    match input with
                    | Deliver m when twoSteps.IsNone && not s.Nodes[m.To].Outbox.IsEmpty ->
                        let i = m.To
                        let relax =
                            { Network = false
                              Node =
                                fun n ->
                                    if n.Id <> i then n
                                    else { n with Outbox = Map.empty; StableIndex = 0UL; HardTerm = 0UL; HardVote = Nil; HardCommit = None } }
                        let persisted =
                            g.Out[sid] |> Array.filter (fun (_, aid) -> g.Actions[aid].Name = "Persist" && g.Actions[aid].Args = [ AName i ])
                        if persisted |> Array.exists (fun (dst, _) -> not g.Expanded[dst]) then Some Unchecked
                        else
                            persisted
                            |> Array.tryPick (fun (s1, _) ->
                                g.Out[s1]
                                |> Array.tryPick (fun (dst, aid) ->
                                    let t = state g dst
                                    if g.Actions[aid].Name <> "Next" || t.Network.ContainsKey m && t.Network[m] >= (state g s1).Network[m] then None
                                    else
                                        match judgeWith relax true md actor s c0 t impl with
                                        | Ok _ -> Some(DocumentedInput "the spec delays a truncating delivery until the node's earlier responses are sent; etcd takes it at once (its writes are ordered)")
                                        | Error _ -> None))
                    | _ -> None
                let differently =
                    match input with
                    | Read i when s.Nodes[i].ReadPending <> noRead ->
                        // etcd queues further reads behind the pending one and sends a heartbeat
                        // round for them; the spec keeps one read at a time.
                        let relax =
                            { Network = false
                              Node = fun n -> if n.Id = i then { n with ReadPending = noRead } else n }
                        match judgeWith relax false md actor s c0 s impl with
                        | Ok _ -> Some(DocumentedInput "a second ReadIndex while one is pending: etcd queues it, the spec keeps one at a time")
                        | Error _ -> None
                    | Deliver m ->
                        edges
                        |> Array.tryPick (fun (dst, _) ->
                            match documentedDelivery s m (state g dst) with
                            | Some(why, expected) when (judgeTo expected).IsOk -> Some(DocumentedInput why)
                            | _ -> None)
                    | _ -> None
                match [ twoSteps; afterWrite; differently ] |> List.tryPick id with
                | Some o -> o
                | None ->
                    match documentedInput s input with
                    | Some(why, expected) when (judgeTo expected).IsOk -> DocumentedInput why
                    | _ ->
                        let closest =
                            edges
                            |> Array.map (fun (dst, aid) ->
                                g.Actions[aid].ToString(), (match judgeTo (state g dst) with Error d -> d | Ok _ -> []))
                            |> Array.sortBy (fun (_, d) -> d.Length)
                            |> Array.tryHead
                        match closest with
                        | Some(name, d) -> Unmatched((sprintf "closest spec step: %s" name) :: d)
                        | None -> Unmatched("no spec step of this kind; as a stutter:" :: stutterDiff)
