-------------------------------- MODULE Raft --------------------------------
(***************************************************************************)
(* The algorithm of etcd-raft (etcd-io/raft), as RaftVerified implements   *)
(* it in F#.  Every action below carries a comment naming its F# twin      *)
(* (docs/spec-mapping.md is the index) and the etcd function it mirrors.   *)
(*                                                                         *)
(* Modelled: PreVote, CheckQuorum with leader stickiness, the Ready        *)
(* persist step (HardState and entries become durable, then the responses *)
(* that depend on them are sent), restarts, rejection hints and the        *)
(* leader's back-off, heartbeats, compaction and snapshots, simple and     *)
(* joint configuration changes with learners and auto-leave, leadership    *)
(* transfer, ReadIndex (safe mode) and a lossy, duplicating, reordering    *)
(* network.  See tlaplus/README.md for what is abstracted and why.         *)
(*                                                                         *)
(* The constant Mutant is "none" for the real algorithm.  The few places   *)
(* guarded by IF Mutant = "..." seed known bugs that check-mutants.sh      *)
(* expects the invariants to catch.                                        *)
(***************************************************************************)
EXTENDS Integers, FiniteSets, Sequences, TLC

-----------------------------------------------------------------------------
(***************************** CONSTANTS ***********************************)

CONSTANTS
    Server,             \* server ids
    Value,              \* values clients propose
    Nil,                \* "none" (etcd: None = 0)
    InitVoters,         \* voters of the bootstrap configuration
    InitLearners,       \* learners of the bootstrap configuration
    ConfChanges,        \* the conf changes a leader may propose (records, see CC)
    PreVoteEnabled,     \* etcd Config.PreVote
    CheckQuorumEnabled, \* etcd Config.CheckQuorum
    MaxAppendEntries,   \* etcd Config.MaxSizePerMsg, counted in entries (>= 1)
    Mutant              \* "none", or the name of a seeded bug (see MUTANTS)

\* The seeded bugs; "none" is the real algorithm.
Mutants == {"none",
            "CommitOldTerm",      \* maybeCommit without the current-term check
            "VoteNotPersisted",   \* the vote is not restored after a restart
            "QuorumOffByOne",     \* a quorum is |V| \div 2 instead of |V| \div 2 + 1
            "LearnerVotes",       \* learners are asked for votes and counted
            "AckBeforePersist",   \* MsgAppResp sent before the entries are durable
            "ReadNoQuorum",       \* ReadIndex answered without a heartbeat quorum
            "ReadNoTermCommit",   \* ReadIndex before an entry of the term is committed
            "HeartbeatFullCommit"}\* heartbeat carries commit, not min(match, commit)

ASSUME /\ InitVoters \subseteq Server /\ InitVoters # {}
       /\ InitLearners \subseteq Server /\ InitVoters \cap InitLearners = {}
       /\ Nil \notin Server
       /\ PreVoteEnabled \in BOOLEAN /\ CheckQuorumEnabled \in BOOLEAN
       /\ MaxAppendEntries \in Nat \ {0}
       /\ Mutant \in Mutants

-----------------------------------------------------------------------------
(***************************** VARIABLES ***********************************)

\* Persistent state (what etcd keeps in Storage).  The part of log beyond
\* stableIndex, and currentTerm/votedFor/commitIndex when they differ from hardState,
\* are not yet durable: they are etcd's "unstable" state.
VARIABLES
    currentTerm,     \* HardState.Term as the node sees it
    votedFor,        \* HardState.Vote as the node sees it
    log,             \* the entries after the snapshot: log[i][k] has index snapshotIndex[i] + k
    snapshotIndex,   \* index of the last entry covered by the snapshot (durable)
    snapshotTerm,    \* its term
    snapshotConfig   \* the configuration (ConfState) at snapshotIndex

\* Durability: what survives a crash.
VARIABLES
    hardState,       \* [term, vote, commit] last written to disk (etcd's HardState)
    stableIndex,     \* entries up to this index are on disk
    outbox           \* etcd's msgsAfterAppend (a bag, as network): responses released only by Persist

\* Volatile state of every node.
VARIABLES
    role,            \* "Follower", "PreCandidate", "Candidate" or "Leader"
    leader,          \* etcd r.lead
    heard,           \* electionElapsed < electionTimeout: heard from the leader recently
    commitIndex,     \* raftLog.committed
    applied,         \* raftLog.applied
    config           \* the tracker's configuration: changes when a conf entry is applied

\* Volatile state of candidates and leaders (canonical values otherwise).
VARIABLES
    votesGranted,    \* granted (pre-)votes received in this campaign
    matchIndex,      \* Progress.Match, matchIndex[i][j]
    nextIndex,       \* Progress.Next
    recentActive,    \* Progress.RecentActive: who answered since the last CheckQuorum
    pendingConfIndex,\* r.pendingConfIndex
    leadTransferee,  \* r.leadTransferee
    readPending      \* the pending ReadIndex request (etcd readOnly, one at a time here)

\* The network: a bag, message -> number of copies in flight.
VARIABLE network

\* History and bookkeeping variables (never read by the algorithm).
VARIABLES
    elections,       \* every election won: [term, leader, votes, cfg]
    committed,       \* every <<index, term>> any node ever considered committed
    commitRecords,   \* every commit a leader made: [index, term, cterm, cfg]
    votesSent,       \* every vote granted that left a node: <<voter, term, candidate>>
    reads,           \* every ReadIndex answered: [index, mustSee]
    restartCount,    \* number of restarts so far
    confCount,       \* number of conf changes proposed so far
    readCount        \* number of ReadIndex requests so far (also their ids)

persistVars == <<currentTerm, votedFor, log, snapshotIndex, snapshotTerm, snapshotConfig>>
diskVars    == <<hardState, stableIndex, outbox>>
nodeVars    == <<role, leader, heard, commitIndex, applied, config>>
leaderVars  == <<votesGranted, matchIndex, nextIndex, recentActive, pendingConfIndex,
                 leadTransferee, readPending>>
historyVars == <<elections, committed, commitRecords, votesSent, reads,
                 restartCount, confCount, readCount>>
vars == <<persistVars, diskVars, nodeVars, leaderVars, network, historyVars>>

-----------------------------------------------------------------------------
(***************************** HELPERS *************************************)

Min(S) == CHOOSE x \in S : \A y \in S : x <= y
Max(S) == CHOOSE x \in S : \A y \in S : x >= y

\* Entries and conf changes.  A conf change is a record
\*   [kind |-> "simple" | "joint" | "leave", changes |-> {[op, node]}, autoLeave]
\* with op \in {"AddNode", "AddLearner", "Remove"} (etcd ConfChangeSingle).
NoCC == [kind |-> "none", changes |-> {}, autoLeave |-> FALSE]
NormalEntry(t, v) == [term |-> t, type |-> "normal", value |-> v, cc |-> NoCC]
ConfEntry(t, cc)  == [term |-> t, type |-> "conf", value |-> Nil, cc |-> cc]
LeaveJointCC == [kind |-> "leave", changes |-> {}, autoLeave |-> FALSE]

\* Term of index n in a log lg that follows a snapshot (si, st); -1 when the
\* entry is compacted or beyond the end (etcd: ErrCompacted / ErrUnavailable).
TermIn(lg, si, st, n) ==
    IF n = si THEN st
    ELSE IF n > si /\ n <= si + Len(lg) THEN lg[n - si].term
    ELSE -1

LastIndex(i) == snapshotIndex[i] + Len(log[i])
TermAt(i, n) == TermIn(log[i], snapshotIndex[i], snapshotTerm[i], n)
LastTerm(i)  == TermAt(i, LastIndex(i))
Entry(i, n)  == log[i][n - snapshotIndex[i]]

\* etcd raftLog.isUpToDate: the candidate's log is at least as up to date.
UpToDate(i, lastIdx, lastT) ==
    \/ lastT > LastTerm(i)
    \/ lastT = LastTerm(i) /\ lastIdx >= LastIndex(i)

\* etcd raftLog.findConflictByTerm: the largest index <= index whose term is
\* <= term, with that term; stops (term 0) where the log is compacted.
FindConflictByTerm(i, index, term) ==
    IF index < snapshotIndex[i] THEN <<index, 0>>
    ELSE LET ks == {k \in snapshotIndex[i]..index : TermAt(i, k) <= term}
         IN IF ks = {} THEN <<snapshotIndex[i] - 1, 0>>
            ELSE <<Max(ks), TermAt(i, Max(ks))>>

\* etcd raftLog.findConflict: the first index of ents (which start after
\* prev) whose term differs from the local log, or 0 if there is none.
FindConflict(i, prev, ents) ==
    LET ks == {k \in 1..Len(ents) : TermAt(i, prev + k) # ents[k].term}
    IN IF ks = {} THEN 0 ELSE prev + Min(ks)

\* Configurations: etcd tracker.Config.  voters is the incoming majority
\* config, outgoing the outgoing one (empty unless joint).
Config(v, l) == [voters |-> v, outgoing |-> {}, learners |-> l,
                 learnersNext |-> {}, autoLeave |-> FALSE]
InitConfig == Config(InitVoters, InitLearners)
Voters(c)   == c.voters \cup c.outgoing
Learners(c) == c.learners \cup c.learnersNext
Members(c)  == Voters(c) \cup Learners(c)
IsJoint(c)  == c.outgoing # {}

\* etcd confchange: apply ConfChangeSingles to the incoming config, with
\* outgoing config out (makeVoter, makeLearner, remove).
ApplyChanges(c, chs, out, auto) ==
    LET adds == {ch.node : ch \in {x \in chs : x.op = "AddNode"}}
        lrns == {ch.node : ch \in {x \in chs : x.op = "AddLearner"}}
        rems == {ch.node : ch \in {x \in chs : x.op = "Remove"}}
    IN [voters       |-> (c.voters \ (lrns \cup rems)) \cup adds,
        outgoing     |-> out,
        learners     |-> (c.learners \ (adds \cup rems)) \cup {n \in lrns : n \notin out},
        learnersNext |-> (c.learnersNext \ (adds \cup rems)) \cup {n \in lrns : n \in out},
        autoLeave    |-> auto]

\* etcd Changer.Simple / EnterJoint / LeaveJoint.
ApplyCC(c, cc) ==
    CASE cc.kind = "simple" -> ApplyChanges(c, cc.changes, {}, FALSE)
      [] cc.kind = "joint"  -> ApplyChanges(c, cc.changes, c.voters, cc.autoLeave)
      [] cc.kind = "leave"  -> [voters |-> c.voters, outgoing |-> {},
                                learners |-> Learners(c), learnersNext |-> {},
                                autoLeave |-> FALSE]
      [] OTHER              -> c

\* A change the leader may propose from configuration c: the application
\* proposes only changes etcd's confchange accepts (etcd panics applying the
\* others), i.e. a simple change turns at most one voter, no joint
\* configuration is entered from a joint or an empty one, none removes every
\* voter, and only a joint configuration is left.  A change that changes
\* nothing is accepted, as in etcd.
ValidCC(c, cc) ==
    LET n == ApplyCC(c, cc) IN
    CASE cc.kind = "simple" ->
            /\ ~IsJoint(c) /\ Cardinality(cc.changes) = 1 /\ n.voters # {}
            /\ Cardinality((c.voters \ n.voters) \cup (n.voters \ c.voters)) <= 1
      [] cc.kind = "joint" ->
            /\ ~IsJoint(c) /\ c.voters # {} /\ cc.changes # {} /\ n.voters # {}
      [] cc.kind = "leave" -> IsJoint(c)
      [] OTHER -> FALSE

\* The configuration in force after applying the log of i up to index n
\* (n between snapshotIndex[i] and LastIndex(i)).
ConfigAt(i, n) ==
    LET F[k \in snapshotIndex[i]..n] ==
          IF k = snapshotIndex[i] THEN snapshotConfig[i]
          ELSE IF Entry(i, k).type = "conf" THEN ApplyCC(F[k - 1], Entry(i, k).cc)
          ELSE F[k - 1]
    IN F[n]

-----------------------------------------------------------------------------
(***************************** QUORUM MATH *********************************)

\* etcd quorum.MajorityConfig: S holds a majority of V.
Majority(S, V) ==
    IF Mutant = "QuorumOffByOne"
    THEN Cardinality(S \cap V) >= Cardinality(V) \div 2
    ELSE Cardinality(S \cap V) >= Cardinality(V) \div 2 + 1

\* etcd quorum.JointConfig: a majority of the incoming config and, when
\* joint, of the outgoing one too.  Learners never count.
IsQuorum(S, c) ==
    /\ Majority(S, c.voters)
    /\ (c.outgoing = {} \/ Majority(S, c.outgoing))

\* The same, never mutated: the invariants judge with it.
TrueMajority(S, V) == Cardinality(S \cap V) >= Cardinality(V) \div 2 + 1
TrueIsQuorum(S, c) == TrueMajority(S, c.voters) /\ (c.outgoing = {} \/ TrueMajority(S, c.outgoing))
Quorums(c) == {Q \in SUBSET Voters(c) : TrueIsQuorum(Q, c)}

\* The configuration a candidate asks for votes and tallies them in.
Electorate(i) ==
    IF Mutant = "LearnerVotes"
    THEN [config[i] EXCEPT !.voters = @ \cup Learners(config[i])]
    ELSE config[i]

\* Votes of a campaign.  A candidate's own vote counts once it is durable
\* (etcd steps the self-addressed MsgVoteResp after the storage append).
Granted(i) ==
    votesGranted[i] \cup
      (IF role[i] = "Candidate" /\ hardState[i].term = currentTerm[i]
                                /\ hardState[i].vote = i
       THEN {i} ELSE {})

\* What the leader knows of j's durable log; for itself, its own disk.
Match(i, j) == IF j = i THEN stableIndex[i] ELSE matchIndex[i][j]

\* etcd ProgressTracker.Committed: the largest index a quorum has.
QuorumIndex(i) ==
    Max({n \in 0..LastIndex(i) :
           IsQuorum({j \in Server : Match(i, j) >= n}, config[i])})

\* etcd promotable() and hasUnappliedConfChanges(): may campaign.
CanCampaign(i) ==
    /\ i \in Voters(config[i])
    /\ ~\E n \in (applied[i] + 1)..commitIndex[i] : Entry(i, n).type = "conf"

\* Leader stickiness: etcd inLease in Step.
InLease(i) == CheckQuorumEnabled /\ leader[i] # Nil /\ heard[i]

-----------------------------------------------------------------------------
(***************************** MESSAGES AND NETWORK ************************)

VoteReq(t, f, d, term, li, lt, force) ==
    [type |-> t, from |-> f, to |-> d, term |-> term, lastIndex |-> li,
     lastTerm |-> lt, force |-> force]
VoteResp(t, f, d, term, rej) ==
    [type |-> t, from |-> f, to |-> d, term |-> term, reject |-> rej]
AppReq(f, d, term, pi, pt, ents, c) ==
    [type |-> "App", from |-> f, to |-> d, term |-> term, prevIndex |-> pi,
     prevTerm |-> pt, entries |-> ents, commit |-> c]
AppResp(f, d, term, rej, idx, hint, hintTerm) ==
    [type |-> "AppResp", from |-> f, to |-> d, term |-> term, reject |-> rej,
     index |-> idx, hint |-> hint, hintTerm |-> hintTerm]
HeartbeatReq(f, d, term, c, ctx) ==
    [type |-> "Heartbeat", from |-> f, to |-> d, term |-> term, commit |-> c, ctx |-> ctx]
HeartbeatResp(f, d, term, ctx) ==
    [type |-> "HeartbeatResp", from |-> f, to |-> d, term |-> term, ctx |-> ctx]
SnapReq(f, d, term, si, st, sc) ==
    [type |-> "Snap", from |-> f, to |-> d, term |-> term, snapIndex |-> si,
     snapTerm |-> st, snapConfig |-> sc]
TimeoutNowReq(f, d, term) ==
    [type |-> "TimeoutNow", from |-> f, to |-> d, term |-> term]

WithMessage(m, net) ==
    IF m \in DOMAIN net THEN [net EXCEPT ![m] = @ + 1] ELSE net @@ (m :> 1)
WithoutMessage(m, net) ==
    IF net[m] <= 1 THEN [k \in DOMAIN net \ {m} |-> net[k]]
    ELSE [net EXCEPT ![m] = @ - 1]
WithMessages(S, net) ==
    [k \in DOMAIN net \cup S |->
        (IF k \in DOMAIN net THEN net[k] ELSE 0) + (IF k \in S THEN 1 ELSE 0)]
\* The bags a and b together.
BagSum(a, b) ==
    [k \in DOMAIN a \cup DOMAIN b |->
        (IF k \in DOMAIN a THEN a[k] ELSE 0) + (IF k \in DOMAIN b THEN b[k] ELSE 0)]
NoMsgs == [m \in {} |-> 0]

Send(m)    == network' = WithMessage(m, network)
Discard(m) == network' = WithoutMessage(m, network)
Reply(resp, req) == network' = WithMessage(resp, WithoutMessage(req, network))

\* A response that acknowledges entries or votes (MsgAppResp, MsgVoteResp,
\* MsgPreVoteResp): etcd queues it in msgsAfterAppend; Persist releases it.
ReplyAfterPersist(i, resp, req) ==
    IF Mutant = "AckBeforePersist" /\ resp.type = "AppResp"
    THEN /\ Reply(resp, req)
         /\ UNCHANGED outbox
    ELSE /\ outbox' = [outbox EXCEPT ![i] = WithMessage(resp, @)]
         /\ Discard(req)

\* etcd Step for a message of a lower term: MsgApp and MsgHeartbeat get a
\* MsgAppResp at our term (so a stale leader steps down) when CheckQuorum or
\* PreVote is on; anything else is dropped here.
StaleReply(i, m) ==
    IF CheckQuorumEnabled \/ PreVoteEnabled
    THEN ReplyAfterPersist(i, AppResp(i, m.from, currentTerm[i], FALSE, 0, 0, 0), m)
    ELSE /\ Discard(m) /\ UNCHANGED outbox

\* The largest index the acknowledgements queued at node i claim durable (0 if none).
Acks(i) ==
    LET idx == {r.index : r \in {x \in DOMAIN outbox[i] : x.type = "AppResp" /\ ~x.reject}}
    IN IF idx = {} THEN 0 ELSE Max(idx)

\* Entries newly committed when node i's commit index moves to c in log lg.
NewlyCommitted(i, lg, c) ==
    {<<n, TermIn(lg, snapshotIndex[i], snapshotTerm[i], n)>> : n \in (commitIndex[i] + 1)..c}

\* The largest index any node ever considered committed.
MaxCommitted == IF committed = {} THEN 0 ELSE Max({p[1] : p \in committed})

NoRead == [id |-> 0, index |-> 0, acks |-> {}, mustSee |-> 0]

-----------------------------------------------------------------------------
(***************************** INIT ****************************************)

Init ==
    /\ currentTerm    = [i \in Server |-> 0]
    /\ votedFor       = [i \in Server |-> Nil]
    /\ log            = [i \in Server |-> << >>]
    /\ snapshotIndex  = [i \in Server |-> 0]
    /\ snapshotTerm   = [i \in Server |-> 0]
    /\ snapshotConfig = [i \in Server |-> InitConfig]
    /\ hardState      = [i \in Server |-> [term |-> 0, vote |-> Nil, commit |-> 0]]
    /\ stableIndex    = [i \in Server |-> 0]
    /\ outbox         = [i \in Server |-> NoMsgs]
    /\ role           = [i \in Server |-> "Follower"]
    /\ leader         = [i \in Server |-> Nil]
    /\ heard          = [i \in Server |-> FALSE]
    /\ commitIndex    = [i \in Server |-> 0]
    /\ applied        = [i \in Server |-> 0]
    /\ config         = [i \in Server |-> InitConfig]
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

-----------------------------------------------------------------------------
(***************************** ROLE CHANGES ********************************)
(* These are building blocks: each sets the role variables and the leader *)
(* variables of node i; the action using it sets the rest.                *)

\* Canonical leader state of a node that is not leading.
ResetLeaderState(i) ==
    /\ votesGranted'     = [votesGranted EXCEPT ![i] = {}]
    /\ matchIndex'       = [matchIndex EXCEPT ![i] = [j \in Server |-> 0]]
    /\ nextIndex'        = [nextIndex EXCEPT ![i] = [j \in Server |-> 1]]
    /\ recentActive'     = [recentActive EXCEPT ![i] = {}]
    /\ pendingConfIndex' = [pendingConfIndex EXCEPT ![i] = 0]
    /\ leadTransferee'   = [leadTransferee EXCEPT ![i] = Nil]
    /\ readPending'      = [readPending EXCEPT ![i] = NoRead]

\* F# twin: Actions.BecomeFollower -- etcd becomeFollower(term, lead): the
\* vote is kept only within the same term; reset() restarts the election
\* timer, so a node that learns its leader has "heard" from it.
BecomeFollower(i, t, l) ==
    /\ role'        = [role EXCEPT ![i] = "Follower"]
    /\ currentTerm' = [currentTerm EXCEPT ![i] = t]
    /\ votedFor'    = [votedFor EXCEPT ![i] = IF t = currentTerm[i] THEN @ ELSE Nil]
    /\ leader'      = [leader EXCEPT ![i] = l]
    /\ heard'       = [heard EXCEPT ![i] = (l # Nil)]
    /\ ResetLeaderState(i)

\* F# twin: Actions.BecomePreCandidate -- etcd becomePreCandidate plus the
\* MsgPreVote broadcast of campaign(campaignPreElection): asks for votes at
\* term+1 without changing its own term or vote.
BecomePreCandidate(i) ==
    /\ role'         = [role EXCEPT ![i] = "PreCandidate"]
    /\ leader'       = [leader EXCEPT ![i] = Nil]
    /\ heard'        = [heard EXCEPT ![i] = FALSE]
    /\ votesGranted' = [votesGranted EXCEPT ![i] = {i}]
    /\ network' = WithMessages(
          {VoteReq("PreVote", i, j, currentTerm[i] + 1, LastIndex(i), LastTerm(i), FALSE) :
              j \in Voters(Electorate(i)) \ {i}}, network)
    /\ UNCHANGED <<currentTerm, votedFor, matchIndex, nextIndex, recentActive,
                   pendingConfIndex, leadTransferee, readPending>>

\* etcd becomeCandidate plus the MsgVote broadcast of campaign(): term+1,
\* vote for itself (counted once durable, see Granted).  force marks a
\* campaign started by MsgTimeoutNow (campaignTransfer), which bypasses
\* the receivers' leader stickiness.  The requests are added to net.
Campaign(i, force, net) ==
    /\ currentTerm'  = [currentTerm EXCEPT ![i] = @ + 1]
    /\ votedFor'     = [votedFor EXCEPT ![i] = i]
    /\ role'         = [role EXCEPT ![i] = "Candidate"]
    /\ leader'       = [leader EXCEPT ![i] = Nil]
    /\ heard'        = [heard EXCEPT ![i] = FALSE]
    /\ votesGranted' = [votesGranted EXCEPT ![i] = {}]
    /\ network' = WithMessages(
          {VoteReq("Vote", i, j, currentTerm[i] + 1, LastIndex(i), LastTerm(i), force) :
              j \in Voters(Electorate(i)) \ {i}}, net)
    /\ UNCHANGED <<matchIndex, nextIndex, recentActive, pendingConfIndex,
                   leadTransferee, readPending>>

-----------------------------------------------------------------------------
(***************************** ELECTIONS ***********************************)

\* F# twin: Actions.Timeout -- the election timer (tickElection).  A node that
\* heard from a leader recently first only loses its lease: electionElapsed
\* reaches electionTimeout (etcd's inLease is over) while the randomized
\* timeout, never shorter, has not fired yet.  A node out of its lease that
\* may campaign then times out (MsgHup -> hup/campaign): a pre-vote, or a
\* vote without PreVote.
Timeout(i) ==
    /\ role[i] # "Leader"
    /\ IF heard[i]
       THEN /\ heard' = [heard EXCEPT ![i] = FALSE]
            /\ UNCHANGED <<persistVars, diskVars, role, leader, commitIndex, applied,
                           config, leaderVars, network, historyVars>>
       ELSE /\ CanCampaign(i)
            /\ IF PreVoteEnabled THEN BecomePreCandidate(i) ELSE Campaign(i, FALSE, network)
            /\ UNCHANGED <<log, snapshotIndex, snapshotTerm, snapshotConfig, diskVars,
                           commitIndex, applied, config, historyVars>>

\* F# twin: Actions.BecomeCandidate -- etcd poll() returned VoteWon for the
\* pre-vote: campaign(campaignElection).
BecomeCandidate(i) ==
    /\ role[i] = "PreCandidate"
    /\ IsQuorum(votesGranted[i], Electorate(i))
    /\ Campaign(i, FALSE, network)
    /\ UNCHANGED <<log, snapshotIndex, snapshotTerm, snapshotConfig, diskVars,
                   commitIndex, applied, config, historyVars>>

\* F# twin: Actions.BecomeLeader -- etcd poll() returned VoteWon:
\* becomeLeader resets progress (Next = lastIndex+1), sets pendingConfIndex
\* to the last index and appends the empty entry of the new term.
BecomeLeader(i) ==
    /\ role[i] = "Candidate"
    /\ IsQuorum(Granted(i), Electorate(i))
    /\ role'         = [role EXCEPT ![i] = "Leader"]
    /\ leader'       = [leader EXCEPT ![i] = i]
    /\ heard'        = [heard EXCEPT ![i] = TRUE]
    /\ log'          = [log EXCEPT ![i] = Append(@, NormalEntry(currentTerm[i], Nil))]
    /\ votesGranted' = [votesGranted EXCEPT ![i] = {}]
    /\ nextIndex'    = [nextIndex EXCEPT ![i] = [j \in Server |-> LastIndex(i) + 1]]
    /\ pendingConfIndex' = [pendingConfIndex EXCEPT ![i] = LastIndex(i)]
    /\ elections' = elections \cup
          {[term |-> currentTerm[i], leader |-> i, votes |-> Granted(i), cfg |-> config[i]]}
    /\ UNCHANGED <<currentTerm, votedFor, snapshotIndex, snapshotTerm, snapshotConfig,
                   diskVars, commitIndex, applied, config, matchIndex, recentActive,
                   leadTransferee, readPending, network, committed, commitRecords,
                   votesSent, reads, restartCount, confCount, readCount>>

\* F# twin: Actions.UpdateTerm -- etcd Step for m.Term > r.Term: become a
\* follower of the new term (leader known for MsgApp/MsgHeartbeat/MsgSnap).
\* Not for a MsgPreVote nor a granted MsgPreVoteResp (their term is a
\* future one), nor for a (pre-)vote request that leader stickiness ignores.
\* The message stays in the network for its handler.
UpdateTerm(i, m) ==
    /\ m.term > currentTerm[i]
    /\ m.type # "PreVote"
    /\ ~(m.type = "PreVoteResp" /\ ~m.reject)
    /\ ~(m.type = "Vote" /\ InLease(i) /\ ~m.force)
    /\ BecomeFollower(i, m.term, IF m.type \in {"App", "Heartbeat", "Snap"} THEN m.from ELSE Nil)
    /\ UNCHANGED <<log, snapshotIndex, snapshotTerm, snapshotConfig, diskVars,
                   commitIndex, applied, config, network, historyVars>>

\* F# twin: Actions.HandleRequestVoteRequest -- etcd Step for MsgVote and
\* MsgPreVote.  Grants when the node can vote (a repeat of its vote, or no
\* vote and no leader, or a pre-vote for a later term) and the candidate's
\* log is up to date.  Learners answer too (etcd lets them; their vote only
\* counts for a candidate whose configuration makes them voters).
HandleRequestVoteRequest(i, m) ==
    /\ m.type \in {"Vote", "PreVote"}
    /\ LET respType == IF m.type = "Vote" THEN "VoteResp" ELSE "PreVoteResp"
           canVote  == \/ votedFor[i] = m.from
                       \/ votedFor[i] = Nil /\ leader[i] = Nil
                       \/ m.type = "PreVote" /\ m.term > currentTerm[i]
           grant    == canVote /\ UpToDate(i, m.lastIndex, m.lastTerm)
           ignored  == m.term > currentTerm[i] /\ InLease(i) /\ ~m.force
       IN
       CASE ignored ->
                \* leader stickiness: ignore it
                /\ Discard(m)
                /\ UNCHANGED <<persistVars, diskVars, nodeVars, leaderVars, historyVars>>
         [] ~ignored /\ m.term < currentTerm[i] ->
                /\ IF m.type = "PreVote"
                   THEN ReplyAfterPersist(i, VoteResp(respType, i, m.from, currentTerm[i], TRUE), m)
                   ELSE Discard(m) /\ UNCHANGED outbox
                /\ UNCHANGED <<persistVars, hardState, stableIndex, nodeVars, leaderVars,
                               historyVars>>
         [] ~ignored /\ (m.term = currentTerm[i] \/ (m.type = "PreVote" /\ m.term > currentTerm[i])) ->
                /\ ReplyAfterPersist(i,
                      IF grant THEN VoteResp(respType, i, m.from, m.term, FALSE)
                               ELSE VoteResp(respType, i, m.from, currentTerm[i], TRUE), m)
                /\ IF grant /\ m.type = "Vote"
                   THEN /\ votedFor' = [votedFor EXCEPT ![i] = m.from]
                        /\ heard' = [heard EXCEPT ![i] = (leader[i] # Nil)]
                   ELSE UNCHANGED <<votedFor, heard>>
                /\ UNCHANGED <<currentTerm, log, snapshotIndex, snapshotTerm, snapshotConfig,
                               hardState, stableIndex, role, leader, commitIndex, applied,
                               config, leaderVars, historyVars>>
         [] OTHER -> FALSE  \* a MsgVote of a higher term goes through UpdateTerm first

\* F# twin: Actions.HandleRequestVoteResponse -- etcd stepCandidate for
\* MsgVoteResp / MsgPreVoteResp: record the vote; the tally (poll) is
\* BecomeCandidate / BecomeLeader.  A lost election is not acted on: the
\* candidate waits for its next Timeout (etcd becomes a follower of the
\* same term at once; that keeps its vote and changes nothing for safety).
HandleRequestVoteResponse(i, m) ==
    /\ m.type \in {"VoteResp", "PreVoteResp"}
    /\ \/ m.term <= currentTerm[i]
       \/ m.type = "PreVoteResp" /\ ~m.reject
    /\ LET counts ==
             \/ /\ m.type = "PreVoteResp" /\ ~m.reject /\ role[i] = "PreCandidate"
                /\ m.term = currentTerm[i] + 1
             \/ /\ m.type = "VoteResp" /\ ~m.reject /\ role[i] = "Candidate"
                /\ m.term = currentTerm[i]
       IN votesGranted' = [votesGranted EXCEPT ![i] = IF counts THEN @ \cup {m.from} ELSE @]
    /\ Discard(m)
    /\ UNCHANGED <<persistVars, diskVars, nodeVars, matchIndex, nextIndex, recentActive,
                   pendingConfIndex, leadTransferee, readPending, historyVars>>

\* F# twin: Actions.CheckQuorum -- the leader's election timeout
\* (tickHeartbeat -> MsgCheckQuorum): step down without a quorum recently
\* active, else clear RecentActive; an unfinished leadership transfer is
\* aborted at the same tick.
CheckQuorum(i) ==
    /\ role[i] = "Leader"
    /\ IF CheckQuorumEnabled /\ ~IsQuorum(recentActive[i] \cup {i}, config[i])
       THEN /\ BecomeFollower(i, currentTerm[i], Nil)
            /\ UNCHANGED <<log, snapshotIndex, snapshotTerm, snapshotConfig, diskVars,
                           commitIndex, applied, config, network, historyVars>>
       ELSE /\ recentActive[i] # {} \/ leadTransferee[i] # Nil
            /\ recentActive'   = [recentActive EXCEPT ![i] = {}]
            /\ leadTransferee' = [leadTransferee EXCEPT ![i] = Nil]
            /\ UNCHANGED <<persistVars, diskVars, nodeVars, votesGranted, matchIndex,
                           nextIndex, pendingConfIndex, readPending, network, historyVars>>

\* F# twin: Actions.ForgetLeader -- MsgForgetLeader at a follower (safe
\* ReadIndex mode): forget the leader, hence its lease.
ForgetLeader(i) ==
    /\ role[i] = "Follower" /\ leader[i] # Nil
    /\ leader' = [leader EXCEPT ![i] = Nil]
    /\ heard'  = [heard EXCEPT ![i] = FALSE]
    /\ UNCHANGED <<persistVars, diskVars, role, commitIndex, applied, config,
                   leaderVars, network, historyVars>>

-----------------------------------------------------------------------------
(***************************** PROPOSALS AND CONF CHANGES ******************)

\* F# twin: Actions.ClientRequest -- MsgProp at the leader: appendEntry.
\* Dropped while a leadership transfer is in progress.
ClientRequest(i, v) ==
    /\ role[i] = "Leader" /\ leadTransferee[i] = Nil
    /\ log' = [log EXCEPT ![i] = Append(@, NormalEntry(currentTerm[i], v))]
    /\ UNCHANGED <<currentTerm, votedFor, snapshotIndex, snapshotTerm, snapshotConfig,
                   diskVars, nodeVars, leaderVars, network, historyVars>>

\* F# twin: Actions.ProposeConfChange -- a conf-change MsgProp at the
\* leader: refused while an earlier one may be unapplied (pendingConfIndex
\* > applied) or while it is invalid for the current configuration.
ProposeConfChange(i, cc) ==
    /\ role[i] = "Leader" /\ leadTransferee[i] = Nil
    /\ pendingConfIndex[i] <= applied[i]
    /\ ValidCC(config[i], cc)
    /\ log' = [log EXCEPT ![i] = Append(@, ConfEntry(currentTerm[i], cc))]
    /\ pendingConfIndex' = [pendingConfIndex EXCEPT ![i] = LastIndex(i) + 1]
    /\ confCount' = confCount + 1
    /\ UNCHANGED <<currentTerm, votedFor, snapshotIndex, snapshotTerm, snapshotConfig,
                   diskVars, nodeVars, votesGranted, matchIndex, nextIndex, recentActive,
                   leadTransferee, readPending, network, elections, committed,
                   commitRecords, votesSent, reads, restartCount, readCount>>

\* F# twin: Actions.AutoLeaveJoint -- etcd appliedTo: once the joint
\* configuration (with AutoLeave) is applied at the leader, it proposes the
\* empty ConfChangeV2 that leaves it.
AutoLeaveJoint(i) ==
    /\ role[i] = "Leader" /\ leadTransferee[i] = Nil
    /\ IsJoint(config[i]) /\ config[i].autoLeave
    /\ pendingConfIndex[i] <= applied[i]
    /\ log' = [log EXCEPT ![i] = Append(@, ConfEntry(currentTerm[i], LeaveJointCC))]
    /\ pendingConfIndex' = [pendingConfIndex EXCEPT ![i] = LastIndex(i) + 1]
    /\ UNCHANGED <<currentTerm, votedFor, snapshotIndex, snapshotTerm, snapshotConfig,
                   diskVars, nodeVars, votesGranted, matchIndex, nextIndex, recentActive,
                   leadTransferee, readPending, network, historyVars>>

\* F# twin: Actions.ApplyConfChange -- the application applies the next
\* committed entry, a conf change: etcd applyConfChange/switchToConfig.  A
\* leader that is no longer a voter steps down (stepDownOnRemoval); new
\* members get fresh progress; a transfer to a non-voter is aborted.
ApplyConfChange(i) ==
    /\ applied[i] < commitIndex[i]
    /\ Entry(i, applied[i] + 1).type = "conf"
    /\ LET new == ApplyCC(config[i], Entry(i, applied[i] + 1).cc)
           added == Members(new) \ Members(config[i])
       IN /\ config'  = [config EXCEPT ![i] = new]
          /\ applied' = [applied EXCEPT ![i] = @ + 1]
          /\ IF role[i] = "Leader" /\ i \notin Voters(new)
             THEN BecomeFollower(i, currentTerm[i], Nil)
             ELSE /\ IF role[i] = "Leader"
                     THEN /\ matchIndex' = [matchIndex EXCEPT ![i] =
                                [j \in Server |-> IF j \in added THEN 0 ELSE @[j]]]
                          /\ nextIndex' = [nextIndex EXCEPT ![i] =
                                [j \in Server |-> IF j \in added THEN LastIndex(i) + 1 ELSE @[j]]]
                          /\ leadTransferee' = [leadTransferee EXCEPT ![i] =
                                IF @ \in Voters(new) THEN @ ELSE Nil]
                     ELSE UNCHANGED <<matchIndex, nextIndex, leadTransferee>>
                  /\ UNCHANGED <<currentTerm, votedFor, role, leader, heard, votesGranted,
                                 recentActive, pendingConfIndex, readPending>>
    /\ UNCHANGED <<log, snapshotIndex, snapshotTerm, snapshotConfig, diskVars,
                   commitIndex, network, historyVars>>

-----------------------------------------------------------------------------
(***************************** REPLICATION *********************************)

\* F# twin: Actions.AppendEntries -- etcd sendAppend/maybeSendAppend: MsgApp
\* with the entries from Next on (at most MaxAppendEntries), the previous
\* index and term, and the leader's commit.  Needs the previous term, i.e.
\* Next-1 not compacted (else SendSnapshot).
AppendEntries(i, j) ==
    /\ role[i] = "Leader" /\ j # i /\ j \in Members(config[i])
    /\ nextIndex[i][j] - 1 >= snapshotIndex[i]
    /\ LET prev == nextIndex[i][j] - 1
           last == Min({LastIndex(i), prev + MaxAppendEntries})
       IN Send(AppReq(i, j, currentTerm[i], prev, TermAt(i, prev),
                      SubSeq(log[i], prev + 1 - snapshotIndex[i], last - snapshotIndex[i]),
                      commitIndex[i]))
    /\ UNCHANGED <<persistVars, diskVars, nodeVars, leaderVars, historyVars>>

\* F# twin: Actions.HandleAppendEntriesRequest -- etcd handleAppendEntries
\* (after stepFollower/stepCandidate recognise the leader).  Below the
\* commit index: acknowledge the commit index.  Matching previous entry:
\* append (truncating a conflicting suffix), commit up to min(commit,
\* last new index), acknowledge the last new index.  Otherwise reject with
\* the hint (RejectHint, LogTerm) of findConflictByTerm.  Responses wait for
\* Persist.  A truncation waits while an acknowledgement of an entry it
\* removes is still queued (Acks): it would leave after the write that
\* removes the entry (etcd's storage writes are ordered).
HandleAppendEntriesRequest(i, m) ==
    /\ m.type = "App" /\ m.term <= currentTerm[i]
    /\ IF m.term < currentTerm[i]
       THEN /\ StaleReply(i, m)
            /\ UNCHANGED <<persistVars, hardState, stableIndex, nodeVars, leaderVars,
                           historyVars>>
       ELSE
       /\ role[i] # "Leader"
       /\ BecomeFollower(i, currentTerm[i], m.from)
       /\ IF m.prevIndex < commitIndex[i] THEN
             /\ ReplyAfterPersist(i, AppResp(i, m.from, currentTerm[i], FALSE,
                                             commitIndex[i], 0, 0), m)
             /\ UNCHANGED <<log, stableIndex, commitIndex, committed>>
          ELSE IF TermAt(i, m.prevIndex) = m.prevTerm THEN
             LET c       == FindConflict(i, m.prevIndex, m.entries)
                 lastNew == m.prevIndex + Len(m.entries)
                 newLog  == IF c = 0 THEN log[i]
                            ELSE SubSeq(log[i], 1, c - 1 - snapshotIndex[i])
                                 \o SubSeq(m.entries, c - m.prevIndex, Len(m.entries))
                 newCommit == Max({commitIndex[i], Min({m.commit, lastNew})})
             IN /\ (c # 0 /\ c <= LastIndex(i)) => Acks(i) < c
                /\ log' = [log EXCEPT ![i] = newLog]
                /\ stableIndex' = [stableIndex EXCEPT ![i] = IF c = 0 THEN @ ELSE Min({@, c - 1})]
                /\ commitIndex' = [commitIndex EXCEPT ![i] = newCommit]
                /\ committed' = committed \cup NewlyCommitted(i, newLog, newCommit)
                /\ ReplyAfterPersist(i, AppResp(i, m.from, currentTerm[i], FALSE, lastNew, 0, 0), m)
          ELSE
             LET h == FindConflictByTerm(i, Min({m.prevIndex, LastIndex(i)}), m.prevTerm)
             IN /\ ReplyAfterPersist(i, AppResp(i, m.from, currentTerm[i], TRUE,
                                                m.prevIndex, h[1], h[2]), m)
                /\ UNCHANGED <<log, stableIndex, commitIndex, committed>>
       /\ UNCHANGED <<snapshotIndex, snapshotTerm, snapshotConfig, hardState, applied, config,
                      elections, commitRecords, votesSent, reads, restartCount, confCount,
                      readCount>>

\* F# twin: Actions.HandleAppendEntriesResponse -- MsgAppResp at the leader
\* (stepLeader): the follower is recently active; on success Match/Next
\* advance (MaybeUpdate) and a pending transfer sends MsgTimeoutNow once
\* the transferee is up to date; on a rejection of the probe at Next-1 the
\* leader backs off using the hint (findConflictByTerm on its own log, then
\* MaybeDecrTo: Next = max(min(rejected, hint+1), Match+1)).
HandleAppendEntriesResponse(i, m) ==
    /\ m.type = "AppResp" /\ m.term <= currentTerm[i]
    /\ IF m.term < currentTerm[i] \/ role[i] # "Leader" \/ m.from \notin Members(config[i])
       THEN /\ Discard(m)
            /\ UNCHANGED <<recentActive, matchIndex, nextIndex>>
       ELSE
       /\ recentActive' = [recentActive EXCEPT ![i] = @ \cup {m.from}]
       /\ IF m.reject
          THEN /\ LET probe == IF m.hintTerm > 0
                               THEN FindConflictByTerm(i, m.hint, m.hintTerm)[1]
                               ELSE m.hint
                  IN nextIndex' = [nextIndex EXCEPT ![i][m.from] =
                        IF m.index = @ - 1
                        THEN Max({Min({m.index, probe + 1}), matchIndex[i][m.from] + 1})
                        ELSE @]
               /\ Discard(m)
               /\ UNCHANGED matchIndex
          ELSE LET newMatch == Max({matchIndex[i][m.from], m.index})
               IN /\ matchIndex' = [matchIndex EXCEPT ![i][m.from] = newMatch]
                  /\ nextIndex'  = [nextIndex EXCEPT ![i][m.from] = Max({@, m.index + 1})]
                  /\ IF leadTransferee[i] = m.from /\ newMatch = LastIndex(i)
                     THEN Reply(TimeoutNowReq(i, m.from, currentTerm[i]), m)
                     ELSE Discard(m)
    /\ UNCHANGED <<persistVars, diskVars, nodeVars, votesGranted, pendingConfIndex,
                   leadTransferee, readPending, historyVars>>

\* F# twin: Actions.Heartbeat -- etcd sendHeartbeat: MsgHeartbeat with
\* commit = min(Match, committed) and the context of the pending ReadIndex.
Heartbeat(i, j) ==
    /\ role[i] = "Leader" /\ j # i /\ j \in Members(config[i])
    /\ Send(HeartbeatReq(i, j, currentTerm[i],
              IF Mutant = "HeartbeatFullCommit" THEN commitIndex[i]
              ELSE Min({matchIndex[i][j], commitIndex[i]}),
              readPending[i].id))
    /\ UNCHANGED <<persistVars, diskVars, nodeVars, leaderVars, historyVars>>

\* F# twin: Actions.HandleHeartbeat -- etcd handleHeartbeat: recognise the
\* leader, commitTo(m.Commit) (commit only grows), answer with the context.
HandleHeartbeat(i, m) ==
    /\ m.type = "Heartbeat" /\ m.term <= currentTerm[i]
    /\ IF m.term < currentTerm[i]
       THEN /\ StaleReply(i, m)
            /\ UNCHANGED <<persistVars, hardState, stableIndex, nodeVars, leaderVars,
                           historyVars>>
       ELSE /\ role[i] # "Leader"
            /\ BecomeFollower(i, currentTerm[i], m.from)
            /\ LET newCommit == Max({commitIndex[i], m.commit}) IN
               /\ commitIndex' = [commitIndex EXCEPT ![i] = newCommit]
               /\ committed' = committed \cup NewlyCommitted(i, log[i], newCommit)
            /\ Reply(HeartbeatResp(i, m.from, currentTerm[i], m.ctx), m)
            /\ UNCHANGED <<log, snapshotIndex, snapshotTerm, snapshotConfig, diskVars,
                           applied, config, elections, commitRecords, votesSent, reads,
                           restartCount, confCount, readCount>>

\* F# twin: Actions.HandleHeartbeatResponse -- MsgHeartbeatResp at the
\* leader: recently active; an acknowledgement of the pending ReadIndex.
HandleHeartbeatResponse(i, m) ==
    /\ m.type = "HeartbeatResp" /\ m.term <= currentTerm[i]
    /\ IF m.term = currentTerm[i] /\ role[i] = "Leader" /\ m.from \in Members(config[i])
       THEN /\ recentActive' = [recentActive EXCEPT ![i] = @ \cup {m.from}]
            /\ readPending' = [readPending EXCEPT ![i] =
                  IF m.ctx # 0 /\ m.ctx = readPending[i].id
                  THEN [readPending[i] EXCEPT !.acks = readPending[i].acks \cup {m.from}]
                  ELSE readPending[i]]
       ELSE UNCHANGED <<recentActive, readPending>>
    /\ Discard(m)
    /\ UNCHANGED <<persistVars, diskVars, nodeVars, votesGranted, matchIndex, nextIndex,
                   pendingConfIndex, leadTransferee, historyVars>>

\* F# twin: Actions.AdvanceCommitIndex -- etcd maybeCommit: the index a
\* quorum of voters holds durably (the leader counts its own disk) is
\* committed only if it is of the leader's current term.
AdvanceCommitIndex(i) ==
    /\ role[i] = "Leader"
    /\ LET mci == QuorumIndex(i) IN
       /\ mci > commitIndex[i]
       /\ TermAt(i, mci) = currentTerm[i] \/ Mutant = "CommitOldTerm"
       /\ commitIndex' = [commitIndex EXCEPT ![i] = mci]
       /\ committed' = committed \cup NewlyCommitted(i, log[i], mci)
       /\ commitRecords' = commitRecords \cup
             {[index |-> mci, term |-> TermAt(i, mci), cterm |-> currentTerm[i], cfg |-> config[i]]}
    /\ UNCHANGED <<persistVars, diskVars, role, leader, heard, applied, config, leaderVars,
                   network, elections, votesSent, reads, restartCount, confCount, readCount>>

-----------------------------------------------------------------------------
(***************************** SNAPSHOTS AND COMPACTION ********************)

\* F# twin: Actions.SendSnapshot -- etcd maybeSendSnapshot: the entries the
\* follower needs (from Next) are compacted, so send the snapshot.
SendSnapshot(i, j) ==
    /\ role[i] = "Leader" /\ j # i /\ j \in Members(config[i])
    /\ nextIndex[i][j] <= snapshotIndex[i]
    /\ Send(SnapReq(i, j, currentTerm[i], snapshotIndex[i], snapshotTerm[i], snapshotConfig[i]))
    /\ UNCHANGED <<persistVars, diskVars, nodeVars, leaderVars, historyVars>>

\* F# twin: Actions.HandleSnapshot -- etcd handleSnapshot/restore.  Ignored
\* (answering the commit index) if not newer than the commit index or if the
\* node is not in the snapshot's configuration; fast-forwards the commit
\* index if the log already has the snapshot's last entry; otherwise the
\* log is replaced by the snapshot, which becomes the node's configuration
\* and state machine.  The restored snapshot is durable at once (it only
\* holds committed entries); as for truncation, it waits while an
\* acknowledgement of an entry it discards is queued.
HandleSnapshot(i, m) ==
    /\ m.type = "Snap" /\ m.term <= currentTerm[i]
    /\ IF m.term < currentTerm[i]
       THEN /\ Discard(m)
            /\ UNCHANGED <<persistVars, diskVars, nodeVars, leaderVars, historyVars>>
       ELSE
       /\ role[i] # "Leader"
       /\ BecomeFollower(i, currentTerm[i], m.from)
       /\ IF m.snapIndex <= commitIndex[i] \/ i \notin Members(m.snapConfig) THEN
             /\ ReplyAfterPersist(i, AppResp(i, m.from, currentTerm[i], FALSE,
                                             commitIndex[i], 0, 0), m)
             /\ UNCHANGED <<log, snapshotIndex, snapshotTerm, snapshotConfig, stableIndex,
                            commitIndex, applied, config, committed>>
          ELSE IF TermAt(i, m.snapIndex) = m.snapTerm THEN
             /\ commitIndex' = [commitIndex EXCEPT ![i] = m.snapIndex]
             /\ committed' = committed \cup NewlyCommitted(i, log[i], m.snapIndex)
             /\ ReplyAfterPersist(i, AppResp(i, m.from, currentTerm[i], FALSE,
                                             m.snapIndex, 0, 0), m)
             /\ UNCHANGED <<log, snapshotIndex, snapshotTerm, snapshotConfig, stableIndex,
                            applied, config>>
          ELSE
             /\ Acks(i) <= m.snapIndex
             /\ log'            = [log EXCEPT ![i] = << >>]
             /\ snapshotIndex'  = [snapshotIndex EXCEPT ![i] = m.snapIndex]
             /\ snapshotTerm'   = [snapshotTerm EXCEPT ![i] = m.snapTerm]
             /\ snapshotConfig' = [snapshotConfig EXCEPT ![i] = m.snapConfig]
             /\ stableIndex'    = [stableIndex EXCEPT ![i] = m.snapIndex]
             /\ commitIndex'    = [commitIndex EXCEPT ![i] = m.snapIndex]
             /\ applied'        = [applied EXCEPT ![i] = m.snapIndex]
             /\ config'         = [config EXCEPT ![i] = m.snapConfig]
             /\ committed' = committed \cup {<<m.snapIndex, m.snapTerm>>}
             /\ ReplyAfterPersist(i, AppResp(i, m.from, currentTerm[i], FALSE,
                                             m.snapIndex, 0, 0), m)
       /\ UNCHANGED <<hardState, elections, commitRecords, votesSent, reads,
                      restartCount, confCount, readCount>>

\* F# twin: Actions.CompactLog -- the application compacts Storage up to an
\* applied, durable index n: the snapshot records n's term and the
\* configuration in force at n.
CompactLog(i, n) ==
    /\ snapshotIndex[i] < n /\ n <= applied[i] /\ n <= stableIndex[i]
    /\ snapshotTerm'   = [snapshotTerm EXCEPT ![i] = TermAt(i, n)]
    /\ snapshotConfig' = [snapshotConfig EXCEPT ![i] = ConfigAt(i, n)]
    /\ snapshotIndex'  = [snapshotIndex EXCEPT ![i] = n]
    /\ log' = [log EXCEPT ![i] = SubSeq(@, n - snapshotIndex[i] + 1, Len(@))]
    /\ UNCHANGED <<currentTerm, votedFor, diskVars, nodeVars, leaderVars, network, historyVars>>

-----------------------------------------------------------------------------
(***************************** DURABILITY AND APPLICATION ******************)

\* The HardState a Ready would carry now.
CurrentHardState(i) == [term |-> currentTerm[i], vote |-> votedFor[i], commit |-> commitIndex[i]]

\* F# twin: Actions.Persist -- one Ready handled: HardState and unstable
\* entries are written (stableTo, MsgStorageAppendResp), then the responses
\* that waited for them are sent.
Persist(i) ==
    /\ \/ hardState[i] # CurrentHardState(i)
       \/ stableIndex[i] < LastIndex(i)
       \/ outbox[i] # NoMsgs
    /\ hardState'   = [hardState EXCEPT ![i] = CurrentHardState(i)]
    /\ stableIndex' = [stableIndex EXCEPT ![i] = LastIndex(i)]
    /\ outbox'      = [outbox EXCEPT ![i] = NoMsgs]
    /\ network'     = BagSum(network, outbox[i])
    /\ votesSent'   = votesSent \cup
          {<<i, m.term, m.to>> : m \in {x \in DOMAIN outbox[i] : x.type = "VoteResp" /\ ~x.reject}}
    /\ UNCHANGED <<persistVars, nodeVars, leaderVars, elections, committed, commitRecords,
                   reads, restartCount, confCount, readCount>>

\* F# twin: Actions.Apply -- the next committed entry, a normal one, is
\* applied (appliedTo).
Apply(i) ==
    /\ applied[i] < commitIndex[i]
    /\ Entry(i, applied[i] + 1).type = "normal"
    /\ applied' = [applied EXCEPT ![i] = @ + 1]
    /\ UNCHANGED <<persistVars, diskVars, role, leader, heard, commitIndex, config,
                   leaderVars, network, historyVars>>

-----------------------------------------------------------------------------
(***************************** LEADERSHIP TRANSFER AND READS **************)

\* F# twin: Actions.TransferLeadership -- MsgTransferLeader at the leader:
\* remember the transferee (proposals are dropped meanwhile) and send it
\* MsgTimeoutNow at once if its log is up to date (else on catching up).
TransferLeadership(i, j) ==
    /\ role[i] = "Leader" /\ j # i /\ j \in Voters(config[i])
    /\ leadTransferee[i] # j
    /\ leadTransferee' = [leadTransferee EXCEPT ![i] = j]
    /\ IF matchIndex[i][j] = LastIndex(i)
       THEN Send(TimeoutNowReq(i, j, currentTerm[i]))
       ELSE UNCHANGED network
    /\ UNCHANGED <<persistVars, diskVars, nodeVars, votesGranted, matchIndex, nextIndex,
                   recentActive, pendingConfIndex, readPending, historyVars>>

\* F# twin: Actions.HandleTimeoutNow -- MsgTimeoutNow at a follower that
\* may campaign: campaign(campaignTransfer) at once, without pre-vote and
\* overriding the voters' leader stickiness.
HandleTimeoutNow(i, m) ==
    /\ m.type = "TimeoutNow" /\ m.term <= currentTerm[i]
    /\ IF m.term = currentTerm[i] /\ role[i] = "Follower" /\ CanCampaign(i)
       THEN Campaign(i, TRUE, WithoutMessage(m, network))
       ELSE /\ Discard(m)
            /\ UNCHANGED <<currentTerm, votedFor, role, leader, heard, leaderVars>>
    /\ UNCHANGED <<log, snapshotIndex, snapshotTerm, snapshotConfig, diskVars,
                   commitIndex, applied, config, historyVars>>

\* F# twin: Actions.ReadIndex -- MsgReadIndex at the leader, safe mode: only
\* once an entry of its term is committed (etcd postpones it until then);
\* the read index is the commit index; heartbeats carry its context.
\* mustSee (history) is the largest index committed anywhere so far.
ReadIndex(i) ==
    /\ role[i] = "Leader" /\ readPending[i] = NoRead
    /\ TermAt(i, commitIndex[i]) = currentTerm[i] \/ Mutant = "ReadNoTermCommit"
    /\ readPending' = [readPending EXCEPT ![i] =
          [id |-> readCount + 1, index |-> commitIndex[i], acks |-> {i},
           mustSee |-> MaxCommitted]]
    /\ readCount' = readCount + 1
    /\ UNCHANGED <<persistVars, diskVars, nodeVars, votesGranted, matchIndex, nextIndex,
                   recentActive, pendingConfIndex, leadTransferee, network, elections,
                   committed, commitRecords, votesSent, reads, restartCount, confCount>>

\* F# twin: Actions.HandleReadIndexQuorum -- readOnly.recvAck/advance: a
\* quorum acknowledged the heartbeat carrying the request's context, so the
\* leader was still leader after the request arrived: answer it.
HandleReadIndexQuorum(i) ==
    /\ role[i] = "Leader" /\ readPending[i] # NoRead
    /\ IsQuorum(readPending[i].acks, config[i]) \/ Mutant = "ReadNoQuorum"
    /\ reads' = reads \cup {[index |-> readPending[i].index, mustSee |-> readPending[i].mustSee]}
    /\ readPending' = [readPending EXCEPT ![i] = NoRead]
    /\ UNCHANGED <<persistVars, diskVars, nodeVars, votesGranted, matchIndex, nextIndex,
                   recentActive, pendingConfIndex, leadTransferee, network, elections,
                   committed, commitRecords, votesSent, restartCount, confCount, readCount>>

-----------------------------------------------------------------------------
(***************************** ENVIRONMENT *********************************)

\* F# twin: Simulator.Restart -- a crash and restart: the durable HardState,
\* durable entries and the snapshot come back; volatile state, unsent
\* responses and undurable entries are lost.  The commit index restarts at
\* HardState.Commit (at the snapshot if that is later: a restored snapshot is
\* durable at once), applied and the configuration at the snapshot (the
\* application re-applies the later committed entries, conf changes included).
RestoredVote(i) == IF Mutant = "VoteNotPersisted" THEN Nil ELSE hardState[i].vote
RestoredCommit(i) == IF hardState[i].commit > snapshotIndex[i] THEN hardState[i].commit
                     ELSE snapshotIndex[i]

\* The restart changes something (a restart that would not is a stutter).
RestartChanges(i) ==
    \/ role[i] # "Follower" \/ leader[i] # Nil \/ heard[i]
    \/ commitIndex[i] # RestoredCommit(i) \/ applied[i] # snapshotIndex[i]
    \/ config[i] # snapshotConfig[i] \/ outbox[i] # NoMsgs
    \/ stableIndex[i] < LastIndex(i)
    \/ currentTerm[i] # hardState[i].term \/ votedFor[i] # RestoredVote(i)

Restart(i) ==
    /\ RestartChanges(i)
    /\ currentTerm' = [currentTerm EXCEPT ![i] = hardState[i].term]
    /\ votedFor'    = [votedFor EXCEPT ![i] = RestoredVote(i)]
    /\ log'         = [log EXCEPT ![i] = SubSeq(@, 1, stableIndex[i] - snapshotIndex[i])]
    /\ outbox'      = [outbox EXCEPT ![i] = NoMsgs]
    /\ role'        = [role EXCEPT ![i] = "Follower"]
    /\ leader'      = [leader EXCEPT ![i] = Nil]
    /\ heard'       = [heard EXCEPT ![i] = FALSE]
    /\ commitIndex' = [commitIndex EXCEPT ![i] = RestoredCommit(i)]
    /\ applied'     = [applied EXCEPT ![i] = snapshotIndex[i]]
    /\ config'      = [config EXCEPT ![i] = snapshotConfig[i]]
    /\ ResetLeaderState(i)
    /\ restartCount' = restartCount + 1
    /\ UNCHANGED <<snapshotIndex, snapshotTerm, snapshotConfig, hardState, stableIndex,
                   network, elections, committed, commitRecords, votesSent, reads,
                   confCount, readCount>>

\* F# twin: Simulator.Drop -- the network loses a message.
DropMessage(m) ==
    /\ Discard(m)
    /\ UNCHANGED <<persistVars, diskVars, nodeVars, leaderVars, historyVars>>

\* F# twin: Simulator.Duplicate -- the network duplicates a message.
DuplicateMessage(m) ==
    /\ Send(m)
    /\ UNCHANGED <<persistVars, diskVars, nodeVars, leaderVars, historyVars>>

-----------------------------------------------------------------------------
(***************************** NEXT AND SPEC *******************************)

\* Delivery of message m to its addressee (reordering: any message in the bag).
Receive(m) ==
    LET i == m.to IN
    \/ UpdateTerm(i, m)
    \/ HandleRequestVoteRequest(i, m)
    \/ HandleRequestVoteResponse(i, m)
    \/ HandleAppendEntriesRequest(i, m)
    \/ HandleAppendEntriesResponse(i, m)
    \/ HandleHeartbeat(i, m)
    \/ HandleHeartbeatResponse(i, m)
    \/ HandleSnapshot(i, m)
    \/ HandleTimeoutNow(i, m)

Next ==
    \/ \E i \in Server : Timeout(i)
    \/ \E i \in Server : BecomeCandidate(i)
    \/ \E i \in Server : BecomeLeader(i)
    \/ \E i \in Server : CheckQuorum(i)
    \/ \E i \in Server : ForgetLeader(i)
    \/ \E i \in Server, v \in Value : ClientRequest(i, v)
    \/ \E i \in Server, cc \in ConfChanges : ProposeConfChange(i, cc)
    \/ \E i \in Server : AutoLeaveJoint(i)
    \/ \E i \in Server : ApplyConfChange(i)
    \/ \E i, j \in Server : AppendEntries(i, j)
    \/ \E i, j \in Server : Heartbeat(i, j)
    \/ \E i, j \in Server : SendSnapshot(i, j)
    \/ \E i \in Server : AdvanceCommitIndex(i)
    \/ \E i \in Server : \E n \in 1..LastIndex(i) : CompactLog(i, n)
    \/ \E i \in Server : Persist(i)
    \/ \E i \in Server : Apply(i)
    \/ \E i, j \in Server : TransferLeadership(i, j)
    \/ \E i \in Server : ReadIndex(i)
    \/ \E i \in Server : HandleReadIndexQuorum(i)
    \/ \E i \in Server : Restart(i)
    \/ \E m \in DOMAIN network : Receive(m)
    \/ \E m \in DOMAIN network : DropMessage(m)
    \/ \E m \in DOMAIN network : DuplicateMessage(m)

Spec == Init /\ [][Next]_vars

-----------------------------------------------------------------------------
(***************************** INVARIANTS **********************************)

Roles == {"Follower", "PreCandidate", "Candidate", "Leader"}
ConfigType == [voters: SUBSET Server, outgoing: SUBSET Server, learners: SUBSET Server,
               learnersNext: SUBSET Server, autoLeave: BOOLEAN]
\* (the cc field is checked by kind only: membership in a set of records is costly)
EntryOK(e) == /\ e.term \in Nat /\ e.type \in {"normal", "conf"} /\ e.value \in Value \cup {Nil}
              /\ e.cc.kind \in {"none", "simple", "joint", "leave"}
MsgTypes == {"Vote", "PreVote", "VoteResp", "PreVoteResp", "App", "AppResp",
             "Heartbeat", "HeartbeatResp", "Snap", "TimeoutNow"}

\* TypeOK: every variable has the expected shape.
TypeOK ==
    /\ currentTerm \in [Server -> Nat]
    /\ votedFor \in [Server -> Server \cup {Nil}]
    /\ \A i \in Server : \A k \in 1..Len(log[i]) : EntryOK(log[i][k])
    /\ snapshotIndex \in [Server -> Nat] /\ snapshotTerm \in [Server -> Nat]
    /\ snapshotConfig \in [Server -> ConfigType]
    /\ hardState \in [Server -> [term: Nat, vote: Server \cup {Nil}, commit: Nat]]
    /\ stableIndex \in [Server -> Nat]
    /\ \A i \in Server : \A m \in DOMAIN outbox[i] :
          m.type \in MsgTypes /\ m.from = i /\ outbox[i][m] \in Nat \ {0}
    /\ role \in [Server -> Roles]
    /\ leader \in [Server -> Server \cup {Nil}]
    /\ heard \in [Server -> BOOLEAN]
    /\ commitIndex \in [Server -> Nat] /\ applied \in [Server -> Nat]
    /\ config \in [Server -> ConfigType]
    /\ votesGranted \in [Server -> SUBSET Server]
    /\ matchIndex \in [Server -> [Server -> Nat]]
    /\ nextIndex \in [Server -> [Server -> Nat]]
    /\ recentActive \in [Server -> SUBSET Server]
    /\ pendingConfIndex \in [Server -> Nat]
    /\ leadTransferee \in [Server -> Server \cup {Nil}]
    /\ \A i \in Server : readPending[i].acks \subseteq Server
    /\ \A m \in DOMAIN network : /\ m.type \in MsgTypes /\ m.from \in Server
                                 /\ m.to \in Server /\ network[m] \in Nat \ {0}

\* IndexOrder: snapshot <= durable prefix, applied <= commit <= last index
\* (etcd panics on a commit index beyond the log).
IndexOrder ==
    \A i \in Server :
        /\ snapshotIndex[i] <= applied[i]
        /\ applied[i] <= commitIndex[i]
        /\ commitIndex[i] <= LastIndex(i)
        /\ snapshotIndex[i] <= stableIndex[i] /\ stableIndex[i] <= LastIndex(i)

\* ElectionSafety: at most one leader is ever elected in a term (history).
ElectionSafety ==
    \A e1, e2 \in elections : e1.term = e2.term => e1.leader = e2.leader

\* LogMatching: two logs with an entry of the same index and term agree on
\* every entry up to that index (where neither is compacted).
LogMatching ==
    \A i, j \in Server : i # j =>
        \A k \in 1..Len(log[i]) :
            \* n is an index in both logs (after both snapshots, up to both ends)
            LET n == snapshotIndex[i] + k
                kj == n - snapshotIndex[j]
            IN (kj >= 1 /\ kj <= Len(log[j]) /\ log[i][k].term = log[j][kj].term) =>
                  \* by induction on n this is the whole prefix up to n
                  /\ log[i][k] = log[j][kj]
                  /\ TermAt(i, n - 1) = TermAt(j, n - 1)

\* LeaderCompleteness: a leader's log holds every entry committed by a
\* leader of its term or an earlier one (unless compacted into its snapshot).
LeaderCompleteness ==
    \A i \in Server : role[i] = "Leader" =>
        \A r \in commitRecords : r.cterm <= currentTerm[i] =>
            r.index < snapshotIndex[i] \/ TermAt(i, r.index) = r.term

\* StateMachineSafety: no two nodes ever consider different entries
\* committed (hence applied) at the same index, and every applied entry
\* still in a log is the committed one.
StateMachineSafety ==
    /\ Cardinality({p[1] : p \in committed}) = Cardinality(committed)  \* one term per index
    /\ \A i \in Server : \A n \in (snapshotIndex[i] + 1)..applied[i] :
          <<n, TermAt(i, n)>> \in committed

\* CommittedIsDurable: each commit a leader made is still on the disks (log
\* prefix or snapshot) of a quorum of the configuration it was made in, so
\* no restart can lose it.
DurablyHolds(s, n, t) ==
    n <= snapshotIndex[s] \/ (n <= stableIndex[s] /\ TermAt(s, n) = t)
CommittedIsDurable ==
    \A r \in commitRecords :
        TrueIsQuorum({s \in Server : DurablyHolds(s, r.index, r.term)}, r.cfg)

\* VoteOnce: no node grants (sends) votes to two candidates in one term,
\* across restarts (history of votes that left the node).
VoteOnce ==
    \A v1, v2 \in votesSent : v1[1] = v2[1] /\ v1[2] = v2[2] => v1[3] = v2[3]

\* ElectedByQuorum: every election was won with the votes of a quorum of
\* the winner's configuration (voters only; both halves when joint).
ElectedByQuorum ==
    \A e \in elections : TrueIsQuorum(e.votes, e.cfg)

\* LearnersNeverVote: no learner's vote was ever counted in an election,
\* and only voters campaign or lead.
LearnersNeverVote ==
    /\ \A e \in elections : e.votes \cap Learners(e.cfg) = {}
    /\ \A i \in Server : role[i] # "Follower" => i \in Voters(config[i])

\* QuorumIntersection: for every conf entry in a log, any two quorums of the
\* configuration before it intersect, likewise after it (a joint config needs
\* both halves), and every quorum before intersects every quorum after (the
\* overlap joint consensus and one-voter simple changes guarantee).  The
\* bootstrap configuration is a plain majority, whose quorums intersect.
QuorumsIntersect(c1, c2) == \A q1 \in Quorums(c1), q2 \in Quorums(c2) : q1 \cap q2 # {}

\* Only voters matter to quorums: a configuration's "shape" is <<voters, outgoing>>.
\* Whether a change from one shape to another is safe (the three intersections
\* above) is tabulated at the constant level, so TLC computes it once (64 x 64
\* pairs of shapes for 3 servers) instead of in every state.
Shape(c) == <<c.voters, c.outgoing>>
OfShape(sh) == [voters |-> sh[1], outgoing |-> sh[2], learners |-> {}, learnersNext |-> {},
                autoLeave |-> FALSE]
Shapes == (SUBSET Server) \X (SUBSET Server)
ChangeSafe ==
    [b \in Shapes |-> [a \in Shapes |->
        LET before == OfShape(b)
            after  == OfShape(a)
        IN QuorumsIntersect(before, before) /\ QuorumsIntersect(after, after)
           /\ QuorumsIntersect(before, after)]]

\* The conf entries of log lg from position k on are safe, c being the
\* configuration in force before position k: one pass over the log, carrying
\* the configuration (what ConfigAt computes for each index).
RECURSIVE ConfEntriesSafe(_, _, _)
ConfEntriesSafe(lg, k, c) ==
    \/ k > Len(lg)
    \/ IF lg[k].type = "conf"
       THEN LET after == ApplyCC(c, lg[k].cc)
            IN ChangeSafe[Shape(c)][Shape(after)] /\ ConfEntriesSafe(lg, k + 1, after)
       ELSE ConfEntriesSafe(lg, k + 1, c)

QuorumIntersection ==
    \A i \in Server : ConfEntriesSafe(log[i], 1, snapshotConfig[i])

\* ReadIndexLinearizable: a read answered at index r.index never misses a
\* write committed (anywhere) before the read was issued.
ReadIndexLinearizable == \A r \in reads : r.index >= r.mustSee

\* MonotonicTerm (action property): the durable term never decreases; the
\* in-memory term only falls back to the durable one on a restart.
MonotonicTerm ==
    [][\A i \in Server :
         /\ hardState'[i].term >= hardState[i].term
         /\ \/ currentTerm'[i] >= currentTerm[i]
            \/ restartCount' = restartCount + 1 /\ currentTerm'[i] = hardState[i].term]_vars

\* MonotonicCommit (action property): the durable commit index never
\* decreases; the in-memory one only falls back to the durable one (or the
\* snapshot) on a restart.
MonotonicCommit ==
    [][\A i \in Server :
         /\ hardState'[i].commit >= hardState[i].commit
         /\ \/ commitIndex'[i] >= commitIndex[i]
            \/ restartCount' = restartCount + 1 /\ commitIndex'[i] = RestoredCommit(i)]_vars

=============================================================================
