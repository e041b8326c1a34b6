/// Histories made by simulating clients of a sequential register store: every operation
/// takes effect atomically at one instant between its invocation and its completion (or,
/// when its outcome is reported unknown, at any later instant or never), so the histories are
/// linearizable by construction. Anomalies are then injected by editing events.
module Raft.Check.Tests.Simulation

open System
open System.Collections.Generic
open Raft.Check

type SimConfig =
    { Seed: int
      Processes: int
      Keys: int
      Operations: int
      /// Chance that a completion is reported as "info" (unknown).
      InfoRate: float
      /// Chance that an operation not yet applied is completed as "fail".
      FailRate: float }

type private InFlight =
    { Invoke: Event
      Applied: bool
      /// For a get: what it read; for a cas: whether the compare matched.
      Read: Value option
      CasMatched: bool }

/// A linearizable history: events in time order (times strictly increase, except for
/// occasional ties between events, which the checker counts as concurrent).
let generate (cfg: SimConfig) : Event list =
    let rng = Random(cfg.Seed)
    let keys = Array.init cfg.Keys (fun k -> $"k{k}")
    let register = Dictionary<string, Value option>()
    let written = Dictionary<string, ResizeArray<Value option>>()
    for k in keys do
        register[k] <- None
        written[k] <- ResizeArray [ None ]
    let busy = Dictionary<int, InFlight>()
    // Unknown-outcome writes not applied yet: they may take effect at any later time, or never.
    let floating = ResizeArray<Event>()
    let events = ResizeArray<Event>()
    let mutable time = 1000L
    let mutable invoked = 0
    let mutable line = 0
    let tick () =
        time <- time + (if rng.NextDouble() < 0.1 then 0L else int64 (rng.Next(1, 20)))
    let emit (ev: Event) =
        line <- line + 1
        events.Add { ev with Line = line; Time = time }
        tick ()
    let applyWrite (ev: Event) : bool =
        match ev.Value with
        | One v ->
            register[ev.Key] <- v
            true
        | Pair(e, n) when register[ev.Key] = e ->
            register[ev.Key] <- n
            true
        | _ -> false
    let fresh () = Some(Value $"\"v{invoked}\"")
    let idle () = [ for p in 0 .. cfg.Processes - 1 do if not (busy.ContainsKey p) then p ]
    while invoked < cfg.Operations || busy.Count > 0 do
        let choice = rng.Next 100
        let idleNow = idle ()
        if choice < 35 && invoked < cfg.Operations && not idleNow.IsEmpty then
            let p = idleNow[rng.Next idleNow.Length]
            let key = keys[rng.Next keys.Length]
            let kind = rng.Next 10
            let f, value =
                if kind < 4 then Put, One(fresh ())
                elif kind < 8 then Get, NoValue
                else
                    let expected =
                        if rng.NextDouble() < 0.6 then register[key]
                        else written[key][rng.Next written[key].Count]
                    Cas, Pair(expected, fresh ())
            invoked <- invoked + 1
            let ev =
                { Line = 0; Process = p; Type = EventType.Invoke; F = f; Key = key; Value = value; Time = 0L }
            emit ev
            busy[p] <- { Invoke = events[events.Count - 1]; Applied = false; Read = None; CasMatched = false }
        elif choice < 45 && floating.Count > 0 then
            let i = rng.Next floating.Count
            applyWrite floating[i] |> ignore
            floating.RemoveAt i
            tick ()
        elif busy.Count > 0 then
            let ps = Array.ofSeq busy.Keys
            let p = ps[rng.Next ps.Length]
            let op = busy[p]
            let ev = op.Invoke
            if not op.Applied && rng.NextDouble() < 0.7 then
                // The operation takes effect now.
                match ev.F with
                | Get -> busy[p] <- { op with Applied = true; Read = register[ev.Key] }
                | Put ->
                    applyWrite ev |> ignore
                    (match ev.Value with One v -> written[ev.Key].Add v | _ -> ())
                    busy[p] <- { op with Applied = true }
                | Cas ->
                    let matched = applyWrite ev
                    (match ev.Value with Pair(_, n) when matched -> written[ev.Key].Add n | _ -> ())
                    busy[p] <- { op with Applied = true; CasMatched = matched }
                tick ()
            else
                let completion typ value = { ev with Type = typ; Value = value }
                let unknown = rng.NextDouble() < cfg.InfoRate
                match op.Applied, ev.F with
                | true, _ when unknown -> emit (completion EventType.Info NoValue)
                | true, Get -> emit (completion EventType.Ok (One op.Read))
                | true, Cas when not op.CasMatched -> emit (completion EventType.Fail NoValue)
                | true, _ -> emit (completion EventType.Ok ev.Value)
                | false, _ when rng.NextDouble() < cfg.FailRate -> emit (completion EventType.Fail NoValue)
                | false, _ ->
                    emit (completion EventType.Info NoValue)
                    if ev.F <> Get then floating.Add ev
                busy.Remove p |> ignore
        else
            tick ()
    List.ofSeq events

/// The kinds of anomaly injected into a linearizable history.
type Anomaly =
    /// A get returns the value of a write that a later completed write overwrote before the get began.
    | StaleRead
    /// A get returns a value nobody wrote.
    | NeverWritten
    /// A write whose value some get read is reported failed.
    | FailedWriteObserved

/// Invocation and completion events of each operation, in invocation order.
let private pairs (events: Event list) : (Event * Event option) list =
    let open' = Dictionary<int, int>()
    let result = ResizeArray<Event * Event option>()
    for ev in events do
        if ev.Type = EventType.Invoke then
            open'[ev.Process] <- result.Count
            result.Add((ev, None))
        else
            let i = open'[ev.Process]
            result[i] <- (fst result[i], Some ev)
            open'.Remove ev.Process |> ignore
    List.ofSeq result

let private writtenValue (invoke: Event) =
    match invoke.Value with
    | One v -> v
    | Pair(_, n) -> n
    | NoValue -> None

let private replace (events: Event list) (target: Event) (updated: Event) =
    events |> List.map (fun e -> if e.Line = target.Line then updated else e)

/// Appends, after everything, one fresh process's put a, put b, get -> a: a stale read no
/// history can explain (values are unique, so nothing else writes a).
let private appendStaleRead (events: Event list) : Event list * Event =
    let last = events |> List.fold (fun t e -> max t e.Time) 0L
    let p = 1 + (events |> List.fold (fun m e -> max m e.Process) 0)
    let key = match events with e :: _ -> e.Key | [] -> "k0"
    let a = Some(Value "\"anomaly-a\"")
    let b = Some(Value "\"anomaly-b\"")
    let line0 = events.Length
    let ev i typ f value =
        { Line = line0 + i + 1; Process = p; Type = typ; F = f; Key = key; Value = value; Time = last + int64 (10 * (i + 1)) }
    let get = ev 5 EventType.Ok Get (One a)
    events
    @ [ ev 0 EventType.Invoke Put (One a); ev 1 EventType.Ok Put (One a)
        ev 2 EventType.Invoke Put (One b); ev 3 EventType.Ok Put (One b)
        ev 4 EventType.Invoke Get NoValue; get ],
    get

/// The history with one anomaly, and the completion event of the operation that exposes it
/// (the get for a stale or never-written read, the failed write for an observed failed write).
let inject (anomaly: Anomaly) (rng: Random) (events: Event list) : Event list * Event =
    let ps = pairs events
    let okGets =
        ps |> List.choose (function
            | inv, Some c when inv.F = Get && c.Type = EventType.Ok -> Some(inv, c)
            | _ -> None)
    let okWrites =
        ps |> List.choose (function
            | inv, Some c when inv.F <> Get && c.Type = EventType.Ok -> Some(inv, c)
            | _ -> None)
    let pick (xs: 'a list) = xs[rng.Next xs.Length]
    match anomaly with
    | StaleRead ->
        let candidates =
            [ for (gi, gc) in okGets do
                  for (w1i, w1c) in okWrites do
                      if w1i.Key = gi.Key && w1c.Time < gi.Time && (writtenValue w1i).IsSome then
                          let overwritten =
                              okWrites |> List.exists (fun (w2i, w2c) ->
                                  w2i.Key = gi.Key && w2i.Time > w1c.Time && w2c.Time < gi.Time)
                          if overwritten then yield (gc, writtenValue w1i) ]
        match candidates with
        | [] -> appendStaleRead events
        | _ ->
            let gc, v = pick candidates
            let updated = { gc with Value = One v }
            replace events gc updated, updated
    | NeverWritten ->
        match okGets with
        | [] -> appendStaleRead events
        | _ ->
            let _, gc = pick okGets
            let updated = { gc with Value = One(Some(Value "\"never-written\"")) }
            replace events gc updated, updated
    | FailedWriteObserved ->
        let candidates =
            [ for (wi, wc) in okWrites do
                  let v = writtenValue wi
                  if v.IsSome && okGets |> List.exists (fun (gi, gc) -> gi.Key = wi.Key && gc.Value = One v) then
                      yield wc ]
        match candidates with
        | [] -> appendStaleRead events
        | _ ->
            let wc = pick candidates
            let updated = { wc with Type = EventType.Fail; Value = NoValue }
            replace events wc updated, updated
