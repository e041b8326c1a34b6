using System.Collections.Concurrent;
using System.Net;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using Raft.Spec;
using Raft.Transport.Grpc.Peers;
using Raft.Transport.Grpc.Wire;
using MessageBatchPb = Raft.Transport.Grpc.Protos.MessageBatch;

namespace Raft.Transport.Grpc.Tests;

/// <summary>
/// A member removed from the cluster is refused with a status of its own, which ends its call, and
/// its transport reports that it was removed (etcd's peers answer a removed member 410 Gone and it
/// stops); strangers and other clusters are refused as before, without being told anything of the kind.
/// </summary>
public sealed class RemovedMemberTransportTests
{
    private const ulong Cluster = 0xC1;

    /// <summary>Node 2's view: members 1 and 2, member 7 removed.</summary>
    private sealed class Sink : IRaftMessageSink
    {
        public ConcurrentQueue<Message> Received { get; } = new();
        public bool IsMember(ulong nodeId) => nodeId is 1 or 2;
        public bool IsRemoved(ulong nodeId) => nodeId == 7;

        public ValueTask DeliverAsync(ulong from, IReadOnlyList<Message> messages, CancellationToken cancellationToken)
        {
            foreach (var m in messages) Received.Enqueue(m);
            return ValueTask.CompletedTask;
        }

        public ValueTask DeliverSnapshotAsync(ulong from, Message message, CancellationToken cancellationToken)
        {
            Received.Enqueue(message);
            return ValueTask.CompletedTask;
        }
    }

    private sealed class Reports
    {
        public ConcurrentQueue<ulong> Unreachable { get; } = new();
        public ConcurrentQueue<(ulong Peer, bool Ok)> Snapshots { get; } = new();
        public ConcurrentQueue<ulong> RemovedBy { get; } = new();
    }

    private static async Task<(GrpcServer Server, RaftPeerService Service, Sink Sink)> StartNode2Async()
    {
        var sink = new Sink();
        var service = new RaftPeerService(Cluster, 2, sink);
        var server = await GrpcServer.StartAsync(new GrpcServerOptions { Endpoint = new IPEndPoint(IPAddress.Loopback, 0) },
            service.Register(new GrpcServiceRegistry()));
        return (server, service, sink);
    }

    private static RaftTransport Transport(ulong nodeId, Reports reports, ulong cluster = Cluster, ListLogger? logger = null) =>
        new(new RaftTransportOptions
            {
                ClusterId = cluster, NodeId = nodeId, SnapshotChunkBytes = 16 * 1024,
                ReconnectDelayMin = TimeSpan.FromMilliseconds(20), ReconnectDelayMax = TimeSpan.FromMilliseconds(200),
            },
            reports.Unreachable.Enqueue, (peer, ok) => reports.Snapshots.Enqueue((peer, ok)), logger, reports.RemovedBy.Enqueue);

    private static Message PreVote(ulong from, ulong to) =>
        new(MessageType.MsgPreVote, to, from, 5, 4, 10, [], 0, 0, FSharpOption<Snapshot>.None, false, 0, [], []);

    private static Message Snap(ulong from, ulong to)
    {
        var conf = new ConfState(ListModule.OfSeq(new[] { 1UL, 2UL, 7UL }), FSharpList<ulong>.Empty, FSharpList<ulong>.Empty, FSharpList<ulong>.Empty, false);
        return new Message(MessageType.MsgSnap, to, from, 3, 0, 0, [], 0, 0,
            FSharpOption<Snapshot>.Some(new Snapshot(new byte[100_000], new SnapshotMetadata(conf, 500, 3))), false, 0, [], []);
    }

    [Fact]
    public async Task A_removed_member_is_refused_with_a_final_status_and_its_transport_reports_that_it_was_removed()
    {
        var (server, service, sink) = await StartNode2Async();
        await using var _ = server;

        // On the wire: the call ends with the removed-member status after the first batch.
        using (var client = new GrpcClient(new GrpcClientOptions { Address = server.Address }))
        await using (var call = client.StartDuplexStreaming(RaftPeerMethods.Stream))
        {
            await call.WriteAsync(new MessageBatchPb { ClusterId = Cluster, SenderId = 7, Messages = { RaftWireMapping.ToWire(PreVote(7, 2)) } });
            var e = await Assert.ThrowsAsync<GrpcCallException>(async () => { await foreach (var _ in call.ReadAllAsync()) { } });
            Assert.Equal(RaftPeerMethods.RemovedMemberStatus, e.StatusCode);
            Assert.True(RaftPeerMethods.IsRemovedMemberRefusal(e), e.StatusMessage);
            Assert.Contains("node 7 was removed from cluster c1", e.StatusMessage);
        }
        Assert.Equal((1L, 0L), (service.RefusedRemovedMember, service.RefusedNonMember));

        // Through the transport: the removed member hears it from node 2, as a removal, not as an unreachable peer.
        var reports = new Reports();
        await using var removed = Transport(7, reports);
        removed.AddPeer(2, new GrpcClientOptions { Address = server.Address });
        Assert.True(removed.Send(PreVote(7, 2)));
        await Eventually.TrueAsync(() => reports.RemovedBy.Contains(2UL), "node 7 told it was removed");
        Assert.Equal(1, removed.RemovedRefusals);
        Assert.Empty(reports.Unreachable);

        // A snapshot it sends is refused the same way: reported failed, and the removal reported again.
        Assert.True(removed.Send(Snap(7, 2)));
        await Eventually.TrueAsync(() => reports.Snapshots.Count == 1, "the refused snapshot was reported");
        Assert.Equal((2UL, false), reports.Snapshots.Single());
        Assert.Equal(2, reports.RemovedBy.Count);
        Assert.Equal(2, removed.RemovedRefusals);
        Assert.Equal(3L, service.RefusedRemovedMember);
        Assert.Empty(sink.Received);
    }

    [Fact]
    public async Task Strangers_and_other_clusters_are_refused_as_before_and_never_told_they_were_removed()
    {
        var (server, service, sink) = await StartNode2Async();
        await using var _ = server;
        var reports = new Reports();

        // Node 8 was never a member; a node 7 of another cluster is not the removed member of this one.
        foreach (var (node, cluster) in new[] { (8UL, Cluster), (7UL, 0xBADUL) })
        {
            var log = new ListLogger();
            await using var stranger = Transport(node, reports, cluster, log);
            stranger.AddPeer(2, new GrpcClientOptions { Address = server.Address });
            Assert.True(stranger.Send(PreVote(node, 2)));
            // The refusal comes back as an acknowledgement that says why; the stream stays open.
            await Eventually.TrueAsync(() => log.Lines.Any(l => l.Contains("Peer 2 refused our messages")), $"node {node} of cluster {cluster:x} refused");
            Assert.Equal(0, stranger.RemovedRefusals);
        }
        Assert.Empty(reports.RemovedBy);
        Assert.Equal((1L, 1L, 0L), (service.RefusedNonMember, service.RefusedForeignCluster, service.RefusedRemovedMember));

        // A member is served as before.
        await using var member = Transport(1, reports);
        member.AddPeer(2, new GrpcClientOptions { Address = server.Address });
        Assert.True(member.Send(PreVote(1, 2)));
        await Eventually.TrueAsync(() => sink.Received.Count == 1, "the member's message delivered");
        Assert.Empty(reports.RemovedBy);
    }
}
