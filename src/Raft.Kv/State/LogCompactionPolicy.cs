namespace Raft.Kv.State;

/// <summary>What the policy says to do after applying up to some index.</summary>
/// <param name="SnapshotIndex">Take a snapshot of the key-value state at this index (0: not now).</param>
/// <param name="CompactIndex">Then drop log entries up to and including this index (0: none).</param>
public readonly record struct LogCompactionDecision(ulong SnapshotIndex, ulong CompactIndex)
{
    public static readonly LogCompactionDecision None = new(0, 0);
    public bool IsNone => SnapshotIndex == 0;
}

/// <summary>
/// When to snapshot the key-value state and how much log to keep behind it: a snapshot every
/// <see cref="SnapshotEvery"/> applied entries, after which the log is compacted to leave the last
/// <see cref="KeepEntries"/> entries, so a follower that is only a little behind still catches up
/// from the log instead of receiving a whole snapshot.
/// </summary>
public sealed record LogCompactionPolicy(ulong SnapshotEvery = 10_000, ulong KeepEntries = 5_000)
{
    public void Validate()
    {
        if (SnapshotEvery < 1) throw new ArgumentException($"SnapshotEvery must be at least 1, not {SnapshotEvery}");
    }

    /// <param name="appliedIndex">The state machine's applied index.</param>
    /// <param name="lastSnapshotIndex">Index of the newest snapshot (0 when none).</param>
    public LogCompactionDecision Decide(ulong appliedIndex, ulong lastSnapshotIndex)
    {
        if (appliedIndex < lastSnapshotIndex + SnapshotEvery) return LogCompactionDecision.None;
        var compact = appliedIndex > KeepEntries ? appliedIndex - KeepEntries : 0;
        return new LogCompactionDecision(appliedIndex, compact);
    }
}
