/// The checker: each key is a register checked on its own (linearizability is local, so a
/// history is linearizable exactly when every key's is), within one time budget.
module Raft.Check.Checker

open System
open Raft.Check.Window

type KeyVerdict =
    | KeyLinearizable
    | KeyNotLinearizable of Violation
    /// The budget ran out before an answer.
    | KeyUnknown

type KeyResult =
    { Key: string
      /// Operations on the key, failed ones included.
      Operations: int
      Verdict: KeyVerdict }

type Verdict =
    | Linearizable
    | NotLinearizable
    | Unknown

type Report =
    { Keys: KeyResult list
      Overall: Verdict
      Operations: int
      Elapsed: TimeSpan }

/// The key's verdict: one search of the whole timeline, then, when it fails, the window.
let checkKey (budget: Budget) (key: string) (operations: Operation seq) : KeyVerdict =
    let t = KeyHistory.build key operations
    let m = t.Events.Length
    match Wgl.search budget 0 (KeyHistory.searchOps t m (KeyHistory.windowOps t m 0)) with
    | Wgl.Linearized _ -> KeyLinearizable
    | Wgl.OutOfTime -> KeyUnknown
    | Wgl.Impossible -> KeyNotLinearizable(Window.explain budget t)

/// Any violation decides the whole (it holds whatever the unknown keys are); otherwise any
/// unknown key leaves the whole unknown.
let overall (keys: KeyResult list) : Verdict =
    if keys |> List.exists (fun k -> k.Verdict.IsKeyNotLinearizable) then NotLinearizable
    elif keys |> List.exists (fun k -> k.Verdict.IsKeyUnknown) then Unknown
    else Linearizable

/// Checks operations within `limit` of time.
let check (limit: TimeSpan) (operations: Operation list) : Report =
    let budget = Budget.start limit
    let keys =
        operations
        |> List.groupBy (fun o -> o.Key)
        |> List.sortWith (fun (a, _) (b, _) -> String.CompareOrdinal(a, b))
        |> List.map (fun (key, ops) ->
            { Key = key
              Operations = ops.Length
              Verdict = checkKey budget key ops })
    { Keys = keys
      Overall = overall keys
      Operations = operations.Length
      Elapsed = Budget.elapsed budget }

/// Reads and checks a history given as JSON lines.
let checkLines (limit: TimeSpan) (lines: string seq) : Result<Report, HistoryError> =
    Operations.parse lines |> Result.map (check limit)

/// The exit status of `raftv check-history` for a verdict.
let exitCode (v: Verdict) : int =
    match v with
    | Linearizable -> 0
    | NotLinearizable -> 1
    | Unknown -> 3
