/// Behavioural tests of the node in small clusters: elections, check quorum, leader
/// stickiness, replication and repair, commit rules, snapshots, transfer, reads,
/// proposal dropping and configuration changes.
module Raft.Spec.Tests.RaftTests

open System.Text
open Xunit
open Raft.Spec
open Raft.Spec.Tests.RaftTestNet

let private contains (text: string) (lines: string list) =
    Assert.True(List.contains text lines, sprintf "missing log line %A in:\n%s" text (String.concat "\n" lines))

let private containsPart (part: string) (lines: string list) =
    Assert.True(lines |> List.exists (fun l -> l.Contains part), sprintf "no log line with %A in:\n%s" part (String.concat "\n" lines))

[<Fact>]
let ``newRaft logs its start like etcd`` () =
    let net = cluster 3 id
    let lines = logsOf 1UL net
    Assert.Equal<string list>(
        [ "1 switched to configuration voters=(1 2 3)"
          "1 became follower at term 0"
          "newRaft 1 [peers: [1,2,3], term: 0, commit: 0, applied: 0, lastindex: 0, lastterm: 0]" ],
        lines
    )
    Assert.Equal(StateFollower, (state 1UL net).State)

[<Fact>]
let ``create refuses an invalid configuration with etcd's error`` () =
    let s = storageWith [ 1UL ] []
    match Raft.create { config 1UL s with HeartbeatTick = 0 } with
    | Error e -> Assert.Equal("heartbeat tick must be greater than 0", e)
    | Ok _ -> failwith "expected an error"

[<Fact>]
let ``election without pre-vote`` () =
    let net = cluster 3 id |> elect 1UL
    let r1 = state 1UL net
    Assert.Equal(StateLeader, r1.State)
    Assert.Equal(1UL, r1.Term)
    for id in [ 2UL; 3UL ] do
        Assert.Equal(StateFollower, (state id net).State)
        Assert.Equal(1UL, (state id net).Lead)
        Assert.Equal(1UL, (state id net).Vote)
    // The empty entry of the new term is committed everywhere.
    for id in [ 1UL; 2UL; 3UL ] do
        Assert.Equal(1UL, (state id net).RaftLog.Committed)
    let l1 = logsOf 1UL net
    contains "1 is starting a new election at term 0" l1
    contains "1 became candidate at term 1" l1
    contains "1 [logterm: 0, index: 0] sent MsgVote request to 2 at term 1" l1
    contains "1 received MsgVoteResp from 2 at term 1" l1
    contains "1 has received 2 MsgVoteResp votes and 0 vote rejections" l1
    contains "1 became leader at term 1" l1
    contains "2 [logterm: 0, index: 0, vote: 0] cast MsgVote for 1 [logterm: 0, index: 0] at term 1" (logsOf 2UL net)
    contains "2 [term: 0] received a MsgVote message with higher term from 1 [term: 1]" (logsOf 2UL net)

[<Fact>]
let ``election with pre-vote keeps the term until the pre-vote is won`` () =
    let net = cluster 3 (fun c -> { c with PreVote = true })
    let net = hup 1UL net
    Assert.Equal(StatePreCandidate, (state 1UL net).State)
    Assert.Equal(0UL, (state 1UL net).Term)
    let net = stabilize net
    Assert.Equal(StateLeader, (state 1UL net).State)
    Assert.Equal(1UL, (state 1UL net).Term)
    let l1 = logsOf 1UL net
    contains "1 became pre-candidate at term 0" l1
    contains "1 [logterm: 0, index: 0] sent MsgPreVote request to 2 at term 0" l1
    contains "1 received MsgPreVoteResp from 2 at term 0" l1
    contains "1 became candidate at term 1" l1
    contains "2 [logterm: 0, index: 0, vote: 0] cast MsgPreVote for 1 [logterm: 0, index: 0] at term 0" (logsOf 2UL net)

[<Fact>]
let ``a pre-candidate that loses does not disturb the leader's term`` () =
    let net = cluster 3 (fun c -> { c with PreVote = true }) |> elect 1UL
    // Node 3 is partitioned and misses an entry; it times out but only pre-campaigns, so
    // its term stays 1.
    let net = isolate 3UL net |> propose 1UL "x" |> fst |> stabilize
    let net = tickTimes 3UL 30 net |> stabilize
    Assert.Equal(1UL, (state 3UL net).Term)
    let net = heal net |> hup 3UL |> stabilize
    // Its log is behind: the pre-vote is rejected and it returns to follower at term 1.
    Assert.Equal(StateLeader, (state 1UL net).State)
    Assert.Equal(1UL, (state 1UL net).Term)
    Assert.Equal(1UL, (state 3UL net).Term)

[<Fact>]
let ``a vote is refused to a candidate with a shorter log`` () =
    let net = cluster 3 id |> elect 1UL
    let net = isolate 3UL net
    let net, _ = propose 1UL "x" net
    let net = stabilize net
    // 3 lacks index 2; its campaign at term 2 is rejected by 2.
    let net = heal net |> hup 3UL |> stabilize
    containsPart "rejected MsgVote from 3 [logterm: 1, index: 1] at term 2" (logsOf 2UL net)
    Assert.NotEqual(StateLeader, (state 3UL net).State)

[<Fact>]
let ``check quorum makes an isolated leader step down`` () =
    let net = cluster 3 (fun c -> { c with CheckQuorum = true }) |> elect 1UL
    let net = isolate 1UL net
    let net = tickTimes 1UL 20 net |> stabilize
    Assert.Equal(StateFollower, (state 1UL net).State)
    contains "1 stepped down to follower since quorum is not active" (logsOf 1UL net)

[<Fact>]
let ``leader stickiness: votes within the lease are ignored`` () =
    let net = cluster 3 (fun c -> { c with CheckQuorum = true }) |> elect 1UL
    let net = hup 3UL net |> stabilize
    containsPart "ignored MsgVote from 3 [logterm: 1, index: 1] at term 1: lease is not expired (remaining ticks: 10)" (logsOf 2UL net)
    Assert.Equal(1UL, (state 2UL net).Term)
    Assert.Equal(StateLeader, (state 1UL net).State)

[<Fact>]
let ``a transfer election overrides the lease`` () =
    let net = cluster 3 (fun c -> { c with CheckQuorum = true }) |> elect 1UL
    let net, _ = stepAt 1UL { Message.empty with Type = MsgTransferLeader; From = 2UL; To = 1UL } net
    let net = stabilize net
    Assert.Equal(StateLeader, (state 2UL net).State)
    Assert.Equal(2UL, (state 2UL net).Term)
    Assert.Equal(2UL, (state 1UL net).Lead)
    contains "1 [term 1] starts to transfer leadership to 2" (logsOf 1UL net)
    contains "1 sends MsgTimeoutNow to 2 immediately as 2 already has up-to-date log" (logsOf 1UL net)
    contains "2 [term 1] received MsgTimeoutNow from 1 and starts an election to get leadership." (logsOf 2UL net)

[<Fact>]
let ``a transfer to a lagging peer first catches it up`` () =
    let net = cluster 3 id |> elect 1UL |> isolate 3UL
    let net, _ = propose 1UL "a" net
    let net = stabilize net |> heal
    let net, _ = stepAt 1UL { Message.empty with Type = MsgTransferLeader; From = 3UL; To = 1UL } net
    // Proposals are dropped while the transfer is under way.
    let net, res = propose 1UL "b" net
    Assert.Equal(Error ProposalDropped, res)
    let net = stabilize net
    Assert.Equal(StateLeader, (state 3UL net).State)
    contains "1 sent MsgTimeoutNow to 3 after received MsgAppResp" (logsOf 1UL net)

[<Fact>]
let ``a transfer that does not finish is aborted after an election timeout`` () =
    let net = cluster 3 id |> elect 1UL |> isolate 3UL
    let net, _ = stepAt 1UL { Message.empty with Type = MsgTransferLeader; From = 3UL; To = 1UL } net
    Assert.Equal(3UL, (state 1UL net).LeadTransferee)
    let net = tickTimes 1UL 10 net
    Assert.Equal(0UL, (state 1UL net).LeadTransferee)
    Assert.Equal(StateLeader, (state 1UL net).State)

[<Fact>]
let ``log replication commits on a quorum`` () =
    let net = cluster 3 id |> elect 1UL
    let net, res = propose 1UL "hello" net
    Assert.Equal(Ok(), res)
    let net = stabilize net
    for id in [ 1UL; 2UL; 3UL ] do
        Assert.Equal<(uint64 * uint64) list>([ 1UL, 1UL; 2UL, 1UL ], entriesOf id net)
        Assert.Equal(2UL, (state id net).RaftLog.Committed)
    let applied = (node 2UL net).Applied |> List.map (fun e -> Encoding.UTF8.GetString e.Data)
    Assert.Equal<string list>([ ""; "hello" ], applied)

[<Fact>]
let ``proposals at a follower are forwarded to the leader`` () =
    let net = cluster 3 id |> elect 1UL
    let net, res = propose 2UL "fwd" net
    Assert.Equal(Ok(), res)
    let net = stabilize net
    Assert.Equal(2UL, (state 3UL net).RaftLog.Committed)

[<Fact>]
let ``a minority cannot commit`` () =
    let net = cluster 3 id |> elect 1UL
    let net = { net with Drop = fun m -> m.From = 1UL && m.To <> 1UL }
    let net, _ = propose 1UL "x" net
    let net = stabilize net
    Assert.Equal(1UL, (state 1UL net).RaftLog.Committed)
    Assert.Equal(2UL, Raft.lastIndex (state 1UL net))

[<Fact>]
let ``a deposed leader's divergent tail is repaired`` () =
    let net = cluster 3 id |> elect 1UL |> isolate 1UL
    // Node 1 appends entries no one else sees.
    let net = [ "a"; "b"; "c" ] |> List.fold (fun net d -> propose 1UL d net |> fst) net |> stabilize
    // Node 2 wins term 2 and commits its own entries.
    let net = net |> elect 2UL
    let net = propose 2UL "z" net |> fst |> stabilize
    Assert.Equal(StateLeader, (state 2UL net).State)
    let net = heal net
    // The next heartbeat round reaches 1, which follows term 2 and is repaired.
    let net = tickNode 2UL net |> stabilize
    Assert.Equal(StateFollower, (state 1UL net).State)
    Assert.Equal<(uint64 * uint64) list>(entriesOf 2UL net, entriesOf 1UL net)
    Assert.Equal((state 2UL net).RaftLog.Committed, (state 1UL net).RaftLog.Committed)
    containsPart "found conflict at index 2" (logsOf 1UL net)

[<Fact>]
let ``rejections carry a hint that skips the follower's higher-term tail`` () =
    // Follower log: terms 1 1 1 2 2 2 at indexes 1..6; leader probes at (index 8, term 3).
    let ents = [| 1UL; 1UL; 1UL; 2UL; 2UL; 2UL |] |> Array.mapi (fun i t -> Entry.create t (uint64 i + 1UL) [||])
    let s =
        storageWith [ 1UL; 2UL ] []
        |> MemoryStorage.append ents
        |> MemoryStorage.setHardState { Term = 2UL; Vote = 0UL; Commit = 1UL }
    let n = nodeWith (config 2UL s) s
    let m = { Message.empty with Type = MsgApp; From = 1UL; To = 2UL; Term = 3UL; Index = 8UL; LogTerm = 1UL; Commit = 1UL }
    let r, _ = Step.step n.R m
    let resp = r.MsgsAfterAppend |> Outbox.toList |> List.last
    Assert.Equal(MsgAppResp, resp.Type)
    Assert.True(resp.Reject)
    Assert.Equal(8UL, resp.Index)
    // The largest index with term <= 1 is 3.
    Assert.Equal(3UL, resp.RejectHint)
    Assert.Equal(1UL, resp.LogTerm)

[<Fact>]
let ``only entries of the current term are committed by counting`` () =
    // Node 1 holds two entries of term 1 that were never committed, and is at term 1.
    let ents = [| Entry.create 1UL 1UL [||]; Entry.create 1UL 2UL [||] |]
    let s =
        storageWith [ 1UL; 2UL; 3UL ] []
        |> MemoryStorage.append ents
        |> MemoryStorage.setHardState { Term = 1UL; Vote = 0UL; Commit = 0UL }
    let n = nodeWith (config 1UL s) s
    let r = n.R |> Raft.becomeCandidate |> Raft.becomeLeader
    Assert.Equal(2UL, r.Term)
    // Node 2 holds index 2 (term 1): a quorum has it, but it is not of term 2.
    let ack index = { Message.empty with Type = MsgAppResp; From = 2UL; To = 1UL; Term = 2UL; Index = index }
    let r, _ = Step.step r (ack 2UL)
    Assert.Equal(0UL, r.RaftLog.Committed)
    // Once the term-2 entry is on a quorum, everything before it commits too.
    let r, _ = Step.step r (ack 3UL)
    let r, _ = Step.step r { Message.empty with Type = MsgAppResp; From = 1UL; To = 1UL; Term = 2UL; Index = 3UL }
    Assert.Equal(3UL, r.RaftLog.Committed)

[<Fact>]
let ``a lagging follower is caught up with a snapshot after compaction`` () =
    let net = cluster 3 id |> elect 1UL |> isolate 3UL
    let net = [ "a"; "b"; "c"; "d" ] |> List.fold (fun net d -> propose 1UL d net |> fst) net |> stabilize
    let n1 = node 1UL net
    Assert.Equal(5UL, n1.R.RaftLog.Committed)
    // The leader's application snapshots and compacts its log.
    let s, _ = MemoryStorage.createSnapshot 5UL None [||] n1.S |> okOr
    let s = MemoryStorage.compact 5UL s |> okOr
    let net = setNode 1UL { n1 with S = s; R = Actions.CompactLog (MemoryStorage.asStorage s) n1.R } net
    let net = heal net
    // A heartbeat round marks 3 active; the append it prompts needs the compacted entries.
    let net = tickNode 1UL net |> stabilize
    containsPart "sent snapshot[index: 5, term: 1] to 3" (logsOf 1UL net)
    contains "3 [commit: 5] restored snapshot [index: 5, term: 1]" (logsOf 3UL net)
    Assert.Equal(5UL, (state 3UL net).RaftLog.Committed)
    let net = propose 1UL "e" net |> fst |> stabilize
    Assert.Equal(6UL, (state 3UL net).RaftLog.Committed)
    let pr3 = (state 1UL net).Trk.Progress[3UL]
    Assert.Equal(StateReplicate, pr3.State)
    Assert.Equal(6UL, pr3.Match)

[<Fact>]
let ``read index (safe) is confirmed by a heartbeat round`` () =
    let net = cluster 3 id |> elect 1UL
    let ctx = Encoding.UTF8.GetBytes "req1"
    let net, _ = stepAt 1UL { Message.empty with Type = MsgReadIndex; Entries = [| Entry.create 0UL 0UL ctx |] } net
    Assert.Empty((state 1UL net).ReadStates)
    let net = stabilize net
    let rs = (state 1UL net).ReadStates
    Assert.Equal(1, rs.Length)
    Assert.Equal(1UL, rs.Head.Index)
    Assert.Equal<byte[]>(ctx, rs.Head.RequestCtx)

[<Fact>]
let ``read index from a follower is forwarded and answered`` () =
    let net = cluster 3 id |> elect 1UL
    let ctx = Encoding.UTF8.GetBytes "req2"
    let net, _ = stepAt 2UL { Message.empty with Type = MsgReadIndex; From = 2UL; Entries = [| Entry.create 0UL 0UL ctx |] } net
    let net = stabilize net
    let rs = (state 2UL net).ReadStates
    Assert.Equal(1, rs.Length)
    Assert.Equal(1UL, rs.Head.Index)

[<Fact>]
let ``read index waits for the leader's first commit in its term`` () =
    let net = cluster 3 id |> hup 1UL
    // Let the election complete but hold back the appends so nothing of term 1 commits.
    let net = { net with Drop = fun m -> m.Type = MsgApp } |> stabilize
    Assert.Equal(StateLeader, (state 1UL net).State)
    let net, _ = stepAt 1UL { Message.empty with Type = MsgReadIndex; Entries = [| Entry.create 0UL 0UL [| 7uy |] |] } net
    Assert.Equal(1, (state 1UL net).PendingReadIndexMessages.Length)
    let net = heal net |> tickNode 1UL |> stabilize
    Assert.Empty((state 1UL net).PendingReadIndexMessages)
    Assert.Equal(1, (state 1UL net).ReadStates.Length)

[<Fact>]
let ``lease-based read index answers at once`` () =
    let net = cluster 3 (fun c -> { c with CheckQuorum = true; ReadOnlyOption = ReadOnlyLeaseBased }) |> elect 1UL
    let net, _ = stepAt 1UL { Message.empty with Type = MsgReadIndex; Entries = [| Entry.create 0UL 0UL [| 1uy |] |] } net
    Assert.Equal(1, (state 1UL net).ReadStates.Length)

[<Fact>]
let ``proposals are dropped without a leader`` () =
    let net = cluster 3 id
    let net, res = propose 2UL "x" net
    Assert.Equal(Error ProposalDropped, res)
    contains "2 no leader at term 0; dropping proposal" (logsOf 2UL net)

[<Fact>]
let ``proposals are dropped by a follower that may not forward`` () =
    let net = cluster 3 (fun c -> { c with DisableProposalForwarding = true }) |> elect 1UL
    let net, res = propose 2UL "x" net
    Assert.Equal(Error ProposalDropped, res)
    contains "2 not forwarding to leader 1 at term 1; dropping proposal" (logsOf 2UL net)

[<Fact>]
let ``proposals beyond the uncommitted size limit are dropped`` () =
    let net = cluster 3 (fun c -> { c with MaxUncommittedEntriesSize = 10UL }) |> elect 1UL
    let net = { net with Drop = fun m -> m.From = 1UL && m.To <> 1UL }
    let net, r1 = propose 1UL "123456" net
    let net, r2 = propose 1UL "123456" net
    Assert.Equal(Ok(), r1)
    Assert.Equal(Error ProposalDropped, r2)
    contains "1 appending new entries to log would exceed uncommitted entry size limit; dropping proposal" (logsOf 1UL net)
    // Once committed and applied, the budget is free again.
    let net = heal net |> tickNode 1UL |> stabilize
    Assert.Equal(0UL, (state 1UL net).UncommittedSize)
    let _, r3 = propose 1UL "123456" net
    Assert.Equal(Ok(), r3)

[<Fact>]
let ``a simple conf change adds a node`` () =
    let net = cluster 3 id |> elect 1UL
    // The new node starts from the configuration it is joining (as from a snapshot).
    let s4 = storageWith [ 1UL; 2UL; 3UL ] []
    let net = setNode 4UL (nodeWith (config 4UL s4) s4) net
    let cc = ConfChangeV1 { Type = ConfChangeAddNode; NodeId = 4UL; Context = [||]; Id = 0UL }
    let net, res = proposeConfChange 1UL cc net
    Assert.Equal(Ok(), res)
    let net = stabilize net
    contains "1 switched to configuration voters=(1 2 3 4)" (logsOf 1UL net)
    // Node 4 caught up from the log and applied the change too.
    Assert.Equal((state 1UL net).RaftLog.Committed, (state 4UL net).RaftLog.Committed)
    contains "4 switched to configuration voters=(1 2 3 4)" (logsOf 4UL net)
    Assert.Equal<uint64 list>([ 1UL; 2UL; 3UL; 4UL ], ProgressTracker.voterNodes (state 1UL net).Trk)

[<Fact>]
let ``a second conf change is refused while one is pending`` () =
    let net = cluster 3 id |> elect 1UL
    let cc id = ConfChangeV1 { Type = ConfChangeAddLearnerNode; NodeId = id; Context = [||]; Id = 0UL }
    let net = { net with Drop = fun m -> m.From = 1UL && m.To <> 1UL }
    let net, _ = proposeConfChange 1UL (cc 4UL) net
    let net, res = proposeConfChange 1UL (cc 5UL) net
    Assert.Equal(Ok(), res)
    contains
        "1 ignoring conf change transition:ConfChangeTransitionAuto changes:{type:ConfChangeAddLearnerNode node_id:5} at config voters=(1 2 3): possible unapplied conf change at index 2 (applied to 1)"
        (logsOf 1UL net)
    // The refused change is replaced by an empty normal entry.
    let last = RaftLog.allEntries (state 1UL net).RaftLog |> Array.last
    Assert.Equal(EntryNormal, last.Type)
    Assert.Empty(last.Data)

[<Fact>]
let ``conf change validation can be disabled`` () =
    let net = cluster 3 (fun c -> { c with DisableConfChangeValidation = true }) |> elect 1UL
    let net = { net with Drop = fun m -> m.From = 1UL && m.To <> 1UL }
    let leave = ConfChangeV2Change { Transition = ConfChangeTransitionAuto; Changes = []; Context = [||] }
    let net, _ = proposeConfChange 1UL leave net
    let last = RaftLog.allEntries (state 1UL net).RaftLog |> Array.last
    Assert.Equal(EntryConfChangeV2, last.Type)

[<Fact>]
let ``a joint conf change is entered and left automatically`` () =
    let net = cluster 3 id |> elect 1UL
    let cc =
        ConfChangeV2Change
            { Transition = ConfChangeTransitionAuto
              Changes = [ { Type = ConfChangeRemoveNode; NodeId = 3UL }; { Type = ConfChangeAddLearnerNode; NodeId = 3UL } ]
              Context = [||] }
    let net, res = proposeConfChange 1UL cc net
    Assert.Equal(Ok(), res)
    let net = stabilize net
    let l1 = logsOf 1UL net
    contains "1 switched to configuration voters=(1 2)&&(1 2 3) learners_next=(3) autoleave" l1
    // etcd prints this line without the node id.
    contains "initiating automatic transition out of joint configuration voters=(1 2)&&(1 2 3) learners_next=(3) autoleave" l1
    contains "1 switched to configuration voters=(1 2) learners=(3)" l1
    Assert.False(JointConfig.isJoint (state 1UL net).Trk.Config.Voters)
    Assert.True((state 3UL net).IsLearner)

[<Fact>]
let ``a removed leader steps down when asked to`` () =
    let net = cluster 3 (fun c -> { c with StepDownOnRemoval = true }) |> elect 1UL
    let cc = ConfChangeV1 { Type = ConfChangeRemoveNode; NodeId = 1UL; Context = [||]; Id = 0UL }
    let net, _ = proposeConfChange 1UL cc net
    let net = stabilize net
    Assert.Equal(StateFollower, (state 1UL net).State)

[<Fact>]
let ``forget leader clears the leader at a follower`` () =
    let net = cluster 3 id |> elect 1UL
    let net, _ = stepAt 2UL { Message.empty with Type = MsgForgetLeader } net
    Assert.Equal(0UL, (state 2UL net).Lead)
    contains "2 forgetting leader 1 at term 1" (logsOf 2UL net)

[<Fact>]
let ``old-term appends are answered when check quorum is on`` () =
    let net = cluster 3 (fun c -> { c with CheckQuorum = true }) |> elect 1UL
    let r2 = state 2UL net
    let r, _ = Step.step r2 { Message.empty with Type = MsgApp; From = 3UL; To = 2UL; Term = 0UL + 1UL - 1UL + 0UL }
    // Term 0 is local: nothing. A real stale term is answered with an empty MsgAppResp.
    ignore r
    let r2 = { r2 with Term = 5UL }
    let r, _ = Step.step r2 { Message.empty with Type = MsgHeartbeat; From = 1UL; To = 2UL; Term = 1UL }
    let resp = r.MsgsAfterAppend |> Outbox.toList |> List.last
    Assert.Equal(MsgAppResp, resp.Type)
    Assert.Equal(5UL, resp.Term)

[<Fact>]
let ``send refuses messages etcd would panic on`` () =
    let r = state 1UL (cluster 1 id)
    let ex = Assert.Throws<System.InvalidOperationException>(fun () -> Raft.send { Message.empty with Type = MsgVote; To = 2UL } r |> ignore)
    Assert.Equal("term should be set when sending MsgVote", ex.Message)

[<Fact>]
let ``a single node becomes leader and commits alone`` () =
    let net = cluster 1 id |> elect 1UL
    Assert.Equal(StateLeader, (state 1UL net).State)
    let net = propose 1UL "solo" net |> fst |> stabilize
    Assert.Equal(2UL, (state 1UL net).RaftLog.Committed)

[<Fact>]
let ``election timeouts are drawn deterministically from the seed`` () =
    let a = state 1UL (cluster 3 id)
    let b = state 1UL (cluster 3 id)
    Assert.Equal(a.RandomizedElectionTimeout, b.RandomizedElectionTimeout)
    Assert.InRange(a.RandomizedElectionTimeout, 10, 19)
    // Ticking long enough always starts an election.
    let net = cluster 3 id |> tickTimes 1UL 20
    Assert.NotEqual(StateFollower, (state 1UL net).State)

[<Fact>]
let ``trace events follow etcd's trace points`` () =
    let net = cluster 3 id |> elect 1UL
    let names = (state 1UL net).Traces |> Outbox.toList |> List.map (fun t -> t.Name)
    Assert.Equal("InitState", names.Head)
    for n in [ "ApplyConfChange"; "BecomeFollower"; "BecomeCandidate"; "SendRequestVoteRequest"; "ReceiveRequestVoteResponse"; "BecomeLeader"; "Replicate"; "SendAppendEntriesRequest"; "Commit" ] do
        Assert.Contains(n, names)

[<Fact>]
let ``the inflight window limits appends to a replicating peer`` () =
    let net = cluster 3 (fun c -> { c with MaxInflightMsgs = 2; MaxSizePerMsg = 1UL }) |> elect 1UL
    Assert.Equal(StateReplicate, (state 1UL net).Trk.Progress[2UL].State)
    let net = [ 1..5 ] |> List.fold (fun net i -> propose 1UL (string i) net |> fst) net
    let appsTo2 = (state 1UL net).Msgs |> Outbox.toList |> List.filter (fun m -> m.Type = MsgApp && m.To = 2UL)
    Assert.Equal(2, appsTo2.Length)
    Assert.True(Progress.isPaused (state 1UL net).Trk.Progress[2UL])
    // Acks free the window and the rest flows.
    let net = stabilize net
    Assert.Equal(6UL, (state 2UL net).RaftLog.Committed)

[<Fact>]
let ``an unreachable replicating peer goes back to probing`` () =
    let net = cluster 3 id |> elect 1UL
    let net, _ = stepAt 1UL { Message.empty with Type = MsgUnreachable; From = 2UL; To = 1UL } net
    Assert.Equal(StateProbe, (state 1UL net).Trk.Progress[2UL].State)
    containsPart "1 failed to send message to 2 because it is unreachable [StateProbe" (logsOf 1UL net)

[<Fact>]
let ``heartbeats never tell a peer to commit beyond its match`` () =
    let net = cluster 3 id |> elect 1UL |> isolate 3UL
    let net = propose 1UL "x" net |> fst |> stabilize |> heal
    Assert.Equal(2UL, (state 1UL net).RaftLog.Committed)
    let net = tickNode 1UL net
    let hb = (state 1UL net).Msgs |> Outbox.toList |> List.filter (fun m -> m.Type = MsgHeartbeat)
    Assert.Equal(2UL, (hb |> List.find (fun m -> m.To = 2UL)).Commit)
    Assert.Equal(1UL, (hb |> List.find (fun m -> m.To = 3UL)).Commit)

[<Fact>]
let ``a failed snapshot report resets the pending snapshot and pauses`` () =
    let net = cluster 3 id |> elect 1UL
    let r1 = state 1UL net
    let r1 = Raft.updateProgress 2UL (Progress.becomeSnapshot 5UL) r1
    let r1, _ = Step.step r1 { Message.empty with Type = MsgSnapStatus; From = 2UL; To = 1UL; Reject = true }
    let pr = r1.Trk.Progress[2UL]
    Assert.Equal(StateProbe, pr.State)
    Assert.Equal(0UL, pr.PendingSnapshot)
    Assert.True(pr.MsgAppFlowPaused)
