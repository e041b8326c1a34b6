/// Properties: simulated linearizable histories always pass; one injected anomaly is always
/// found; on small random histories the checker agrees with exhaustive search, and what it
/// reports as a window is itself non-linearizable while the prefix before it is not.
module Raft.Check.Tests.PropertyTests

open System
open Xunit
open FsCheck
open FsCheck.FSharp
open Raft.Check
open Raft.Check.Checker
open Raft.Check.Window
open Raft.Check.Tests.Simulation

let private config (seed: uint64) (tests: int) =
    Config.QuickThrowOnFailure.WithReplay(Some { Rnd = Rnd(seed, 5UL); Size = None }).WithMaxTest(tests)

let private genSim =
    gen {
        let! seed = Gen.choose (0, Int32.MaxValue)
        let! processes = Gen.choose (1, 6)
        let! keys = Gen.choose (1, 3)
        let! operations = Gen.choose (1, 80)
        let! info = Gen.elements [ 0.0; 0.1; 0.3 ]
        let! fail = Gen.elements [ 0.0; 0.2; 0.5 ]
        return
            { Seed = seed
              Processes = processes
              Keys = keys
              Operations = operations
              InfoRate = info
              FailRate = fail }
    }

let private operationsOf (events: Event list) =
    match Operations.ofEvents events with
    | Ok ops -> ops
    | Error e -> failwithf "simulated history is malformed at line %d: %s" e.Line e.Message

let private budget = TimeSpan.FromSeconds 20.0

[<Fact>]
let ``simulated histories are linearizable`` () =
    Check.One(
        config 11UL 300,
        Prop.forAll (Arb.fromGen genSim) (fun cfg ->
            let report = check budget (operationsOf (generate cfg))
            if report.Overall <> Linearizable then failwithf "%A\n%s" cfg (ReportText.render report)
            true)
    )

let private genAnomaly = Gen.elements [ StaleRead; NeverWritten; FailedWriteObserved ]

[<Fact>]
let ``one injected anomaly is always found`` () =
    Check.One(
        config 12UL 300,
        Prop.forAll (Arb.fromGen (Gen.zip genSim genAnomaly)) (fun (cfg, anomaly) ->
            let events, culprit = inject anomaly (Random cfg.Seed) (generate cfg)
            let report = check budget (operationsOf events)
            let text = ReportText.render report
            let bad = report.Keys |> List.filter (fun k -> k.Verdict.IsKeyNotLinearizable)
            if report.Overall <> NotLinearizable || bad |> List.map (fun k -> k.Key) <> [ culprit.Key ] then
                failwithf "%A %A not found:\n%s" cfg anomaly text
            match anomaly, bad[0].Verdict with
            | (StaleRead | NeverWritten), KeyNotLinearizable v ->
                // Everything before the bad read's completion is the simulated, linearizable history.
                if v.Breaking.CompleteLine <> Some culprit.Line || not v.Minimised then
                    failwithf "%A %A: window does not end at line %d:\n%s" cfg anomaly culprit.Line text
            | _ -> ()
            true)
    )

// ---- agreement with exhaustive search on small random histories ----

let private genValue = Gen.elements [ None; Some(Value "1"); Some(Value "2") ]

let private genOperation (index: int) =
    gen {
        let! kind = Gen.choose (0, 2)
        let! command =
            match kind with
            | 0 -> genValue |> Gen.map Write
            | 1 -> Gen.constant Read
            | _ -> Gen.map2 (fun e n -> CompareAndSet(e, n)) genValue genValue
        let! call = Gen.choose (0, 30)
        let! duration = Gen.choose (0, 12)
        let! read = genValue
        let! outcome = Gen.frequency [ 7, Gen.constant 0; 2, Gen.constant 1; 1, Gen.constant 2 ]
        let at = int64 (call + duration)
        return
            { Index = index
              Process = index
              Key = "k"
              Command = command
              Invoked = int64 call
              Outcome =
                match outcome, command with
                | 0, Read -> Succeeded(at, read)
                | 0, _ -> Succeeded(at, None)
                | 1, _ -> Indeterminate(Some at)
                | _, _ -> Failed at
              InvokeLine = index + 1
              CompleteLine = Some(index + 1) }
    }

let private genSmall =
    gen {
        let! n = Gen.choose (1, 7)
        let! ops = Gen.collectToList (fun i -> genOperation i) [ 0 .. n - 1 ]
        return ops
    }

/// Whether the window, as a history of its own, is non-linearizable: from absent when it
/// starts at the beginning, otherwise from every initial value.
let private windowIsBad (v: Violation) =
    let ops =
        v.Window
        |> List.map (fun w ->
            if w.PendingAtEnd then { w.Operation with Outcome = Indeterminate None } else w.Operation)
        |> BruteForce.ofOperations
    let initials =
        if v.FromStart then [ None ]
        else None :: Some(Value "\"none of these\"") :: [ Some(Value "1"); Some(Value "2") ]
    initials |> List.forall (fun s -> not (BruteForce.linearizable s ops))

[<Fact>]
let ``verdicts agree with exhaustive search and windows are non-linearizable`` () =
    Check.One(
        config 13UL 2000,
        Prop.forAll (Arb.fromGen genSmall) (fun ops ->
            let expected = BruteForce.linearizable None (BruteForce.ofOperations ops)
            let report = check budget ops
            match expected, report.Keys with
            | true, [ { Verdict = KeyLinearizable } ] -> true
            | false, [ { Verdict = KeyNotLinearizable v } ] ->
                if not (windowIsBad v) then failwithf "window is linearizable: %A" v
                // The prefix the report calls linearizable is: the window's last completion breaks it.
                let t = KeyHistory.build "k" ops
                let before = KeyHistory.windowOps t v.LinearizablePrefixEvents 0
                let prefixOps =
                    before
                    |> Array.map (fun i ->
                        let op = t.Ops[i]
                        if KeyHistory.returnedWithin t v.LinearizablePrefixEvents i then op
                        else { op with Outcome = Indeterminate None })
                    |> BruteForce.ofOperations
                if not (BruteForce.linearizable None prefixOps) then failwithf "prefix is not linearizable: %A" v
                true
            | _ -> failwithf "exhaustive search says %b, checker says:\n%s" expected (ReportText.render report))
    )

[<Fact>]
let ``an exhausted budget answers unknown, never a verdict`` () =
    let events = generate { Seed = 7; Processes = 5; Keys = 2; Operations = 4000; InfoRate = 0.05; FailRate = 0.1 }
    let report = check TimeSpan.Zero (operationsOf events)
    Assert.Equal(Unknown, report.Overall)
    Assert.Equal(3, exitCode report.Overall)
    Assert.All(report.Keys, fun k -> Assert.Equal(KeyUnknown, k.Verdict))
    Assert.Contains("unknown (2 of 2 keys undecided", ReportText.render report)
