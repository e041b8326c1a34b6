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

    /// <summary>
    /// The status a node ends a call with when the sender was removed from the cluster (etcd's
    /// peer transport answers such a member HTTP 410 Gone). Unlike the other refusals it is final:
    /// the sender learns from it that it no longer belongs to the cluster, even when it never
    /// received the entry that removed it, because the leader stopped sending to it on applying it.
    /// </summary>
    public const StatusCode RemovedMemberStatus = StatusCode.NotFound;

    /// <summary>How the status message of that refusal starts: with the code, what tells it from any other status.</summary>
    public const string RemovedMemberMessagePrefix = "removed member: ";

    /// <summary>The refusal a node answers a removed member's messages with.</summary>
    public static GrpcCallException RemovedMemberRefusal(ulong member, ulong clusterId, ulong refusedBy) =>
        new(RemovedMemberStatus,
            $"{RemovedMemberMessagePrefix}node {member:x} was removed from cluster {clusterId:x} and may not take part in it again (refused by node {refusedBy:x})");

    /// <summary>Whether a call ended with <see cref="RemovedMemberRefusal"/>: the caller was removed from the cluster.</summary>
    public static bool IsRemovedMemberRefusal(Exception e) =>
        e is GrpcCallException { StatusCode: RemovedMemberStatus } call && call.StatusMessage.StartsWith(RemovedMemberMessagePrefix, StringComparison.Ordinal);
}

/// <summary>
/// Where received Raft messages go: the node that owns the transport (the Node API of
/// Raft.Host once it exists). Called from the server's calls, concurrently across peers.
/// </summary>
public interface IRaftMessageSink
{
    /// <summary>Whether <paramref name="nodeId"/> is a member this node accepts messages from.</summary>
    bool IsMember(ulong nodeId);

    /// <summary>
    /// Whether <paramref name="nodeId"/> was removed from the cluster (removals are final: etcd keeps
    /// removed ids for good). Its messages are refused with <see cref="RaftPeerMethods.RemovedMemberRefusal"/>,
    /// which tells it to stop. A sink that keeps no record of removals refuses them as non-members.
    /// </summary>
    bool IsRemoved(ulong nodeId) => false;

    /// <summary>Messages from one peer, in the order sent.</summary>
    ValueTask DeliverAsync(ulong from, IReadOnlyList<Spec.Message> messages, CancellationToken cancellationToken);

    /// <summary>A MsgSnap whose snapshot has arrived whole. Throwing refuses it (the sender is told).</summary>
    ValueTask DeliverSnapshotAsync(ulong from, Spec.Message message, CancellationToken cancellationToken);
}
