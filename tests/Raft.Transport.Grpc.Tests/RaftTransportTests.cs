using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using Raft.Spec;
using Raft.Transport.Grpc.Peers;
using Raft.Transport.Grpc.Wire;
using Google.Protobuf;
using Microsoft.Extensions.Logging;
using SnapshotChunkPb = Raft.Transport.Grpc.Protos.SnapshotChunk;
using LogLevel = Microsoft.Extensions.Logging.LogLevel;

namespace Raft.Transport.Grpc.Tests;

/// <summary>Records what a node receives.</summary>
public sealed class RecordingSink(params ulong[] members) : IRaftMessageSink
{
    public ConcurrentQueue<(ulong From, Message Message)> Messages { get; } = new();
    public ConcurrentQueue<(ulong From, Message Message)> Snapshots { get; } = new();
    /// <summary>How many messages each delivered batch held.</summary>
    public ConcurrentQueue<int> Batches { get; } = new();
    public bool RefuseSnapshots { get; set; }

    public bool IsMember(ulong nodeId) => members.Contains(nodeId);

    public ValueTask DeliverAsync(ulong from, IReadOnlyList<Message> messages, CancellationToken cancellationToken)
    {
        Batches.Enqueue(messages.Count);
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

    private static RaftTransport Transport(ulong nodeId, Reports reports, ulong cluster = Cluster, int queueCapacity = 4096,
        int maxBatchBytes = 4 << 20, ILogger? logger = null) =>
        new(new RaftTransportOptions
            {
                ClusterId = cluster, NodeId = nodeId, QueueCapacity = queueCapacity, MaxBatchBytes = maxBatchBytes,
                ReconnectDelayMin = TimeSpan.FromMilliseconds(20), ReconnectDelayMax = TimeSpan.FromMilliseconds(200),
                SnapshotChunkBytes = 64 * 1024,
            },
            reports.Unreachable.Enqueue, (peer, ok) => reports.SnapshotStatus.Enqueue((peer, ok)), logger);

    private static Message Snap(ulong from, ulong to, int bytes)
    {
        var data = new byte[bytes];
        new Random(7).NextBytes(data);
        var conf = new ConfState(ListModule.OfSeq(new[] { 1UL, 2UL }), FSharpList<ulong>.Empty, FSharpList<ulong>.Empty, FSharpList<ulong>.Empty, false);
        return new Message(MessageType.MsgSnap, to, from, 3, 0, 0, [], 0, 0,
            FSharpOption<Snapshot>.Some(new Snapshot(data, new SnapshotMetadata(conf, 500, 3))), false, 0, [], []);
    }

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

    [Fact]
    public async Task A_snapshot_refused_at_its_first_chunk_ends_with_a_non_ok_status_that_says_why()
    {
        var sink = new RecordingSink(1, 2);
        var (server, service) = await StartNodeAsync(2, sink);
        await using var _ = server;
        using var client = new GrpcClient(new GrpcClientOptions { Address = server.Address });
        // On the wire: the first chunk names another cluster; the answer is a refusal, not OK.
        await using (var call = client.StartClientStreaming(RaftPeerMethods.SendSnapshot))
        {
            var header = RaftWireMapping.ToWire(Snap(1, 2, 10));
            await call.WriteAsync(new SnapshotChunkPb { ClusterId = 0xBAD, SenderId = 1, Message = header, TotalSize = 10, Data = ByteString.CopyFrom(new byte[10]) });
            await call.CompleteRequestAsync();
            var e = await Assert.ThrowsAsync<GrpcCallException>(() => call.ReadResponseAsync());
            Assert.Equal(StatusCode.FailedPrecondition, e.StatusCode);
            Assert.Contains("cluster bad is not this node's cluster c1", e.StatusMessage);
        }
        Assert.Equal(1, service.RefusedForeignCluster);

        // Through the transport: a non-member's snapshot of many chunks, refused at the first one,
        // is reported to raft as failed, and the reason is logged.
        var reports = new Reports();
        var log = new ListLogger();
        await using var stranger = Transport(7, reports, logger: log);
        stranger.AddPeer(2, new GrpcClientOptions { Address = server.Address });
        Assert.True(stranger.Send(Snap(7, 2, 1_000_000)));
        await Eventually.TrueAsync(() => reports.SnapshotStatus.Count == 1, "the refused snapshot was reported");
        Assert.Equal((2UL, false), reports.SnapshotStatus.Single());
        Assert.Equal((0L, 1L), (stranger.SnapshotsSent, stranger.SnapshotsFailed));
        Assert.True(log.Lines.Any(l => l.Contains("PermissionDenied") && l.Contains("node 7 is not a member of cluster c1")), string.Join("\n", log.Lines));
        Assert.Equal(1, service.RefusedNonMember);
        Assert.Empty(sink.Snapshots);
    }

    [Fact]
    public async Task Peers_follow_the_configuration_added_moved_and_removed_at_runtime()
    {
        var sinkA = new RecordingSink(1, 2);
        var sinkB = new RecordingSink(1, 2);
        var (serverA, _) = await StartNodeAsync(2, sinkA);
        var (serverB, _) = await StartNodeAsync(2, sinkB);
        await using var a = serverA;
        await using var b = serverB;
        var reports = new Reports();
        await using var transport = Transport(1, reports);

        transport.SetPeers(new Dictionary<ulong, GrpcClientOptions> { [1] = new() { Address = serverB.Address }, [2] = new() { Address = serverA.Address } });
        Assert.Equal([2UL], transport.Peers); // itself is skipped
        Assert.True(transport.Send(App(1, 2, 1)));
        await Eventually.TrueAsync(() => sinkA.Messages.Count == 1, "the message reached node 2 at its first address");

        // Node 2 moved: the transport redials it at its new address.
        transport.SetPeers(new Dictionary<ulong, GrpcClientOptions> { [2] = new() { Address = serverB.Address } });
        Assert.True(transport.Send(App(1, 2, 2)));
        await Eventually.TrueAsync(() => sinkB.Messages.Count == 1, "the message reached node 2 at its new address");
        Assert.Single(sinkA.Messages);

        // Removed: messages to it are dropped and it is reported unreachable.
        transport.SetPeers(new Dictionary<ulong, GrpcClientOptions>());
        Assert.Empty(transport.Peers);
        Assert.False(transport.Send(App(1, 2, 3)));
        Assert.Contains(2UL, reports.Unreachable);
        Assert.Equal(1, transport.DroppedMessages);
    }

    [Fact]
    public async Task Batches_stay_under_the_byte_limit()
    {
        var sink = new RecordingSink(1, 2);
        var (server, _) = await StartNodeAsync(2, sink);
        await using var _ = server;
        var reports = new Reports();
        await using var transport = Transport(1, reports, maxBatchBytes: 64 * 1024);
        transport.AddPeer(2, new GrpcClientOptions { Address = server.Address });
        // 200 messages of 10 KiB: 2 MiB in all, over the server's 1 MiB message limit had they gone in one batch.
        for (ulong i = 0; i < 200; i++)
            Assert.True(transport.Send(new Message(MessageType.MsgApp, 2, 1, 1, 1, i, [EntryModule.create(1UL, i + 1, new byte[10 * 1024])], i, 0,
                FSharpOption<Snapshot>.None, false, 0, [], [])));
        await Eventually.TrueAsync(() => sink.Messages.Count == 200, "200 messages arrived");
        Assert.All(sink.Batches, n => Assert.True(n <= 7, $"a batch of {n} messages of 10 KiB exceeds 64 KiB by more than one message"));
        Assert.Empty(reports.Unreachable);
    }

    private static int FreePort() => Raft.Host.FreePorts.Next();
}

/// <summary>Collects formatted log lines.</summary>
public sealed class ListLogger : ILogger
{
    private readonly ConcurrentQueue<string> _lines = new();

    public IReadOnlyCollection<string> Lines => [.. _lines];

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
        _lines.Enqueue($"{logLevel}: {formatter(state, exception)}");
}
