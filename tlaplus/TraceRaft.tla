------------------------------ MODULE TraceRaft ------------------------------
(***************************************************************************)
(* Trace validation: does some behaviour of Raft.tla produce the events    *)
(* an implementation run logged?  The log is ndjson in etcd's             *)
(* TracingEvent schema (src/Raft.Host/Tracing/TraceNdjson.cs writes it).   *)
(*                                                                         *)
(* The variable l is the position in the trace.  Every step of TraceNext  *)
(* either consumes line l with the spec action(s) that line stands for    *)
(* (checking the message the line names and, where the implementation     *)
(* logs it at a point where both agree, the node's state: term, vote,      *)
(* commit, role, last index, voters), or takes one of the few spec actions *)
(* the implementation never logs (Apply, compaction, leadership transfer, *)
(* the term update before a message is handled ...), each allowed only     *)
(* next to the line that needs it, so that the search stays narrow.       *)
(* TLC explores breadth-first; the trace is accepted when a state with     *)
(* l = Len(Trace) + 1 is reachable, i.e. when the invariant               *)
(* TraceNotFullyConsumed is violated (validate-trace.sh reads it so).      *)
(*                                                                         *)
(* Where the implementation's atomicity differs from the spec's, the line  *)
(* that carries the effect is chosen as follows (etcd logs a receive       *)
(* before handling it, a send when the message is queued, a Ready after    *)
(* the step): the spec handler runs at the Receive line; response lines    *)
(* check that the handler queued that response; Ready lines are the        *)
(* state checkpoints and stand for Persist.  See tlaplus/README-trace.md   *)
(* for the divergences between the spec and etcd's behaviour that the      *)
(* mapping relaxes, and why.                                               *)
(***************************************************************************)
EXTENDS Raft, Json

CONSTANTS
    TraceFile,   \* path of the ndjson trace
    BootIndex,   \* the initial voters start from a snapshot at this index ...
    BootTerm     \* ... and term (the simulator's bootstrap: 1, 1)

VARIABLE l

traceVars == <<vars, l>>

ToSet(s) == {s[k] : k \in DOMAIN s}

\* The events, in order (lines without an "event" member are not trace lines).
\* (read once: the LET value is shared by every k)
Trace == TLCEval(LET lines == SelectSeq(ndJsonDeserialize(TraceFile), LAMBDA x : "event" \in DOMAIN x)
                 IN [k \in DOMAIN lines |-> lines[k].event])

HasMsg(e) == "msg" \in DOMAIN e
HasCC(e)  == "prop" \in DOMAIN e /\ "cc" \in DOMAIN e.prop
Changes(e) == IF HasCC(e) /\ "changes" \in DOMAIN e.prop.cc THEN ToSet(e.prop.cc.changes) ELSE {}

\* Every node id the trace names.
IdsOf(e) ==
    {e.nid} \cup ToSet(e.conf[1]) \cup ToSet(e.conf[2])
    \cup (IF HasMsg(e) THEN {e.msg.from, e.msg.to} ELSE {})
    \cup {c.nid : c \in Changes(e)}

TraceServer == TLCEval(UNION {IdsOf(Trace[k]) : k \in DOMAIN Trace})

\* The voters of the bootstrap configuration: those of the first event.
TraceInitVoters == TLCEval(ToSet(Trace[1].conf[1]))

OpOf(a) == CASE a = "AddNewServer" -> "AddNode"
             [] a = "AddLearner"   -> "AddLearner"
             [] a = "RemoveServer" -> "Remove"
             [] OTHER              -> "Update"

\* The conf changes the trace proposes.  etcd's trace does not say whether a
\* change of several nodes was simple or joint, nor its auto-leave flag: all
\* are candidates; a change of one node is simple (etcd's ConfChangeV2 with
\* the automatic transition).
SpecChanges(e) == {[op |-> OpOf(c.action), node |-> c.nid] : c \in Changes(e)}
TraceChangeSets == TLCEval({SpecChanges(Trace[k]) : k \in {k \in DOMAIN Trace : Trace[k].name = "ChangeConf"}})
TraceConfChanges == TLCEval(
    {[kind |-> "simple", changes |-> ch, autoLeave |-> FALSE] : ch \in TraceChangeSets}
    \cup {[kind |-> "joint", changes |-> ch, autoLeave |-> a] :
             ch \in {c \in TraceChangeSets : Cardinality(c) > 1}, a \in BOOLEAN}
    \cup {LeaveJointCC})

RoleOf(r) == CASE r = "StateFollower"     -> "Follower"
               [] r = "StatePreCandidate" -> "PreCandidate"
               [] r = "StateCandidate"    -> "Candidate"
               [] r = "StateLeader"       -> "Leader"

-----------------------------------------------------------------------------
(* Matching a logged message with a spec message.                          *)

MsgMatches(m, tm) ==
    /\ m.from = tm.from /\ m.to = tm.to /\ m.term = tm.term
    /\ CASE tm.type = "MsgApp" ->
                m.type = "App" /\ m.prevIndex = tm.index /\ m.prevTerm = tm.logTerm
                /\ Len(m.entries) = tm.entries /\ m.commit = tm.commit
         [] tm.type = "MsgHeartbeat" -> m.type = "Heartbeat" /\ m.commit = tm.commit
         \* etcd's trace records a snapshot by its index, in the entry count
         [] tm.type = "MsgSnap" -> m.type = "Snap" /\ m.snapIndex = tm.entries
         [] tm.type = "MsgAppResp" ->
                m.type = "AppResp" /\ m.reject = tm.reject /\ m.index = tm.index
                /\ (tm.reject => m.hint = tm.rejectHint /\ m.hintTerm = tm.logTerm)
         [] tm.type = "MsgHeartbeatResp" -> m.type = "HeartbeatResp"
         [] tm.type = "MsgVote" ->
                m.type = "Vote" /\ m.lastIndex = tm.index /\ m.lastTerm = tm.logTerm
         [] tm.type = "MsgVoteResp" -> m.type = "VoteResp" /\ m.reject = tm.reject
         [] OTHER -> FALSE

\* The logged message was added to the network by this step.
SentNow(tm) ==
    \E m \in DOMAIN network' :
        /\ MsgMatches(m, tm)
        /\ network'[m] = (IF m \in DOMAIN network THEN network[m] ELSE 0) + 1

\* The logged response is queued (outbox) or already in the network.
Queued(i, tm) == \E m \in outbox[i] \cup DOMAIN network : MsgMatches(m, tm)

-----------------------------------------------------------------------------
(* Matching the logged state of node i.                                    *)

\* etcd's candidate that lost its election becomes a follower of the same
\* term at once; Raft.tla's stays a candidate until its next Timeout (see
\* HandleRequestVoteResponse).  Both keep term and vote, so a logged
\* follower may be a spec candidate.
RoleOk(r, logged) == r = logged \/ (r = "Candidate" /\ logged = "Follower")

ConfOk(c, e) == c.voters = ToSet(e.conf[1]) /\ c.outgoing = ToSet(e.conf[2])

\* The logged state against the state after the step (primed) or before it.
StateIs(i, e, logOffset) ==
    /\ currentTerm'[i] = e.state.term
    /\ votedFor'[i] = e.state.vote
    /\ commitIndex'[i] = e.state.commit
    /\ RoleOk(role'[i], RoleOf(e.role))
    /\ snapshotIndex'[i] + Len(log'[i]) = e.log + logOffset
    /\ ConfOk(config'[i], e)

\* A receive is logged before the node changes: the state before the step,
\* except the term (a higher-term message updated it silently first).
PreStateIs(i, e) ==
    /\ e.state.term <= currentTerm[i]
    /\ commitIndex[i] = e.state.commit
    /\ LastIndex(i) = e.log
    /\ ConfOk(config[i], e)

-----------------------------------------------------------------------------
(* Trace-only forms of two sending actions.  The implementation pipelines  *)
(* appends (etcd's optimistic Next in StateReplicate) and batches them by  *)
(* bytes, so its MsgApp may start above the spec's nextIndex and carry any *)
(* number of entries; and it decides to send a snapshot from its own      *)
(* Progress.  These forms keep every other condition of AppendEntries and  *)
(* SendSnapshot and build the message from the spec's log.                 *)

TraceAppendEntries(i, j, prev, n) ==
    /\ role[i] = "Leader" /\ j # i /\ j \in Members(config[i])
    /\ prev >= snapshotIndex[i] /\ prev + n <= LastIndex(i)
    /\ Send(AppReq(i, j, currentTerm[i], prev, TermAt(i, prev),
                   SubSeq(log[i], prev + 1 - snapshotIndex[i], prev + n - snapshotIndex[i]),
                   commitIndex[i]))
    /\ UNCHANGED <<persistVars, diskVars, nodeVars, leaderVars, historyVars>>

TraceSendSnapshot(i, j) ==
    /\ role[i] = "Leader" /\ j # i /\ j \in Members(config[i])
    /\ Send(SnapReq(i, j, currentTerm[i], snapshotIndex[i], snapshotTerm[i], snapshotConfig[i]))
    /\ UNCHANGED <<persistVars, diskVars, nodeVars, leaderVars, historyVars>>

\* The spec's handlers of a delivered message (UpdateTerm aside).
Handle(i, m) ==
    \/ HandleRequestVoteRequest(i, m)
    \/ HandleRequestVoteResponse(i, m)
    \/ HandleAppendEntriesRequest(i, m)
    \/ HandleAppendEntriesResponse(i, m)
    \/ HandleHeartbeat(i, m)
    \/ HandleHeartbeatResponse(i, m)
    \/ HandleSnapshot(i, m)

-----------------------------------------------------------------------------
(* One line consumed.                                                      *)

ReceiveNames == {"ReceiveAppendEntriesRequest", "ReceiveAppendEntriesResponse",
                 "ReceiveRequestVoteRequest", "ReceiveRequestVoteResponse"}

IsSelfMsg(e) == HasMsg(e) /\ e.msg.from = e.msg.to

\* The line before l is node i's BecomeLeader: this Replicate is its empty entry.
AfterBecomeLeader(i) == l > 1 /\ Trace[l - 1].name = "BecomeLeader" /\ Trace[l - 1].nid = i

StepLine(e) ==
    LET i == e.nid IN
    CASE e.name = "BecomeCandidate" ->
            /\ \/ Timeout(i)
               \/ BecomeCandidate(i)
               \/ \E m \in DOMAIN network : m.to = i /\ HandleTimeoutNow(i, m)
            /\ role'[i] = "Candidate"
            /\ StateIs(i, e, 0)
      [] e.name = "BecomeLeader" ->
            \* logged before the empty entry of the term is appended
            BecomeLeader(i) /\ StateIs(i, e, 1)
      [] e.name = "BecomeFollower" ->
            \* etcd logs it inside the step whose spec action ran at the Receive line
            /\ UNCHANGED vars
            /\ currentTerm[i] = e.state.term /\ RoleOk(role[i], RoleOf(e.role))
      [] e.name = "Replicate" ->
            IF AfterBecomeLeader(i)
            THEN UNCHANGED vars
            \* logged before the entry is appended, once per entry of a batch
            ELSE \E v \in Value : ClientRequest(i, v) /\ currentTerm[i] = e.state.term
      [] e.name = "ChangeConf" ->
            \E cc \in ConfChanges :
                /\ cc.changes = SpecChanges(e)
                /\ ProposeConfChange(i, cc)
                /\ currentTerm[i] = e.state.term
      [] e.name = "ApplyConfChange" ->
            \/ /\ ApplyConfChange(i)
               /\ ConfOk(config[i], e)
               /\ config'[i].voters = ToSet(e.prop.cc.newconf)
            \* a snapshot restored by the Receive line just before switched the
            \* configuration already
            \/ /\ \E k \in {l - 2, l - 1} \cap DOMAIN Trace :
                     /\ Trace[k].nid = i /\ Trace[k].name = "ReceiveAppendEntriesRequest"
                     /\ Trace[k].msg.type = "MsgSnap"
               /\ UNCHANGED vars
               /\ config[i].voters = ToSet(e.prop.cc.newconf)
      [] e.name = "Commit" ->
            /\ \/ AdvanceCommitIndex(i)
               \/ UNCHANGED vars /\ commitIndex[i] = e.state.commit
            /\ StateIs(i, e, 0)
      [] e.name = "Ready" ->
            \* Persist when there is something to persist (the spec's Persist is
            \* not enabled otherwise); the Ready of a crashed write is not modelled
            /\ IF \/ hardState[i] # [term |-> currentTerm[i], vote |-> votedFor[i]]
                  \/ stableIndex[i] < LastIndex(i)
                  \/ outbox[i] # {}
               THEN Persist(i)
               ELSE UNCHANGED vars
            /\ StateIs(i, e, 0)
      [] e.name = "InitState" ->
            /\ Restart(i)
            \* the spec restarts commit at the snapshot (HardState.Commit is not modelled)
            /\ currentTerm'[i] = e.state.term /\ votedFor'[i] = e.state.vote
            /\ LastIndex(i) >= e.log
      [] e.name = "SendAppendEntriesRequest" ->
            /\ CASE e.msg.type = "MsgApp" ->
                        TraceAppendEntries(i, e.msg.to, e.msg.index, e.msg.entries)
                 [] e.msg.type = "MsgHeartbeat" -> Heartbeat(i, e.msg.to)
                 [] e.msg.type = "MsgSnap" -> TraceSendSnapshot(i, e.msg.to)
                 [] OTHER -> FALSE
            /\ SentNow(e.msg)
            /\ StateIs(i, e, 0)
      [] e.name = "SendRequestVoteRequest" ->
            \* sent by the campaign step (BecomeCandidate line)
            /\ UNCHANGED vars
            /\ \E m \in DOMAIN network : MsgMatches(m, e.msg)
            /\ StateIs(i, e, 0)
      [] e.name \in {"SendAppendEntriesResponse", "SendRequestVoteResponse"} ->
            /\ UNCHANGED vars
            /\ IsSelfMsg(e) \/ Queued(i, e.msg)
            /\ currentTerm[i] = e.state.term /\ RoleOk(role[i], RoleOf(e.role))
            \* logged before etcd records the vote it grants; after the handler otherwise
            /\ e.name = "SendAppendEntriesResponse" =>
                  /\ commitIndex[i] = e.state.commit /\ LastIndex(i) = e.log
      [] e.name \in ReceiveNames ->
            /\ PreStateIs(i, e)
            /\ IF IsSelfMsg(e)
               \* a node's own acknowledgements: Raft.tla counts them from its disk
               THEN UNCHANGED vars
               ELSE \E m \in DOMAIN network : m.to = i /\ MsgMatches(m, e.msg) /\ Handle(i, m)
      [] OTHER -> FALSE

-----------------------------------------------------------------------------
(* Spec actions the implementation does not log, each allowed only where   *)
(* the current line needs it (l unchanged).                                *)

SendNames == {"SendAppendEntriesRequest", "SendAppendEntriesResponse",
              "SendRequestVoteRequest", "SendRequestVoteResponse"}

\* The copies of the message of receive line e that must be in flight now:
\* the largest excess, over any stretch of the trace from l on, of its
\* receives over its sends (a copy the network duplicated may arrive after
\* the same message was sent again).
RECURSIVE MaxExcess(_, _, _, _)
MaxExcess(e, p, balance, best) ==
    IF p > Len(Trace) THEN best
    ELSE LET b == balance
                  + (IF Trace[p].name = e.name /\ Trace[p].msg = e.msg THEN 1 ELSE 0)
                  - (IF Trace[p].name \in SendNames /\ Trace[p].msg = e.msg THEN 1 ELSE 0)
         IN MaxExcess(e, p + 1, b, IF b > best THEN b ELSE best)

ReceivesBeforeResend(e) == MaxExcess(e, l, 0, 0)

SilentStep(e) ==
    LET i == e.nid IN
    \* a message of a higher term: the term update comes before the handler
    \/ /\ e.name \in ReceiveNames /\ ~IsSelfMsg(e)
       /\ \E m \in DOMAIN network : m.to = i /\ MsgMatches(m, e.msg) /\ UpdateTerm(i, m)
    \* a message delivered more often than it is in the network: the network
    \* duplicated it, or Raft.tla's outbox (a set) merged equal responses that
    \* etcd sends twice
    \/ /\ e.name \in ReceiveNames /\ ~IsSelfMsg(e)
       /\ \E m \in DOMAIN network :
             /\ m.to = i /\ MsgMatches(m, e.msg)
             /\ network[m] < ReceivesBeforeResend(e)
             /\ DuplicateMessage(m)
    \* the application applies committed entries, as far as the line needs:
    \* up to a conf change to apply, up to the pending conf change before
    \* proposing one, up to the conf changes before campaigning, up to the
    \* index of a snapshot to send
    \/ /\ \/ e.name = "ApplyConfChange"
          \/ e.name = "ChangeConf" /\ pendingConfIndex[i] > applied[i]
          \/ e.name = "BecomeCandidate" /\ ~CanCampaign(i)
          \/ /\ e.name = "SendAppendEntriesRequest" /\ e.msg.type = "MsgSnap"
             /\ applied[i] < e.msg.entries
       /\ Apply(i)
    \* the application compacts the log before a snapshot is sent
    \/ /\ e.name = "SendAppendEntriesRequest" /\ e.msg.type = "MsgSnap"
       /\ CompactLog(i, e.msg.entries)
    \* a leadership transfer ends in the transferee's campaign
    \/ /\ e.name = "BecomeCandidate"
       /\ \E j \in Server : TransferLeadership(j, i)
    \* the leader's election tick aborts a transfer (proposals flow again)
    \/ /\ e.name \in {"Replicate", "ChangeConf"} /\ leadTransferee[i] # Nil
       /\ CheckQuorum(i)
    \* leaving a joint configuration: etcd logs no ChangeConf for the empty change
    \/ /\ e.nid = i
       /\ \/ AutoLeaveJoint(i)
          \/ ProposeConfChange(i, LeaveJointCC)

-----------------------------------------------------------------------------

TraceInit ==
    /\ l = 1
    /\ currentTerm    = [i \in Server |-> 0]
    /\ votedFor       = [i \in Server |-> Nil]
    /\ log            = [i \in Server |-> << >>]
    /\ snapshotIndex  = [i \in Server |-> IF i \in InitVoters THEN BootIndex ELSE 0]
    /\ snapshotTerm   = [i \in Server |-> IF i \in InitVoters THEN BootTerm ELSE 0]
    /\ snapshotConfig = [i \in Server |-> IF i \in InitVoters THEN InitConfig ELSE Config({}, {})]
    /\ hardState      = [i \in Server |-> [term |-> 0, vote |-> Nil]]
    /\ stableIndex    = snapshotIndex
    /\ outbox         = [i \in Server |-> {}]
    /\ role           = [i \in Server |-> "Follower"]
    /\ leader         = [i \in Server |-> Nil]
    /\ heard          = [i \in Server |-> FALSE]
    /\ commitIndex    = snapshotIndex
    /\ applied        = snapshotIndex
    /\ config         = snapshotConfig
    /\ votesGranted   = [i \in Server |-> {}]
    /\ matchIndex     = [i \in Server |-> [j \in Server |-> 0]]
    /\ nextIndex      = [i \in Server |-> [j \in Server |-> 1]]
    /\ recentActive   = [i \in Server |-> {}]
    /\ pendingConfIndex = [i \in Server |-> 0]
    /\ leadTransferee = [i \in Server |-> Nil]
    /\ readPending    = [i \in Server |-> NoRead]
    /\ network        = [m \in {} |-> 0]
    /\ elections      = {}
    /\ committed      = {}
    /\ commitRecords  = {}
    /\ votesSent      = {}
    /\ reads          = {}
    /\ restartCount   = 0
    /\ confCount      = 0
    /\ readCount      = 0

TraceNext ==
    /\ l <= Len(Trace)
    /\ \/ StepLine(Trace[l]) /\ l' = l + 1
       \/ SilentStep(Trace[l]) /\ UNCHANGED l

TraceSpec == TraceInit /\ [][TraceNext]_traceVars

\* Violated exactly when the whole trace was consumed: the trace is accepted.
TraceNotFullyConsumed == l <= Len(Trace)

\* Records the furthest line reached (register 1), printed when it grows, so
\* that a rejection says where the trace left the spec.
TraceProgress ==
    l > TLCGet(1) => (TLCSet(1, l) /\ PrintT(<<"trace line reached", l>>))

ASSUME TLCSet(1, 0)
=============================================================================
