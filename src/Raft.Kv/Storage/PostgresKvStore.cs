using System.Data;
using Google.Protobuf;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;
using NpgsqlTypes;
using Raft.Kv.Etcd.Mvccpb;
using Raft.Kv.Etcd.Serverpb;
using Raft.Kv.Protocol;
using Raft.Kv.State;
using Raft.Spec;

namespace Raft.Kv.Storage;

/// <summary>The applied state of one group: store revision, compaction point, and the last applied log entry.</summary>
/// <param name="HistoryFrom">Reads at revisions below this one cannot be answered: the store kept no history before it (a store of schema 1).</param>
public sealed record KvStoreState(long Revision, long CompactRevision, ulong AppliedIndex, ulong AppliedTerm, long HistoryFrom = 0);

/// <summary>
/// What applying one log entry gave: the command and its result for a key-value entry
/// (<see cref="Duplicate"/> when the request id had been applied before and the first result is
/// repeated), nulls for entries that carry no command (leader no-ops, configuration changes).
/// </summary>
public sealed record AppliedEntry(ulong Index, ulong Term, KvCommand? Command, KvResult? Result, bool Duplicate);

/// <summary>The store refused an operation that would corrupt it (a gap in applied entries, a bad snapshot...).</summary>
public class KvStoreException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// Entries were offered past the store's applied index: applies committed asynchronously were
/// undone by a PostgreSQL crash. The caller applies the entries after <see cref="AppliedIndex"/>
/// again from the raft log, then the ones it offered.
/// </summary>
public sealed class KvApplyGapException(long groupId, ulong appliedIndex, ulong offered)
    : KvStoreException($"key-value group {groupId}: entry {offered} does not follow the applied index {appliedIndex}")
{
    public ulong AppliedIndex { get; } = appliedIndex;
}

/// <summary>
/// The key-value state machine of one raft group in PostgreSQL. Committed entries are applied in
/// the same transaction that advances the group's applied index, so after a crash at any instant
/// each entry has been applied exactly once or not at all, and applying again skips what is done.
/// Retried writes carrying the same request id are answered from the applied-request table
/// instead of being applied again; writes without one (<see cref="KvCommand.WaiterId"/> only) are
/// not remembered.
/// </summary>
public sealed class PostgresKvStore : IAsyncDisposable
{
    private const int SchemaVersion = 2;
    private const int MaxSnapshotRecord = 64 * 1024 * 1024;
    /// <summary>Format 2 adds the keys' history; format 1 (no history) is still read.</summary>
    private const uint SnapshotFormat = 2;

    private readonly NpgsqlDataSource _dataSource;
    /// <summary>Connections for apply transactions: <see cref="PostgresKvStoreOptions.AsynchronousApplyCommit"/>.</summary>
    private readonly NpgsqlDataSource _applySource;
    private readonly PostgresKvStoreOptions _options;
    private readonly ILogger _logger;
    private readonly string _q;

    private PostgresKvStore(NpgsqlDataSource dataSource, NpgsqlDataSource applySource, long groupId, PostgresKvStoreOptions options, ILogger logger)
    {
        _dataSource = dataSource;
        _applySource = applySource;
        GroupId = groupId;
        _options = options;
        _logger = logger;
        _q = "\"" + options.Schema + "\"";
    }

    public long GroupId { get; }

    /// <summary>Connects, creates the tables when missing and the group's row when new.</summary>
    public static async Task<PostgresKvStore> OpenAsync(string connectionString, long groupId,
        PostgresKvStoreOptions? options = null, ILogger? logger = null, CancellationToken cancellationToken = default)
    {
        options ??= new PostgresKvStoreOptions();
        options.Validate();
        NpgsqlConnectionStringBuilder csb;
        try
        {
            csb = new NpgsqlConnectionStringBuilder(connectionString);
        }
        catch (Exception e) when (e is ArgumentException or FormatException or InvalidCastException)
        {
            throw new KvStoreException($"the PostgreSQL connection string is invalid: {e.Message}", e);
        }
        // Every apply and every read runs the same few statements: prepared once per connection,
        // they skip parsing and planning in the server.
        if (csb.MaxAutoPrepare == 0) csb.MaxAutoPrepare = 32;
        // These connections never change session state (no SET, temporary tables, LISTEN or session
        // locks; the migration's advisory lock is a transaction's), so the reset Npgsql otherwise
        // sends in front of the first statement on a reused pooled connection is work for nothing.
        csb.NoResetOnClose = true;
        // An acknowledged write must survive a crash of the database server too.
        var baseOptions = csb.Options is { Length: > 0 } o ? o + " " : "";
        csb.Options = baseOptions + "-c synchronous_commit=on";
        var dataSource = NpgsqlDataSource.Create(csb);
        csb.Options = baseOptions + (options.AsynchronousApplyCommit ? "-c synchronous_commit=off" : "-c synchronous_commit=on");
        csb.ApplicationName = (csb.ApplicationName is { Length: > 0 } app ? app + " " : "") + "apply";
        var applySource = NpgsqlDataSource.Create(csb);
        var store = new PostgresKvStore(dataSource, applySource, groupId, options, logger ?? NullLogger.Instance);
        try
        {
            await store.MigrateAsync(cancellationToken).ConfigureAwait(false);
            return store;
        }
        catch
        {
            await store.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    private async Task MigrateAsync(CancellationToken ct)
    {
        await using var conn = await _dataSource.OpenConnectionAsync(ct).ConfigureAwait(false);
        await using var tx = await conn.BeginTransactionAsync(ct).ConfigureAwait(false);
        // Processes opening the same database together create the tables once.
        await ExecAsync(conn, tx, "SELECT pg_advisory_xact_lock(hashtext('raftv.kv.schema'))", ct).ConfigureAwait(false);
        await ExecAsync(conn, tx, $"""
            CREATE SCHEMA IF NOT EXISTS {_q};
            CREATE TABLE IF NOT EXISTS {_q}.kv_schema (version int NOT NULL);
            """, ct).ConfigureAwait(false);
        int? version;
        await using (var cmd = new NpgsqlCommand($"SELECT max(version) FROM {_q}.kv_schema", conn, tx))
            version = await cmd.ExecuteScalarAsync(ct).ConfigureAwait(false) is int v ? v : null;
        if (version > SchemaVersion)
            throw new KvStoreException($"the key-value schema {_options.Schema} is at version {version}, newer than this raftv ({SchemaVersion}); upgrade raftv");
        if (version is null)
        {
            await ExecAsync(conn, tx, $"""
                CREATE TABLE {_q}.kv_groups (
                    group_id         bigint PRIMARY KEY,
                    revision         bigint NOT NULL DEFAULT 1,
                    compact_revision bigint NOT NULL DEFAULT 0,
                    applied_index    bigint NOT NULL DEFAULT 0,
                    applied_term     bigint NOT NULL DEFAULT 0
                );
                CREATE TABLE {_q}.kv_keys (
                    group_id        bigint NOT NULL,
                    key             bytea  NOT NULL,
                    create_revision bigint NOT NULL,
                    mod_revision    bigint NOT NULL,
                    version         bigint NOT NULL,
                    value           bytea  NOT NULL,
                    PRIMARY KEY (group_id, key)
                );
                CREATE TABLE {_q}.kv_applied_requests (
                    group_id            bigint NOT NULL,
                    request_id          bytea  NOT NULL,
                    proposed_at_unix_ms bigint NOT NULL,
                    applied_index       bigint NOT NULL,
                    result              bytea  NOT NULL,
                    PRIMARY KEY (group_id, request_id)
                );
                CREATE INDEX kv_applied_requests_age ON {_q}.kv_applied_requests (group_id, proposed_at_unix_ms);
                INSERT INTO {_q}.kv_schema (version) VALUES (1);
                """, ct).ConfigureAwait(false);
            version = 1;
        }
        if (version < 2)
        {
            // Schema 2: every version of every key since the compaction point (a deletion is a
            // version 0 record, etcd's tombstone), for reads at past revisions. The newest version of
            // a live key is always there, so history alone answers any revision it covers. Stores of
            // schema 1 kept only the newest values: their history starts at their revision.
            await ExecAsync(conn, tx, $"""
                CREATE TABLE {_q}.kv_history (
                    group_id        bigint NOT NULL,
                    key             bytea  NOT NULL,
                    mod_revision    bigint NOT NULL,
                    create_revision bigint NOT NULL,
                    version         bigint NOT NULL,
                    value           bytea  NOT NULL,
                    PRIMARY KEY (group_id, key, mod_revision)
                );
                ALTER TABLE {_q}.kv_groups ADD COLUMN history_from bigint NOT NULL DEFAULT 0;
                INSERT INTO {_q}.kv_history (group_id, key, mod_revision, create_revision, version, value)
                  SELECT group_id, key, mod_revision, create_revision, version, value FROM {_q}.kv_keys;
                UPDATE {_q}.kv_groups SET history_from = revision;
                INSERT INTO {_q}.kv_schema (version) VALUES (2);
                """, ct).ConfigureAwait(false);
        }
        // The cluster's members as configuration changes left them (raft's ConfState says who votes).
        await ExecAsync(conn, tx, $"""
            CREATE TABLE IF NOT EXISTS {_q}.kv_members (
                group_id    bigint NOT NULL,
                id          bigint NOT NULL,
                name        text   NOT NULL,
                peer_urls   text[] NOT NULL,
                client_urls text[] NOT NULL,
                PRIMARY KEY (group_id, id)
            );
            CREATE TABLE IF NOT EXISTS {_q}.kv_removed_members (
                group_id bigint NOT NULL,
                id       bigint NOT NULL,
                PRIMARY KEY (group_id, id)
            );
            """, ct).ConfigureAwait(false);
        await using (var cmd = new NpgsqlCommand($"INSERT INTO {_q}.kv_groups (group_id) VALUES ($1) ON CONFLICT DO NOTHING", conn, tx))
        {
            cmd.Parameters.Add(new() { Value = GroupId });
            await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
        }
        await tx.CommitAsync(ct).ConfigureAwait(false);
    }

    public async Task<KvStoreState> ReadStateAsync(CancellationToken cancellationToken = default)
    {
        await using var conn = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        return await ReadStateAsync(conn, null, forUpdate: false, cancellationToken).ConfigureAwait(false);
    }

    private async Task<KvStoreState> ReadStateAsync(NpgsqlConnection conn, NpgsqlTransaction? tx, bool forUpdate, CancellationToken ct)
    {
        await using var batch = new NpgsqlBatch(conn, tx) { BatchCommands = { StateQuery(forUpdate) } };
        await using var r = await batch.ExecuteReaderAsync(ct).ConfigureAwait(false);
        return await ReadStateAsync(r, ct).ConfigureAwait(false);
    }

    /// <summary>The group's row (<see cref="ReadStateAsync(NpgsqlDataReader, CancellationToken)"/> reads its result).</summary>
    private NpgsqlBatchCommand StateQuery(bool forUpdate)
    {
        var cmd = new NpgsqlBatchCommand(
            $"SELECT revision, compact_revision, applied_index, applied_term, history_from FROM {_q}.kv_groups WHERE group_id = $1{(forUpdate ? " FOR UPDATE" : "")}");
        cmd.Parameters.Add(new() { Value = GroupId });
        return cmd;
    }

    /// <summary>The state from the current result of <paramref name="r"/>, the result of a <see cref="StateQuery"/>.</summary>
    private async Task<KvStoreState> ReadStateAsync(NpgsqlDataReader r, CancellationToken ct)
    {
        if (!await r.ReadAsync(ct).ConfigureAwait(false))
            throw new KvStoreException($"key-value group {GroupId} has no row in {_options.Schema}.kv_groups");
        return new KvStoreState(r.GetInt64(0), r.GetInt64(1), (ulong)r.GetInt64(2), (ulong)r.GetInt64(3), r.GetInt64(4));
    }

    // ---- applying committed entries -----------------------------------------------------

    /// <summary>
    /// Applies committed entries in one PostgreSQL transaction, together with the new applied index.
    /// Entries at or below the applied index are skipped (a replay after a restart); the first new
    /// entry must directly follow it, or nothing is applied and <see cref="KvStoreException"/> is thrown.
    /// </summary>
    public Task<IReadOnlyList<AppliedEntry>> ApplyAsync(IReadOnlyList<Entry> entries, CancellationToken cancellationToken = default) =>
        ApplyAsync(entries, beforeCommit: null, cancellationToken);

    /// <summary>synchronous_commit as apply transactions run with it.</summary>
    internal async Task<string> ApplyCommitSettingAsync(CancellationToken ct = default)
    {
        await using var conn = await _applySource.OpenConnectionAsync(ct).ConfigureAwait(false);
        await using var cmd = new NpgsqlCommand("SHOW synchronous_commit", conn);
        return (string)(await cmd.ExecuteScalarAsync(ct).ConfigureAwait(false))!;
    }

    /// <summary><paramref name="beforeCommit"/> runs inside the transaction just before it commits; tests throw from it to simulate a crash.</summary>
    internal async Task<IReadOnlyList<AppliedEntry>> ApplyAsync(IReadOnlyList<Entry> entries,
        Func<CancellationToken, Task>? beforeCommit, CancellationToken ct)
    {
        if (entries.Count == 0) return [];
        await using var conn = await _applySource.OpenConnectionAsync(ct).ConfigureAwait(false);
        // The transaction is begun by the first batch and committed by the last, with no round trip
        // of their own (an NpgsqlTransaction would send BEGIN with the first command, but COMMIT
        // alone): an apply is two round trips. Whatever ends it early (nothing new to apply, an
        // error) leaves it open, and Npgsql rolls it back when the connection goes back to its pool,
        // as it does for the range reads' batches.
        //
        // Decode first, so the group's row, the keys and the request ids of the whole batch are read
        // in one round trip, the commands applied in memory in log order, and the result written in
        // one more: the number of statements no longer grows with the number of entries. Which
        // entries are new is known only after that read, so every entry offered is decoded (those
        // at or below the applied index, a replay, only cost a parse and a few extra rows).
        var decoded = entries.Select(Decode).ToList();
        var (state, working, known) = await LockAndPrefetchAsync(conn,
            decoded.Where(d => d.Command is not null).Select(d => d.Command!).ToList(), ct).ConfigureAwait(false);
        var applied = new List<AppliedEntry>(entries.Count);
        var appliedIndex = state.AppliedIndex;
        var appliedTerm = state.AppliedTerm;
        long newestProposal = 0;

        var fresh = new List<DecodedEntry>(entries.Count);
        foreach (var d in decoded)
        {
            var entry = d.Entry;
            if (entry.Index <= appliedIndex) continue;
            if (entry.Index != appliedIndex + 1)
            {
                if (fresh.Count == 0) throw new KvApplyGapException(GroupId, appliedIndex, entry.Index);
                throw new KvStoreException($"key-value group {GroupId}: entry {entry.Index} does not follow entry {appliedIndex} in one batch");
            }
            if (d.Malformed is not null)
                _logger.LogError("entry {Index} of group {GroupId} is not a key-value command: {Error}", entry.Index, GroupId, d.Malformed);
            fresh.Add(d);
            appliedIndex = entry.Index;
            appliedTerm = entry.Term;
        }
        if (fresh.Count == 0) return applied;

        var writes = new KvChanges(state.Revision, state.CompactRevision);
        var history = new List<KeyValue>();
        var requests = new Dictionary<ByteString, (long ProposedAt, ulong Index, KvResult Result)>();
        foreach (var (entry, command, done, _) in fresh)
        {
            if (done is not null)
            {
                if (!entry.Type.IsEntryNormal && Raft.Host.ConfChanges.TryGetConfChange(entry, out var confChange))
                    await ApplyMemberChangeAsync(conn, confChange, ct).ConfigureAwait(false);
                applied.Add(done);
                continue;
            }
            var c = command!;
            newestProposal = Math.Max(newestProposal, c.ProposedAtUnixMs);
            var window = c.ProposedAtUnixMs - (long)_options.RequestIdRetention.TotalMilliseconds;
            if (!c.RequestId.IsEmpty && known.TryGetValue(c.RequestId, out var previous) && previous.ProposedAt >= window)
            {
                applied.Add(new AppliedEntry(entry.Index, entry.Term, c, previous.Result, true));
                continue;
            }
            var (changes, result) = KvApplier.Apply(working, c, _options.MaxTxnOps);
            working.Apply(changes);
            foreach (var (key, kv) in changes.Writes)
            {
                if (kv is null) writes.Delete(key);
                else writes.Put(kv);
                history.Add(kv ?? new KeyValue { Key = ByteString.CopyFrom(key), ModRevision = changes.Revision });
            }
            if (!c.RequestId.IsEmpty)
            {
                known[c.RequestId] = (c.ProposedAtUnixMs, result);
                requests[c.RequestId] = (c.ProposedAtUnixMs, entry.Index, result);
            }
            applied.Add(new AppliedEntry(entry.Index, entry.Term, c, result, false));
        }
        // The new applied index and the purge of old request ids go in the same round trip as the writes.
        var then = new List<NpgsqlBatchCommand>();
        var advance = new NpgsqlBatchCommand(
            $"UPDATE {_q}.kv_groups SET revision = $2, compact_revision = $3, applied_index = $4, applied_term = $5 WHERE group_id = $1");
        advance.Parameters.Add(new() { Value = GroupId });
        advance.Parameters.Add(new() { Value = working.Revision });
        advance.Parameters.Add(new() { Value = working.CompactRevision });
        advance.Parameters.Add(new() { Value = (long)appliedIndex });
        advance.Parameters.Add(new() { Value = (long)appliedTerm });
        then.Add(advance);
        if (requests.Count > 0)
        {
            // Forget request ids older than the retention, on the log's clock. Lookups apply the same
            // window to each command, so when this runs does not change any decision: it only frees
            // space, and the table grows only in batches that record a request, so a batch that
            // records none (writes whose clients gave no id: their entries carry only the proposer's
            // waiter id) skips it.
            var purge = new NpgsqlBatchCommand($"DELETE FROM {_q}.kv_applied_requests WHERE group_id = $1 AND proposed_at_unix_ms < $2");
            purge.Parameters.Add(new() { Value = GroupId });
            purge.Parameters.Add(new() { Value = newestProposal - (long)_options.RequestIdRetention.TotalMilliseconds });
            then.Add(purge);
        }
        if (beforeCommit is null) then.Add(new NpgsqlBatchCommand("COMMIT"));
        await WriteBatchAsync(conn, writes, history, requests, then, ct).ConfigureAwait(false);
        if (beforeCommit is not null)
        {
            await beforeCommit(ct).ConfigureAwait(false);
            await using var commit = new NpgsqlCommand("COMMIT", conn);
            await commit.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
        }
        if (working.CompactRevision > state.CompactRevision) SchedulePurge(working.CompactRevision);
        return applied;
    }

    private readonly object _purgeGate = new();
    private Task _purging = Task.CompletedTask;
    private readonly CancellationTokenSource _disposing = new();

    /// <summary>
    /// Purges in the background, one after the other: applies (the raft loop) do not wait for a large
    /// delete, and nothing depends on when it finishes (see <see cref="PurgeHistoryAsync"/>).
    /// </summary>
    private void SchedulePurge(long compactRevision)
    {
        lock (_purgeGate)
            _purging = _purging.ContinueWith(_ => PurgeHistoryAsync(compactRevision, _disposing.Token), CancellationToken.None,
                TaskContinuationOptions.None, TaskScheduler.Default).Unwrap();
    }

    /// <summary>Completes when the purges scheduled so far have run (tests wait for it).</summary>
    internal Task PurgesDone
    {
        get { lock (_purgeGate) return _purging; }
    }

    /// <summary>
    /// Drops the versions no read can see any more: those at or before <paramref name="compactRevision"/>
    /// with a newer version at or before it, and deletions at or before it. Reads below the compaction
    /// point are refused whatever is left, so when this runs (or whether it finished before a crash)
    /// changes no answer; the next compaction takes what is left.
    /// </summary>
    private async Task PurgeHistoryAsync(long compactRevision, CancellationToken ct)
    {
        try
        {
            await using var conn = await _dataSource.OpenConnectionAsync(ct).ConfigureAwait(false);
            await using var cmd = new NpgsqlCommand(
                $"""
                 DELETE FROM {_q}.kv_history h WHERE h.group_id = $1 AND h.mod_revision <= $2
                   AND (h.version = 0 OR EXISTS (SELECT 1 FROM {_q}.kv_history n
                        WHERE n.group_id = $1 AND n.key = h.key AND n.mod_revision > h.mod_revision AND n.mod_revision <= $2))
                 """, conn);
            cmd.Parameters.Add(new() { Value = GroupId });
            cmd.Parameters.Add(new() { Value = compactRevision });
            var purged = await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
            _logger.LogDebug("compacted the history of group {GroupId} to revision {Revision}: {Rows} versions dropped", GroupId, compactRevision, purged);
        }
        catch (Exception e) when (e is NpgsqlException or OperationCanceledException or ObjectDisposedException)
        {
            _logger.LogWarning("compacting the history of group {GroupId} to revision {Revision} failed (the next compaction retries): {Error}",
                GroupId, compactRevision, e.Message);
        }
    }

    /// <summary>
    /// A log entry read: its command, or the finished outcome of an entry that carries none (or a
    /// malformed one, with the parser's complaint, logged when the entry is applied).
    /// </summary>
    private sealed record DecodedEntry(Entry Entry, KvCommand? Command, AppliedEntry? Done, string? Malformed);

    /// <summary>The state row, locked, and what <see cref="LockAndPrefetchAsync"/> loaded for the batch's commands.</summary>
    private sealed record ApplyStart(KvStoreState State, MemoryKvState Working, Dictionary<ByteString, (long ProposedAt, KvResult Result)> Known);

    private static DecodedEntry Decode(Entry entry)
    {
        if (!entry.Type.IsEntryNormal || entry.Data.Length == 0)
            return new(entry, null, new AppliedEntry(entry.Index, entry.Term, null, null, false), null);
        try
        {
            return new(entry, KvCommand.Parser.ParseFrom(entry.Data), null, null);
        }
        catch (InvalidProtocolBufferException e)
        {
            // Every replica reads the same bytes, so every replica answers the same error.
            return new(entry, null, new AppliedEntry(entry.Index, entry.Term, null,
                new KvResult { Error = new KvError { Code = (int)Transport.Grpc.Wire.StatusCode.Internal, Message = "raftv: malformed key-value command in the log" } },
                false), e.Message);
        }
    }

    /// <summary>
    /// One round trip: locks the group's row and reads the state, loads every key the commands may
    /// read into a working state, and returns the remembered results of their request ids (the
    /// retention window is checked per command).
    /// </summary>
    /// <remarks>
    /// The row lock makes appliers of one group take turns, even from two processes, and it is the
    /// batch's first statement, so the reads after it see everything the previous holder committed:
    /// under READ COMMITTED each statement takes a new snapshot when it starts, and PostgreSQL runs
    /// a batch's statements one after the other, so the reads' snapshots are taken after the lock is
    /// granted. The previous holder's commit is visible to them: PostgreSQL shows a transaction as
    /// committed to new snapshots before it releases its locks.
    /// </remarks>
    private async Task<ApplyStart> LockAndPrefetchAsync(NpgsqlConnection conn,
        IReadOnlyList<KvCommand> commands, CancellationToken ct)
    {
        var known = new Dictionary<ByteString, (long, KvResult)>();
        var singleKeys = new HashSet<byte[]>(KeyComparer.Instance);
        var ranges = new List<KeyRange>();
        foreach (var c in commands)
            foreach (var range in KvApplier.KeysTouched(c))
            {
                if (range.IsEmpty) continue;
                if (range.IsSingleKey) singleKeys.Add(range.Start);
                else ranges.Add(range);
            }
        // Only a client's request ids are remembered (a waiter id never is), so only those are looked up.
        var ids = commands.Where(c => !c.RequestId.IsEmpty).Select(c => c.RequestId.ToByteArray()).ToArray();
        var pastReads = commands.SelectMany(KvApplier.PastReads).Where(p => !p.Range.IsEmpty).Distinct().ToList();

        // BEGIN returns no result set: the reader starts on the state's.
        await using var batch = new NpgsqlBatch(conn) { BatchCommands = { new NpgsqlBatchCommand("BEGIN ISOLATION LEVEL READ COMMITTED"), StateQuery(forUpdate: true) } };
        const string columns = "key, create_revision, mod_revision, version, value";
        if (singleKeys.Count > 0)
        {
            var cmd = new NpgsqlBatchCommand($"SELECT {columns} FROM {_q}.kv_keys WHERE group_id = $1 AND key = ANY($2)");
            cmd.Parameters.Add(new() { Value = GroupId });
            cmd.Parameters.Add(new() { Value = singleKeys.ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bytea });
            batch.BatchCommands.Add(cmd);
        }
        foreach (var range in ranges)
        {
            var cmd = new NpgsqlBatchCommand(
                $"SELECT {columns} FROM {_q}.kv_keys WHERE group_id = $1 AND {(range.IsUnbounded ? "key >= $2" : "key >= $2 AND key < $3")}");
            cmd.Parameters.Add(new() { Value = GroupId });
            cmd.Parameters.Add(new() { Value = range.Start, NpgsqlDbType = NpgsqlDbType.Bytea });
            if (!range.IsUnbounded) cmd.Parameters.Add(new() { Value = range.End!, NpgsqlDbType = NpgsqlDbType.Bytea });
            batch.BatchCommands.Add(cmd);
        }
        var keyQueries = batch.BatchCommands.Count;
        foreach (var (range, revision) in pastReads) batch.BatchCommands.Add(VersionsAt(range, revision));
        var versionQueries = batch.BatchCommands.Count;
        if (ids.Length > 0)
        {
            var cmd = new NpgsqlBatchCommand(
                $"SELECT request_id, proposed_at_unix_ms, result FROM {_q}.kv_applied_requests WHERE group_id = $1 AND request_id = ANY($2)");
            cmd.Parameters.Add(new() { Value = GroupId });
            cmd.Parameters.Add(new() { Value = ids, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bytea });
            batch.BatchCommands.Add(cmd);
        }

        await using var r = await batch.ExecuteReaderAsync(ct).ConfigureAwait(false);
        var state = await ReadStateAsync(r, ct).ConfigureAwait(false);
        var working = new MemoryKvState(state.Revision, state.CompactRevision, state.HistoryFrom);
        for (var i = 2; i < batch.BatchCommands.Count; i++)
        {
            await r.NextResultAsync(ct).ConfigureAwait(false);
            while (await r.ReadAsync(ct).ConfigureAwait(false))
            {
                if (i < keyQueries) working.Load(ReadKeyValue(r));
                else if (i < versionQueries) working.LoadVersion(ReadKeyValue(r));
                else known[ByteString.CopyFrom(r.GetFieldValue<byte[]>(0))] = (r.GetInt64(1), KvResult.Parser.ParseFrom(r.GetFieldValue<byte[]>(2)));
            }
        }
        return new ApplyStart(state, working, known);
    }

    /// <summary>Each key's newest version (a deletion included) at or before <paramref name="revision"/> in <paramref name="range"/>.</summary>
    private NpgsqlBatchCommand VersionsAt(KeyRange range, long revision)
    {
        var where = range.IsSingleKey ? "key = $2" : range.IsUnbounded ? "key >= $2" : "key >= $2 AND key < $3";
        var cmd = new NpgsqlBatchCommand(
            $"""
             SELECT DISTINCT ON (key) key, create_revision, mod_revision, version, value FROM {_q}.kv_history
             WHERE group_id = $1 AND {where} AND mod_revision <= ${(range.IsSingleKey || range.IsUnbounded ? 3 : 4)}
             ORDER BY key, mod_revision DESC
             """);
        cmd.Parameters.Add(new() { Value = GroupId });
        cmd.Parameters.Add(new() { Value = range.Start, NpgsqlDbType = NpgsqlDbType.Bytea });
        if (!range.IsSingleKey && !range.IsUnbounded) cmd.Parameters.Add(new() { Value = range.End!, NpgsqlDbType = NpgsqlDbType.Bytea });
        cmd.Parameters.Add(new() { Value = revision });
        return cmd;
    }

    /// <summary>One round trip: the batch's final key writes, every version it wrote, and the results of its request ids.</summary>
    private async Task WriteBatchAsync(NpgsqlConnection conn, KvChanges writes, List<KeyValue> history,
        Dictionary<ByteString, (long ProposedAt, ulong Index, KvResult Result)> requests, IEnumerable<NpgsqlBatchCommand> then, CancellationToken ct)
    {
        await using var batch = new NpgsqlBatch(conn);
        if (history.Count > 0)
        {
            // A replay after a PostgreSQL crash writes the same versions again: they are already there or identical.
            var cmd = new NpgsqlBatchCommand(
                $"""
                 INSERT INTO {_q}.kv_history (group_id, key, mod_revision, create_revision, version, value)
                 SELECT $1, * FROM unnest($2::bytea[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bytea[])
                 ON CONFLICT (group_id, key, mod_revision) DO NOTHING
                 """);
            cmd.Parameters.Add(new() { Value = GroupId });
            cmd.Parameters.Add(new() { Value = history.Select(p => p.Key.ToByteArray()).ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bytea });
            cmd.Parameters.Add(new() { Value = history.Select(p => p.ModRevision).ToArray() });
            cmd.Parameters.Add(new() { Value = history.Select(p => p.CreateRevision).ToArray() });
            cmd.Parameters.Add(new() { Value = history.Select(p => p.Version).ToArray() });
            cmd.Parameters.Add(new() { Value = history.Select(p => p.Value.ToByteArray()).ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bytea });
            batch.BatchCommands.Add(cmd);
        }
        var puts = writes.Writes.Where(w => w.Value is not null).Select(w => w.Value!).ToList();
        var deletes = writes.Writes.Where(w => w.Value is null).Select(w => w.Key).ToArray();
        if (deletes.Length > 0)
        {
            var cmd = new NpgsqlBatchCommand($"DELETE FROM {_q}.kv_keys WHERE group_id = $1 AND key = ANY($2)");
            cmd.Parameters.Add(new() { Value = GroupId });
            cmd.Parameters.Add(new() { Value = deletes, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bytea });
            batch.BatchCommands.Add(cmd);
        }
        if (puts.Count > 0)
        {
            var cmd = new NpgsqlBatchCommand(
                $"""
                 INSERT INTO {_q}.kv_keys (group_id, key, create_revision, mod_revision, version, value)
                 SELECT $1, * FROM unnest($2::bytea[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bytea[])
                 ON CONFLICT (group_id, key) DO UPDATE SET create_revision = EXCLUDED.create_revision,
                   mod_revision = EXCLUDED.mod_revision, version = EXCLUDED.version, value = EXCLUDED.value
                 """);
            cmd.Parameters.Add(new() { Value = GroupId });
            cmd.Parameters.Add(new() { Value = puts.Select(p => p.Key.ToByteArray()).ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bytea });
            cmd.Parameters.Add(new() { Value = puts.Select(p => p.CreateRevision).ToArray() });
            cmd.Parameters.Add(new() { Value = puts.Select(p => p.ModRevision).ToArray() });
            cmd.Parameters.Add(new() { Value = puts.Select(p => p.Version).ToArray() });
            cmd.Parameters.Add(new() { Value = puts.Select(p => p.Value.ToByteArray()).ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bytea });
            batch.BatchCommands.Add(cmd);
        }
        if (requests.Count > 0)
        {
            var cmd = new NpgsqlBatchCommand(
                $"""
                 INSERT INTO {_q}.kv_applied_requests (group_id, request_id, proposed_at_unix_ms, applied_index, result)
                 SELECT $1, * FROM unnest($2::bytea[], $3::bigint[], $4::bigint[], $5::bytea[])
                 ON CONFLICT (group_id, request_id) DO UPDATE
                   SET proposed_at_unix_ms = EXCLUDED.proposed_at_unix_ms, applied_index = EXCLUDED.applied_index, result = EXCLUDED.result
                 """);
            cmd.Parameters.Add(new() { Value = GroupId });
            cmd.Parameters.Add(new() { Value = requests.Keys.Select(k => k.ToByteArray()).ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bytea });
            cmd.Parameters.Add(new() { Value = requests.Values.Select(v => v.ProposedAt).ToArray() });
            cmd.Parameters.Add(new() { Value = requests.Values.Select(v => (long)v.Index).ToArray() });
            cmd.Parameters.Add(new() { Value = requests.Values.Select(v => v.Result.ToByteArray()).ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bytea });
            batch.BatchCommands.Add(cmd);
        }
        foreach (var cmd in then) batch.BatchCommands.Add(cmd);
        if (batch.BatchCommands.Count > 0) await batch.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
    }

    // ---- members -----------------------------------------------------------------------------

    /// <summary>
    /// Applies a configuration change to the member table: its context, when not empty, is an
    /// etcdserverpb.Member whose non-empty fields are the member's new attributes (MemberAdd puts
    /// the peer URLs there, a starting member its name and client URLs, MemberUpdate new peer URLs);
    /// a removal deletes the member and remembers its id for good, as etcd's membership store does
    /// (its messages are then refused as a removed member's, which tells it to stop). Every replica
    /// applies the same entry, so all agree on addresses.
    /// </summary>
    private async Task ApplyMemberChangeAsync(NpgsqlConnection conn, Raft.Spec.ConfChangeI confChange, CancellationToken ct)
    {
        var (changes, context) = confChange switch
        {
            Raft.Spec.ConfChangeI.ConfChangeV1 v1 => (new[] { (v1.Item.Type, v1.Item.NodeId) }, v1.Item.Context),
            Raft.Spec.ConfChangeI.ConfChangeV2Change v2 => (v2.Item.Changes.Select(c => (c.Type, c.NodeId)).ToArray(), v2.Item.Context),
            _ => throw new KvStoreException($"unknown configuration change {confChange}"),
        };
        Member? attributes = null;
        if (context is { Length: > 0 })
        {
            try
            {
                attributes = Member.Parser.ParseFrom(context);
            }
            catch (InvalidProtocolBufferException e)
            {
                // Conf changes proposed by other tools may carry other contexts: membership still changes, attributes do not.
                _logger.LogWarning("configuration change context is not a member record ({Error}); member attributes unchanged", e.Message);
            }
        }
        foreach (var (type, nodeId) in changes)
        {
            if (type.IsConfChangeRemoveNode)
            {
                await using var del = new NpgsqlCommand(
                    $"""
                     WITH gone AS (DELETE FROM {_q}.kv_members WHERE group_id = $1 AND id = $2)
                     INSERT INTO {_q}.kv_removed_members (group_id, id) VALUES ($1, $2) ON CONFLICT DO NOTHING
                     """, conn);
                del.Parameters.Add(new() { Value = GroupId });
                del.Parameters.Add(new() { Value = (long)nodeId });
                await del.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
                continue;
            }
            var a = attributes is not null && attributes.ID == nodeId ? attributes : null;
            await using var cmd = new NpgsqlCommand(
                $"""
                 INSERT INTO {_q}.kv_members (group_id, id, name, peer_urls, client_urls) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (group_id, id) DO UPDATE SET
                   name = CASE WHEN EXCLUDED.name = '' THEN {_q}.kv_members.name ELSE EXCLUDED.name END,
                   peer_urls = CASE WHEN cardinality(EXCLUDED.peer_urls) = 0 THEN {_q}.kv_members.peer_urls ELSE EXCLUDED.peer_urls END,
                   client_urls = CASE WHEN cardinality(EXCLUDED.client_urls) = 0 THEN {_q}.kv_members.client_urls ELSE EXCLUDED.client_urls END
                 """, conn);
            cmd.Parameters.Add(new() { Value = GroupId });
            cmd.Parameters.Add(new() { Value = (long)nodeId });
            cmd.Parameters.Add(new() { Value = a?.Name ?? "" });
            cmd.Parameters.Add(new() { Value = a?.PeerURLs.ToArray() ?? [], NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
            cmd.Parameters.Add(new() { Value = a?.ClientURLs.ToArray() ?? [], NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
            await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
        }
    }

    /// <summary>The member table (is_learner is left false: raft's ConfState says who learns).</summary>
    public async Task<IReadOnlyList<Member>> ReadMembersAsync(CancellationToken cancellationToken = default)
    {
        await using var conn = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        return await ReadMembersAsync(conn, null, cancellationToken).ConfigureAwait(false);
    }

    private async Task<IReadOnlyList<Member>> ReadMembersAsync(NpgsqlConnection conn, NpgsqlTransaction? tx, CancellationToken ct)
    {
        await using var cmd = new NpgsqlCommand(
            $"SELECT id, name, peer_urls, client_urls FROM {_q}.kv_members WHERE group_id = $1 ORDER BY id", conn, tx);
        cmd.Parameters.Add(new() { Value = GroupId });
        await using var r = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
        var list = new List<Member>();
        while (await r.ReadAsync(ct).ConfigureAwait(false))
            list.Add(new Member
            {
                ID = (ulong)r.GetInt64(0),
                Name = r.GetString(1),
                PeerURLs = { r.GetFieldValue<string[]>(2) },
                ClientURLs = { r.GetFieldValue<string[]>(3) },
            });
        return list;
    }

    /// <summary>
    /// The member table and the removed ids together, as one applied state left them: one
    /// connection and one snapshot of the database, so an apply between two reads cannot show
    /// a member both present and removed (or neither).
    /// </summary>
    public async Task<(IReadOnlyList<Member> Members, IReadOnlySet<ulong> Removed)> ReadMembershipAsync(CancellationToken cancellationToken = default)
    {
        await using var conn = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var tx = await conn.BeginTransactionAsync(IsolationLevel.RepeatableRead, cancellationToken).ConfigureAwait(false);
        var members = await ReadMembersAsync(conn, tx, cancellationToken).ConfigureAwait(false);
        var removed = await ReadRemovedMemberIdsAsync(conn, tx, cancellationToken).ConfigureAwait(false);
        await tx.CommitAsync(cancellationToken).ConfigureAwait(false);
        return (members, removed);
    }

    /// <summary>The ids of the members removed from the cluster (by applied configuration changes or the snapshot installed).</summary>
    public async Task<IReadOnlySet<ulong>> ReadRemovedMemberIdsAsync(CancellationToken cancellationToken = default)
    {
        await using var conn = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        return await ReadRemovedMemberIdsAsync(conn, null, cancellationToken).ConfigureAwait(false);
    }

    private async Task<IReadOnlySet<ulong>> ReadRemovedMemberIdsAsync(NpgsqlConnection conn, NpgsqlTransaction? tx, CancellationToken ct)
    {
        await using var cmd = new NpgsqlCommand($"SELECT id FROM {_q}.kv_removed_members WHERE group_id = $1 ORDER BY id", conn, tx);
        cmd.Parameters.Add(new() { Value = GroupId });
        await using var r = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
        var ids = new SortedSet<ulong>();
        while (await r.ReadAsync(ct).ConfigureAwait(false)) ids.Add((ulong)r.GetInt64(0));
        return ids;
    }

    /// <summary>
    /// Writes the members a new store starts from (the --member list, as etcd's --initial-cluster),
    /// only while nothing has been applied: afterwards the log and snapshots own the member table.
    /// </summary>
    public async Task SeedMembersAsync(IEnumerable<Member> members, CancellationToken cancellationToken = default)
    {
        await using var conn = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var tx = await conn.BeginTransactionAsync(IsolationLevel.ReadCommitted, cancellationToken).ConfigureAwait(false);
        var state = await ReadStateAsync(conn, tx, forUpdate: true, cancellationToken).ConfigureAwait(false);
        if (state.AppliedIndex != 0) return;
        foreach (var m in members)
        {
            await using var cmd = new NpgsqlCommand(
                $"INSERT INTO {_q}.kv_members (group_id, id, name, peer_urls, client_urls) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING", conn, tx);
            cmd.Parameters.Add(new() { Value = GroupId });
            cmd.Parameters.Add(new() { Value = (long)m.ID });
            cmd.Parameters.Add(new() { Value = m.Name });
            cmd.Parameters.Add(new() { Value = m.PeerURLs.ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
            cmd.Parameters.Add(new() { Value = m.ClientURLs.ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
            await cmd.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }
        await tx.CommitAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Bytes the database holds (etcd's dbSize) and bytes this group's key-value tables take (dbSizeInUse).</summary>
    public async Task<(long Database, long InUse)> SizeAsync(CancellationToken cancellationToken = default)
    {
        await using var conn = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var cmd = new NpgsqlCommand(
            $"""
             SELECT pg_database_size(current_database()),
                    pg_total_relation_size('{_q}.kv_keys') + pg_total_relation_size('{_q}.kv_applied_requests')
                    + pg_total_relation_size('{_q}.kv_members') + pg_total_relation_size('{_q}.kv_removed_members') + pg_total_relation_size('{_q}.kv_groups')
                    + pg_total_relation_size('{_q}.kv_history')
             """, conn);
        await using var r = await cmd.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await r.ReadAsync(cancellationToken).ConfigureAwait(false);
        return (r.GetInt64(0), r.GetInt64(1));
    }

    /// <summary>The current rows of <paramref name="range"/> (not empty), in key order.</summary>
    private NpgsqlBatchCommand CurrentRows(KeyRange range)
    {
        var where = range.IsSingleKey ? "key = $2" : range.IsUnbounded ? "key >= $2" : "key >= $2 AND key < $3";
        var cmd = new NpgsqlBatchCommand($"SELECT key, create_revision, mod_revision, version, value FROM {_q}.kv_keys WHERE group_id = $1 AND {where} ORDER BY key");
        cmd.Parameters.Add(new() { Value = GroupId });
        cmd.Parameters.Add(new() { Value = range.Start, NpgsqlDbType = NpgsqlDbType.Bytea });
        if (!range.IsSingleKey && !range.IsUnbounded) cmd.Parameters.Add(new() { Value = range.End!, NpgsqlDbType = NpgsqlDbType.Bytea });
        return cmd;
    }

    private static KeyValue ReadKeyValue(NpgsqlDataReader r) => new()
    {
        Key = ByteString.CopyFrom(r.GetFieldValue<byte[]>(0)),
        CreateRevision = r.GetInt64(1),
        ModRevision = r.GetInt64(2),
        Version = r.GetInt64(3),
        Value = ByteString.CopyFrom(r.GetFieldValue<byte[]>(4)),
    };

    // ---- request ids ----------------------------------------------------------------------

    /// <summary>
    /// The result of an applied request with this id, if it is within the retention measured back
    /// from <paramref name="nowUnixMs"/>: a server answers a retry from here without proposing it.
    /// </summary>
    public async Task<KvResult?> FindAppliedRequestAsync(ByteString requestId, long nowUnixMs, CancellationToken cancellationToken = default)
    {
        await using var conn = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        return await FindAppliedRequestAsync(conn, null, requestId, nowUnixMs, cancellationToken).ConfigureAwait(false);
    }

    private async Task<KvResult?> FindAppliedRequestAsync(NpgsqlConnection conn, NpgsqlTransaction? tx, ByteString requestId, long nowUnixMs, CancellationToken ct)
    {
        await using var cmd = new NpgsqlCommand(
            $"SELECT result FROM {_q}.kv_applied_requests WHERE group_id = $1 AND request_id = $2 AND proposed_at_unix_ms >= $3", conn, tx);
        cmd.Parameters.Add(new() { Value = GroupId });
        cmd.Parameters.Add(new() { Value = requestId.ToByteArray() });
        cmd.Parameters.Add(new() { Value = nowUnixMs - (long)_options.RequestIdRetention.TotalMilliseconds });
        return await cmd.ExecuteScalarAsync(ct).ConfigureAwait(false) is byte[] bytes ? KvResult.Parser.ParseFrom(bytes) : null;
    }

    // ---- reads -----------------------------------------------------------------------------

    /// <summary>A Range over the applied state, from one consistent database snapshot.</summary>
    public Task<RangeResponse> RangeAsync(RangeRequest request, CancellationToken cancellationToken = default) =>
        RangeAsync(request, 0, cancellationToken);

    /// <summary>
    /// Serves a range from the state after <paramref name="minAppliedIndex"/> at least, or throws
    /// <see cref="KvApplyGapException"/> when the store is behind it (a PostgreSQL crash undid
    /// asynchronous applies that the caller had seen done).
    /// </summary>
    public async Task<RangeResponse> RangeAsync(RangeRequest request, ulong minAppliedIndex, CancellationToken cancellationToken = default)
    {
        KvApplier.ValidateRange(request);
        var range = KeyRange.FromEtcd(request.Key, request.RangeEnd);
        await using var conn = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        // Most reads are at the current revision: the state and the current rows come together. Only
        // the state says whether a revision is in the past (then the rows come from the history), so
        // such a read takes a second round trip. The state is read again in each, from the same
        // snapshot as its rows; one more is needed only if it changed its answer in between.
        var fromHistory = false;
        while (true)
        {
            var (state, working) = await ReadForRangeAsync(conn, range, fromHistory ? request.Revision : null, cancellationToken)
                .ConfigureAwait(false);
            if (state.AppliedIndex < minAppliedIndex) throw new KvApplyGapException(GroupId, state.AppliedIndex, minAppliedIndex);
            var past = request.Revision > 0 && request.Revision < state.Revision && request.Revision >= state.CompactRevision
                && request.Revision >= state.HistoryFrom;
            // The applier checks the revision against the state (a compacted one is refused, whatever was loaded).
            if (past == fromHistory || range.IsEmpty) return KvApplier.Range(working, request);
            fromHistory = past;
        }
    }

    /// <summary>
    /// One round trip, one snapshot of the database: the state, and the rows of <paramref name="range"/>,
    /// current ones or (with <paramref name="historyAt"/>) each key's version as of that revision.
    /// </summary>
    /// <remarks>
    /// The transaction's statements go in the batch itself: Npgsql sends a batch's statements
    /// together and reads their results after, and REPEATABLE READ takes the snapshot at the first
    /// statement after BEGIN, so the state and the rows are as one applied state left them. Should a
    /// statement fail, the server skips the rest and Npgsql rolls the transaction back before the
    /// connection is used again.
    /// </remarks>
    private async Task<(KvStoreState State, MemoryKvState Working)> ReadForRangeAsync(NpgsqlConnection conn, KeyRange range, long? historyAt,
        CancellationToken ct)
    {
        await using var batch = new NpgsqlBatch(conn)
        {
            BatchCommands = { new NpgsqlBatchCommand("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"), StateQuery(forUpdate: false) },
        };
        if (!range.IsEmpty) batch.BatchCommands.Add(historyAt is { } revision ? VersionsAt(range, revision) : CurrentRows(range));
        batch.BatchCommands.Add(new NpgsqlBatchCommand("COMMIT"));
        await using var r = await batch.ExecuteReaderAsync(ct).ConfigureAwait(false);
        // BEGIN returns no result set: the reader starts on the state's.
        var state = await ReadStateAsync(r, ct).ConfigureAwait(false);
        var working = new MemoryKvState(state.Revision, state.CompactRevision, state.HistoryFrom);
        if (!range.IsEmpty)
        {
            if (!await r.NextResultAsync(ct).ConfigureAwait(false))
                throw new KvStoreException($"key-value group {GroupId}: the range read returned the state but no rows result");
            while (await r.ReadAsync(ct).ConfigureAwait(false))
            {
                if (historyAt is null) working.Load(ReadKeyValue(r));
                else working.LoadVersion(ReadKeyValue(r));
            }
        }
        return (state, working);
    }

    // ---- snapshots -------------------------------------------------------------------------

    /// <summary>
    /// Writes the whole state of the group (keys, revisions, applied index, remembered request ids)
    /// to <paramref name="output"/>, from one consistent database snapshot.
    /// </summary>
    public async Task<KvSnapshotHeader> ExportSnapshotAsync(Stream output, CancellationToken cancellationToken = default)
    {
        var ct = cancellationToken;
        await using var conn = await _dataSource.OpenConnectionAsync(ct).ConfigureAwait(false);
        await using var tx = await conn.BeginTransactionAsync(IsolationLevel.RepeatableRead, ct).ConfigureAwait(false);
        var state = await ReadStateAsync(conn, tx, forUpdate: false, ct).ConfigureAwait(false);
        long keyCount, dedupCount, historyCount;
        await using (var cmd = new NpgsqlCommand(
                         $"""
                          SELECT (SELECT count(*) FROM {_q}.kv_keys WHERE group_id = $1), (SELECT count(*) FROM {_q}.kv_applied_requests WHERE group_id = $1),
                                 (SELECT count(*) FROM {_q}.kv_history WHERE group_id = $1)
                          """,
                         conn, tx))
        {
            cmd.Parameters.Add(new() { Value = GroupId });
            await using var r = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
            await r.ReadAsync(ct).ConfigureAwait(false);
            (keyCount, dedupCount, historyCount) = (r.GetInt64(0), r.GetInt64(1), r.GetInt64(2));
        }
        var members = await ReadMembersAsync(conn, tx, ct).ConfigureAwait(false);
        var removed = await ReadRemovedMemberIdsAsync(conn, tx, ct).ConfigureAwait(false);
        var header = new KvSnapshotHeader
        {
            FormatVersion = SnapshotFormat,
            Revision = state.Revision,
            CompactRevision = state.CompactRevision,
            AppliedIndex = state.AppliedIndex,
            AppliedTerm = state.AppliedTerm,
            KeyCount = keyCount,
            DedupCount = dedupCount,
            MemberCount = members.Count,
            HistoryCount = historyCount,
            HistoryFrom = state.HistoryFrom,
            RemovedMemberIds = { removed },
        };
        await DelimitedRecords.WriteAsync(output, header, ct).ConfigureAwait(false);
        await using (var cmd = new NpgsqlCommand(
                         $"SELECT key, create_revision, mod_revision, version, value FROM {_q}.kv_keys WHERE group_id = $1 ORDER BY key", conn, tx))
        {
            cmd.Parameters.Add(new() { Value = GroupId });
            await using var r = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
            while (await r.ReadAsync(ct).ConfigureAwait(false))
                await DelimitedRecords.WriteAsync(output, ReadKeyValue(r), ct).ConfigureAwait(false);
        }
        await using (var cmd = new NpgsqlCommand(
                         $"SELECT request_id, proposed_at_unix_ms, result FROM {_q}.kv_applied_requests WHERE group_id = $1 ORDER BY request_id", conn, tx))
        {
            cmd.Parameters.Add(new() { Value = GroupId });
            await using var r = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
            while (await r.ReadAsync(ct).ConfigureAwait(false))
            {
                await DelimitedRecords.WriteAsync(output, new AppliedRequest
                {
                    RequestId = ByteString.CopyFrom(r.GetFieldValue<byte[]>(0)),
                    ProposedAtUnixMs = r.GetInt64(1),
                    Result = KvResult.Parser.ParseFrom(r.GetFieldValue<byte[]>(2)),
                }, ct).ConfigureAwait(false);
            }
        }
        foreach (var m in members) await DelimitedRecords.WriteAsync(output, m, ct).ConfigureAwait(false);
        await using (var cmd = new NpgsqlCommand(
                         $"SELECT key, create_revision, mod_revision, version, value FROM {_q}.kv_history WHERE group_id = $1 ORDER BY key, mod_revision", conn, tx))
        {
            cmd.Parameters.Add(new() { Value = GroupId });
            await using var r = await cmd.ExecuteReaderAsync(ct).ConfigureAwait(false);
            while (await r.ReadAsync(ct).ConfigureAwait(false))
                await DelimitedRecords.WriteAsync(output, ReadKeyValue(r), ct).ConfigureAwait(false);
        }
        await tx.CommitAsync(ct).ConfigureAwait(false);
        return header;
    }

    /// <summary>
    /// Replaces the group's whole state with the snapshot read from <paramref name="input"/>, in one
    /// transaction: a truncated or malformed stream changes nothing. A snapshot older than the
    /// applied state is refused, since installing it would undo applied entries.
    /// </summary>
    public async Task<KvSnapshotHeader> ImportSnapshotAsync(Stream input, CancellationToken cancellationToken = default)
    {
        var ct = cancellationToken;
        var header = await DelimitedRecords.ReadAsync(input, KvSnapshotHeader.Parser, MaxSnapshotRecord, ct).ConfigureAwait(false);
        if (header.FormatVersion is not (1 or SnapshotFormat))
            throw new KvStoreException($"key-value snapshot format {header.FormatVersion} is not a supported format (1, {SnapshotFormat})");
        if (header.KeyCount < 0 || header.DedupCount < 0 || header.MemberCount < 0 || header.HistoryCount < 0 || header.Revision < 1
            || (header.FormatVersion == 1 && header.HistoryCount > 0))
            throw new KvStoreException("key-value snapshot header is invalid");

        await using var conn = await _dataSource.OpenConnectionAsync(ct).ConfigureAwait(false);
        await using var tx = await conn.BeginTransactionAsync(IsolationLevel.ReadCommitted, ct).ConfigureAwait(false);
        var state = await ReadStateAsync(conn, tx, forUpdate: true, ct).ConfigureAwait(false);
        if (header.AppliedIndex < state.AppliedIndex)
            throw new KvStoreException(
                $"key-value snapshot at index {header.AppliedIndex} is older than the applied index {state.AppliedIndex} of group {GroupId}");
        foreach (var table in new[] { "kv_keys", "kv_applied_requests", "kv_members", "kv_history" })
        {
            await using var del = new NpgsqlCommand($"DELETE FROM {_q}.{table} WHERE group_id = $1", conn, tx);
            del.Parameters.Add(new() { Value = GroupId });
            await del.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
        }

        await using (var copy = await conn.BeginBinaryImportAsync(
                         $"COPY {_q}.kv_keys (group_id, key, create_revision, mod_revision, version, value) FROM STDIN (FORMAT BINARY)", ct).ConfigureAwait(false))
        {
            for (long i = 0; i < header.KeyCount; i++)
            {
                var kv = await DelimitedRecords.ReadAsync(input, KeyValue.Parser, MaxSnapshotRecord, ct).ConfigureAwait(false);
                if (kv.Key.IsEmpty || kv.ModRevision > header.Revision || kv.Version < 1)
                    throw new KvStoreException($"key-value snapshot record {i} is invalid");
                await copy.StartRowAsync(ct).ConfigureAwait(false);
                await copy.WriteAsync(GroupId, NpgsqlDbType.Bigint, ct).ConfigureAwait(false);
                await copy.WriteAsync(kv.Key.ToByteArray(), NpgsqlDbType.Bytea, ct).ConfigureAwait(false);
                await copy.WriteAsync(kv.CreateRevision, NpgsqlDbType.Bigint, ct).ConfigureAwait(false);
                await copy.WriteAsync(kv.ModRevision, NpgsqlDbType.Bigint, ct).ConfigureAwait(false);
                await copy.WriteAsync(kv.Version, NpgsqlDbType.Bigint, ct).ConfigureAwait(false);
                await copy.WriteAsync(kv.Value.ToByteArray(), NpgsqlDbType.Bytea, ct).ConfigureAwait(false);
            }
            await copy.CompleteAsync(ct).ConfigureAwait(false);
        }
        await using (var copy = await conn.BeginBinaryImportAsync(
                         $"COPY {_q}.kv_applied_requests (group_id, request_id, proposed_at_unix_ms, applied_index, result) FROM STDIN (FORMAT BINARY)", ct).ConfigureAwait(false))
        {
            for (long i = 0; i < header.DedupCount; i++)
            {
                var req = await DelimitedRecords.ReadAsync(input, AppliedRequest.Parser, MaxSnapshotRecord, ct).ConfigureAwait(false);
                await copy.StartRowAsync(ct).ConfigureAwait(false);
                await copy.WriteAsync(GroupId, NpgsqlDbType.Bigint, ct).ConfigureAwait(false);
                await copy.WriteAsync(req.RequestId.ToByteArray(), NpgsqlDbType.Bytea, ct).ConfigureAwait(false);
                await copy.WriteAsync(req.ProposedAtUnixMs, NpgsqlDbType.Bigint, ct).ConfigureAwait(false);
                await copy.WriteAsync((long)header.AppliedIndex, NpgsqlDbType.Bigint, ct).ConfigureAwait(false);
                await copy.WriteAsync((req.Result ?? new KvResult()).ToByteArray(), NpgsqlDbType.Bytea, ct).ConfigureAwait(false);
            }
            await copy.CompleteAsync(ct).ConfigureAwait(false);
        }
        for (long i = 0; i < header.MemberCount; i++)
        {
            var m = await DelimitedRecords.ReadAsync(input, Member.Parser, MaxSnapshotRecord, ct).ConfigureAwait(false);
            if (m.ID == 0) throw new KvStoreException($"key-value snapshot member record {i} has no id");
            await using var cmd = new NpgsqlCommand(
                $"INSERT INTO {_q}.kv_members (group_id, id, name, peer_urls, client_urls) VALUES ($1, $2, $3, $4, $5)", conn, tx);
            cmd.Parameters.Add(new() { Value = GroupId });
            cmd.Parameters.Add(new() { Value = (long)m.ID });
            cmd.Parameters.Add(new() { Value = m.Name });
            cmd.Parameters.Add(new() { Value = m.PeerURLs.ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
            cmd.Parameters.Add(new() { Value = m.ClientURLs.ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
            await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
        }
        // Removals are final: the ids this store knows stay, the snapshot's are added (one from an
        // older raftv carries none).
        foreach (var id in header.RemovedMemberIds)
        {
            if (id == 0) throw new KvStoreException("key-value snapshot names a removed member with no id");
            await using var cmd = new NpgsqlCommand($"INSERT INTO {_q}.kv_removed_members (group_id, id) VALUES ($1, $2) ON CONFLICT DO NOTHING", conn, tx);
            cmd.Parameters.Add(new() { Value = GroupId });
            cmd.Parameters.Add(new() { Value = (long)id });
            await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
        }
        await using (var copy = await conn.BeginBinaryImportAsync(
                         $"COPY {_q}.kv_history (group_id, key, mod_revision, create_revision, version, value) FROM STDIN (FORMAT BINARY)", ct).ConfigureAwait(false))
        {
            for (long i = 0; i < header.HistoryCount; i++)
            {
                var kv = await DelimitedRecords.ReadAsync(input, KeyValue.Parser, MaxSnapshotRecord, ct).ConfigureAwait(false);
                if (kv.Key.IsEmpty || kv.ModRevision > header.Revision || kv.Version < 0)
                    throw new KvStoreException($"key-value snapshot history record {i} is invalid");
                await copy.StartRowAsync(ct).ConfigureAwait(false);
                await copy.WriteAsync(GroupId, NpgsqlDbType.Bigint, ct).ConfigureAwait(false);
                await copy.WriteAsync(kv.Key.ToByteArray(), NpgsqlDbType.Bytea, ct).ConfigureAwait(false);
                await copy.WriteAsync(kv.ModRevision, NpgsqlDbType.Bigint, ct).ConfigureAwait(false);
                await copy.WriteAsync(kv.CreateRevision, NpgsqlDbType.Bigint, ct).ConfigureAwait(false);
                await copy.WriteAsync(kv.Version, NpgsqlDbType.Bigint, ct).ConfigureAwait(false);
                await copy.WriteAsync(kv.Value.ToByteArray(), NpgsqlDbType.Bytea, ct).ConfigureAwait(false);
            }
            await copy.CompleteAsync(ct).ConfigureAwait(false);
        }
        // A snapshot without history (format 1): history starts at its revision, with each key's newest version.
        var historyFrom = header.FormatVersion == 1 ? header.Revision : header.HistoryFrom;
        if (header.FormatVersion == 1)
        {
            await using var seed = new NpgsqlCommand(
                $"""
                 INSERT INTO {_q}.kv_history (group_id, key, mod_revision, create_revision, version, value)
                   SELECT group_id, key, mod_revision, create_revision, version, value FROM {_q}.kv_keys WHERE group_id = $1
                 """, conn, tx);
            seed.Parameters.Add(new() { Value = GroupId });
            await seed.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
        }
        await using (var cmd = new NpgsqlCommand(
                         $"UPDATE {_q}.kv_groups SET revision = $2, compact_revision = $3, applied_index = $4, applied_term = $5, history_from = $6 WHERE group_id = $1",
                         conn, tx))
        {
            cmd.Parameters.Add(new() { Value = GroupId });
            cmd.Parameters.Add(new() { Value = header.Revision });
            cmd.Parameters.Add(new() { Value = header.CompactRevision });
            cmd.Parameters.Add(new() { Value = (long)header.AppliedIndex });
            cmd.Parameters.Add(new() { Value = (long)header.AppliedTerm });
            cmd.Parameters.Add(new() { Value = historyFrom });
            await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
        }
        await tx.CommitAsync(ct).ConfigureAwait(false);
        _logger.LogInformation("installed key-value snapshot of group {GroupId} at index {Index}: {Keys} keys, revision {Revision}",
            GroupId, header.AppliedIndex, header.KeyCount, header.Revision);
        return header;
    }

    private static async Task ExecAsync(NpgsqlConnection conn, NpgsqlTransaction tx, string sql, CancellationToken ct)
    {
        await using var cmd = new NpgsqlCommand(sql, conn, tx);
        await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        if (!_disposing.IsCancellationRequested)
        {
            await _disposing.CancelAsync().ConfigureAwait(false);
            await PurgesDone.ConfigureAwait(false);
        }
        await _applySource.DisposeAsync().ConfigureAwait(false);
        await _dataSource.DisposeAsync().ConfigureAwait(false);
    }
}
