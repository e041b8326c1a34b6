/// Finding a minimal offending window in a non-linearizable key history: first the shortest
/// prefix (in events) that is already non-linearizable, then the latest quiescent point from
/// which that prefix, with any initial value, is still non-linearizable. Both searches are
/// bisections over monotone predicates: a longer prefix of a bad history is bad, and a window
/// from an earlier point constrains at least as much.
module Raft.Check.Window

open Raft.Check.Register
open Raft.Check.Wgl
open Raft.Check.KeyHistory

/// An operation of a window; `PendingAtEnd` when it had not returned by the window's last
/// event (so it counts as possibly taking effect later, or never).
type WindowOp = { Operation: Operation; PendingAtEnd: bool }

type Violation =
    { Key: string
      /// The window's operations in invocation order.
      Window: WindowOp list
      /// True when the window starts at the beginning of the history (the register starts
      /// absent); otherwise it starts at a quiescent point and fails for any initial value.
      FromStart: bool
      /// The operation whose completion is the window's last event: the one that makes the
      /// history non-linearizable when the window is minimised.
      Breaking: Operation
      /// The longest linearizable prefix, in events (calls and returns) of this key.
      LinearizablePrefixEvents: int
      TotalEvents: int
      /// A linearization of that prefix (operations in order), and the register's value after it.
      Witness: Operation list
      WitnessValue: Value option
      /// False when the budget ran out while shrinking (the window is then offending, not minimal).
      Minimised: bool }

type private Probe =
    | Bad
    | Good of order: int list * final: int
    | Undecided

/// Searches the window (first `m` events, from event `from`) from each initial state; bad
/// when none linearizes.
let private probe (budget: Budget) (t: Timeline) (m: int) (from: int) (initials: int list) : Probe =
    let members = windowOps t m from
    let ops = searchOps t m members
    let rec go initials sawTimeout =
        match initials with
        | [] -> if sawTimeout then Undecided else Bad
        | s :: rest ->
            match Wgl.search budget s ops with
            | Linearized(order, final) -> Good(order |> List.map (fun k -> members[k]), final)
            | OutOfTime -> Undecided
            | Impossible -> go rest sawTimeout
    go initials false

let private prefixProbe budget (t: Timeline) m = probe budget t m 0 [ 0 ]

/// Smallest m in (lo, hi] with a bad prefix, given prefix lo good (with its witness) and hi
/// bad; stops early, unminimised, when the budget runs out.
let rec private shortestPrefix budget t (lo, loWitness) hi : int * (int list * int) * int * bool =
    if hi - lo <= 1 then lo, loWitness, hi, true
    else
        let mid = lo + (hi - lo) / 2
        match prefixProbe budget t mid with
        | Bad -> shortestPrefix budget t (lo, loWitness) mid
        | Good(order, final) -> shortestPrefix budget t (mid, (order, final)) hi
        | Undecided -> lo, loWitness, hi, false

/// The latest index into `points` whose window is still bad, bisecting between a known-bad
/// index `bad` and a known-good (or past-the-end) index `notBad`.
let rec private latestStart budget t m (points: int[]) bad notBad : int * bool =
    if notBad - bad <= 1 then bad, true
    else
        let mid = bad + (notBad - bad) / 2
        let from = points[mid]
        match probe budget t m from (initialCandidates t (windowOps t m from)) with
        | Bad -> latestStart budget t m points mid notBad
        | Good _ -> latestStart budget t m points bad mid
        | Undecided -> bad, false

/// The violation of a timeline already known to be non-linearizable as a whole.
let explain (budget: Budget) (t: Timeline) : Violation =
    let total = t.Events.Length
    let good, (witnessOrder, witnessFinal), m, prefixMinimal = shortestPrefix budget t (0, ([], 0)) total
    // Index 0 is the beginning (register absent); the others are quiescent points.
    let points = Array.ofList (0 :: quiescentPoints t m)
    let start, startMinimal =
        if prefixMinimal then latestStart budget t m points 0 points.Length else 0, false
    let from = points[start]
    let breaking = t.Ops[t.Events[m - 1].Op]
    { Key = t.Key
      Window =
        windowOps t m from
        |> Array.map (fun i -> { Operation = t.Ops[i]; PendingAtEnd = not (returnedWithin t m i) })
        |> Array.sortBy (fun w -> w.Operation.Index)
        |> List.ofArray
      FromStart = (from = 0)
      Breaking = breaking
      LinearizablePrefixEvents = good
      TotalEvents = total
      Witness = witnessOrder |> List.map (fun i -> t.Ops[i])
      WitnessValue = Interned.valueOf witnessFinal t.Interned
      Minimised = prefixMinimal && startMinimal }
