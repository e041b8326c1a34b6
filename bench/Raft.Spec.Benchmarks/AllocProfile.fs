/// `allocs` mode: which types the 3-node run allocates, by sampled volume (the runtime's
/// allocation tick, one event per ~100 KB allocated), to see where the bytes go.
module Raft.Spec.Benchmarks.AllocProfile

open System
open System.Collections.Generic
open System.Diagnostics.Tracing

type private AllocListener() =
    inherit EventListener()
    let byType = Dictionary<string, int64>()
    member _.ByType = byType

    override this.OnEventSourceCreated(source: EventSource) =
        if source.Name = "Microsoft-Windows-DotNETRuntime" then
            // GC keyword (0x1) at verbose level: GCAllocationTick events.
            this.EnableEvents(source, EventLevel.Verbose, LanguagePrimitives.EnumOfValue<int64, EventKeywords> 1L)

    override _.OnEventWritten(e: EventWrittenEventArgs) =
        match e.EventName, e.PayloadNames, e.Payload with
        | NonNull eventName, NonNull names, NonNull payload when eventName.StartsWith "GCAllocationTick" ->
            let get (n: string) : obj | null =
                let i = names.IndexOf n
                if i >= 0 then payload[i] else null
            let name = match get "TypeName" with :? string as s -> s | _ -> "?"
            let amount = match get "AllocationAmount64" with :? uint64 as a -> int64 a | _ -> 100_000L
            lock byType (fun () ->
                let mutable v = 0L
                byType.TryGetValue(name, &v) |> ignore
                byType[name] <- v + amount)
        | _ -> ()

/// The plain cluster run, or with `simulator` the 'raftv bench core' run.
let run (entries: int) (batch: int) (simulator: bool) =
    use listener = new AllocListener()
    let before = GC.GetAllocatedBytesForCurrentThread()
    if simulator then Raft.Spec.CoreBench.run entries batch |> ignore
    else
        let c = Cluster.withLeader ()
        let payload = Array.create 16 (byte 'x')
        let target = Cluster.committed c + uint64 entries
        while Cluster.committed c < target do
            Cluster.round payload batch c
    let total = GC.GetAllocatedBytesForCurrentThread() - before
    printfn "batch %d: %.0f bytes per entry; sampled allocations by type:" batch (float total / float entries)
    let sampled = lock listener.ByType (fun () -> listener.ByType |> Seq.map (fun kv -> kv.Key, kv.Value) |> Seq.toArray)
    let sum = sampled |> Array.sumBy snd |> float
    for name, v in sampled |> Array.sortByDescending snd |> Array.truncate 30 do
        printfn "  %5.1f%%  %s" (100.0 * float v / sum) name
