/// One key's operations as a timeline of call and return events, and the sub-histories the
/// checker searches: prefixes (everything observed up to an event) and windows (a prefix
/// from a quiescent point on).
module Raft.Check.KeyHistory

open Raft.Check.Register
open Raft.Check.Wgl

[<Struct>]
type TimelineEvent = { Time: int64; IsCall: bool; Op: int }

/// A key's constraining operations (failed ones, which certainly did not happen, and gets
/// of unknown outcome, which constrain nothing, are left out), their steps over interned
/// values, and their events ordered by time, calls before returns at the same instant.
type Timeline =
    { Key: string
      Ops: Operation[]
      Steps: Step[]
      Interned: Interned
      Events: TimelineEvent[]
      /// Index in Events of each operation's return, or -1 when its outcome is unknown.
      ReturnAt: int[]
      /// Index in Events of each operation's call.
      CallAt: int[] }

let private constrains (op: Operation) =
    match op.Command, op.Outcome with
    | _, Failed _ -> false
    | Read, Indeterminate _ -> false
    | _ -> true

let private stepOf (interned: Interned) (op: Operation) : Step * Interned =
    match op.Command, op.Outcome with
    | Write v, _ ->
        let id, interned = Interned.idOf v interned
        PutStep id, interned
    | Read, Succeeded(_, read) ->
        let id, interned = Interned.idOf read interned
        GetStep id, interned
    | CompareAndSet(e, n), _ ->
        let e, interned = Interned.idOf e interned
        let n, interned = Interned.idOf n interned
        CasStep(e, n), interned
    // Not reached: gets of unknown outcome are filtered out; a read of nothing stands for absent.
    | Read, _ -> GetStep 0, interned

/// The timeline of `key` from its operations (of any keys; others are ignored).
let build (key: string) (operations: Operation seq) : Timeline =
    let ops = operations |> Seq.filter (fun o -> o.Key = key && constrains o) |> Array.ofSeq
    let steps, interned =
        (Interned.empty, ops)
        ||> Array.mapFold (fun interned op -> stepOf interned op)
    let events =
        [| for i in 0 .. ops.Length - 1 do
               yield { Time = ops[i].Invoked; IsCall = true; Op = i }
               match ops[i].Outcome with
               | Succeeded(at, _) -> yield { Time = at; IsCall = false; Op = i }
               | _ -> () |]
        |> Array.sortBy (fun e -> e.Time, (if e.IsCall then 0 else 1), e.Op)
    let returnAt = Array.create ops.Length -1
    let callAt = Array.create ops.Length -1
    events |> Array.iteri (fun at e -> if e.IsCall then callAt[e.Op] <- at else returnAt[e.Op] <- at)
    { Key = key
      Ops = ops
      Steps = steps
      Interned = interned
      Events = events
      ReturnAt = returnAt
      CallAt = callAt }

/// Whether operation `i` is known to have returned within the first `m` events.
let returnedWithin (t: Timeline) (m: int) (i: int) = t.ReturnAt[i] >= 0 && t.ReturnAt[i] < m

let private isGet (step: Step) = match step with GetStep _ -> true | _ -> false

/// Drops, until none is left, operations of unknown outcome whose written value no other
/// operation of the window observes (reads, or expects in a compare-and-set): such a write
/// can be left out of any valid order without breaking it (whatever followed it before the
/// next write would have to observe its value), so the window means the same without it, and
/// reports and searches get smaller.
let rec private withoutUnobservedWrites (t: Timeline) (m: int) (members: int list) : int list =
    let observed =
        members
        |> List.choose (fun i ->
            match t.Steps[i] with
            | GetStep r -> Some r
            | CasStep(e, _) -> Some e
            | PutStep _ -> None)
        |> Set.ofList
    let unobserved i =
        not (returnedWithin t m i)
        && (match t.Steps[i] with
            | PutStep v
            | CasStep(_, v) -> not (observed.Contains v)
            | GetStep _ -> false)
    match List.partition unobserved members with
    | [], _ -> members
    | _, kept -> withoutUnobservedWrites t m kept

/// The operations of the window of the first `m` events that starts at event `from`, as
/// indexes into `t.Ops` in call order: those called at or after `from`, and those called
/// before it whose outcome is unknown at `m` (they may still take effect), less unknown
/// writes nobody in the window observes. An operation that has not returned by `m` is
/// unknown there; a get of unknown outcome constrains nothing.
let windowOps (t: Timeline) (m: int) (from: int) : int[] =
    [ for at in 0 .. m - 1 do
          let e = t.Events[at]
          if e.IsCall then
              let returned = returnedWithin t m e.Op
              if (returned && at >= from) || (not returned && not (isGet t.Steps[e.Op])) then yield e.Op ]
    |> withoutUnobservedWrites t m
    |> Array.ofList

/// The window as the search takes it: operations in the order of `windowOps`.
let searchOps (t: Timeline) (m: int) (members: int[]) : SearchOp[] =
    members
    |> Array.map (fun i ->
        { Step = t.Steps[i]
          Call = t.Ops[i].Invoked
          Return = if returnedWithin t m i then ValueSome t.Events[t.ReturnAt[i]].Time else ValueNone })

/// Event indexes in (0, m) where the first `m` events are quiescent: a call, before which
/// every operation that returns within `m` and was called earlier has returned. Operations
/// unknown at `m` may straddle the point; windows keep them.
let quiescentPoints (t: Timeline) (m: int) : int list =
    let rec scan at openOps acc =
        if at >= m then List.rev acc
        else
            let e = t.Events[at]
            let acc = if at > 0 && e.IsCall && openOps = 0 then at :: acc else acc
            let openOps =
                if e.IsCall then (if returnedWithin t m e.Op then openOps + 1 else openOps)
                else openOps - 1
            scan (at + 1) openOps acc
    scan 0 0 []

/// Initial register states a window starting mid-history must be checked against: absent,
/// every value its operations mention, and one value none mentions (standing for all others).
let initialCandidates (t: Timeline) (members: int[]) : int list =
    let mentioned =
        members
        |> Seq.collect (fun i ->
            match t.Steps[i] with
            | PutStep v -> [ v ]
            | GetStep v -> [ v ]
            | CasStep(e, n) -> [ e; n ])
    Seq.append [ 0; Interned.fresh t.Interned ] mentioned |> Seq.distinct |> List.ofSeq
