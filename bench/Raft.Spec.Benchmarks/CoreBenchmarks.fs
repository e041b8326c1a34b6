/// The core's hot paths, one benchmark each, with allocations: a follower taking a MsgApp,
/// the leader taking a MsgAppResp that commits, a proposal at the leader, and a whole
/// 3-node round from proposal to commit on every node. Node states are values: each
/// iteration steps the same state, so every iteration measures the same work.
namespace Raft.Spec.Benchmarks

open BenchmarkDotNet.Attributes
open Raft.Spec

[<MemoryDiagnoser>]
type CoreBenchmarks() =
    let payload = Array.create 16 (byte 'x')
    let mutable follower = Unchecked.defaultof<RawNode>
    let mutable msgApp1 = Message.empty
    let mutable msgApp64 = Message.empty
    let mutable leaderAwaitingAck = Unchecked.defaultof<RawNode>
    let mutable msgAppResp = Message.empty
    let mutable leader = Unchecked.defaultof<RawNode>
    let mutable cluster = Unchecked.defaultof<Cluster.Cluster>

    /// The MsgApp the leader sends to node 2 after `n` proposals (taken from its Ready).
    let msgAppAfter (n: int) (c: Cluster.Cluster) =
        let mutable rn = c.Nodes[0]
        for _ in 1..n do
            rn <- RawNode.propose payload rn |> fst
        let _, rd = RawNode.ready rn
        rd.Messages |> Array.filter (fun m -> m.Type = MsgApp && m.To = 2UL) |> Array.reduce (fun a b ->
            { a with Entries = Array.append a.Entries b.Entries })

    [<GlobalSetup>]
    member _.Setup() =
        let c = Cluster.withLeader ()
        follower <- c.Nodes[1]
        leader <- c.Nodes[0]
        msgApp1 <- msgAppAfter 1 c
        msgApp64 <- msgAppAfter 64 c
        // The leader with one proposal persisted, sent out and acknowledged by itself: node
        // 2's ack commits it.
        c.Nodes[0] <- RawNode.propose payload c.Nodes[0] |> fst
        Cluster.handleReady c 0
        c.Network.Clear()
        leaderAwaitingAck <- c.Nodes[0]
        let last = RaftLog.lastIndex leaderAwaitingAck.Raft.RaftLog
        msgAppResp <- { Message.empty with Type = MsgAppResp; From = 2UL; To = 1UL; Term = leader.Raft.Term; Index = last }
        cluster <- Cluster.withLeader ()

    /// A follower appends one entry (etcd: handleAppendEntries).
    [<Benchmark>]
    member _.FollowerMsgApp1() = RawNode.step msgApp1 follower

    /// A follower appends 64 entries in one message.
    [<Benchmark>]
    member _.FollowerMsgApp64() = RawNode.step msgApp64 follower

    /// The leader takes the ack that commits an entry and tells the followers.
    [<Benchmark>]
    member _.LeaderMsgAppResp() = RawNode.step msgAppResp leaderAwaitingAck

    /// The leader appends a proposal and sends it to both followers.
    [<Benchmark>]
    member _.LeaderPropose() = RawNode.propose payload leader

    /// Proposal to commit on all three nodes: every Ready handled, every message delivered.
    [<Benchmark(OperationsPerInvoke = 1)>]
    member _.Round1() = Cluster.round payload 1 cluster

    [<Benchmark(OperationsPerInvoke = 64)>]
    member _.Round64() = Cluster.round payload 64 cluster
