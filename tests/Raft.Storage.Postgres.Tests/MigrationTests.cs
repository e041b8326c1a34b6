using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;
using Raft.Spec;
using static Raft.Storage.Postgres.Tests.StorageContractTests;

namespace Raft.Storage.Postgres.Tests;

/// <summary>Databases left by older releases: opened by this code, migrated, nothing lost.</summary>
public class MigrationTests
{
    /// <summary>Builds <paramref name="schema"/> at schema version 1 and fills it as version-1 code wrote it.</summary>
    private static async Task CreateVersion1Async(string cs, string schema)
    {
        await using var conn = new NpgsqlConnection(cs);
        await conn.OpenAsync();
        await SchemaMigrations.MigrateAsync(conn, schema, 1, NullLogger.Instance, default);
        Assert.Equal(1, await SchemaMigrations.ReadVersionAsync(conn, schema, default));
        var q = $"\"{schema}\"";
        await using var fill = new NpgsqlCommand(
            $$"""
             -- Group 1: compacted to 2 (term 1), a snapshot at 2, entries 3..5, a hard state, 7 writes so far.
             INSERT INTO {{q}}.raft_groups (group_id, log_offset, log_offset_term, write_seq) VALUES (1, 2, 1, 7);
             INSERT INTO {{q}}.raft_snapshots (group_id, idx, term, data) VALUES (1, 2, 1, '\x0102');
             INSERT INTO {{q}}.raft_conf_state (group_id, voters, learners, voters_outgoing, learners_next, auto_leave)
                 VALUES (1, '{1,2,3}', '{}', '{}', '{}', false);
             INSERT INTO {{q}}.raft_entries (group_id, idx, term, entry_type, data)
                 VALUES (1, 3, 1, 0, '\x03'), (1, 4, 3, 0, '\x04'), (1, 5, 3, 1, '\x05');
             INSERT INTO {{q}}.raft_hard_state (group_id, term, vote, commit_index) VALUES (1, 3, 2, 4);
             -- Group 2: entries and no hard state row (the empty hard state).
             INSERT INTO {{q}}.raft_groups (group_id, write_seq) VALUES (2, 1);
             INSERT INTO {{q}}.raft_entries (group_id, idx, term, entry_type, data) VALUES (2, 1, 1, 0, '\x09');
             -- Group 3: a vote for node id 2^64-1, stored bit for bit as -1.
             INSERT INTO {{q}}.raft_groups (group_id, write_seq) VALUES (3, 2);
             INSERT INTO {{q}}.raft_hard_state (group_id, term, vote, commit_index) VALUES (3, 1, -1, 0);
             """, conn);
        await fill.ExecuteNonQueryAsync();
    }

    private static void AssertVersion1Data(PostgresRaftStorage g1, PostgresRaftStorage g2, PostgresRaftStorage g3)
    {
        Assert.Equal(new HardState(3, 2, 4), g1.State.HardState);
        Assert.Equal([E(3, 1, [3]), E(4, 3, [4]), new Entry(3, 5, EntryType.EntryConfChange, [5])], g1.State.StoredEntries);
        var snap = MemoryStorageModule.snapshot(g1.State);
        Assert.Equal(2UL, snap.Metadata.Index);
        Assert.Equal(1UL, snap.Metadata.Term);
        Assert.Equal([1, 2], snap.Data);
        Assert.Equal(Cs(1, 2, 3), snap.Metadata.ConfState);
        Assert.Equal(HardStateModule.empty, g2.State.HardState);
        Assert.Equal([E(1, 1, [9])], g2.State.StoredEntries);
        Assert.Equal(new HardState(1, ulong.MaxValue, 0), g3.State.HardState);
    }

    [Fact]
    public async Task A_version_1_database_keeps_its_hard_states_entries_snapshots_and_write_fences()
    {
        var cs = await TestDatabase.ConnectionStringAsync();
        var options = new PostgresRaftStorageOptions { Schema = TestDatabase.NewSchema() };
        var q = $"\"{options.Schema}\"";
        await CreateVersion1Async(cs, options.Schema);

        await using (var g1 = await PostgresRaftStorage.OpenAsync(cs, 1, options))
        await using (var g2 = await PostgresRaftStorage.OpenAsync(cs, 2, options))
        await using (var g3 = await PostgresRaftStorage.OpenAsync(cs, 3, options))
        {
            AssertVersion1Data(g1, g2, g3);
            // write_seq was carried over: the open storage goes on writing, and a stale one is fenced.
            await g1.SaveAsync(new HardState(3, 2, 5), [E(6, 3, [6])]);
            Assert.Equal(8L, await TestDatabase.ScalarAsync<long>(cs, $"SELECT write_seq FROM {q}.raft_groups WHERE group_id = 1"));
        }
        Assert.Equal(SchemaMigrations.LatestVersion, await TestDatabase.ScalarAsync<int>(cs, $"SELECT max(version) FROM {q}.raft_schema_migrations"));
        Assert.False(await TestDatabase.ScalarAsync<bool>(cs, $"SELECT to_regclass('{q}.raft_hard_state') IS NOT NULL"));

        // The migration's SQL run a second time changes nothing.
        await TestDatabase.ExecuteAsync(cs, SchemaMigrations.All.Single(m => m.Version == 2).Sql.Replace("{schema}", q));
        await using var r1 = await PostgresRaftStorage.OpenAsync(cs, 1, options);
        await using var r2 = await PostgresRaftStorage.OpenAsync(cs, 2, options);
        await using var r3 = await PostgresRaftStorage.OpenAsync(cs, 3, options);
        Assert.Equal(new HardState(3, 2, 5), r1.State.HardState);
        Assert.Equal(6UL, r1.State.LastIndex);
        Assert.Equal(E(6, 3, [6]), r1.State.StoredEntries[^1]);
        Assert.Equal(HardStateModule.empty, r2.State.HardState);
        Assert.Equal([E(1, 1, [9])], r2.State.StoredEntries);
        Assert.Equal(new HardState(1, ulong.MaxValue, 0), r3.State.HardState);
    }

    [Fact]
    public async Task Processes_opening_a_version_1_database_together_migrate_it_once()
    {
        var cs = await TestDatabase.ConnectionStringAsync();
        var options = new PostgresRaftStorageOptions { Schema = TestDatabase.NewSchema() };
        await CreateVersion1Async(cs, options.Schema);
        var opens = new long[] { 1, 2, 3, 1, 2, 3 }.Select((g, i) =>
            PostgresRaftStorage.OpenAsync(cs + $";Application Name=upgrade{i}", g, options)).ToArray();
        var opened = await Task.WhenAll(opens);
        try
        {
            AssertVersion1Data(opened[0], opened[1], opened[2]);
            AssertVersion1Data(opened[3], opened[4], opened[5]);
        }
        finally
        {
            foreach (var s in opened) await s.DisposeAsync();
        }
        Assert.Equal((long)SchemaMigrations.All.Count,
            await TestDatabase.ScalarAsync<long>(cs, $"SELECT count(*) FROM \"{options.Schema}\".raft_schema_migrations"));
    }
}
