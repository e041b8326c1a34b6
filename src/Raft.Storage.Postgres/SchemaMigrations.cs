using Microsoft.Extensions.Logging;
using Npgsql;

namespace Raft.Storage.Postgres;

/// <summary>
/// The versioned schema of the Raft tables. Every open brings the schema up to date inside one
/// transaction holding an advisory lock, so processes starting together apply each migration once;
/// a database migrated by newer code is refused rather than misread.
/// </summary>
public static class SchemaMigrations
{
    /// <summary>One step of the schema; <c>{schema}</c> in the SQL stands for the quoted schema name.</summary>
    public sealed record Migration(int Version, string Description, string Sql);

    public static IReadOnlyList<Migration> All { get; } =
    [
        new(1, "raft groups, entries, hard state, snapshots and conf states",
            """
            CREATE TABLE {schema}.raft_groups (
                group_id        bigint PRIMARY KEY,
                -- The log's dummy entry: index and term of the last compacted entry (or of the installed snapshot).
                log_offset      bigint NOT NULL DEFAULT 0,
                log_offset_term bigint NOT NULL DEFAULT 0,
                -- Advanced by every write: a writer finding another value than its own lost the group to another process.
                write_seq       bigint NOT NULL DEFAULT 0,
                created_at      timestamptz NOT NULL DEFAULT now()
            );
            CREATE TABLE {schema}.raft_entries (
                group_id   bigint   NOT NULL,
                idx        bigint   NOT NULL,
                term       bigint   NOT NULL,
                entry_type smallint NOT NULL,
                data       bytea    NOT NULL,
                PRIMARY KEY (group_id, idx)
            );
            CREATE TABLE {schema}.raft_hard_state (
                group_id     bigint PRIMARY KEY,
                term         bigint NOT NULL,
                vote         bigint NOT NULL,
                commit_index bigint NOT NULL
            );
            CREATE TABLE {schema}.raft_snapshots (
                group_id bigint PRIMARY KEY,
                idx      bigint NOT NULL,
                term     bigint NOT NULL,
                data     bytea  NOT NULL
            );
            -- The ConfState of the group's latest snapshot; node ids are uint64 stored bit for bit.
            CREATE TABLE {schema}.raft_conf_state (
                group_id        bigint   PRIMARY KEY,
                voters          bigint[] NOT NULL,
                learners        bigint[] NOT NULL,
                voters_outgoing bigint[] NOT NULL,
                learners_next   bigint[] NOT NULL,
                auto_leave      boolean  NOT NULL
            );
            -- Fencing inside the write itself: raises (and so rolls the write back) unless the caller still owns the group.
            CREATE FUNCTION {schema}.raft_advance_write_seq(g bigint, expected bigint) RETURNS void
            LANGUAGE plpgsql AS $fn$
            BEGIN
                UPDATE {schema}.raft_groups SET write_seq = expected + 1 WHERE group_id = g AND write_seq = expected;
                IF NOT FOUND THEN
                    RAISE EXCEPTION 'raft group % was written by another process since this one opened it (expected write_seq %)', g, expected
                        USING ERRCODE = 'RV001';
                END IF;
            END
            $fn$;
            """),
        new(2, "the hard state moves into raft_groups, next to write_seq",
            // The common save (entries and/or a hard state) then fences and stores the hard state in
            // one single-row UPDATE. Written to be harmless when run again; existing hard states are
            // copied before raft_hard_state is dropped, and a group without one keeps the empty hard state (0, 0, 0).
            """
            ALTER TABLE {schema}.raft_groups
                ADD COLUMN IF NOT EXISTS term         bigint NOT NULL DEFAULT 0,
                ADD COLUMN IF NOT EXISTS vote         bigint NOT NULL DEFAULT 0,
                ADD COLUMN IF NOT EXISTS commit_index bigint NOT NULL DEFAULT 0;
            DO $mig$
            BEGIN
                IF to_regclass('{schema}.raft_hard_state') IS NOT NULL THEN
                    INSERT INTO {schema}.raft_groups (group_id, term, vote, commit_index)
                    SELECT group_id, term, vote, commit_index FROM {schema}.raft_hard_state
                    ON CONFLICT (group_id) DO UPDATE SET term = excluded.term, vote = excluded.vote, commit_index = excluded.commit_index;
                    DROP TABLE {schema}.raft_hard_state;
                END IF;
            END
            $mig$;
            """),
    ];

    public static int LatestVersion => All[^1].Version;

    /// <summary>SQLSTATE raised by raft_advance_write_seq when another writer took the group.</summary>
    internal const string ConcurrentWriterSqlState = "RV001";

    internal static string Quote(string schema) => "\"" + schema + "\"";

    /// <summary>Brings <paramref name="schema"/> to <see cref="LatestVersion"/>; returns the version found before.</summary>
    public static Task<int> MigrateAsync(NpgsqlConnection conn, string schema, ILogger logger, CancellationToken ct) =>
        MigrateAsync(conn, schema, LatestVersion, logger, ct);

    /// <summary>Brings <paramref name="schema"/> to <paramref name="target"/> (older versions: for tests
    /// that build a database as an older release left it); returns the version found before.</summary>
    internal static async Task<int> MigrateAsync(NpgsqlConnection conn, string schema, int target, ILogger logger, CancellationToken ct)
    {
        if (target < 1 || target > LatestVersion)
            throw new ArgumentOutOfRangeException(nameof(target), target, $"schema versions run from 1 to {LatestVersion}");
        var q = Quote(schema);
        // Fast path without the lock: an up-to-date schema needs no DDL and no waiting.
        var current = await ReadVersionAsync(conn, schema, ct).ConfigureAwait(false);
        if (current == target) return current;
        if (current > LatestVersion) throw TooNew(schema, current);

        await using var tx = await conn.BeginTransactionAsync(ct).ConfigureAwait(false);
        // Transaction-scoped: released at commit or rollback, also when this process dies.
        await using (var lockCmd = new NpgsqlCommand("SELECT pg_advisory_xact_lock($1)", conn, tx)
                     { Parameters = { new() { Value = AdvisoryLockKey(schema) } } })
            await lockCmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false);

        await using (var setup = new NpgsqlCommand(
                         $"""
                          CREATE SCHEMA IF NOT EXISTS {q};
                          CREATE TABLE IF NOT EXISTS {q}.raft_schema_migrations (
                              version     integer PRIMARY KEY,
                              description text NOT NULL,
                              applied_at  timestamptz NOT NULL DEFAULT now()
                          );
                          """, conn, tx))
            await setup.ExecuteNonQueryAsync(ct).ConfigureAwait(false);

        // Read again under the lock: another process may have migrated meanwhile.
        current = await ReadVersionAsync(conn, schema, ct, tx).ConfigureAwait(false);
        if (current > LatestVersion) throw TooNew(schema, current);
        foreach (var m in All.Where(m => m.Version > current && m.Version <= target))
        {
            logger.LogInformation("applying Raft storage migration {Version} ({Description}) to schema {Schema}", m.Version, m.Description, schema);
            await using var apply = new NpgsqlCommand(m.Sql.Replace("{schema}", q), conn, tx);
            await apply.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
            await using var record = new NpgsqlCommand($"INSERT INTO {q}.raft_schema_migrations (version, description) VALUES ($1, $2)", conn, tx)
            { Parameters = { new() { Value = m.Version }, new() { Value = m.Description } } };
            await record.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
        }
        await tx.CommitAsync(ct).ConfigureAwait(false);
        return current;
    }

    /// <summary>The applied version; 0 when the schema or its migrations table does not exist.</summary>
    public static async Task<int> ReadVersionAsync(NpgsqlConnection conn, string schema, CancellationToken ct, NpgsqlTransaction? tx = null)
    {
        await using var exists = new NpgsqlCommand("SELECT to_regclass($1) IS NOT NULL", conn, tx)
        { Parameters = { new() { Value = Quote(schema) + ".raft_schema_migrations" } } };
        if (!(bool)(await exists.ExecuteScalarAsync(ct).ConfigureAwait(false))!) return 0;
        await using var max = new NpgsqlCommand($"SELECT coalesce(max(version), 0) FROM {Quote(schema)}.raft_schema_migrations", conn, tx);
        return (int)(await max.ExecuteScalarAsync(ct).ConfigureAwait(false))!;
    }

    // A fixed key per schema, so migrations of different schemas never wait on each other.
    private static long AdvisoryLockKey(string schema)
    {
        long h = unchecked((long)0x5261667456_000000); // "Raftv"
        foreach (var c in schema) h = unchecked(h * 31 + c);
        return h;
    }

    private static PostgresStorageException TooNew(string schema, int found) => new(PostgresStorageErrorKind.SchemaTooNew,
        $"schema '{schema}' is at version {found}, newer than the {LatestVersion} this code knows: it was migrated by a newer RaftVerified. " +
        "Run the newer version, or restore a backup taken before the upgrade; this code will not read or write it.");
}
