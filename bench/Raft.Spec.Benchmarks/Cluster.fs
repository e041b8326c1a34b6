/// A 3-node in-memory cluster driven the way etcd's own benchmarks drive RawNodes:
/// synchronous Ready handling (persist, send, Advance), messages delivered in order until
/// the cluster is quiet. Only the driver mutates (its arrays); the nodes are values, so a
/// state reached once can be stepped again and again by the micro-benchmarks.
module Raft.Spec.Benchmarks.Cluster

open Raft.Spec

type Cluster = SyncCluster

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
    SyncCluster.ofNodes nodes (Array.create 3 storage)

/// Handles one Ready of node i: persist, send, Advance.
let handleReady (c: Cluster) (i: int) = SyncCluster.handleReady c i

/// Handles every Ready and delivers every message until nothing is left to do.
let stabilize (c: Cluster) = SyncCluster.stabilize c

/// A cluster whose node 1 leads, everything stable.
let withLeader () : Cluster =
    let c = create ()
    SyncCluster.electFirst c
    c

let committed (c: Cluster) = c.Nodes[0].Raft.RaftLog.Committed

/// Proposes `batch` 16-byte entries at node 1 and stabilizes.
let round (payload: byte[]) (batch: int) (c: Cluster) = SyncCluster.round payload batch c
