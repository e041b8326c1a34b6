/// etcd-raft's interaction test harness (rafttest.InteractionEnv): a group of RawNodes with
/// in-memory storage, driven by the commands of etcd's interaction test files (add-nodes,
/// campaign, propose, deliver-msgs, process-ready, stabilize, ...), printing what happens in
/// exactly the text etcd prints, log lines included.
///
/// The environment is an immutable value; a command maps it to a new one plus its output.
/// Output goes to a StringBuilder owned by one call of `handle`.
module Raft.Spec.Tests.Interaction

open System
open System.Text
open Raft.Spec
open Raft.Spec.Tests.DataDriven

/// etcd's RedirectLogger levels, in order; NONE silences everything but errors.
let private levelNames = [| "DEBUG"; "INFO"; "WARN"; "ERROR"; "FATAL"; "NONE" |]

let private quietLevel = levelNames.Length - 1

let private levelIndex (l: LogLevel) =
    match l with
    | LogLevel.Debug -> 0
    | LogLevel.Info -> 1
    | LogLevel.Warn -> 2
    | LogLevel.Error -> 3

type Node =
    { Raw: RawNode
      Storage: MemoryStorage
      Config: Config
      /// MsgStorageAppend messages waiting for the append thread (async storage writes).
      AppendWork: Message list
      /// MsgStorageApply messages waiting for the apply thread.
      ApplyWork: Message list
      /// States of the "appender" state machine, newest first. The storage answers
      /// Snapshot() with the newest (etcd's snapOverrideStorage).
      History: Snapshot list }

type Env =
    { /// Node i has id i+1.
      Nodes: Node list
      /// Messages in flight, in the order they were sent.
      Messages: Message list
      /// Index into levelNames.
      Level: int }

let newEnv () : Env = { Nodes = []; Messages = []; Level = 0 }

/// A failure reported in the output (etcd's handlers returning an error), with the
/// environment as it was when it happened: earlier effects are kept, as in etcd.
type Outcome = Result<Env, Env * string>

// ---- output ------------------------------------------------------------------------------

let private write (env: Env) (out: StringBuilder) (text: string) =
    if env.Level <> quietLevel then out.Append text |> ignore

let private writeLine env out text = write env out (text + "\n")

/// The raft logger: "LEVEL text", one line each, filtered by the level.
let private writeLogs (env: Env) (out: StringBuilder) (lines: LogLine list) =
    for l in lines do
        let lvl = levelIndex l.Level
        if env.Level <= lvl then
            out.Append(levelNames[lvl]).Append(' ').Append(l.Text) |> ignore
            if not (l.Text.EndsWith '\n') then out.Append '\n' |> ignore

/// Runs `f` on a fresh buffer and appends its lines to `out`, each indented by two
/// spaces and ended by a newline (etcd's withIndent, which reads the text line by line).
let private indented (out: StringBuilder) (f: StringBuilder -> 'a) : 'a =
    let sub = StringBuilder()
    let result = f sub
    let text = sub.ToString()
    if text <> "" then
        let text = if text.EndsWith '\n' then text.Substring(0, text.Length - 1) else text
        for line in text.Split '\n' do
            out.Append("  ").Append(line.TrimEnd '\r').Append('\n') |> ignore
    result

// ---- nodes -------------------------------------------------------------------------------

let private node (env: Env) (idx: int) : Node =
    match List.tryItem idx env.Nodes with
    | Some n -> n
    | None -> failwithf "no node with index %d (id %d)" idx (idx + 1)

/// The storage raft reads: the node's MemoryStorage, except that Snapshot() returns the
/// newest state of the application, as etcd's harness arranges.
let private storageView (storage: MemoryStorage) (newest: Snapshot) : IStorage =
    let inner = MemoryStorage.asStorage storage
    { new IStorage with
        member _.InitialState() = inner.InitialState()
        member _.Entries(lo, hi, maxSize) = inner.Entries(lo, hi, maxSize)
        member _.Term i = inner.Term i
        member _.LastIndex() = inner.LastIndex()
        member _.FirstIndex() = inner.FirstIndex()
        member _.Snapshot() = Ok newest }

/// Stores a node back, handing its RawNode the storage as it now is (etcd shares one
/// mutable storage between the harness and raft; here raft gets each new value).
let private setNode (env: Env) (idx: int) (n: Node) : Env =
    let n = { n with Raw = RawNode.withStorage (storageView n.Storage (List.head n.History)) n.Raw }
    { env with Nodes = List.updateAt idx n env.Nodes }

/// Applies a RawNode operation to node idx and prints the log lines it produced.
let private onRaw (env: Env) (out: StringBuilder) (idx: int) (f: RawNode -> RawNode * 'r) : Env * 'r =
    let n = node env idx
    let raw, result = f n.Raw
    let raw, logs = RawNode.takeLogs raw
    writeLogs env out logs
    { env with Nodes = List.updateAt idx { n with Raw = raw } env.Nodes }, result

let private onRaw_ env out idx (f: RawNode -> RawNode) : Env =
    onRaw env out idx (fun r -> f r, ()) |> fst

/// A RawNode operation that may fail, as etcd's methods returning an error.
let private onRawStep env out idx (f: RawNode -> RawNode * StepError option) : Outcome =
    match onRaw env out idx f with
    | env, None -> Ok env
    | env, Some e -> Error(env, StepError.message e)

let private storageError (e: StorageError) = StorageError.message e

// ---- storage and state machine (processAppend / processApply) ------------------------------

/// Persists a hard state, then a snapshot or entries (etcd's processAppend).
let private processAppend (env: Env) (idx: int) (hs: HardState) (ents: Entry[]) (snap: Snapshot) : Outcome =
    let n = node env idx
    let s = if HardState.isEmpty hs then n.Storage else MemoryStorage.setHardState hs n.Storage
    if not (Snapshot.isEmpty snap) then
        if ents.Length > 0 then
            Error(setNode env idx { n with Storage = s }, "can't apply snapshot and entries at the same time")
        else
            match MemoryStorage.applySnapshot snap s with
            | Ok s -> Ok(setNode env idx { n with Storage = s })
            | Error e -> Error(setNode env idx { n with Storage = s }, storageError e)
    else
        Ok(setNode env idx { n with Storage = MemoryStorage.append ents s })

/// Applies committed entries to the "appender" state machine, whose state is the
/// concatenation of every payload (etcd's processApply), and conf changes to the node.
let private processApply (env: Env) (out: StringBuilder) (idx: int) (ents: Entry[]) : Outcome =
    let applyOne (env: Env) (e: Entry) : Outcome =
        let confChange =
            match e.Type with
            | EntryNormal -> Ok None
            | EntryConfChange -> Codec.decodeConfChange e.Data |> Result.map (fun cc -> Some(cc.Context, ConfChangeV1 cc))
            | EntryConfChangeV2 ->
                Codec.decodeConfChangeV2 e.Data |> Result.map (fun cc -> Some(cc.Context, ConfChangeV2Change cc))
        match confChange with
        | Error err -> Error(env, err)
        | Ok cc ->
            let env, update, confState =
                match cc with
                | None -> env, e.Data, None
                | Some(context, cc) ->
                    let env, cs = onRaw env out idx (RawNode.applyConfChange cc)
                    env, context, Some cs
            let n = node env idx
            let last = List.head n.History
            let snap =
                { Data = Array.append last.Data update
                  Metadata =
                    { Index = e.Index
                      Term = e.Term
                      ConfState = defaultArg confState last.Metadata.ConfState } }
            Ok(setNode env idx { n with History = snap :: n.History })
    ents |> Array.fold (fun acc e -> Result.bind (fun env -> applyOne env e) acc) (Ok env)

// ---- commands ----------------------------------------------------------------------------

/// The first argument as a node index (ids are 1-based).
let private firstAsNodeIdx (d: TestData) =
    match d.CmdArgs with
    | a :: _ -> TestData.parseInt d "node" a.Key - 1
    | [] -> fail d "missing node argument"

/// The bare (value-less) arguments as node indexes.
let private nodeIdxs (d: TestData) =
    d.CmdArgs |> List.filter (fun a -> a.Vals.IsEmpty) |> List.map (fun a -> TestData.parseInt d "node" a.Key - 1)

let private uintArg (d: TestData) (a: CmdArg) (v: string) = TestData.parseUInt64 d a.Key v
let private boolArg (d: TestData) (a: CmdArg) (v: string) = TestData.parseBool d a.Key v

/// etcd's raftConfigStub: short timeouts and no limits.
let private configStub (id: uint64) : Config =
    { Config.create id (MemoryStorage.asStorage MemoryStorage.empty) with
        ElectionTick = 3
        HeartbeatTick = 1
        MaxSizePerMsg = UInt64.MaxValue
        MaxInflightMsgs = Int32.MaxValue }

/// add-nodes N [voters=(..)] [learners=(..)] [index=I] [content=C] [inflight=N] [async-storage-writes=B]
/// [prevote=B] [checkquorum=B] [max-committed-size-per-ready=N] [disable-conf-change-validation=B]
/// [read-only=safe|lease-based] [step-down-on-removal=B]
let private addNodes (env: Env) (out: StringBuilder) (d: TestData) : Outcome =
    let count = firstAsNodeIdx d + 1
    // The template: a config stub and the snapshot every new node starts from.
    let template =
        d.CmdArgs
        |> List.tail
        |> List.fold
            (fun (acc: Result<Config * Snapshot, string>) a ->
                a.Vals
                |> List.fold
                    (fun acc v ->
                        match acc with
                        | Error _ -> acc
                        | Ok(cfg: Config, snap: Snapshot) ->
                            let cs = snap.Metadata.ConfState
                            let withCs cs = { snap with Metadata = { snap.Metadata with ConfState = cs } }
                            match a.Key with
                            | "voters" -> Ok(cfg, withCs { cs with Voters = cs.Voters @ [ uintArg d a v ] })
                            | "learners" -> Ok(cfg, withCs { cs with Learners = cs.Learners @ [ uintArg d a v ] })
                            | "inflight" -> Ok({ cfg with MaxInflightMsgs = TestData.parseInt d a.Key v }, snap)
                            | "index" ->
                                let i = uintArg d a v
                                Ok({ cfg with Applied = i }, { snap with Metadata = { snap.Metadata with Index = i } })
                            | "content" -> Ok(cfg, { snap with Data = Encoding.UTF8.GetBytes v })
                            | "async-storage-writes" -> Ok({ cfg with AsyncStorageWrites = boolArg d a v }, snap)
                            | "prevote" -> Ok({ cfg with PreVote = boolArg d a v }, snap)
                            | "checkquorum" -> Ok({ cfg with CheckQuorum = boolArg d a v }, snap)
                            | "max-committed-size-per-ready" -> Ok({ cfg with MaxCommittedSizePerReady = uintArg d a v }, snap)
                            | "disable-conf-change-validation" ->
                                Ok({ cfg with DisableConfChangeValidation = boolArg d a v }, snap)
                            | "read-only" ->
                                match v with
                                | "safe" -> Ok({ cfg with ReadOnlyOption = ReadOnlySafe }, snap)
                                | "lease-based" -> Ok({ cfg with ReadOnlyOption = ReadOnlyLeaseBased }, snap)
                                | _ -> Error(sprintf "invalid read-only option %s" (Describe.goQuote (Encoding.UTF8.GetBytes v)))
                            | "step-down-on-removal" -> Ok({ cfg with StepDownOnRemoval = boolArg d a v }, snap)
                            | _ -> acc)
                    acc)
            (Ok(configStub 1UL, Snapshot.empty))
    match template with
    | Error e -> Error(env, e)
    | Ok(cfg, snap) ->
        // Any snapshot field set means the nodes are bootstrapped from it (proto.Equal to empty).
        let bootstrap = snap <> Snapshot.empty
        let rec add (env: Env) (left: int) : Outcome =
            if left = 0 then
                Ok env
            else
                let id = uint64 (env.Nodes.Length + 1)
                let prepared =
                    if not bootstrap then
                        Ok(MemoryStorage.empty, snap)
                    elif snap.Metadata.Index <= 1UL then
                        Error "index must be specified as > 1 due to bootstrap"
                    else
                        let snap = { snap with Metadata = { snap.Metadata with Term = 1UL } }
                        match MemoryStorage.applySnapshot snap MemoryStorage.empty with
                        | Error e -> Error(storageError e)
                        | Ok s when MemoryStorage.firstIndex s <> snap.Metadata.Index + 1UL ->
                            Error(
                                sprintf "failed to establish first index %d; got %d"
                                    (snap.Metadata.Index + 1UL) (MemoryStorage.firstIndex s)
                            )
                        | Ok s -> Ok(s, snap)
                match prepared with
                | Error e -> Error(env, e)
                | Ok(storage, snap) ->
                    let cfg = { cfg with Id = id; RandomSeed = id; Storage = storageView storage snap }
                    match RawNode.create cfg with
                    | Error e -> Error(env, e)
                    | Ok raw ->
                        let raw, logs = RawNode.takeLogs raw
                        writeLogs env out logs
                        let n =
                            { Raw = raw; Storage = storage; Config = cfg; AppendWork = []; ApplyWork = []; History = [ snap ] }
                        add { env with Nodes = env.Nodes @ [ n ] } (left - 1)
        add env count

/// Ready handling of one node: print the Ready, persist and apply it (unless the node
/// writes through its storage threads), queue its messages, advance.
let private processReady (env: Env) (out: StringBuilder) (idx: int) : Outcome =
    let env, rd = onRaw env out idx RawNode.ready
    write env out (RawNode.describeReady rd)
    let n = node env idx
    let async = n.Config.AsyncStorageWrites
    let persisted =
        if async then
            Ok env
        else
            processAppend env idx (defaultArg rd.HardState HardState.empty) rd.Entries (defaultArg rd.Snapshot Snapshot.empty)
            |> Result.bind (fun env -> processApply env out idx rd.CommittedEntries)
    persisted
    |> Result.map (fun env ->
        let env =
            rd.Messages
            |> Array.fold
                (fun (env: Env) m ->
                    if NodeId.isLocalThread m.To then
                        if not async then invalidOp "unexpected local msg target"
                        let n = node env idx
                        match m.Type with
                        | MsgStorageAppend -> { env with Nodes = List.updateAt idx { n with AppendWork = n.AppendWork @ [ m ] } env.Nodes }
                        | MsgStorageApply -> { env with Nodes = List.updateAt idx { n with ApplyWork = n.ApplyWork @ [ m ] } env.Nodes }
                        | t -> invalidOp (sprintf "unexpected message type %s" (Describe.messageTypeName t))
                    else
                        { env with Messages = env.Messages @ [ m ] })
                env
        if async then env else onRaw_ env out idx RawNode.advance)

/// Runs a per-node action on each index; with several, each gets a header and indentation.
let private forEachNode (env: Env) (out: StringBuilder) (header: string) idxs (f: Env -> StringBuilder -> int -> Outcome) =
    let many = List.length idxs > 1
    idxs
    |> List.fold
        (fun acc idx ->
            acc
            |> Result.bind (fun env ->
                if many then
                    write env out (sprintf "> %d %s\n" (idx + 1) header)
                    indented out (fun sub -> f env sub idx)
                else
                    f env out idx))
        (Ok env)

/// Whether a message must never be dropped: it stays on the node or involves a storage thread.
let private isLocalMsg (m: Message) = m.From = m.To || NodeId.isLocalThread m.From || NodeId.isLocalThread m.To

/// The messages to `id` (of one type, if given), in order, and the rest.
let private splitMsgs (msgs: Message list) (id: uint64) (typ: MessageType option) (drop: bool) =
    msgs |> List.partition (fun m -> m.To = id && not (drop && isLocalMsg m) && (typ.IsNone || typ = Some m.Type))

type private Recipient = { Id: uint64; Drop: bool }

/// Delivers (or drops) the messages to the recipients; returns how many were handled.
let private deliverMsgs (env: Env) (out: StringBuilder) (typ: MessageType option) (rs: Recipient list) : Env * int =
    rs
    |> List.fold
        (fun (env: Env, count) r ->
            let msgs, rest = splitMsgs env.Messages r.Id typ r.Drop
            let env = { env with Messages = rest }
            let env =
                msgs
                |> List.fold
                    (fun (env: Env) m ->
                        if r.Drop then write env out "dropped: "
                        writeLine env out (Describe.message m)
                        if r.Drop then
                            env
                        else
                            let env, err = onRaw env out (int (m.To - 1UL)) (RawNode.step m)
                            err |> Option.iter (fun e -> writeLine env out (StepError.message e))
                            env)
                    env
            env, count + msgs.Length)
        (env, 0)

/// One message of a storage thread: print it, do the work, release its responses.
let private processThread
    (env: Env)
    (out: StringBuilder)
    (idx: int)
    (queue: Node -> Message list)
    (setQueue: Node -> Message list -> Node)
    (noWork: string)
    (work: Env -> Message -> Outcome)
    : Outcome =
    match queue (node env idx) with
    | [] ->
        write env out noWork
        Ok env
    | m :: rest ->
        let env = { env with Nodes = List.updateAt idx (setQueue (node env idx) rest) env.Nodes }
        write env out "Processing:\n"
        writeLine env out (Describe.message { m with Responses = [||] })
        work env m
        |> Result.map (fun env ->
            write env out "Responses:\n"
            for r in m.Responses do
                writeLine env out (Describe.message r)
            { env with Messages = env.Messages @ List.ofArray m.Responses })

let private processAppendThread (env: Env) (out: StringBuilder) (idx: int) : Outcome =
    processThread env out idx (fun n -> n.AppendWork) (fun n q -> { n with AppendWork = q }) "no append work to perform"
        (fun env m ->
            let hs = { Term = m.Term; Vote = m.Vote; Commit = m.Commit }
            processAppend env idx hs m.Entries (defaultArg m.Snapshot Snapshot.empty))

let private processApplyThread (env: Env) (out: StringBuilder) (idx: int) : Outcome =
    processThread env out idx (fun n -> n.ApplyWork) (fun n q -> { n with ApplyWork = q }) "no apply work to perform"
        (fun env m -> processApply env out idx m.Entries)

/// Ready handling, message delivery and storage-thread work on the nodes until none has
/// anything left to do (etcd's Stabilize).
let private stabilize (env: Env) (out: StringBuilder) (idxs: int list) : Outcome =
    let idxs = if idxs.IsEmpty then List.init env.Nodes.Length id else idxs
    let rec round (env: Env) : Outcome =
        let readyPhase =
            idxs
            |> List.fold
                (fun acc idx ->
                    acc
                    |> Result.bind (fun (env, busy) ->
                        if RawNode.hasReady (node env idx).Raw then
                            write env out (sprintf "> %d handling Ready\n" (idx + 1))
                            indented out (fun sub -> processReady env sub idx) |> Result.map (fun env -> env, true)
                        else
                            Ok(env, busy)))
                (Ok(env, false))
        readyPhase
        |> Result.bind (fun (env, busy) ->
            let env, busy =
                idxs
                |> List.fold
                    (fun (env: Env, busy) idx ->
                        let id = uint64 (idx + 1)
                        match splitMsgs env.Messages id None false with
                        | [], _ -> env, busy
                        | _ ->
                            write env out (sprintf "> %d receiving messages\n" id)
                            let env = indented out (fun sub -> deliverMsgs env sub None [ { Id = id; Drop = false } ] |> fst)
                            env, true)
                    (env, busy)
            let drain (header: string) (queue: Node -> Message list) (proc: Env -> StringBuilder -> int -> Outcome) keepErrors (start: Result<Env * bool, Env * string>) =
                idxs
                |> List.fold
                    (fun acc idx ->
                        acc
                        |> Result.bind (fun (env: Env, busy) ->
                            if List.isEmpty (queue (node env idx)) then
                                Ok(env, busy)
                            else
                                write env out (sprintf "> %d %s\n" (idx + 1) header)
                                let rec loop (env: Env) =
                                    if List.isEmpty (queue (node env idx)) then
                                        Ok env
                                    else
                                        match indented out (fun sub -> proc env sub idx) with
                                        | Ok env -> loop env
                                        | Error(env, e) when not keepErrors -> Error(env, e)
                                        | Error(env, _) -> loop env
                                loop env |> Result.map (fun env -> env, true)))
                    start
            Ok(env, busy)
            // Errors of the append thread end the command; those of the apply thread are ignored, as in etcd.
            |> drain "processing append thread" (fun n -> n.AppendWork) processAppendThread false
            |> drain "processing apply thread" (fun n -> n.ApplyWork) processApplyThread true
            |> Result.bind (fun (env, busy) -> if busy then round env else Ok env))
    round env

/// The node's stored log, one entry per line (etcd's RaftLog).
let private raftLog (env: Env) (out: StringBuilder) (idx: int) : Outcome =
    let s = (node env idx).Storage
    let fi = MemoryStorage.firstIndex s
    let li = MemoryStorage.lastIndex s
    if li < fi then
        write env out (sprintf "log is empty: first index=%d, last index=%d" fi li)
        Ok env
    else
        match (MemoryStorage.asStorage s).Entries(fi, li + 1UL, UInt64.MaxValue) with
        | Ok ents ->
            write env out (Describe.entries ents)
            Ok env
        | Error e -> Error(env, storageError e)

/// The conf changes of a "v1 l2 r3" line, with etcd's error texts.
let private confChangesFromString (s: string) : Result<ConfChangeSingle list, string> =
    let tokens = s.Trim().Split(' ') |> Array.filter (fun t -> t <> "") |> List.ofArray
    let parse (tok: string) =
        if tok.Length < 2 then
            Error(sprintf "unknown token %s" tok)
        else
            let typ =
                match tok[0] with
                | 'v' -> Ok ConfChangeAddNode
                | 'l' -> Ok ConfChangeAddLearnerNode
                | 'r' -> Ok ConfChangeRemoveNode
                | 'u' -> Ok ConfChangeUpdateNode
                | _ -> Error(sprintf "unknown input: %s" tok)
            typ
            |> Result.bind (fun t ->
                match UInt64.TryParse(tok.AsSpan 1) with
                | true, id -> Ok { Type = t; NodeId = id }
                | _ -> Error(sprintf "strconv.ParseUint: parsing %s: invalid syntax" (Describe.goQuote (Encoding.UTF8.GetBytes(tok.Substring 1)))))
    tokens
    |> List.fold (fun acc tok -> acc |> Result.bind (fun xs -> parse tok |> Result.map (fun c -> c :: xs))) (Ok [])
    |> Result.map List.rev

let private proposeConfChange (env: Env) (out: StringBuilder) (d: TestData) : Outcome =
    let idx = firstAsNodeIdx d
    let options =
        d.CmdArgs
        |> List.tail
        |> List.collect (fun a -> a.Vals |> List.map (fun v -> a.Key, v))
        |> List.fold
            (fun acc (key, v) ->
                acc
                |> Result.bind (fun (v1, transition) ->
                    match key with
                    | "v1" ->
                        match v with
                        | "1" | "t" | "T" | "true" | "TRUE" | "True" -> Ok(true, transition)
                        | "0" | "f" | "F" | "false" | "FALSE" | "False" -> Ok(false, transition)
                        | _ -> Error(sprintf "strconv.ParseBool: parsing %s: invalid syntax" (Describe.goQuote (Encoding.UTF8.GetBytes v)))
                    | "transition" ->
                        match v with
                        | "auto" -> Ok(v1, ConfChangeTransitionAuto)
                        | "implicit" -> Ok(v1, ConfChangeTransitionJointImplicit)
                        | "explicit" -> Ok(v1, ConfChangeTransitionJointExplicit)
                        | _ -> Error(sprintf "unknown transition %s" v)
                    | _ -> Error(sprintf "unknown command %s" key)))
            (Ok(false, ConfChangeTransitionAuto))
    let change =
        options
        |> Result.bind (fun (v1, transition) ->
            confChangesFromString d.Input
            |> Result.bind (fun ccs ->
                if v1 then
                    match ccs with
                    | [ c ] when transition = ConfChangeTransitionAuto ->
                        Ok(ConfChangeV1 { Type = c.Type; NodeId = c.NodeId; Context = [||]; Id = 0UL })
                    | _ -> Error "v1 conf change can only have one operation and no transition"
                else
                    Ok(ConfChangeV2Change { Transition = transition; Changes = ccs; Context = [||] })))
    match change with
    | Error e -> Error(env, e)
    | Ok cc -> onRawStep env out idx (RawNode.proposeConfChange cc)

let private deliverMsgsCmd (env: Env) (out: StringBuilder) (d: TestData) : Outcome =
    let typ, rs =
        d.CmdArgs
        |> List.fold
            (fun (typ, rs: Recipient list) a ->
                let rs = if a.Vals.IsEmpty then rs @ [ { Id = TestData.parseUInt64 d "id" a.Key; Drop = false } ] else rs
                a.Vals
                |> List.fold
                    (fun (typ, rs: Recipient list) v ->
                        match a.Key with
                        | "drop" ->
                            let id = TestData.parseUInt64 d a.Key v
                            if rs |> List.exists (fun r -> r.Id = id) then fail d "can't both deliver and drop msgs to %d" id
                            typ, rs @ [ { Id = id; Drop = true } ]
                        | "type" ->
                            match Describe.tryParseMessageType v with
                            | Some t -> Some t, rs
                            | None -> fail d "unknown message type %s" v
                        | _ -> typ, rs)
                    (typ, rs))
            (None, [])
    let env, n = deliverMsgs env out typ rs
    if n = 0 then write env out "no messages\n"
    Ok env

let private raftState (env: Env) (out: StringBuilder) : Outcome =
    for n in env.Nodes do
        let st = RawNode.status n.Raw
        let voters = st.Config.Voters.Incoming + st.Config.Voters.Outgoing
        let voterStatus = if voters.Contains st.Basic.Id then "(Voter)" else "(Non-Voter)"
        write env out
            (sprintf "%d: %s %s Term:%d Lead:%d\n" st.Basic.Id (Describe.stateTypeName st.Basic.SoftState.RaftState)
                 voterStatus st.Basic.HardState.Term st.Basic.SoftState.Lead)
    Ok env

let private sendSnapshot (env: Env) (out: StringBuilder) (d: TestData) : Outcome =
    match nodeIdxs d with
    | [ fromIdx; toIdx ] ->
        let n = node env fromIdx
        match (storageView n.Storage (List.head n.History)).Snapshot() with
        | Error e -> Error(env, storageError e)
        | Ok snap ->
            let st = RawNode.basicStatus n.Raw
            let m =
                { Message.empty with
                    Type = MsgSnap
                    Term = st.HardState.Term
                    From = uint64 (fromIdx + 1)
                    To = uint64 (toIdx + 1)
                    Snapshot = Some snap }
            let env = { env with Messages = env.Messages @ [ m ] }
            write env out (Describe.message m)
            Ok env
    | idxs -> fail d "expected 2 node indexes, got %d" idxs.Length

let private tick (env: Env) (out: StringBuilder) (idx: int) (times: int) : Outcome =
    Ok(List.replicate times () |> List.fold (fun env () -> onRaw_ env out idx RawNode.tick) env)

let private setLevel (env: Env) (name: string) : Result<Env, string> =
    match levelNames |> Array.tryFindIndex (fun l -> String.Equals(l, name, StringComparison.OrdinalIgnoreCase)) with
    | Some i -> Ok { env with Level = i }
    | None -> Error(sprintf "log levels must be either of [%s]" (String.Join(" ", levelNames)))

let private dispatch (env: Env) (out: StringBuilder) (d: TestData) : Outcome =
    match d.Cmd with
    | "_breakpoint" -> Ok env
    | "add-nodes" -> addNodes env out d
    | "campaign" -> onRawStep env out (firstAsNodeIdx d) RawNode.campaign
    | "compact" ->
        let idx = firstAsNodeIdx d
        let newFirst =
            match d.CmdArgs with
            | [ _; a ] -> TestData.parseUInt64 d "index" a.Key
            | _ -> fail d "compact <id> <new-first-index>"
        let n = node env idx
        match MemoryStorage.compact newFirst n.Storage with
        | Error e -> Error(env, storageError e)
        | Ok s -> raftLog (setNode env idx { n with Storage = s }) out idx
    | "deliver-msgs" -> deliverMsgsCmd env out d
    | "process-ready" -> forEachNode env out "handling Ready" (nodeIdxs d) processReady
    | "process-append-thread" -> forEachNode env out "processing append thread" (nodeIdxs d) processAppendThread
    | "process-apply-thread" -> forEachNode env out "processing apply thread" (nodeIdxs d) processApplyThread
    | "log-level" ->
        match d.CmdArgs with
        | a :: _ -> setLevel env a.Key |> Result.mapError (fun e -> env, e)
        | [] -> fail d "log-level <level>"
    | "raft-log" -> raftLog env out (firstAsNodeIdx d)
    | "raft-state" -> raftState env out
    | "set-randomized-election-timeout" ->
        let idx = firstAsNodeIdx d
        let timeout = TestData.int "timeout" d
        if timeout = 0 then fail d "timeout must not be zero"
        Ok(onRaw_ env out idx (RawNode.setRandomizedElectionTimeout timeout))
    | "stabilize" ->
        // A log-level argument applies to this command only.
        let level = d.CmdArgs |> List.tryFind (fun a -> a.Key = "log-level" && not a.Vals.IsEmpty)
        let scoped =
            match level with
            | None -> Ok env
            | Some a -> setLevel env (List.last a.Vals)
        match scoped with
        | Error e -> Error(env, e)
        | Ok scopedEnv ->
            let restore (e: Env) = { e with Level = env.Level }
            match stabilize scopedEnv out (nodeIdxs d) with
            | Ok e -> Ok(restore e)
            | Error(e, msg) -> Error(restore e, msg)
    | "status" ->
        let st = RawNode.status (node env (firstAsNodeIdx d)).Raw
        write env out (ProgressMap.toString st.Progress)
        Ok env
    | "tick-election" ->
        let idx = firstAsNodeIdx d
        tick env out idx (node env idx).Config.ElectionTick
    | "tick-heartbeat" ->
        let idx = firstAsNodeIdx d
        tick env out idx (node env idx).Config.HeartbeatTick
    | "transfer-leadership" ->
        let from = TestData.uint64 "from" d
        let target = TestData.uint64 "to" d
        let count = uint64 env.Nodes.Length
        if from = 0UL || from > count then fail d "expected valid \"from\" argument"
        if target = 0UL || target > count then fail d "expected valid \"to\" argument"
        Ok(onRaw_ env out (int from - 1) (RawNode.transferLeader target))
    | "forget-leader" -> Ok(onRaw_ env out (firstAsNodeIdx d) (fun raw -> RawNode.forgetLeader raw |> fst))
    | "send-snapshot" ->
        // etcd ignores this command's error.
        match sendSnapshot env out d with
        | Ok env
        | Error(env, _) -> Ok env
    | "propose" ->
        let idx = firstAsNodeIdx d
        match d.CmdArgs with
        | [ _; a ] when a.Vals.IsEmpty -> onRawStep env out idx (RawNode.propose (Encoding.UTF8.GetBytes a.Key))
        | _ -> fail d "expected exactly one key with no vals: %s" (String.Join(" ", List.tail d.CmdArgs))
    | "propose-conf-change" -> proposeConfChange env out d
    | "report-unreachable" ->
        match nodeIdxs d with
        | [ a; b ] -> Ok(onRaw_ env out a (RawNode.reportUnreachable (node env b).Config.Id))
        | _ -> Error(env, "must specify exactly two node indexes: node on which to report, and reported node")
    | _ -> Error(env, "unknown command")

/// Runs one directive: the new environment and the text etcd's harness would print.
let handle (env: Env) (d: TestData) : Env * string =
    let out = StringBuilder()
    let env, text =
        match dispatch env out d with
        | Ok env -> env, out.ToString()
        // Errors are printed even when the output is silenced, and then alone.
        | Error(env, e) when env.Level = quietLevel -> env, e
        | Error(env, e) -> env, out.Append(e).ToString()
    env, (if text = "" then "ok" else text)

/// Runs a whole file, failing with a report unless every directive matched.
let runFile (path: string) : unit =
    let mutable env = newEnv ()
    check path (fun d ->
        let env', output = handle env d
        env <- env'
        output)
