using Raft.Transport.Grpc.Wire;
using Pb = Raft.Transport.Grpc.Protos;

namespace Raft.Transport.Grpc.Peers;

/// <summary>The methods of raftverified.v1.RaftPeer (Protos/raft.proto).</summary>
public static class RaftPeerMethods
{
    private const string Service = "raftverified.v1.RaftPeer";

    public static readonly GrpcMethod<Pb.MessageBatch, Pb.Ack> Stream =
        GrpcMethod.Protobuf(GrpcMethodType.DuplexStreaming, Service, "Stream", Pb.MessageBatch.Parser, Pb.Ack.Parser);

    public static readonly GrpcMethod<Pb.SnapshotChunk, Pb.SnapshotResult> SendSnapshot =
        GrpcMethod.Protobuf(GrpcMethodType.ClientStreaming, Service, "SendSnapshot", Pb.SnapshotChunk.Parser, Pb.SnapshotResult.Parser);

    public static readonly GrpcMethod<Pb.ProbeRequest, Pb.ProbeResponse> Probe =
        GrpcMethod.Protobuf(GrpcMethodType.Unary, Service, "Probe", Pb.ProbeRequest.Parser, Pb.ProbeResponse.Parser);
}

/// <summary>
/// Where received Raft messages go: the node that owns the transport (the Node API of
/// Raft.Host once it exists). Called from the server's calls, concurrently across peers.
/// </summary>
public interface IRaftMessageSink
{
    /// <summary>Whether <paramref name="nodeId"/> is a member this node accepts messages from.</summary>
    bool IsMember(ulong nodeId);

    /// <summary>Messages from one peer, in the order sent.</summary>
    ValueTask DeliverAsync(ulong from, IReadOnlyList<Spec.Message> messages, CancellationToken cancellationToken);

    /// <summary>A MsgSnap whose snapshot has arrived whole. Throwing refuses it (the sender is told).</summary>
    ValueTask DeliverSnapshotAsync(ulong from, Spec.Message message, CancellationToken cancellationToken);
}
