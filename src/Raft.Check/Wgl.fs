/// Wing & Gong's search for a linearization, in Lowe's form (a doubly linked list of call and
/// return entries, lifting a call with its return when it is linearized, backtracking from a
/// return), with Porcupine's memoisation: a (set of linearized operations, register state)
/// pair reached once need not be explored again, because what can follow depends on nothing
/// else. The mutation is local to one search.
module Raft.Check.Wgl

open System.Collections.Generic
open Raft.Check.Register

/// An operation to place: a call at `Call`, and a return at `Return`, or none when the
/// operation's outcome is unknown (it then may be placed anywhere after its call, or never).
[<Struct>]
type SearchOp = { Step: Step; Call: int64; Return: int64 voption }

type SearchResult =
    /// An order of (indexes of) the operations placed, and the register's state after them.
    | Linearized of order: int list * final: int
    /// No order exists.
    | Impossible
    /// The budget ran out first.
    | OutOfTime

/// A memo entry: the linearized set as a bitset, the state, and a hash of both.
[<Struct; CustomEquality; NoComparison>]
type private Memo =
    { Bits: uint64[]
      State: int
      Hash: int }

    override this.GetHashCode() = this.Hash

    override this.Equals(o) =
        match o with
        | :? Memo as m -> this.Hash = m.Hash && this.State = m.State && System.MemoryExtensions.SequenceEqual(System.ReadOnlySpan this.Bits, System.ReadOnlySpan m.Bits)
        | _ -> false

    interface System.IEquatable<Memo> with
        member this.Equals(m: Memo) =
            this.Hash = m.Hash && this.State = m.State && System.MemoryExtensions.SequenceEqual(System.ReadOnlySpan this.Bits, System.ReadOnlySpan m.Bits)

/// splitmix64: fixed per-operation hash keys (Zobrist hashing of the linearized set), the
/// same on every run.
let private mix (x: uint64) =
    let z = x + 0x9E3779B97F4A7C15UL
    let z = (z ^^^ (z >>> 30)) * 0xBF58476D1CE4E5B9UL
    let z = (z ^^^ (z >>> 27)) * 0x94D049BB133111EBUL
    z ^^^ (z >>> 31)

/// For each operation of unknown outcome, the operations that observe the value it writes
/// (gets that read it, compare-and-sets that expect it). Once all of them are placed, placing
/// it can help nothing: whatever followed it before the next write would have to observe its
/// value, so an order that places it that late stays valid without it. The search skips such
/// a "spent" operation; without this, every unknown write ever issued stays a choice at every
/// step and the search grows with 2 to the power of their number.
let private observersOf (ops: SearchOp[]) : int[][] =
    let observes (v: int) (o: SearchOp) =
        match o.Step with
        | GetStep r -> r = v
        | CasStep(e, _) -> e = v
        | PutStep _ -> false
    ops
    |> Array.map (fun op ->
        match op.Return, op.Step with
        | ValueNone, (PutStep v | CasStep(_, v)) ->
            ops |> Array.indexed |> Array.choose (fun (j, o) -> if observes v o then Some j else None)
        | _ -> [||])

/// How many search steps between looks at the clock.
let private clockEvery = 1023L

/// Searches for a linearization of `ops` from register state `initial`. Calls sort before
/// returns at the same instant, so operations touching in time count as concurrent: the
/// checker never reports a violation that depends on a tie.
let search (budget: Budget) (initial: int) (ops: SearchOp[]) : SearchResult =
    let n = ops.Length
    // Entries 1..count; 0 is the list head; -1 is the end.
    let entries =
        [| for i in 0 .. n - 1 do
               yield struct (ops[i].Call, 0, i)
               match ops[i].Return with
               | ValueSome r -> yield struct (r, 1, i)
               | ValueNone -> () |]
        |> Array.sortWith (fun (struct (t1, k1, i1)) (struct (t2, k2, i2)) ->
            let c = compare t1 t2
            if c <> 0 then c
            else
                let c = compare k1 k2
                if c <> 0 then c else compare i1 i2)
    let count = entries.Length
    let isCall = Array.zeroCreate<bool> (count + 1)
    let opOf = Array.zeroCreate<int> (count + 1)
    let returnOf = Array.create n -1
    for e in 1..count do
        let struct (_, kind, i) = entries[e - 1]
        isCall[e] <- (kind = 0)
        opOf[e] <- i
        if kind = 1 then returnOf[i] <- e
    let next = Array.init (count + 1) (fun e -> if e < count then e + 1 else -1)
    let prev = Array.init (count + 1) (fun e -> e - 1)
    let unlink e =
        next[prev[e]] <- next[e]
        if next[e] >= 0 then prev[next[e]] <- prev[e]
    let relink e =
        next[prev[e]] <- e
        if next[e] >= 0 then prev[next[e]] <- e
    // Lifting a call removes it and its return; putting back restores them in reverse.
    let lift c =
        unlink c
        let r = returnOf[opOf[c]]
        if r >= 0 then unlink r
    let unlift c =
        let r = returnOf[opOf[c]]
        if r >= 0 then relink r
        relink c

    let words = (n + 63) / 64
    let bits = Array.zeroCreate<uint64> words
    let isSet (j: int) = (bits[j >>> 6] &&& (1UL <<< (j &&& 63))) <> 0UL
    let observers = observersOf ops
    let spent (i: int) = ops[i].Return.IsNone && Array.forall isSet observers[i]
    let keys = Array.init n (fun i -> mix (uint64 i + 0x5DEECE66DUL))
    let memo = HashSet<Memo>()
    let memoHash (h: uint64) (s: int) = int (mix (h ^^^ uint64 (uint32 s)) >>> 32)

    let mutable returnsLeft = ops |> Array.sumBy (fun o -> if o.Return.IsSome then 1 else 0)
    let stackEntry = Array.zeroCreate<int> n
    let stackState = Array.zeroCreate<int> n
    let mutable depth = 0
    let mutable state = initial
    let mutable hash = 0UL
    let mutable entry = next[0]
    let mutable steps = 0L
    let mutable result = ValueNone

    while result.IsNone do
        steps <- steps + 1L
        if returnsLeft = 0 then
            let order = [ for d in 0 .. depth - 1 -> opOf[stackEntry[d]] ]
            result <- ValueSome(Linearized(order, state))
        elif (steps &&& clockEvery) = 0L && Budget.expired budget then
            result <- ValueSome OutOfTime
        elif entry >= 0 && isCall[entry] then
            let i = opOf[entry]
            let mutable advanced = false
            match (if spent i then ValueNone else Register.apply state ops[i].Step) with
            | ValueSome s' ->
                let h' = hash ^^^ keys[i]
                let w = i >>> 6
                let bit = 1UL <<< (i &&& 63)
                bits[w] <- bits[w] ||| bit
                let probe = { Bits = bits; State = s'; Hash = memoHash h' s' }
                if not (memo.Contains probe) then
                    memo.Add { probe with Bits = Array.copy bits } |> ignore
                    stackEntry[depth] <- entry
                    stackState[depth] <- state
                    depth <- depth + 1
                    state <- s'
                    hash <- h'
                    if ops[i].Return.IsSome then returnsLeft <- returnsLeft - 1
                    lift entry
                    entry <- next[0]
                    advanced <- true
                else
                    bits[w] <- bits[w] &&& ~~~bit
            | ValueNone -> ()
            if not advanced then entry <- next[entry]
        elif depth = 0 then
            // A return (or the end) with nothing to undo: no call can be placed first.
            result <- ValueSome Impossible
        else
            depth <- depth - 1
            let c = stackEntry[depth]
            let i = opOf[c]
            state <- stackState[depth]
            hash <- hash ^^^ keys[i]
            bits[i >>> 6] <- bits[i >>> 6] &&& ~~~(1UL <<< (i &&& 63))
            if ops[i].Return.IsSome then returnsLeft <- returnsLeft + 1
            unlift c
            entry <- next[c]

    match result with
    | ValueSome r -> r
    | ValueNone -> Impossible
