/// Pairing each invocation with its completion, process by process, checking the rules of
/// the format: one outstanding operation per process, completions that match their invocation.
module Raft.Check.Operations

let private err line message : Result<'a, HistoryError> = Error { Line = line; Message = message }

let private fnName fn =
    match fn with
    | Put -> "put"
    | Get -> "get"
    | Cas -> "cas"

/// The command an invocation asks for (its value was checked by the parser).
let private commandOf (ev: Event) : Result<Command, HistoryError> =
    match ev.F, ev.Value with
    | Put, One v -> Ok(Write v)
    | Get, NoValue -> Ok Read
    | Cas, Pair(e, n) -> Ok(CompareAndSet(e, n))
    | fn, _ -> err ev.Line $"the value of a {fnName fn} invocation is malformed"

/// A completion may repeat its invocation's value, but must not contradict it.
let private consistent (invoked: Event) (completion: Event) : Result<unit, HistoryError> =
    match invoked.F, completion.Value with
    | (Put | Cas), NoValue -> Ok()
    | Put, v when v = invoked.Value -> Ok()
    | Cas, v when v = invoked.Value -> Ok()
    | Get, _ -> Ok()
    | fn, _ ->
        err completion.Line $"this {fnName fn} completion's value differs from its invocation's on line {invoked.Line}"

let private outcomeOf (invoked: Event) (completion: Event) : Outcome =
    match completion.Type, completion.Value with
    | EventType.Ok, One read when invoked.F = Get -> Succeeded(completion.Time, read)
    | EventType.Ok, _ -> Succeeded(completion.Time, None)
    | EventType.Fail, _ -> Failed completion.Time
    | _ -> Indeterminate(Some completion.Time)

type private Pending = { Event: Event; Index: int }

/// Operations in invocation (input) order. A process may invoke again after an "info"
/// completion (the unknown operation stays concurrent with everything after it); an
/// invocation never completed is indeterminate.
let ofEvents (events: Event list) : Result<Operation list, HistoryError> =
    let folder (state: Result<Map<int, Pending> * Map<int, Operation> * int, HistoryError>) (ev: Event) =
        state
        |> Result.bind (fun (outstanding, done', next) ->
            match ev.Type, Map.tryFind ev.Process outstanding with
            | EventType.Invoke, Some p ->
                err ev.Line $"process {ev.Process} invokes an operation while its operation from line {p.Event.Line} is still outstanding"
            | EventType.Invoke, None ->
                commandOf ev
                |> Result.map (fun _ -> Map.add ev.Process { Event = ev; Index = next } outstanding, done', next + 1)
            | _, None -> err ev.Line $"process {ev.Process} completes an operation it never invoked"
            | _, Some p when p.Event.F <> ev.F || p.Event.Key <> ev.Key ->
                err ev.Line $"this completion ({fnName ev.F} {ev.Key}) does not match its invocation on line {p.Event.Line} ({fnName p.Event.F} {p.Event.Key})"
            | _, Some p when ev.Time < p.Event.Time ->
                err ev.Line $"completion time {ev.Time} is before its invocation's ({p.Event.Time}, line {p.Event.Line})"
            | _, Some p ->
                consistent p.Event ev
                |> Result.bind (fun () -> commandOf p.Event)
                |> Result.map (fun command ->
                    let op =
                        { Index = p.Index
                          Process = ev.Process
                          Key = ev.Key
                          Command = command
                          Invoked = p.Event.Time
                          Outcome = outcomeOf p.Event ev
                          InvokeLine = p.Event.Line
                          CompleteLine = Some ev.Line }
                    Map.remove ev.Process outstanding, Map.add p.Index op done', next))
    List.fold folder (Ok(Map.empty, Map.empty, 0)) events
    |> Result.bind (fun (outstanding, done', _) ->
        let unfinished =
            outstanding
            |> Map.toList
            |> List.map (fun (_, p) -> commandOf p.Event |> Result.map (fun c -> p, c))
        match unfinished |> List.tryPick (function Error e -> Some e | Ok _ -> None) with
        | Some e -> Error e
        | None ->
            let pending =
                unfinished
                |> List.choose (function
                    | Ok(p, command) ->
                        Some
                            { Index = p.Index
                              Process = p.Event.Process
                              Key = p.Event.Key
                              Command = command
                              Invoked = p.Event.Time
                              Outcome = Indeterminate None
                              InvokeLine = p.Event.Line
                              CompleteLine = None }
                    | Error _ -> None)
            Ok(
                (Map.toList done' |> List.map snd) @ pending
                |> List.sortBy (fun op -> op.Index)
            ))

/// Operations of a history read from JSON lines.
let parse (lines: string seq) : Result<Operation list, HistoryError> =
    HistoryJson.parseLines lines |> Result.bind ofEvents
