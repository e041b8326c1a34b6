------------------------------- MODULE MCRaft -------------------------------
(***************************************************************************)
(* Finite models of Raft.tla for TLC: bounds on terms, log length,        *)
(* messages in flight, restarts, conf changes, reads and compaction, and   *)
(* the symmetry of the server ids.                                         *)
(***************************************************************************)
EXTENDS Raft, Bags

CONSTANTS
    MaxTerm,         \* no node's term goes beyond this
    MaxLogLen,       \* no log (snapshot included) goes beyond this index
    MaxMsgs,         \* messages in the network (copies counted)
    MaxRestarts,     \* restarts in a behaviour
    MaxConfChanges,  \* conf changes proposed in a behaviour (auto-leave not counted)
    MaxReads,        \* ReadIndex requests in a behaviour
    MaxSnapshot,     \* no snapshot (compaction or restore) beyond this index
    MaxCopies,       \* copies of one message in the network (1: no duplication)
    AllowTransfer,   \* FALSE prunes leadership transfers (steers mutant runs)
    AllowedMsgs,     \* message types that may be in flight (the others are pruned)
    MaxDirty,        \* servers with unpersisted state or unsent responses at once
    AllowApply,      \* FALSE prunes applying entries (steers mutant runs)
    StartState,      \* "init" (Init), or a mid-scenario state below for deep mutants
    S1, S2, S3,      \* the servers by name (only the mid-scenario states use them)
    MaxDepth,        \* explore behaviours of at most this many steps (0: no bound)
    Plan1, Plan2, Plan3, Plan4
                     \* the servers that may campaign for terms 1..4 (Server: anyone;
                     \* smaller sets steer the mutant runs); later terms are free

\* The conf changes a leader may propose.  Ops on any server; ValidCC
\* removes those etcd would refuse in the current configuration.
Ops == {"AddNode", "AddLearner", "Remove"}
Singles == [op : Ops, node : Server]
SimpleCCs == {[kind |-> "simple", changes |-> {s}, autoLeave |-> FALSE] : s \in Singles}
\* Joint changes of one server, auto-leave or not.
JointOneCCs == {[kind |-> "joint", changes |-> {s}, autoLeave |-> a] : s \in Singles, a \in BOOLEAN}
\* Joint changes of two different servers.
JointTwoCCs == {[kind |-> "joint", changes |-> p, autoLeave |-> a] :
                   p \in {q \in SUBSET Singles : Cardinality(q) = 2 /\
                              \A x, y \in q : x # y => x.node # y.node},
                   a \in BOOLEAN}
LeaveCCs == {LeaveJointCC}

\* ci: simple changes, joint changes of one server, and the explicit leave.
MCConfChangesSmall == SimpleCCs \cup JointOneCCs \cup LeaveCCs
\* deep: also joint changes of two servers.
MCConfChangesFull == SimpleCCs \cup JointOneCCs \cup JointTwoCCs \cup LeaveCCs

\* Messages in flight: the network's copies (BagCardinality is built into TLC)
\* plus the responses waiting in the outboxes for Persist (an outbox holds only
\* its server's messages, so the outboxes together are one bag).
InFlight == BagCardinality(network)
            + BagCardinality([m \in UNION {DOMAIN outbox[i] : i \in Server} |-> outbox[m.from][m]])

PlanFor(t) == CASE t = 1 -> Plan1 [] t = 2 -> Plan2 [] t = 3 -> Plan3 [] t = 4 -> Plan4
                [] OTHER -> Server

\* Only the planned servers campaign (pre-candidates for the next term).
PlanFollowed ==
    \A i \in Server :
        /\ role[i] \in {"Candidate", "Leader"} => i \in PlanFor(currentTerm[i])
        /\ role[i] = "PreCandidate" => i \in PlanFor(currentTerm[i] + 1)

\* Server i has state that Persist has not written yet.
Dirty(i) == \/ outbox[i] # NoMsgs \/ stableIndex[i] < LastIndex(i)
            \/ hardState[i] # CurrentHardState(i)

\* Constant-level (evaluated once): is any steering knob in use?
Steered == \/ AllowedMsgs # MsgTypes \/ MaxDirty < Cardinality(Server) \/ ~AllowApply
           \/ ~AllowTransfer \/ MaxCopies < MaxMsgs
           \/ \E t \in 1..4 : PlanFor(t) # Server

\* The steering knobs (all off in the ci and deep models).
SteeringConstraint ==
    /\ \A m \in DOMAIN network : network[m] <= MaxCopies /\ m.type \in AllowedMsgs
    /\ Cardinality({i \in Server : Dirty(i)}) <= MaxDirty
    /\ AllowApply \/ \A i \in Server : applied[i] = snapshotIndex[i]
    /\ AllowTransfer \/ \A i \in Server : leadTransferee[i] = Nil
    /\ PlanFollowed

\* The bounds of the model, a predicate on one state.
InBounds ==
    /\ \A i \in Server : currentTerm[i] <= MaxTerm /\ LastIndex(i) <= MaxLogLen
                         /\ snapshotIndex[i] <= MaxSnapshot
    /\ restartCount <= MaxRestarts
    /\ confCount <= MaxConfChanges
    /\ readCount <= MaxReads
    /\ InFlight <= MaxMsgs
    /\ ~Steered \/ SteeringConstraint

-----------------------------------------------------------------------------
(* Mid-scenario start states.  BFS from Init cannot reach the deep         *)
(* counterexamples of some mutants (about 40 steps) in minutes, so their   *)
(* runs start from a state of the real spec reachable as described.  All   *)
(* messages have been delivered or lost and everything is persisted.       *)

E(t) == NormalEntry(t, Nil)   \* the empty entry a leader of term t appends
Elected(t, l, vs) == [term |-> t, leader |-> l, votes |-> vs, cfg |-> InitConfig]

\* The common shape of a start state; the arguments are per-server functions.
StartWith(term, vote, rl, ld, lg, cmt, nxt, mtch, pci, rec, el, cd, crec, vs) ==
    /\ currentTerm = term /\ votedFor = vote /\ log = lg
    /\ snapshotIndex = [i \in Server |-> 0] /\ snapshotTerm = [i \in Server |-> 0]
    /\ snapshotConfig = [i \in Server |-> InitConfig]
    /\ hardState = [i \in Server |-> [term |-> term[i], vote |-> vote[i], commit |-> cmt[i]]]
    /\ stableIndex = [i \in Server |-> Len(lg[i])]
    /\ outbox = [i \in Server |-> NoMsgs]
    /\ role = rl /\ leader = ld /\ heard = [i \in Server |-> ld[i] # Nil]
    /\ commitIndex = cmt /\ applied = [i \in Server |-> 0]
    /\ config = [i \in Server |-> InitConfig]
    /\ votesGranted = [i \in Server |-> {}]
    /\ matchIndex = mtch /\ nextIndex = nxt
    /\ recentActive = rec /\ pendingConfIndex = pci
    /\ leadTransferee = [i \in Server |-> Nil] /\ readPending = [i \in Server |-> NoRead]
    /\ network = [m \in {} |-> 0]
    /\ elections = el /\ committed = cd /\ commitRecords = crec /\ votesSent = vs
    /\ reads = {} /\ restartCount = 0 /\ confCount = 0 /\ readCount = 0

Fn(a, b, c) == [i \in Server |-> IF i = S1 THEN a ELSE IF i = S2 THEN b ELSE c]
Zero == [j \in Server |-> 0]

\* "figure8" (Raft paper, figure 8), without PreVote/CheckQuorum:
\*   term 1: S1 elected by S1, S2; appends E(1), sends it to nobody;
\*   term 2: S2 elected by S2, S3 (S2 and S3 have empty logs; S1 steps down on
\*           S2's request and rejects it, its log being more up to date);
\*           S2 appends E(2) alone;
\*   term 3: S1 elected by S1, S3 (S3's log is empty); S2 rejects S1's request
\*           (its last term 2 > 1) and follows term 3.  S1 appends E(3).
\* Next (left to TLC): S1 probes S3, backs off, sends E(1) alone; a quorum
\* {S1, S3} holds index 1, of term 1.
Figure8 ==
    StartWith(Fn(3, 3, 3), Fn(S1, Nil, S1), Fn("Leader", "Follower", "Follower"),
              Fn(S1, Nil, Nil), Fn(<<E(1), E(3)>>, <<E(2)>>, << >>), Fn(0, 0, 0),
              Fn([j \in Server |-> 2], [j \in Server |-> 1], [j \in Server |-> 1]),
              Fn(Zero, Zero, Zero), Fn(1, 0, 0), Fn({}, {}, {}),
              {Elected(1, S1, {S1, S2}), Elected(2, S2, {S2, S3}), Elected(3, S1, {S1, S3})},
              {}, {}, {<<S2, 1, S1>>, <<S3, 2, S2>>, <<S3, 3, S1>>})

\* "twoLeaders", without PreVote/CheckQuorum:
\*   term 1: S1 elected by S1, S2; E(1) replicated to S2 and committed by S1;
\*   term 2: S2 elected by S2, S3 (S3's log is empty) while S1 heard nothing
\*           and still leads term 1; S2 appends E(2).
TwoLeaders ==
    StartWith(Fn(1, 2, 2), Fn(S1, S2, S2), Fn("Leader", "Leader", "Follower"),
              Fn(S1, S2, Nil), Fn(<<E(1)>>, <<E(1), E(2)>>, << >>), Fn(1, 0, 0),
              Fn([j \in Server |-> IF j = S2 THEN 2 ELSE 1], [j \in Server |-> 2],
                 [j \in Server |-> 1]),
              Fn([j \in Server |-> IF j = S2 THEN 1 ELSE 0], Zero, Zero),
              Fn(0, 1, 0), Fn({S2}, {}, {}),
              {Elected(1, S1, {S1, S2}), Elected(2, S2, {S2, S3})},
              {<<1, 1>>},
              {[index |-> 1, term |-> 1, cterm |-> 1, cfg |-> InitConfig]},
              {<<S2, 1, S1>>, <<S3, 2, S2>>})

MCInit == CASE StartState = "init"       -> Init
            [] StartState = "figure8"    -> Figure8
            [] StartState = "twoLeaders" -> TwoLeaders
-----------------------------------------------------------------------------
(* The next-state relation of the models: exactly the steps of Raft.tla's  *)
(* Next that stay within the bounds, with no successor produced twice.     *)
(*                                                                         *)
(* TLC would otherwise compute, fingerprint (six times, for the symmetry)  *)
(* and then discard every successor out of bounds, and again in every      *)
(* state that reaches it; so the bounds are tested here, on the successor  *)
(* (InBounds'), and before computing it where a cheap test suffices (a     *)
(* restart when the restarts are used up, a send with no room in the       *)
(* network).  The depth bound stops at the last level instead of expanding *)
(* it only to discard its successors.  Two kinds of step are left out      *)
(* because another step produces the same successor from the same state:   *)
(* sending a message of which a copy is in flight (that is                 *)
(* DuplicateMessage), and a delivery whose handler only discards the       *)
(* message (that is DropMessage).  So MCNext reaches exactly the states    *)
(* Next does within the bounds, and every transition it omits is one it    *)
(* takes.  check.sh verifies that every action of Next appears below.      *)

\* The send just made added a message not in flight before.
NewMessage == DOMAIN network' # DOMAIN network
\* Everything but the network unchanged, and m removed from it: DropMessage(m).
nonNetworkVars == <<persistVars, diskVars, nodeVars, leaderVars, historyVars>>
OnlyDiscards(m) == UNCHANGED nonNetworkVars /\ network' = WithoutMessage(m, network)

MCNext ==
    /\ MaxDepth = 0 \/ TLCGet("level") < MaxDepth
    /\ LET room == InFlight < MaxMsgs IN
       \/ \E i \in Server : Timeout(i)
       \/ \E i \in Server : BecomeCandidate(i)
       \/ \E i \in Server : BecomeLeader(i)
       \/ \E i \in Server : CheckQuorum(i)
       \/ \E i \in Server : ForgetLeader(i)
       \/ \E i \in Server, v \in Value : ClientRequest(i, v)
       \/ confCount < MaxConfChanges /\ \E i \in Server, cc \in ConfChanges : ProposeConfChange(i, cc)
       \/ \E i \in Server : AutoLeaveJoint(i)
       \/ AllowApply /\ \E i \in Server : ApplyConfChange(i)
       \/ room /\ \E i, j \in Server : AppendEntries(i, j) /\ NewMessage
       \/ room /\ \E i, j \in Server : Heartbeat(i, j) /\ NewMessage
       \/ room /\ \E i, j \in Server : SendSnapshot(i, j) /\ NewMessage
       \/ \E i \in Server : AdvanceCommitIndex(i)
       \/ \E i \in Server : \E n \in 1..LastIndex(i) : CompactLog(i, n)
       \/ \E i \in Server : Persist(i)
       \/ AllowApply /\ \E i \in Server : Apply(i)
       \/ AllowTransfer /\ \E i, j \in Server : TransferLeadership(i, j)
       \/ readCount < MaxReads /\ \E i \in Server : ReadIndex(i)
       \/ \E i \in Server : HandleReadIndexQuorum(i)
       \/ restartCount < MaxRestarts /\ \E i \in Server : Restart(i)
       \/ \E m \in DOMAIN network : Receive(m) /\ ~OnlyDiscards(m)
       \/ \E m \in DOMAIN network : DropMessage(m)
       \/ room /\ \E m \in DOMAIN network : network[m] < MaxCopies /\ DuplicateMessage(m)
    /\ InBounds'

MCSpec == MCInit /\ [][MCNext]_vars

\* Sound only when the initial configuration treats all servers alike
\* (InitVoters = Server, InitLearners = {}): nothing else names a server.
Symmetry == Permutations(Server)
=============================================================================
