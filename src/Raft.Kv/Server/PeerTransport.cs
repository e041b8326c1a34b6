using System.Collections.Concurrent;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Raft.Host;
using Raft.Spec;
using Raft.Transport.Grpc;
using Raft.Transport.Grpc.Wire;
using Pb = Raft.Transport.Grpc.Protos;

namespace Raft.Kv.Server;

/// <summary>
/// Raft messages between members over RaftPeer/Stream: one long-lived stream to each peer fed by
/// a queue; a broken stream is reported to raft (ReportUnreachable, failed snapshots) and redialled.
/// Peers come and go with the applied configuration (<see cref="SetPeers"/>).
/// </summary>
internal sealed class PeerTransport : IAsyncDisposable
{
    public const int MaxMessageSize = 256 * 1024 * 1024;

    public static readonly GrpcMethod<Pb.MessageBatch, Pb.Ack> StreamMethod = GrpcMethod.Protobuf(
        GrpcMethodType.DuplexStreaming, "raftverified.v1.RaftPeer", "Stream", Pb.MessageBatch.Parser, Pb.Ack.Parser);

    private readonly ulong _clusterId;
    private readonly ulong _selfId;
    private readonly Func<Node> _node;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<ulong, Peer> _peers = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly object _reconcile = new();
    private bool _started;

    public PeerTransport(ulong clusterId, ulong selfId, IEnumerable<KvMember> members, Func<Node> node, ILogger logger)
    {
        _clusterId = clusterId;
        _selfId = selfId;
        _node = node;
        _logger = logger;
        foreach (var m in members.Where(m => m.Id != selfId))
            _peers[m.Id] = new Peer(this, m);
    }

    public void Start()
    {
        lock (_reconcile)
        {
            _started = true;
            foreach (var p in _peers.Values) p.Start(_stop.Token);
        }
    }

    /// <summary>The peers' addresses as the applied configuration has them: new peers are dialled, moved ones redialled, removed ones dropped.</summary>
    public void SetPeers(IEnumerable<KvMember> members)
    {
        lock (_reconcile)
        {
            if (_stop.IsCancellationRequested) return;
            var wanted = members.Where(m => m.Id != _selfId).ToDictionary(m => m.Id);
            foreach (var (id, peer) in _peers)
            {
                if (wanted.TryGetValue(id, out var m) && m.PeerUrl == peer.Member.PeerUrl) continue;
                if (_peers.TryRemove(id, out var gone)) _ = gone.StopAsync();
                _logger.LogInformation("peer {Id:x} at {Url} dropped", id, peer.Member.PeerUrl);
            }
            foreach (var m in wanted.Values)
            {
                if (_peers.ContainsKey(m.Id)) continue;
                var peer = new Peer(this, m);
                _peers[m.Id] = peer;
                if (_started) peer.Start(_stop.Token);
                _logger.LogInformation("peer {Id:x} at {Url} added", m.Id, m.PeerUrl);
            }
        }
    }

    public void Send(Message m)
    {
        if (_peers.TryGetValue(m.To, out var peer)) peer.Queue.Writer.TryWrite(m);
        else _logger.LogWarning("no address for raft member {To:x}; message {Type} dropped", m.To, m.Type);
    }

    /// <summary>The server side of RaftPeer/Stream: each batch is stepped into the node, then acknowledged.</summary>
    public void Register(GrpcServiceRegistry services) =>
        services.AddDuplexStreaming(StreamMethod, async (batches, responses, context) =>
        {
            await foreach (var batch in batches.WithCancellation(context.CancellationToken))
            {
                if (batch.ClusterId != _clusterId)
                {
                    await responses.WriteAsync(new Pb.Ack { RefusedReason = $"cluster {batch.ClusterId:x} is not {_clusterId:x}" }, context.CancellationToken);
                    continue;
                }
                uint accepted = 0;
                foreach (var wire in batch.Messages)
                {
                    try
                    {
                        await _node().StepAsync(RaftWireMapping.FromWire(wire), context.CancellationToken);
                        accepted++;
                    }
                    catch (RaftStepException e)
                    {
                        // Messages for a removed peer, from an old term...: raft refuses them, the stream goes on.
                        _logger.LogDebug("step refused: {Error}", e.Message);
                    }
                }
                await responses.WriteAsync(new Pb.Ack { Accepted = accepted }, context.CancellationToken);
            }
        });

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        foreach (var p in _peers.Values) await p.StopAsync();
        _stop.Dispose();
    }

    private sealed class Peer(PeerTransport owner, KvMember member)
    {
        private readonly CancellationTokenSource _stop = new();
        public KvMember Member => member;

        public Channel<Message> Queue { get; } = Channel.CreateBounded<Message>(new BoundedChannelOptions(4096)
        {
            // Raft retransmits what is lost; a peer that is down must not hold memory without bound.
            FullMode = BoundedChannelFullMode.DropOldest,
        });

        private Task _loop = Task.CompletedTask;

        public void Start(CancellationToken ct)
        {
            var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, _stop.Token);
            _loop = Task.Run(() => RunAsync(linked.Token), CancellationToken.None).ContinueWith(_ => linked.Dispose(), TaskScheduler.Default);
        }

        public async Task StopAsync()
        {
            Queue.Writer.TryComplete();
            await _stop.CancelAsync();
            try { await _loop; } catch (OperationCanceledException) { }
        }

        private async Task RunAsync(CancellationToken ct)
        {
            using var client = new GrpcClient(new GrpcClientOptions
            {
                Address = new Uri(member.PeerUrl),
                MaxSendMessageSize = MaxMessageSize,
                MaxReceiveMessageSize = MaxMessageSize,
                ConnectTimeout = TimeSpan.FromSeconds(2),
            });
            while (!ct.IsCancellationRequested)
            {
                var pending = new List<Message>();
                try
                {
                    await using var call = client.StartDuplexStreaming(StreamMethod, new GrpcCallOptions(CancellationToken: ct));
                    var acks = Task.Run(async () => { await foreach (var _ in call.ReadAllAsync(ct)) { } }, CancellationToken.None);
                    while (await Queue.Reader.WaitToReadAsync(ct))
                    {
                        pending.Clear();
                        while (pending.Count < 512 && Queue.Reader.TryRead(out var m)) pending.Add(m);
                        var batch = new Pb.MessageBatch { ClusterId = owner._clusterId, SenderId = owner._selfId };
                        foreach (var m in pending) batch.Messages.Add(RaftWireMapping.ToWire(m));
                        await call.WriteAsync(batch, ct);
                        if (acks.IsCompleted) await acks; // surfaces a broken stream
                        foreach (var m in pending.Where(m => m.Type.IsMsgSnap))
                            owner._node().ReportSnapshot(member.Id, SnapshotStatus.SnapshotFinish);
                    }
                    return;
                }
                catch (OperationCanceledException) when (ct.IsCancellationRequested)
                {
                    return;
                }
                catch (Exception e)
                {
                    owner._logger.LogDebug("stream to {Peer:x} at {Url} broke: {Error}", member.Id, member.PeerUrl, e.Message);
                    try
                    {
                        var node = owner._node();
                        node.ReportUnreachable(member.Id);
                        foreach (var m in pending.Where(m => m.Type.IsMsgSnap))
                            node.ReportSnapshot(member.Id, SnapshotStatus.SnapshotFailure);
                    }
                    catch (NodeStoppedException)
                    {
                        return;
                    }
                    try { await Task.Delay(200, ct); } catch (OperationCanceledException) { return; }
                }
            }
        }
    }
}
