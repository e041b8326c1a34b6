using Google.Protobuf;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Raft.Transport.Grpc.Wire;
using Pb = Raft.Transport.Grpc.Protos;

namespace Raft.Transport.Grpc.Peers;

/// <summary>
/// The receiving side of the Raft transport: serves RaftPeer, refusing (and counting) batches
/// and snapshots from another cluster, from removed members, from non-members and messages not
/// addressed to this node, and hands the rest to the <see cref="IRaftMessageSink"/>. A removed
/// member's call ends with <see cref="RaftPeerMethods.RemovedMemberRefusal"/>, which tells it to stop.
/// </summary>
public sealed class RaftPeerService(ulong clusterId, ulong nodeId, IRaftMessageSink sink, long maxSnapshotBytes = 8L << 30,
    ILogger? logger = null)
{
    private readonly ILogger _logger = logger ?? NullLogger.Instance;
    private long _refusedForeignCluster;
    private long _refusedNonMember;
    private long _refusedRemovedMember;
    private long _refusedMalformed;
    private long _accepted;

    public long RefusedForeignCluster => Interlocked.Read(ref _refusedForeignCluster);
    public long RefusedNonMember => Interlocked.Read(ref _refusedNonMember);
    public long RefusedRemovedMember => Interlocked.Read(ref _refusedRemovedMember);
    public long RefusedMalformed => Interlocked.Read(ref _refusedMalformed);
    public long AcceptedMessages => Interlocked.Read(ref _accepted);

    public GrpcServiceRegistry Register(GrpcServiceRegistry registry) => registry
        .AddDuplexStreaming(RaftPeerMethods.Stream, StreamAsync)
        .AddClientStreaming(RaftPeerMethods.SendSnapshot, ReceiveSnapshotAsync)
        .AddUnary(RaftPeerMethods.Probe, (request, _) =>
            request.ClusterId == clusterId
                ? Task.FromResult(new Pb.ProbeResponse { ClusterId = clusterId, NodeId = nodeId })
                : throw new GrpcCallException(StatusCode.FailedPrecondition,
                    $"node {nodeId} belongs to cluster {clusterId:x}, not {request.ClusterId:x}"));

    private async Task StreamAsync(IAsyncEnumerable<Pb.MessageBatch> batches, IGrpcStreamWriter<Pb.Ack> acks, GrpcServerCallContext context)
    {
        await foreach (var batch in batches.ConfigureAwait(false))
        {
            if (Refusal(batch.ClusterId, batch.SenderId, batch.Messages) is { } refusal)
            {
                // A removed member is told so by the call's status, and the call ends: it must stop.
                if (refusal.Code == RaftPeerMethods.RemovedMemberStatus) throw Refused(refusal.Code, refusal.Reason);
                await acks.WriteAsync(new Pb.Ack { RefusedReason = refusal.Reason }, context.CancellationToken).ConfigureAwait(false);
                continue;
            }
            var messages = new List<Spec.Message>(batch.Messages.Count);
            try
            {
                foreach (var m in batch.Messages) messages.Add(RaftWireMapping.FromWire(m));
            }
            catch (RaftWireFormatException e)
            {
                Interlocked.Increment(ref _refusedMalformed);
                await acks.WriteAsync(new Pb.Ack { RefusedReason = $"malformed message: {e.Message}" }, context.CancellationToken).ConfigureAwait(false);
                continue;
            }
            await sink.DeliverAsync(batch.SenderId, messages, context.CancellationToken).ConfigureAwait(false);
            Interlocked.Add(ref _accepted, messages.Count);
            await acks.WriteAsync(new Pb.Ack { Accepted = (uint)messages.Count }, context.CancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Receives a snapshot in chunks and hands it to the sink once whole. A refusal (another
    /// cluster, a non-member, chunks out of place, too large, the node would not take it) ends
    /// the call with a non-OK status whose message says why, so the sender reports the snapshot
    /// failed (ReportSnapshot) with the reason; only a snapshot taken ends with OK.
    /// </summary>
    private async Task<Pb.SnapshotResult> ReceiveSnapshotAsync(IAsyncEnumerable<Pb.SnapshotChunk> chunks, GrpcServerCallContext context)
    {
        Pb.SnapshotChunk? first = null;
        byte[]? data = null;
        ulong received = 0;
        var limit = (ulong)Math.Min(maxSnapshotBytes, Array.MaxLength);
        await foreach (var chunk in chunks.ConfigureAwait(false))
        {
            if (first is null)
            {
                first = chunk;
                if (chunk.Message is null) throw Refused(StatusCode.InvalidArgument, "the first snapshot chunk carries no MsgSnap message");
                if (Refusal(chunk.ClusterId, chunk.SenderId, [chunk.Message]) is { } refusal) throw Refused(refusal.Code, refusal.Reason);
                if (chunk.Message.Type != Pb.MessageType.MsgSnap)
                    throw Refused(StatusCode.InvalidArgument, $"the first snapshot chunk carries {chunk.Message.Type}, not MsgSnap");
                if (chunk.TotalSize > limit)
                    throw Refused(StatusCode.ResourceExhausted, $"snapshot of {chunk.TotalSize} bytes exceeds the limit of {limit} bytes");
                data = new byte[chunk.TotalSize];
            }
            if (chunk.Offset != received || received + (ulong)chunk.Data.Length > (ulong)data!.Length)
                throw Refused(StatusCode.InvalidArgument,
                    $"snapshot chunk at offset {chunk.Offset} with {chunk.Data.Length} bytes does not follow byte {received} of {data!.Length}");
            chunk.Data.Span.CopyTo(data.AsSpan((int)received));
            received += (ulong)chunk.Data.Length;
        }
        if (first is null) throw Refused(StatusCode.InvalidArgument, "no snapshot chunk received");
        if (received != (ulong)data!.Length) throw Refused(StatusCode.InvalidArgument, $"snapshot ended after {received} of {data.Length} bytes");

        Spec.Message message;
        try
        {
            var wire = first.Message.Clone();
            wire.Snapshot ??= new Pb.Snapshot();
            wire.Snapshot.Data = UnsafeByteOperations.UnsafeWrap(data);
            message = RaftWireMapping.FromWire(wire);
        }
        catch (RaftWireFormatException e)
        {
            Interlocked.Increment(ref _refusedMalformed);
            throw Refused(StatusCode.InvalidArgument, $"malformed MsgSnap: {e.Message}");
        }
        try
        {
            await sink.DeliverSnapshotAsync(first.SenderId, message, context.CancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            _logger.LogWarning(e, "Snapshot from node {Sender} was not taken", first.SenderId);
            throw Refused(StatusCode.Unavailable, $"node {nodeId} did not take the snapshot: {e.Message}");
        }
        Interlocked.Increment(ref _accepted);
        return new Pb.SnapshotResult { Accepted = true };
    }

    /// <summary>Why a batch must be refused (and the status a refused call ends with), or null; refusals are counted and logged.</summary>
    private (StatusCode Code, string Reason)? Refusal(ulong batchCluster, ulong sender, IEnumerable<Pb.Message> messages)
    {
        (StatusCode, string)? refusal = null;
        if (batchCluster != clusterId)
        {
            Interlocked.Increment(ref _refusedForeignCluster);
            refusal = (StatusCode.FailedPrecondition, $"cluster {batchCluster:x} is not this node's cluster {clusterId:x}");
        }
        else if (sink.IsRemoved(sender))
        {
            Interlocked.Increment(ref _refusedRemovedMember);
            var removed = RaftPeerMethods.RemovedMemberRefusal(sender, clusterId, nodeId);
            refusal = (removed.StatusCode, removed.StatusMessage);
        }
        else if (!sink.IsMember(sender))
        {
            Interlocked.Increment(ref _refusedNonMember);
            refusal = (StatusCode.PermissionDenied, $"node {sender} is not a member of cluster {clusterId:x}");
        }
        else if (messages.FirstOrDefault(m => m.To != nodeId || m.From != sender) is { } stray)
        {
            Interlocked.Increment(ref _refusedMalformed);
            refusal = (StatusCode.InvalidArgument, $"message from {stray.From} to {stray.To} in a batch from node {sender} to node {nodeId}");
        }
        if (refusal is { } r) _logger.LogWarning("Refused messages from node {Sender}: {Reason}", sender, r.Item2);
        return refusal;
    }

    private static GrpcCallException Refused(StatusCode code, string reason) => new(code, reason);
}
