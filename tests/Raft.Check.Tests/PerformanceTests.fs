/// The size the checker is meant for, as a figure (printed), not a timed assertion: 10,000
/// operations over 10 keys from 5 processes, checked from JSON lines.
module Raft.Check.Tests.PerformanceTests

open System
open System.Diagnostics
open Xunit
open Xunit.Abstractions
open Raft.Check
open Raft.Check.Checker
open Raft.Check.Tests.Simulation

type PerformanceTests(output: ITestOutputHelper) =
    let cfg = { Seed = 2024; Processes = 5; Keys = 10; Operations = 10_000; InfoRate = 0.02; FailRate = 0.05 }

    let run (events: Event list) =
        let lines = events |> List.map HistoryJson.format
        let sw = Stopwatch.StartNew()
        match Checker.checkLines (TimeSpan.FromMinutes 5.0) lines with
        | Error e -> failwithf "line %d: %s" e.Line e.Message
        | Ok report ->
            sw.Stop()
            output.WriteLine(
                $"{report.Operations} operations, {report.Keys.Length} keys, {lines.Length} lines: parsed and checked in {sw.Elapsed.TotalSeconds:F3} s (search {report.Elapsed.TotalSeconds:F3} s): {report.Overall}"
            )
            report

    [<Fact>]
    member _.``ten thousand operations over ten keys check as linearizable``() =
        let report = run (generate cfg)
        Assert.Equal(Linearizable, report.Overall)
        Assert.Equal(10_000, report.Operations)
        Assert.Equal(10, report.Keys.Length)

    [<Fact>]
    member _.``ten thousand operations with one stale read are a violation``() =
        let events, culprit = inject StaleRead (Random 2024) (generate cfg)
        let report = run events
        Assert.Equal(NotLinearizable, report.Overall)
        let bad = report.Keys |> List.filter (fun k -> k.Verdict.IsKeyNotLinearizable)
        Assert.Equal<string list>([ culprit.Key ], bad |> List.map (fun k -> k.Key))
        output.WriteLine(ReportText.render { report with Keys = bad })
