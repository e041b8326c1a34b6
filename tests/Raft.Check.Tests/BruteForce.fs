/// A reference checker by exhaustive search over orders, straight from the definition, for
/// small histories: an order is valid when it places every operation known to have taken
/// effect (and any subset of those of unknown outcome), never places an operation before one
/// that returned before it was invoked, and makes every operation legal on the register.
module Raft.Check.Tests.BruteForce

open Raft.Check

[<Struct>]
type RefOp =
    { Command: Command
      Read: Value option
      Call: int64
      /// None: the outcome is unknown (optional, no return).
      Return: int64 option }

/// The operations of a history as the definition sees them: failed ones dropped (they did
/// not happen), gets of unknown outcome dropped (they constrain nothing).
let ofOperations (ops: Operation seq) : RefOp list =
    ops
    |> Seq.choose (fun op ->
        match op.Command, op.Outcome with
        | _, Failed _ -> None
        | Read, Indeterminate _ -> None
        | c, Succeeded(at, read) -> Some { Command = c; Read = read; Call = op.Invoked; Return = Some at }
        | c, Indeterminate _ -> Some { Command = c; Read = None; Call = op.Invoked; Return = None })
    |> List.ofSeq

let private apply (state: Value option) (op: RefOp) : Value option option =
    match op.Command with
    | Write v -> Some v
    | Read -> if op.Read = state then Some state else None
    | CompareAndSet(e, n) -> if e = state then Some n else None

/// Whether some valid order exists from `initial`.
let linearizable (initial: Value option) (ops: RefOp list) : bool =
    let rec go (state: Value option) (remaining: RefOp list) =
        if remaining |> List.forall (fun o -> o.Return.IsNone) then true
        else
            remaining
            |> List.indexed
            |> List.exists (fun (i, x) ->
                // x may go next unless another remaining operation returned before x's call.
                let blocked =
                    remaining |> List.exists (fun y ->
                        match y.Return with
                        | Some r -> r < x.Call
                        | None -> false)
                not blocked
                && (match apply state x with
                    | Some s -> go s (List.removeAt i remaining)
                    | None -> false))
    go initial ops
