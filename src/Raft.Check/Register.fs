/// The model: one register per key, with values interned as small integers so that the
/// search compares and hashes states cheaply. State 0 is "absent".
module Raft.Check.Register

/// An operation as the search sees it: values as interned ids.
[<Struct>]
type Step =
    | PutStep of written: int
    | GetStep of read: int
    | CasStep of expected: int * updated: int

/// The register's next state, or ValueNone when the operation cannot happen in `state`.
let apply (state: int) (step: Step) : int voption =
    match step with
    | PutStep v -> ValueSome v
    | GetStep r -> if r = state then ValueSome state else ValueNone
    | CasStep(e, n) -> if e = state then ValueSome n else ValueNone

/// Interned ids of the values of one key: id 0 is absent, ids from 1 are values in order of
/// first appearance.
type Interned = { Ids: Map<Value, int>; Values: Map<int, Value> }

module Interned =
    let empty = { Ids = Map.empty; Values = Map.empty }

    let idOf (v: Value option) (t: Interned) : int * Interned =
        match v with
        | None -> 0, t
        | Some v ->
            match Map.tryFind v t.Ids with
            | Some id -> id, t
            | None ->
                let id = t.Ids.Count + 1
                id, { Ids = Map.add v id t.Ids; Values = Map.add id v t.Values }

    /// The value of an id; None for absent or for an id no value has (a "fresh" value).
    let valueOf (id: int) (t: Interned) : Value option = Map.tryFind id t.Values

    /// An id no value of this key has: stands for "any value not mentioned".
    let fresh (t: Interned) : int = t.Ids.Count + 1
