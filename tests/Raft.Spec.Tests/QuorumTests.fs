/// Unit tests of the quorum arithmetic, the inflights window, progress transitions, the
/// tracker and conf changes, after etcd's quorum/ tracker/ confchange/ unit tests.
module Raft.Spec.Tests.QuorumTests

open System
open Xunit
open FsCheck
open FsCheck.FSharp
open Raft.Spec

// ---- quorum ----

let private ackedOf (pairs: (uint64 * uint64) list) : AckedIndexer =
    let m = Map.ofList pairs
    fun id -> Map.tryFind id m

[<Fact>]
let ``describe prints bars by rank and ids in hex`` () =
    let c = set [ 1UL; 2UL; 3UL ]
    Assert.Equal("       idx\n>      101    (id=1)\nx>     102    (id=2)\nxx>    103    (id=3)\n",
                 MajorityConfig.describe (ackedOf [ 1UL, 101UL; 2UL, 102UL; 3UL, 103UL ]) c)
    Assert.Equal("       idx\n>      100    (id=1)\n>      100    (id=2)\n>      100    (id=3)\n",
                 MajorityConfig.describe (ackedOf [ 1UL, 100UL; 2UL, 100UL; 3UL, 100UL ]) c)
    Assert.Equal("       idx\n?        0    (id=1)\nx>     100    (id=2)\nx>     100    (id=3)\n",
                 MajorityConfig.describe (ackedOf [ 2UL, 100UL; 3UL, 100UL ]) c)
    Assert.Equal("      idx\n>       7    (id=a)\nx>      9    (id=1f)\n",
                 MajorityConfig.describe (ackedOf [ 10UL, 7UL; 31UL, 9UL ]) (set [ 10UL; 31UL ]))
    Assert.Equal("<empty majority quorum>", MajorityConfig.describe (ackedOf []) Set.empty)

[<Fact>]
let ``configs print as etcd prints them`` () =
    Assert.Equal("(1 2 a)", MajorityConfig.toString (set [ 10UL; 2UL; 1UL ]))
    Assert.Equal("(1 2 3)&&(1)", JointConfig.toString { Incoming = set [ 1UL; 2UL; 3UL ]; Outgoing = set [ 1UL ] })
    Assert.Equal("()", JointConfig.toString JointConfig.empty)
    let cfg =
        { Voters = { Incoming = set [ 1UL; 2UL; 3UL ]; Outgoing = set [ 1UL ] }
          AutoLeave = true
          Learners = set [ 4UL ]
          LearnersNext = set [ 5UL ] }
    Assert.Equal("voters=(1 2 3)&&(1) learners=(4) learners_next=(5) autoleave", TrackerConfig.toString cfg)
    Assert.Equal("voters=(1)", TrackerConfig.toString { TrackerConfig.empty with Voters = JointConfig.ofMajority (set [ 1UL ]) })
    Assert.Equal("∞", QuorumIndex.toString UInt64.MaxValue)

[<Fact>]
let ``empty majorities are neutral in joint configs`` () =
    let acked = ackedOf [ 1UL, 5UL; 2UL, 7UL; 3UL, 9UL ]
    Assert.Equal(UInt64.MaxValue, MajorityConfig.committedIndex acked Set.empty)
    Assert.Equal(VoteWon, MajorityConfig.voteResult Map.empty Set.empty)
    let c = set [ 1UL; 2UL; 3UL ]
    Assert.Equal(7UL, JointConfig.committedIndex acked (JointConfig.ofMajority c))
    Assert.Equal(5UL, JointConfig.committedIndex acked { Incoming = c; Outgoing = set [ 1UL; 3UL ] })
    Assert.Equal(0UL, JointConfig.committedIndex acked { Incoming = c; Outgoing = set [ 1UL; 4UL ] })

[<Fact>]
let ``votes: won, lost and pending, jointly`` () =
    let c = set [ 1UL; 2UL; 3UL ]
    let votes l = Map.ofList l
    Assert.Equal(VotePending, MajorityConfig.voteResult (votes [ 1UL, true ]) c)
    Assert.Equal(VoteWon, MajorityConfig.voteResult (votes [ 1UL, true; 3UL, true ]) c)
    Assert.Equal(VoteLost, MajorityConfig.voteResult (votes [ 1UL, false; 3UL, false ]) c)
    Assert.Equal(VotePending, MajorityConfig.voteResult (votes [ 1UL, false; 3UL, true ]) c)
    let j = { Incoming = c; Outgoing = set [ 4UL; 5UL ] }
    Assert.Equal(VotePending, JointConfig.voteResult (votes [ 1UL, true; 3UL, true ]) j)
    Assert.Equal(VoteLost, JointConfig.voteResult (votes [ 1UL, true; 3UL, true; 4UL, false ]) j)
    Assert.Equal(VoteWon, JointConfig.voteResult (votes [ 1UL, true; 3UL, true; 4UL, true; 5UL, true ]) j)

/// The definition: with voters that acknowledged nothing counted as 0, sort the indexes
/// in descending order and take the one at position quorum-1.
let private sortedCommitted (c: MajorityConfig) (acked: AckedIndexer) =
    if c.IsEmpty then UInt64.MaxValue
    else
        let sorted = c |> Seq.map (fun id -> acked id |> Option.defaultValue 0UL) |> Seq.sortDescending |> Array.ofSeq
        sorted[c.Count / 2]

[<Fact>]
let ``majority committed index equals the quorum-th largest acknowledged index`` () =
    let seed = 20240611UL
    // Up to 9 voters among ids 1..12; each acknowledged a small index or nothing.
    let gen =
        gen {
            let! ids = Gen.subListOf [ 1UL .. 12UL ] |> Gen.map (List.truncate 9)
            let! acks = Gen.listOfLength ids.Length (Gen.optionOf (Gen.choose (0, 20) |> Gen.map uint64))
            return ids, acks
        }
    let prop (ids: uint64 list, acks: uint64 option list) =
        let c = Set.ofList ids
        let m = List.zip ids acks |> List.choose (fun (id, a) -> a |> Option.map (fun a -> id, a)) |> Map.ofList
        let acked id = Map.tryFind id m
        let expected = sortedCommitted c acked
        let actual = MajorityConfig.committedIndex acked c
        (actual = expected
         && actual = Raft.Spec.Tests.QuorumDataDrivenTests.naiveCommittedIndex c acked)
        |> Prop.label (sprintf "seed %d: config %A acks %A: expected %d, got %d" seed ids acks expected actual)
    Check.One(
        Config.QuickThrowOnFailure.WithMaxTest(2000).WithReplay(Some { Rnd = Rnd(seed, 3UL); Size = None }),
        Prop.forAll (Arb.fromGen gen) prop)

// ---- inflights ----

let private addAll (items: (uint64 * uint64) list) ins =
    items |> List.fold (fun ins (i, b) -> Inflights.add i b ins) ins

[<Fact>]
let ``inflights fill up by count`` () =
    let ins = Inflights.create 10 0UL |> addAll [ for i in 0UL .. 4UL -> i, 100UL + i ]
    Assert.Equal(5, ins.Count)
    Assert.Equal(510UL, ins.Bytes)
    Assert.False ins.Full
    let ins = ins |> addAll [ for i in 5UL .. 9UL -> i, 100UL + i ]
    Assert.Equal(10, ins.Count)
    Assert.Equal(1045UL, ins.Bytes)
    Assert.True ins.Full
    Assert.Throws<InvalidOperationException>(fun () -> Inflights.add 10UL 1UL ins |> ignore) |> ignore

[<Fact>]
let ``inflights free up to an index`` () =
    let ins = Inflights.create 10 0UL |> addAll [ for i in 0UL .. 9UL -> i, 100UL + i ]
    let ins = Inflights.freeLE 0UL ins
    Assert.Equal(9, ins.Count)
    Assert.Equal(945UL, ins.Bytes)
    let ins = Inflights.freeLE 4UL ins
    Assert.Equal(5, ins.Count)
    Assert.Equal(535UL, ins.Bytes)
    let ins = Inflights.freeLE 8UL ins
    Assert.Equal(1, ins.Count)
    Assert.Equal(109UL, ins.Bytes)
    // Refilling after partial frees wraps etcd's ring buffer; the window must behave the same.
    let ins = ins |> addAll [ for i in 10UL .. 14UL -> i, 100UL + i ]
    let ins = Inflights.freeLE 12UL ins
    Assert.Equal(2, ins.Count)
    Assert.Equal(227UL, ins.Bytes)
    Assert.Equal<uint64 list>([ 13UL; 14UL ], ins.Items |> List.map (fun f -> f.Index))
    Assert.Equal(ins, Inflights.freeLE 5UL ins) // below the window: nothing to free
    let ins = Inflights.freeLE 14UL ins
    Assert.Equal(0, ins.Count)
    Assert.Equal(0UL, ins.Bytes)
    Assert.Equal(Inflights.create 10 0UL, ins)

[<Fact>]
let ``inflights fill up by bytes, softly`` () =
    let ins = Inflights.create 10 1000UL |> addAll [ 1UL, 400UL; 2UL, 400UL ]
    Assert.False ins.Full
    // The budget is soft: one append may overshoot it, then the window is full.
    let ins = Inflights.add 3UL 400UL ins
    Assert.True ins.Full
    Assert.Equal(1200UL, ins.Bytes)
    let ins = Inflights.freeLE 1UL ins
    Assert.False ins.Full
    Assert.Equal(800UL, ins.Bytes)
    let ins = Inflights.add 4UL 200UL ins
    Assert.True ins.Full // exactly at the budget

[<Fact>]
let ``inflights equality ignores how the queue is split`` () =
    let a = Inflights.create 5 0UL |> addAll [ 1UL, 1UL; 2UL, 1UL; 3UL, 1UL ] |> Inflights.freeLE 1UL |> Inflights.add 4UL 1UL
    let b = Inflights.create 5 0UL |> addAll [ 2UL, 1UL; 3UL, 1UL; 4UL, 1UL ]
    Assert.Equal(a, b)
    Assert.Equal(a.GetHashCode(), b.GetHashCode())
    Assert.NotEqual(a, Inflights.freeLE 2UL b)

// ---- progress ----

let private progress state matchIdx next =
    { Progress.create next (Inflights.create 256 0UL) false with State = state; Match = matchIdx }

[<Fact>]
let ``progress prints all its flags in etcd's order`` () =
    let pr =
        { Match = 1UL
          Next = 2UL
          SentCommit = 0UL
          State = StateSnapshot
          PendingSnapshot = 123UL
          RecentActive = false
          MsgAppFlowPaused = true
          Inflights = Inflights.create 1 0UL |> Inflights.add 123UL 1UL
          IsLearner = true }
    Assert.Equal("StateSnapshot match=1 next=2 learner paused pendingSnap=123 inactive inflight=1[full]", Progress.toString pr)
    let pr = { progress StateReplicate 5UL 6UL with RecentActive = true; Inflights = Inflights.create 3 0UL |> Inflights.add 5UL 1UL }
    Assert.Equal("StateReplicate match=5 next=6 inflight=1", pr.ToString())
    let m = Map.ofList [ 2UL, pr; 1UL, { pr with Match = 0UL; Next = 1UL; State = StateProbe; Inflights = Inflights.create 3 0UL } ]
    Assert.Equal("1: StateProbe match=0 next=1\n2: StateReplicate match=5 next=6 inflight=1\n", ProgressMap.toString m)

[<Fact>]
let ``progress is paused while probing after a probe, when the window is full, or awaiting a snapshot`` () =
    for state, paused, expected in
        [ StateProbe, false, false; StateProbe, true, true; StateReplicate, false, false
          StateReplicate, true, true; StateSnapshot, false, true; StateSnapshot, true, true ] do
        Assert.Equal(expected, Progress.isPaused { progress state 0UL 1UL with MsgAppFlowPaused = paused })

[<Fact>]
let ``acknowledgements and rejections resume a paused flow`` () =
    let pr = { progress StateProbe 0UL 2UL with MsgAppFlowPaused = true }
    let decr = Progress.maybeDecrTo 1UL 1UL pr
    Assert.Equal(Some false, decr |> Option.map (fun p -> p.MsgAppFlowPaused))
    let upd = Progress.maybeUpdate 2UL { decr.Value with MsgAppFlowPaused = true }
    Assert.Equal(Some false, upd |> Option.map (fun p -> p.MsgAppFlowPaused))

[<Fact>]
let ``becoming a prober restarts after Match or after a received snapshot`` () =
    for pr, wantNext in
        [ progress StateReplicate 1UL 5UL, 2UL
          { progress StateSnapshot 1UL 5UL with PendingSnapshot = 10UL }, 11UL
          { progress StateSnapshot 1UL 5UL with PendingSnapshot = 0UL }, 2UL ] do
        let p = Progress.becomeProbe { pr with Inflights = pr.Inflights |> Inflights.add 3UL 1UL }
        Assert.Equal(StateProbe, p.State)
        Assert.Equal(1UL, p.Match)
        Assert.Equal(wantNext, p.Next)
        Assert.Equal(0UL, p.PendingSnapshot)
        Assert.Equal(0, p.Inflights.Count)

[<Fact>]
let ``becoming a replicator or awaiting a snapshot`` () =
    let p = Progress.becomeReplicate (progress StateProbe 1UL 5UL)
    Assert.Equal(StateReplicate, p.State)
    Assert.Equal(1UL, p.Match)
    Assert.Equal(2UL, p.Next)
    let s = Progress.becomeSnapshot 10UL (progress StateProbe 1UL 5UL)
    Assert.Equal(StateSnapshot, s.State)
    Assert.Equal(1UL, s.Match)
    Assert.Equal(10UL, s.PendingSnapshot)
    Assert.Equal(11UL, s.Next)
    Assert.Equal(10UL, s.SentCommit)
    // Back to probing from the snapshot regresses what was sent as commit to below Next.
    let back = Progress.becomeProbe { s with PendingSnapshot = 0UL }
    Assert.Equal(2UL, back.Next)
    Assert.Equal(1UL, back.SentCommit)

[<Fact>]
let ``maybeUpdate raises Match and never lowers Next`` () =
    let prevM, prevN = 3UL, 5UL
    for update, wm, wn, wok in
        [ prevM - 1UL, prevM, prevN, false
          prevM, prevM, prevN, false
          prevM + 1UL, prevM + 1UL, prevN, true
          prevM + 2UL, prevM + 2UL, prevN + 1UL, true ] do
        let pr = progress StateProbe prevM prevN
        let result = Progress.maybeUpdate update pr
        Assert.Equal(wok, result.IsSome)
        let p = defaultArg result pr
        Assert.Equal(wm, p.Match)
        Assert.Equal(wn, p.Next)

[<Fact>]
let ``maybeDecrTo ignores stale rejections and backs off sensibly`` () =
    // state, match, next, rejected, hint, accepted, wanted next
    for state, m, n, rejected, last, w, wn in
        [ StateReplicate, 5UL, 10UL, 5UL, 5UL, false, 10UL // rejected not above match
          StateReplicate, 5UL, 10UL, 4UL, 4UL, false, 10UL
          StateReplicate, 5UL, 10UL, 9UL, 9UL, true, 6UL // straight to match+1
          StateProbe, 0UL, 0UL, 0UL, 0UL, false, 0UL // next-1 != rejected
          StateProbe, 0UL, 10UL, 5UL, 5UL, false, 10UL
          StateProbe, 0UL, 10UL, 9UL, 9UL, true, 9UL // down by one
          StateProbe, 0UL, 2UL, 1UL, 1UL, true, 1UL
          StateProbe, 0UL, 1UL, 0UL, 0UL, true, 1UL // never below 1
          StateProbe, 0UL, 10UL, 9UL, 2UL, true, 3UL // to min(rejected, hint+1)
          StateProbe, 0UL, 10UL, 9UL, 0UL, true, 1UL ] do
        let pr = progress state m n
        let result = Progress.maybeDecrTo rejected last pr
        Assert.Equal(w, result.IsSome)
        let p = defaultArg result pr
        Assert.Equal(m, p.Match)
        Assert.Equal(wn, p.Next)

[<Fact>]
let ``sent entries grow the window and pause the flow when it fills`` () =
    let pr = { progress StateReplicate 0UL 1UL with Inflights = Inflights.create 2 0UL }
    let pr = Progress.sentEntries 3 30UL pr
    Assert.Equal(4UL, pr.Next)
    Assert.Equal(1, pr.Inflights.Count)
    Assert.False pr.MsgAppFlowPaused
    let pr = Progress.sentEntries 0 0UL pr // empty appends take no slot
    Assert.Equal(1, pr.Inflights.Count)
    let pr = Progress.sentEntries 1 10UL pr
    Assert.True pr.MsgAppFlowPaused
    Assert.Equal("StateReplicate match=0 next=5 paused inactive inflight=2[full]", pr.ToString())
    let probe = Progress.sentEntries 1 10UL (progress StateProbe 0UL 1UL)
    Assert.True probe.MsgAppFlowPaused
    Assert.Equal(1UL, probe.Next)
    Assert.False (Progress.sentEntries 0 0UL (progress StateProbe 0UL 1UL)).MsgAppFlowPaused
    Assert.Throws<InvalidOperationException>(fun () -> Progress.sentEntries 1 1UL (progress StateSnapshot 0UL 1UL) |> ignore)
    |> ignore

[<Fact>]
let ``commit index is sent eagerly only until it covers everything sent`` () =
    let pr = progress StateReplicate 3UL 6UL |> Progress.sentCommit 3UL
    Assert.True(Progress.canBumpCommit 4UL pr)
    Assert.False(Progress.canBumpCommit 3UL pr)
    Assert.False(Progress.canBumpCommit 9UL (Progress.sentCommit 5UL pr))

// ---- tracker ----

[<Fact>]
let ``tracker counts votes of voters only and reports activity of a quorum`` () =
    let trk0 = ProgressTracker.create 10 0UL
    let trk =
        match Restore.restore trk0 5UL { ConfState.empty with Voters = [ 1UL; 2UL; 3UL ]; Learners = [ 4UL ] } with
        | Ok(cfg, prs) -> { trk0 with Config = cfg; Progress = prs }
        | Error e -> failwith e
    Assert.Equal<uint64 list>([ 1UL; 2UL; 3UL ], ProgressTracker.voterNodes trk)
    Assert.Equal<uint64 list>([ 4UL ], ProgressTracker.learnerNodes trk)
    Assert.False(ProgressTracker.isSingleton trk)
    let trk =
        trk
        |> ProgressTracker.recordVote 1UL true
        |> ProgressTracker.recordVote 4UL true
        |> ProgressTracker.recordVote 2UL false
        |> ProgressTracker.recordVote 1UL false // only the first answer counts
    Assert.Equal((1, 1, VotePending), ProgressTracker.tallyVotes trk)
    Assert.Equal((2, 1, VoteWon), ProgressTracker.tallyVotes (ProgressTracker.recordVote 3UL true trk))
    Assert.Equal((0, 0, VotePending), ProgressTracker.tallyVotes (ProgressTracker.resetVotes trk))
    // New members start active; deactivate two voters and the quorum is gone.
    Assert.True(ProgressTracker.quorumActive trk)
    let inactive id (t: ProgressTracker) : ProgressTracker =
        { t with Progress = t.Progress |> Map.change id (Option.map (fun p -> { p with RecentActive = false })) }
    Assert.True(ProgressTracker.quorumActive (inactive 1UL trk |> inactive 4UL))
    Assert.False(ProgressTracker.quorumActive (inactive 1UL trk |> inactive 2UL))
    let matched id m (t: ProgressTracker) : ProgressTracker =
        { t with Progress = t.Progress |> Map.change id (Option.map (fun p -> { p with Match = m })) }
    Assert.Equal(7UL, ProgressTracker.committed (trk |> matched 1UL 9UL |> matched 2UL 7UL |> matched 4UL 20UL))

// ---- conf changes ----

let private cs voters outgoing learners learnersNext autoLeave : ConfState =
    { Voters = voters; VotersOutgoing = outgoing; Learners = learners; LearnersNext = learnersNext; AutoLeave = autoLeave }

[<Fact>]
let ``restore rebuilds every kind of ConfState`` () =
    let trk = ProgressTracker.create 10 0UL
    for state in
        [ cs [] [] [] [] false
          cs [ 1UL; 2UL; 3UL ] [] [] [] false
          cs [ 1UL; 2UL; 3UL ] [] [ 4UL ] [] false
          cs [ 1UL; 2UL; 3UL ] [ 1UL; 2UL; 4UL; 6UL ] [ 5UL ] [ 4UL ] false
          cs [ 1UL; 2UL; 3UL ] [ 1UL; 2UL; 4UL; 6UL ] [ 5UL ] [ 4UL ] true
          cs [ 8UL ] [ 1UL; 2UL ] [ 3UL ] [ 1UL ] true ] do
        match Restore.restore trk 10UL state with
        | Error e -> failwithf "%A: %s" state e
        | Ok(cfg, prs) ->
            Assert.Equal(state, TrackerConfig.confState cfg)
            let members = List.concat [ state.Voters; state.VotersOutgoing; state.Learners ] |> Set.ofList
            Assert.Equal<Set<uint64>>(members, prs |> Map.keys |> Set.ofSeq)
            for KeyValue(_, pr) in prs do
                Assert.Equal(10UL, pr.Next)
                Assert.True pr.RecentActive

[<Fact>]
let ``restoring an impossible ConfState fails with etcd's error`` () =
    let trk = ProgressTracker.create 10 0UL
    Assert.Equal(Error "removed all voters", Restore.restore trk 0UL (cs [] [] [ 1UL ] [] false))

[<Fact>]
let ``joint consensus demotes an outgoing voter through LearnersNext`` () =
    let trk0 = ProgressTracker.create 10 0UL
    let apply (trk: ProgressTracker) (r: ChangeResult) =
        match r with
        | Ok(cfg, prs) -> { trk with Config = cfg; Progress = prs }
        | Error e -> failwith e
    let ccs text = ConfChangeText.parse text |> Result.defaultWith failwith
    let trk = Changer.simple trk0 0UL (ccs "v1") |> apply trk0
    let trk = Changer.simple trk 1UL (ccs "v2") |> apply trk
    let trk = Changer.simple trk 2UL (ccs "v3") |> apply trk
    Assert.Equal(Error "more than one voter changed without entering joint config", Changer.simple trk 3UL (ccs "v4 v5"))
    let joint = Changer.enterJoint trk 3UL true (ccs "l3 v4") |> apply trk
    Assert.Equal("voters=(1 2 4)&&(1 2 3) learners_next=(3) autoleave", TrackerConfig.toString joint.Config)
    Assert.Equal(Error "config is already joint", Changer.enterJoint joint 4UL false [])
    Assert.Equal(Error "can't apply simple config change in joint config", Changer.simple joint 4UL (ccs "v9"))
    let left = Changer.leaveJoint joint 4UL |> apply joint
    Assert.Equal("voters=(1 2 4) learners=(3)", TrackerConfig.toString left.Config)
    Assert.True left.Progress[3UL].IsLearner
    Assert.Equal(Error "can't leave a non-joint config", Changer.leaveJoint left 5UL)
    Assert.Equal(Error "can't make a zero-voter config joint", Changer.enterJoint trk0 0UL false (ccs "v1"))

[<Fact>]
let ``conversions between v1 and v2 changes`` () =
    let v1: ConfChange = { Type = ConfChangeAddLearnerNode; NodeId = 7UL; Context = [| 1uy |]; Id = 3UL }
    let v2 = ConfChangeI.asV2 (ConfChangeV1 v1)
    Assert.Equal(ConfChangeTransitionAuto, v2.Transition)
    Assert.Equal<ConfChangeSingle list>([ { Type = ConfChangeAddLearnerNode; NodeId = 7UL } ], v2.Changes)
    Assert.Equal<byte[]>([| 1uy |], v2.Context)
    Assert.Equal(Some v1, ConfChangeI.asV1 (ConfChangeV1 v1))
    Assert.Equal(None, ConfChangeI.asV1 (ConfChangeV2Change v2))
    Assert.Equal(v2, ConfChangeI.asV2 (ConfChangeV2Change v2))
    let single = v2.Changes
    let two = single @ single
    let mk t ch = { Transition = t; Changes = ch; Context = [||] }
    Assert.Equal(None, ConfChangeV2.enterJoint (mk ConfChangeTransitionAuto single))
    Assert.Equal(Some true, ConfChangeV2.enterJoint (mk ConfChangeTransitionAuto two))
    Assert.Equal(Some true, ConfChangeV2.enterJoint (mk ConfChangeTransitionJointImplicit single))
    Assert.Equal(Some false, ConfChangeV2.enterJoint (mk ConfChangeTransitionJointExplicit single))
    Assert.True(ConfChangeV2.leaveJoint { mk ConfChangeTransitionAuto [] with Context = [| 9uy |] })
    Assert.False(ConfChangeV2.leaveJoint (mk ConfChangeTransitionJointExplicit []))
    Assert.False(ConfChangeV2.leaveJoint (mk ConfChangeTransitionAuto single))
    Assert.Equal("ConfChangeAddNode(1) ConfChangeRemoveNode(2)",
                 Changer.describe [ { Type = ConfChangeAddNode; NodeId = 1UL }; { Type = ConfChangeRemoveNode; NodeId = 2UL } ])

// ---- properties ----

type private InflightOp =
    | Add of bytes: uint64
    | Free of upTo: uint64

[<Fact>]
let ``inflights behave like a list of appends (model check)`` () =
    let seed = 77UL
    let op =
        Gen.frequency
            [ 3, Gen.choose (0, 50) |> Gen.map (uint64 >> Add)
              2, Gen.choose (0, 40) |> Gen.map (uint64 >> Free) ]
    let gen =
        gen {
            let! size = Gen.choose (1, 6)
            let! maxBytes = Gen.elements [ 0UL; 30UL; 100UL ]
            let! ops = Gen.listOf op
            return size, maxBytes, ops
        }
    let prop (size: int, maxBytes: uint64, ops: InflightOp list) =
        // The model: the appends in flight, oldest first. Indexes increase by one per add.
        let mutable model: Inflight list = []
        let mutable next = 1UL
        let mutable ins = Inflights.create size maxBytes
        let mutable ok = true
        for o in ops do
            let modelBytes = model |> List.sumBy (fun f -> f.Bytes)
            let modelFull = model.Length = size || (maxBytes <> 0UL && modelBytes >= maxBytes)
            ok <- ok && ins.Full = modelFull
            match o with
            | Add b when not modelFull ->
                ins <- Inflights.add next b ins
                model <- model @ [ { Index = next; Bytes = b } ]
                next <- next + 1UL
            | Add _ -> ()
            | Free upTo ->
                ins <- Inflights.freeLE upTo ins
                model <- model |> List.filter (fun f -> f.Index > upTo)
            ok <-
                ok && ins.Items = model && ins.Count = model.Length
                && ins.Bytes = (model |> List.sumBy (fun f -> f.Bytes))
        ok |> Prop.label (sprintf "seed %d" seed)
    Check.One(
        Config.QuickThrowOnFailure.WithMaxTest(500).WithReplay(Some { Rnd = Rnd(seed, 3UL); Size = None }),
        Prop.forAll (Arb.fromGen gen) prop)

[<Fact>]
let ``every configuration reached by changes is restored from its ConfState`` () =
    let seed = 4242UL
    let change =
        gen {
            let! t = Gen.elements [ ConfChangeAddNode; ConfChangeAddLearnerNode; ConfChangeRemoveNode; ConfChangeUpdateNode ]
            let! id = Gen.choose (1, 6)
            return ({ Type = t; NodeId = uint64 id }: ConfChangeSingle)
        }
    // A step: a simple change, entering a joint config (auto-leave or not), or leaving it.
    let step = Gen.oneof [ Gen.listOfLength 1 change |> Gen.map (fun c -> 0, c); Gen.nonEmptyListOf change |> Gen.map (fun c -> 1, c); Gen.constant (2, []) ]
    let prop (steps: (int * ConfChangeSingle list) list) =
        let trk0 = ProgressTracker.create 10 0UL
        let start = Changer.simple trk0 0UL [ { Type = ConfChangeAddNode; NodeId = 1UL } ]
        let mutable trk =
            match start with
            | Ok(cfg, prs) -> { trk0 with Config = cfg; Progress = prs }
            | Error e -> failwith e
        let mutable ok = true
        let mutable applied = 0
        for i, (kind, ccs) in List.indexed steps do
            let last = uint64 i
            let r =
                match kind with
                | 0 -> Changer.simple trk last ccs
                | 1 -> Changer.enterJoint trk last (i % 2 = 0) ccs
                | _ -> Changer.leaveJoint trk last
            match r with
            | Error _ -> ()
            | Ok(cfg, prs) ->
                applied <- applied + 1
                trk <- { trk with Config = cfg; Progress = prs }
                let cs = TrackerConfig.confState cfg
                match Restore.restore trk0 last cs with
                | Ok(cfg2, prs2) ->
                    ok <-
                        ok && cfg2 = cfg
                        && Set.ofSeq (Map.keys prs2) = Set.ofSeq (Map.keys prs)
                        && (prs2 |> Map.forall (fun id pr -> pr.IsLearner = prs[id].IsLearner))
                | Error _ -> ok <- false
        ok |> Prop.label (sprintf "seed %d, %d changes applied" seed applied)
    Check.One(
        Config.QuickThrowOnFailure.WithMaxTest(300).WithReplay(Some { Rnd = Rnd(seed, 3UL); Size = None }),
        Prop.forAll (Arb.fromGen (Gen.listOf step)) prop)

[<Fact>]
let ``the tracker's committed index is the joint quorum's over the progress Match`` () =
    let rnd = System.Random 20261122
    for _ in 1..500 do
        let ids n = Set.ofList [ for _ in 1..n -> uint64 (rnd.Next(1, 8)) ]
        let incoming, outgoing = ids (rnd.Next(0, 6)), ids (rnd.Next(0, 4))
        // Some voters have no progress (acknowledged nothing).
        let tracked = Set.union incoming outgoing |> Set.filter (fun _ -> rnd.Next 5 <> 0)
        let t0 = ProgressTracker.create 256 0UL
        let prs =
            tracked
            |> Seq.map (fun id ->
                id, { Progress.create 1UL (ProgressTracker.newInflights t0) false with Match = uint64 (rnd.Next 10) })
            |> Map.ofSeq
        let t =
            { t0 with
                Config = { TrackerConfig.empty with Voters = { Incoming = incoming; Outgoing = outgoing } }
                Progress = prs }
        Assert.Equal(JointConfig.committedIndex (ProgressTracker.ackedIndex t) t.Config.Voters, ProgressTracker.committed t)
