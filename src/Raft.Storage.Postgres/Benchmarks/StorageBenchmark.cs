using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Npgsql;
using Raft.Spec;

namespace Raft.Storage.Postgres.Benchmarks;

/// <summary>
/// Figures for docs/storage-postgres.md: the write path (saves of 1, 16 and 256 entries of 256
/// bytes, per write method, and the save's SQL shapes of storage schemas 1 and 2 as raw SQL)
/// against the server's single-row commit rate measured in the same run, and the read path
/// (in-memory reads vs reads through PostgreSQL, reload time at open). The write cases take
/// turns one operation at a time for Duration × cases; a durable private PostgreSQL unless a
/// connection string is given.
/// </summary>
public static class StorageBenchmark
{
    public sealed record Settings(TimeSpan Duration, string? ConnectionString = null, int EntryBytes = 256);

    public static async Task RunAsync(Settings settings, TextWriter output, ILogger? logger = null, CancellationToken cancellationToken = default)
    {
        var ct = cancellationToken;
        LocalPostgres? server = null;
        var cs = settings.ConnectionString;
        if (cs is null)
        {
            var dir = Path.Combine(Path.GetTempPath(), "raftv-bench-pg-" + Guid.NewGuid().ToString("N")[..8]);
            output.WriteLine($"starting a durable PostgreSQL (fsync on) in {dir} …");
            server = await LocalPostgres.StartAsync(new LocalPostgresOptions(dir, Durable: true), logger, ct);
            cs = server.ConnectionString;
        }
        try
        {
            var schema = "bench_" + Guid.NewGuid().ToString("N")[..8];
            output.WriteLine($"PostgreSQL {await ScalarAsync<string>(cs, "SHOW server_version", ct)}, fsync={await ScalarAsync<string>(cs, "SHOW fsync", ct)}, " +
                             $"{Environment.ProcessorCount} cores, {settings.Duration.TotalSeconds:0.#} s per case, entries of {settings.EntryBytes} bytes");
            output.WriteLine();
            output.WriteLine($"{"case",-34} {"commits/s",10} {"entries/s",10} {"p50 ms",8} {"p99 ms",8}");

            // The cases take turns one operation at a time, so load from other processes on the
            // machine (the disk above all) falls on every case alike instead of skewing whichever
            // ran at a bad moment: the ratios between cases are what this measures.
            var cases = new List<Case> { await SingleRowCommitCaseAsync(cs, schema, ct) };
            cases.AddRange(await SqlShapeCasesAsync(cs, schema, settings, ct));
            long group = 1;
            foreach (var batch in new[] { 1, 16, 256 })
            foreach (var method in Enum.GetValues<EntryWriteMethod>())
                cases.Add(await SaveCaseAsync(cs, group++, new PostgresRaftStorageOptions { Schema = schema, WriteMethod = method }, batch, settings, ct));
            var budget = settings.Duration * cases.Count;
            var total = Stopwatch.StartNew();
            while (total.Elapsed < budget)
                foreach (var c in cases)
                    await c.RunOnceAsync(ct);
            foreach (var c in cases) Print(output, c.Name, c.Result(), c.EntriesPerOperation);
            output.WriteLine();
            var baseline = cases[0].Result().PerSecond;
            output.WriteLine($"baseline: {baseline:0} single-row commits/s; 1-entry saves at " + string.Join(", ",
                cases.OfType<SaveCase>().Where(c => c.Batch == 1).Select(c => $"{c.Result().PerSecond / baseline:0%} ({c.Options.WriteMethod})")) + " of it");
            var largest = cases.OfType<SaveCase>().Single(c => c.Batch == 256 && c.Options.WriteMethod == EntryWriteMethod.Unnest);
            foreach (var c in cases) await c.DisposeAsync();
            await ReadsAsync(cs, largest.Group, largest.Options, output, ct);
        }
        finally
        {
            if (server is not null) await server.DestroyAsync(CancellationToken.None);
        }
    }

    private sealed record Result(int Operations, TimeSpan Elapsed, double P50Ms, double P99Ms)
    {
        public double PerSecond => Operations / Elapsed.TotalSeconds;
    }

    private static void Print(TextWriter output, string name, Result r, int entriesPerOp) =>
        output.WriteLine($"{name,-34} {r.PerSecond,10:0} {r.PerSecond * entriesPerOp,10:0} {r.P50Ms,8:0.00} {r.P99Ms,8:0.00}");

    private static Result Summarise(List<double> latenciesMs, TimeSpan elapsed)
    {
        latenciesMs.Sort();
        double At(double q) => latenciesMs.Count == 0 ? double.NaN : latenciesMs[Math.Min(latenciesMs.Count - 1, (int)(q * latenciesMs.Count))];
        return new Result(latenciesMs.Count, elapsed, At(0.50), At(0.99));
    }

    private abstract class Case(string name, int entriesPerOperation) : IAsyncDisposable
    {
        private readonly List<double> _latenciesMs = [];
        private TimeSpan _elapsed;
        public string Name { get; } = name;
        public int EntriesPerOperation { get; } = entriesPerOperation;

        protected abstract Task OperationAsync(CancellationToken ct);

        public async Task RunOnceAsync(CancellationToken ct)
        {
            var t = Stopwatch.GetTimestamp();
            await OperationAsync(ct);
            var took = Stopwatch.GetElapsedTime(t);
            _latenciesMs.Add(took.TotalMilliseconds);
            _elapsed += took;
        }

        public Result Result() => Summarise([.. _latenciesMs], _elapsed);
        public abstract ValueTask DisposeAsync();
    }

    /// <summary>The server's own commit rate: one small row per transaction (autocommit, one WAL flush).</summary>
    private sealed class SingleRowCommitCase(NpgsqlConnection conn, NpgsqlCommand insert) : Case("single-row INSERT per commit", 1)
    {
        private int _n;

        protected override async Task OperationAsync(CancellationToken ct)
        {
            insert.Parameters[0].Value = _n++;
            await insert.ExecuteNonQueryAsync(ct);
        }

        public override async ValueTask DisposeAsync()
        {
            await insert.DisposeAsync();
            await conn.DisposeAsync();
        }
    }

    private static async Task<Case> SingleRowCommitCaseAsync(string cs, string schema, CancellationToken ct)
    {
        var conn = new NpgsqlConnection(cs);
        await conn.OpenAsync(ct);
        await using (var setup = new NpgsqlCommand($"CREATE SCHEMA {schema}; CREATE TABLE {schema}.commit_probe (id bigserial PRIMARY KEY, v integer NOT NULL); SET synchronous_commit = on", conn))
            await setup.ExecuteNonQueryAsync(ct);
        var insert = new NpgsqlCommand($"INSERT INTO {schema}.commit_probe (v) VALUES ($1)", conn) { Parameters = { new() { Value = 0 } } };
        await insert.PrepareAsync(ct);
        return new SingleRowCommitCase(conn, insert);
    }

    /// <summary>
    /// A save of one entry and a hard state as raw SQL, in the statement shapes of storage schema 1
    /// (a batch: the PL/pgSQL fence, the entry INSERT, the hard-state upsert) and schema 2 (one
    /// statement: the fenced UPDATE of the group row carrying the hard state, the INSERT only when it
    /// matched), on schemas migrated to versions 1 and 2, through a pool as the storage uses it. Compares the shapes
    /// in one run whatever version of the storage is built.
    /// </summary>
    private sealed class SqlShapeCase(string name, NpgsqlDataSource source, Func<NpgsqlConnection, long, long, byte[], NpgsqlBatch> save, byte[] data)
        : Case(name, 1)
    {
        private long _seq;

        protected override async Task OperationAsync(CancellationToken ct)
        {
            await using var conn = await source.OpenConnectionAsync(ct);
            await using var batch = save(conn, _seq, _seq + 1, data);
            var affected = await batch.ExecuteNonQueryAsync(ct);
            if (affected == 0) throw new InvalidOperationException($"{Name}: the fence found no row at write_seq {_seq}");
            _seq++;
        }

        public override ValueTask DisposeAsync() => source.DisposeAsync();
    }

    private static async Task<IEnumerable<Case>> SqlShapeCasesAsync(string cs, string schema, Settings settings, CancellationToken ct)
    {
        // The real schemas at versions 1 and 2 (the migrations themselves), each with two groups.
        var v1 = SchemaMigrations.Quote(schema + "_v1");
        var v2 = SchemaMigrations.Quote(schema + "_v2");
        await using (var conn = new NpgsqlConnection(cs))
        {
            await conn.OpenAsync(ct);
            await SchemaMigrations.MigrateAsync(conn, schema + "_v1", 1, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance, ct);
            await SchemaMigrations.MigrateAsync(conn, schema + "_v2", 2, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance, ct);
            await using var setup = new NpgsqlCommand(
                $"INSERT INTO {v1}.raft_groups (group_id) VALUES (1), (2); INSERT INTO {v2}.raft_groups (group_id) VALUES (1), (2)", conn);
            await setup.ExecuteNonQueryAsync(ct);
        }
        NpgsqlDataSource Pool(bool reset) =>
            NpgsqlDataSource.Create(new NpgsqlConnectionStringBuilder(cs) { MaxAutoPrepare = 32, NoResetOnClose = !reset, Options = "-c synchronous_commit=on" });
        static NpgsqlBatchCommand Command(string sql, params object[] args)
        {
            var c = new NpgsqlBatchCommand(sql);
            foreach (var a in args) c.Parameters.Add(new NpgsqlParameter { Value = a });
            return c;
        }
        static object[] Entry(long idx, byte[] data) => [new[] { idx }, new[] { 1L }, new short[] { 0 }, new[] { data }];
        NpgsqlBatch Schema1(NpgsqlConnection conn, long seq, long idx, byte[] data) => new(conn)
        {
            BatchCommands =
            {
                Command($"SELECT {v1}.raft_advance_write_seq($1, $2)", 1L, seq),
                Command($"INSERT INTO {v1}.raft_entries (group_id, idx, term, entry_type, data) SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::smallint[], $5::bytea[])",
                    [1L, .. Entry(idx, data)]),
                Command($"""
                         INSERT INTO {v1}.raft_hard_state (group_id, term, vote, commit_index) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (group_id) DO UPDATE SET term = excluded.term, vote = excluded.vote, commit_index = excluded.commit_index
                         """, 1L, 1L, 1L, idx - 1),
            },
        };
        Func<NpgsqlConnection, long, long, byte[], NpgsqlBatch> Schema2(long group) => (conn, seq, idx, data) => new(conn)
        {
            BatchCommands =
            {
                Command($"""
                         WITH fence AS (UPDATE {v2}.raft_groups SET write_seq = $2 + 1, term = $3, vote = $4, commit_index = $5
                                        WHERE group_id = $1 AND write_seq = $2 RETURNING 1)
                         INSERT INTO {v2}.raft_entries (group_id, idx, term, entry_type, data)
                         SELECT $1, * FROM unnest($6::bigint[], $7::bigint[], $8::smallint[], $9::bytea[]) WHERE EXISTS (SELECT FROM fence)
                         """, [group, seq, 1L, 1L, idx - 1, .. Entry(idx, data)]),
            },
        };
        var data = new byte[settings.EntryBytes];
        new Random(1).NextBytes(data);
        return
        [
            new SqlShapeCase("SQL schema 1 batch, pool reset", Pool(reset: true), Schema1, data),
            new SqlShapeCase("SQL schema 2 statement, pool reset", Pool(reset: true), Schema2(1), data),
            new SqlShapeCase("SQL schema 2 statement, no reset", Pool(reset: false), Schema2(2), data),
        ];
    }

    private sealed class SaveCase(PostgresRaftStorage storage, PostgresRaftStorageOptions options, int batch, byte[] data)
        : Case($"save {batch,3} × {data.Length} B, {options.WriteMethod}", batch)
    {
        public int Batch => EntriesPerOperation;
        public long Group => storage.GroupId;
        public PostgresRaftStorageOptions Options => options;

        protected override Task OperationAsync(CancellationToken ct)
        {
            var first = storage.State.LastIndex + 1;
            var entries = new Entry[EntriesPerOperation];
            for (var i = 0; i < entries.Length; i++) entries[i] = new Entry(1, first + (ulong)i, EntryType.EntryNormal, data);
            return storage.SaveAsync(new HardState(1, 1, first - 1), entries, null, ct);
        }

        public override ValueTask DisposeAsync() => storage.DisposeAsync();
    }

    private static async Task<Case> SaveCaseAsync(string cs, long group, PostgresRaftStorageOptions options, int batch, Settings settings, CancellationToken ct)
    {
        var data = new byte[settings.EntryBytes];
        new Random(1).NextBytes(data);
        return new SaveCase(await PostgresRaftStorage.OpenAsync(cs, group, options, cancellationToken: ct), options, batch, data);
    }

    /// <summary>Raft's reads served from memory vs the same reads asked of PostgreSQL synchronously.</summary>
    private static async Task ReadsAsync(string cs, long group, PostgresRaftStorageOptions options, TextWriter output, CancellationToken ct)
    {
        output.WriteLine();
        var open = Stopwatch.StartNew();
        await using var storage = await PostgresRaftStorage.OpenAsync(cs, group, options, cancellationToken: ct);
        open.Stop();
        var last = storage.State.LastIndex;
        output.WriteLine($"open (migrations check + reload of {last} entries): {open.Elapsed.TotalMilliseconds:0} ms, " +
                         $"{last / open.Elapsed.TotalSeconds:0} entries/s");
        if (last < 100) return;

        var random = new Random(1);
        const int memoryReads = 200_000;
        var t = Stopwatch.StartNew();
        ulong sink = 0;
        for (var i = 0; i < memoryReads; i++) sink += storage.Term(1 + (ulong)random.NextInt64((long)last)).ResultValue;
        var memTerm = t.Elapsed.TotalMicroseconds / memoryReads;
        t.Restart();
        for (var i = 0; i < memoryReads / 10; i++)
        {
            var lo = 1 + (ulong)random.NextInt64((long)last - 64);
            sink += (ulong)storage.Entries(lo, lo + 64, ulong.MaxValue).ResultValue.Length;
        }
        var memRange = t.Elapsed.TotalMicroseconds / (memoryReads / 10);

        // The alternative design: IStorage is synchronous, so each read is a blocking round trip.
        var q = SchemaMigrations.Quote(options.Schema);
        await using var conn = new NpgsqlConnection(cs);
        conn.Open();
        using var term = new NpgsqlCommand($"SELECT term FROM {q}.raft_entries WHERE group_id = $1 AND idx = $2", conn)
        { Parameters = { new() { Value = group }, new() { Value = 0L } } };
        term.Prepare();
        using var range = new NpgsqlCommand($"SELECT idx, term, entry_type, data FROM {q}.raft_entries WHERE group_id = $1 AND idx >= $2 AND idx < $3 ORDER BY idx", conn)
        { Parameters = { new() { Value = group }, new() { Value = 0L }, new() { Value = 0L } } };
        range.Prepare();
        const int pgReads = 2000;
        t.Restart();
        for (var i = 0; i < pgReads; i++)
        {
            term.Parameters[1].Value = 1 + random.NextInt64((long)last);
            sink += (ulong)(long)term.ExecuteScalar()!;
        }
        var pgTerm = t.Elapsed.TotalMicroseconds / pgReads;
        t.Restart();
        for (var i = 0; i < pgReads; i++)
        {
            var lo = 1 + random.NextInt64((long)last - 64);
            range.Parameters[1].Value = lo;
            range.Parameters[2].Value = lo + 64;
            using var r = range.ExecuteReader();
            while (r.Read()) sink += (ulong)r.GetFieldValue<byte[]>(3).Length;
        }
        var pgRange = t.Elapsed.TotalMicroseconds / pgReads;
        output.WriteLine($"{"read",-34} {"memory µs",10} {"PostgreSQL µs",14}");
        output.WriteLine($"{"Term(i), random i",-34} {memTerm,10:0.000} {pgTerm,14:0.0}");
        output.WriteLine($"{"Entries(lo, lo+64), random lo",-34} {memRange,10:0.000} {pgRange,14:0.0}");
        output.WriteLine($"(checksum {sink % 1000})");
    }

    private static async Task<T> ScalarAsync<T>(string cs, string sql, CancellationToken ct)
    {
        await using var conn = new NpgsqlConnection(cs);
        await conn.OpenAsync(ct);
        await using var cmd = new NpgsqlCommand(sql, conn);
        return (T)(await cmd.ExecuteScalarAsync(ct))!;
    }
}
