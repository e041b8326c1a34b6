using Google.Protobuf;
using Raft.Kv.Etcd.Serverpb;
using Raft.Kv.Protocol;
using Raft.Kv.State;
using Raft.Kv.Storage;
using Raft.Spec;
using static Raft.Kv.Tests.Kv;
using CR = Raft.Kv.Etcd.Serverpb.Compare.Types.CompareResult;
using CT = Raft.Kv.Etcd.Serverpb.Compare.Types.CompareTarget;

namespace Raft.Kv.Tests;

public class PostgresKvStoreTests
{
    private sealed class SimulatedCrash : Exception;

    private static async Task<(PostgresKvStore Store, string Cs, PostgresKvStoreOptions Options)> OpenAsync(long group = 1, PostgresKvStoreOptions? options = null)
    {
        var cs = await TestDatabase.ConnectionStringAsync();
        options ??= new PostgresKvStoreOptions { Schema = TestDatabase.NewSchema() };
        return (await PostgresKvStore.OpenAsync(cs, group, options), cs, options);
    }

    private static Entry E(ulong index, KvCommand command, ulong term = 1) => new(term, index, EntryType.EntryNormal, command.ToByteArray());
    private static Entry Empty(ulong index, ulong term = 1) => new(term, index, EntryType.EntryNormal, []);

    [Fact]
    public async Task Applies_entries_with_the_revision_model_and_serves_ranges()
    {
        var (store, _, _) = await OpenAsync();
        await using var _1 = store;
        Assert.Equal(new KvStoreState(1, 0, 0, 0), await store.ReadStateAsync());

        var applied = await store.ApplyAsync([
            Empty(1),
            E(2, Command(Put("a", "1"))),
            E(3, Command(Put("a", "2", prevKv: true))),
            E(4, Command(Put("b", "x")), term: 2),
            E(5, Command(Del("b"))),
        ]);
        Assert.Equal([1UL, 2, 3, 4, 5], applied.Select(a => a.Index));
        Assert.Null(applied[0].Result);
        Assert.Equal("1", S(applied[2].Result!.Put.PrevKv.Value));
        Assert.Equal(1, applied[4].Result!.DeleteRange.Deleted);
        Assert.Equal(new KvStoreState(5, 0, 5, 1), await store.ReadStateAsync());

        var a = (await store.RangeAsync(Get("a"))).Kvs.Single();
        Assert.Equal(("2", 2L, 3L, 2L), (S(a.Value), a.CreateRevision, a.ModRevision, a.Version));
        Assert.Empty((await store.RangeAsync(Get("b"))).Kvs);
        Assert.Equal(5, (await store.RangeAsync(Get("zz"))).Header.Revision);
    }

    [Fact]
    public async Task A_crash_before_commit_applies_nothing_and_a_restart_applies_each_entry_once()
    {
        var (store, cs, options) = await OpenAsync();
        var batch = new[]
        {
            E(1, Command(Put("counter", "1"))),
            E(2, Command(Txn([Cmp("counter", CT.Value, CR.Equal, "1")], [Op(Put("counter", "2"))]))),
        };
        await Assert.ThrowsAsync<SimulatedCrash>(() => store.ApplyAsync(batch, _ => throw new SimulatedCrash(), CancellationToken.None));
        Assert.Equal(new KvStoreState(1, 0, 0, 0), await store.ReadStateAsync());
        Assert.Empty((await store.RangeAsync(Get("counter"))).Kvs);
        await store.DisposeAsync();

        // The restarted member replays the log from its applied index: here, from the start.
        await using var restarted = await PostgresKvStore.OpenAsync(cs, 1, options);
        var first = await restarted.ApplyAsync(batch);
        Assert.Equal(2, first.Count);
        Assert.True(first[1].Result!.Txn.Succeeded);
        // A second replay of entries already applied (e.g. a crash after commit, before the caller learnt of it) is skipped.
        var again = await restarted.ApplyAsync([.. batch, E(3, Command(Put("other", "x")))]);
        Assert.Equal([3UL], again.Select(a => a.Index));
        var counter = (await restarted.RangeAsync(Get("counter"))).Kvs.Single();
        Assert.Equal(("2", 2L), (S(counter.Value), counter.Version));
        Assert.Equal(new KvStoreState(4, 0, 3, 1), await restarted.ReadStateAsync());
    }

    [Fact]
    public async Task An_entry_after_a_gap_is_refused_and_nothing_of_its_batch_applies()
    {
        var (store, _, _) = await OpenAsync();
        await using var _1 = store;
        await store.ApplyAsync([E(1, Command(Put("a", "1")))]);
        var e = await Assert.ThrowsAsync<KvStoreException>(() => store.ApplyAsync([E(2, Command(Put("b", "1"))), E(4, Command(Put("c", "1")))]));
        Assert.Contains("entry 4 does not follow entry 2 in one batch", e.Message);
        Assert.Equal(1UL, (await store.ReadStateAsync()).AppliedIndex);
        Assert.Empty((await store.RangeAsync(Get("b"))).Kvs);

        // A batch that starts past the applied index (a PostgreSQL crash undid asynchronous applies)
        // names the applied index, so that the caller applies the missing entries from its log.
        var gap = await Assert.ThrowsAsync<KvApplyGapException>(() => store.ApplyAsync([E(3, Command(Put("c", "1")))]));
        Assert.Equal(1UL, gap.AppliedIndex);
        Assert.Contains("entry 3 does not follow the applied index 1", gap.Message);
        Assert.Empty((await store.RangeAsync(Get("c"))).Kvs);
    }

    [Fact]
    public async Task An_apply_that_fails_before_its_commit_leaves_nothing_and_the_pooled_connection_starts_clean()
    {
        // The apply's transaction is begun and committed inside its batches: a failure before the
        // commit must leave nothing, and the one pooled connection, reused by every later call, must
        // come back with no transaction open (or the next apply would see the failed one's writes).
        var schema = TestDatabase.NewSchema();
        var cs = new Npgsql.NpgsqlConnectionStringBuilder(await TestDatabase.ConnectionStringAsync()) { MaxPoolSize = 1 }.ConnectionString;
        await using var store = await PostgresKvStore.OpenAsync(cs, 1, new PostgresKvStoreOptions { Schema = schema });
        await store.ApplyAsync([E(1, Command(Put("a", "0")))]);
        await Assert.ThrowsAsync<SimulatedCrash>(() =>
            store.ApplyAsync([E(2, Command(Put("a", "1")))], _ => throw new SimulatedCrash(), CancellationToken.None));
        Assert.Equal(1UL, (await store.ReadStateAsync()).AppliedIndex);
        Assert.Equal("0", (await store.RangeAsync(Get("a"))).Kvs.Single().Value.ToStringUtf8());

        // A replay that offers only what is applied commits nothing and leaves nothing open either.
        Assert.Empty(await store.ApplyAsync([E(1, Command(Put("a", "0")))]));
        var again = await store.ApplyAsync([E(2, Command(Put("a", "1", prevKv: true)))]);
        Assert.Equal([2UL], again.Select(a => a.Index));
        Assert.Equal("0", again[0].Result!.Put.PrevKv.Value.ToStringUtf8());
        Assert.Equal(2UL, (await store.ReadStateAsync()).AppliedIndex);
    }

    [Fact]
    public async Task An_applier_waiting_for_the_row_lock_reads_what_the_previous_one_committed()
    {
        var (store, cs, _) = await OpenAsync();
        await using var _1 = store;
        await store.ApplyAsync([E(1, Command(Put("a", "0")))]);
        var first = new[] { E(2, Command(Put("a", "1"))) };
        var holding = new TaskCompletionSource();
        var release = new TaskCompletionSource();
        var firstApply = store.ApplyAsync(first, async _ => { holding.SetResult(); await release.Task; }, CancellationToken.None);
        await holding.Task;

        // The second applier (the same entries and one more, as a replay from the raft log offers
        // them) blocks on the group's row until the first commits.
        var secondApply = store.ApplyAsync([.. first, E(3, Command(Put("a", "2", prevKv: true)))]);
        await using (var conn = new Npgsql.NpgsqlConnection(cs))
        {
            await conn.OpenAsync();
            await using var waiting = new Npgsql.NpgsqlCommand(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%kv_groups%FOR UPDATE%'", conn);
            var deadline = DateTime.UtcNow.AddSeconds(20);
            while ((long)(await waiting.ExecuteScalarAsync())! == 0)
            {
                Assert.True(DateTime.UtcNow < deadline, "the second applier never waited for the row lock");
                await Task.Delay(20);
            }
        }
        release.SetResult();
        Assert.Equal([2UL], (await firstApply).Select(a => a.Index));
        var second = await secondApply;
        Assert.Equal([3UL], second.Select(a => a.Index));
        var prev = second[0].Result!.Put.PrevKv;
        Assert.Equal(("1", 2L, 3L), (S(prev.Value), prev.Version, prev.ModRevision));
        Assert.Equal(3, (await store.RangeAsync(Get("a"))).Kvs.Single().Version);
    }

    [Fact]
    public async Task Applies_commit_asynchronously_unless_told_otherwise()
    {
        var (store, _, _) = await OpenAsync();
        await using (store) Assert.Equal("off", await store.ApplyCommitSettingAsync());
        var (strict, _, _) = await OpenAsync(options: new PostgresKvStoreOptions { Schema = TestDatabase.NewSchema(), AsynchronousApplyCommit = false });
        await using (strict) Assert.Equal("on", await strict.ApplyCommitSettingAsync());
    }

    [Fact]
    public async Task A_retried_request_id_returns_the_first_result_and_applies_nothing()
    {
        var retention = TimeSpan.FromMinutes(1);
        var (store, _, _) = await OpenAsync(options: new PostgresKvStoreOptions { Schema = TestDatabase.NewSchema(), RequestIdRetention = retention });
        await using var _1 = store;
        const long t0 = 1_700_000_000_000;
        var applied = await store.ApplyAsync([
            E(1, Command(Put("a", "1", prevKv: true), id: "req-1", at: t0)),
            E(2, Command(Put("a", "1", prevKv: true), id: "req-1", at: t0 + 1000)),
            E(3, Command(Put("a", "other"), id: "req-2", at: t0 + 2000)),
        ]);
        Assert.False(applied[0].Duplicate);
        Assert.True(applied[1].Duplicate);
        Assert.Equal(applied[0].Result, applied[1].Result);
        Assert.Equal(2, applied[1].Result!.Put.Header.Revision);
        var a = (await store.RangeAsync(Get("a"))).Kvs.Single();
        Assert.Equal((2L, "other"), (a.Version, S(a.Value)));
        Assert.Equal(3, (await store.ReadStateAsync()).Revision);

        // A server asks before proposing, with its own clock.
        Assert.Equal(applied[0].Result, await store.FindAppliedRequestAsync(B("req-1"), t0 + 30_000));
        Assert.Null(await store.FindAppliedRequestAsync(B("req-1"), t0 + 61_000));
        Assert.Null(await store.FindAppliedRequestAsync(B("never"), t0));

        // Past the retention, on the log's clock, the same id is a new request.
        var late = await store.ApplyAsync([E(4, Command(Put("a", "late"), id: "req-1", at: t0 + 120_000))]);
        Assert.False(late[0].Duplicate);
        Assert.Equal("late", S((await store.RangeAsync(Get("a"))).Kvs.Single().Value));
    }

    [Fact]
    public async Task A_failed_request_is_remembered_with_its_error()
    {
        var (store, _, _) = await OpenAsync();
        await using var _1 = store;
        var missing = new PutRequest { Key = B("nope"), IgnoreValue = true };
        var applied = await store.ApplyAsync([E(1, Command(missing, id: "r", at: 1)), E(2, Command(Put("nope", "now"), at: 2)), E(3, Command(missing, id: "r", at: 3))]);
        Assert.Equal("etcdserver: key not found", applied[0].Result!.Error.Message);
        Assert.True(applied[2].Duplicate);
        Assert.Equal(applied[0].Result, applied[2].Result);
    }

    [Fact]
    public async Task Only_client_request_ids_are_remembered_not_a_servers_waiter_ids()
    {
        var (store, cs, options) = await OpenAsync();
        await using var _1 = store;
        var waited = new KvCommand { Put = Put("a", "1"), WaiterId = B("waiter-1"), ProposedAtUnixMs = 1 };
        var applied = await store.ApplyAsync([E(1, waited), E(2, Command(Put("a", "2"), id: "client-1", at: 2))]);
        Assert.Equal(waited, applied[0].Command);
        Assert.Equal(2, applied[0].Result!.Put.Header.Revision);

        await using var conn = new Npgsql.NpgsqlConnection(cs);
        await conn.OpenAsync();
        await using var rows = new Npgsql.NpgsqlCommand($"SELECT encode(request_id, 'escape') FROM \"{options.Schema}\".kv_applied_requests ORDER BY 1", conn);
        var remembered = new List<string>();
        await using (var r = await rows.ExecuteReaderAsync())
            while (await r.ReadAsync()) remembered.Add(r.GetString(0));
        Assert.Equal(["client-1"], remembered);
        Assert.Null(await store.FindAppliedRequestAsync(B("waiter-1"), 1));
        Assert.Equal(applied[1].Result, await store.FindAppliedRequestAsync(B("client-1"), 2));

        // The same waiter id again is a new write, never a duplicate.
        var again = await store.ApplyAsync([E(3, waited)]);
        Assert.False(again[0].Duplicate);
        Assert.Equal(3, (await store.RangeAsync(Get("a"))).Kvs.Single().Version);
    }

    [Fact]
    public async Task Snapshot_export_and_import_round_trip()
    {
        var (source, cs, options) = await OpenAsync(group: 1);
        await using var _1 = source;
        await source.ApplyAsync([
            E(1, Command(Put("a", "1"))),
            E(2, Command(Put("b", "2"), id: "req-b", at: 10)),
            E(3, Command(Put("a", "3"))),
            E(4, Command(new PutRequest { Key = Bytes(0, 0xff), Value = Bytes(1, 2, 3) }), term: 3),
            E(5, Command(Del("b")), term: 3),
            E(6, Command(new CompactionRequest { Revision = 3 }), term: 3),
        ]);
        var snapshot = new MemoryStream();
        var header = await source.ExportSnapshotAsync(snapshot);
        Assert.Equal((6UL, 3UL, 6L, 3L, 2L, 1L), (header.AppliedIndex, header.AppliedTerm, header.Revision, header.CompactRevision, header.KeyCount, header.DedupCount));

        await using var target = await PostgresKvStore.OpenAsync(cs, 2, options);
        await target.ApplyAsync([E(1, Command(Put("stale", "x")))]);
        snapshot.Position = 0;
        await target.ImportSnapshotAsync(snapshot);

        Assert.Equal(await source.ReadStateAsync(), await target.ReadStateAsync());
        var all = new RangeRequest { Key = Bytes(0), RangeEnd = Bytes(0) };
        Assert.Equal(await source.RangeAsync(all), await target.RangeAsync(all));
        Assert.Equal(2, (await target.RangeAsync(all)).Count);
        // Remembered request ids travel with the snapshot.
        var retry = await target.ApplyAsync([E(7, Command(Put("b", "2"), id: "req-b", at: 20))]);
        Assert.True(retry[0].Duplicate);
        // The target goes on from the snapshot's index.
        await target.ApplyAsync([E(8, Command(Put("c", "1")))]);
        Assert.Equal(7, (await target.RangeAsync(Get("c"))).Kvs.Single().CreateRevision);
    }

    [Fact]
    public async Task A_truncated_or_older_snapshot_changes_nothing()
    {
        var (source, cs, options) = await OpenAsync(group: 1);
        await using var _1 = source;
        await source.ApplyAsync([E(1, Command(Put("a", "1"))), E(2, Command(Put("b", "2")))]);
        var full = new MemoryStream();
        await source.ExportSnapshotAsync(full);
        var bytes = full.ToArray();

        await using var target = await PostgresKvStore.OpenAsync(cs, 2, options);
        await target.ApplyAsync([E(1, Command(Put("mine", "x")))]);
        await Assert.ThrowsAsync<InvalidDataException>(() => target.ImportSnapshotAsync(new MemoryStream(bytes[..^3])));
        Assert.Equal("x", S((await target.RangeAsync(Get("mine"))).Kvs.Single().Value));
        Assert.Equal(1UL, (await target.ReadStateAsync()).AppliedIndex);

        await target.ApplyAsync([E(2, Command(Put("m2", "x"))), E(3, Command(Put("m3", "x")))]);
        var e = await Assert.ThrowsAsync<KvStoreException>(() => target.ImportSnapshotAsync(new MemoryStream(bytes)));
        Assert.Contains("older than the applied index 3", e.Message);
        Assert.Equal(3UL, (await target.ReadStateAsync()).AppliedIndex);
    }

    /// <summary>Random command sequences give the same results and state in PostgreSQL as in memory.</summary>
    [Fact]
    public async Task PostgreSQL_store_agrees_with_the_pure_applier_on_random_commands()
    {
        const int seed = 20240611;
        var random = new Random(seed);
        var (store, _, _) = await OpenAsync();
        await using var _1 = store;
        var memory = new MemoryKv();
        string K() => ((char)('a' + random.Next(6))).ToString() + (random.Next(3) == 0 ? "x" : "");
        KvCommand Next()
        {
            switch (random.Next(4))
            {
                case 0: return Command(Put(K(), random.Next(100).ToString(), prevKv: random.Next(2) == 0));
                case 1:
                {
                    var k = K();
                    return Command(random.Next(2) == 0 ? Del(k) : Del(k, ((char)(k[0] + 1 + random.Next(2))).ToString(), prevKv: true));
                }
                default:
                {
                    var k = K();
                    var k2 = K();
                    var success = new List<RequestOp> { Op(Put(k, "t" + random.Next(10))), Op(Get("a", "z")) };
                    if (k2 != k) success.Add(Op(Del(k2)));
                    var target = (CT)random.Next(4);
                    object operand = target == CT.Value ? random.Next(100).ToString() : random.Next(6);
                    return Command(Txn([Cmp(K(), target, (CR)random.Next(4), operand)],
                        success, [Op(Get(K())), Op(Put(k2 + "f", "f"))]));
                }
            }
        }
        ulong index = 0;
        for (var batch = 0; batch < 15; batch++)
        {
            var commands = Enumerable.Range(0, 1 + random.Next(5)).Select(_ => Next()).ToList();
            var entries = commands.Select(c => E(++index, c)).ToList();
            var results = await store.ApplyAsync(entries);
            for (var i = 0; i < commands.Count; i++)
            {
                var expected = memory.Apply(commands[i]);
                Assert.True(expected.Equals(results[i].Result), $"seed {seed}, entry {entries[i].Index}: {commands[i]}\nmemory: {expected}\npostgres: {results[i].Result}");
            }
            var all = new RangeRequest { Key = Bytes(0), RangeEnd = Bytes(0) };
            Assert.Equal(memory.Range(all), await store.RangeAsync(all));
        }
    }

    [Fact]
    public void Options_are_validated()
    {
        Assert.Throws<ArgumentException>(() => new PostgresKvStoreOptions { Schema = "bad name" }.Validate());
        Assert.Throws<ArgumentException>(() => new PostgresKvStoreOptions { RequestIdRetention = TimeSpan.Zero }.Validate());
        Assert.Throws<ArgumentException>(() => new PostgresKvStoreOptions { MaxTxnOps = 0 }.Validate());
    }
}
