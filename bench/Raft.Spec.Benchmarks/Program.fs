/// `dotnet run -c Release -- core [--entries N]`: the 'raftv bench core' figures (the
/// simulator's 3-node cluster) and this project's own cluster driver; anything else goes
/// `allocs BATCH`: allocated types of the plain cluster run; anything else goes to
/// BenchmarkDotNet (e.g. `--filter '*'`).
module Raft.Spec.Benchmarks.Program

open System
open BenchmarkDotNet.Running
open Raft.Spec

let private timed (entries: int) (batch: int) =
    let c = Cluster.withLeader ()
    let payload = Array.create 16 (byte 'x')
    let target = Cluster.committed c + uint64 entries
    let allocated0 = GC.GetAllocatedBytesForCurrentThread()
    let clock = Diagnostics.Stopwatch.StartNew()
    let mutable proposed = 0
    while Cluster.committed c < target do
        let n = min batch (entries - proposed)
        Cluster.round payload n c
        proposed <- proposed + n
    clock.Stop()
    let allocated = GC.GetAllocatedBytesForCurrentThread() - allocated0
    clock.Elapsed.TotalSeconds, float allocated / float entries

[<EntryPoint>]
let main argv =
    match List.ofArray argv with
    | "core" :: rest ->
        let entries =
            match rest with
            | [ "--entries"; n ] -> int n
            | _ -> 20000
        CoreBench.run (min entries 500) 64 |> ignore
        timed (min entries 500) 64 |> ignore
        printfn "simulator cluster ('raftv bench core'):"
        for b in [ 1; 64 ] do
            let r = CoreBench.run entries b
            printfn "  batch %3d: %d entries in %.2f s = %.0f committed entries/s, %.0f bytes allocated per entry"
                r.Batch r.Entries r.Seconds r.EntriesPerSecond r.BytesPerEntry
        printfn "plain cluster driver (as etcd's benchmarks drive RawNode):"
        for b in [ 1; 64 ] do
            let seconds, bytes = timed entries b
            printfn "  batch %3d: %d entries in %.2f s = %.0f committed entries/s, %.0f bytes allocated per entry"
                b entries seconds (float entries / seconds) bytes
        0
    | [ "allocs"; batch ] ->
        AllocProfile.run 20000 (int batch)
        0
    | _ ->
        BenchmarkSwitcher.FromAssembly(typeof<Raft.Spec.Benchmarks.CoreBenchmarks>.Assembly).Run(argv) |> ignore
        0
