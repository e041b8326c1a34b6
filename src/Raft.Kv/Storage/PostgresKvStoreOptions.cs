namespace Raft.Kv.Storage;

/// <summary>How a <see cref="PostgresKvStore"/> keeps its state.</summary>
public sealed record PostgresKvStoreOptions
{
    /// <summary>PostgreSQL schema of the key-value tables (created when missing).</summary>
    public string Schema { get; init; } = "kv";

    /// <summary>
    /// How long an applied request id is remembered, measured on the proposers' clocks carried in
    /// the log. A retry later than this is applied again. Must be the same on every member.
    /// </summary>
    public TimeSpan RequestIdRetention { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>etcd's --max-txn-ops. Must be the same on every member.</summary>
    public int MaxTxnOps { get; init; } = State.KvApplier.DefaultMaxTxnOps;

    /// <summary>
    /// Commit apply transactions without waiting for their WAL flush (synchronous_commit=off for
    /// those transactions only). The raft log is the record of every committed entry, so an apply
    /// that a PostgreSQL crash undoes is applied again from the log, with the same result: etcd
    /// commits its backend in batches for the same reason. Sound only while the log is written to
    /// the same PostgreSQL server: its next synchronous commit (the next save, the snapshot before
    /// a compaction) flushes the WAL, and with it every apply before it, so the log never loses an
    /// entry whose apply is not durable. <see cref="Server.KvServer"/> keeps both in one database.
    /// </summary>
    public bool AsynchronousApplyCommit { get; init; } = true;

    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(Schema) || !Schema.All(c => char.IsAsciiLetterOrDigit(c) || c == '_') || char.IsAsciiDigit(Schema[0]))
            throw new ArgumentException($"Schema '{Schema}' must be a plain identifier: ASCII letters, digits and '_', not starting with a digit");
        if (RequestIdRetention <= TimeSpan.Zero)
            throw new ArgumentException($"RequestIdRetention must be positive, not {RequestIdRetention}");
        if (MaxTxnOps < 1)
            throw new ArgumentException($"MaxTxnOps must be at least 1, not {MaxTxnOps}");
    }
}
