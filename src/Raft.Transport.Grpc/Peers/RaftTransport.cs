using System.Collections.Concurrent;
using System.Threading.Channels;
using Google.Protobuf;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Raft.Spec;
using Raft.Transport.Grpc.Wire;
using Pb = Raft.Transport.Grpc.Protos;

namespace Raft.Transport.Grpc.Peers;

/// <summary>Settings of the sending side of the Raft transport.</summary>
public sealed record RaftTransportOptions
{
    public required ulong ClusterId { get; init; }
    public required ulong NodeId { get; init; }

    /// <summary>Messages waiting for one peer; beyond it new messages are dropped and the peer reported unreachable.</summary>
    public int QueueCapacity { get; init; } = 4096;

    /// <summary>Most messages sent in one batch.</summary>
    public int MaxBatchMessages { get; init; } = 256;

    /// <summary>
    /// A batch takes no more messages once it holds this many bytes (a single larger message
    /// still goes alone), so that a batch stays well under the receiver's message limit.
    /// </summary>
    public int MaxBatchBytes { get; init; } = 4 * 1024 * 1024;

    public TimeSpan ReconnectDelayMin { get; init; } = TimeSpan.FromMilliseconds(50);
    public TimeSpan ReconnectDelayMax { get; init; } = TimeSpan.FromSeconds(5);
    public int SnapshotChunkBytes { get; init; } = 1024 * 1024;

    public void Validate()
    {
        if (NodeId == 0) throw new ArgumentException("NodeId must not be 0 (0 means no node in Raft)");
        if (QueueCapacity <= 0) throw new ArgumentException($"QueueCapacity must be positive, not {QueueCapacity}");
        if (MaxBatchMessages <= 0) throw new ArgumentException($"MaxBatchMessages must be positive, not {MaxBatchMessages}");
        if (MaxBatchBytes <= 0) throw new ArgumentException($"MaxBatchBytes must be positive, not {MaxBatchBytes}");
        if (ReconnectDelayMin <= TimeSpan.Zero || ReconnectDelayMax < ReconnectDelayMin)
            throw new ArgumentException($"reconnect delays must satisfy 0 < min ({ReconnectDelayMin}) <= max ({ReconnectDelayMax})");
        if (SnapshotChunkBytes <= 0) throw new ArgumentException($"SnapshotChunkBytes must be positive, not {SnapshotChunkBytes}");
    }
}

/// <summary>
/// The sending side of the Raft transport: per peer, a bounded queue drained by one long-lived
/// RaftPeer.Stream call that sends messages in batches and reconnects with backoff. Sending
/// never blocks Raft: a full queue drops the message and reports the peer unreachable (Raft
/// retransmits). Snapshots go on their own calls, in chunks, and report success or failure.
/// Peers come and go at runtime (<see cref="SetPeers"/>), as the configuration changes.
/// A peer that refuses this node as a removed member (<see cref="RaftPeerMethods.RemovedMemberRefusal"/>)
/// is reported to the owner, which stops (etcd's errMemberRemoved).
/// </summary>
public sealed class RaftTransport : IAsyncDisposable
{
    private readonly RaftTransportOptions _options;
    private readonly Action<ulong> _onUnreachable;
    private readonly Action<ulong, bool> _onSnapshotStatus;
    private readonly Action<ulong> _onRemoved;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<ulong, Peer> _peers = new();
    private readonly CancellationTokenSource _stopping = new();
    private readonly object _membership = new();
    // Peers removed or moved, still finishing their calls; awaited on dispose.
    private readonly ConcurrentDictionary<Task, byte> _retiring = new();
    private long _dropped;
    private long _snapshotsSent;
    private long _snapshotsFailed;
    private long _removedRefusals;

    /// <param name="onUnreachable">A peer's message was dropped or its stream failed (etcd's ReportUnreachable).</param>
    /// <param name="onSnapshotStatus">A snapshot to a peer was taken (true) or not (false) (etcd's ReportSnapshot).</param>
    /// <param name="onRemoved">
    /// The peer named refused this node's messages because this node was removed from the cluster
    /// (etcd's errMemberRemoved): the owner must stop taking part. Called at each such refusal.
    /// </param>
    public RaftTransport(RaftTransportOptions options, Action<ulong> onUnreachable, Action<ulong, bool> onSnapshotStatus, ILogger? logger = null,
        Action<ulong>? onRemoved = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _options = options;
        _onUnreachable = onUnreachable;
        _onSnapshotStatus = onSnapshotStatus;
        _onRemoved = onRemoved ?? (_ => { });
        _logger = logger ?? NullLogger.Instance;
    }

    /// <summary>Messages dropped because a queue was full or the peer unknown.</summary>
    public long DroppedMessages => Interlocked.Read(ref _dropped);

    /// <summary>Snapshots the peer took, and snapshots that failed (refused, cut off, unreachable peer).</summary>
    public long SnapshotsSent => Interlocked.Read(ref _snapshotsSent);
    public long SnapshotsFailed => Interlocked.Read(ref _snapshotsFailed);

    /// <summary>Calls that peers ended because this node was removed from the cluster.</summary>
    public long RemovedRefusals => Interlocked.Read(ref _removedRefusals);

    /// <summary>The peers messages can be sent to now.</summary>
    public IReadOnlyCollection<ulong> Peers => [.. _peers.Keys];

    public void AddPeer(ulong peerId, GrpcClientOptions address)
    {
        lock (_membership)
        {
            ObjectDisposedException.ThrowIf(_stopping.IsCancellationRequested, this);
            if (peerId == _options.NodeId) throw new ArgumentException($"peer {peerId} is this node", nameof(peerId));
            var peer = new Peer(this, peerId, new GrpcClient(address));
            if (!_peers.TryAdd(peerId, peer))
            {
                peer.Client.Dispose();
                throw new ArgumentException($"peer {peerId} is already added", nameof(peerId));
            }
            peer.Start();
        }
    }

    public async Task RemovePeerAsync(ulong peerId)
    {
        Peer? peer;
        lock (_membership)
            if (!_peers.TryRemove(peerId, out peer)) return;
        await peer.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>
    /// Makes the peers exactly <paramref name="peers"/> (this node, if listed, is skipped): new
    /// ones are dialled, those whose address changed are redialled, and those no longer listed are
    /// dropped with whatever they still had queued (Raft retransmits to members). Never blocks:
    /// dropped peers finish their calls in the background.
    /// </summary>
    public void SetPeers(IReadOnlyDictionary<ulong, GrpcClientOptions> peers)
    {
        ArgumentNullException.ThrowIfNull(peers);
        foreach (var address in peers.Values) address.Validate();
        lock (_membership)
        {
            if (_stopping.IsCancellationRequested) return;
            foreach (var (id, peer) in _peers)
            {
                if (peers.TryGetValue(id, out var address) && address == peer.Client.Options) continue;
                if (!_peers.TryRemove(id, out var gone)) continue;
                _logger.LogInformation("Peer {Peer} at {Address} dropped", id, gone.Client.Options.Address);
                var retired = Task.Run(async () => await gone.DisposeAsync().ConfigureAwait(false));
                _retiring.TryAdd(retired, 0);
                retired.ContinueWith(t => _retiring.TryRemove(t, out _), TaskScheduler.Default);
            }
            foreach (var (id, address) in peers)
            {
                if (id == _options.NodeId || _peers.ContainsKey(id)) continue;
                var peer = new Peer(this, id, new GrpcClient(address));
                _peers[id] = peer;
                peer.Start();
                _logger.LogInformation("Peer {Peer} at {Address} added", id, address.Address);
            }
        }
    }

    /// <summary>
    /// Queues a message for its peer (message.To). MsgSnap goes on its own call. Returns false
    /// when the message was dropped (the peer is then reported unreachable).
    /// </summary>
    public bool Send(Message message)
    {
        if (!_peers.TryGetValue(message.To, out var peer))
        {
            Interlocked.Increment(ref _dropped);
            _onUnreachable(message.To);
            return false;
        }
        if (message.Type.IsMsgSnap)
        {
            peer.StartSnapshot(message);
            return true;
        }
        if (peer.Queue.Writer.TryWrite(message)) return true;
        Interlocked.Increment(ref _dropped);
        _onUnreachable(message.To);
        return false;
    }

    public async ValueTask DisposeAsync()
    {
        lock (_membership)
        {
            if (_stopping.IsCancellationRequested) return;
            _stopping.Cancel();
        }
        foreach (var peer in _peers.Values) await peer.DisposeAsync().ConfigureAwait(false);
        _peers.Clear();
        await Task.WhenAll(_retiring.Keys).ConfigureAwait(false);
    }

    private void ReportRemoved(ulong peer, Exception refusal)
    {
        Interlocked.Increment(ref _removedRefusals);
        _logger.LogWarning("Peer {Peer} refuses this node's messages: this node was removed from the cluster ({Reason})",
            peer, (refusal as GrpcCallException)?.StatusMessage ?? refusal.Message);
        _onRemoved(peer);
    }

    private sealed class Peer(RaftTransport transport, ulong id, GrpcClient client) : IAsyncDisposable
    {
        private readonly CancellationTokenSource _stop = CancellationTokenSource.CreateLinkedTokenSource(transport._stopping.Token);
        private readonly ConcurrentDictionary<Task, byte> _snapshots = new();
        private Task _sender = Task.CompletedTask;

        public GrpcClient Client { get; } = client;

        public Channel<Message> Queue { get; } = Channel.CreateBounded<Message>(new BoundedChannelOptions(transport._options.QueueCapacity)
        {
            FullMode = BoundedChannelFullMode.Wait, // TryWrite then fails at once: the message is dropped, never waited for
            SingleReader = true,
        });

        public void Start() => _sender = Task.Run(SendLoopAsync);

        private async Task SendLoopAsync()
        {
            var options = transport._options;
            var delay = options.ReconnectDelayMin;
            var token = _stop.Token;
            while (!token.IsCancellationRequested)
            {
                Task? acks = null;
                try
                {
                    // Connect lazily: an idle peer holds no call open.
                    if (!await Queue.Reader.WaitToReadAsync(token).ConfigureAwait(false)) return;
                    await using var call = Client.StartDuplexStreaming(RaftPeerMethods.Stream);
                    acks = ReadAcksAsync(call, token);
                    while (true)
                    {
                        var batch = new Pb.MessageBatch { ClusterId = options.ClusterId, SenderId = options.NodeId };
                        var bytes = 0;
                        while (batch.Messages.Count < options.MaxBatchMessages && bytes < options.MaxBatchBytes && Queue.Reader.TryRead(out var message))
                        {
                            var wire = RaftWireMapping.ToWire(message);
                            batch.Messages.Add(wire);
                            bytes += wire.CalculateSize();
                        }
                        if (batch.Messages.Count > 0)
                        {
                            await call.WriteAsync(batch, token).ConfigureAwait(false);
                            delay = options.ReconnectDelayMin; // the stream works
                        }
                        var more = Queue.Reader.WaitToReadAsync(token).AsTask();
                        if (await Task.WhenAny(more, acks).ConfigureAwait(false) == acks)
                        {
                            await acks.ConfigureAwait(false); // the stream ended: throws its status
                            throw new GrpcCallException(StatusCode.Unavailable, $"peer {id} ended the message stream");
                        }
                        if (!await more.ConfigureAwait(false)) return;
                    }
                }
                catch (OperationCanceledException) when (token.IsCancellationRequested)
                {
                    return;
                }
                catch (Exception e)
                {
                    if (token.IsCancellationRequested) return;
                    // A write may fail before the acks read the status that ended the call: that status says more.
                    if (acks?.Exception?.GetBaseException() is { } ended && RaftPeerMethods.IsRemovedMemberRefusal(ended)) e = ended;
                    if (RaftPeerMethods.IsRemovedMemberRefusal(e))
                    {
                        transport.ReportRemoved(id, e);
                    }
                    else
                    {
                        transport._logger.LogWarning("Message stream to peer {Peer} failed, retrying in {Delay}: {Error}", id, delay, e.Message);
                        transport._onUnreachable(id);
                    }
                    try
                    {
                        await Task.Delay(delay, token).ConfigureAwait(false);
                    }
                    catch (OperationCanceledException)
                    {
                        return;
                    }
                    delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, options.ReconnectDelayMax.Ticks));
                }
            }
        }

        private async Task ReadAcksAsync(GrpcClientCall<Pb.MessageBatch, Pb.Ack> call, CancellationToken token)
        {
            string? lastRefusal = null;
            await foreach (var ack in call.ReadAllAsync(token).ConfigureAwait(false))
            {
                if (ack.RefusedReason.Length == 0 || ack.RefusedReason == lastRefusal) continue;
                lastRefusal = ack.RefusedReason;
                transport._logger.LogWarning("Peer {Peer} refused our messages: {Reason}", id, ack.RefusedReason);
            }
        }

        public void StartSnapshot(Message message)
        {
            var task = Task.Run(async () =>
            {
                var ok = false;
                try
                {
                    await SendSnapshotAsync(message, _stop.Token).ConfigureAwait(false);
                    ok = true;
                }
                catch (Exception e) when (e is GrpcCallException or OperationCanceledException)
                {
                    transport._logger.LogWarning("Snapshot at index {Index} to peer {Peer} failed: {Error}",
                        message.Snapshot?.Value.Metadata.Index, id, e.Message);
                    if (RaftPeerMethods.IsRemovedMemberRefusal(e)) transport.ReportRemoved(id, e);
                }
                Interlocked.Increment(ref ok ? ref transport._snapshotsSent : ref transport._snapshotsFailed);
                transport._onSnapshotStatus(id, ok);
            });
            _snapshots.TryAdd(task, 0);
            task.ContinueWith(t => _snapshots.TryRemove(t, out _), TaskScheduler.Default);
        }

        /// <summary>Sends a snapshot in chunks; returns once the peer took it, throws <see cref="GrpcCallException"/> with its reason otherwise.</summary>
        private async Task SendSnapshotAsync(Message message, CancellationToken token)
        {
            var options = transport._options;
            var snapshot = message.Snapshot?.Value ?? throw new ArgumentException("MsgSnap without a snapshot");
            var data = snapshot.Data;
            // The message travels once, without its data; the data follows in chunks.
            var header = RaftWireMapping.ToWire(message);
            header.Snapshot.Data = ByteString.Empty;
            await using var call = Client.StartClientStreaming(RaftPeerMethods.SendSnapshot, new GrpcCallOptions(CancellationToken: token));
            try
            {
                var offset = 0;
                do
                {
                    var length = Math.Min(options.SnapshotChunkBytes, data.Length - offset);
                    var chunk = new Pb.SnapshotChunk
                    {
                        ClusterId = options.ClusterId,
                        SenderId = options.NodeId,
                        Offset = (ulong)offset,
                        Data = UnsafeByteOperations.UnsafeWrap(data.AsMemory(offset, length)),
                    };
                    if (offset == 0)
                    {
                        chunk.Message = header;
                        chunk.TotalSize = (ulong)data.Length;
                    }
                    await call.WriteAsync(chunk, token).ConfigureAwait(false);
                    offset += length;
                } while (offset < data.Length);
                await call.CompleteRequestAsync().ConfigureAwait(false);
            }
            catch (GrpcCallException) when (!token.IsCancellationRequested)
            {
                // A refusing peer ends the call at its first chunk; its status, read below, says
                // why (the failed write only says the call ended).
            }
            var result = await call.ReadResponseAsync(token).ConfigureAwait(false);
            if (!result.Accepted)
                throw new GrpcCallException(StatusCode.Unknown, $"peer {id} answered the snapshot without taking it: {result.Error}");
        }

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync().ConfigureAwait(false);
            Queue.Writer.TryComplete();
            await _sender.ConfigureAwait(false);
            await Task.WhenAll(_snapshots.Keys).ConfigureAwait(false);
            Client.Dispose();
            _stop.Dispose();
        }
    }
}
