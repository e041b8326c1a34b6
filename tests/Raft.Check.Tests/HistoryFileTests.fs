/// The hand-made histories in histories/: each with its verdict and, for a violation, the
/// minimal window the checker must report.
module Raft.Check.Tests.HistoryFileTests

open System
open System.IO
open Xunit
open Raft.Check
open Raft.Check.Checker
open Raft.Check.Window

let private load (name: string) =
    let path = Path.Combine(AppContext.BaseDirectory, "histories", name)
    match Checker.checkLines (TimeSpan.FromSeconds 30.0) (File.ReadLines path) with
    | Ok report -> report
    | Error e -> failwithf "%s line %d: %s" name e.Line e.Message

let private assertLinearizable (name: string) =
    let report = load name
    Assert.True(report.Overall = Linearizable, ReportText.render report)
    Assert.All(report.Keys, fun k -> Assert.Equal(KeyLinearizable, k.Verdict))

/// A violation on `key` whose minimal window is exactly the operations `window` (indexes in
/// invocation order), starting from the beginning of the history or not, and ending with
/// the completion of operation `breaking`.
let private assertViolation (name: string) (key: string) (window: int list) (fromStart: bool) (breaking: int) =
    let report = load name
    let text = ReportText.render report
    Assert.True(report.Overall = NotLinearizable, text)
    Assert.Equal(1, Checker.exitCode report.Overall)
    let bad = report.Keys |> List.filter (fun k -> k.Verdict.IsKeyNotLinearizable)
    Assert.Equal<string list>([ key ], bad |> List.map (fun k -> k.Key))
    match bad[0].Verdict with
    | KeyNotLinearizable v ->
        Assert.True(v.Minimised, text)
        Assert.Equal<int list>(window, v.Window |> List.map (fun w -> w.Operation.Index))
        Assert.Equal(fromStart, v.FromStart)
        Assert.Equal(breaking, v.Breaking.Index)
        Assert.Contains($"key \"{key}\": NOT linearizable", text)
    | other -> failwithf "expected a violation, got %A" other

[<Fact>]
let ``stale read after a completed write is a violation`` () =
    // put 1; put 2; then get -> 1: the window is the overwrite and the read, whatever came before.
    assertViolation "stale-read.jsonl" "x" [ 2; 3 ] false 3

[<Fact>]
let ``read of a value never written is a violation`` () =
    // get -> "a" then get -> "z" with no write between; "z" alone could have been there before.
    assertViolation "read-never-written.jsonl" "k" [ 1; 2 ] false 2

[<Fact>]
let ``reads observing two concurrent writes in both orders are a violation`` () =
    // The writes are unfinished at the window's end (they return at 1000), so the window ends
    // at the second read that contradicts the order the first reads fixed.
    assertViolation "concurrent-writes-both-orders.jsonl" "k" [ 0; 1; 2; 3; 4; 5 ] true 5

[<Fact>]
let ``a cas succeeding against an overwritten value is a violation`` () =
    assertViolation "cas-on-overwritten-value.jsonl" "k" [ 1; 2 ] false 2

[<Fact>]
let ``unknown outcomes may take effect late`` () = assertLinearizable "info-takes-effect-late.jsonl"

[<Fact>]
let ``a failed put whose value is read is a violation`` () =
    assertViolation "failed-put-read.jsonl" "k" [ 0; 2 ] true 2

[<Fact>]
let ``concurrent operations that fit in some order are linearizable`` () =
    assertLinearizable "concurrent-fine.jsonl"

[<Fact>]
let ``a lost acknowledged write is a violation`` () =
    // cas 1 -> 2 acknowledged, then get -> 1. The concurrent put 4 of unknown outcome cannot
    // explain it (nobody reads 4), so the window leaves it out.
    assertViolation "lost-acknowledged-write.jsonl" "k" [ 2; 3 ] false 3

[<Fact>]
let ``operations touching in time count as concurrent`` () = assertLinearizable "touching-times.jsonl"

[<Fact>]
let ``the report names the window's operations and the breaking completion`` () =
    let text = ReportText.render (load "stale-read.jsonl")
    Assert.Contains("key \"y\": linearizable (1 operations)", text)
    Assert.Contains("minimal offending window: 2 operation(s), from a quiescent point", text)
    Assert.Contains("#2 process 0 put 2, invoked at 20, ok at 30", text)
    Assert.Contains("#3 process 1 get -> 1, invoked at 40, ok at 50", text)
    Assert.Contains("the first 5 of 6 events on this key linearize", text)
    Assert.Contains("the register then holds 2", text)
    Assert.Contains("with the completion of #3 (process 1 get -> 1)", text)
    Assert.Contains("overall: NOT linearizable (1 of 2 keys)", text)
