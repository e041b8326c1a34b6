namespace Raft.Check

open System
open System.Diagnostics

/// A time budget for a check: when it runs out the answer is Unknown, never a guess.
[<Struct>]
type Budget = { Started: int64; Limit: TimeSpan }

module Budget =
    /// A budget of `limit` starting now.
    let start (limit: TimeSpan) : Budget = { Started = Stopwatch.GetTimestamp(); Limit = limit }

    /// No limit.
    let unlimited () : Budget = start TimeSpan.MaxValue

    let elapsed (b: Budget) : TimeSpan = Stopwatch.GetElapsedTime b.Started

    let expired (b: Budget) : bool = elapsed b >= b.Limit
