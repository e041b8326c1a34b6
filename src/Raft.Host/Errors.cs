using Raft.Spec;

namespace Raft.Host;

/// <summary>Why a proposal was not accepted into a leader's log nor forwarded to one.</summary>
public enum ProposalDropReason
{
    /// <summary>No leader is known (follower without leader, candidate, pre-candidate).</summary>
    NoLeader,
    /// <summary>This follower knows the leader but may not forward (DisableProposalForwarding).</summary>
    ForwardingDisabled,
    /// <summary>The leader's uncommitted tail would exceed MaxUncommittedEntriesSize.</summary>
    UncommittedSizeLimit,
    /// <summary>The leader is handing leadership over to another node.</summary>
    LeadershipTransferInProgress,
    /// <summary>The leader is no longer a member of the configuration.</summary>
    NotInConfiguration,
}

/// <summary>
/// A proposal was dropped (etcd's ErrProposalDropped). Nothing was appended; the caller may
/// retry, typically once a leader is known again.
/// </summary>
public sealed class ProposalDroppedException(ProposalDropReason reason, string detail)
    : Exception($"{StepErrorModule.message(StepError.ProposalDropped)}: {detail}")
{
    public ProposalDropReason Reason { get; } = reason;
}

/// <summary>A message was refused by Step (etcd's ErrStepLocalMsg, ErrStepPeerNotFound).</summary>
public sealed class RaftStepException(StepError error) : Exception(StepErrorModule.message(error))
{
    public StepError Error { get; } = error;
}

/// <summary>The node was stopped before the operation could complete (etcd's ErrStopped).</summary>
public sealed class NodeStoppedException(Exception? fault = null)
    : InvalidOperationException(fault is null ? "raft: stopped" : $"raft: stopped after a failure: {fault.Message}", fault);

/// <summary>
/// A storage error Raft knows how to handle (compacted, unavailable, ...). C# storages throw it
/// from <see cref="RaftStorage"/> methods; any other exception is fatal to the node.
/// </summary>
public sealed class RaftStorageException(StorageError error) : Exception(StorageErrorModule.message(error))
{
    public StorageError Error { get; } = error;
}
