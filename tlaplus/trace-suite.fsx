// The simulator traces of the trace-validation suite (tlaplus/check-traces.sh):
//
//   dotnet fsi trace-suite.fsx OUTDIR COUNT STEPS
//
// writes OUTDIR/sim-NNN.ndjson for NNN = 1..COUNT: seeded runs of the cluster simulator
// (src/Raft.Spec/Simulator.fs, what `raftv simulate --trace` runs) that cycle through
// PreVote/CheckQuorum on and off, the fault kinds (drop, duplicate, reorder, delay,
// partition, crash/restart, slow disk), 3 and 5 voters, with conf changes (simple, joint,
// learners), compaction and snapshots, leadership transfers and reads. Each file starts
// with TraceRaft.tla's options line (how the run started, and the command that replays it).
// Prints one line per trace with what it covers, then the totals; exits 1 if a run violated
// an invariant (the simulator checks them after every step).
//
// check-traces.sh copies this script next to a "lib" link to the built assemblies.
#r "lib/Raft.Spec.dll"
#r "lib/Raft.Host.dll"

open System
open System.IO
open Raft.Spec
open Raft.Host.Tracing

let usage () =
    eprintfn "usage: dotnet fsi trace-suite.fsx OUTDIR COUNT STEPS"
    exit 2

let argv = fsi.CommandLineArgs |> Array.skip 1
if argv.Length <> 3 then usage ()
let outDir = argv[0]
let count, steps =
    match Int32.TryParse argv[1], Int32.TryParse argv[2] with
    | (true, c), (true, s) when c > 0 && s > 0 -> c, s
    | _ -> usage ()

/// The fault mixes, in turn: each kind alone or with the ones it interacts with.
let faultMixes =
    [| "drop,duplicate,reorder"; "delay,partition"; "crash"; "crash,slowdisk,drop"
       "reorder,partition,duplicate"; "all" |]

/// The run of trace k (0-based): the settings cycle fastest, then the faults, so that every
/// setting meets every mix.
let optionsOf (k: int) : SimOptions =
    let preVote = k % 2 = 1
    let checkQuorum = (k / 2) % 2 = 1
    let faults =
        match Fault.parseList faultMixes[(k / 4) % faultMixes.Length] with
        | Ok f -> f
        | Error e -> failwith e
    let voters = if k % 8 = 7 then 5 else 3
    SimOptions.create voters (uint64 (1000 + k)) steps faults
    |> SimOptions.withTracing true
    |> SimOptions.withPreVote preVote
    |> SimOptions.withCheckQuorum checkQuorum

/// TraceRaft.tla's options line: the simulator's bootstrap (the voters start from a
/// snapshot at index 1, term 1) and the settings; the replay command is for people.
let optionsLine (o: SimOptions) =
    TraceNdjson.FormatOptions(
        TraceRunOptions(
            Voters = [| for v in 1 .. o.Voters -> uint64 v |],
            Boot = TraceBoot.Snapshot,
            BootIndex = 1UL,
            BootTerm = 1UL,
            PreVote = defaultArg o.PreVote false,
            CheckQuorum = defaultArg o.CheckQuorum false,
            Replay = Simulator.replayCommand o + " --trace FILE"
        )
    )

/// What a trace exercises, by name.
let features (o: SimOptions) (sim: Sim) (events: TraceEvent list) : Map<string, int> =
    let count p = events |> List.filter p |> List.length
    let isMsg t (e: TraceEvent) = e.Message |> Option.exists (fun m -> m.Type = t)
    let changes (e: TraceEvent) = e.ConfChange |> Option.map (fun c -> c.Changes) |> Option.defaultValue []
    // With PreVote a campaign starts as a pre-candidate, except one MsgTimeoutNow starts: a
    // BecomeCandidate with no pre-candidate state of the node before it is a transfer.
    let transfers =
        if o.PreVote <> Some true then 0
        else
            events
            |> List.fold
                (fun (pre: Set<uint64>, n) e ->
                    match e.Name with
                    | "BecomeCandidate" -> Set.remove e.NodeId pre, (if pre.Contains e.NodeId then n else n + 1)
                    | "BecomeFollower" | "BecomeLeader" | "InitState" -> Set.remove e.NodeId pre, n
                    | _ when e.Role = StatePreCandidate -> Set.add e.NodeId pre, n
                    | _ -> pre, n)
                (Set.empty, 0)
            |> snd
    let fault name = sim.Stats.Faults |> Map.tryFind name |> Option.defaultValue 0
    Map.ofList
        [ "elections", count (fun e -> e.Name = "BecomeLeader")
          "commits", count (fun e -> e.Name = "Commit")
          "confchanges", count (fun e -> e.Name = "ChangeConf")
          "joint", count (fun e -> e.Name = "ApplyConfChange" && not (snd e.Conf).IsEmpty)
          "learners", count (fun e -> changes e |> List.exists (fun c -> c.Type = ConfChangeAddLearnerNode))
          "snapshots", count (fun e -> e.Name = "SendAppendEntriesRequest" && isMsg MsgSnap e)
          "transfers", transfers
          "restarts", count (fun e -> e.Name = "InitState")
          "drop", fault "drop"
          "duplicate", fault "duplicate"
          "delay", fault "delay"
          "partition", fault "partition-drop"
          "reorder", (if o.Faults.Contains Fault.Reorder then sim.Stats.Delivered else 0) ]

Directory.CreateDirectory outDir |> ignore
let mutable totals = Map.empty<string, int>
let mutable failed = false
for k in 0 .. count - 1 do
    let o = optionsOf k
    match Simulator.run o with
    | Error e ->
        eprintfn "trace %d: %s" (k + 1) e
        failed <- true
    | Ok outcome ->
        let path = Path.Combine(outDir, sprintf "sim-%03d.ndjson" (k + 1))
        let events = Simulator.traces outcome.Final
        do
            use w = new StreamWriter(path)
            w.WriteLine(optionsLine o)
            // Timestamps count events from the epoch, so that a seed always writes the same file.
            events
            |> List.iteri (fun i e -> w.WriteLine(TraceNdjson.Format(e, DateTimeOffset.UnixEpoch.AddMilliseconds(float i))))
        match outcome.Violation with
        | Some v ->
            eprintfn "trace %d: VIOLATION %s; replay: %s" (k + 1) (Simulator.describeViolation v) (Simulator.replayCommand o)
            failed <- true
        | None -> ()
        let f = features o outcome.Final events
        totals <- f |> Map.fold (fun acc key v -> acc |> Map.change key (fun c -> Some(defaultArg c 0 + v))) totals
        let shown = f |> Map.toList |> List.filter (fun (_, v) -> v > 0) |> List.map (fun (n, v) -> sprintf "%s=%d" n v)
        printfn "%s: %d events, prevote=%b checkquorum=%b faults=%s; %s"
            (Path.GetFileName path) events.Length (defaultArg o.PreVote false) (defaultArg o.CheckQuorum false)
            (Fault.listText o.Faults) (String.Join(" ", shown))
printfn "totals: %s" (totals |> Map.toList |> List.map (fun (n, v) -> sprintf "%s=%d" n v) |> String.concat " ")
exit (if failed then 1 else 0)
