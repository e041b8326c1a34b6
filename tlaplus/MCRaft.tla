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
    MaxSnapshot      \* no snapshot (compaction or restore) beyond this index

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
InFlight == SumOver(network, DOMAIN network)

StateConstraint ==
    /\ \A i \in Server : currentTerm[i] <= MaxTerm
    /\ \A i \in Server : LastIndex(i) <= MaxLogLen
    /\ \A i \in Server : snapshotIndex[i] <= MaxSnapshot
    /\ InFlight <= MaxMsgs
    /\ restartCount <= MaxRestarts
    /\ confCount <= MaxConfChanges
    /\ readCount <= MaxReads

\* Sound only when the initial configuration treats all servers alike
\* (InitVoters = Server, InitLearners = {}): nothing else names a server.
Symmetry == Permutations(Server)
=============================================================================
