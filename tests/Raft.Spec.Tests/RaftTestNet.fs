/// A tiny in-memory cluster for behavioural tests of the node: each node has a MemoryStorage;
/// "ready" persists unstable state, applies committed entries (conf changes included) and
/// acknowledges both as etcd's RawNode does in synchronous mode; the network delivers
/// messages in order, except those a filter drops.
module Raft.Spec.Tests.RaftTestNet

open Raft.Spec

type Node = { R: RaftState; S: MemoryStorage; Applied: Entry list }

type Net =
    { Nodes: Map<uint64, Node>
      /// Messages for which this is true are lost.
      Drop: Message -> bool }

let okOr (r: Result<'a, 'e>) : 'a =
    match r with
    | Ok v -> v
    | Error e -> failwithf "expected Ok, got %A" e

let storageWith (voters: uint64 list) (learners: uint64 list) : MemoryStorage =
    let cs = { ConfState.empty with Voters = voters; Learners = learners }
    let snap = { Snapshot.empty with Metadata = { Snapshot.empty.Metadata with ConfState = cs } }
    MemoryStorage.empty |> MemoryStorage.applySnapshot snap |> okOr

let config (id: uint64) (s: MemoryStorage) : Config =
    { Config.create id (MemoryStorage.asStorage s) with ElectionTick = 10; HeartbeatTick = 1; Tracing = true }

let nodeWith (cfg: Config) (s: MemoryStorage) : Node =
    { R = Raft.create { cfg with Storage = MemoryStorage.asStorage s } |> okOr; S = s; Applied = [] }

/// A cluster of voters 1..n, all configured by tweak.
let cluster (n: int) (tweak: Config -> Config) : Net =
    let ids = [ 1UL .. uint64 n ]
    { Nodes =
        ids
        |> List.map (fun id ->
            let s = storageWith ids []
            id, nodeWith (tweak (config id s)) s)
        |> Map.ofList
      Drop = fun _ -> false }

let node (id: uint64) (net: Net) = net.Nodes[id]
let state (id: uint64) (net: Net) = net.Nodes[id].R
let setNode (id: uint64) (n: Node) (net: Net) = { net with Nodes = Map.add id n net.Nodes }

let private stepNode (m: Message) (n: Node) : Node = { n with R = fst (Step.step n.R m) }

/// Steps a message at a node, returning the step's outcome too.
let stepAt (id: uint64) (m: Message) (net: Net) : Net * Result<unit, StepError> =
    let n = node id net
    let r, res = Step.step n.R m
    setNode id { n with R = r } net, res

/// Persists, applies and acknowledges like RawNode.Ready + Advance; returns the messages to send.
let ready (n: Node) : Node * Message list =
    let r = n.R
    let snap = RaftLog.nextUnstableSnapshot r.RaftLog
    let s = match snap with Some sn -> MemoryStorage.applySnapshot sn n.S |> okOr | None -> n.S
    let ents = RaftLog.nextUnstableEnts r.RaftLog
    let s = s |> MemoryStorage.append ents |> MemoryStorage.setHardState (Raft.hardState r)
    let r = { r with RaftLog = r.RaftLog |> RaftLog.acceptUnstable |> RaftLog.withStorage (MemoryStorage.asStorage s) }
    let committed = RaftLog.nextCommittedEnts true r.RaftLog
    let r =
        if committed.Length = 0 then r
        else
            let last = committed[committed.Length - 1].Index
            { r with RaftLog = RaftLog.acceptApplying last (Codec.entriesSize committed) true r.RaftLog }
    let r, msgs = Raft.takeMessages r
    let r, after = Raft.advanceMessagesAfterAppend r
    let toSelf, toOthers = after |> List.partition (fun m -> m.To = r.Id)
    // The application applies the committed entries, conf changes included.
    let r =
        committed
        |> Array.fold
            (fun r e ->
                match Codec.confChangeOfEntry e |> okOr with
                | Some cc -> Raft.applyConfChange r (ConfChangeI.asV2 cc) |> okOr |> fst
                | None -> r)
            r
    let n = { n with R = r; S = s; Applied = n.Applied @ List.ofArray committed }
    // Advance: self-acks, then the storage acknowledgements.
    let n = toSelf |> List.fold (fun n m -> stepNode m n) n
    let n =
        if ents.Length > 0 || snap.IsSome then
            let last = if ents.Length > 0 then ents[ents.Length - 1] else Entry.create 0UL 0UL [||]
            stepNode
                { Message.empty with
                    Type = MsgStorageAppendResp
                    From = NodeId.LocalAppendThread
                    To = n.R.Id
                    Term = (if ents.Length > 0 then n.R.Term else 0UL)
                    Index = last.Index
                    LogTerm = last.Term
                    Snapshot = snap }
                n
        else n
    let n =
        if committed.Length > 0 then
            stepNode
                { Message.empty with
                    Type = MsgStorageApplyResp
                    From = NodeId.LocalApplyThread
                    To = n.R.Id
                    Entries = committed }
                n
        else n
    n, msgs @ toOthers

/// Delivers one message unless dropped or addressed to an unknown node.
let deliver (m: Message) (net: Net) : Net =
    if net.Drop m then net
    else
        match Map.tryFind m.To net.Nodes with
        | Some n -> setNode m.To (stepNode m n) net
        | None -> net

/// Runs ready/deliver rounds until nothing is left to send.
let stabilize (net: Net) : Net =
    let rec go net rounds =
        if rounds > 1000 then failwith "cluster did not stabilize"
        let net, msgs =
            net.Nodes
            |> Map.fold
                (fun (net, acc) id n ->
                    let n, msgs = ready n
                    setNode id n net, acc @ msgs)
                (net, [])
        if List.isEmpty msgs then net else go (msgs |> List.fold (fun net m -> deliver m net) net) (rounds + 1)
    go net 0

let tickNode (id: uint64) (net: Net) : Net =
    let n = node id net
    setNode id { n with R = Step.tick n.R } net

let tickTimes (id: uint64) (times: int) (net: Net) : Net =
    Seq.fold (fun net _ -> tickNode id net) net (seq { 1..times })

let hup (id: uint64) (net: Net) : Net = stepAt id { Message.empty with Type = MsgHup; From = id } net |> fst

let propose (id: uint64) (data: string) (net: Net) : Net * Result<unit, StepError> =
    stepAt
        id
        { Message.empty with
            Type = MsgProp
            From = id
            Entries = [| Entry.create 0UL 0UL (System.Text.Encoding.UTF8.GetBytes data) |] }
        net

let proposeConfChange (id: uint64) (cc: ConfChangeI) (net: Net) : Net * Result<unit, StepError> =
    let typ, data = Codec.marshalConfChange (Some cc)
    stepAt id { Message.empty with Type = MsgProp; Entries = [| { Entry.create 0UL 0UL data with Type = typ } |] } net

/// All log lines a node produced so far (drains them).
let takeLogs (id: uint64) (net: Net) : Net * string list =
    let n = node id net
    let r, lines, _ = Raft.takeOutput n.R
    setNode id { n with R = r } net, lines |> List.map (fun l -> l.Text)

let logsOf (id: uint64) (net: Net) : string list = (state id net).Logs |> Outbox.toList |> List.map (fun l -> l.Text)

let isolate (id: uint64) (net: Net) = { net with Drop = fun m -> m.From = id || m.To = id }
let heal (net: Net) = { net with Drop = fun _ -> false }

/// The entries of a node's log (stable and unstable).
let entriesOf (id: uint64) (net: Net) : (uint64 * uint64) list =
    RaftLog.allEntries (state id net).RaftLog |> Array.map (fun e -> e.Index, e.Term) |> List.ofArray

let elect (id: uint64) (net: Net) : Net = net |> hup id |> stabilize
