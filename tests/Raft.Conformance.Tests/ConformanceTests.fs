/// The conformance suite: every stored state graph of tlaplus/graph is replayed on the
/// implementation (src/Raft.Spec), edge by edge, and every input the implementation
/// accepts in a graph state must be a step of the spec. docs/conformance.md explains the
/// mapping and the documented differences.
module Raft.Conformance.ConformanceTests

open System
open System.IO
open System.Text
open Xunit
open Xunit.Abstractions
open Raft.Conformance.SpecState
open Raft.Conformance.Graph
open Raft.Conformance.Replay

/// At most this many failures are printed in full.
let private shown = 15

/// Runs f on every expanded state in parallel and gathers the results in state order.
let private perState (g: Graph) (f: int -> 'a) : 'a[] =
    [| 0 .. g.StateCount - 1 |] |> Array.filter (fun s -> g.Expanded[s]) |> Array.Parallel.map f

type Tests(out: ITestOutputHelper) =
    /// The models stored in tlaplus/graph, as theory data.
    static member Models: seq<obj[]> = graphFiles () |> Seq.map (fun (name, _) -> [| name :> obj |])

    [<Fact>]
    member _.``graphs are stored`` () =
        Assert.NotEmpty(graphFiles ())

    /// The graph must come from the spec files as they are now: regenerate it
    /// (tlaplus/graph/regenerate.sh) whenever Raft.tla or a model changes.
    [<Theory; MemberData(nameof Tests.Models)>]
    member _.``the graph is fresh``(model: string) =
        let g = byModel model
        Assert.NotEmpty g.Stamp
        let stale =
            [ for KeyValue(file, sha) in g.Stamp do
                  let path = Path.Combine(repoRoot (), "tlaplus", file)
                  if not (File.Exists path) then yield sprintf "%s: missing" file
                  else
                      let now = sha256 path
                      if now <> sha then yield sprintf "%s: graph made from %s, file is now %s" file sha now ]
        Assert.True(
            stale.IsEmpty,
            sprintf "the graph of %s is stale; run tlaplus/graph/regenerate.sh %s\n%s" model model (String.concat "\n" stale)
        )

    /// Concretizing a spec state and viewing it back gives the state: the implementation
    /// state chosen for each spec state is one the abstraction maps to it.
    [<Theory; MemberData(nameof Tests.Models)>]
    member _.``every state round-trips through the implementation``(model: string) =
        let g = byModel model
        let md = Replay.model g
        let failures =
            perState g (fun sid ->
                let s = state g sid
                let c = Impl.concretize md.Settings s
                let diffs =
                    [ for KeyValue(j, spec) in s.Nodes do
                          let view, lenient = Impl.viewNode c.Nodes[j]
                          yield! Impl.diffNode spec view lenient ]
                sid, diffs)
            |> Array.filter (fun (_, d) -> not d.IsEmpty)
        for sid, d in Array.truncate shown failures do
            out.WriteLine(sprintf "state %d:\n  %s" sid (String.concat "\n  " d))
        Assert.True(failures.Length = 0, sprintf "%d of the states do not round-trip (first ones above)" failures.Length)

    /// The few spec actions transcribed in Oracle.fs (the steps etcd takes in the same call
    /// as another, and the sends it may make eagerly) agree with TLC on every state: the
    /// transcription is enabled exactly where the graph has the step, and reaches its target.
    [<Theory; MemberData(nameof Tests.Models)>]
    member _.``the transcribed spec actions agree with the graph``(model: string) =
        let g = byModel model
        let md = Replay.model g
        let follow = Oracle.followUps md.Servers |> Map.ofList
        let sends (name: string) (n: NodeS) (j: string) =
            match name with
            | "AppendEntries" -> Oracle.appendEntriesMsg md.MaxAppend n j
            | "Heartbeat" -> Oracle.heartbeatMsg n j
            | _ -> Oracle.snapshotMsg n j
        let same (u: ClusterS) (t: ClusterS) = u.Nodes = t.Nodes && u.Network = t.Network && u.Reads = t.Reads
        let failures =
            perState g (fun sid ->
                let s = state g sid
                let edges = g.Out[sid] |> Array.map (fun (dst, aid) -> g.Actions[aid], dst)
                let has (name: string) (args: string list) (u: ClusterS) =
                    edges
                    |> Array.exists (fun (a, dst) ->
                        a.Name = name && a.Args = (args |> List.map AName) && same u (state g dst))
                let steps =
                    [ for KeyValue(name, f) in follow do
                          for i in md.Servers do
                              match f i s with
                              | Some u -> if not (has name [ i ] u) then yield sprintf "%s(%s): no such edge to the transcribed state" name i
                              | None ->
                                  if edges |> Array.exists (fun (a, _) -> a.Name = name && a.Args = [ AName i ]) then
                                      yield sprintf "%s(%s): in the graph, not enabled in the transcription" name i ]
                let sent =
                    [ for name in [ "AppendEntries"; "Heartbeat"; "SendSnapshot" ] do
                          for i in md.Servers do
                              for j in md.Servers do
                                  match sends name s.Nodes[i] j with
                                  | Some m ->
                                      let u = { s with Network = Oracle.withMessage m s.Network }
                                      if not (has name [ i; j ] u) then
                                          yield sprintf "%s(%s, %s): no such edge sending %s" name i j (showMsg m)
                                  | None ->
                                      if edges |> Array.exists (fun (a, _) -> a.Name = name && a.Args = [ AName i; AName j ]) then
                                          yield sprintf "%s(%s, %s): in the graph, not enabled in the transcription" name i j ]
                sid, steps @ sent)
            |> Array.filter (fun (_, d) -> not d.IsEmpty)
        for sid, d in Array.truncate shown failures do
            out.WriteLine(sprintf "state %d:\n  %s" sid (String.concat "\n  " d))
        Assert.True(failures.Length = 0, sprintf "%d states where Oracle.fs disagrees with the graph" failures.Length)

    /// Every step of the spec out of an explored state, taken by the implementation from
    /// the concrete state of its source, reaches the spec's view of its target (possibly
    /// followed by steps etcd takes in the same call), or is a documented difference.
    [<Theory; MemberData(nameof Tests.Models)>]
    member _.``every edge replays on the implementation``(model: string) =
        let g = byModel model
        let md = Replay.model g
        let sw = Diagnostics.Stopwatch.StartNew()
        let cpu = Diagnostics.Process.GetCurrentProcess().TotalProcessorTime
        let results =
            perState g (fun sid ->
                let s = state g sid
                let c0 = Impl.concretize md.Settings s
                g.Out[sid]
                |> Array.map (fun (dst, aid) ->
                    let a = g.Actions[aid]
                    let o =
                        try replayEdge md s c0 a (state g dst)
                        with e -> Mismatch [ sprintf "exception: %s" (e.ToString()) ]
                    sid, dst, a, o))
            |> Array.concat
        let matched = results |> Array.filter (fun (_, _, _, o) -> match o with Matched _ -> true | _ -> false)
        let documented =
            results |> Array.choose (fun (_, _, a, o) -> match o with Documented why -> Some(a.Name, why) | _ -> None)
        let mismatches =
            results |> Array.choose (fun (s, d, a, o) -> match o with Mismatch m -> Some(s, d, a, m) | _ -> None)
        out.WriteLine(
            sprintf "%s: %d states (%d explored), %d edges replayed in %.1f s (%.1f s CPU): %d matched, %d documented differences, %d mismatches"
                model g.StateCount (g.Expanded |> Array.filter id |> Array.length) results.Length sw.Elapsed.TotalSeconds
                (Diagnostics.Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds
                matched.Length documented.Length mismatches.Length
        )
        for (name, why), n in documented |> Array.countBy id |> Array.sortBy fst do
            out.WriteLine(sprintf "  documented: %s x%d: %s" name n why)
        for name, n in results |> Array.countBy (fun (_, _, a, _) -> a.Name) |> Array.sortBy fst do
            out.WriteLine(sprintf "  %s: %d edges" name n)
        for s, d, a, m in Array.truncate shown mismatches do
            out.WriteLine(sprintf "MISMATCH state %d -%O-> state %d:\n  %s" s a d (String.concat "\n  " m))
        let byAction = mismatches |> Array.countBy (fun (_, _, a, _) -> a.Name)
        Assert.True(
            mismatches.Length = 0,
            sprintf "%d edges do not replay (%s); first ones in the output" mismatches.Length
                (byAction |> Array.map (fun (n, k) -> sprintf "%s x%d" n k) |> String.concat ", ")
        )

    /// Every input the implementation accepts in an explored state (a delivery, a tick, a
    /// proposal, a write, ...) is a step of the spec out of that state, possibly followed by
    /// the steps etcd takes in the same call, or changes nothing the spec sees.
    [<Theory; MemberData(nameof Tests.Models)>]
    member _.``every input the implementation accepts is a spec step``(model: string) =
        let g = byModel model
        let md = Replay.model g
        let ccs = modelConfChanges g
        let values = configNames g "Value" |> List.ofSeq
        let sw = Diagnostics.Stopwatch.StartNew()
        let results =
            perState g (fun sid ->
                let s = state g sid
                let c0 = Impl.concretize md.Settings s
                inputs md ccs values s
                |> List.map (fun input ->
                    let o = try converse md sid s c0 input with e -> Unmatched [ sprintf "exception: %s" (e.ToString()) ]
                    sid, input, o)
                |> Array.ofList)
            |> Array.concat
        let count f = results |> Array.filter (fun (_, _, o) -> f o) |> Array.length
        let unmatched = results |> Array.choose (fun (s, i, o) -> match o with Unmatched d -> Some(s, i, d) | _ -> None)
        out.WriteLine(
            sprintf "%s: %d inputs in %d states in %.1f s: %d spec steps, %d stutters, %d documented, %d beyond the graph, %d unmatched"
                model results.Length (g.Expanded |> Array.filter id |> Array.length) sw.Elapsed.TotalSeconds
                (count (function Step _ -> true | _ -> false)) (count (function Stutter -> true | _ -> false))
                (count (function DocumentedInput _ -> true | _ -> false)) (count (function Unchecked -> true | _ -> false))
                unmatched.Length
        )
        for why, n in results |> Array.choose (fun (_, _, o) -> match o with DocumentedInput w -> Some w | _ -> None) |> Array.countBy id do
            out.WriteLine(sprintf "  documented x%d: %s" n why)
        for s, i, d in Array.truncate shown unmatched do
            out.WriteLine(sprintf "UNMATCHED in state %d: %O\n  %s" s i (String.concat "\n  " d))
        Assert.True(unmatched.Length = 0, sprintf "%d inputs are no spec step; first ones in the output" unmatched.Length)

    /// The judge can fail: a target changed in any one variable of the acting node, or with
    /// one more message in flight, no longer matches what the implementation did.
    [<Theory; MemberData(nameof Tests.Models)>]
    member _.``a corrupted target does not replay``(model: string) =
        let g = byModel model
        let md = Replay.model g
        let corruptions: (string * (NodeS -> NodeS)) list =
            [ "currentTerm", fun n -> { n with CurrentTerm = n.CurrentTerm + 1UL }
              "log", fun n -> { n with Log = n.Log @ [ { Term = n.CurrentTerm; Type = "normal"; Value = "v9"; CC = noCC } ] }
              // Beyond the log: no spec state has it, while a lower or a slightly higher
              // commit index may be what a follow-up AdvanceCommitIndex reaches.
              "commitIndex", fun n -> { n with CommitIndex = lastIndex n + 1UL }
              "role", fun n -> { n with Role = (if n.Role = "Follower" then "Candidate" else "Follower") }
              "votedFor", fun n -> { n with VotedFor = (if n.VotedFor = Nil then n.Id else Nil) } ]
        // A sample of edges with an acting server, spread over the graph.
        let edges =
            [| for sid in 0 .. g.StateCount - 1 do
                   if g.Expanded[sid] then
                       for dst, aid in g.Out[sid] do
                           match actor g.Actions[aid] with
                           | Some a -> yield sid, dst, aid, a
                           | None -> () |]
        let sample = edges |> Array.mapi (fun k e -> k, e) |> Array.filter (fun (k, _) -> k % (max 1 (edges.Length / 300)) = 0) |> Array.map snd
        // Only edges that match as they are: a documented difference compares the
        // implementation with the state the difference predicts, not with the target.
        let results =
            sample
            |> Array.Parallel.map (fun (sid, dst, aid, a) ->
                let s, t = state g sid, state g dst
                let c0 = Impl.concretize md.Settings s
                match replayEdge md s c0 g.Actions[aid] t with
                | Documented _ | Mismatch _ -> None
                | Matched _ ->
                    let corrupted =
                        [ for name, f in corruptions -> name, { t with Nodes = t.Nodes.Add(a, f t.Nodes[a]) } ]
                        @ [ let extra = { emptyMsg with Type = "TimeoutNow"; From = a; To = a; Term = 99UL }
                            "a message added", { t with Network = Oracle.withMessage extra t.Network } ]
                    Some
                        [| for name, t' in corrupted do
                               match replayEdge md s c0 g.Actions[aid] t' with
                               | Matched how | Documented how ->
                                   yield sprintf "state %d -%O-> %d with %s changed: %s" sid g.Actions[aid] dst name how
                               | Mismatch _ -> () |])
        let tried = results |> Array.sumBy (fun r -> if r.IsSome then corruptions.Length + 1 else 0)
        let survived = results |> Array.choose id |> Array.concat
        for line in Array.truncate shown survived do
            out.WriteLine line
        out.WriteLine(sprintf "%s: %d corrupted targets tried on %d matched edges" model tried (tried / (corruptions.Length + 1)))
        Assert.True(tried > 0, "no matched edge in the sample")
        Assert.True(survived.Length = 0, sprintf "%d corrupted targets still replay" survived.Length)
