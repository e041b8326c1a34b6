/// The message dispatcher and the clock (etcd's Step, stepLeader, stepCandidate,
/// stepFollower, tickElection, tickHeartbeat). Every message goes through the term check
/// first, then to the action its type and our role call for.
module Raft.Spec.Step

open Raft.Spec.Raft
open Raft.Spec.Actions

/// What a step yields: the new state (even when the message was refused: log lines and
/// bookkeeping made on the way are kept, as in etcd) and whether it was accepted.
type StepResult = RaftState * Result<unit, StepError>

let private ok (r: RaftState) : StepResult = r, Ok()

/// MsgSnapStatus at the leader: the application reports how sending a snapshot went.
let private handleSnapStatus (m: Message) (pr: Progress) (r: RaftState) : RaftState =
    if pr.State <> StateSnapshot then r
    else
        let r, pr =
            if not m.Reject then
                let pr = Progress.becomeProbe pr
                debug (sprintf "%s snapshot succeeded, resumed sending replication messages to %s [%s]" (hex r.Id) (hex m.From) (Progress.toString pr)) r,
                pr
            else
                // Forget the pending snapshot first, or probing would start from its index.
                let pr = Progress.becomeProbe { pr with PendingSnapshot = 0UL }
                debug (sprintf "%s snapshot failed, resumed sending replication messages to %s [%s]" (hex r.Id) (hex m.From) (Progress.toString pr)) r,
                pr
        // Wait for the follower's MsgAppResp (success) or a heartbeat interval (failure).
        setProgress m.From { pr with MsgAppFlowPaused = true } r

/// MsgUnreachable at the leader: an append was probably lost, so stop pipelining.
let private handleUnreachable (m: Message) (pr: Progress) (r: RaftState) : RaftState =
    let pr = if pr.State = StateReplicate then Progress.becomeProbe pr else pr
    let r = setProgress m.From pr r
    debug (sprintf "%s failed to send message to %s because it is unreachable [%s]" (hex r.Id) (hex m.From) (Progress.toString pr)) r

let private stepLeader (m: Message) (r: RaftState) : StepResult =
    match m.Type with
    | MsgBeat -> ok (bcastHeartbeat r)
    | MsgCheckQuorum -> ok (CheckQuorum r)
    | MsgProp -> ClientRequest m r
    | MsgReadIndex -> ok (ReadIndex m r)
    | MsgForgetLeader -> ok r
    | _ ->
        match tryProgress m.From r with
        | ValueNone -> ok (debug (sprintf "%s no progress available for %s" (hex r.Id) (hex m.From)) r)
        | ValueSome pr ->
            match m.Type with
            | MsgAppResp -> ok (HandleAppendEntriesResponse m r)
            | MsgHeartbeatResp -> ok (HandleHeartbeatResponse m r)
            | MsgSnapStatus -> ok (handleSnapStatus m pr r)
            | MsgUnreachable -> ok (handleUnreachable m pr r)
            | MsgTransferLeader -> ok (TransferLeadership m r)
            | _ -> ok r

/// Shared by candidates and pre-candidates; each counts only the responses of its own kind.
let private stepCandidate (m: Message) (r: RaftState) : StepResult =
    let myVoteRespType = if r.State = StatePreCandidate then MsgPreVoteResp else MsgVoteResp
    match m.Type with
    | MsgProp ->
        info (sprintf "%s no leader at term %d; dropping proposal" (hex r.Id) r.Term) r, Error ProposalDropped
    // A leader of our term exists (m.Term = r.Term here): follow it.
    | MsgApp -> BecomeFollower m.Term m.From r |> HandleAppendEntriesRequest m |> ok
    | MsgHeartbeat -> BecomeFollower m.Term m.From r |> HandleHeartbeat m |> ok
    | MsgSnap -> BecomeFollower m.Term m.From r |> HandleSnapshot m |> ok
    | t when t = myVoteRespType -> ok (HandleRequestVoteResponse m r)
    | MsgTimeoutNow ->
        ok (debug (sprintf "%s [term %d state %s] ignored MsgTimeoutNow from %s" (hex r.Id) r.Term (Describe.stateTypeName r.State) (hex m.From)) r)
    | _ -> ok r

/// A follower hears from its leader: the election clock restarts.
let private heardFromLeader (m: Message) (r: RaftState) =
    if r.ElectionElapsed = 0 && r.Lead = m.From then r else { r with ElectionElapsed = 0; Lead = m.From }

let private stepFollower (m: Message) (r: RaftState) : StepResult =
    match m.Type with
    | MsgProp ->
        if r.Lead = NodeId.None then
            info (sprintf "%s no leader at term %d; dropping proposal" (hex r.Id) r.Term) r, Error ProposalDropped
        elif r.DisableProposalForwarding then
            info (sprintf "%s not forwarding to leader %s at term %d; dropping proposal" (hex r.Id) (hex r.Lead) r.Term) r,
            Error ProposalDropped
        else ok (send { m with To = r.Lead } r)
    | MsgApp -> heardFromLeader m r |> HandleAppendEntriesRequest m |> ok
    | MsgHeartbeat -> heardFromLeader m r |> HandleHeartbeat m |> ok
    | MsgSnap -> heardFromLeader m r |> HandleSnapshot m |> ok
    | MsgTransferLeader ->
        if r.Lead = NodeId.None then
            ok (info (sprintf "%s no leader at term %d; dropping leader transfer msg" (hex r.Id) r.Term) r)
        else ok (send { m with To = r.Lead } r)
    | MsgForgetLeader -> ok (ForgetLeader r)
    | MsgTimeoutNow -> ok (HandleTimeoutNow m r)
    | MsgReadIndex ->
        if r.Lead = NodeId.None then
            ok (info (sprintf "%s no leader at term %d; dropping index reading msg" (hex r.Id) r.Term) r)
        else ok (send { m with To = r.Lead } r)
    | MsgReadIndexResp ->
        if m.Entries.Length <> 1 then
            ok (
                error
                    (sprintf "%s invalid format of MsgReadIndexResp from %s, entries count: %d" (hex r.Id) (hex m.From) m.Entries.Length)
                    r
            )
        else ok { r with ReadStates = r.ReadStates @ [ { Index = m.Index; RequestCtx = m.Entries[0].Data } ] }
    | _ -> ok r

/// Advances the node with one message (etcd's raft.Step). The returned state keeps what
/// happened even when the message is refused (e.g. a dropped proposal's log line).
let step (r: RaftState) (m: Message) : StepResult =
    let r = traceReceive m r
    match UpdateTerm m r with
    | r, false -> ok r
    | r, true ->
        match m.Type with
        | MsgHup -> ok (Timeout r)
        | MsgStorageAppendResp -> ok (Persist m r)
        | MsgStorageApplyResp ->
            if m.Entries.Length = 0 then ok r
            else
                let index = m.Entries[m.Entries.Length - 1].Index
                Apply index (Codec.entriesSize m.Entries) r |> reduceUncommittedSize (Codec.payloadsSize m.Entries) |> ok
        | MsgVote
        | MsgPreVote -> ok (HandleRequestVoteRequest m r)
        | _ ->
            match r.State with
            | StateLeader -> stepLeader m r
            | StateCandidate
            | StatePreCandidate -> stepCandidate m r
            | StateFollower -> stepFollower m r

/// Steps a message generated by the node itself from the clock; errors are only logged.
let private stepLocal (what: string) (m: Message) (r: RaftState) : RaftState =
    match step r m with
    | r, Ok() -> r
    | r, Error e -> debug (sprintf "error occurred during %s: %s" what (StepError.message e)) r

/// Followers and candidates: campaign once the randomized election timeout passed.
/// TLA+: Timeout is this function and Actions.Timeout together: counting ElectionElapsed past
/// the election timeout ends the lease (SpecMap's heard), and the MsgHup is Actions.Timeout. As in
/// etcd the clock restarts even when the campaign is refused (unapplied conf changes), which
/// gives a node with a leader its lease back; the spec keeps it lost (docs/conformance.md lists
/// this difference).
let private tickElection (r: RaftState) : RaftState =
    let r = { r with ElectionElapsed = r.ElectionElapsed + 1 }
    if promotable r && pastElectionTimeout r then
        stepLocal "election" { Message.empty with From = r.Id; Type = MsgHup } { r with ElectionElapsed = 0 }
    else r

/// Leaders: heartbeat every HeartbeatTimeout; every ElectionTimeout check the quorum and
/// give up a leadership transfer that did not finish.
let private tickHeartbeat (r: RaftState) : RaftState =
    let r =
        { r with
            HeartbeatElapsed = r.HeartbeatElapsed + 1
            ElectionElapsed = r.ElectionElapsed + 1 }
    let r =
        if r.ElectionElapsed >= r.ElectionTimeout then
            let r = { r with ElectionElapsed = 0 }
            let r =
                if r.CheckQuorum then
                    stepLocal "checking sending heartbeat" { Message.empty with From = r.Id; Type = MsgCheckQuorum } r
                else r
            if r.State = StateLeader && r.LeadTransferee <> NodeId.None then abortLeaderTransfer r else r
        else r
    if r.State <> StateLeader then r
    elif r.HeartbeatElapsed >= r.HeartbeatTimeout then
        stepLocal "checking sending heartbeat" { Message.empty with From = r.Id; Type = MsgBeat } { r with HeartbeatElapsed = 0 }
    else r

/// One tick of the logical clock (etcd's r.tick, which is tickHeartbeat for leaders).
let tick (r: RaftState) : RaftState =
    if r.State = StateLeader then tickHeartbeat r else tickElection r

/// The application applied entries up to index, of the given encoded size (etcd's appliedTo).
let appliedTo (index: uint64) (size: uint64) (r: RaftState) : RaftState = Apply index size r

/// The application applied a snapshot (etcd's appliedSnap).
let appliedSnap (snap: Snapshot) (r: RaftState) : RaftState = Actions.appliedSnap snap r
