/// `dotnet run -c Release -- core [--entries N]`: the 'raftv bench core' figures and the
/// same load through the simulator's events. `allocs BATCH [simulator]`: allocated types of
/// the plain (or simulator) cluster run. Anything else goes to BenchmarkDotNet
/// (e.g. `--filter '*'`).
module Raft.Spec.Benchmarks.Program

open System
open BenchmarkDotNet.Running
open Raft.Spec

[<EntryPoint>]
let main argv =
    match List.ofArray argv with
    | "core" :: rest ->
        let entries =
            match rest with
            | [ "--entries"; n ] -> int n
            | _ -> 20000
        let show (r: CoreBenchResult) =
            printfn "  batch %3d: %d entries in %.2f s = %.0f committed entries/s, %.0f bytes allocated per entry"
                r.Batch r.Entries r.Seconds r.EntriesPerSecond r.BytesPerEntry
        // Short runs first, so that the figures do not include JIT compilation.
        CoreBench.run (min entries 500) 64 |> ignore
        CoreBench.runSimulated (min entries 500) 64 |> ignore
        printfn "core ('raftv bench core'):"
        for b in [ 1; 64 ] do
            show (CoreBench.run entries b)
        printfn "through the simulator's events:"
        for b in [ 1; 64 ] do
            show (CoreBench.runSimulated entries b)
        0
    | [ "loop"; batch; entries ] ->
        // For profilers: the core run alone.
        let r = CoreBench.run (int entries) (int batch)
        printfn "%.0f entries/s, %.0f bytes per entry" r.EntriesPerSecond r.BytesPerEntry
        0
    | [ "allocs"; batch ] ->
        AllocProfile.run 20000 (int batch) false
        0
    | [ "allocs"; batch; "simulator" ] ->
        AllocProfile.run 20000 (int batch) true
        0
    | _ ->
        BenchmarkSwitcher.FromAssembly(typeof<Raft.Spec.Benchmarks.CoreBenchmarks>.Assembly).Run(argv) |> ignore
        0
