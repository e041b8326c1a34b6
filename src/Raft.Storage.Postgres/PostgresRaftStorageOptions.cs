using System.Text.RegularExpressions;

namespace Raft.Storage.Postgres;

/// <summary>How entries reach PostgreSQL. <see cref="Unnest"/> is the default, chosen by measurement (docs/storage-postgres.md);
/// the others stay selectable so the benchmark can compare them on any machine.</summary>
public enum EntryWriteMethod
{
    /// <summary>One INSERT … SELECT FROM unnest(arrays): a single statement for any batch size.</summary>
    Unnest,
    /// <summary>One INSERT … VALUES (…), (…) with four parameters per entry.</summary>
    MultiRowInsert,
    /// <summary>Binary COPY inside an explicit transaction (more round trips per save).</summary>
    BinaryCopy,
}

/// <summary>Settings of a <see cref="PostgresRaftStorage"/>.</summary>
public sealed record PostgresRaftStorageOptions
{
    /// <summary>The PostgreSQL schema holding the tables; created when absent. Many groups share one schema.</summary>
    public string Schema { get; init; } = "raft";

    /// <summary>
    /// How long a save keeps reconnecting after losing PostgreSQL (restart, network) before it
    /// fails. Only attempts known not to have committed are repeated. Zero: fail at once.
    /// </summary>
    public TimeSpan RetryTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Pause between reconnection attempts.</summary>
    public TimeSpan RetryDelay { get; init; } = TimeSpan.FromMilliseconds(100);

    /// <summary>
    /// Forces synchronous_commit=on on every connection, so a returned save is on disk even when
    /// the server's default says otherwise. Turn off only for tests that trade durability for speed.
    /// </summary>
    public bool ForceSynchronousCommit { get; init; } = true;

    public EntryWriteMethod WriteMethod { get; init; } = EntryWriteMethod.Unnest;

    private static readonly Regex Identifier = new("^[a-z_][a-z0-9_]{0,62}$", RegexOptions.CultureInvariant);

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad setting.</summary>
    public void Validate()
    {
        if (!Identifier.IsMatch(Schema))
            throw new ArgumentException(
                $"Schema '{Schema}' is not a plain lower-case SQL identifier (letters, digits, '_', at most 63 characters, not starting with a digit).",
                nameof(Schema));
        if (RetryTimeout < TimeSpan.Zero)
            throw new ArgumentException($"RetryTimeout must not be negative (was {RetryTimeout}).", nameof(RetryTimeout));
        if (RetryDelay <= TimeSpan.Zero)
            throw new ArgumentException($"RetryDelay must be positive (was {RetryDelay}).", nameof(RetryDelay));
        if (!Enum.IsDefined(WriteMethod))
            throw new ArgumentException($"WriteMethod {(int)WriteMethod} is not a known method.", nameof(WriteMethod));
    }
}
