using Raft.Transport.Grpc.Wire;

namespace Raft.Kv.State;

/// <summary>
/// An error of etcd's v3 API: the gRPC status code and the exact message etcd sends, so clients
/// that match on etcd's messages (etcdctl, clientv3's rpctypes) recognise them.
/// </summary>
public sealed class EtcdException(StatusCode code, string message) : Exception(message)
{
    public StatusCode Code { get; } = code;

    public GrpcCallException ToGrpc() => new(Code, Message, this);
}

/// <summary>etcd's server errors (api/v3rpc/rpctypes), those raftv can raise.</summary>
public static class EtcdErrors
{
    public static EtcdException EmptyKey() => new(StatusCode.InvalidArgument, "etcdserver: key is not provided");
    public static EtcdException KeyNotFound() => new(StatusCode.InvalidArgument, "etcdserver: key not found");
    public static EtcdException ValueProvided() => new(StatusCode.InvalidArgument, "etcdserver: value is provided");
    public static EtcdException LeaseProvided() => new(StatusCode.InvalidArgument, "etcdserver: lease is provided");
    public static EtcdException TooManyOps() => new(StatusCode.InvalidArgument, "etcdserver: too many operations in txn request");
    public static EtcdException DuplicateKey() => new(StatusCode.InvalidArgument, "etcdserver: duplicate key given in txn request");
    public static EtcdException Compacted() => new(StatusCode.OutOfRange, "etcdserver: mvcc: required revision has been compacted");
    public static EtcdException FutureRevision() => new(StatusCode.OutOfRange, "etcdserver: mvcc: required revision is a future revision");
    public static EtcdException LeaseNotFound() => new(StatusCode.NotFound, "etcdserver: requested lease not found");
    public static EtcdException RequestTooLarge() => new(StatusCode.InvalidArgument, "etcdserver: request is too large");
    public static EtcdException MemberNotFound() => new(StatusCode.NotFound, "etcdserver: member not found");
    public static EtcdException MemberExists() => new(StatusCode.FailedPrecondition, "etcdserver: member ID already exist");
    public static EtcdException PeerUrlExists() => new(StatusCode.FailedPrecondition, "etcdserver: Peer URLs already exists");
    public static EtcdException MemberBadUrls() => new(StatusCode.InvalidArgument, "etcdserver: given member URLs are invalid");
    public static EtcdException MemberNotLearner() => new(StatusCode.FailedPrecondition, "etcdserver: can only promote a learner member");
    public static EtcdException LearnerNotReady() => new(StatusCode.FailedPrecondition, "etcdserver: can only promote a learner member which is in sync with leader");
    public static EtcdException TooManyLearners() => new(StatusCode.FailedPrecondition, "etcdserver: too many learner members in cluster");
    public static EtcdException NotEnoughStartedMembers() => new(StatusCode.FailedPrecondition, "etcdserver: re-configuration failed due to not enough started members");
    public static EtcdException NoLeader() => new(StatusCode.Unavailable, "etcdserver: no leader");
    public static EtcdException NotLeader() => new(StatusCode.FailedPrecondition, "etcdserver: not leader");
    public static EtcdException LeaderChanged() => new(StatusCode.Unavailable, "etcdserver: leader changed");
    public static EtcdException Stopped() => new(StatusCode.Unavailable, "etcdserver: server stopped");
    public static EtcdException Timeout() => new(StatusCode.Unavailable, "etcdserver: request timed out");
    public static EtcdException BadLeaderTransferee() => new(StatusCode.FailedPrecondition, "etcdserver: bad leader transferee");
    public static EtcdException InvalidSortOption() => new(StatusCode.InvalidArgument, "etcdserver: invalid sort option");

    /// <summary>raftv's own: etcd lets such a request time out (raft drops the second change).</summary>
    public static EtcdException MembershipChangeInProgress() =>
        new(StatusCode.FailedPrecondition, "raftv: another membership change is in progress; retry once it has been applied");

    /// <summary>raftv's own: a compare whose target or result is not one of etcd's.</summary>
    public static EtcdException InvalidCompare(string what) => new(StatusCode.InvalidArgument, $"raftv: invalid compare: {what}");

    /// <summary>
    /// A read at a revision from before this store kept history (a store created by a raftv that kept
    /// only the newest value of each key): it cannot be answered, though it is not compacted.
    /// </summary>
    public static EtcdException HistoryNotKept(long revision, long current) =>
        new(StatusCode.Unimplemented, $"raftv: reads at past revisions are not kept (asked {revision}, current {current})");
}
