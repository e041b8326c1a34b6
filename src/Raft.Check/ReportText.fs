/// The report as text for people: a line per key, the offending window of a violation with
/// what explains it, and the overall verdict.
module Raft.Check.ReportText

open System
open System.Text
open System.Text.Json
open Raft.Check.Window
open Raft.Check.Checker

/// An operation's request and, for a get, what it read: `put "a"`, `get -> "a"`, `cas "a" -> "b"`.
let describeCommand (op: Operation) : string =
    match op.Command, op.Outcome with
    | Write v, _ -> $"put {Value.show v}"
    | Read, Succeeded(_, read) -> $"get -> {Value.show read}"
    | Read, _ -> "get"
    | CompareAndSet(e, n), _ -> $"cas {Value.show e} -> {Value.show n}"

let describeOutcome (op: Operation) : string =
    match op.Outcome with
    | Succeeded(at, _) -> $"ok at {at}"
    | Failed at -> $"fail at {at}"
    | Indeterminate(Some at) -> $"info at {at} (outcome unknown)"
    | Indeterminate None -> "never completed (outcome unknown)"

/// One operation on a line: index, process, request, times.
let describe (op: Operation) : string =
    $"#{op.Index} process {op.Process} {describeCommand op}, invoked at {op.Invoked}, {describeOutcome op}"

let private windowLine (w: WindowOp) =
    let note =
        match w.PendingAtEnd, w.Operation.Outcome with
        | true, Succeeded _ -> " [not yet returned at the window's end: may take effect later]"
        | _ -> ""
    $"    {describe w.Operation}{note}"

let private witnessText (v: Violation) =
    let shown = 6
    let tail = v.Witness |> List.skip (max 0 (v.Witness.Length - shown))
    let order =
        tail
        |> List.map (fun op -> $"#{op.Index} {describeCommand op}")
        |> String.concat ", "
    let elided = if v.Witness.Length > shown then "..., " else ""
    if v.Witness.IsEmpty then "no operation placed"
    else $"one order ends {elided}{order}"

let private violationText (sb: StringBuilder) (v: Violation) =
    let origin =
        if v.FromStart then "from the start of the history, the register initially absent"
        else "from a quiescent point, whatever the register held there"
    let size = if v.Minimised then "minimal offending window" else "offending window (not minimised: time budget ran out)"
    sb.AppendLine($"  {size}: {v.Window.Length} operation(s), {origin}:") |> ignore
    for w in v.Window do
        sb.AppendLine(windowLine w) |> ignore
    sb.AppendLine(
        $"  explanation: the first {v.LinearizablePrefixEvents} of {v.TotalEvents} events on this key linearize "
        + $"({witnessText v}; the register then holds {Value.show v.WitnessValue}); with the completion of "
        + $"#{v.Breaking.Index} (process {v.Breaking.Process} {describeCommand v.Breaking}) no order respects both "
        + "real time and the register's semantics."
    )
    |> ignore

/// The whole report.
let render (report: Report) : string =
    let sb = StringBuilder()
    for k in report.Keys do
        let key = JsonSerializer.Serialize k.Key
        match k.Verdict with
        | KeyLinearizable -> sb.AppendLine($"key {key}: linearizable ({k.Operations} operations)") |> ignore
        | KeyUnknown -> sb.AppendLine($"key {key}: unknown: the time budget ran out ({k.Operations} operations)") |> ignore
        | KeyNotLinearizable v ->
            sb.AppendLine($"key {key}: NOT linearizable ({k.Operations} operations)") |> ignore
            violationText sb v
    let bad = report.Keys |> List.filter (fun k -> k.Verdict.IsKeyNotLinearizable) |> List.length
    let unknown = report.Keys |> List.filter (fun k -> k.Verdict.IsKeyUnknown) |> List.length
    let verdict =
        match report.Overall with
        | Linearizable -> "linearizable"
        | NotLinearizable -> $"NOT linearizable ({bad} of {report.Keys.Length} keys)"
        | Unknown -> $"unknown ({unknown} of {report.Keys.Length} keys undecided when the time budget ran out)"
    sb.AppendLine(
        $"overall: {verdict}; {report.Operations} operations on {report.Keys.Length} keys checked in {report.Elapsed.TotalSeconds:F3} s"
    )
    |> ignore
    sb.ToString()

