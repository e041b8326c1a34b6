/// The node's actions, one function per action of tlaplus/Raft.tla and of the same name
/// (docs/spec-mapping.md). Each mirrors the etcd-raft code path named in its comment;
/// Step.fs dispatches messages to them as etcd's Step/stepLeader/stepCandidate/stepFollower do.
module Raft.Spec.Actions

open System.Text
open Raft.Spec.Raft

// ---- roles -----------------------------------------------------------------------------

// TLA+: BecomePreCandidate
/// etcd's becomePreCandidate: start asking whether we could win, keeping term and vote.
let BecomePreCandidate (r: RaftState) : RaftState = Raft.becomePreCandidate r

// TLA+: BecomeCandidate
/// etcd's becomeCandidate: next term, vote for ourselves.
let BecomeCandidate (r: RaftState) : RaftState = Raft.becomeCandidate r

// TLA+: BecomeLeader
/// etcd's becomeLeader: reset the peers' progress and append the empty entry of our term.
let BecomeLeader (r: RaftState) : RaftState = Raft.becomeLeader r

// TLA+: BecomeFollower
/// etcd's becomeFollower.
let BecomeFollower (term: uint64) (lead: uint64) (r: RaftState) : RaftState = Raft.becomeFollower term lead r

// ---- elections -------------------------------------------------------------------------

/// Whether committed but unapplied entries hold a conf change: a node must not campaign
/// before it applied them, or it might win with a stale configuration.
let private hasUnappliedConfChanges (r: RaftState) : bool =
    let log = r.RaftLog
    if log.Applied >= log.Committed then false
    else
        let lo, hi = log.Applied + 1UL, log.Committed + 1UL
        let isConfChange (e: Entry) = e.Type = EntryConfChange || e.Type = EntryConfChangeV2
        match RaftLog.scan lo hi log.MaxApplyingEntsSize (Array.exists isConfChange) log with
        | Ok found -> found
        | Error e -> invalidOp (sprintf "error scanning unapplied entries [%d, %d): %s" lo hi e)

let private campaignContext = Encoding.ASCII.GetBytes(CampaignType.name CampaignTransfer)

/// etcd's campaign: become (pre-)candidate and ask every voter, our own vote counted once durable.
let private campaign (t: CampaignType) (r: RaftState) : RaftState =
    let r = if promotable r then r else warn (sprintf "%s is unpromotable; campaign() should have been called" (hex r.Id)) r
    let r, voteMsg, term =
        match t with
        | CampaignPreElection ->
            // Pre-votes are asked for the term we would campaign in, without moving to it.
            let r = BecomePreCandidate r
            r, MsgPreVote, r.Term + 1UL
        | CampaignElection
        | CampaignTransfer ->
            let r = BecomeCandidate r
            r, MsgVote, r.Term
    let respType = (MessageType.voteResponse voteMsg).Value
    JointConfig.ids r.Trk.Config.Voters
    |> Set.toList
    |> List.fold
        (fun r id ->
            if id = r.Id then
                send { Message.empty with To = id; Term = term; Type = respType } r
            else
                let last = lastEntryId r
                let r =
                    info
                        (sprintf "%s [logterm: %d, index: %d] sent %s request to %s at term %d"
                            (hex r.Id) last.Term last.Index (msgName voteMsg) (hex id) r.Term)
                        r
                let ctx = if t = CampaignTransfer then campaignContext else [||]
                send
                    { Message.empty with
                        To = id
                        Term = term
                        Type = voteMsg
                        Index = last.Index
                        LogTerm = last.Term
                        Context = ctx }
                    r)
        r

/// etcd's hup: campaign unless leader, not promotable, or conf changes are unapplied.
let private hup (t: CampaignType) (r: RaftState) : RaftState =
    if r.State = StateLeader then debug (sprintf "%s ignoring MsgHup because already leader" (hex r.Id)) r
    elif not (promotable r) then warn (sprintf "%s is unpromotable and can not campaign" (hex r.Id)) r
    elif hasUnappliedConfChanges r then
        warn
            (sprintf "%s cannot campaign at term %d since there are still pending configuration changes to apply" (hex r.Id) r.Term)
            r
    else
        let r = info (sprintf "%s is starting a new election at term %d" (hex r.Id) r.Term) r
        campaign t r

// TLA+: Timeout
/// MsgHup (election timeout or an explicit campaign): etcd's hup with pre-vote when enabled.
let Timeout (r: RaftState) : RaftState =
    hup (if r.PreVote then CampaignPreElection else CampaignElection) r

// TLA+: HandleRequestVoteRequest
/// MsgVote / MsgPreVote at the current term or a future one (etcd's Step, vote case): grant
/// if we may vote (repeat vote, no vote and no leader, or a pre-vote for a later term) and
/// the candidate's log is at least as up to date as ours.
let HandleRequestVoteRequest (m: Message) (r: RaftState) : RaftState =
    let canVote =
        r.Vote = m.From
        || (r.Vote = NodeId.None && r.Lead = NodeId.None)
        || (m.Type = MsgPreVote && m.Term > r.Term)
    let last = lastEntryId r
    let respType = (MessageType.voteResponse m.Type).Value
    let describe verb =
        sprintf "%s [logterm: %d, index: %d, vote: %s] %s %s %s %s [logterm: %d, index: %d] at term %d"
            (hex r.Id) last.Term last.Index (hex r.Vote) verb (msgName m.Type)
            (if verb = "cast" then "for" else "from") (hex m.From) m.LogTerm m.Index r.Term
    // Learners vote too: a promoted learner may not know yet that it is a voter.
#if MUTANT_VOTE_IGNORES_LOG // seeded bug (tests/mutants.sh): grants without the up-to-date check
    if canVote then
#else
    if canVote && RaftLog.isUpToDate (EntryId.create m.LogTerm m.Index) r.RaftLog then
#endif
        let r = info (describe "cast") r
        // The response carries the request's term: a pre-vote is answered at the future term.
        let r = send { Message.empty with To = m.From; Term = m.Term; Type = respType } r
        if m.Type = MsgVote then { r with ElectionElapsed = 0; Vote = m.From } else r
    else
        let r = info (describe "rejected") r
        send { Message.empty with To = m.From; Term = r.Term; Type = respType; Reject = true } r

/// etcd's poll: record a vote and count them.
let private poll (id: uint64) (t: MessageType) (granted: bool) (r: RaftState) =
    let r =
        if granted then info (sprintf "%s received %s from %s at term %d" (hex r.Id) (msgName t) (hex id) r.Term) r
        else info (sprintf "%s received %s rejection from %s at term %d" (hex r.Id) (msgName t) (hex id) r.Term) r
    let trk = ProgressTracker.recordVote id granted r.Trk
    let gr, rj, res = ProgressTracker.tallyVotes trk
    { r with Trk = trk }, gr, rj, res

// TLA+: HandleRequestVoteResponse
/// The vote response of our current candidacy (etcd's stepCandidate): a won pre-vote starts
/// the real election, a won election makes us leader, a lost one a follower.
let HandleRequestVoteResponse (m: Message) (r: RaftState) : RaftState =
    let r, gr, rj, res = poll m.From m.Type (not m.Reject) r
    let r = info (sprintf "%s has received %d %s votes and %d vote rejections" (hex r.Id) gr (msgName m.Type) rj) r
    match res with
    | VoteWon ->
        if r.State = StatePreCandidate then campaign CampaignElection r
        else BecomeLeader r |> bcastAppend
    // A rejected pre-vote may carry a future term: stay at ours.
    | VoteLost -> BecomeFollower r.Term NodeId.None r
    | VotePending -> r

// ---- proposals -------------------------------------------------------------------------

// TLA+: ProposeConfChange
/// The checks etcd's stepLeader runs on a conf-change entry at position i of a proposal:
/// one pending change at a time, and joint configurations entered and left in turn.
/// A refused change becomes an empty normal entry (unless validation is disabled).
let ProposeConfChange (i: int) (e: Entry) (r: RaftState) : RaftState * Entry =
    match Codec.confChangeOfEntry e with
    | Error err -> invalidOp err
    | Ok None -> r, e
    | Ok(Some cc) ->
        let v2 = ConfChangeI.asV2 cc
#if MUTANT_PENDING_CONF_IGNORED // seeded bug (tests/mutants.sh): a second conf change before the first is applied
        let alreadyPending = false
#else
        let alreadyPending = r.PendingConfIndex > r.RaftLog.Applied
#endif
        let alreadyJoint = JointConfig.isJoint r.Trk.Config.Voters
        let wantsLeaveJoint = List.isEmpty v2.Changes
        let failedCheck =
            if alreadyPending then
                Some(sprintf "possible unapplied conf change at index %d (applied to %d)" r.PendingConfIndex r.RaftLog.Applied)
            elif alreadyJoint && not wantsLeaveJoint then Some "must transition out of joint config first"
            elif not alreadyJoint && wantsLeaveJoint then Some "not in joint state; refusing empty conf change"
            else None
        match failedCheck with
        | Some reason when not r.DisableConfChangeValidation ->
            let r =
                info
                    (sprintf "%s ignoring conf change %s at config %s: %s"
                        (hex r.Id) (Describe.confChange v2) (TrackerConfig.toString r.Trk.Config) reason)
                    r
            r, { Entry.create 0UL 0UL [||] with Type = EntryNormal }
        | _ ->
            let r = { r with PendingConfIndex = RaftLog.lastIndex r.RaftLog + uint64 i + 1UL }
            traceChangeConf v2 r, e

// TLA+: ClientRequest
/// MsgProp at the leader (etcd's stepLeader): dropped when we left the configuration or a
/// transfer is under way; conf changes are checked; then appended and broadcast.
let ClientRequest (m: Message) (r: RaftState) : RaftState * Result<unit, StepError> =
    if m.Entries.Length = 0 then invalidOp (sprintf "%s stepped empty MsgProp" (hex r.Id))
    if not (r.Trk.Progress.ContainsKey r.Id) then r, Error ProposalDropped
    elif r.LeadTransferee <> NodeId.None then
        debug
            (sprintf "%s [term %d] transfer leadership to %s is in progress; dropping proposal"
                (hex r.Id) r.Term (hex r.LeadTransferee))
            r,
        Error ProposalDropped
    else
        let r, ents =
            // Normal entries pass the conf change checks untouched.
            if m.Entries |> Array.forall (fun e -> e.Type = EntryNormal) then r, m.Entries
            else
                let r, ents =
                    m.Entries
                    |> Array.indexed
                    |> Array.fold
                        (fun (r, acc) (i, e) ->
                            let r, e = ProposeConfChange i e r
                            r, e :: acc)
                        (r, [])
                r, ents |> List.rev |> List.toArray
        match appendEntry ents r with
        | r, false -> r, Error ProposalDropped
        | r, true -> bcastAppend r, Ok()

// TLA+: AutoLeaveJoint
/// etcd's appliedTo tail: once a joint configuration with auto-leave is applied, the leader
/// proposes the empty ConfChangeV2 (no data, so the size limit can't refuse it). It is retried
/// on every later apply if dropped, e.g. during a leadership transfer.
let AutoLeaveJoint (r: RaftState) : RaftState =
    if r.Trk.Config.AutoLeave && r.RaftLog.Applied >= r.PendingConfIndex && r.State = StateLeader then
        let typ, data = Codec.marshalConfChange None
        let prop = { Message.empty with Type = MsgProp; Entries = [| { Entry.create 0UL 0UL data with Type = typ } |] }
        // The proposal takes etcd's Step path: traced on receipt, then stepLeader.
        let r = traceReceive prop r
        match ClientRequest prop r with
        | r, Error e ->
            debug
                (sprintf "not initiating automatic transition out of joint configuration %s: %s"
                    (TrackerConfig.toString r.Trk.Config) (StepError.message e))
                r
        | r, Ok() ->
            info (sprintf "initiating automatic transition out of joint configuration %s" (TrackerConfig.toString r.Trk.Config)) r
    else r

// ---- storage acknowledgements -------------------------------------------------------------

// TLA+: Apply
/// The application applied entries up to index (etcd's appliedTo); size is their encoded
/// size, released from the applying budget.
let Apply (index: uint64) (size: uint64) (r: RaftState) : RaftState =
    let newApplied = max index r.RaftLog.Applied
    AutoLeaveJoint { r with RaftLog = RaftLog.appliedTo newApplied size r.RaftLog }

/// The application applied a snapshot (etcd's appliedSnap).
let appliedSnap (snap: Snapshot) (r: RaftState) : RaftState =
    let index = snap.Metadata.Index
    Apply index 0UL { r with RaftLog = RaftLog.stableSnapTo index r.RaftLog }

// TLA+: Persist
/// MsgStorageAppendResp at the current term: entries up to (LogTerm, Index) and the
/// snapshot are durable (etcd's Step, MsgStorageAppendResp case).
let Persist (m: Message) (r: RaftState) : RaftState =
    let r =
        if m.Index <> 0UL then
            let log, lines = RaftLog.stableTo (EntryId.create m.LogTerm m.Index) r.RaftLog
            logLines lines { r with RaftLog = log }
        else r
    match m.Snapshot with
    | Some snap -> appliedSnap snap r
    | None -> r

// ---- terms -------------------------------------------------------------------------------

// TLA+: UpdateTerm
/// The term check of etcd's Step. A higher term makes us follow it, except for votes within
/// the leader lease (CheckQuorum), pre-votes and granted pre-vote responses. Lower-term
/// messages are answered (to unstick a partitioned leader or pre-candidate) or ignored.
/// Returns whether the message should be processed further.
let UpdateTerm (m: Message) (r: RaftState) : RaftState * bool =
    if m.Term = 0UL then r, true
    elif m.Term > r.Term then
        let isVote = m.Type = MsgVote || m.Type = MsgPreVote
        let force = isVote && m.Context = campaignContext
        let inLease = r.CheckQuorum && r.Lead <> NodeId.None && r.ElectionElapsed < r.ElectionTimeout
#if MUTANT_LEASE_IGNORED // seeded bug (tests/mutants.sh): a vote request deposes a leader heard from recently
        if false && inLease && not force then
#else
        if isVote && not force && inLease then
#endif
            // We heard from a leader within the election timeout: don't let a candidate depose it.
            let last = lastEntryId r
            info
                (sprintf
                    "%s [logterm: %d, index: %d, vote: %s] ignored %s from %s [logterm: %d, index: %d] at term %d: lease is not expired (remaining ticks: %d)"
                    (hex r.Id) last.Term last.Index (hex r.Vote) (msgName m.Type) (hex m.From) m.LogTerm m.Index r.Term
                    (r.ElectionTimeout - r.ElectionElapsed))
                r,
            false
        elif m.Type = MsgPreVote then r, true
        // Our pre-vote was granted for a future term: the term moves only once we win.
        elif m.Type = MsgPreVoteResp && not m.Reject then r, true
        else
            let r =
                info
                    (sprintf "%s [term: %d] received a %s message with higher term from %s [term: %d]"
                        (hex r.Id) r.Term (msgName m.Type) (hex m.From) m.Term)
                    r
            let lead = if m.Type = MsgApp || m.Type = MsgHeartbeat || m.Type = MsgSnap then m.From else NodeId.None
            BecomeFollower m.Term lead r, true
    elif m.Term < r.Term then
        if (r.CheckQuorum || r.PreVote) && (m.Type = MsgHeartbeat || m.Type = MsgApp) then
            // A leader of an older term: tell it our term so it steps down (we may have moved
            // on during a partition and can't rejoin otherwise).
            send { Message.empty with To = m.From; Type = MsgAppResp } r, false
        elif m.Type = MsgPreVote then
            let last = lastEntryId r
            let r =
                info
                    (sprintf "%s [logterm: %d, index: %d, vote: %s] rejected %s from %s [logterm: %d, index: %d] at term %d"
                        (hex r.Id) last.Term last.Index (hex r.Vote) (msgName m.Type) (hex m.From) m.LogTerm m.Index r.Term)
                    r
            send { Message.empty with To = m.From; Term = r.Term; Type = MsgPreVoteResp; Reject = true } r, false
        elif m.Type = MsgStorageAppendResp then
            // Entries written under an older term may have been replaced since: not stable.
            let r =
                if m.Index <> 0UL then
                    info
                        (sprintf "%s [term: %d] ignored entry appends from a %s message with lower term [term: %d]"
                            (hex r.Id) r.Term (msgName m.Type) m.Term)
                        r
                else r
            // A snapshot holds committed state: applied whatever the term.
            (match m.Snapshot with
             | Some snap -> appliedSnap snap r
             | None -> r),
            false
        else
            info
                (sprintf "%s [term: %d] ignored a %s message with lower term from %s [term: %d]"
                    (hex r.Id) r.Term (msgName m.Type) (hex m.From) m.Term)
                r,
            false
    else r, true

// ---- replication -------------------------------------------------------------------------

// TLA+: AppendEntries
/// etcd's maybeSendAppend: entries from the peer's Next on, within the size and flow limits.
let AppendEntries (toId: uint64) (sendIfEmpty: bool) (r: RaftState) : RaftState * bool =
    maybeSendAppend toId sendIfEmpty r

// TLA+: SendSnapshot
/// etcd's maybeSendSnapshot: the peer needs entries we compacted.
let SendSnapshot (toId: uint64) (r: RaftState) : RaftState * bool =
    match progress toId r with
    | Some pr -> maybeSendSnapshot toId pr r
    | None -> r, false

// TLA+: Heartbeat
/// etcd's sendHeartbeat to one peer.
let Heartbeat (toId: uint64) (ctx: byte[]) (r: RaftState) : RaftState = sendHeartbeat toId ctx r

// TLA+: AdvanceCommitIndex
/// etcd's maybeCommit: the quorum's match index, if it is an entry of our term.
let AdvanceCommitIndex (r: RaftState) : RaftState * bool = maybeCommit r

// TLA+: HandleAppendEntriesRequest
/// etcd's handleAppendEntries: accept when our log matches at (LogTerm, Index), else
/// reject with a hint of where the logs may match (findConflictByTerm).
let HandleAppendEntriesRequest (m: Message) (r: RaftState) : RaftState =
    let reply index = { Message.empty with To = m.From; Type = MsgAppResp; Index = index }
    if m.Index < r.RaftLog.Committed then send (reply r.RaftLog.Committed) r
    else
        let slice = LogSlice.create m.Term (EntryId.create m.LogTerm m.Index) m.Entries
        match RaftLog.maybeAppend slice m.Commit r.RaftLog with
        | Some(log, lastNew), lines -> sendWithLog (reply lastNew) log (logLines lines r)
        | None, lines ->
            let r = logLines lines r
            let r =
                debug
                    (sprintf "%s [logterm: %d, index: %d] rejected MsgApp [logterm: %d, index: %d] from %s"
                        (hex r.Id) (RaftLog.zeroTermOnOutOfBounds (RaftLog.term m.Index r.RaftLog)) m.Index m.LogTerm m.Index
                        (hex m.From))
                    r
            // The largest (index, term) with index <= m.Index and term <= m.LogTerm is the
            // best guess of a match: it skips our whole tail of higher terms at once.
            let hintIndex = min m.Index (RaftLog.lastIndex r.RaftLog)
            let hintIndex, hintTerm = RaftLog.findConflictByTerm hintIndex m.LogTerm r.RaftLog
            send
                { reply m.Index with
                    Reject = true
                    RejectHint = hintIndex
                    LogTerm = hintTerm }
                r

// TLA+: HandleAppendEntriesResponse
/// MsgAppResp at the leader (etcd's stepLeader): back off on rejection, or record the match,
/// move probing/snapshotting peers to replicating, commit, and keep the pipeline full.
let HandleAppendEntriesResponse (m: Message) (r: RaftState) : RaftState =
    match tryProgress m.From r with
    | ValueNone -> r
    | ValueSome pr ->
        let r, pr =
            if pr.RecentActive then r, pr
            else
                let pr = { pr with RecentActive = true }
                setProgress m.From pr r, pr
        if m.Reject then
            let r =
                debug
                    (sprintf "%s received MsgAppResp(rejected, hint: (index %d, term %d)) from %s for index %d"
                        (hex r.Id) m.RejectHint m.LogTerm (hex m.From) m.Index)
                    r
            // With the follower's term at the hint, skip every index where our term is higher:
            // none of them can match (terms only grow along a log).
            let nextProbeIdx =
                if m.LogTerm > 0UL then fst (RaftLog.findConflictByTerm m.RejectHint m.LogTerm r.RaftLog)
                else m.RejectHint
            match Progress.maybeDecrTo m.Index nextProbeIdx pr with
            | None -> r
            | Some pr ->
                let r = debug (sprintf "%s decreased progress of %s to [%s]" (hex r.Id) (hex m.From) (Progress.toString pr)) r
                let pr = if pr.State = StateReplicate then Progress.becomeProbe pr else pr
                sendAppend m.From (setProgress m.From pr r)
        else
            let updated = Progress.maybeUpdate m.Index pr
            let current = defaultArg updated pr
            // An ack of Match also moves a probing peer back to replicating.
            if updated.IsSome || (current.Match = m.Index && current.State = StateProbe) then
                let r, pr =
                    match current.State with
                    | StateProbe -> r, Progress.becomeReplicate current
                    | StateSnapshot when current.Match + 1UL >= RaftLog.firstIndex r.RaftLog ->
                        // Whatever snapshot got the peer here, the log can take it from there.
                        let r =
                            debug
                                (sprintf "%s recovered from needing snapshot, resumed sending replication messages to %s [%s]"
                                    (hex r.Id) (hex m.From) (Progress.toString current))
                                r
                        r, current |> Progress.becomeProbe |> Progress.becomeReplicate
                    | StateReplicate -> r, { current with Inflights = Inflights.freeLE m.Index current.Inflights }
                    | _ -> r, current
                let r = setProgress m.From pr r
                let r =
                    match maybeCommit r with
                    // Our term has a committed entry now: held-back reads can be served.
                    | r, true -> releasePendingReadIndexMessages r |> bcastAppend
                    | r, false ->
                        match tryProgress m.From r with
                        | ValueSome pr when r.Id <> m.From && Progress.canBumpCommit r.RaftLog.Committed pr -> sendAppend m.From r
                        | _ -> r
                // Flow control may have opened up: send what we can, but no empty appends.
                let r = if r.Id <> m.From then sendAppendsWhilePossible m.From r else r
                match tryProgress m.From r with
                | ValueSome pr when m.From = r.LeadTransferee && pr.Match = RaftLog.lastIndex r.RaftLog ->
                    let r = info (sprintf "%s sent MsgTimeoutNow to %s after received MsgAppResp" (hex r.Id) (hex m.From)) r
                    sendTimeoutNow m.From r
                | _ -> r
            else r

// TLA+: HandleHeartbeat
/// etcd's handleHeartbeat: commit what the leader allows, echo the read context.
let HandleHeartbeat (m: Message) (r: RaftState) : RaftState =
    let r = { r with RaftLog = RaftLog.commitTo m.Commit r.RaftLog }
    send { Message.empty with To = m.From; Type = MsgHeartbeatResp; Context = m.Context } r

// TLA+: HandleReadIndexQuorum
/// A heartbeat ack with a read context (etcd's stepLeader, MsgHeartbeatResp): once a quorum
/// acknowledged, the confirmed reads are answered.
let HandleReadIndexQuorum (m: Message) (r: RaftState) : RaftState =
    let ro = ReadOnly.recvAck m.From m.Context r.ReadOnly
    let voters = r.Trk.Config.Voters
    let released, ro = ReadOnly.maybeAdvance (fun acked -> JointConfig.committedIndex acked voters) ro
    released |> List.fold (fun r rs -> responseToReadIndexReq rs.Req rs.Index r) { r with ReadOnly = ro }

// TLA+: HandleHeartbeatResponse
/// MsgHeartbeatResp at the leader: the peer is active; resume a paused or lagging peer
/// (an empty append recovers a full window whose appends were lost); count read acks.
let HandleHeartbeatResponse (m: Message) (r: RaftState) : RaftState =
    match progress m.From r with
    | None -> r
    | Some pr ->
        let pr = { pr with RecentActive = true; MsgAppFlowPaused = false }
        let r = setProgress m.From pr r
        let r =
            if pr.Match < RaftLog.lastIndex r.RaftLog || pr.State = StateProbe then sendAppend m.From r else r
        if r.ReadOnly.Option <> ReadOnlySafe || m.Context.Length = 0 then r else HandleReadIndexQuorum m r

// TLA+: HandleSnapshot
/// etcd's handleSnapshot: restore if the snapshot is news to us, and report our last index.
let HandleSnapshot (m: Message) (r: RaftState) : RaftState =
    let s = defaultArg m.Snapshot Snapshot.empty
    let sindex, sterm = s.Metadata.Index, s.Metadata.Term
    let reply = { Message.empty with To = m.From; Type = MsgAppResp }
    match restore s r with
    | r, true ->
        let r =
            info (sprintf "%s [commit: %d] restored snapshot [index: %d, term: %d]" (hex r.Id) r.RaftLog.Committed sindex sterm) r
        send { reply with Index = RaftLog.lastIndex r.RaftLog } r
    | r, false ->
        let r =
            info (sprintf "%s [commit: %d] ignored snapshot [index: %d, term: %d]" (hex r.Id) r.RaftLog.Committed sindex sterm) r
        send { reply with Index = r.RaftLog.Committed } r

// TLA+: CheckQuorum
/// MsgCheckQuorum at the leader: step down unless a quorum was active since the last check,
/// then start a new period of activity.
let CheckQuorum (r: RaftState) : RaftState =
    let r =
        if ProgressTracker.quorumActive r.Trk then r
        else
            let r = warn (sprintf "%s stepped down to follower since quorum is not active" (hex r.Id)) r
            BecomeFollower r.Term NodeId.None r
    let trk =
        { r.Trk with
            Progress = r.Trk.Progress |> Map.map (fun id pr -> if id <> r.Id then { pr with RecentActive = false } else pr) }
    { r with Trk = trk }

// ---- configuration -------------------------------------------------------------------------

// TLA+: ApplyConfChange
/// etcd's applyConfChange: the application applied a committed conf change.
let ApplyConfChange (cc: ConfChangeV2) (r: RaftState) : Result<RaftState * ConfState, string> = applyConfChange r cc

// TLA+: CompactLog
/// The application compacted its storage: the log reads from the new storage value.
let CompactLog (storage: IStorage) (r: RaftState) : RaftState =
    { r with RaftLog = RaftLog.withStorage storage r.RaftLog }

// ---- leadership transfer -----------------------------------------------------------------

// TLA+: TransferLeadership
/// MsgTransferLeader at the leader (m.From is the transferee): stop proposals, bring the
/// transferee up to date, then tell it to campaign at once.
let TransferLeadership (m: Message) (r: RaftState) : RaftState =
    match progress m.From r with
    | None -> r
    | Some pr when pr.IsLearner -> debug (sprintf "%s is learner. Ignored transferring leadership" (hex r.Id)) r
    | Some pr ->
        let transferee = m.From
        let last = r.LeadTransferee
        if last <> NodeId.None && last = transferee then
            info
                (sprintf "%s [term %d] transfer leadership to %s is in progress, ignores request to same node %s"
                    (hex r.Id) r.Term (hex transferee) (hex transferee))
                r
        else
            let r =
                if last <> NodeId.None then
                    abortLeaderTransfer r
                    |> info (sprintf "%s [term %d] abort previous transferring leadership to %s" (hex r.Id) r.Term (hex last))
                else r
            if transferee = r.Id then
                debug (sprintf "%s is already leader. Ignored transferring leadership to self" (hex r.Id)) r
            else
                let r = info (sprintf "%s [term %d] starts to transfer leadership to %s" (hex r.Id) r.Term (hex transferee)) r
                // The transfer must finish within an election timeout.
                let r = { r with ElectionElapsed = 0; LeadTransferee = transferee }
                if pr.Match = RaftLog.lastIndex r.RaftLog then
                    sendTimeoutNow transferee r
                    |> info
                        (sprintf "%s sends MsgTimeoutNow to %s immediately as %s already has up-to-date log"
                            (hex r.Id) (hex transferee) (hex transferee))
                else sendAppend transferee r

// TLA+: HandleTimeoutNow
/// MsgTimeoutNow at a follower: campaign right away, without pre-vote (we know the leader
/// is alive) and overriding the voters' leader stickiness.
let HandleTimeoutNow (m: Message) (r: RaftState) : RaftState =
    let r =
        info
            (sprintf "%s [term %d] received MsgTimeoutNow from %s and starts an election to get leadership."
                (hex r.Id) r.Term (hex m.From))
            r
    hup CampaignTransfer r

// ---- reads ---------------------------------------------------------------------------------

// TLA+: ReadIndex
/// MsgReadIndex at the leader: answered at once in a single-voter group; held back until
/// the leader committed an entry of its term; otherwise confirmed by heartbeat or lease.
let ReadIndex (m: Message) (r: RaftState) : RaftState =
    if ProgressTracker.isSingleton r.Trk then responseToReadIndexReq m r.RaftLog.Committed r
    elif not (committedEntryInCurrentTerm r) then
        { r with PendingReadIndexMessages = r.PendingReadIndexMessages @ [ m ] }
    else sendMsgReadIndexResponse m r

// TLA+: ForgetLeader
/// MsgForgetLeader at a follower: forget the leader so that we vote for others at once
/// (not allowed with lease-based reads, which trust the leader).
let ForgetLeader (r: RaftState) : RaftState =
    if r.ReadOnly.Option = ReadOnlyLeaseBased then error "ignoring MsgForgetLeader due to ReadOnlyLeaseBased" r
    elif r.Lead <> NodeId.None then
        let r = info (sprintf "%s forgetting leader %s at term %d" (hex r.Id) (hex r.Lead) r.Term) r
        { r with Lead = NodeId.None }
    else r
