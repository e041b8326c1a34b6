/// The cluster simulator: random runs over many seeds with every fault kind, replay and
/// determinism, FsCheck-generated schedules shrunk to a minimal failing one, and mutants of
/// the environment that the invariant checks must catch.
module Raft.Spec.Tests.SimulatorTests

open System
open Xunit
open FsCheck
open FsCheck.FSharp
open Raft.Spec

// ---- helpers -------------------------------------------------------------------------------

let private runOrFail (o: SimOptions) : SimOutcome =
    match Simulator.run o with
    | Ok out -> out
    | Error e -> failwithf "invalid options: %s" e

/// Fails with the invariant, the step, the seed and the replay command.
let private assertNoViolation (o: SimOptions) (out: SimOutcome) =
    match out.Violation with
    | None -> ()
    | Some v ->
        failwithf "%s\nreplay: %s" (Simulator.describeViolation v) (Simulator.replayCommand o)

let private runSeeds (voters: int) (faults: Fault list) (seeds: uint64 list) (steps: int) : SimOutcome list =
    [ for seed in seeds do
          let o = SimOptions.create voters seed steps (Set.ofList faults)
          let out = runOrFail o
          assertNoViolation o out
          yield out ]

// ---- random runs ---------------------------------------------------------------------------

[<Theory>]
[<InlineData("drop")>]
[<InlineData("duplicate")>]
[<InlineData("reorder")>]
[<InlineData("delay")>]
[<InlineData("partition")>]
[<InlineData("crash")>]
[<InlineData("slowdisk")>]
let ``random runs with one fault kind keep every invariant`` (fault: string) =
    let faults =
        match Fault.parseList fault with
        | Ok f -> Set.toList f
        | Error e -> failwith e
    let outs = runSeeds 3 faults [ 1UL .. 8UL ] 1500
    // The fault was really injected (reorder is a delivery order, not a counted fault).
    if fault <> "reorder" then
        let injected = outs |> List.sumBy (fun o -> o.Final.Stats.Faults |> Map.toSeq |> Seq.sumBy snd)
        Assert.True(injected > 0, sprintf "no %s fault was injected" fault)

[<Fact>]
let ``random runs with all faults keep every invariant (3 nodes)`` () =
    let outs = runSeeds 3 Fault.all [ 100UL .. 129UL ] 2000
    // The runs do something: elections, commits, conf changes, snapshots, reads.
    let total f = outs |> List.sumBy f
    Assert.True(total (fun o -> o.Final.Stats.Elections) > 30, "too few elections")
    Assert.True(total (fun o -> int o.Final.History.MaxCommitted) > 300, "too few commits")
    Assert.True(total (fun o -> o.Final.Stats.ConfChangesApplied) > 0, "no conf change applied")
    Assert.True(total (fun o -> o.Final.Stats.SnapshotsInstalled) > 0, "no snapshot installed")
    Assert.True(total (fun o -> o.Final.Stats.ReadsAnswered) > 0, "no read answered")

[<Fact>]
let ``random runs with all faults keep every invariant (5 nodes, 1 node)`` () =
    runSeeds 5 Fault.all [ 200UL .. 207UL ] 2000 |> ignore
    runSeeds 1 Fault.all [ 300UL .. 303UL ] 1000 |> ignore

[<Fact>]
let ``without faults a cluster elects a leader and commits proposals`` () =
    for seed in 1UL .. 5UL do
        let o = { SimOptions.create 3 seed 1500 Set.empty with ConfChanges = false }
        let out = runOrFail o
        assertNoViolation o out
        Assert.True(out.Final.Stats.Elections >= 1, sprintf "seed %d: no leader elected" seed)
        Assert.True(out.Final.History.MaxCommitted >= 20UL, sprintf "seed %d: only %d committed" seed out.Final.History.MaxCommitted)

// ---- determinism and replay ----------------------------------------------------------------

[<Fact>]
let ``the same seed gives the same run, and its events replay it exactly`` () =
    let o = SimOptions.create 3 42UL 1500 (Set.ofList Fault.all)
    let a = runOrFail o
    let b = runOrFail o
    Assert.Equal(Simulator.summary a.Final, Simulator.summary b.Final)
    let replayed =
        match Simulator.runSchedule o a.Events with
        | Ok r -> r
        | Error e -> failwith e
    Assert.Equal(Simulator.summary a.Final, Simulator.summary replayed.Final)
    Assert.True((a.Final.History.Committed = replayed.Final.History.Committed), "committed histories differ")

[<Fact>]
let ``schedules round-trip through their text form`` () =
    let o = SimOptions.create 4 7UL 800 (Set.ofList Fault.all)
    let events = (runOrFail o).Events
    let text = SimEvent.formatSchedule events
    Assert.Equal<SimEvent list>(events, SimEvent.parseSchedule text |> Result.defaultWith failwith)
    Assert.True(SimEvent.parseSchedule "tick 0; bogus 1" |> Result.isError)

[<Fact>]
let ``fault lists parse by name`` () =
    Assert.Equal<Set<Fault>>(Set.ofList Fault.all, Fault.parseList "all" |> Result.defaultWith failwith)
    Assert.Equal<Set<Fault>>(set [ Fault.Drop; Fault.Crash ], Fault.parseList "drop, crash" |> Result.defaultWith failwith)
    Assert.True(Fault.parseList "drop,meteor" |> Result.isError)

// ---- SpecMap ---------------------------------------------------------------------------------

[<Fact>]
let ``SpecMap views a fresh node as the spec's initial state after the bootstrap snapshot`` () =
    let sim = Simulator.create (SimOptions.create 3 1UL 0 Set.empty) |> Result.defaultWith failwith
    let n = sim.Nodes[0]
    let s = SpecMap.toSpecState n.Raw.Raft n.Storage
    Assert.Equal(0UL, s.CurrentTerm)
    Assert.Equal(NodeId.None, s.VotedFor)
    Assert.Empty(s.Log)
    Assert.Equal(1UL, s.SnapshotIndex)
    Assert.Equal(1UL, s.SnapshotTerm)
    Assert.Equal(1UL, s.StableIndex)
    Assert.Equal(StateFollower, s.Role)
    Assert.Equal<Set<uint64>>(set [ 1UL; 2UL; 3UL ], s.Config.Voters)
    Assert.Equal(s.Config, s.SnapshotConfig)
    Assert.Equal("Follower", SpecState.roleName s.Role)

[<Fact>]
let ``SpecMap separates the durable prefix from the unstable tail and sees the leader's progress`` () =
    let o = { SimOptions.create 3 5UL 1200 Set.empty with ConfChanges = false }
    let out = runOrFail o
    assertNoViolation o out
    let sim = out.Final
    let leader = sim.Nodes |> Array.tryFind (fun n -> n.Raw.Raft.State = StateLeader)
    Assert.True(leader.IsSome, "no leader at the end of the run")
    let n = leader.Value
    let s = SpecMap.toSpecState n.Raw.Raft n.Storage
    Assert.Equal(StateLeader, s.Role)
    Assert.Equal(n.Id, s.Leader)
    Assert.Equal(RaftLog.lastIndex n.Raw.Raft.RaftLog, SpecState.lastIndex s)
    Assert.True(s.StableIndex <= SpecState.lastIndex s)
    Assert.True(s.StableIndex <= max (MemoryStorage.lastIndex n.Storage) s.SnapshotIndex)
    Assert.Equal(MemoryStorage.hardState n.Storage, s.HardState)
    Assert.Equal<Set<uint64>>(set [ 1UL; 2UL; 3UL ], s.MatchIndex |> Map.keys |> Set.ofSeq)
    Assert.True(s.CommitIndex <= SpecState.lastIndex s)
    // Every entry of the view is where its index says.
    s.Log |> Array.iteri (fun k e -> Assert.Equal(s.SnapshotIndex + 1UL + uint64 k, e.Index))

// ---- FsCheck schedules --------------------------------------------------------------------

let private genEvent (nodes: int) : Gen<SimEvent> =
    let node = Gen.choose (0, nodes - 1)
    let pick = Gen.choose (0, 12)
    let change =
        Gen.oneof
            [ node |> Gen.map SimConfChange.AddVoter
              node |> Gen.map SimConfChange.AddLearner
              node |> Gen.map SimConfChange.Remove
              Gen.map2 (fun a b -> SimConfChange.Joint(a, b)) node node
              Gen.map2 (fun a b -> SimConfChange.JointImplicit(a, b)) node node
              Gen.constant SimConfChange.LeaveJoint ]
    Gen.frequency
        [ 30, node |> Gen.map SimEvent.Tick
          40, pick |> Gen.map SimEvent.Deliver
          20, node |> Gen.map SimEvent.ProcessReady
          20, node |> Gen.map SimEvent.FinishWrite
          6, node |> Gen.map SimEvent.Propose
          2, Gen.map2 (fun n c -> SimEvent.ConfChange(n, c)) node change
          1, Gen.map2 (fun a b -> SimEvent.TransferLeader(a, b)) node node
          2, node |> Gen.map SimEvent.ReadIndex
          1, node |> Gen.map SimEvent.Compact
          3, pick |> Gen.map SimEvent.Drop
          2, pick |> Gen.map SimEvent.Duplicate
          1, Gen.map2 (fun p s -> SimEvent.Delay(p, s)) pick (Gen.choose (1, 40))
          1, Gen.map2 (fun s ns -> SimEvent.Partition(s, ns)) (Gen.choose (5, 80)) (Gen.subListOf [ 0 .. nodes - 1 ])
          1, Gen.constant SimEvent.Heal
          2, node |> Gen.map SimEvent.Restart
          1, Gen.map2 (fun n s -> SimEvent.SlowDisk(n, s)) node (Gen.choose (1, 40)) ]

/// Schedules of two kinds: mostly the events the simulator's own scheduler draws from a
/// generated seed (they are realistic: only enabled events, with all faults), and some
/// arbitrary event lists (mostly no-ops, but anything goes).
let private genSchedule (o: SimOptions) : Gen<SimEvent list> =
    let drawn =
        gen {
            let! seed = Gen.choose (0, Int32.MaxValue)
            let! steps = Gen.choose (100, 600)
            let opts =
                { o with Seed = uint64 seed; Steps = steps; Faults = Set.ofList Fault.all; CheckInvariants = false }
            return (Simulator.run opts |> Result.defaultWith failwith).Events
        }
    let arbitrary =
        gen {
            let! length = Gen.choose (50, 400)
            return! Gen.listOfLength length (genEvent (o.Voters + o.Spares))
        }
    Gen.frequency [ 4, drawn; 1, arbitrary ]

/// Delta debugging on the list: drop halves, quarters, ... down to single events.
let private shrinkSchedule (events: SimEvent list) : seq<SimEvent list> =
    let arr = List.toArray events
    let n = arr.Length
    let sizes = Seq.unfold (fun s -> if s < 1 then None else Some(s, s / 2)) (n / 2)
    seq {
        for size in sizes do
            for start in 0..size .. n - size do
                yield Array.append arr[.. start - 1] arr[start + size ..] |> Array.toList
    }

let private scheduleArb (o: SimOptions) = Arb.fromGenShrink (genSchedule o, shrinkSchedule)

/// Checks that no generated schedule violates an invariant. Returns the minimal failing
/// schedule (FsCheck's shrinking) with its violation, if any.
/// Also counts the runs, elections and commits seen, to show the schedules do something.
let private checkSchedules (o: SimOptions) (fsSeed: uint64) (tests: int) : (SimEvent list * Violation) option * (int * int * uint64) =
    // The last failing schedule FsCheck evaluated is the shrunk one.
    let lastFailure = ref None
    let seen = ref (0, 0, 0UL)
    let prop (events: SimEvent list) =
        match Simulator.runSchedule o events with
        | Error e -> failwith e
        | Ok out ->
            let runs, elections, commits = seen.Value
            seen.Value <- runs + 1, elections + out.Final.Stats.Elections, commits + out.Final.History.MaxCommitted
            match out.Violation with
            | Some v ->
                lastFailure.Value <- Some(out.Events, v)
                false
            | None -> true
    let config =
        Config.QuickThrowOnFailure.WithReplay(Some { Rnd = Rnd(fsSeed, 3UL); Size = None }).WithMaxTest(tests).WithQuietOnSuccess(true)
    try
        Check.One(config, Prop.forAll (scheduleArb o) prop)
        None, seen.Value
    with _ when lastFailure.Value.IsSome ->
        lastFailure.Value, seen.Value

let private replayHint (o: SimOptions) (events: SimEvent list) = Simulator.replayScheduleCommand o events

[<Theory>]
[<InlineData(false, 11UL)>]
[<InlineData(true, 12UL)>]
let ``generated schedules keep every invariant`` (prevoteAndCheckQuorum: bool) (fsSeed: uint64) =
    let o =
        { SimOptions.create 3 fsSeed 0 Set.empty with
            PreVote = Some prevoteAndCheckQuorum
            CheckQuorum = Some prevoteAndCheckQuorum }
    match checkSchedules o fsSeed 150 with
    | None, (runs, elections, commits) ->
        Assert.Equal(150, runs)
        Assert.True(elections > 60 && commits > 300UL, sprintf "schedules did little: %d elections, %d commits" elections commits)
    | Some(events, v), _ ->
        failwithf
            "FsCheck seed %d: %s\nminimal schedule (%d events): %s\nreplay: %s"
            fsSeed (Simulator.describeViolation v) events.Length (SimEvent.formatSchedule events) (replayHint o events)

// ---- mutants: the invariants must bite ---------------------------------------------------------

/// Searches seeds in order for a run of the mutant that violates an invariant.
let private findViolation (mutant: Mutant) (seeds: uint64 list) : (SimOptions * Violation) option =
    seeds
    |> List.tryPick (fun seed ->
        let o = { SimOptions.create 3 seed 2000 (Set.ofList Fault.all) with Mutants = set [ mutant ] }
        (runOrFail o).Violation |> Option.map (fun v -> o, v))

[<Theory>]
[<InlineData("ack-before-persist", "CommittedIsDurable")>]
[<InlineData("forget-vote-on-restart", "VoteOnce")>]
[<InlineData("disk-loses-tail", "CommittedIsDurable")>]
let ``a mutant of the environment is caught by the invariant meant for it`` (mutant: string) (invariant: string) =
    let m = Mutant.parse mutant |> Result.defaultWith failwith
    match findViolation m [ 1UL .. 40UL ] with
    | None -> failwithf "mutant %s survived 40 seeds" mutant
    | Some(o, v) ->
        Assert.True(
            (v.Invariant = invariant),
            sprintf "mutant %s was caught by %s, not %s: %s\nreplay: %s" mutant v.Invariant invariant (Simulator.describeViolation v) (Simulator.replayCommand o)
        )

[<Fact>]
let ``mutants are off by default`` () =
    Assert.True((SimOptions.create 3 1UL 10 Set.empty).Mutants.IsEmpty)

[<Fact>]
let ``FsCheck shrinks a mutant's failing schedule to a short one that replays to the same violation`` () =
    let o =
        { SimOptions.create 3 21UL 0 Set.empty with
            PreVote = Some false
            CheckQuorum = Some false
            Mutants = set [ Mutant.AckBeforePersist ] }
    match checkSchedules o 21UL 200 with
    | None, _ -> failwith "ack-before-persist survived 200 generated schedules"
    | Some(events, v), _ ->
        printfn "ack-before-persist, minimal schedule (%d events): %s" events.Length (replayHint o events)
        // Short: an election and one replicated entry are enough to show it.
        Assert.True(events.Length <= 60, sprintf "shrunk schedule has %d events: %s" events.Length (SimEvent.formatSchedule events))
        let replayed = Simulator.runSchedule o events |> Result.defaultWith failwith
        Assert.True(replayed.Violation.IsSome, "the shrunk schedule does not replay the violation")
        Assert.Equal(v.Invariant, replayed.Violation.Value.Invariant)
        // And through its text form, as printed.
        let parsed = SimEvent.parseSchedule (SimEvent.formatSchedule events) |> Result.defaultWith failwith
        let again = Simulator.runSchedule o parsed |> Result.defaultWith failwith
        Assert.Equal(Some v.Invariant, again.Violation |> Option.map (fun v -> v.Invariant))
