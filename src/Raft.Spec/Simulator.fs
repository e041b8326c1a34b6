/// A deterministic cluster simulator: RawNodes over MemoryStorage, an in-memory network
/// (a bag of messages), and a seeded scheduler choosing among enabled events (ticks,
/// deliveries, Ready handling, proposals, conf changes, transfers, reads, compaction) and
/// faults (drop, duplicate, reorder, delay, partition, crash-restart, slow disk). After
/// every step it checks the safety invariants of tlaplus/Raft.tla on the spec's view of
/// the cluster (SpecMap), with history variables kept across restarts. Everything is a
/// value: the same seed, or the same schedule, gives the same run.
namespace Raft.Spec

open System
open System.Collections.Immutable
open System.Text

/// A splitmix64 generator as a value: every draw returns the next generator.
[<Struct>]
type SimRng = { State: uint64 }

module SimRng =
    let create (seed: uint64) : SimRng = { State = seed }

    /// The next 64 random bits.
    let next (g: SimRng) : uint64 * SimRng =
        let s = g.State + 0x9E3779B97F4A7C15UL
        let z = (s ^^^ (s >>> 30)) * 0xBF58476D1CE4E5B9UL
        let z = (z ^^^ (z >>> 27)) * 0x94D049BB133111EBUL
        z ^^^ (z >>> 31), { State = s }

    /// Uniform in [0, bound), bound > 0 (the modulo bias is negligible for small bounds).
    let nextInt (bound: int) (g: SimRng) : int * SimRng =
        let v, g = next g
        int (v % uint64 bound), g

    /// Uniform in [lo, hi].
    let between (lo: int) (hi: int) (g: SimRng) : int * SimRng =
        let v, g = nextInt (hi - lo + 1) g
        lo + v, g

/// The faults the scheduler may inject.
[<RequireQualifiedAccess>]
type Fault =
    | Drop
    | Duplicate
    /// Deliver any message in flight, not the oldest.
    | Reorder
    | Delay
    | Partition
    | Crash
    | SlowDisk

module Fault =
    let all = [ Fault.Drop; Fault.Duplicate; Fault.Reorder; Fault.Delay; Fault.Partition; Fault.Crash; Fault.SlowDisk ]

    let name (f: Fault) =
        match f with
        | Fault.Drop -> "drop"
        | Fault.Duplicate -> "duplicate"
        | Fault.Reorder -> "reorder"
        | Fault.Delay -> "delay"
        | Fault.Partition -> "partition"
        | Fault.Crash -> "crash"
        | Fault.SlowDisk -> "slowdisk"

    /// A comma list of fault names, "all", or "none"/"" for none.
    let parseList (text: string) : Result<Set<Fault>, string> =
        let names = text.Split([| ',' |], StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries)
        names
        |> Array.fold
            (fun acc n ->
                acc
                |> Result.bind (fun set ->
                    match n.ToLowerInvariant() with
                    | "all" -> Ok(Set.ofList all)
                    | "none" -> Ok set
                    | "dup" -> Ok(Set.add Fault.Duplicate set)
                    | lower ->
                        match all |> List.tryFind (fun f -> name f = lower) with
                        | Some f -> Ok(Set.add f set)
                        | None ->
                            Error(
                                sprintf "unknown fault '%s' (known: %s, all)" n (all |> List.map name |> String.concat ",")
                            )))
            (Ok Set.empty)

    let listText (faults: Set<Fault>) =
        if faults.IsEmpty then "none"
        elif faults = Set.ofList all then "all"
        else faults |> Seq.map name |> String.concat ","

/// Deliberate bugs of the environment, off by default: tests turn them on to show that the
/// invariant checks catch what they are meant to catch.
[<RequireQualifiedAccess>]
type Mutant =
    /// A Ready's messages (MsgAppResp, MsgVoteResp) leave before its write completes.
    | AckBeforePersist
    /// A restarted node does not read back the vote of its HardState.
    | ForgetVoteOnRestart
    /// A restart loses the last written entry (the disk acknowledged an unsynced write).
    | DiskLosesTail

module Mutant =
    let all = [ Mutant.AckBeforePersist; Mutant.ForgetVoteOnRestart; Mutant.DiskLosesTail ]

    let name (m: Mutant) =
        match m with
        | Mutant.AckBeforePersist -> "ack-before-persist"
        | Mutant.ForgetVoteOnRestart -> "forget-vote-on-restart"
        | Mutant.DiskLosesTail -> "disk-loses-tail"

    let parse (text: string) : Result<Mutant, string> =
        match all |> List.tryFind (fun m -> name m = text) with
        | Some m -> Ok m
        | None -> Error(sprintf "unknown mutant '%s' (known: %s)" text (all |> List.map name |> String.concat ","))

/// A configuration change the application proposes; node numbers are indexes (id - 1).
[<RequireQualifiedAccess>]
type SimConfChange =
    | AddVoter of node: int
    | AddLearner of node: int
    | Remove of node: int
    /// Add one voter and remove another through a joint configuration left automatically.
    | Joint of add: int * remove: int
    /// Add a voter and demote another to learner, joint, left automatically (JointImplicit).
    | JointImplicit of add: int * demote: int
    /// The empty ConfChangeV2: leave a joint configuration.
    | LeaveJoint

/// One step of a run. Node numbers are indexes modulo the node count; picks are indexes
/// modulo the number of messages in flight. An event that is not enabled is a no-op, so
/// any list of events is a valid schedule (which lets FsCheck shrink schedules freely).
[<RequireQualifiedAccess>]
type SimEvent =
    | Tick of node: int
    | Deliver of pick: int
    /// Take the node's Ready: its write to disk begins.
    | ProcessReady of node: int
    /// The write of the taken Ready completes: persist, send, apply, advance.
    | FinishWrite of node: int
    | Propose of node: int
    | ConfChange of node: int * change: SimConfChange
    | TransferLeader of node: int * target: int
    | ReadIndex of node: int
    /// Snapshot the applied state and compact the log up to it.
    | Compact of node: int
    | Drop of pick: int
    | Duplicate of pick: int
    | Delay of pick: int * steps: int
    /// Cut the given nodes off from the others for a number of steps.
    | Partition of steps: int * isolated: int list
    | Heal
    | Restart of node: int
    /// The node's disk does not complete writes for a number of steps.
    | SlowDisk of node: int * steps: int

module SimEvent =
    let private cc (c: SimConfChange) =
        match c with
        | SimConfChange.AddVoter n -> sprintf "add %d" n
        | SimConfChange.AddLearner n -> sprintf "learner %d" n
        | SimConfChange.Remove n -> sprintf "remove %d" n
        | SimConfChange.Joint(a, r) -> sprintf "joint %d %d" a r
        | SimConfChange.JointImplicit(a, d) -> sprintf "jointimplicit %d %d" a d
        | SimConfChange.LeaveJoint -> "leave"

    /// The text form read back by parse, e.g. "tick 0", "deliver 3", "partition 40 0.2".
    let format (e: SimEvent) : string =
        match e with
        | SimEvent.Tick n -> sprintf "tick %d" n
        | SimEvent.Deliver p -> sprintf "deliver %d" p
        | SimEvent.ProcessReady n -> sprintf "ready %d" n
        | SimEvent.FinishWrite n -> sprintf "write %d" n
        | SimEvent.Propose n -> sprintf "propose %d" n
        | SimEvent.ConfChange(n, c) -> sprintf "conf %d %s" n (cc c)
        | SimEvent.TransferLeader(n, t) -> sprintf "transfer %d %d" n t
        | SimEvent.ReadIndex n -> sprintf "read %d" n
        | SimEvent.Compact n -> sprintf "compact %d" n
        | SimEvent.Drop p -> sprintf "drop %d" p
        | SimEvent.Duplicate p -> sprintf "dup %d" p
        | SimEvent.Delay(p, s) -> sprintf "delay %d %d" p s
        | SimEvent.Partition(s, ns) -> sprintf "partition %d %s" s (ns |> List.map string |> String.concat ".")
        | SimEvent.Heal -> "heal"
        | SimEvent.Restart n -> sprintf "restart %d" n
        | SimEvent.SlowDisk(n, s) -> sprintf "slowdisk %d %d" n s

    /// A schedule as one line: events separated by "; ".
    let formatSchedule (events: SimEvent seq) : string = events |> Seq.map format |> String.concat "; "

    let parse (text: string) : Result<SimEvent, string> =
        let words = text.Split([| ' ' |], StringSplitOptions.RemoveEmptyEntries) |> Array.toList
        let num (w: string) =
            match Int32.TryParse w with
            | true, v when v >= 0 -> Ok v
            | _ -> Error(sprintf "'%s' is not a non-negative number in '%s'" w text)
        let one ctor a = num a |> Result.map ctor
        let two ctor a b = num a |> Result.bind (fun x -> num b |> Result.map (fun y -> ctor (x, y)))
        match words with
        | [ "tick"; n ] -> one SimEvent.Tick n
        | [ "deliver"; p ] -> one SimEvent.Deliver p
        | [ "ready"; n ] -> one SimEvent.ProcessReady n
        | [ "write"; n ] -> one SimEvent.FinishWrite n
        | [ "propose"; n ] -> one SimEvent.Propose n
        | "conf" :: n :: rest ->
            let change =
                match rest with
                | [ "add"; v ] -> one SimConfChange.AddVoter v
                | [ "learner"; v ] -> one SimConfChange.AddLearner v
                | [ "remove"; v ] -> one SimConfChange.Remove v
                | [ "joint"; a; r ] -> two SimConfChange.Joint a r
                | [ "jointimplicit"; a; d ] -> two SimConfChange.JointImplicit a d
                | [ "leave" ] -> Ok SimConfChange.LeaveJoint
                | _ -> Error(sprintf "bad conf change in '%s'" text)
            num n |> Result.bind (fun n -> change |> Result.map (fun c -> SimEvent.ConfChange(n, c)))
        | [ "transfer"; n; t ] -> two SimEvent.TransferLeader n t
        | [ "read"; n ] -> one SimEvent.ReadIndex n
        | [ "compact"; n ] -> one SimEvent.Compact n
        | [ "drop"; p ] -> one SimEvent.Drop p
        | [ "dup"; p ] -> one SimEvent.Duplicate p
        | [ "delay"; p; s ] -> two SimEvent.Delay p s
        | [ "partition"; s; ns ] ->
            let nodes =
                ns.Split '.'
                |> Array.fold (fun acc w -> acc |> Result.bind (fun l -> num w |> Result.map (fun v -> v :: l))) (Ok [])
                |> Result.map List.rev
            num s |> Result.bind (fun s -> nodes |> Result.map (fun ns -> SimEvent.Partition(s, ns)))
        | [ "heal" ] -> Ok SimEvent.Heal
        | [ "restart"; n ] -> one SimEvent.Restart n
        | [ "slowdisk"; n; s ] -> two SimEvent.SlowDisk n s
        | _ -> Error(sprintf "unknown event '%s'" text)

    let parseSchedule (text: string) : Result<SimEvent list, string> =
        text.Split([| ';'; '\n' |], StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries)
        |> Array.fold (fun acc w -> acc |> Result.bind (fun l -> parse w |> Result.map (fun e -> e :: l))) (Ok [])
        |> Result.map List.rev

type SimOptions =
    { /// Voters of the initial configuration (ids 1..Voters).
      Voters: int
      /// Nodes outside the initial configuration that conf changes may add.
      Spares: int
      Seed: uint64
      /// Steps of a random run.
      Steps: int
      Faults: Set<Fault>
      /// Whether the scheduler proposes configuration changes.
      ConfChanges: bool
      /// PreVote and CheckQuorum of every node; None: drawn from the seed.
      PreVote: bool option
      CheckQuorum: bool option
      /// Record etcd trace events.
      Tracing: bool
      /// Check the invariants after every step (the benchmark turns this off).
      CheckInvariants: bool
      /// Flow control of every node: small by default, to exercise it.
      MaxSizePerMsg: uint64
      MaxInflightMsgs: int
      /// Deliberate bugs of the environment (tests only).
      Mutants: Set<Mutant> }

module SimOptions =
    let create (voters: int) (seed: uint64) (steps: int) (faults: Set<Fault>) : SimOptions =
        { Voters = voters
          Spares = 1
          Seed = seed
          Steps = steps
          Faults = faults
          ConfChanges = true
          PreVote = None
          CheckQuorum = None
          Tracing = false
          CheckInvariants = true
          MaxSizePerMsg = 64UL
          MaxInflightMsgs = 4
          Mutants = Set.empty }

    let withTracing (on: bool) (o: SimOptions) = { o with Tracing = on }

    let withMutant (m: Mutant) (o: SimOptions) = { o with Mutants = Set.add m o.Mutants }

    let withPreVote (on: bool) (o: SimOptions) = { o with PreVote = Some on }

    let withCheckQuorum (on: bool) (o: SimOptions) = { o with CheckQuorum = Some on }

    /// The options that are not the defaults, as raftv simulate arguments.
    let extraArgs (o: SimOptions) : string =
        let flag name (v: bool option) = v |> Option.map (fun b -> sprintf " --%s %b" name b) |> Option.defaultValue ""
        flag "prevote" o.PreVote
        + flag "checkquorum" o.CheckQuorum
        + (o.Mutants |> Seq.map (fun m -> " --mutant " + Mutant.name m) |> String.concat "")

/// One simulated node: the RawNode, the storage it writes to, and the application's state.
[<NoComparison; NoEquality>]
type SimNode =
    { Id: uint64
      Raw: RawNode
      /// The durable state: survives restarts.
      Storage: MemoryStorage
      /// A Ready taken whose write has not completed (sync storage: until then no next Ready).
      Writing: Ready option
      /// Writes do not complete before this step.
      DiskSlowUntil: int
      /// The application's state machine: last applied index, configuration there, and a
      /// hash chained over every applied entry (the "value" of the state machine).
      AppliedIndex: uint64
      AppliedConfState: ConfState
      StateHash: uint64
      /// The spec's view after the last step that touched this node.
      Spec: SpecState
      /// Indexes up to here were recorded as committed in the history.
      CheckedCommit: uint64
      /// (term, index): commit records up to index were checked against this node's log
      /// while it led in term.
      CompletenessMark: uint64 * uint64 }

/// A commit a leader made (Raft.tla's commitRecords): the entry, the leader's term, and the
/// configuration whose quorum it relied on.
type CommitRecord =
    { Index: uint64
      Term: uint64
      LeaderTerm: uint64
      Config: SpecConfig }

/// History variables (never read by the nodes): what the invariants quantify over.
type SimHistory =
    { /// term -> the leader elected in it.
      Leaders: Map<uint64, uint64>
      /// index -> term of every entry any node considered committed.
      Committed: Map<uint64, uint64>
      MaxCommitted: uint64
      /// Contiguous from index 1 to MaxRecord.
      CommitRecords: Map<uint64, CommitRecord>
      MaxRecord: uint64
      /// index -> state hash after applying it, over every node and restart.
      AppliedHashes: Map<uint64, uint64>
      /// (voter, term) -> candidate, of every granted vote that left a node.
      VotesSent: Map<uint64 * uint64, uint64>
      /// read id -> the largest index durably committed anywhere when it was issued.
      PendingReads: Map<uint64, uint64> }

type SimStats =
    { Steps: int
      /// Events that did something (not no-ops).
      Effective: int
      Elections: int
      MaxTerm: uint64
      Proposals: int
      ConfChangesProposed: int
      ConfChangesApplied: int
      ReadsIssued: int
      ReadsAnswered: int
      Compactions: int
      SnapshotsInstalled: int
      Delivered: int
      /// Faults injected, by kind.
      Faults: Map<string, int>
      /// Invariant evaluations done.
      Checks: int64 }

/// Something the last step did that an invariant speaks about.
type SimObservation =
    | VoteSent of voter: uint64 * term: uint64 * candidate: uint64
    | ReadAnswered of node: uint64 * readId: uint64 * index: uint64
    | Persisted of node: int * before: HardState * after: HardState * truncatedFrom: uint64 option
    | Applied of node: uint64 * index: uint64 * hash: uint64
    | Restarted of node: int

[<NoComparison; NoEquality>]
type Sim =
    { Options: SimOptions
      PreVote: bool
      CheckQuorum: bool
      Nodes: SimNode[]
      /// Messages in flight, oldest first.
      Network: ImmutableList<Message>
      /// Delayed messages and the step at which they re-enter the network.
      Delayed: (int * Message) list
      /// Nodes cut off from the others, until HealAt.
      Isolated: Set<uint64>
      HealAt: int
      History: SimHistory
      Stats: SimStats
      Rng: SimRng
      Step: int
      /// Source of unique proposal payloads and read ids.
      NextId: uint64
      /// Trace events, newest first.
      Traces: TraceEvent list }

type Violation =
    { Invariant: string
      Detail: string
      Step: int
      Seed: uint64
      Event: SimEvent }

[<NoComparison; NoEquality>]
type SimOutcome =
    { Final: Sim
      Violation: Violation option
      /// The events executed, in order (a random run's schedule, replayable with runSchedule).
      Events: SimEvent list }

module Simulator =
    // ---- small helpers ---------------------------------------------------------------------

    let private nodeIndex (sim: Sim) (n: int) = ((n % sim.Nodes.Length) + sim.Nodes.Length) % sim.Nodes.Length

    let private pickIndex (count: int) (p: int) = ((p % count) + count) % count

    /// Ids as etcd prints a set of them: "(1 2 3)".
    let private idsText (ids: uint64 seq) = "(" + String.Join(" ", ids) + ")"

    let private setNode (idx: int) (n: SimNode) (sim: Sim) = { sim with Nodes = Array.updateAt idx n sim.Nodes }

    let private countFault (kind: string) (sim: Sim) =
        let faults = sim.Stats.Faults |> Map.change kind (fun c -> Some(defaultArg c 0 + 1))
        { sim with Stats = { sim.Stats with Faults = faults } }

    let private hasMutant (m: Mutant) (sim: Sim) = sim.Options.Mutants.Contains m

    /// FNV-1a over the entry, chained: the state machine's value after applying it.
    let private mixHash (h: uint64) (e: Entry) : uint64 =
        let step (h: uint64) (b: byte) = (h ^^^ uint64 b) * 1099511628211UL
        let h = BitConverter.GetBytes e.Index |> Array.fold step (h ^^^ 14695981039346656037UL)
        let h = BitConverter.GetBytes e.Term |> Array.fold step h
        e.Data |> Array.fold step h

    /// Node configuration: short timeouts, the options' flow control, and removal steps a
    /// leader down (LearnersNeverVote assumes it).
    let private nodeConfig (sim: Sim) (id: uint64) (storage: IStorage) (applied: uint64) (seed: uint64) : Config =
        { Config.create id storage with
            ElectionTick = 6
            HeartbeatTick = 1
            Applied = applied
            MaxSizePerMsg = sim.Options.MaxSizePerMsg
            MaxInflightMsgs = sim.Options.MaxInflightMsgs
            CheckQuorum = sim.CheckQuorum
            PreVote = sim.PreVote
            StepDownOnRemoval = true
            RandomSeed = seed
            Tracing = sim.Options.Tracing }

    /// Applies a RawNode operation and drains its output (log lines are dropped; trace
    /// events are kept when tracing).
    let private onRaw (idx: int) (f: RawNode -> RawNode * 'r) (sim: Sim) : Sim * 'r =
        let n = sim.Nodes[idx]
        let raw, result = f n.Raw
        let raw, _, traces = RawNode.takeOutput raw
        let sim = if traces.IsEmpty then sim else { sim with Traces = List.rev traces @ sim.Traces }
        setNode idx { n with Raw = raw } sim, result

    let private onRaw_ idx (f: RawNode -> RawNode) sim = onRaw idx (fun r -> f r, ()) sim |> fst

    let private send (msgs: Message seq) (sim: Sim) : Sim * SimObservation list =
        let msgs = Seq.toArray msgs
        let votes =
            msgs
            |> Array.choose (fun m ->
                if m.Type = MsgVoteResp && not m.Reject then Some(VoteSent(m.From, m.Term, m.To)) else None)
            |> Array.toList
        { sim with Network = sim.Network.AddRange msgs }, votes

    let private snapshotIndex (s: MemoryStorage) = (MemoryStorage.snapshot s).Metadata.Index

    let private hashOfSnapshot (snap: Snapshot) =
        if snap.Data.Length >= 8 then BitConverter.ToUInt64(snap.Data, 0) else 0UL

    let private freshSpec (n: SimNode) = SpecMap.toSpecState n.Raw.Raft n.Storage

    // ---- creation --------------------------------------------------------------------------

    let private newNode (sim: Sim) (id: uint64) (storage: MemoryStorage) : SimNode =
        let snap = MemoryStorage.snapshot storage
        match RawNode.create (nodeConfig sim id (MemoryStorage.asStorage storage) snap.Metadata.Index id) with
        | Error e -> invalidOp e
        | Ok raw ->
            let raw, _, _ = RawNode.takeOutput raw
            { Id = id
              Raw = raw
              Storage = storage
              Writing = None
              DiskSlowUntil = 0
              AppliedIndex = snap.Metadata.Index
              AppliedConfState = snap.Metadata.ConfState
              StateHash = 0UL
              Spec = SpecMap.toSpecState raw.Raft storage
              CheckedCommit = 0UL
              CompletenessMark = 0UL, 0UL }

    /// A cluster of Voters nodes in one configuration plus Spares empty nodes.
    let create (o: SimOptions) : Result<Sim, string> =
        if o.Voters < 1 || o.Voters > 9 then Error "the number of nodes must be between 1 and 9"
        elif o.Spares < 0 || o.Voters + o.Spares > 12 then Error "too many spare nodes"
        else
            let rng = SimRng.create o.Seed
            let pv, rng = SimRng.next rng
            let cq, rng = SimRng.next rng
            let sim =
                { Options = o
                  PreVote = defaultArg o.PreVote (pv % 2UL = 0UL)
                  CheckQuorum = defaultArg o.CheckQuorum (cq % 2UL = 0UL)
                  Nodes = [||]
                  Network = ImmutableList<Message>.Empty
                  Delayed = []
                  Isolated = Set.empty
                  HealAt = 0
                  History =
                    { Leaders = Map.empty
                      Committed = Map.empty
                      MaxCommitted = 0UL
                      CommitRecords = Map.empty
                      MaxRecord = 0UL
                      AppliedHashes = Map.empty
                      VotesSent = Map.empty
                      PendingReads = Map.empty }
                  Stats =
                    { Steps = 0; Effective = 0; Elections = 0; MaxTerm = 0UL; Proposals = 0; ConfChangesProposed = 0
                      ConfChangesApplied = 0; ReadsIssued = 0; ReadsAnswered = 0; Compactions = 0
                      SnapshotsInstalled = 0; Delivered = 0; Faults = Map.empty; Checks = 0L }
                  Rng = rng
                  Step = 0
                  NextId = 1UL
                  Traces = [] }
            // The voters start from a snapshot at index 1 holding the configuration: a node
            // added later has an empty log, learns the configuration only from a snapshot
            // (there are no earlier entries to replay), and so always gets one.
            let voters = [ 1UL .. uint64 o.Voters ]
            let boot =
                { Data = BitConverter.GetBytes 0UL
                  Metadata = { Index = 1UL; Term = 1UL; ConfState = { ConfState.empty with Voters = voters } } }
            match MemoryStorage.applySnapshot boot MemoryStorage.empty with
            | Error e -> Error(StorageError.message e)
            | Ok votersStorage ->
                try
                    let nodes =
                        [| for id in 1UL .. uint64 (o.Voters + o.Spares) ->
                               newNode sim id (if id <= uint64 o.Voters then votersStorage else MemoryStorage.empty) |]
                    Ok { sim with Nodes = nodes }
                with :? InvalidOperationException as e ->
                    Error e.Message

    // ---- environment actions (the spec's environment) -------------------------------------

    /// A storage that reads back no vote: the ForgetVoteOnRestart mutant.
    let private forgetVote (s: MemoryStorage) : IStorage =
        let inner = MemoryStorage.asStorage s
        { new IStorage with
            member _.InitialState() =
                inner.InitialState() |> Result.map (fun (hs, cs) -> { hs with Vote = NodeId.None }, cs)
            member _.Entries(lo, hi, maxSize) = inner.Entries(lo, hi, maxSize)
            member _.Term i = inner.Term i
            member _.LastIndex() = inner.LastIndex()
            member _.FirstIndex() = inner.FirstIndex()
            member _.Snapshot() = inner.Snapshot() }

    /// The storage without its last entry: the DiskLosesTail mutant.
    let private loseTail (s: MemoryStorage) : MemoryStorage =
        let ents = s.StoredEntries
        if ents.Length = 0 then s
        else
            match MemoryStorage.applySnapshot (MemoryStorage.snapshot s) MemoryStorage.empty with
            | Error _ -> s
            | Ok fresh ->
                let kept = ents[.. ents.Length - 2]
                let fresh = MemoryStorage.append kept fresh
                let hs = MemoryStorage.hardState s
                MemoryStorage.setHardState { hs with Commit = min hs.Commit (MemoryStorage.lastIndex fresh) } fresh

    /// TLA+: Restart -- a crash and restart: the node comes back from its storage (durable
    /// HardState, entries, snapshot); volatile state, the Ready being written, unstable
    /// entries and unsent messages are lost. The application's state machine restarts
    /// from the snapshot and re-applies the committed entries after it.
    let Restart (idx: int) (sim: Sim) : Sim =
        let n = sim.Nodes[idx]
        let storage = if hasMutant Mutant.DiskLosesTail sim then loseTail n.Storage else n.Storage
        let view =
            if hasMutant Mutant.ForgetVoteOnRestart sim then forgetVote storage else MemoryStorage.asStorage storage
        // The node's new random seed depends on the run's seed and the step only, so that
        // a schedule replays the same way whether or not the scheduler drew it.
        let seed = SimRng.create (sim.Options.Seed ^^^ (n.Id <<< 40) ^^^ uint64 sim.Step) |> SimRng.next |> fst
        let snap = MemoryStorage.snapshot storage
        match RawNode.create (nodeConfig sim n.Id view snap.Metadata.Index seed) with
        | Error e -> invalidOp e
        | Ok raw ->
            let raw = RawNode.withStorage (MemoryStorage.asStorage storage) raw
            // The restart's trace events (InitState, the configuration restored, BecomeFollower)
            // are kept: trace validation replays the restart from them.
            let raw, _, traces = RawNode.takeOutput raw
            let sim = if traces.IsEmpty then sim else { sim with Traces = List.rev traces @ sim.Traces }
            let node =
                { n with
                    Raw = raw
                    Storage = storage
                    Writing = None
                    DiskSlowUntil = 0
                    AppliedIndex = snap.Metadata.Index
                    AppliedConfState = snap.Metadata.ConfState
                    StateHash = hashOfSnapshot snap
                    CheckedCommit = snap.Metadata.Index
                    CompletenessMark = 0UL, 0UL }
            setNode idx node sim |> countFault "crash"

    /// A MsgSnap that will not arrive: the sender's transport reports the failure.
    let private snapshotLost (m: Message) (sim: Sim) =
        if m.Type = MsgSnap && m.From >= 1UL && int m.From <= sim.Nodes.Length then
            onRaw_ (int m.From - 1) (RawNode.reportSnapshot m.To SnapshotFailure) sim
        else sim

    /// TLA+: DropMessage -- the network loses a message.
    let Drop (pick: int) (sim: Sim) : Sim =
        if sim.Network.IsEmpty then sim
        else
            let i = pickIndex sim.Network.Count pick
            let m = sim.Network[i]
            { sim with Network = sim.Network.RemoveAt i } |> snapshotLost m |> countFault "drop"

    /// TLA+: DuplicateMessage -- the network duplicates a message.
    let Duplicate (pick: int) (sim: Sim) : Sim =
        if sim.Network.IsEmpty then sim
        else
            let m = sim.Network[pickIndex sim.Network.Count pick]
            { sim with Network = sim.Network.Add m } |> countFault "duplicate"

    let private delay (pick: int) (steps: int) (sim: Sim) : Sim =
        if sim.Network.IsEmpty then sim
        else
            let i = pickIndex sim.Network.Count pick
            let m = sim.Network[i]
            { sim with
                Network = sim.Network.RemoveAt i
                Delayed = (sim.Step + max 1 steps, m) :: sim.Delayed }
            |> countFault "delay"

    /// Delayed messages due now re-enter the network; an expired partition heals.
    let private releaseDue (sim: Sim) : Sim =
        let due, later = sim.Delayed |> List.partition (fun (at, _) -> at <= sim.Step)
        let sim =
            if due.IsEmpty then sim
            else { sim with Network = sim.Network.AddRange(due |> List.rev |> List.map snd); Delayed = later }
        if not sim.Isolated.IsEmpty && sim.Step >= sim.HealAt then { sim with Isolated = Set.empty } else sim

    let private crossesPartition (m: Message) (sim: Sim) =
        not sim.Isolated.IsEmpty && (sim.Isolated.Contains m.From <> sim.Isolated.Contains m.To)

    // ---- node actions ---------------------------------------------------------------------

    let private deliver (pick: int) (sim: Sim) : Sim * int list * bool =
        if sim.Network.IsEmpty then sim, [], false
        else
            let i = pickIndex sim.Network.Count pick
            let m = sim.Network[i]
            let sim = { sim with Network = sim.Network.RemoveAt i }
            let toIdx = int m.To - 1
            let fromIdx = int m.From - 1
            if toIdx < 0 || toIdx >= sim.Nodes.Length then sim, [], true
            elif crossesPartition m sim then
                (sim |> snapshotLost m |> countFault "partition-drop"), [ fromIdx ], true
            else
                let sim, _ = onRaw toIdx (RawNode.step m) sim
                let sim = { sim with Stats = { sim.Stats with Delivered = sim.Stats.Delivered + 1 } }
                if m.Type = MsgSnap && fromIdx >= 0 && fromIdx < sim.Nodes.Length then
                    onRaw_ fromIdx (RawNode.reportSnapshot m.To SnapshotFinish) sim, [ toIdx; fromIdx ], true
                else sim, [ toIdx ], true

    let private processReady (idx: int) (sim: Sim) : Sim * SimObservation list * bool =
        let n = sim.Nodes[idx]
        if n.Writing.IsSome || not (RawNode.hasReady n.Raw) then sim, [], false
        else
            let sim, rd = onRaw idx RawNode.ready sim
            let n = sim.Nodes[idx]
            if hasMutant Mutant.AckBeforePersist sim then
                let sim, obs = send rd.Messages sim
                setNode idx { n with Writing = Some { rd with Messages = [||] } } sim, obs, true
            else setNode idx { n with Writing = Some rd } sim, [], true

    let private decodeConfChange (e: Entry) : ConfChangeI option =
        match e.Type with
        | EntryNormal -> None
        | EntryConfChange ->
            match Codec.decodeConfChange e.Data with
            | Ok cc -> Some(ConfChangeV1 cc)
            | Error err -> invalidOp err
        | EntryConfChangeV2 ->
            match Codec.decodeConfChangeV2 e.Data with
            | Ok cc -> Some(ConfChangeV2Change cc)
            | Error err -> invalidOp err

    /// The application applies one committed entry: the state machine's hash, and the
    /// configuration for a conf change (one the configuration rejects is skipped, the same
    /// way on every node since they all hold the same configuration at that index).
    let private applyEntry (idx: int) (sim: Sim, obs: SimObservation list) (e: Entry) =
        let n = sim.Nodes[idx]
        if e.Index <= n.AppliedIndex then sim, obs
        elif e.Index <> n.AppliedIndex + 1UL then
            invalidOp (sprintf "node %d: committed entry %d does not follow the applied index %d" n.Id e.Index n.AppliedIndex)
        else
            let hash = mixHash n.StateHash e
            let raw, confState, applied =
                match decodeConfChange e with
                | None -> n.Raw, n.AppliedConfState, 0
                | Some cc ->
                    match Raft.applyConfChange n.Raw.Raft (ConfChangeI.asV2 cc) with
                    | Ok(r, cs) -> { n.Raw with Raft = r }, cs, 1
                    | Error _ -> n.Raw, n.AppliedConfState, 0
            let sim =
                setNode idx { n with Raw = raw; AppliedIndex = e.Index; AppliedConfState = confState; StateHash = hash } sim
            let sim = { sim with Stats = { sim.Stats with ConfChangesApplied = sim.Stats.ConfChangesApplied + applied } }
            sim, Applied(n.Id, e.Index, hash) :: obs

    /// The write of the taken Ready completes (etcd's sync Ready handling, in order): persist
    /// the HardState, snapshot and entries; send the messages; apply the snapshot and the
    /// committed entries; hand over answered reads; Advance.
    let private finishWrite (idx: int) (sim: Sim) : Sim * SimObservation list * bool =
        let n = sim.Nodes[idx]
        match n.Writing with
        | None -> sim, [], false
        | Some _ when sim.Step < n.DiskSlowUntil -> sim, [], false
        | Some rd ->
            // TLA+: Persist (the environment's half: the write itself)
            let before = MemoryStorage.hardState n.Storage
            let s = match rd.HardState with Some hs -> MemoryStorage.setHardState hs n.Storage | None -> n.Storage
            let s, truncatedBySnap =
                match rd.Snapshot with
                | Some snap when not (Snapshot.isEmpty snap) ->
                    match MemoryStorage.applySnapshot snap s with
                    | Ok s -> s, Some(snap.Metadata.Index + 1UL)
                    | Error e -> invalidOp (StorageError.message e)
                | _ -> s, None
            let truncated =
                if rd.Entries.Length > 0 && rd.Entries[0].Index <= MemoryStorage.lastIndex s then
                    Some rd.Entries[0].Index
                else truncatedBySnap
            let s = MemoryStorage.append rd.Entries s
            let raw = RawNode.withStorage (MemoryStorage.asStorage s) n.Raw
            let n = { n with Storage = s; Raw = raw; Writing = None }
            let sim = setNode idx n sim
            let obs = [ Persisted(idx, before, MemoryStorage.hardState s, truncated) ]
            let sim, sent = send rd.Messages sim
            let obs = sent @ obs
            // TLA+: Apply
            let sim, obs =
                match rd.Snapshot with
                | Some snap when not (Snapshot.isEmpty snap) ->
                    let n = sim.Nodes[idx]
                    let hash = hashOfSnapshot snap
                    let n =
                        { n with
                            AppliedIndex = snap.Metadata.Index
                            AppliedConfState = snap.Metadata.ConfState
                            StateHash = hash }
                    let sim = setNode idx n sim
                    { sim with Stats = { sim.Stats with SnapshotsInstalled = sim.Stats.SnapshotsInstalled + 1 } },
                    Applied(n.Id, snap.Metadata.Index, hash) :: obs
                | _ -> sim, obs
            let sim, obs = rd.CommittedEntries |> Array.fold (applyEntry idx) (sim, obs)
            let reads =
                rd.ReadStates
                |> List.choose (fun rs ->
                    if rs.RequestCtx.Length = 8 then Some(ReadAnswered(n.Id, BitConverter.ToUInt64(rs.RequestCtx, 0), rs.Index))
                    else None)
            let sim = onRaw_ idx RawNode.advance sim
            sim, reads @ obs, true

    let private confChangeOf (sim: Sim) (c: SimConfChange) : ConfChangeI =
        let id n = uint64 (nodeIndex sim n + 1)
        let v1 t n = ConfChangeV1 { Type = t; NodeId = id n; Context = [||]; Id = 0UL }
        let v2 tr changes = ConfChangeV2Change { Transition = tr; Changes = changes; Context = [||] }
        match c with
        | SimConfChange.AddVoter n -> v1 ConfChangeAddNode n
        | SimConfChange.AddLearner n -> v1 ConfChangeAddLearnerNode n
        | SimConfChange.Remove n -> v1 ConfChangeRemoveNode n
        | SimConfChange.Joint(a, r) ->
            v2 ConfChangeTransitionAuto
                [ { Type = ConfChangeAddNode; NodeId = id a }; { Type = ConfChangeRemoveNode; NodeId = id r } ]
        | SimConfChange.JointImplicit(a, d) ->
            v2 ConfChangeTransitionJointImplicit
                [ { Type = ConfChangeAddNode; NodeId = id a }; { Type = ConfChangeAddLearnerNode; NodeId = id d } ]
        | SimConfChange.LeaveJoint -> v2 ConfChangeTransitionAuto []

    let private compact (idx: int) (sim: Sim) : Sim * bool =
        let n = sim.Nodes[idx]
        let s = n.Storage
        let i = n.AppliedIndex
        if i <= snapshotIndex s || i < MemoryStorage.firstIndex s || i > MemoryStorage.lastIndex s then sim, false
        else
            // TLA+: CompactLog (the application's action)
            match MemoryStorage.createSnapshot i (Some n.AppliedConfState) (BitConverter.GetBytes n.StateHash) s with
            | Error _ -> sim, false
            | Ok(s, _) ->
                match MemoryStorage.compact i s with
                | Error _ -> sim, false
                | Ok s ->
                    let n = { n with Storage = s; Raw = RawNode.withStorage (MemoryStorage.asStorage s) n.Raw }
                    let sim = setNode idx n sim
                    { sim with Stats = { sim.Stats with Compactions = sim.Stats.Compactions + 1 } }, true

    /// Performs an event: the new state, the nodes it touched, what the invariants need to
    /// know, and whether it did anything.
    let private perform (event: SimEvent) (sim: Sim) : Sim * int list * SimObservation list * bool =
        let idxOf = nodeIndex sim
        match event with
        | SimEvent.Tick n ->
            let i = idxOf n
            onRaw_ i RawNode.tick sim, [ i ], [], true
        | SimEvent.Deliver p ->
            let sim, touched, did = deliver p sim
            sim, touched, [], did
        | SimEvent.ProcessReady n ->
            let i = idxOf n
            let sim, obs, did = processReady i sim
            sim, [ i ], obs, did
        | SimEvent.FinishWrite n ->
            let i = idxOf n
            let sim, obs, did = finishWrite i sim
            sim, [ i ], obs, did
        | SimEvent.Propose n ->
            let i = idxOf n
            let data = Encoding.ASCII.GetBytes(sprintf "v%d" sim.NextId)
            let sim, _ = onRaw i (RawNode.propose data) sim
            { sim with NextId = sim.NextId + 1UL; Stats = { sim.Stats with Proposals = sim.Stats.Proposals + 1 } },
            [ i ],
            [],
            true
        | SimEvent.ConfChange(n, c) ->
            let i = idxOf n
            let sim, _ = onRaw i (RawNode.proposeConfChange (confChangeOf sim c)) sim
            { sim with Stats = { sim.Stats with ConfChangesProposed = sim.Stats.ConfChangesProposed + 1 } },
            [ i ],
            [],
            true
        | SimEvent.TransferLeader(n, t) ->
            let i = idxOf n
            onRaw_ i (RawNode.transferLeader (uint64 (idxOf t + 1))) sim, [ i ], [], true
        | SimEvent.ReadIndex n ->
            let i = idxOf n
            let id = sim.NextId
            // What a client may have seen committed: an index some node made durable as
            // committed (it applies and acknowledges nothing before). An index committed only
            // in the memory of a node that crashed before writing it was never observable, and
            // etcd's single-voter fast path may answer below it after the restart.
            let mustSee =
                sim.Nodes
                |> Array.map (fun n -> max (MemoryStorage.hardState n.Storage).Commit (snapshotIndex n.Storage))
                |> Array.max
            let sim = onRaw_ i (RawNode.readIndex (BitConverter.GetBytes id)) sim
            let h = sim.History
            { sim with
                NextId = id + 1UL
                History = { h with PendingReads = Map.add id mustSee h.PendingReads }
                Stats = { sim.Stats with ReadsIssued = sim.Stats.ReadsIssued + 1 } },
            [ i ],
            [],
            true
        | SimEvent.Compact n ->
            let i = idxOf n
            let sim, did = compact i sim
            sim, [ i ], [], did
        | SimEvent.Drop p -> Drop p sim, [], [], not sim.Network.IsEmpty
        | SimEvent.Duplicate p -> Duplicate p sim, [], [], not sim.Network.IsEmpty
        | SimEvent.Delay(p, s) -> delay p s sim, [], [], not sim.Network.IsEmpty
        | SimEvent.Partition(s, ns) ->
            let isolated = ns |> List.map (fun n -> uint64 (idxOf n + 1)) |> Set.ofList
            if isolated.IsEmpty || isolated.Count = sim.Nodes.Length then sim, [], [], false
            else
                { sim with Isolated = isolated; HealAt = sim.Step + max 1 s } |> countFault "partition", [], [], true
        | SimEvent.Heal -> { sim with Isolated = Set.empty }, [], [], not sim.Isolated.IsEmpty
        | SimEvent.Restart n ->
            let i = idxOf n
            Restart i sim, [ i ], [ Restarted i ], true
        | SimEvent.SlowDisk(n, s) ->
            let i = idxOf n
            let node = sim.Nodes[i]
            setNode i { node with DiskSlowUntil = sim.Step + max 1 s } sim |> countFault "slowdisk", [], [], true

    // ---- invariants ---------------------------------------------------------------------

    let inline private (>>=) (r: Result<'a, 'e>) (f: 'a -> Result<'b, 'e>) = Result.bind f r

    let private checks (k: int) (sim: Sim) = { sim with Stats = { sim.Stats with Checks = sim.Stats.Checks + int64 k } }

    /// Raft.tla's DurablyHolds: entry (index, term) is in the node's storage, or compacted
    /// into its snapshot.
    let private durablyHolds (n: SimNode) (index: uint64) (term: uint64) =
        index < MemoryStorage.firstIndex n.Storage
        || (index <= MemoryStorage.lastIndex n.Storage
            && (MemoryStorage.asStorage n.Storage).Term index = Ok term)

    /// CommittedIsDurable for one commit record.
    let private checkDurable (sim: Sim) (r: CommitRecord) : Result<unit, string * string> =
        let holders = sim.Nodes |> Array.filter (fun n -> durablyHolds n r.Index r.Term) |> Array.map (fun n -> n.Id)
        if SpecConfig.isQuorum (Set.ofArray holders) r.Config then Ok()
        else
            Error(
                "CommittedIsDurable",
                sprintf
                    "entry %d (term %d), committed at term %d with voters %s, is durable only on %s"
                    r.Index r.Term r.LeaderTerm (idsText (SpecConfig.voters r.Config)) (idsText holders)
            )

    let private checkObservation (sim: Sim) (o: SimObservation) : Result<Sim, string * string> =
        let h = sim.History
        match o with
        | VoteSent(voter, term, candidate) ->
            match Map.tryFind (voter, term) h.VotesSent with
            | Some c when c <> candidate ->
                Error("VoteOnce", sprintf "node %d voted for %d and for %d in term %d" voter c candidate term)
            | Some _ -> Ok sim
            | None -> Ok { sim with History = { h with VotesSent = Map.add (voter, term) candidate h.VotesSent } }
        | ReadAnswered(node, id, index) ->
            match Map.tryFind id h.PendingReads with
            | Some mustSee when index < mustSee ->
                Error(
                    "ReadIndexLinearizable",
                    sprintf "read %d answered at node %d with index %d, but %d was durably committed when it was issued" id node index mustSee
                )
            | Some _ ->
                Ok
                    { sim with
                        History = { h with PendingReads = Map.remove id h.PendingReads }
                        Stats = { sim.Stats with ReadsAnswered = sim.Stats.ReadsAnswered + 1 } }
            | None -> Ok sim
        | Persisted(idx, before, after, truncated) ->
            let id = sim.Nodes[idx].Id
            if after.Term < before.Term then
                Error("MonotonicTerm", sprintf "node %d persisted term %d after term %d" id after.Term before.Term)
            elif after.Term = before.Term && before.Vote <> NodeId.None && after.Vote <> before.Vote then
                Error(
                    "VoteOnce",
                    sprintf "node %d persisted vote %d after vote %d in term %d" id after.Vote before.Vote after.Term
                )
            elif after.Commit < before.Commit then
                Error("MonotonicCommit", sprintf "node %d persisted commit %d after %d" id after.Commit before.Commit)
            else
                match truncated with
                | None -> Ok sim
                | Some from ->
                    let affected = h.CommitRecords |> Map.filter (fun i _ -> i >= from) |> Map.values |> Seq.toList
                    affected
                    |> List.fold (fun acc r -> acc >>= fun () -> checkDurable sim r) (Ok())
                    |> Result.map (fun () -> checks affected.Length sim)
        | Applied(node, index, hash) ->
            match Map.tryFind index h.AppliedHashes with
            | Some h0 when h0 <> hash ->
                Error(
                    "StateMachineSafety",
                    sprintf "node %d's state after applying index %d differs from another node's (or an earlier run's)" node index
                )
            | Some _ -> Ok sim
            | None -> Ok { sim with History = { h with AppliedHashes = Map.add index hash h.AppliedHashes } }
        | Restarted idx ->
            // A restart must not lose durable entries: commits above what the node's storage
            // holds must still be durable on a quorum without it.
            let last = MemoryStorage.lastIndex sim.Nodes[idx].Storage
            let affected = h.CommitRecords |> Map.filter (fun i _ -> i > last) |> Map.values |> Seq.toList
            affected
            |> List.fold (fun acc r -> acc >>= fun () -> checkDurable sim r) (Ok())
            |> Result.map (fun () -> checks affected.Length sim)

    /// LogMatching between two nodes: where both logs hold an entry of the same index and
    /// term, they agree on every entry up to it (above both snapshots).
    let private logMatching (a: SpecState) (b: SpecState) : Result<unit, string * string> =
        let lo = max a.SnapshotIndex b.SnapshotIndex
        let hi = min (SpecState.lastIndex a) (SpecState.lastIndex b)
        let sameTerm n = SpecState.termAt n a = SpecState.termAt n b
        // The highest index at which the terms agree; below it everything must agree.
        let rec top n = if n <= lo then None elif sameTerm n then Some n else top (n - 1UL)
        match top hi with
        | None -> Ok()
        | Some n ->
            let differs k =
                match SpecState.entryAt k a, SpecState.entryAt k b with
                | Some x, Some y ->
                    not (obj.ReferenceEquals(x, y))
                    && (x.Term <> y.Term || x.Type <> y.Type || x.Data <> y.Data)
                | _ -> true
            let rec scan k =
                if k <= lo then
                    if sameTerm lo then Ok()
                    else Error("LogMatching", sprintf "nodes %d and %d agree at %d but not at %d" a.Id b.Id n lo)
                elif differs k then
                    Error("LogMatching", sprintf "nodes %d and %d agree at index %d but differ at %d" a.Id b.Id n k)
                else scan (k - 1UL)
            scan n

    /// The invariants about one node the step touched, on the spec's view of it.
    let private checkNode (restarted: bool) (sim: Sim) (idx: int) : Result<Sim, string * string> =
        let n = sim.Nodes[idx]
        let p = n.Spec
        let s = freshSpec n
        let id = n.Id
        let h = sim.History
        let term = s.CurrentTerm
        // IndexOrder
        (if s.Applied <= s.CommitIndex && s.CommitIndex <= SpecState.lastIndex s then Ok()
         else
             Error(
                 "IndexOrder",
                 sprintf "node %d: applied %d, commit %d, last index %d" id s.Applied s.CommitIndex (SpecState.lastIndex s)
             ))
        // MonotonicTerm / MonotonicCommit (in memory: only a restart goes back)
        >>= (fun () ->
            if not restarted && term < p.CurrentTerm then
                Error("MonotonicTerm", sprintf "node %d went from term %d to %d" id p.CurrentTerm term)
            elif not restarted && s.CommitIndex < p.CommitIndex then
                Error("MonotonicCommit", sprintf "node %d went from commit %d to %d" id p.CommitIndex s.CommitIndex)
            else Ok())
        // LearnersNeverVote: only voters lead
        >>= (fun () ->
            if s.Role = StateLeader && not ((SpecConfig.voters s.Config).Contains id) then
                Error("LearnersNeverVote", sprintf "node %d leads term %d but is not a voter of its configuration" id term)
            else Ok())
        // ElectionSafety, and LearnersNeverVote: an election is won by a quorum of voters
        >>= (fun () ->
            if s.Role <> StateLeader then Ok sim
            else
                match Map.tryFind term h.Leaders with
                | Some l when l <> id ->
                    Error("ElectionSafety", sprintf "nodes %d and %d are both leaders of term %d" l id term)
                | Some _ -> Ok sim
                | None ->
                    let granted =
                        h.VotesSent
                        |> Map.filter (fun (_, t) c -> t = term && c = id)
                        |> Map.keys
                        |> Seq.map fst
                        |> Set.ofSeq
                        |> Set.add id
                    if not (SpecConfig.isQuorum granted s.Config) then
                        Error(
                            "LearnersNeverVote",
                            sprintf
                                "node %d became leader of term %d with votes %s, not a quorum of voters %s"
                                id term (idsText granted) (idsText (SpecConfig.voters s.Config))
                        )
                    else
                        Ok
                            { sim with
                                History = { h with Leaders = Map.add term id h.Leaders }
                                Stats = { sim.Stats with Elections = sim.Stats.Elections + 1 } })
        // StateMachineSafety: one entry per committed index, across nodes and restarts
        >>= (fun sim ->
            let from = if restarted then s.SnapshotIndex else max n.CheckedCommit s.SnapshotIndex
            let rec record (k: uint64) (h: SimHistory) =
                if k > s.CommitIndex then Ok h
                else
                    match SpecState.termAt k s with
                    | None -> record (k + 1UL) h
                    | Some t ->
                        match Map.tryFind k h.Committed with
                        | Some t0 when t0 <> t ->
                            Error(
                                "StateMachineSafety",
                                sprintf "node %d considers entry %d of term %d committed; another node, term %d" id k t t0
                            )
                        | Some _ -> record (k + 1UL) h
                        | None -> record (k + 1UL) { h with Committed = Map.add k t h.Committed; MaxCommitted = max h.MaxCommitted k }
            record (from + 1UL) sim.History
            |> Result.map (fun h -> checks (int (s.CommitIndex - min s.CommitIndex from)) { sim with History = h }))
        // CommittedIsDurable: each new commit of a leader is durable on a quorum of its config
        >>= (fun sim ->
            let h = sim.History
            if s.Role <> StateLeader || s.CommitIndex <= h.MaxRecord then Ok sim
            else
                let rec add (k: uint64) (sim: Sim) =
                    if k > s.CommitIndex then Ok sim
                    else
                        match SpecState.termAt k s with
                        | None -> add (k + 1UL) sim
                        | Some t ->
                            let r = { Index = k; Term = t; LeaderTerm = term; Config = s.Config }
                            checkDurable sim r
                            >>= fun () ->
                                let h = sim.History
                                add
                                    (k + 1UL)
                                    (checks 1 { sim with History = { h with CommitRecords = Map.add k r h.CommitRecords; MaxRecord = k } })
                add (h.MaxRecord + 1UL) sim)
        // LeaderCompleteness: a leader holds every entry committed in its term or before
        >>= (fun sim ->
            if s.Role <> StateLeader then Ok sim
            else
                let h = sim.History
                let markTerm, markIndex = n.CompletenessMark
                let start = if markTerm = term then max markIndex s.SnapshotIndex else s.SnapshotIndex
                let rec scan k =
                    if k > h.MaxRecord then Ok()
                    else
                        match Map.tryFind k h.CommitRecords with
                        | Some r when r.LeaderTerm <= term && not (k < s.SnapshotIndex || SpecState.termAt k s = Some r.Term) ->
                            Error(
                                "LeaderCompleteness",
                                sprintf
                                    "leader %d of term %d lacks entry %d of term %d committed at term %d"
                                    id term k r.Term r.LeaderTerm
                            )
                        | _ -> scan (k + 1UL)
                scan (max start 1UL)
                |> Result.map (fun () ->
                    let n = sim.Nodes[idx]
                    setNode idx { n with CompletenessMark = term, h.MaxRecord } sim))
        // LogMatching against every other node
        >>= (fun sim ->
            sim.Nodes
            |> Array.fold
                (fun acc other -> acc >>= fun () -> if other.Id = id then Ok() else logMatching s other.Spec)
                (Ok())
            |> Result.map (fun () -> checks sim.Nodes.Length sim))
        |> Result.map (fun sim ->
            let n = sim.Nodes[idx]
            let stats = { sim.Stats with MaxTerm = max sim.Stats.MaxTerm term }
            checks 6 (setNode idx { n with Spec = s; CheckedCommit = s.CommitIndex } { sim with Stats = stats }))

    let private checkStep (touched: int list) (obs: SimObservation list) (sim: Sim) : Result<Sim, string * string> =
        let restarted i = obs |> List.exists (fun o -> o = Restarted i)
        // Observations in the order they happened (they were collected newest first).
        let afterObs =
            obs |> List.rev |> List.fold (fun acc o -> acc >>= fun sim -> checkObservation sim o) (Ok sim)
        touched
        |> List.distinct
        |> List.fold (fun acc i -> acc >>= fun sim -> checkNode (restarted i) sim i) afterObs
        |> Result.map (checks obs.Length)

    // ---- running ----------------------------------------------------------------------------

    /// Performs one event (a no-op when it is not enabled) and checks the invariants.
    /// An implementation panic (etcd's panics are invalidOp here) is reported as a violation.
    let apply (event: SimEvent) (sim: Sim) : Result<Sim, Violation> =
        let sim = releaseDue { sim with Step = sim.Step + 1 }
        let violation inv detail =
            { Invariant = inv; Detail = detail; Step = sim.Step; Seed = sim.Options.Seed; Event = event }
        try
            let sim, touched, obs, did = perform event sim
            let stats = { sim.Stats with Steps = sim.Step; Effective = sim.Stats.Effective + (if did then 1 else 0) }
            let sim = { sim with Stats = stats }
            if not sim.Options.CheckInvariants then Ok sim
            else
                match checkStep touched obs sim with
                | Ok sim -> Ok sim
                | Error(inv, detail) -> Error(violation inv detail)
        with e ->
            Error(violation "Panic" (e.GetType().Name + ": " + e.Message))

    /// The enabled events with their weights; each draws its parameters.
    let private candidates (sim: Sim) : (int * (SimRng -> SimEvent * SimRng)) list =
        let o = sim.Options
        let count = sim.Nodes.Length
        let has f = o.Faults.Contains f
        let netCount = sim.Network.Count
        let anyNode ctor (g: SimRng) =
            let n, g = SimRng.nextInt count g
            ctor n, g
        let twoNodes ctor (g: SimRng) =
            let a, g = SimRng.nextInt count g
            let b, g = SimRng.nextInt count g
            ctor (a, b), g
        let pick ctor (g: SimRng) =
            let p, g = SimRng.nextInt (max 1 netCount) g
            ctor p, g
        [ for i in 0 .. count - 1 do
              let n = sim.Nodes[i]
              yield 30, (fun g -> SimEvent.Tick i, g)
              match n.Writing with
              | None -> if RawNode.hasReady n.Raw then yield 120, (fun g -> SimEvent.ProcessReady i, g)
              | Some _ -> if sim.Step >= n.DiskSlowUntil then yield 120, (fun g -> SimEvent.FinishWrite i, g)
              if n.AppliedIndex >= snapshotIndex n.Storage + 8UL then yield 5, (fun g -> SimEvent.Compact i, g)
          if netCount > 0 then
              yield 450, (if has Fault.Reorder then pick SimEvent.Deliver else fun g -> SimEvent.Deliver 0, g)
          yield 25, anyNode SimEvent.Propose
          yield 8, anyNode SimEvent.ReadIndex
          yield 3, twoNodes SimEvent.TransferLeader
          if o.ConfChanges then
              yield
                  4,
                  fun g ->
                      let node, g = SimRng.nextInt count g
                      let kind, g = SimRng.nextInt 6 g
                      let a, g = SimRng.nextInt count g
                      let b, g = SimRng.nextInt count g
                      let c =
                          match kind with
                          | 0 -> SimConfChange.AddVoter a
                          | 1 -> SimConfChange.AddLearner a
                          | 2 -> SimConfChange.Remove a
                          | 3 -> SimConfChange.Joint(a, b)
                          | 4 -> SimConfChange.JointImplicit(a, b)
                          | _ -> SimConfChange.LeaveJoint
                      SimEvent.ConfChange(node, c), g
          if netCount > 0 && has Fault.Drop then yield 15, pick SimEvent.Drop
          if netCount > 0 && has Fault.Duplicate then yield 8, pick SimEvent.Duplicate
          if netCount > 0 && has Fault.Delay then
              yield
                  8,
                  fun g ->
                      let p, g = SimRng.nextInt netCount g
                      let s, g = SimRng.between 5 60 g
                      SimEvent.Delay(p, s), g
          if has Fault.Partition && sim.Isolated.IsEmpty then
              yield
                  2,
                  fun g ->
                      let a, g = SimRng.nextInt count g
                      let b, g = SimRng.nextInt count g
                      let s, g = SimRng.between 20 300 g
                      SimEvent.Partition(s, List.distinct [ a; b ]), g
          if has Fault.Crash then yield 2, anyNode SimEvent.Restart
          if has Fault.SlowDisk then
              yield
                  3,
                  fun g ->
                      let n, g = SimRng.nextInt count g
                      let s, g = SimRng.between 5 80 g
                      SimEvent.SlowDisk(n, s), g ]

    /// The scheduler: draws the next event among the enabled ones.
    let nextEvent (sim: Sim) : SimEvent * Sim =
        let cands = candidates sim
        let total = cands |> List.sumBy fst
        let r, g = SimRng.nextInt total sim.Rng
        let rec choose r l =
            match l with
            | [ (_, f) ] -> f
            | (w, f) :: rest -> if r < w then f else choose (r - w) rest
            | [] -> invalidOp "no candidate events"
        let ev, g = (choose r cands) g
        ev, { sim with Rng = g }

    let private finish (sim: Sim) (violation: Violation option) (events: SimEvent list) : SimOutcome =
        { Final = sim; Violation = violation; Events = List.rev events }

    /// A random run of Options.Steps steps from the seed; stops at the first violation.
    let runFrom (sim: Sim) : SimOutcome =
        let rec loop (sim: Sim) (events: SimEvent list) =
            if sim.Step >= sim.Options.Steps then finish sim None events
            else
                let ev, sim = nextEvent sim
                match apply ev sim with
                | Ok sim -> loop sim (ev :: events)
                | Error v -> finish sim (Some v) (ev :: events)
        loop sim []

    /// A random run (see runFrom). Error only for invalid options.
    let run (o: SimOptions) : Result<SimOutcome, string> = create o |> Result.map runFrom

    /// Runs the given events in order, exactly as a random run that drew them would;
    /// stops at the first violation.
    let runSchedule (o: SimOptions) (events: SimEvent list) : Result<SimOutcome, string> =
        create o
        |> Result.map (fun sim ->
            let rec loop (sim: Sim) (done': SimEvent list) (rest: SimEvent list) =
                match rest with
                | [] -> finish sim None done'
                | ev :: rest ->
                    match apply ev sim with
                    | Ok sim -> loop sim (ev :: done') rest
                    | Error v -> finish sim (Some v) (ev :: done')
            loop sim [] events)

    // ---- reporting -------------------------------------------------------------------------

    /// The command that replays a random run.
    let replayCommand (o: SimOptions) : string =
        sprintf
            "./raftv simulate --nodes %d --seed %d --steps %d --faults %s%s"
            o.Voters o.Seed o.Steps (Fault.listText o.Faults) (SimOptions.extraArgs o)

    /// The command that replays a schedule.
    let replayScheduleCommand (o: SimOptions) (events: SimEvent list) : string =
        sprintf
            "./raftv simulate --nodes %d --seed %d --schedule \"%s\"%s"
            o.Voters o.Seed (SimEvent.formatSchedule events) (SimOptions.extraArgs o)

    let describeViolation (v: Violation) : string =
        sprintf "invariant %s violated at step %d (seed %d, event '%s'): %s" v.Invariant v.Step v.Seed (SimEvent.format v.Event) v.Detail

    /// Trace events in the order they happened.
    let traces (sim: Sim) : TraceEvent list = List.rev sim.Traces

    /// The run's figures, one per line.
    let summary (sim: Sim) : string =
        let s = sim.Stats
        let faults =
            if s.Faults.IsEmpty then "none"
            else s.Faults |> Map.toSeq |> Seq.map (fun (k, v) -> sprintf "%s=%d" k v) |> String.concat " "
        let leaders = sim.Nodes |> Array.filter (fun n -> n.Raw.Raft.State = StateLeader) |> Array.map (fun n -> string n.Id)
        String.concat
            "\n"
            [ sprintf "seed %d, %d nodes (+%d spare), prevote=%b checkquorum=%b" sim.Options.Seed sim.Options.Voters sim.Options.Spares sim.PreVote sim.CheckQuorum
              sprintf "steps %d (%d effective), messages delivered %d" s.Steps s.Effective s.Delivered
              sprintf "elections %d, max term %d, leaders now [%s]" s.Elections s.MaxTerm (String.Join(" ", leaders))
              sprintf "committed index %d, proposals %d, conf changes proposed %d applied %d" sim.History.MaxCommitted s.Proposals s.ConfChangesProposed s.ConfChangesApplied
              sprintf "reads issued %d answered %d, compactions %d, snapshots installed %d" s.ReadsIssued s.ReadsAnswered s.Compactions s.SnapshotsInstalled
              sprintf "faults injected: %s" faults
              sprintf "invariant checks: %d" s.Checks ]

/// A cluster of RawNodes driven the way etcd's own benchmarks drive them: each node's Ready
/// handled synchronously (hard state, snapshot and entries into its MemoryStorage, messages
/// queued, Advance), messages delivered in order until the cluster is quiet. Used by
/// CoreBench and the micro-benchmarks. Only the driver mutates (its arrays and queue); the
/// nodes and storages stay values, so a state reached once can be stepped again and again.
type SyncCluster =
    { Nodes: RawNode[]
      Storages: MemoryStorage[]
      Network: Collections.Generic.Queue<Message> }

module SyncCluster =
    let ofNodes (nodes: RawNode[]) (storages: MemoryStorage[]) : SyncCluster =
        { Nodes = nodes; Storages = storages; Network = Collections.Generic.Queue() }

    /// Drops pending log lines and traces, as a host does after handing them to its logger.
    let private settle (rn: RawNode) =
        if RawNode.hasOutput rn then
            let rn, _, _ = RawNode.takeOutput rn
            rn
        else rn

    /// Handles one Ready of node i: persist, send, Advance.
    let handleReady (c: SyncCluster) (i: int) =
        let rn, rd = RawNode.ready c.Nodes[i]
        let s = match rd.HardState with Some hs -> MemoryStorage.setHardState hs c.Storages[i] | None -> c.Storages[i]
        let s =
            match rd.Snapshot with
            | Some snap when not (Snapshot.isEmpty snap) ->
                match MemoryStorage.applySnapshot snap s with
                | Ok s -> s
                | Error e -> invalidOp (StorageError.message e)
            | _ -> s
        let s = MemoryStorage.append rd.Entries s
        c.Storages[i] <- s
        for m in rd.Messages do
            c.Network.Enqueue m
        c.Nodes[i] <- rn |> RawNode.withStorage (MemoryStorage.asStorage s) |> RawNode.advance |> settle

    /// Handles every Ready and delivers every message until nothing is left to do.
    let stabilize (c: SyncCluster) =
        let mutable busy = true
        while busy do
            for i in 0 .. c.Nodes.Length - 1 do
                if RawNode.hasReady c.Nodes[i] then handleReady c i
            if c.Network.Count > 0 then
                while c.Network.Count > 0 do
                    let m = c.Network.Dequeue()
                    let i = int m.To - 1
                    c.Nodes[i] <- RawNode.step m c.Nodes[i] |> fst |> settle
            else busy <- c.Nodes |> Array.exists RawNode.hasReady

    /// Node 1 campaigns and the cluster settles with it as leader.
    let electFirst (c: SyncCluster) =
        c.Nodes[0] <- RawNode.campaign c.Nodes[0] |> fst
        stabilize c
        if c.Nodes[0].Raft.State <> StateLeader then invalidOp "node 1 did not become leader"

    /// Proposes `count` copies of `payload` at node 1 and stabilizes.
    let round (payload: byte[]) (count: int) (c: SyncCluster) =
        for _ in 1..count do
            c.Nodes[0] <- RawNode.propose payload c.Nodes[0] |> fst
        stabilize c

/// The core's throughput: a 3-node in-memory cluster committing proposals in batches.
type CoreBenchResult =
    { Entries: int
      Batch: int
      Seconds: float
      EntriesPerSecond: float
      BytesPerEntry: float }

module CoreBench =
    /// etcd server's usual limits, the simulator's short timeouts, no pre-vote or check quorum.
    let private options =
        { SimOptions.create 3 1UL Int32.MaxValue Set.empty with
            Spares = 0
            ConfChanges = false
            PreVote = Some false
            CheckQuorum = Some false
            CheckInvariants = false
            MaxSizePerMsg = 1024UL * 1024UL
            MaxInflightMsgs = 256 }

    let private measure (entries: int) (batch: int) (commit: unit -> unit) : CoreBenchResult =
        let allocated0 = GC.GetAllocatedBytesForCurrentThread()
        let clock = Diagnostics.Stopwatch.StartNew()
        commit ()
        clock.Stop()
        let allocated = GC.GetAllocatedBytesForCurrentThread() - allocated0
        let seconds = clock.Elapsed.TotalSeconds
        { Entries = entries
          Batch = batch
          Seconds = seconds
          EntriesPerSecond = float entries / seconds
          BytesPerEntry = float allocated / float entries }

    /// Commits `entries` proposals of 16 bytes, `batch` proposals per round, after a
    /// second of the same load to warm up, on a cluster driven the way etcd's own
    /// benchmarks drive RawNodes: each node's Ready is handled
    /// synchronously (hard state and entries appended to its MemoryStorage, messages sent,
    /// Advance) and messages are delivered in order until the cluster is quiet. What is
    /// measured is the core (RawNode, MemoryStorage), not the simulator's bookkeeping.
    let run (entries: int) (batch: int) : CoreBenchResult =
        let sim =
            match Simulator.create options with
            | Ok sim -> sim
            | Error e -> invalidOp e
        let c = SyncCluster.ofNodes (sim.Nodes |> Array.map (fun n -> n.Raw)) (sim.Nodes |> Array.map (fun n -> n.Storage))
        let nodes = c.Nodes
        SyncCluster.electFirst c
        let payload = Array.create 16 (byte 'x')
        let commit (entries: int) =
            let target = nodes[0].Raft.RaftLog.Committed + uint64 entries
            let mutable proposed = 0
            while nodes[0].Raft.RaftLog.Committed < target do
                let n = min batch (entries - proposed)
                SyncCluster.round payload n c
                proposed <- proposed + n
        // Warm up on the same cluster for a second first: .NET compiles hot code in tiers
        // (quick code, then instrumented, then optimized with the profile), and a short
        // run measures mostly the early tiers (20k entries at batch 1 ran at 40% of the
        // steady-state rate). etcd's Go code is compiled ahead of time.
        let warmup = Diagnostics.Stopwatch.StartNew()
        while warmup.Elapsed.TotalSeconds < 1.0 do
            commit 1000
        measure entries batch (fun () -> commit entries)

    /// Handles every Ready and delivers every message, in order, until the cluster is quiet.
    let rec private stabilizeSimulated (sim: Sim) : Sim =
        let step (sim: Sim) ev =
            match Simulator.apply ev sim with
            | Ok sim -> sim
            | Error v -> invalidOp (Simulator.describeViolation v)
        let sim =
            [ 0 .. sim.Nodes.Length - 1 ]
            |> List.fold (fun sim i -> step (step sim (SimEvent.ProcessReady i)) (SimEvent.FinishWrite i)) sim
        if sim.Network.IsEmpty then
            if sim.Nodes |> Array.exists (fun n -> RawNode.hasReady n.Raw) then stabilizeSimulated sim else sim
        else
            let rec drain (sim: Sim) = if sim.Network.IsEmpty then sim else drain (step sim (SimEvent.Deliver 0))
            stabilizeSimulated (drain sim)

    /// The same cluster and load through the simulator's events (Ready handling, write
    /// completion, delivery, the state machine's hash, its bookkeeping), without faults or
    /// invariant checks: the simulator's cost per committed entry on top of the core's.
    let runSimulated (entries: int) (batch: int) : CoreBenchResult =
        let sim =
            match Simulator.create options with
            | Ok sim -> sim
            | Error e -> invalidOp e
        let sim =
            sim.Nodes[0].Raw |> RawNode.campaign |> fst |> fun raw -> { sim with Nodes = Array.updateAt 0 { sim.Nodes[0] with Raw = raw } sim.Nodes }
        let sim = stabilizeSimulated sim
        let leader = sim.Nodes[0]
        if leader.Raw.Raft.State <> StateLeader then invalidOp "node 1 did not become leader"
        let payload = Array.create 16 (byte 'x')
        let target = leader.Raw.Raft.RaftLog.Committed + uint64 entries
        let rec loop (sim: Sim) (proposed: int) =
            if sim.Nodes[0].Raw.Raft.RaftLog.Committed >= target then sim
            else
                let n = min batch (entries - proposed)
                let raw =
                    Seq.replicate n () |> Seq.fold (fun raw () -> RawNode.propose payload raw |> fst) sim.Nodes[0].Raw
                let sim = { sim with Nodes = Array.updateAt 0 { sim.Nodes[0] with Raw = raw } sim.Nodes }
                loop (stabilizeSimulated sim) (proposed + n)
        measure entries batch (fun () -> loop sim 0 |> ignore)
