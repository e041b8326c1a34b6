using Raft.Spec;

namespace Raft.Host;

/// <summary>How ReadIndex requests are confirmed (etcd's ReadOnlyOption).</summary>
public enum ReadOnlyMode
{
    /// <summary>A heartbeat round to a quorum confirms each read: linearizable whatever the clocks do.</summary>
    Safe,
    /// <summary>Answered from the leader lease; relies on bounded clock drift and needs CheckQuorum.</summary>
    LeaseBased,
}

/// <summary>
/// The parameters of one Raft node (etcd's raft.Config plus the host's own). Validated when a
/// node is created: the first violated rule is reported with etcd's text.
/// </summary>
public sealed record RaftNodeOptions
{
    /// <summary>This node's id; never 0 nor one of the local storage-thread ids.</summary>
    public required ulong Id { get; init; }

    /// <summary>Ticks without hearing from a leader before a follower campaigns; must exceed HeartbeatTick.</summary>
    public int ElectionTick { get; init; } = 10;

    /// <summary>Ticks between the leader's heartbeats.</summary>
    public int HeartbeatTick { get; init; } = 1;

    /// <summary>
    /// Real time between ticks when the node runs its own timer; null (the default) leaves the
    /// clock to the application, which calls <see cref="Node.Tick"/>.
    /// </summary>
    public TimeSpan? TickInterval { get; init; }

    /// <summary>The last applied index when restarting, so applied entries are not handed out again.</summary>
    public ulong Applied { get; init; }

    /// <summary>Byte limit of the entries of one MsgApp; <see cref="ulong.MaxValue"/> for none, 0 for one entry per message.</summary>
    public ulong MaxSizePerMsg { get; init; } = ConfigModule.NoLimit;

    /// <summary>Byte limit of the committed entries of one Ready; 0 means MaxSizePerMsg.</summary>
    public ulong MaxCommittedSizePerReady { get; init; }

    /// <summary>Byte limit of a leader's uncommitted log tail (proposals beyond it are dropped); 0 for none.</summary>
    public ulong MaxUncommittedEntriesSize { get; init; }

    /// <summary>Appends in flight to one replicating follower.</summary>
    public int MaxInflightMsgs { get; init; } = 256;

    /// <summary>Bytes in flight to one follower; 0 for no limit.</summary>
    public ulong MaxInflightBytes { get; init; }

    /// <summary>A leader steps down when a quorum was not active during an election timeout.</summary>
    public bool CheckQuorum { get; init; }

    /// <summary>Run the pre-vote phase before real elections.</summary>
    public bool PreVote { get; init; }

    public ReadOnlyMode ReadOnly { get; init; } = ReadOnlyMode.Safe;

    /// <summary>
    /// Persist and apply through MsgStorageAppend/MsgStorageApply messages in the Ready's
    /// messages (handled off the raft loop) instead of Advance.
    /// </summary>
    public bool AsyncStorageWrites { get; init; }

    /// <summary>Followers drop proposals instead of forwarding them to the leader.</summary>
    public bool DisableProposalForwarding { get; init; }

    /// <summary>Skip the propose-time checks of conf changes against the active configuration.</summary>
    public bool DisableConfChangeValidation { get; init; }

    /// <summary>A leader removed from (or demoted in) the configuration steps down.</summary>
    public bool StepDownOnRemoval { get; init; }

    /// <summary>Seed of the randomized election timeouts; null uses the node id (runs are reproducible either way).</summary>
    public ulong? RandomSeed { get; init; }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first violated rule.</summary>
    public void Validate()
    {
        if (TickInterval is { } interval && interval <= TimeSpan.Zero)
            throw Invalid($"tick interval must be positive (was {interval})");
        var validated = ConfigModule.validate(ToConfig(MemoryStorageModule.asStorage(MemoryStorageModule.empty), tracing: false));
        if (validated.IsError) throw Invalid(validated.ErrorValue);
    }

    private static ArgumentException Invalid(string reason) => new($"invalid raft node options: {reason}", "options");

    /// <summary>The core's configuration over <paramref name="storage"/> (not validated).</summary>
    public Config ToConfig(IStorage storage, bool tracing)
    {
        ArgumentNullException.ThrowIfNull(storage);
        var config = ConfigModule.create(Id, storage);
        return new Config(
            Id, ElectionTick, HeartbeatTick, storage, Applied, AsyncStorageWrites, MaxSizePerMsg,
            MaxCommittedSizePerReady, MaxUncommittedEntriesSize, MaxInflightMsgs, MaxInflightBytes,
            CheckQuorum, PreVote,
            ReadOnly == ReadOnlyMode.LeaseBased ? ReadOnlyOption.ReadOnlyLeaseBased : ReadOnlyOption.ReadOnlySafe,
            DisableProposalForwarding, DisableConfChangeValidation, StepDownOnRemoval,
            RandomSeed ?? config.RandomSeed, tracing);
    }
}
