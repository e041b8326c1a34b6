using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using Raft.Spec;
using Raft.Transport.Grpc.Peers;
using Raft.Transport.Grpc.Wire;

namespace Raft.Transport.Grpc.Tests;

/// <summary>Records what a node receives.</summary>
public sealed class RecordingSink(params ulong[] members) : IRaftMessageSink
{
    public ConcurrentQueue<(ulong From, Message Message)> Messages { get; } = new();
    public ConcurrentQueue<(ulong From, Message Message)> Snapshots { get; } = new();
    public bool RefuseSnapshots { get; set; }

    public bool IsMember(ulong nodeId) => members.Contains(nodeId);

    public ValueTask DeliverAsync(ulong from, IReadOnlyList<Message> messages, CancellationToken cancellationToken)
    {
        foreach (var m in messages) Messages.Enqueue((from, m));
        return ValueTask.CompletedTask;
    }

    public ValueTask DeliverSnapshotAsync(ulong from, Message message, CancellationToken cancellationToken)
    {
        if (RefuseSnapshots) throw new InvalidOperationException("snapshot storage is full");
        Snapshots.Enqueue((from, message));
        return ValueTask.CompletedTask;
    }
}

public sealed class RaftTransportTests
{
    private const ulong Cluster = 0xC1;

    private static Message App(ulong from, ulong to, ulong index) =>
        new(MessageType.MsgApp, to, from, 1, 1, index, [EntryModule.create(1UL, index + 1, [(byte)index])], index, 0,
            FSharpOption<Snapshot>.None, false, 0, [], []);

    private static async Task<(GrpcServer Server, RaftPeerService Service)> StartNodeAsync(ulong nodeId, IRaftMessageSink sink, int port = 0)
    {
        var service = new RaftPeerService(Cluster, nodeId, sink);
        var server = await GrpcServer.StartAsync(new GrpcServerOptions { Endpoint = new IPEndPoint(IPAddress.Loopback, port), MaxReceiveMessageSize = 1 << 20 },
            service.Register(new GrpcServiceRegistry()));
        return (server, service);
    }

    private sealed class Reports
    {
        public ConcurrentQueue<ulong> Unreachable { get; } = new();
        public ConcurrentQueue<(ulong Peer, bool Ok)> SnapshotStatus { get; } = new();
    }

    private static RaftTransport Transport(ulong nodeId, Reports reports, ulong cluster = Cluster, int queueCapacity = 4096) =>
        new(new RaftTransportOptions
            {
                ClusterId = cluster, NodeId = nodeId, QueueCapacity = queueCapacity,
                ReconnectDelayMin = TimeSpan.FromMilliseconds(20), ReconnectDelayMax = TimeSpan.FromMilliseconds(200),
                SnapshotChunkBytes = 64 * 1024,
            },
            reports.Unreachable.Enqueue, (peer, ok) => reports.SnapshotStatus.Enqueue((peer, ok)));

    [Fact]
    public async Task Messages_arrive_in_order_in_batches()
    {
        var sink = new RecordingSink(1, 2);
        var (server, service) = await StartNodeAsync(2, sink);
        await using var _ = server;
        var reports = new Reports();
        await using var transport = Transport(1, reports);
        transport.AddPeer(2, new GrpcClientOptions { Address = server.Address });

        for (ulong i = 0; i < 2000; i++) Assert.True(transport.Send(App(1, 2, i)));
        await Eventually.TrueAsync(() => sink.Messages.Count == 2000, "2000 messages arrived");
        Assert.Equal(Enumerable.Range(0, 2000).Select(i => (ulong)i), sink.Messages.Select(m => m.Message.Index));
        Assert.Equal(App(1, 2, 1999), sink.Messages.Last().Message);
        Assert.All(sink.Messages, m => Assert.Equal(1UL, m.From));
        Assert.Equal(2000, service.AcceptedMessages);
        Assert.Empty(reports.Unreachable);
    }

    [Fact]
    public async Task Another_cluster_and_non_members_are_refused_and_counted()
    {
        var sink = new RecordingSink(1, 2);
        var (server, service) = await StartNodeAsync(2, sink);
        await using var _ = server;
        var reports = new Reports();

        await using (var stranger = Transport(1, reports, cluster: 0xBAD))
        {
            stranger.AddPeer(2, new GrpcClientOptions { Address = server.Address });
            stranger.Send(App(1, 2, 0));
            await Eventually.TrueAsync(() => service.RefusedForeignCluster == 1, "the foreign batch was refused");
        }
        await using (var removed = Transport(7, reports))
        {
            removed.AddPeer(2, new GrpcClientOptions { Address = server.Address });
            removed.Send(App(7, 2, 0));
            await Eventually.TrueAsync(() => service.RefusedNonMember == 1, "the non-member's batch was refused");
        }
        Assert.Empty(sink.Messages);
    }

    [Fact]
    public async Task A_full_queue_drops_and_reports_the_peer_unreachable_then_reconnects_when_it_comes_up()
    {
        var port = FreePort();
        var reports = new Reports();
        await using var transport = Transport(1, reports, queueCapacity: 8);
        transport.AddPeer(2, new GrpcClientOptions { Address = new Uri($"http://127.0.0.1:{port}") });

        var sent = Enumerable.Range(0, 50).Count(i => transport.Send(App(1, 2, (ulong)i)));
        Assert.True(sent < 50, "some messages must be dropped with the peer down");
        Assert.Equal(50 - sent, transport.DroppedMessages);
        await Eventually.TrueAsync(() => reports.Unreachable.Contains(2UL), "peer 2 was reported unreachable");

        var sink = new RecordingSink(1, 2);
        var (server, _) = await StartNodeAsync(2, sink, port);
        await using var __ = server;
        // As Raft does, keep sending until it gets through.
        await Eventually.TrueAsync(() =>
        {
            transport.Send(App(1, 2, 1000));
            return sink.Messages.Any(m => m.Message.Index == 1000);
        }, "messages flow after the peer came up");
    }

    [Fact]
    public async Task Snapshots_go_in_chunks_and_report_their_outcome()
    {
        var sink = new RecordingSink(1, 2);
        var (server, _) = await StartNodeAsync(2, sink);
        await using var _ = server;
        var reports = new Reports();
        await using var transport = Transport(1, reports);
        transport.AddPeer(2, new GrpcClientOptions { Address = server.Address });

        var data = new byte[3_000_000]; // over the server's 1 MiB message limit: it only passes in chunks
        new Random(7).NextBytes(data);
        var conf = new ConfState(ListModule.OfSeq(new[] { 1UL, 2UL }), FSharpList<ulong>.Empty, FSharpList<ulong>.Empty, FSharpList<ulong>.Empty, false);
        var snap = new Message(MessageType.MsgSnap, 2, 1, 3, 0, 0, [], 0, 0,
            FSharpOption<Snapshot>.Some(new Snapshot(data, new SnapshotMetadata(conf, 500, 3))), false, 0, [], []);
        Assert.True(transport.Send(snap));
        await Eventually.TrueAsync(() => reports.SnapshotStatus.Count == 1, "the snapshot was reported");
        Assert.Equal((2UL, true), reports.SnapshotStatus.Single());
        Assert.Equal(snap, Assert.Single(sink.Snapshots).Message);

        sink.RefuseSnapshots = true;
        transport.Send(snap);
        await Eventually.TrueAsync(() => reports.SnapshotStatus.Count == 2, "the refused snapshot was reported");
        Assert.Equal((2UL, false), reports.SnapshotStatus.Last());
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
