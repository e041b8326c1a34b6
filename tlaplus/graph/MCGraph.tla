------------------------------- MODULE MCGraph -------------------------------
(***************************************************************************)
(* Models of Raft.tla whose complete state graph is small enough to keep   *)
(* in the repository (tlaplus/graph/*.jsonl.gz) and to replay, edge by     *)
(* edge, on the F# implementation (tests/Raft.Conformance.Tests).          *)
(*                                                                         *)
(* The behaviour is Raft.tla's Next, unchanged.  A model bounds it with a  *)
(* state constraint (TLC still lists the successors beyond it, unexplored, *)
(* so every spec step out of an explored state is in the graph), steers   *)
(* it (who may campaign, which messages may fly, how many servers may have *)
(* unwritten state) and may start in the middle of a scenario (reachable   *)
(* states of Raft.tla; the comments give a path), so that each model       *)
(* explores a few features deeply while its graph stays small.             *)
(***************************************************************************)
EXTENDS Raft, Bags

CONSTANTS
    GraphStart,      \* "init" (Init), or one of the start states below
    MaxTerm,         \* no node's term goes beyond this
    MaxLogLen,       \* no log (snapshot included) goes beyond this index
    MaxMsgs,         \* messages in flight (copies and waiting responses counted)
    MaxCopies,       \* copies of one message in flight
    MaxRestarts,     \* restarts in a behaviour
    MaxConfChanges,  \* conf changes proposed in a behaviour (auto-leave not counted)
    MaxReads,        \* ReadIndex requests in a behaviour
    MaxSnapshot,     \* no snapshot (compaction or restore) beyond this index
    MaxProposals,    \* client and conf-change entries anywhere (a term's empty entry not counted)
    MaxHeartbeats,   \* heartbeats and their responses in flight
    MaxDepth,        \* explore behaviours of at most this many steps (0: no bound)
    AllowedMsgs,     \* message types that may be in flight
    MaxDirty,        \* servers with unwritten state or unsent responses at once
    AllowApply,      \* FALSE: no entry is applied
    AllowTransfer,   \* FALSE: no leadership transfer
    Plan1, Plan2, Plan3, Plan4,
                     \* the servers that may campaign for terms 1..4; later terms are free
    CCNodes,         \* the servers conf changes may name (GraphCCs)
    S1, S2, S3       \* the servers by name, for the start states (S3 = S2 with two servers)

\* The conf changes a leader may propose: simple ones and joint ones (with or
\* without auto-leave) of one server of CCNodes, and the explicit leave.
Singles == [op : {"AddNode", "AddLearner", "Remove"}, node : CCNodes]
GraphCCs == {[kind |-> "simple", changes |-> {s}, autoLeave |-> FALSE] : s \in Singles}
            \cup {[kind |-> "joint", changes |-> {s}, autoLeave |-> a] : s \in Singles, a \in BOOLEAN}
            \cup {LeaveJointCC}

\* Messages in flight: the network's copies and the responses waiting in the
\* outboxes (bags too).
RECURSIVE Waiting(_)
Waiting(S) == IF S = {} THEN 0
              ELSE LET i == CHOOSE x \in S : TRUE IN BagCardinality(outbox[i]) + Waiting(S \ {i})
InFlight == BagCardinality(network) + Waiting(Server)

HeartbeatsInFlight ==
    BagCardinality([m \in {x \in DOMAIN network : x.type \in {"Heartbeat", "HeartbeatResp"}} |-> network[m]])

\* Entries proposed by clients or conf changes anywhere, each counted once
\* however many logs hold it (by index and term).
Proposed == UNION {{<<k + snapshotIndex[i], log[i][k].term>> :
                       k \in {n \in 1..Len(log[i]) : log[i][n].value # Nil \/ log[i][n].type = "conf"}} :
                    i \in Server}

PlanFor(t) == CASE t = 1 -> Plan1 [] t = 2 -> Plan2 [] t = 3 -> Plan3 [] t = 4 -> Plan4
                [] OTHER -> Server

\* Server i has state that Persist has not written yet, or responses to send.
Dirty(i) == \/ outbox[i] # NoMsgs \/ stableIndex[i] < LastIndex(i)
            \/ hardState[i] # CurrentHardState(i)

GraphConstraint ==
    /\ \A i \in Server : /\ currentTerm[i] <= MaxTerm /\ LastIndex(i) <= MaxLogLen
                         /\ snapshotIndex[i] <= MaxSnapshot
                         /\ role[i] \in {"Candidate", "Leader"} => i \in PlanFor(currentTerm[i])
                         /\ role[i] = "PreCandidate" => i \in PlanFor(currentTerm[i] + 1)
    /\ restartCount <= MaxRestarts /\ confCount <= MaxConfChanges /\ readCount <= MaxReads
    /\ InFlight <= MaxMsgs /\ HeartbeatsInFlight <= MaxHeartbeats
    /\ \A m \in DOMAIN network : network[m] <= MaxCopies /\ m.type \in AllowedMsgs
    /\ Cardinality({i \in Server : Dirty(i)}) <= MaxDirty
    /\ AllowApply \/ \A i \in Server : applied[i] = commitIndex[i] \/ applied[i] = snapshotIndex[i]
    /\ AllowTransfer \/ \A i \in Server : leadTransferee[i] = Nil
    /\ Cardinality(Proposed) <= MaxProposals
    /\ MaxDepth = 0 \/ TLCGet("level") <= MaxDepth

-----------------------------------------------------------------------------
(* Start states.  Everything is written, applied, and nothing is in flight. *)

E(t) == NormalEntry(t, Nil)   \* the empty entry a leader of term t appends
Elected(t, l, vs) == [term |-> t, leader |-> l, votes |-> vs, cfg |-> InitConfig]
Fn(a, b, c) == [i \in Server |-> IF i = S1 THEN a ELSE IF i = S2 THEN b ELSE c]
Zero == [j \in Server |-> 0]

\* The common shape of a start state; the arguments are per-server functions.
StartWith(term, vote, rl, ld, lg, cmt, cfg, nxt, mtch, pci, rec, el, cd, crec, vs) ==
    /\ currentTerm = term /\ votedFor = vote /\ log = lg
    /\ snapshotIndex = [i \in Server |-> 0] /\ snapshotTerm = [i \in Server |-> 0]
    /\ snapshotConfig = [i \in Server |-> InitConfig]
    /\ stableIndex = [i \in Server |-> Len(lg[i])]
    /\ outbox = [i \in Server |-> NoMsgs]
    /\ role = rl /\ leader = ld /\ heard = [i \in Server |-> ld[i] # Nil]
    /\ commitIndex = cmt /\ applied = cmt
    /\ hardState = [i \in Server |-> CurrentHardState(i)]
    /\ config = cfg
    /\ votesGranted = [i \in Server |-> {}]
    /\ matchIndex = mtch /\ nextIndex = nxt
    /\ recentActive = rec /\ pendingConfIndex = pci
    /\ leadTransferee = [i \in Server |-> Nil] /\ readPending = [i \in Server |-> NoRead]
    /\ network = NoMsgs
    /\ elections = el /\ committed = cd /\ commitRecords = crec /\ votesSent = vs
    /\ reads = {} /\ restartCount = 0 /\ confCount = 0 /\ readCount = 0

\* "leader": S1 leads term 1.  Path: S1 times out (pre-vote granted by the
\* other voters when PreVote is on), is elected by every voter, appends E(1),
\* replicates it to every member and commits it; every member learns the
\* commit index from the next append or heartbeat, applies E(1), and all
\* writes are done.  Servers outside the configuration have heard nothing.
\* "laggard": the same, except that S3 heard nothing at all (it did not vote;
\* S1 and S2 are a quorum): S1's Next for it is still 1, and once S1 compacts
\* E(1) away S3 needs a snapshot.
Laggards == IF GraphStart = "laggard" THEN {S3} ELSE {}
Heard(i) == i \in Members(InitConfig) \ Laggards
LeaderStart ==
    StartWith([i \in Server |-> IF Heard(i) THEN 1 ELSE 0],
              [i \in Server |-> IF i \in InitVoters \ Laggards THEN S1 ELSE Nil],
              Fn("Leader", "Follower", "Follower"),
              [i \in Server |-> IF Heard(i) THEN S1 ELSE Nil],
              [i \in Server |-> IF Heard(i) THEN <<E(1)>> ELSE << >>],
              [i \in Server |-> IF Heard(i) THEN 1 ELSE 0], [i \in Server |-> InitConfig],
              Fn([j \in Server |-> IF j \in Laggards THEN 1 ELSE 2], [j \in Server |-> 1], [j \in Server |-> 1]),
              Fn([j \in Server |-> IF j # S1 /\ Heard(j) THEN 1 ELSE 0], Zero, Zero),
              Fn(0, 0, 0), Fn({j \in Server : j # S1 /\ Heard(j)}, {}, {}),
              {Elected(1, S1, InitVoters \ Laggards)},
              {<<1, 1>>},
              {[index |-> 1, term |-> 1, cterm |-> 1, cfg |-> InitConfig]},
              {<<j, 1, S1>> : j \in InitVoters \ ({S1} \cup Laggards)})

\* "diverged" (three voters, PreVote and CheckQuorum off): logs that differ
\* past a committed prefix, so that appends are rejected with hints.
\*   term 1: S1 is elected by all; E(1) is replicated and committed everywhere;
\*   term 2: S2 is elected by S2 and S3, appends E(2) and replicates it to S3;
\*           the acknowledgement is lost, so E(2) is not committed;
\*   term 3: S3 times out and is elected by S3 and S1 (S1's log [E(1)] is not
\*           more up to date than S3's); S2 grants its vote too, after S3 won
\*           (its log is as up to date as S3's); S3 appends E(3).  Nobody has
\*           heard from S3 as leader yet.  S3's Next for the others is 3 (its
\*           last index before E(3), plus one): its first append to S1, which
\*           lacks index 2, is rejected.
DivergedStart ==
    StartWith(Fn(3, 3, 3), Fn(S3, S3, S3), Fn("Follower", "Follower", "Leader"),
              Fn(Nil, Nil, S3),
              Fn(<<E(1)>>, <<E(1), E(2)>>, <<E(1), E(2), E(3)>>), Fn(1, 1, 1), [i \in Server |-> InitConfig],
              Fn([j \in Server |-> 1], [j \in Server |-> 1], [j \in Server |-> 3]),
              Fn(Zero, Zero, Zero), Fn(0, 0, 2), Fn({}, {}, {}),
              {Elected(1, S1, {S1, S2, S3}), Elected(2, S2, {S2, S3}), Elected(3, S3, {S1, S3})},
              {<<1, 1>>},
              {[index |-> 1, term |-> 1, cterm |-> 1, cfg |-> InitConfig]},
              {<<S2, 1, S1>>, <<S3, 1, S1>>, <<S3, 2, S2>>, <<S1, 3, S3>>, <<S2, 3, S3>>})

\* "figure8" (the Raft paper's figure 8; three voters, PreVote and
\* CheckQuorum off):
\*   term 1: S1 is elected by S1, S2; appends E(1), sends it to nobody;
\*   term 2: S2 is elected by S2, S3 (both have empty logs; S1 steps down on
\*           S2's request and rejects it, its log being more up to date);
\*           S2 appends E(2) alone;
\*   term 3: S1 is elected by S1, S3 (S3's log is empty); S2 rejects S1's
\*           request (its last term 2 > 1) and follows term 3; S1 appends E(3).
\* Next: S1 probes S3, backs off and sends E(1) alone; a quorum {S1, S3} then
\* holds index 1, of term 1, which S1 must not commit before E(3).
Figure8Start ==
    StartWith(Fn(3, 3, 3), Fn(S1, Nil, S1), Fn("Leader", "Follower", "Follower"),
              Fn(S1, Nil, Nil), Fn(<<E(1), E(3)>>, <<E(2)>>, << >>), Fn(0, 0, 0), [i \in Server |-> InitConfig],
              Fn([j \in Server |-> 2], [j \in Server |-> 1], [j \in Server |-> 1]),
              Fn(Zero, Zero, Zero), Fn(1, 0, 0), Fn({}, {}, {}),
              {Elected(1, S1, {S1, S2}), Elected(2, S2, {S2, S3}), Elected(3, S1, {S1, S3})},
              {}, {}, {<<S2, 1, S1>>, <<S3, 2, S2>>, <<S3, 3, S1>>})

\* "joint" (voters S1, S2 at first; PreVote and CheckQuorum off): S1 leads
\* term 1 in the joint configuration that adds S3 as a voter (explicit leave).
\* Path: S1 is elected by S1, S2; E(1) is replicated to S2 and committed;
\* S1 proposes the joint change (index 2), replicates it to S2, commits and
\* applies it (S3 gets Next 3), probes S3, backs off and sends it E(1) and the
\* change; S3 acknowledges index 2; everyone learns the commit index 2 and
\* applies the change.  In this configuration a commit needs a majority of
\* {S1, S2, S3} and one of {S1, S2}.
JointCC == [kind |-> "joint", changes |-> {[op |-> "AddNode", node |-> S3]}, autoLeave |-> FALSE]
JointStart ==
    StartWith([i \in Server |-> 1], Fn(S1, S1, Nil), Fn("Leader", "Follower", "Follower"),
              [i \in Server |-> S1], [i \in Server |-> <<E(1), ConfEntry(1, JointCC)>>],
              [i \in Server |-> 2], [i \in Server |-> ApplyCC(InitConfig, JointCC)],
              Fn([j \in Server |-> 3], [j \in Server |-> 1], [j \in Server |-> 1]),
              Fn([j \in Server |-> IF j = S1 THEN 0 ELSE 2], Zero, Zero),
              Fn(2, 0, 0), Fn({S2, S3}, {}, {}),
              {Elected(1, S1, {S1, S2})},
              {<<1, 1>>, <<2, 1>>},
              {[index |-> 1, term |-> 1, cterm |-> 1, cfg |-> InitConfig],
               [index |-> 2, term |-> 1, cterm |-> 1, cfg |-> InitConfig]},
              {<<S2, 1, S1>>})

GraphInit ==
    CASE GraphStart = "init"     -> Init
      [] GraphStart = "joint"    -> JointStart
      [] GraphStart = "leader"   -> LeaderStart
      [] GraphStart = "laggard"  -> LeaderStart
      [] GraphStart = "diverged" -> DivergedStart
      [] GraphStart = "figure8"  -> Figure8Start

GraphSpec == GraphInit /\ [][Next]_vars
=============================================================================
