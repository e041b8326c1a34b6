using System.Net;
using System.Net.Sockets;
using Npgsql;
using Raft.Spec;
using static Raft.Storage.Postgres.Tests.StorageContractTests;

namespace Raft.Storage.Postgres.Tests;

/// <summary>What only the PostgreSQL storage has: groups sharing a database, migrations, errors, fencing.</summary>
public class PostgresStorageTests
{
    private static async Task<(string Cs, PostgresRaftStorageOptions Options)> NewSchemaAsync() =>
        (await TestDatabase.ConnectionStringAsync(), new PostgresRaftStorageOptions { Schema = TestDatabase.NewSchema() });

    [Fact]
    public async Task A_save_that_need_not_sync_commits_asynchronously_and_is_read_back()
    {
        var (cs, options) = await NewSchemaAsync();
        await using (var s = await PostgresRaftStorage.OpenAsync(cs, 1, options))
        {
            Assert.Equal("on", await s.CommitSettingAsync(mustSync: true));
            Assert.Equal("off", await s.CommitSettingAsync(mustSync: false));
            await s.SaveAsync(new HardState(2, 1, 0), [new Entry(2, 1, EntryType.EntryNormal, [1]), new Entry(2, 2, EntryType.EntryNormal, [2])], null, mustSync: true);
            // Only the commit index moved: etcd's Ready.MustSync is false.
            await s.SaveAsync(new HardState(2, 1, 2), [], null, mustSync: false);
            Assert.Equal(2UL, s.InitialState().ResultValue.Item1.Commit);
        }
        await using var reopened = await PostgresRaftStorage.OpenAsync(cs, 1, options);
        Assert.Equal(new HardState(2, 1, 2), reopened.InitialState().ResultValue.Item1);
        Assert.Equal(2UL, reopened.LastIndex().ResultValue);
    }

    [Fact]
    public async Task Groups_in_one_database_do_not_see_each_other()
    {
        var (cs, options) = await NewSchemaAsync();
        await using (var a = await PostgresRaftStorage.OpenAsync(cs, 1, options))
        await using (var b = await PostgresRaftStorage.OpenAsync(cs, 2, options))
        await using (var c = await PostgresRaftStorage.OpenAsync(cs, -3, options))
        {
            await a.SaveAsync(new HardState(1, 1, 1), [E(1, 1, [1]), E(2, 1, [1])]);
            await b.SaveAsync(new HardState(5, 2, 0), [E(1, 5, [2])]);
            await b.ApplySnapshotAsync(Snap(10, 5, Cs(2)));
            await c.SaveAsync(null, [E(1, 1, [3]), E(2, 1, [3]), E(3, 1, [3])]);
            await c.CompactAsync(2);
            await a.SaveAsync(null, [E(2, 2, [9])]); // truncation in a must not touch b or c
        }
        await using var a2 = await PostgresRaftStorage.OpenAsync(cs, 1, options);
        await using var b2 = await PostgresRaftStorage.OpenAsync(cs, 2, options);
        await using var c2 = await PostgresRaftStorage.OpenAsync(cs, -3, options);
        await using var d2 = await PostgresRaftStorage.OpenAsync(cs, 4, options);
        Assert.Equal([E(1, 1, [1]), E(2, 2, [9])], a2.State.StoredEntries);
        Assert.Equal(new HardState(1, 1, 1), a2.State.HardState);
        Assert.Empty(b2.State.StoredEntries);
        Assert.Equal(10UL, b2.State.LastIndex);
        Assert.Equal(new HardState(5, 2, 0), b2.State.HardState);
        Assert.Equal([E(3, 1, [3])], c2.State.StoredEntries);
        Assert.Equal(HardStateModule.empty, c2.State.HardState);
        Assert.Equal(MemoryStorageModule.empty, d2.State);
    }

    [Fact]
    public async Task Migrations_run_once_when_processes_start_together_and_again_is_a_no_op()
    {
        var (cs, options) = await NewSchemaAsync();
        // Separate pools, as separate processes would have.
        var opens = Enumerable.Range(0, 6).Select(i =>
            PostgresRaftStorage.OpenAsync(cs + $";Application Name=open{i}", i, options)).ToArray();
        foreach (var s in await Task.WhenAll(opens)) await s.DisposeAsync();
        await using (var again = await PostgresRaftStorage.OpenAsync(cs, 0, options)) { }
        var rows = await TestDatabase.ScalarAsync<long>(cs, $"SELECT count(*) FROM \"{options.Schema}\".raft_schema_migrations");
        Assert.Equal(SchemaMigrations.All.Count, (int)rows);
        await using var conn = new NpgsqlConnection(cs);
        await conn.OpenAsync();
        Assert.Equal(SchemaMigrations.LatestVersion, await SchemaMigrations.ReadVersionAsync(conn, options.Schema, default));
    }

    [Fact]
    public async Task A_schema_newer_than_the_code_is_refused_and_left_alone()
    {
        var (cs, options) = await NewSchemaAsync();
        await using (var s = await PostgresRaftStorage.OpenAsync(cs, 1, options))
            await s.SaveAsync(new HardState(1, 0, 0), [E(1, 1)]);
        var newer = SchemaMigrations.LatestVersion + 1;
        await TestDatabase.ExecuteAsync(cs, $"INSERT INTO \"{options.Schema}\".raft_schema_migrations (version, description) VALUES ({newer}, 'from the future')");
        var e = await Assert.ThrowsAsync<PostgresStorageException>(() => PostgresRaftStorage.OpenAsync(cs, 1, options));
        Assert.Equal(PostgresStorageErrorKind.SchemaTooNew, e.Kind);
        Assert.Contains($"version {newer}", e.Message);
        Assert.Contains("newer", e.Message);
        Assert.Equal(1L, await TestDatabase.ScalarAsync<long>(cs, $"SELECT count(*) FROM \"{options.Schema}\".raft_entries"));
    }

    [Fact]
    public async Task A_second_writer_of_the_same_group_is_fenced_off()
    {
        var (cs, options) = await NewSchemaAsync();
        await using var first = await PostgresRaftStorage.OpenAsync(cs, 1, options);
        await using var second = await PostgresRaftStorage.OpenAsync(cs, 1, options);
        await second.SaveAsync(new HardState(2, 2, 0), [E(1, 2, [2])]);
        var e = await Assert.ThrowsAsync<PostgresStorageException>(() => first.SaveAsync(new HardState(1, 1, 0), [E(1, 1, [1])]));
        Assert.Equal(PostgresStorageErrorKind.ConcurrentWriter, e.Kind);
        // Nothing of the refused save is stored, and the fenced storage stays stopped.
        await using var check = await PostgresRaftStorage.OpenAsync(cs, 1, options);
        Assert.Equal([E(1, 2, [2])], check.State.StoredEntries);
        Assert.Equal(new HardState(2, 2, 0), check.State.HardState);
        var again = await Assert.ThrowsAsync<PostgresStorageException>(() => first.CompactAsync(1));
        Assert.Equal(PostgresStorageErrorKind.ConcurrentWriter, again.Kind);
    }

    [Theory]
    [InlineData(EntryWriteMethod.Unnest, true, true)]
    [InlineData(EntryWriteMethod.Unnest, true, false)]
    [InlineData(EntryWriteMethod.Unnest, false, true)]
    [InlineData(EntryWriteMethod.MultiRowInsert, true, true)]
    [InlineData(EntryWriteMethod.MultiRowInsert, true, false)]
    [InlineData(EntryWriteMethod.BinaryCopy, true, true)]
    [InlineData(EntryWriteMethod.BinaryCopy, false, true)]
    public async Task A_fenced_off_save_writes_none_of_its_entries_nor_its_hard_state(EntryWriteMethod method, bool withEntries, bool withHardState)
    {
        var (cs, options) = await NewSchemaAsync();
        options = options with { WriteMethod = method };
        var q = $"\"{options.Schema}\"";
        await using var first = await PostgresRaftStorage.OpenAsync(cs, 1, options);
        await first.SaveAsync(new HardState(1, 1, 0), [E(1, 1, [1])]);
        await using var second = await PostgresRaftStorage.OpenAsync(cs, 1, options);
        await second.SaveAsync(new HardState(2, 2, 1), [E(2, 2, [2])]);

        // first still believes it owns the group: its save appends past the log it knows.
        Entry[] entries = withEntries ? [E(2, 1, [7]), E(3, 1, [7])] : [];
        var e = await Assert.ThrowsAsync<PostgresStorageException>(() =>
            first.SaveAsync(withHardState ? new HardState(1, 1, 1) : null, entries, null, mustSync: withEntries));
        Assert.Equal(PostgresStorageErrorKind.ConcurrentWriter, e.Kind);
        Assert.Contains("another process wrote this group", e.Message);

        // The rows are exactly as the second writer left them.
        Assert.Equal("1:1:01,2:2:02", await TestDatabase.ScalarAsync<string>(cs,
            $"SELECT string_agg(idx || ':' || term || ':' || encode(data, 'hex'), ',' ORDER BY idx) FROM {q}.raft_entries WHERE group_id = 1"));
        Assert.Equal("2/2/2/1", await TestDatabase.ScalarAsync<string>(cs,
            $"SELECT concat_ws('/', write_seq, term, vote, commit_index) FROM {q}.raft_groups WHERE group_id = 1"));
        // The fenced storage stays stopped; the other goes on.
        var again = await Assert.ThrowsAsync<PostgresStorageException>(() => first.SaveAsync(new HardState(1, 1, 1), []));
        Assert.Equal(PostgresStorageErrorKind.ConcurrentWriter, again.Kind);
        await second.SaveAsync(new HardState(2, 2, 3), [E(3, 2, [3])]);
        await using var check = await PostgresRaftStorage.OpenAsync(cs, 1, options);
        Assert.Equal([E(1, 1, [1]), E(2, 2, [2]), E(3, 2, [3])], check.State.StoredEntries);
        Assert.Equal(new HardState(2, 2, 3), check.State.HardState);
    }

    [Fact]
    public async Task Plain_saves_are_one_statement_without_the_plpgsql_fence()
    {
        var (cs, options) = await NewSchemaAsync();
        await using var s = await PostgresRaftStorage.OpenAsync(cs, 1, options);
        // Without the function, only writes that still call it fail.
        await TestDatabase.ExecuteAsync(cs, $"DROP FUNCTION \"{options.Schema}\".raft_advance_write_seq(bigint, bigint)");
        await s.SaveAsync(new HardState(1, 1, 0), [E(1, 1), E(2, 1)]);
        await s.SaveAsync(null, [E(3, 1)]);
        await s.SaveAsync(new HardState(1, 1, 3), [], null, mustSync: false);
        var truncating = await Assert.ThrowsAsync<PostgresStorageException>(() => s.SaveAsync(null, [E(3, 2)]));
        Assert.Equal(PostgresStorageErrorKind.Server, truncating.Kind);
        Assert.Contains("raft_advance_write_seq", truncating.Message);
        await using var check = await PostgresRaftStorage.OpenAsync(cs, 1, options);
        Assert.Equal([E(1, 1), E(2, 1), E(3, 1)], check.State.StoredEntries);
        Assert.Equal(new HardState(1, 1, 3), check.State.HardState);
    }

    [Fact]
    public async Task Bad_options_and_connection_strings_are_clear_errors()
    {
        var cs = await TestDatabase.ConnectionStringAsync();
        var schema = await Assert.ThrowsAsync<ArgumentException>(() =>
            PostgresRaftStorage.OpenAsync(cs, 1, new PostgresRaftStorageOptions { Schema = "Bad-Name" }));
        Assert.Contains("Schema 'Bad-Name'", schema.Message);

        var bad = await Assert.ThrowsAsync<PostgresStorageException>(() => PostgresRaftStorage.OpenAsync("Host=x;Port=notanumber;Password=secret123", 1));
        Assert.Equal(PostgresStorageErrorKind.InvalidConnectionString, bad.Kind);
        Assert.DoesNotContain("secret123", bad.Message);

        var noHost = await Assert.ThrowsAsync<PostgresStorageException>(() => PostgresRaftStorage.OpenAsync("Database=x", 1));
        Assert.Equal(PostgresStorageErrorKind.InvalidConnectionString, noHost.Kind);
    }

    [Fact]
    public async Task A_refused_connection_is_a_clear_error()
    {
        int port;
        using (var l = new TcpListener(IPAddress.Loopback, 0)) { l.Start(); port = ((IPEndPoint)l.LocalEndpoint).Port; }
        var e = await Assert.ThrowsAsync<PostgresStorageException>(() =>
            PostgresRaftStorage.OpenAsync($"Host=127.0.0.1;Port={port};Username=postgres;Password=hunter2;Database=x", 1));
        Assert.Equal(PostgresStorageErrorKind.Unreachable, e.Kind);
        Assert.Contains("connection refused", e.Message);
        Assert.Contains($"127.0.0.1:{port}", e.Message);
        Assert.DoesNotContain("hunter2", e.Message);
    }

    [Fact]
    public async Task A_missing_database_an_unknown_user_and_missing_permissions_are_clear_errors()
    {
        var (cs, options) = await NewSchemaAsync();

        var db = await Assert.ThrowsAsync<PostgresStorageException>(() =>
            PostgresRaftStorage.OpenAsync(new NpgsqlConnectionStringBuilder(cs) { Database = "no_such_db_" + Guid.NewGuid().ToString("N")[..8] }.ConnectionString, 1, options));
        Assert.Equal(PostgresStorageErrorKind.DatabaseMissing, db.Kind);
        Assert.Contains("does not exist", db.Message);

        var user = await Assert.ThrowsAsync<PostgresStorageException>(() =>
            PostgresRaftStorage.OpenAsync(new NpgsqlConnectionStringBuilder(cs) { Username = "nobody_" + Guid.NewGuid().ToString("N")[..8] }.ConnectionString, 1, options));
        Assert.Equal(PostgresStorageErrorKind.AuthenticationFailed, user.Kind);
        Assert.Contains("refused the login", user.Message);

        // A role that may log in but not create anything in the schema (owned by the admin).
        var role = "r" + Guid.NewGuid().ToString("N")[..12];
        await TestDatabase.ExecuteAsync(cs, $"CREATE ROLE {role} LOGIN; CREATE SCHEMA \"{options.Schema}\"; REVOKE ALL ON SCHEMA \"{options.Schema}\" FROM PUBLIC");
        try
        {
            var denied = await Assert.ThrowsAsync<PostgresStorageException>(() =>
                PostgresRaftStorage.OpenAsync(new NpgsqlConnectionStringBuilder(cs) { Username = role }.ConnectionString, 1, options));
            Assert.Equal(PostgresStorageErrorKind.PermissionDenied, denied.Kind);
            Assert.Contains("permission denied", denied.Message);
            Assert.Contains(role, denied.Message);
        }
        finally
        {
            await TestDatabase.ExecuteAsync(cs, $"DROP ROLE {role}");
        }
    }

    [Fact]
    public async Task Entries_that_do_not_fit_bigint_are_refused_before_anything_is_written()
    {
        var (cs, options) = await NewSchemaAsync();
        await using var s = await PostgresRaftStorage.OpenAsync(cs, 1, options);
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => s.SaveAsync(null, [E(1, (ulong)long.MaxValue + 1)]));
        await Assert.ThrowsAsync<ArgumentException>(() => s.SaveAsync(null, [E(1, 1), E(3, 1)]));
        await s.SaveAsync(null, [E(1, 1)]);
        Assert.Equal(1UL, s.State.LastIndex);
    }

    [Fact]
    public async Task Every_write_method_stores_the_same_state()
    {
        var cs = await TestDatabase.ConnectionStringAsync();
        MemoryStorage? reference = null;
        foreach (var method in Enum.GetValues<EntryWriteMethod>())
        {
            var options = new PostgresRaftStorageOptions { Schema = TestDatabase.NewSchema(), WriteMethod = method };
            await using (var s = await PostgresRaftStorage.OpenAsync(cs, 1, options))
            {
                await s.SaveAsync(new HardState(1, 1, 0), Enumerable.Range(1, 300).Select(i => E((ulong)i, 1, [(byte)i, 0, 1])).ToArray());
                await s.SaveAsync(new HardState(2, 1, 100), [E(100, 2, [100]), E(101, 2, [])]);
                await s.SaveAsync(null, [new Entry(2, 102, EntryType.EntryConfChange, [1])]);
            }
            await using var reopened = await PostgresRaftStorage.OpenAsync(cs, 1, options);
            Assert.Equal(102UL, reopened.State.LastIndex);
            reference ??= reopened.State;
            Assert.Equal(reference, reopened.State);
        }
    }
}
