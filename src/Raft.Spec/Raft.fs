/// The state of one Raft node (etcd's raft struct) and the small operations every action
/// builds on: sending, role changes, replication to one peer, commit, configuration
/// switches. Everything is a function from a state to a new state; log lines, trace events
/// and outgoing messages accumulate in the state until the host drains them.
namespace Raft.Spec

open System

/// Why Step refused a message (etcd's ErrProposalDropped, ErrStepLocalMsg, ErrStepPeerNotFound).
type StepError =
    | ProposalDropped
    | StepLocalMsg
    | StepPeerNotFound

module StepError =
    /// etcd's error texts.
    let message (e: StepError) : string =
        match e with
        | ProposalDropped -> "raft proposal dropped"
        | StepLocalMsg -> "raft: cannot step raft local message"
        | StepPeerNotFound -> "raft: cannot step as peer not found"

/// The volatile part of the state that the application may want to observe (etcd's SoftState).
type SoftState = { Lead: uint64; RaftState: StateType }

/// The kinds of election (etcd's CampaignType). Transfer elections skip pre-vote and
/// override leader stickiness at the voters.
type CampaignType =
    | CampaignPreElection
    | CampaignElection
    | CampaignTransfer

module CampaignType =
    /// etcd's string values; a transfer's MsgVote carries it as its context.
    let name (t: CampaignType) =
        match t with
        | CampaignPreElection -> "CampaignPreElection"
        | CampaignElection -> "CampaignElection"
        | CampaignTransfer -> "CampaignTransfer"

/// Output waiting to be taken, in the order it was produced. Appending is O(1) (the items
/// are kept newest first) because a step appends one item at a time and a leader's queue
/// grows with every proposal until the next Ready takes it; reading it builds the in-order
/// list or array once.
[<Struct; NoComparison; NoEquality>]
type Outbox<'T> =
    private
        { NewestFirst: 'T list }

    member o.IsEmpty = o.NewestFirst.IsEmpty

    /// The items, oldest first.
    member o.ToList() : 'T list = List.rev o.NewestFirst

    /// The items, oldest first.
    member o.ToArray() : 'T[] =
        let items = List.toArray o.NewestFirst
        System.Array.Reverse items
        items

module Outbox =
    let empty<'T> : Outbox<'T> = { NewestFirst = [] }

    let add (item: 'T) (o: Outbox<'T>) : Outbox<'T> = { NewestFirst = item :: o.NewestFirst }

    let addList (items: 'T list) (o: Outbox<'T>) : Outbox<'T> =
        { NewestFirst = List.fold (fun acc x -> x :: acc) o.NewestFirst items }

    let ofList (items: 'T list) : Outbox<'T> = addList items empty

    let isEmpty (o: Outbox<'T>) = o.IsEmpty
    let toList (o: Outbox<'T>) = o.ToList()
    let toArray (o: Outbox<'T>) = o.ToArray()

[<NoComparison; NoEquality>]
type RaftState =
    { Id: uint64
      Term: uint64
      /// Whom we voted for in Term; 0 for nobody.
      Vote: uint64
      /// Answered ReadIndex requests not yet handed to the application.
      ReadStates: ReadState list
      RaftLog: RaftLog
      /// Byte limit of the entries of one MsgApp.
      MaxMsgSize: uint64
      /// Byte limit of the uncommitted tail of the leader's log.
      MaxUncommittedSize: uint64
      Trk: ProgressTracker
      State: StateType
      /// Whether this node is a learner in the current configuration.
      IsLearner: bool
      /// Messages to send right away, in order.
      Msgs: Outbox<Message>
      /// Messages (vote and append responses, also to ourselves) that may only leave once
      /// the unstable state they vouch for is durable.
      MsgsAfterAppend: Outbox<Message>
      Lead: uint64
      /// Target of a leadership transfer in progress; 0 for none.
      LeadTransferee: uint64
      /// Conf changes may only be proposed once the applied index passed this (the index of
      /// the latest conf change possibly still pending).
      PendingConfIndex: uint64
      DisableConfChangeValidation: bool
      /// Estimated payload bytes of the uncommitted log tail (leader only).
      UncommittedSize: uint64
      ReadOnly: ReadOnly
      /// Ticks since the last election timeout (leader, candidate) or since hearing from
      /// the leader (follower).
      ElectionElapsed: int
      /// Ticks since the last heartbeat (leader only).
      HeartbeatElapsed: int
      CheckQuorum: bool
      PreVote: bool
      HeartbeatTimeout: int
      ElectionTimeout: int
      /// Drawn from [ElectionTimeout, 2*ElectionTimeout - 1] at every role change.
      RandomizedElectionTimeout: int
      DisableProposalForwarding: bool
      StepDownOnRemoval: bool
      /// MsgReadIndex held back until the leader committed an entry of its own term.
      PendingReadIndexMessages: Message list
      /// State of the node's pseudo-random generator (no hidden randomness).
      RandomState: uint64
      /// Whether trace events are recorded.
      Tracing: bool
      /// Log lines not yet taken by the host, in order.
      Logs: Outbox<LogLine>
      /// Trace events not yet taken by the host, in order.
      Traces: Outbox<TraceEvent> }

module Raft =
    // ---- output ---------------------------------------------------------------------

    /// Go's %x of an id.
    let hex (id: uint64) : string = id.ToString("x")

    let private emit (line: LogLine) (r: RaftState) = { r with Logs = Outbox.add line r.Logs }

    let logLines (lines: LogLine list) (r: RaftState) =
        if List.isEmpty lines then r else { r with Logs = Outbox.addList lines r.Logs }

    let info text r = emit (LogLine.info text) r
    let debug text r = emit (LogLine.debug text) r
    let warn text r = emit (LogLine.warn text) r
    let error text r = emit (LogLine.error text) r

    let msgName (t: MessageType) = Describe.messageTypeName t

    /// etcd's TracingMessage: a snapshot is recorded by its index in the entry count.
    let private traceMessage (m: Message) : TraceMessage =
        let tm = TraceMessage.ofMessage m
        if m.Type = MsgSnap then
            let sindex = m.Snapshot |> Option.map (fun s -> s.Metadata.Index) |> Option.defaultValue 0UL
            { tm with Index = 0UL; LogTerm = 0UL; EntryCount = int sindex }
        else tm

    let traceEvent
        (name: string)
        (m: Message option)
        (cc: TraceConfChange option)
        (progress: (uint64 * uint64) option)
        (r: RaftState)
        =
        if not r.Tracing then r
        else
            let ev: TraceEvent =
                { Name = name
                  NodeId = r.Id
                  Term = r.Term
                  Vote = r.Vote
                  Commit = r.RaftLog.Committed
                  Role = r.State
                  LogLength = RaftLog.lastIndex r.RaftLog
                  Conf = Set.toList r.Trk.Config.Voters.Incoming, Set.toList r.Trk.Config.Voters.Outgoing
                  Message = m |> Option.map traceMessage
                  ConfChange = cc
                  Progress = progress }
            { r with Traces = Outbox.add ev r.Traces }

    let private traceNode name r = traceEvent name None None None r

    /// etcd's traceReceiveMessage.
    let traceReceive (m: Message) (r: RaftState) =
        match m.Type with
        | MsgApp | MsgHeartbeat | MsgSnap -> traceEvent "ReceiveAppendEntriesRequest" (Some m) None None r
        | MsgAppResp | MsgHeartbeatResp -> traceEvent "ReceiveAppendEntriesResponse" (Some m) None None r
        | MsgVote -> traceEvent "ReceiveRequestVoteRequest" (Some m) None None r
        | MsgVoteResp -> traceEvent "ReceiveRequestVoteResponse" (Some m) None None r
        | _ -> r

    let private traceSend (m: Message) (r: RaftState) =
        match m.Type with
        | MsgApp ->
            // etcd records the progress it keeps for the sender, i.e. the leader itself.
            let progress = r.Trk.Progress |> Map.tryFind m.From |> Option.map (fun p -> p.Match, p.Next)
            traceEvent "SendAppendEntriesRequest" (Some m) None progress r
        | MsgHeartbeat | MsgSnap -> traceEvent "SendAppendEntriesRequest" (Some m) None None r
        | MsgAppResp | MsgHeartbeatResp -> traceEvent "SendAppendEntriesResponse" (Some m) None None r
        | MsgVote -> traceEvent "SendRequestVoteRequest" (Some m) None None r
        | MsgVoteResp -> traceEvent "SendRequestVoteResponse" (Some m) None None r
        | _ -> r

    /// etcd's traceChangeConfEvent: a proposed conf change, by its adds and removals.
    let traceChangeConf (cc: ConfChangeV2) (r: RaftState) =
        let changes = cc.Changes |> List.filter (fun c -> c.Type <> ConfChangeUpdateNode)
        if List.isEmpty changes then r
        else traceEvent "ChangeConf" None (Some { Changes = changes; NewConf = [] }) None r

    // ---- small queries ---------------------------------------------------------------

    let hasLeader (r: RaftState) = r.Lead <> NodeId.None

    let softState (r: RaftState) : SoftState = { Lead = r.Lead; RaftState = r.State }

    let hardState (r: RaftState) : HardState =
        { Term = r.Term; Vote = r.Vote; Commit = r.RaftLog.Committed }

    let lastIndex (r: RaftState) = RaftLog.lastIndex r.RaftLog

    let lastEntryId (r: RaftState) = RaftLog.lastEntryId r.RaftLog

    let progress (id: uint64) (r: RaftState) : Progress option = Map.tryFind id r.Trk.Progress

    /// progress without allocating an option, for the paths every message takes.
    let tryProgress (id: uint64) (r: RaftState) : Progress voption =
        match r.Trk.Progress.TryGetValue id with
        | true, pr -> ValueSome pr
        | _ -> ValueNone

    let setProgress (id: uint64) (pr: Progress) (r: RaftState) =
        { r with Trk = { r.Trk with Progress = Map.add id pr r.Trk.Progress } }

    /// Changes the progress of a tracked peer; peers without progress are left alone.
    let updateProgress (id: uint64) (f: Progress -> Progress) (r: RaftState) =
        match progress id r with
        | Some pr -> setProgress id (f pr) r
        | None -> r

    /// Peers other than ourselves, in id order (etcd's Visit skipping r.id).
    let peers (r: RaftState) : uint64 list =
        Map.foldBack (fun id _ acc -> if id = r.Id then acc else id :: acc) r.Trk.Progress []

    let pastElectionTimeout (r: RaftState) = r.ElectionElapsed >= r.RandomizedElectionTimeout

    /// Whether this node may become leader: a voter of the configuration with no snapshot
    /// waiting to be applied.
    let promotable (r: RaftState) =
        match progress r.Id r with
        | Some pr -> not pr.IsLearner && not (RaftLog.hasNextOrInProgressSnapshot r.RaftLog)
        | None -> false

    /// Whether the leader committed an entry of its own term (needed before answering reads).
    let committedEntryInCurrentTerm (r: RaftState) =
        RaftLog.zeroTermOnOutOfBounds (RaftLog.term r.RaftLog.Committed r.RaftLog) = r.Term

    // ---- randomness ------------------------------------------------------------------

    /// splitmix64: a tiny, well-mixed generator whose whole state is one number.
    let private nextRandom (state: uint64) : uint64 * uint64 =
        let s = state + 0x9E3779B97F4A7C15UL
        let z = (s ^^^ (s >>> 30)) * 0xBF58476D1CE4E5B9UL
        let z = (z ^^^ (z >>> 27)) * 0x94D049BB133111EBUL
        z ^^^ (z >>> 31), s

    let resetRandomizedElectionTimeout (r: RaftState) =
        let value, next = nextRandom r.RandomState
        { r with
            RandomizedElectionTimeout = r.ElectionTimeout + int (value % uint64 r.ElectionTimeout)
            RandomState = next }

    /// Sets the randomized election timeout directly (tests pin it this way).
    let setRandomizedElectionTimeout (timeout: int) (r: RaftState) =
        { r with RandomizedElectionTimeout = timeout }

    // ---- sending -----------------------------------------------------------------------

    /// Queues a message whose sender and term are set, installing the tracker `trk` and the
    /// log `log` in the same update (sending an append also moves the peer's progress,
    /// answering one follows appending to the log). Responses that vouch for unstable
    /// state (appends, votes) wait in MsgsAfterAppend until it is durable.
    let private enqueue (m: Message) (trk: ProgressTracker) (log: RaftLog) (r: RaftState) : RaftState =
        match m.Type with
#if MUTANT_VOTE_RESP_BEFORE_PERSIST // seeded bug (tests/mutants.sh): a granted vote leaves before it is durable
        | MsgVoteResp when m.To <> r.Id -> traceSend m { r with Msgs = Outbox.add m r.Msgs; Trk = trk; RaftLog = log }
#endif
        | MsgAppResp | MsgVoteResp | MsgPreVoteResp ->
            traceSend m { r with MsgsAfterAppend = Outbox.add m r.MsgsAfterAppend; Trk = trk; RaftLog = log }
        | _ ->
            if m.To = r.Id then
                invalidOp (sprintf "message should not be self-addressed when sending %s" (msgName m.Type))
            traceSend m { r with Msgs = Outbox.add m r.Msgs; Trk = trk; RaftLog = log }

    /// The message with our id as sender and our term (etcd's send checks): campaign
    /// messages carry their own term, forwarded proposals and reads none.
    let private stamped (m: Message) (r: RaftState) : Message =
        let from = if m.From = NodeId.None then r.Id else m.From
        let term =
            match m.Type with
            | MsgVote | MsgVoteResp | MsgPreVote | MsgPreVoteResp ->
                // Campaign messages carry the term they are about, never our own implicitly.
                if m.Term = 0UL then invalidOp (sprintf "term should be set when sending %s" (msgName m.Type))
                m.Term
            | _ ->
                if m.Term <> 0UL then
                    invalidOp (sprintf "term should not be set when sending %s (was %d)" (msgName m.Type) m.Term)
                // Proposals and read requests are forwarded to the leader like local messages.
                if m.Type = MsgProp || m.Type = MsgReadIndex then m.Term else r.Term
        // One copy at most: messages are the bulk of what a step allocates.
        if from = m.From && term = m.Term then m else { m with From = from; Term = term }

    /// Queues a message (etcd's send): stamps sender and term; responses that vouch for
    /// unstable state (appends, votes) wait in MsgsAfterAppend until it is durable.
    let send (m: Message) (r: RaftState) : RaftState = enqueue (stamped m r) r.Trk r.RaftLog r

    /// send, installing a new log in the same state update.
    let sendWithLog (m: Message) (log: RaftLog) (r: RaftState) : RaftState = enqueue (stamped m r) r.Trk log r

    let private message (t: MessageType) (toId: uint64) : Message = { Message.empty with Type = t; To = toId }

    /// Sends a snapshot to a peer whose needed entries were compacted (etcd's maybeSendSnapshot).
    let maybeSendSnapshot (toId: uint64) (pr: Progress) (r: RaftState) : RaftState * bool =
        if not pr.RecentActive then
            debug (sprintf "ignore sending snapshot to %s since it is not recently active" (hex toId)) r, false
        else
            match RaftLog.snapshot r.RaftLog with
            | Error StorageError.SnapshotTemporarilyUnavailable ->
                debug
                    (sprintf "%s failed to send snapshot to %s because snapshot is temporarily unavailable" (hex r.Id) (hex toId))
                    r,
                false
            | Error e -> invalidOp (StorageError.message e)
            | Ok snap ->
                if Snapshot.isEmpty snap then invalidOp "need non-empty snapshot"
                let sindex, sterm = snap.Metadata.Index, snap.Metadata.Term
                let r =
                    debug
                        (sprintf "%s [firstindex: %d, commit: %d] sent snapshot[index: %d, term: %d] to %s [%s]"
                            (hex r.Id) (RaftLog.firstIndex r.RaftLog) r.RaftLog.Committed sindex sterm (hex toId)
                            (Progress.toString pr))
                        r
                let pr = Progress.becomeSnapshot sindex pr
                let r = setProgress toId pr r
                let r = debug (sprintf "%s paused sending replication messages to %s [%s]" (hex r.Id) (hex toId) (Progress.toString pr)) r
                send { message MsgSnap toId with Snapshot = Some snap } r, true

    /// Sends entries from the peer's Next on (etcd's maybeSendAppend). With sendIfEmpty
    /// false nothing is sent when there are no entries to send. Returns whether a message
    /// was sent.
    let maybeSendAppend (toId: uint64) (sendIfEmpty: bool) (r: RaftState) : RaftState * bool =
        match tryProgress toId r with
        | ValueNone -> r, false
        | ValueSome pr when Progress.isPaused pr -> r, false
        | ValueSome pr ->
            let prevIndex = pr.Next - 1UL
            match RaftLog.term prevIndex r.RaftLog with
            // The entries the peer needs were compacted away: only a snapshot can help.
            | Error _ -> maybeSendSnapshot toId pr r
            | Ok prevTerm ->
                // A throttled replicating peer gets empty appends only, so that acks or
                // rejections eventually free its window even if all in-flight appends were lost.
                let ents =
                    if pr.State <> StateReplicate || not (Inflights.full pr.Inflights) then
                        RaftLog.entries pr.Next r.MaxMsgSize r.RaftLog
                    else Ok [||]
                let count = match ents with Ok e -> e.Length | Error _ -> 0
                if count = 0 && not sendIfEmpty then r, false
                else
                    match ents with
                    | Error _ -> maybeSendSnapshot toId pr r
                    | Ok ents ->
                        let committed = r.RaftLog.Committed
                        // Built stamped (sender, term) and queued together with the peer's
                        // new progress: one message and one state per append.
                        let m =
                            { Message.empty with
                                Type = MsgApp
                                To = toId
                                From = r.Id
                                Term = r.Term
                                Index = prevIndex
                                LogTerm = prevTerm
                                Entries = ents
                                Commit = committed }
                        let pr =
                            pr
                            |> Progress.sentEntries ents.Length (Codec.payloadsSize ents)
                            |> Progress.sentCommit committed
                        enqueue m { r.Trk with Progress = Map.add toId pr r.Trk.Progress } r.RaftLog r, true

    /// etcd's sendAppend: an append even when it carries no entries (to convey the commit index).
    let sendAppend (toId: uint64) (r: RaftState) : RaftState = maybeSendAppend toId true r |> fst

    /// Sends as many appends as flow control allows, none of them empty.
    let rec sendAppendsWhilePossible (toId: uint64) (r: RaftState) : RaftState =
        match maybeSendAppend toId false r with
        | r, true -> sendAppendsWhilePossible toId r
        | r, false -> r

    /// A heartbeat carries commit = min(match, committed): a follower must never be told
    /// to commit beyond what it is known to hold (etcd's sendHeartbeat).
    let sendHeartbeat (toId: uint64) (ctx: byte[]) (r: RaftState) : RaftState =
        match tryProgress toId r with
        | ValueNone -> r
        | ValueSome pr ->
#if MUTANT_HEARTBEAT_FULL_COMMIT // seeded bug (tests/mutants.sh): tells a follower to commit beyond what it holds
            let commit = (ignore pr; r.RaftLog.Committed)
#else
            let commit = min pr.Match r.RaftLog.Committed
#endif
            let r = send { message MsgHeartbeat toId with Commit = commit; Context = ctx } r
            updateProgress toId (Progress.sentCommit commit) r

    let bcastAppend (r: RaftState) : RaftState = peers r |> List.fold (fun r id -> sendAppend id r) r

    let bcastHeartbeatWithCtx (ctx: byte[]) (r: RaftState) : RaftState =
        peers r |> List.fold (fun r id -> sendHeartbeat id ctx r) r

    let bcastHeartbeat (r: RaftState) : RaftState = bcastHeartbeatWithCtx (ReadOnly.heartbeatCtx r.ReadOnly) r

    let sendTimeoutNow (toId: uint64) (r: RaftState) : RaftState = send (message MsgTimeoutNow toId) r

    let abortLeaderTransfer (r: RaftState) = { r with LeadTransferee = NodeId.None }

    // ---- commit ------------------------------------------------------------------------

    /// Commits what a quorum holds, if it is of the current term (etcd's maybeCommit).
    let maybeCommit (r: RaftState) : RaftState * bool =
        let committed = ProgressTracker.committed r.Trk
#if MUTANT_COMMIT_OLD_TERM // seeded bug (tests/mutants.sh): commits the quorum index whatever its term
        let log, moved = RaftLog.maybeCommit (EntryId.create (RaftLog.zeroTermOnOutOfBounds (RaftLog.term committed r.RaftLog)) committed) r.RaftLog
#else
        let log, moved = RaftLog.maybeCommit (EntryId.create r.Term committed) r.RaftLog
#endif
        traceNode "Commit" (if moved then { r with RaftLog = log } else r), moved

    // ---- uncommitted size --------------------------------------------------------------

    /// Accounts for proposed entries; refuses (false) when they would push a non-empty
    /// uncommitted tail over the limit. Empty payloads are never refused.
    let increaseUncommittedSize (ents: Entry[]) (r: RaftState) : RaftState * bool =
        let s = Codec.payloadsSize ents
        if r.UncommittedSize > 0UL && s > 0UL && r.UncommittedSize + s > r.MaxUncommittedSize then r, false
        else { r with UncommittedSize = r.UncommittedSize + s }, true

    /// Accounts for committed entries; saturates at 0 because the estimate may be low.
    let reduceUncommittedSize (s: uint64) (r: RaftState) : RaftState =
        if s = 0UL || r.UncommittedSize = 0UL then r
        else { r with UncommittedSize = if s > r.UncommittedSize then 0UL else r.UncommittedSize - s }

    // ---- roles ---------------------------------------------------------------------------

    /// Clears the per-term state (etcd's reset).
    let reset (term: uint64) (r: RaftState) : RaftState =
        let r = if r.Term <> term then { r with Term = term; Vote = NodeId.None } else r
        let r =
            { r with
                Lead = NodeId.None
                ElectionElapsed = 0
                HeartbeatElapsed = 0 }
            |> resetRandomizedElectionTimeout
            |> abortLeaderTransfer
        let last = RaftLog.lastIndex r.RaftLog
        let trk = ProgressTracker.resetVotes r.Trk
        let fresh id (pr: Progress) =
            { Progress.create (last + 1UL) (Inflights.create trk.MaxInflight trk.MaxInflightBytes) pr.IsLearner with
                Match = if id = r.Id then last else 0UL }
        { r with
            Trk = { trk with Progress = Map.map fresh trk.Progress }
            PendingConfIndex = 0UL
            UncommittedSize = 0UL
            ReadOnly = ReadOnly.create r.ReadOnly.Option }

    /// Appends proposals at the leader with our term and the next indexes, then acks them
    /// ourselves once durable (etcd's appendEntry). False if the uncommitted limit refused them.
    let appendEntry (es: Entry[]) (r: RaftState) : RaftState * bool =
        let li = RaftLog.lastIndex r.RaftLog
        let ents = es |> Array.mapi (fun i e -> { e with Term = r.Term; Index = li + 1UL + uint64 i })
        let size = Codec.payloadsSize ents
        // increaseUncommittedSize's rule, applied together with the append in one update.
        if r.UncommittedSize > 0UL && size > 0UL && r.UncommittedSize + size > r.MaxUncommittedSize then
            warn
                (sprintf "%s appending new entries to log would exceed uncommitted entry size limit; dropping proposal" (hex r.Id))
                r,
            false
        else
            let r =
                if not r.Tracing then r
                else ents |> Array.filter (fun e -> e.Type = EntryNormal) |> Array.fold (fun r _ -> traceNode "Replicate" r) r
            let log, lines = RaftLog.append ents r.RaftLog
            let r = logLines lines { r with RaftLog = log; UncommittedSize = r.UncommittedSize + size }
            // The leader doesn't send itself a MsgApp: this self-ack counts its own copy once durable.
            send { Message.empty with Type = MsgAppResp; To = r.Id; Index = RaftLog.lastIndex r.RaftLog } r, true

    let becomeFollower (term: uint64) (lead: uint64) (r: RaftState) : RaftState =
        let r = reset term r
        let r = { r with Lead = lead; State = StateFollower }
        let r = info (sprintf "%s became follower at term %d" (hex r.Id) r.Term) r
        traceNode "BecomeFollower" r

    let becomeCandidate (r: RaftState) : RaftState =
        if r.State = StateLeader then invalidOp "invalid transition [leader -> candidate]"
        let r = reset (r.Term + 1UL) r
        let r = { r with Vote = r.Id; State = StateCandidate }
        let r = info (sprintf "%s became candidate at term %d" (hex r.Id) r.Term) r
        traceNode "BecomeCandidate" r

    /// A pre-candidate keeps its term and vote: it only asks whether it could win.
    let becomePreCandidate (r: RaftState) : RaftState =
        if r.State = StateLeader then invalidOp "invalid transition [leader -> pre-candidate]"
        let r =
            { r with
                Trk = ProgressTracker.resetVotes r.Trk
                Lead = NodeId.None
                State = StatePreCandidate }
        info (sprintf "%s became pre-candidate at term %d" (hex r.Id) r.Term) r

    let becomeLeader (r: RaftState) : RaftState =
        if r.State = StateFollower then invalidOp "invalid transition [follower -> leader]"
        let r = reset r.Term r
        let r = { r with Lead = r.Id; State = StateLeader }
        // The leader trivially replicates to itself and is always recently active.
        let r = updateProgress r.Id (fun pr -> { Progress.becomeReplicate pr with RecentActive = true }) r
        // Some entry of the tail may be a conf change: delay new ones until all are applied.
        let r = { r with PendingConfIndex = RaftLog.lastIndex r.RaftLog }
        let r = traceNode "BecomeLeader" r
        match appendEntry [| Entry.create 0UL 0UL [||] |] r with
        | _, false -> invalidOp "empty entry was dropped"
        | r, true -> info (sprintf "%s became leader at term %d" (hex r.Id) r.Term) r

    // ---- read index ------------------------------------------------------------------------

    /// Answers a read: local requests become ReadStates, remote ones a MsgReadIndexResp.
    let responseToReadIndexReq (req: Message) (readIndex: uint64) (r: RaftState) : RaftState =
        if req.From = NodeId.None || req.From = r.Id then
            let ctx = if req.Entries.Length > 0 then req.Entries[0].Data else [||]
            { r with ReadStates = r.ReadStates @ [ { Index = readIndex; RequestCtx = ctx } ] }
        else
            send { message MsgReadIndexResp req.From with Index = readIndex; Entries = req.Entries } r

    /// Starts confirming a read: through a heartbeat round (safe) or from the lease.
    let sendMsgReadIndexResponse (m: Message) (r: RaftState) : RaftState =
        match r.ReadOnly.Option with
#if MUTANT_LEASE_READ_WITHOUT_CHECK_QUORUM // seeded bug (tests/mutants.sh): answers from a lease nothing guarantees
        | ReadOnlySafe when not r.CheckQuorum -> responseToReadIndexReq m r.RaftLog.Committed r
#endif
        | ReadOnlySafe ->
            let ro = ReadOnly.addRequest r.RaftLog.Committed m r.ReadOnly
            // Our own ack counts towards the quorum at once.
            let ro = ReadOnly.recvAck r.Id (ReadOnly.heartbeatCtx ro) ro
            bcastHeartbeat { r with ReadOnly = ro }
        | ReadOnlyLeaseBased -> responseToReadIndexReq m r.RaftLog.Committed r

    /// Serves the reads held back until the first commit of this leader's term.
    let releasePendingReadIndexMessages (r: RaftState) : RaftState =
        if List.isEmpty r.PendingReadIndexMessages then r
        elif not (committedEntryInCurrentTerm r) then
            error "pending MsgReadIndex should be released only after first commit in current term" r
        else
            let msgs = r.PendingReadIndexMessages
            msgs |> List.fold (fun r m -> sendMsgReadIndexResponse m r) { r with PendingReadIndexMessages = [] }

    // ---- configuration ---------------------------------------------------------------------

    let private describeConfState (cs: ConfState) =
        sprintf "Voters:%s VotersOutgoing:%s Learners:%s LearnersNext:%s AutoLeave:%b"
            (Describe.idList cs.Voters) (Describe.idList cs.VotersOutgoing) (Describe.idList cs.Learners)
            (Describe.idList cs.LearnersNext) cs.AutoLeave

    /// etcd panics when a restored configuration doesn't reproduce the ConfState it came from.
    let assertConfStatesEquivalent (expected: ConfState) (actual: ConfState) =
        if not (ConfState.equivalent expected actual) then
            invalidOp (
                sprintf "ConfStates not equivalent after sorting:\n%s\n%s" (describeConfState expected) (describeConfState actual)
            )

    /// Installs a configuration and reacts to it (etcd's switchToConfig): a removed leader
    /// may step down; a leader commits what the new quorum allows and probes new peers.
    let switchToConfig (cfg: TrackerConfig) (prs: Map<uint64, Progress>) (r: RaftState) : RaftState * ConfState =
        let r =
            traceEvent "ApplyConfChange" None (Some { Changes = []; NewConf = Set.toList cfg.Voters.Incoming }) None r
        let r = { r with Trk = { r.Trk with Config = cfg; Progress = prs } }
        let r = info (sprintf "%s switched to configuration %s" (hex r.Id) (TrackerConfig.toString r.Trk.Config)) r
        let cs = ProgressTracker.confState r.Trk
        let self = progress r.Id r
        let r = { r with IsLearner = (match self with Some pr -> pr.IsLearner | None -> false) }
        if (self.IsNone || r.IsLearner) && r.State = StateLeader then
            let r = if r.StepDownOnRemoval then becomeFollower r.Term NodeId.None r else r
            r, cs
        elif r.State <> StateLeader || List.isEmpty cs.Voters then r, cs
        else
            let r =
                match maybeCommit r with
                | r, true -> bcastAppend r
                // Nothing newly committed: still probe added peers rather than wait for a heartbeat.
                | r, false -> peers r |> List.fold (fun r id -> maybeSendAppend id false r |> fst) r
            let transfereeStillVoter = JointConfig.ids r.Trk.Config.Voters |> Set.contains r.LeadTransferee
            let r = if not transfereeStillVoter && r.LeadTransferee <> NodeId.None then abortLeaderTransfer r else r
            r, cs

    /// Applies a committed conf change to the configuration (etcd's applyConfChange). etcd
    /// panics on an invalid change; here it is an error with the same text.
    let applyConfChange (r: RaftState) (cc: ConfChangeV2) : Result<RaftState * ConfState, string> =
        let lastIndex = RaftLog.lastIndex r.RaftLog
        let changed =
            if ConfChangeV2.leaveJoint cc then Changer.leaveJoint r.Trk lastIndex
            else
                match ConfChangeV2.enterJoint cc with
                | Some autoLeave -> Changer.enterJoint r.Trk lastIndex autoLeave cc.Changes
                | None -> Changer.simple r.Trk lastIndex cc.Changes
        changed |> Result.map (fun (cfg, prs) -> switchToConfig cfg prs r)

    /// Restores the log and configuration from a snapshot (etcd's restore); false when it
    /// was ignored (stale, not for us, or merely fast-forwarding the commit index).
    let restore (s: Snapshot) (r: RaftState) : RaftState * bool =
        let sindex, sterm = s.Metadata.Index, s.Metadata.Term
        if sindex <= r.RaftLog.Committed then r, false
        elif r.State <> StateFollower then
            // Defense in depth: never apply a snapshot as a leader or candidate.
            let r = warn (sprintf "%s attempted to restore snapshot as leader; should never happen" (hex r.Id)) r
            becomeFollower (r.Term + 1UL) NodeId.None r, false
        else
            let cs = s.Metadata.ConfState
            let isMember = List.contains r.Id cs.Voters || List.contains r.Id cs.Learners || List.contains r.Id cs.VotersOutgoing
            if not isMember then
                warn
                    (sprintf "%s attempted to restore snapshot but it is not in the ConfState %s; should never happen"
                        (hex r.Id) (Describe.confStateProtoText cs))
                    r,
                false
            else
                let id = EntryId.create sterm sindex
                if RaftLog.matchTerm id r.RaftLog then
                    let last = lastEntryId r
                    let r =
                        info
                            (sprintf "%s [commit: %d, lastindex: %d, lastterm: %d] fast-forwarded commit to snapshot [index: %d, term: %d]"
                                (hex r.Id) r.RaftLog.Committed last.Index last.Term sindex sterm)
                            r
                    { r with RaftLog = RaftLog.commitTo sindex r.RaftLog }, false
                else
                    let log, lines = RaftLog.restore s r.RaftLog
                    let r = logLines lines { r with RaftLog = log }
                    let trk = ProgressTracker.create r.Trk.MaxInflight r.Trk.MaxInflightBytes
                    match Restore.restore trk (RaftLog.lastIndex r.RaftLog) cs with
                    | Error e -> invalidOp (sprintf "unable to restore config %s: %s" (describeConfState cs) e)
                    | Ok(cfg, prs) ->
                        let r, restored = switchToConfig cfg prs { r with Trk = trk }
                        assertConfStatesEquivalent cs restored
                        let last = lastEntryId r
                        let r =
                            info
                                (sprintf "%s [commit: %d, lastindex: %d, lastterm: %d] restored snapshot [index: %d, term: %d]"
                                    (hex r.Id) r.RaftLog.Committed last.Index last.Term sindex sterm)
                                r
                        r, true

    // ---- creation ------------------------------------------------------------------------

    let private loadState (hs: HardState) (r: RaftState) : RaftState =
        let last = RaftLog.lastIndex r.RaftLog
        if hs.Commit < r.RaftLog.Committed || hs.Commit > last then
            invalidOp (sprintf "%s state.commit %d is out of range [%d, %d]" (hex r.Id) hs.Commit r.RaftLog.Committed last)
        { r with
            RaftLog = { r.RaftLog with Committed = hs.Commit }
            Term = hs.Term
            Vote = hs.Vote }

    /// A node as restarted from its storage (etcd's newRaft): a follower without leader at
    /// the stored term. Invalid configurations and unreadable storage are errors.
    let create (config: Config) : Result<RaftState, string> =
        Config.validate config
        |> Result.bind (fun c ->
            c.Storage.InitialState()
            |> Result.bind (fun (hs, cs) ->
                let log = RaftLog.create c.Storage c.MaxCommittedSizePerReady
                let r =
                    { Id = c.Id
                      Term = 0UL
                      Vote = NodeId.None
                      ReadStates = []
                      RaftLog = log
                      MaxMsgSize = c.MaxSizePerMsg
                      MaxUncommittedSize = c.MaxUncommittedEntriesSize
                      Trk = ProgressTracker.create c.MaxInflightMsgs c.MaxInflightBytes
                      State = StateFollower
                      IsLearner = false
                      Msgs = Outbox.empty
                      MsgsAfterAppend = Outbox.empty
                      Lead = NodeId.None
                      LeadTransferee = NodeId.None
                      PendingConfIndex = 0UL
                      DisableConfChangeValidation = c.DisableConfChangeValidation
                      UncommittedSize = 0UL
                      ReadOnly = ReadOnly.create c.ReadOnlyOption
                      ElectionElapsed = 0
                      HeartbeatElapsed = 0
                      CheckQuorum = c.CheckQuorum
                      PreVote = c.PreVote
                      HeartbeatTimeout = c.HeartbeatTick
                      ElectionTimeout = c.ElectionTick
                      RandomizedElectionTimeout = 0
                      DisableProposalForwarding = c.DisableProposalForwarding
                      StepDownOnRemoval = c.StepDownOnRemoval
                      PendingReadIndexMessages = []
                      RandomState = c.RandomSeed
                      Tracing = c.Tracing
                      Logs = Outbox.empty
                      Traces = Outbox.empty }
                let r = traceNode "InitState" r
                match Restore.restore r.Trk (RaftLog.lastIndex log) cs with
                | Error e -> Error e
                | Ok(cfg, prs) ->
                    let r, restored = switchToConfig cfg prs r
                    assertConfStatesEquivalent cs restored
                    let r = if HardState.isEmpty hs then r else loadState hs r
                    let r =
                        if c.Applied > 0UL then { r with RaftLog = RaftLog.appliedTo c.Applied 0UL r.RaftLog } else r
                    let r = becomeFollower r.Term NodeId.None r
                    let peersText = ProgressTracker.voterNodes r.Trk |> List.map hex |> String.concat ","
                    let last = lastEntryId r
                    Ok(
                        info
                            (sprintf "newRaft %s [peers: [%s], term: %d, commit: %d, applied: %d, lastindex: %d, lastterm: %d]"
                                (hex r.Id) peersText r.Term r.RaftLog.Committed r.RaftLog.Applied last.Index last.Term)
                            r
                    )))

    // ---- draining output -----------------------------------------------------------------

    /// Takes the pending log lines and trace events.
    let takeOutput (r: RaftState) : RaftState * LogLine list * TraceEvent list =
        // Hosts drain after every step; most steps log nothing.
        if r.Logs.IsEmpty && r.Traces.IsEmpty then r, [], []
        else { r with Logs = Outbox.empty; Traces = Outbox.empty }, Outbox.toList r.Logs, Outbox.toList r.Traces

    /// Takes the messages that may be sent right away.
    let takeMessages (r: RaftState) : RaftState * Message list = { r with Msgs = Outbox.empty }, Outbox.toList r.Msgs

    /// Takes the messages that wait for the unstable state to become durable.
    let advanceMessagesAfterAppend (r: RaftState) : RaftState * Message list =
        { r with MsgsAfterAppend = Outbox.empty }, Outbox.toList r.MsgsAfterAppend

    /// Takes the answered reads.
    let takeReadStates (r: RaftState) : RaftState * ReadState list = { r with ReadStates = [] }, r.ReadStates
