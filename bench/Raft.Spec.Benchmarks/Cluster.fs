/// A 3-node in-memory cluster driven the way etcd's own benchmarks drive RawNodes:
/// synchronous Ready handling (persist, send, Advance), messages delivered in order until
/// the cluster is quiet. Only the driver mutates (its arrays); the nodes are values, so a
/// state reached once can be stepped again and again by the micro-benchmarks.
module Raft.Spec.Benchmarks.Cluster

open System.Collections.Generic
open Raft.Spec

type Cluster =
    { Nodes: RawNode[]
      Storages: MemoryStorage[]
      Network: Queue<Message> }

let private config (id: uint64) (storage: MemoryStorage) : Config =
    { Config.create id (MemoryStorage.asStorage storage) with
        ElectionTick = 6
        HeartbeatTick = 1
        Applied = 1UL
        // etcd server's usual limits.
        MaxSizePerMsg = 1024UL * 1024UL
        MaxInflightMsgs = 256
        RandomSeed = id }

/// Three voters starting from a snapshot at index 1 that holds the configuration.
let create () : Cluster =
    let boot =
        { Data = Array.zeroCreate 8
          Metadata = { Index = 1UL; Term = 1UL; ConfState = { ConfState.empty with Voters = [ 1UL; 2UL; 3UL ] } } }
    let storage =
        match MemoryStorage.applySnapshot boot MemoryStorage.empty with
        | Ok s -> s
        | Error e -> failwith (StorageError.message e)
    let nodes =
        [| for id in 1UL .. 3UL ->
               match RawNode.create (config id storage) with
               | Ok rn -> rn
               | Error e -> failwith e |]
    { Nodes = nodes; Storages = Array.create 3 storage; Network = Queue() }

/// Drops pending log lines and traces, as a host does after handing them to its logger.
let private drain (rn: RawNode) =
    let rn, _, _ = RawNode.takeOutput rn
    rn

/// Handles one Ready of node i: persist, send, Advance.
let handleReady (c: Cluster) (i: int) =
    let rn, rd = RawNode.ready c.Nodes[i]
    let s = c.Storages[i]
    let s = match rd.HardState with Some hs -> MemoryStorage.setHardState hs s | None -> s
    let s =
        match rd.Snapshot with
        | Some snap when not (Snapshot.isEmpty snap) ->
            match MemoryStorage.applySnapshot snap s with
            | Ok s -> s
            | Error e -> failwith (StorageError.message e)
        | _ -> s
    let s = MemoryStorage.append rd.Entries s
    c.Storages[i] <- s
    for m in rd.Messages do
        c.Network.Enqueue m
    c.Nodes[i] <- rn |> RawNode.withStorage (MemoryStorage.asStorage s) |> RawNode.advance |> drain

/// Handles every Ready and delivers every message until nothing is left to do.
let stabilize (c: Cluster) =
    let mutable busy = true
    while busy do
        for i in 0 .. c.Nodes.Length - 1 do
            if RawNode.hasReady c.Nodes[i] then handleReady c i
        if c.Network.Count > 0 then
            while c.Network.Count > 0 do
                let m = c.Network.Dequeue()
                let i = int m.To - 1
                c.Nodes[i] <- RawNode.step m c.Nodes[i] |> fst |> drain
        else busy <- c.Nodes |> Array.exists RawNode.hasReady

/// A cluster whose node 1 leads, everything stable.
let withLeader () : Cluster =
    let c = create ()
    c.Nodes[0] <- RawNode.campaign c.Nodes[0] |> fst
    stabilize c
    if c.Nodes[0].Raft.State <> StateLeader then failwith "node 1 did not become leader"
    c

let committed (c: Cluster) = c.Nodes[0].Raft.RaftLog.Committed

/// Proposes `batch` 16-byte entries at node 1 and stabilizes.
let round (payload: byte[]) (batch: int) (c: Cluster) =
    for _ in 1..batch do
        c.Nodes[0] <- RawNode.propose payload c.Nodes[0] |> fst
    stabilize c
