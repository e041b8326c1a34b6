------------------------------ MODULE TraceRaft ------------------------------
(***************************************************************************)
(* Trace validation: does some behaviour of Raft.tla produce the events    *)
(* an implementation run logged?  A log is ndjson in etcd's TracingEvent   *)
(* schema (src/Raft.Host/Tracing/TraceNdjson.cs writes it).  One TLC run   *)
(* validates a list of such files (TraceList): every initial state picks   *)
(* one trace (variable t), so one breadth-first search follows all of them *)
(* at once and each is judged on its own.                                  *)
(*                                                                         *)
(* The variable l is the position in trace t.  Every step of TraceNext    *)
(* either consumes line l with the spec action(s) that line stands for    *)
(* (checking the message the line names and, where the implementation     *)
(* logs it at a point where both agree, the node's state: term, vote,      *)
(* commit, role, last index, voters), or takes one of the spec actions the *)
(* implementation never logs (Apply, compaction, leadership transfer, the  *)
(* term update before a message is handled, the whole pre-vote exchange,   *)
(* CheckQuorum, the end of a lease ...), each allowed only next to the     *)
(* line that needs it, so that the search stays narrow.  A trace is        *)
(* accepted when a state with l = Len(trace) + 1 is reachable; TraceAccept *)
(* prints it (validate-trace.sh reads TLC's output), and the states of an  *)
(* accepted trace are not explored further.                                *)
(*                                                                         *)
(* Where the implementation's atomicity differs from the spec's, the line  *)
(* that carries the effect is chosen as follows (etcd logs a receive       *)
(* before handling it, a send when the message is queued, a Ready when     *)
(* the node hands its state to the application): the spec handler runs at  *)
(* the Receive line; response lines check that the handler queued that     *)
(* response; Ready lines are the state checkpoints and stand for Persist.  *)
(* See tlaplus/README-trace.md for the divergences between the spec and    *)
(* etcd's behaviour that the mapping relaxes, and why.                     *)
(***************************************************************************)
EXTENDS Raft, Json

CONSTANT TraceList   \* a JSON file holding the array of the ndjson traces' paths

VARIABLES
    t,   \* the trace this behaviour follows: an index of TraceFiles
    l    \* the next line of trace t to consume

traceVars == <<vars, t, l>>

ToSet(s) == {s[k] : k \in DOMAIN s}

-----------------------------------------------------------------------------
(* The traces, read once (TLCEval: the values are shared by every state).  *)

IsEvent(x) == "event" \in DOMAIN x
IsOptions(x) == "tag" \in DOMAIN x /\ x.tag = "raftv-trace"

TraceFiles == TLCEval(JsonDeserialize(TraceList))
Parsed == TLCEval([k \in DOMAIN TraceFiles |-> ndJsonDeserialize(TraceFiles[k])])

\* The events of each trace, in order (lines without an "event" member are
\* not trace lines).
Traces == TLCEval([k \in DOMAIN Parsed |->
                     LET ev == SelectSeq(Parsed[k], IsEvent) IN [p \in DOMAIN ev |-> ev[p].event]])

\* How each run started, from the trace's options line, e.g.
\*   {"tag":"raftv-trace","boot":"snapshot","bootIndex":1,"bootTerm":1,
\*    "voters":["1","2","3"],"prevote":false,"checkquorum":false}
\* boot "snapshot": the voters start from a snapshot (index, term) holding the
\* configuration (the simulator's bootstrap; other nodes start empty);
\* boot "entries": the voters were bootstrapped etcd's way, with the
\* conf-change entries adding the voters in order at term 1 (Raft.Host's
\* Bootstrap).  A trace without an options line is a simulator trace:
\* snapshot at (1, 1) of the voters of its first event, both options off.
DefaultOptions(k) ==
    [boot |-> "snapshot", bootIndex |-> 1, bootTerm |-> 1, voters |-> Traces[k][1].conf[1],
     prevote |-> FALSE, checkquorum |-> FALSE]
Options == TLCEval([k \in DOMAIN Parsed |->
                      LET o == SelectSeq(Parsed[k], IsOptions)
                      IN IF o = << >> THEN DefaultOptions(k) ELSE o[1]])

\* One TLC run has one PreVote and one CheckQuorum setting (constants of
\* Raft.tla): validate-trace.sh groups the traces by their options.
ASSUME \A k \in DOMAIN Options :
          /\ Options[k].prevote = PreVoteEnabled /\ Options[k].checkquorum = CheckQuorumEnabled
          /\ Options[k].boot \in {"snapshot", "entries"}

Trace == Traces[t]
Opt == Options[t]
BootVoters == ToSet(Opt.voters)

HasMsg(e) == "msg" \in DOMAIN e
HasCC(e)  == "prop" \in DOMAIN e /\ "cc" \in DOMAIN e.prop
\* The voters an ApplyConfChange line switched to (the writer omits an empty list).
NewConf(e) == IF "newconf" \in DOMAIN e.prop.cc THEN ToSet(e.prop.cc.newconf) ELSE {}

OpOf(a) == CASE a = "AddNewServer" -> "AddNode"
             [] a = "AddLearner"   -> "AddLearner"
             [] a = "RemoveServer" -> "Remove"
             [] OTHER              -> "Update"

\* The single changes of a ChangeConf line, in order.
LineChanges(e) ==
    IF HasCC(e) /\ "changes" \in DOMAIN e.prop.cc THEN e.prop.cc.changes ELSE << >>

\* The changes a ChangeConf line proposes.  etcd applies the single changes
\* of a conf change in order, and the last one naming a node decides what it
\* becomes; Raft.tla applies a set of changes, so only the last change of
\* each node is kept.
SpecChanges(e) ==
    LET cs == LineChanges(e)
        last == {k \in DOMAIN cs : \A k2 \in DOMAIN cs : k2 > k => cs[k2].nid # cs[k].nid}
    IN {[op |-> OpOf(cs[k].action), node |-> cs[k].nid] : k \in last}

\* The conf changes a ChangeConf line may stand for: etcd makes a change of
\* one node simple (its ConfChangeV2 with the automatic transition) and one of
\* several nodes joint; the trace does not say whether a joint configuration
\* is left automatically.
CCsFor(e) ==
    IF Len(LineChanges(e)) = 1
    THEN {[kind |-> "simple", changes |-> SpecChanges(e), autoLeave |-> FALSE]}
    ELSE {[kind |-> "joint", changes |-> SpecChanges(e), autoLeave |-> a] : a \in BOOLEAN}

RoleOf(r) == CASE r = "StateFollower"     -> "Follower"
               [] r = "StatePreCandidate" -> "PreCandidate"
               [] r = "StateCandidate"    -> "Candidate"
               [] r = "StateLeader"       -> "Leader"

\* The last line of node i before line p (0 if none).
RECURSIVE LastLineOf(_, _, _)
LastLineOf(tr, i, p) == IF p < 1 THEN 0 ELSE IF tr[p].nid = i THEN p ELSE LastLineOf(tr, i, p - 1)

\* The next line of node i from line p on that is one of the names (0 if none).
RECURSIVE NextLineOf(_, _, _, _)
NextLineOf(tr, i, names, p) ==
    IF p > Len(tr) THEN 0
    ELSE IF tr[p].nid = i /\ tr[p].name \in names THEN p
    ELSE NextLineOf(tr, i, names, p + 1)

NameAt(p) == IF p \in DOMAIN Trace THEN Trace[p].name ELSE "none"

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
Queued(i, tm) == \E m \in DOMAIN outbox[i] \cup DOMAIN network : MsgMatches(m, tm)

-----------------------------------------------------------------------------
(* Matching the logged state of node i.                                    *)

\* etcd's (pre-)candidate that lost its election becomes a follower of the
\* same term at once; Raft.tla's stays a (pre-)candidate until its next
\* Timeout (see HandleRequestVoteResponse).  Both keep term and vote, so a
\* logged follower may be a spec (pre-)candidate.
RoleOk(r, logged) == r = logged \/ (r \in {"Candidate", "PreCandidate"} /\ logged = "Follower")

ConfOk(c, e) == c.voters = ToSet(e.conf[1]) /\ c.outgoing = ToSet(e.conf[2])

\* The logged state against the state after the step (primed).
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

\* Node i restarted just before line l: its InitState line, then the restore
\* of its configuration (ApplyConfChange), then its BecomeFollower.
RestartedBefore(i, p) ==
    LET q == LastLineOf(Trace, i, p - 1) IN
    \/ NameAt(q) = "InitState"
    \/ NameAt(q) = "ApplyConfChange" /\ NameAt(LastLineOf(Trace, i, q - 1)) = "InitState"

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

\* etcd's Bootstrap (not a Raft.tla action: the application seeds an empty
\* node): term 1, one committed conf-change entry per voter, in order, not
\* applied yet (the node applies them, logging ApplyConfChange), nothing
\* durable yet (its first Ready writes it).
Bootstrap(i) ==
    LET vs == Opt.voters IN
    /\ currentTerm' = [currentTerm EXCEPT ![i] = 1]
    /\ log' = [log EXCEPT ![i] =
          [k \in DOMAIN vs |->
              ConfEntry(1, [kind |-> "simple", changes |-> {[op |-> "AddNode", node |-> vs[k]]},
                            autoLeave |-> FALSE])]]
    /\ commitIndex' = [commitIndex EXCEPT ![i] = Len(vs)]
    /\ committed' = committed \cup {<<k, 1>> : k \in DOMAIN vs}
    /\ UNCHANGED <<votedFor, snapshotIndex, snapshotTerm, snapshotConfig, diskVars, role,
                   leader, heard, applied, config, leaderVars, network, elections,
                   commitRecords, votesSent, reads, restartCount, confCount, readCount>>

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
SendNames == {"SendAppendEntriesRequest", "SendAppendEntriesResponse",
              "SendRequestVoteRequest", "SendRequestVoteResponse"}

IsSelfMsg(e) == HasMsg(e) /\ e.msg.from = e.msg.to

\* Node i's line before l is its BecomeLeader: this Replicate is its empty entry.
\* (Other nodes' lines may come in between: the nodes of a host run log from
\* their own threads.)
AfterBecomeLeader(i) == NameAt(LastLineOf(Trace, i, l - 1)) = "BecomeLeader"

\* The nodes of trace k persist through storage threads (Raft.Host's
\* AsyncStorageWrites; options line "asyncwrites": true).
AsyncWrites(k) == "asyncwrites" \in DOMAIN Options[k] /\ Options[k].asyncwrites

\* In such traces, each node's last InitState line (0 if none).
LastRestart == TLCEval([k \in DOMAIN Traces |->
    [i \in Server |->
        LET ps == IF AsyncWrites(k)
                  THEN {p \in DOMAIN Traces[k] : Traces[k][p].nid = i /\ Traces[k][p].name = "InitState"}
                  ELSE {}
        IN IF ps = {} THEN 0 ELSE Max(ps)]])

\* Node i writes nothing at this Ready: it crashes (InitState) before its next
\* Ready, so the write, and the messages that waited for it, are lost.  With
\* storage threads a Ready's write completes later, at a point the trace does
\* not show: the writes of several Readys may be queued at a crash, so any
\* Ready before the node's last restart may have been lost (a later Ready's
\* Persist writes what an earlier one left); and a leader may count its own
\* entries for the commit only once its storage thread acknowledged them,
\* so its Ready may leave the write pending until that acknowledgement's line
\* (the silent Persist below).
WriteLost(i) ==
    \/ NameAt(NextLineOf(Trace, i, {"Ready", "InitState"}, l + 1)) = "InitState"
    \/ LastRestart[t][i] > l
    \/ AsyncWrites(t) /\ role[i] = "Leader"

\* An ApplyConfChange line that changes nothing in the spec: the restore of a
\* configuration from the snapshot at a restart, or by a snapshot the Receive
\* line just before installed, or the application applying again a change in
\* force already (etcd's Bootstrap applies its entries before the application
\* gets them).
ConfAlreadyApplied(i, e) ==
    /\ config[i].voters = NewConf(e)
    /\ \/ RestartedBefore(i, l)
       \/ LET k1 == LastLineOf(Trace, i, l - 1)
              k2 == LastLineOf(Trace, i, k1 - 1)
          IN \E k \in {k1, k2} \ {0} :
                /\ Trace[k].name = "ReceiveAppendEntriesRequest" /\ Trace[k].msg.type = "MsgSnap"
       \/ /\ ToSet(e.conf[1]) = NewConf(e)
          /\ ~(applied[i] < commitIndex[i] /\ Entry(i, applied[i] + 1).type = "conf")

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
            \/ \* etcd logs it inside the step whose spec action ran at the Receive
               \* line (or CheckQuorum's, or a restart's)
               /\ UNCHANGED vars
               /\ currentTerm[i] = e.state.term /\ RoleOk(role[i], RoleOf(e.role))
               \* (vote and commit may change later in a step; not in a restart's)
               /\ RestartedBefore(i, l) => votedFor[i] = e.state.vote /\ commitIndex[i] = e.state.commit
            \/ \* the first step of etcd's Bootstrap
               /\ Opt.boot = "entries" /\ i \in BootVoters
               /\ currentTerm[i] = 0 /\ LastIndex(i) = 0 /\ e.state.term = 1
               /\ Bootstrap(i)
      [] e.name = "Replicate" ->
            IF AfterBecomeLeader(i)
            THEN UNCHANGED vars
            \* logged before the entry is appended, once per entry of a batch
            ELSE \E v \in Value : ClientRequest(i, v) /\ currentTerm[i] = e.state.term
      [] e.name = "ChangeConf" ->
            \E cc \in CCsFor(e) :
                /\ ProposeConfChange(i, cc)
                /\ currentTerm[i] = e.state.term
      [] e.name = "ApplyConfChange" ->
            \/ /\ ApplyConfChange(i)
               /\ ConfOk(config[i], e)
               /\ config'[i].voters = NewConf(e)
            \/ /\ UNCHANGED vars
               /\ ConfAlreadyApplied(i, e)
      [] e.name = "Commit" ->
            /\ \/ AdvanceCommitIndex(i)
               \/ UNCHANGED vars /\ commitIndex[i] = e.state.commit
            /\ StateIs(i, e, 0)
      [] e.name = "Ready" ->
            \* Persist when there is something to persist (the spec's Persist is
            \* not enabled otherwise), unless the write is lost in a crash
            /\ IF \/ hardState[i] # CurrentHardState(i)
                  \/ stableIndex[i] < LastIndex(i)
                  \/ outbox[i] # NoMsgs
               THEN Persist(i) \/ (WriteLost(i) /\ UNCHANGED vars)
               ELSE UNCHANGED vars
            /\ StateIs(i, e, 0)
      [] e.name = "InitState" ->
            \* a restart; logged before the node loads its HardState (term 0, no
            \* vote, commit at the snapshot): the BecomeFollower line of the
            \* restart checks term, vote and commit
            /\ IF RestartChanges(i) THEN Restart(i) ELSE UNCHANGED vars
            /\ snapshotIndex'[i] + Len(log'[i]) = e.log
            /\ snapshotIndex'[i] = e.state.commit
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

\* The copies of the message of a receive line that must be in flight when it
\* is consumed: the largest excess, over any stretch of the trace from that
\* line on, of the message's receives over its sends (a copy the network
\* duplicated may arrive after the same message was sent again).  Computed
\* once per trace, backwards: for each message, the excess of the stretches
\* starting at its latest occurrence seen so far.
RECURSIVE ExcessScan(_, _, _, _)
ExcessScan(tr, p, cur, acc) ==
    IF p < 1 THEN acc
    ELSE LET e == tr[p]
             d == IF e.name \in ReceiveNames THEN 1 ELSE IF e.name \in SendNames THEN -1 ELSE 0
         IN IF d = 0 THEN ExcessScan(tr, p - 1, cur, acc)
            ELSE LET old == IF e.msg \in DOMAIN cur THEN cur[e.msg] ELSE 0
                     new == IF d + old > 0 THEN d + old ELSE 0
                 IN ExcessScan(tr, p - 1, (e.msg :> new) @@ cur,
                               IF d = 1 THEN (p :> new) @@ acc ELSE acc)

ReceiveExcess == TLCEval([k \in DOMAIN Traces |->
                            ExcessScan(Traces[k], Len(Traces[k]), <<>>, <<>>)])

ReceivesBeforeResend == ReceiveExcess[t][l]

\* A (pre-)vote request of a higher term reaches i while the spec's i still
\* holds the lease that etcd's i has lost (its election timer passed
\* electionTimeout without firing yet).
LeaseBlocks(i, m) ==
    /\ m.type \in {"Vote", "PreVote"} /\ m.term > currentTerm[i] /\ InLease(i)
    /\ ~(m.type = "Vote" /\ m.force)

\* The pre-vote exchange, which etcd's trace schema does not record: the
\* requests that may still count (their sender campaigns for that term).
LivePreVote(m) ==
    /\ m.type = "PreVote" /\ role[m.from] = "PreCandidate" /\ currentTerm[m.from] + 1 = m.term

SilentStep(e) ==
    LET i == e.nid IN
    \* a message of a higher term: the term update comes before the handler
    \/ /\ e.name \in ReceiveNames /\ ~IsSelfMsg(e)
       /\ \E m \in DOMAIN network : m.to = i /\ MsgMatches(m, e.msg) /\ UpdateTerm(i, m)
    \* a message delivered more often than it is in the network: the network
    \* duplicated it
    \/ /\ e.name \in ReceiveNames /\ ~IsSelfMsg(e)
       /\ \E m \in DOMAIN network :
             /\ m.to = i /\ MsgMatches(m, e.msg)
             /\ network[m] < ReceivesBeforeResend
             /\ DuplicateMessage(m)
    \* the lease of the receiver of a vote request ran out (CheckQuorum)
    \/ /\ e.name = "ReceiveRequestVoteRequest" /\ ~IsSelfMsg(e)
       /\ \E m \in DOMAIN network : m.to = i /\ MsgMatches(m, e.msg) /\ LeaseBlocks(i, m)
       /\ Timeout(i)
    \* the application applies committed entries, as far as the line needs:
    \* up to a conf change to apply, up to the pending conf change before
    \* proposing one, up to the conf changes before campaigning, up to the
    \* index of a snapshot to send
    \/ /\ \/ e.name = "ApplyConfChange"
          \/ e.name = "ChangeConf" /\ pendingConfIndex[i] > applied[i]
          \/ e.name = "BecomeCandidate" /\ ~CanCampaign(i)
          \/ /\ e.name = "SendAppendEntriesRequest" /\ e.msg.type = "MsgSnap"
             /\ applied[i] < e.msg.entries
          \/ e.name = "InitState" /\ applied[i] < e.state.commit
       /\ Apply(i)
    \* storage threads: the leader's pending write completes before the line of
    \* its own acknowledgement
    \/ /\ AsyncWrites(t) /\ e.name = "ReceiveAppendEntriesResponse" /\ IsSelfMsg(e)
       /\ Persist(i)
    \* the application compacts the log before a snapshot is sent
    \/ /\ e.name = "SendAppendEntriesRequest" /\ e.msg.type = "MsgSnap"
       /\ CompactLog(i, e.msg.entries)
    \* the application compacted the log (up to what it applied) before a
    \* restart: the node restarts from that snapshot (InitState logs its index
    \* as the commit)
    \/ /\ e.name = "InitState" /\ snapshotIndex[i] < e.state.commit
       /\ CompactLog(i, e.state.commit)
    \* a leadership transfer ends in the transferee's campaign
    \/ /\ e.name = "BecomeCandidate"
       /\ \E j \in Server : TransferLeadership(j, i)
    \* the leader's election tick aborts a transfer (proposals flow again)
    \/ /\ e.name \in {"Replicate", "ChangeConf"} /\ leadTransferee[i] # Nil
       /\ CheckQuorum(i)
    \* a leader steps down at its election tick without a quorum recently
    \* active (etcd logs the BecomeFollower only); the first tick may only
    \* forget who was active
    \/ /\ e.name = "BecomeFollower" /\ role[i] = "Leader" /\ e.state.term = currentTerm[i]
       /\ CheckQuorum(i)
    \* leaving a joint configuration: etcd logs no ChangeConf for the empty change
    \/ /\ \/ AutoLeaveJoint(i)
          \/ ProposeConfChange(i, LeaveJointCC)
    \* A campaign follows a timeout: the lease runs out first (Timeout of a
    \* node that heard from its leader), then, with PreVote, the node becomes a
    \* pre-candidate, where the line shows it campaigning or pre-campaigning;
    \* a pre-candidate may time out again at its Ready lines, once none of its
    \* requests is left in flight (a new round sends them anew)
    \/ /\ \/ e.name = "BecomeCandidate" /\ heard[i]
          \/ e.name = "BecomeCandidate" /\ PreVoteEnabled /\ role[i] # "PreCandidate"
          \/ /\ e.name = "Ready" /\ PreVoteEnabled /\ RoleOf(e.role) = "PreCandidate"
             /\ role[i] = "PreCandidate" =>
                   ~\E m \in DOMAIN network : m.from = i /\ LivePreVote(m)
       /\ Timeout(i)
    \* a node handles the pre-vote requests it got before the Ready that
    \* sends its answers (a lease still held in the spec may run out first);
    \* only an answer that can still count is worth it: a grant, or a
    \* rejection of a term above the pre-candidate's (which it follows)
    \/ /\ PreVoteEnabled /\ e.name = "Ready"
       /\ \E m \in DOMAIN network :
             /\ m.to = i /\ LivePreVote(m)
             /\ \/ LeaseBlocks(i, m) /\ Timeout(i)
                \/ /\ HandleRequestVoteRequest(i, m)
                   /\ \E r \in DOMAIN outbox'[i] \ DOMAIN outbox[i] :
                         ~r.reject \/ r.term > currentTerm[m.from]
    \* the pre-candidate counts the answers before it campaigns
    \/ /\ PreVoteEnabled /\ e.name = "BecomeCandidate" /\ role[i] = "PreCandidate"
       /\ \E m \in DOMAIN network :
             /\ m.to = i /\ m.type = "PreVoteResp" /\ ~m.reject
             /\ m.term = currentTerm[i] + 1 /\ m.from \notin votesGranted[i]
             /\ HandleRequestVoteResponse(i, m)
    \* a rejected pre-vote of a higher term makes the node follow that term
    \* (etcd logs the BecomeFollower only)
    \/ /\ e.name = "BecomeFollower" /\ e.state.term > currentTerm[i]
       /\ \E m \in DOMAIN network :
             /\ m.to = i /\ m.type \in {"PreVote", "PreVoteResp"} /\ m.term = e.state.term
             /\ UpdateTerm(i, m)

-----------------------------------------------------------------------------

\* The state in which trace k starts.
TraceInit ==
    /\ t \in DOMAIN TraceFiles
    /\ l = 1
    /\ LET snap == Options[t].boot = "snapshot"
           vs   == ToSet(Options[t].voters)
           boot(i) == snap /\ i \in vs
       IN
       /\ currentTerm    = [i \in Server |-> 0]
       /\ votedFor       = [i \in Server |-> Nil]
       /\ log            = [i \in Server |-> << >>]
       /\ snapshotIndex  = [i \in Server |-> IF boot(i) THEN Options[t].bootIndex ELSE 0]
       /\ snapshotTerm   = [i \in Server |-> IF boot(i) THEN Options[t].bootTerm ELSE 0]
       /\ snapshotConfig = [i \in Server |-> IF boot(i) THEN Config(vs, {}) ELSE Config({}, {})]
       /\ hardState      = [i \in Server |-> [term |-> 0, vote |-> Nil, commit |-> snapshotIndex[i]]]
       /\ stableIndex    = snapshotIndex
       /\ outbox         = [i \in Server |-> NoMsgs]
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
    /\ UNCHANGED t

TraceSpec == TraceInit /\ [][TraceNext]_traceVars

\* Messages no step can consume any more: pre-vote requests and answers of a
\* term their addressee (for a request: its sender) has reached.  The
\* implementation's copies of them were lost or ignored; Raft.tla's stay in
\* the network.  States that differ only in such messages have the same
\* future, so TLC's view of a state leaves them out (keeping the search from
\* branching over which stale pre-vote messages are left).
DeadMsg(m) == \/ m.type = "PreVote" /\ currentTerm[m.from] >= m.term
              \/ m.type = "PreVoteResp" /\ currentTerm[m.to] >= m.term
TraceView ==
    <<persistVars, hardState, stableIndex,
      [i \in Server |-> [m \in {x \in DOMAIN outbox[i] : ~DeadMsg(x)} |-> outbox[i][m]]],
      nodeVars, leaderVars, [m \in {x \in DOMAIN network : ~DeadMsg(x)} |-> network[m]],
      historyVars, t, l>>

\* The state constraint of validate-trace.sh's runs.  TLC's register t holds
\* the furthest line trace t reached so far: each time it grows, TraceRaft
\* prints it ("line reached", t, l), and "accepted" once the whole trace is
\* consumed.  The states of an accepted trace are not explored further.
TraceProgress ==
    /\ l > TLCGet(t) => /\ TLCSet(t, l)
                        /\ IF l > Len(Trace) THEN PrintT(<<"accepted", t>>)
                           ELSE PrintT(<<"line reached", t, l>>)
    /\ TLCGet(t) <= Len(Trace)

ASSUME \A k \in DOMAIN TraceFiles : TLCSet(k, 0)
=============================================================================
