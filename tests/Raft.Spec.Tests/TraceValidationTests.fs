/// The TLC-free half of trace validation (tlaplus/TraceRaft.tla): the generators of
/// corrupted traces that tlaplus/check-traces.sh expects TLC to reject, and the fixtures
/// they produce. The TLC half runs in check-traces.sh (./test.sh's TLC section).
module Raft.Spec.Tests.TraceValidationTests

open System
open System.IO
open System.Text.Json.Nodes
open Xunit

/// Corruptions of an ndjson trace in etcd's TracingEvent schema, each a behaviour no
/// implementation of Raft.tla may log. None when the trace has no line to corrupt.
module TraceCorruption =
    /// The node at a path of object members.
    let at (keys: string list) (n: JsonNode) : JsonNode =
        keys |> List.fold (fun (n: JsonNode) (k: string) -> nonNull n[k]) n

    let parse (line: string) : JsonNode = nonNull (JsonNode.Parse line)
    let str keys n = (at keys n).GetValue<string>()
    let num keys n = (at keys n).GetValue<int64>()
    let flag keys n = (at keys n).GetValue<bool>()

    let event (line: string) = at [ "event" ] (parse line)

    let private name (line: string) = str [ "name" ] (event line)

    let private isSentVoteGrant (line: string) =
        let e = event line
        name line = "SendRequestVoteResponse"
        && (str ["msg"; "from"] e) <> (str ["msg"; "to"] e)
        && not ((flag ["msg"; "reject"] e))

    /// Rewrites line k with f applied to its event.
    let private rewrite (lines: string[]) (k: int) (f: JsonNode -> unit) : string[] =
        let root = parse (lines[k])
        f (at [ "event" ] root)
        Array.updateAt k (root.ToJsonString()) lines

    let private firstIndex (p: string -> bool) (lines: string[]) = Array.tryFindIndex p lines

    /// A term jump: the first Ready after the first election logs a term one higher than
    /// the node's (no action moves a term without a message or a campaign).
    let termJump (lines: string[]) : string[] option =
        firstIndex (fun l -> name l = "BecomeLeader") lines
        |> Option.bind (fun leader ->
            lines
            |> Array.indexed
            |> Array.skip leader
            |> Array.tryFind (fun (_, l) -> name l = "Ready")
            |> Option.map (fun (k, _) ->
                rewrite lines k (fun e ->
                    let state = at [ "state" ] e
                    state["term"] <- JsonValue.Create((num ["term"] state) + 1L))))

    /// A commit past the end of the log: a Ready logging commit = last index + 1.
    let commitPastLog (lines: string[]) : string[] option =
        firstIndex (fun l -> name l = "Ready") lines
        |> Option.map (fun k ->
            rewrite lines k (fun e -> (at [ "state" ] e)["commit"] <- JsonValue.Create((num ["log"] e) + 1L)))

    /// A vote for two candidates: right after a node grants its vote, it grants the same
    /// term's vote to another node of the configuration as well.
    let doubleVote (lines: string[]) : string[] option =
        firstIndex isSentVoteGrant lines
        |> Option.bind (fun k ->
            let e = event (lines[k])
            let voter = (str ["msg"; "from"] e)
            let candidate = (str ["msg"; "to"] e)
            let conf = (at [ "conf" ] e).AsArray()
            let incoming = (nonNull conf[0]).AsArray()
            let others =
                incoming
                |> Seq.map (fun n -> (nonNull n).GetValue<string>())
                |> Seq.filter (fun n -> n <> voter && n <> candidate)
                |> Seq.tryHead
            others
            |> Option.map (fun other ->
                let root = parse (lines[k])
                (at [ "event"; "msg" ] root)["to"] <- JsonValue.Create other
                Array.insertAt (k + 1) (root.ToJsonString()) lines))

    /// The corruptions by name, as check-traces.sh's fixtures are named.
    let all: (string * (string[] -> string[] option)) list =
        [ "term-jump", termJump; "commit-past-log", commitPastLog; "double-vote", doubleVote ]

/// tests/Raft.Spec.Tests/traces: a simulator trace (raftv simulate --nodes 3 --seed 1
/// --steps 300 --faults drop,reorder,delay,partition --prevote false --checkquorum false)
/// and its corruptions, which check-traces.sh validates with TLC.
/// Found from the repository root, not __SOURCE_DIRECTORY__: CI builds map source paths to /_/.
let private fixtureDir () =
    Path.Combine(DataDriven.repoRoot (), "tests", "Raft.Spec.Tests", "traces")

open TraceCorruption

let private readLines (path: string) =
    File.ReadAllLines path |> Array.filter (fun l -> l.Length > 0)

let private original () = readLines (Path.Combine(fixtureDir (), "sim-seed1.ndjson"))

let private eventOf (line: string) = event line

[<Fact>]
let ``the fixture trace is etcd TracingEvent ndjson with the events validation maps`` () =
    let lines = original ()
    Assert.True(lines.Length > 100, sprintf "only %d lines" lines.Length)
    let names = lines |> Array.map (fun l -> (str ["name"] (eventOf l))) |> Set.ofArray
    for n in [ "BecomeCandidate"; "BecomeLeader"; "Replicate"; "Commit"; "Ready"; "SendAppendEntriesRequest"
               "ReceiveAppendEntriesResponse"; "SendRequestVoteResponse" ] do
        Assert.True(names.Contains n, sprintf "no %s event" n)

[<Fact>]
let ``term jump raises exactly one logged term`` () =
    let lines = original ()
    let bad = (TraceCorruption.termJump lines).Value
    let diffs = Array.zip lines bad |> Array.filter (fun (a, b) -> a <> b)
    let a, b = Assert.Single diffs
    Assert.Equal((num ["state"; "term"] (eventOf a)) + 1L, (num ["state"; "term"] (eventOf b)))
    Assert.Equal("Ready", (str ["name"] (eventOf b)))

[<Fact>]
let ``commit past log logs a commit above the last index`` () =
    let lines = original ()
    let bad = (TraceCorruption.commitPastLog lines).Value
    let _, b = Assert.Single(Array.zip lines bad |> Array.filter (fun (a, b) -> a <> b))
    let e = eventOf b
    Assert.True((num ["state"; "commit"] e) > (num ["log"] e))

[<Fact>]
let ``double vote grants a second candidate in the same term`` () =
    let lines = original ()
    let bad = (TraceCorruption.doubleVote lines).Value
    Assert.Equal(lines.Length + 1, bad.Length)
    let grants =
        bad
        |> Array.map eventOf
        |> Array.filter (fun e ->
            (str ["name"] e) = "SendRequestVoteResponse"
            && (str ["msg"; "from"] e) <> (str ["msg"; "to"] e)
            && not ((flag ["msg"; "reject"] e)))
        |> Array.map (fun e -> (str ["msg"; "from"] e), (num ["msg"; "term"] e), (str ["msg"; "to"] e))
    let twice =
        grants |> Array.groupBy (fun (v, t, _) -> v, t) |> Array.filter (fun (_, g) -> (g |> Array.map (fun (_, _, c) -> c) |> Array.distinct).Length > 1)
    Assert.NotEmpty twice

[<Fact>]
let ``generators find nothing to corrupt in an empty trace`` () =
    for name, gen in TraceCorruption.all do
        Assert.True((gen [||]).IsNone, name)

/// The corrupted fixtures are the generators' output (set RAFTV_WRITE_TRACE_FIXTURES=1 to
/// rewrite them after changing a generator or the original trace).
[<Fact>]
let ``corrupted fixtures are up to date with the generators`` () =
    let lines = original ()
    let rewrite = Environment.GetEnvironmentVariable "RAFTV_WRITE_TRACE_FIXTURES" = "1"
    for name, gen in TraceCorruption.all do
        let expected = (gen lines).Value
        let path = Path.Combine(fixtureDir (), sprintf "sim-seed1.%s.ndjson" name)
        if rewrite then File.WriteAllLines(path, expected)
        Assert.True(File.Exists path, sprintf "%s is missing: run with RAFTV_WRITE_TRACE_FIXTURES=1" path)
        Assert.True((readLines path = expected), sprintf "%s differs from TraceCorruption.%s: run with RAFTV_WRITE_TRACE_FIXTURES=1" path name)
