------------------------------- MODULE MCRaft -------------------------------
(***************************************************************************)
(* Finite models of Raft.tla for TLC: bounds on terms, log length,        *)
(* messages in flight, restarts, conf changes, reads and compaction, and   *)
(* the symmetry of the server ids.                                         *)
(***************************************************************************)
EXTENDS Raft

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

RECURSIVE SumOver(_, _)
SumOver(B, D) == IF D = {} THEN 0
                 ELSE LET x == CHOOSE y \in D : TRUE IN B[x] + SumOver(B, D \ {x})
\* Messages in flight: the network's copies plus the responses waiting in
\* the outboxes for Persist (an outbox holds only its server's messages).
InFlight == SumOver(network, DOMAIN network) + Cardinality(UNION {outbox[i] : i \in Server})

PlanFor(t) == CASE t = 1 -> Plan1 [] t = 2 -> Plan2 [] t = 3 -> Plan3 [] t = 4 -> Plan4
                [] OTHER -> Server

\* Only the planned servers campaign (pre-candidates for the next term).
PlanFollowed ==
    \A i \in Server :
        /\ role[i] \in {"Candidate", "Leader"} => i \in PlanFor(currentTerm[i])
        /\ role[i] = "PreCandidate" => i \in PlanFor(currentTerm[i] + 1)

\* Server i has state that Persist has not written yet.
Dirty(i) == \/ outbox[i] # {} \/ stableIndex[i] < LastIndex(i)
            \/ hardState[i] # [term |-> currentTerm[i], vote |-> votedFor[i]]

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

StateConstraint ==
    /\ \A i \in Server : currentTerm[i] <= MaxTerm /\ LastIndex(i) <= MaxLogLen
                         /\ snapshotIndex[i] <= MaxSnapshot
    /\ restartCount <= MaxRestarts
    /\ confCount <= MaxConfChanges
    /\ readCount <= MaxReads
    /\ InFlight <= MaxMsgs
    /\ MaxDepth = 0 \/ TLCGet("level") <= MaxDepth
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
    /\ hardState = [i \in Server |-> [term |-> term[i], vote |-> vote[i]]]
    /\ stableIndex = [i \in Server |-> Len(lg[i])]
    /\ outbox = [i \in Server |-> {}]
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
MCSpec == MCInit /\ [][Next]_vars

\* Sound only when the initial configuration treats all servers alike
\* (InitVoters = Server, InitLearners = {}): nothing else names a server.
Symmetry == Permutations(Server)
=============================================================================
