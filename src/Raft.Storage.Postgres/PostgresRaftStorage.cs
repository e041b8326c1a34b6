using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.FSharp.Core;
using Npgsql;
using NpgsqlTypes;
using Raft.Spec;
using static Raft.Storage.Postgres.RaftValues;
using SpecSnapshot = Raft.Spec.Snapshot;

namespace Raft.Storage.Postgres;

/// <summary>
/// Durable Raft state of one group in PostgreSQL. PostgreSQL plays the part of etcd's WAL: every
/// write commits there first, and Raft's reads are served from an in-memory
/// <see cref="MemoryStorage"/> rebuilt from PostgreSQL at open (see docs/storage-postgres.md for
/// the measurement behind this). Reads are lock-free and see the latest acknowledged write;
/// writes are serialised. Many groups share one database, each under its own group id.
/// </summary>
public sealed class PostgresRaftStorage : IStorage, IAsyncDisposable
{
    private readonly NpgsqlDataSource _dataSource;
    /// <summary>Connections that commit without waiting for the WAL flush: saves that need no sync (Ready.MustSync false).</summary>
    private readonly NpgsqlDataSource _relaxedSource;
    private readonly NpgsqlConnectionStringBuilder _where;
    private readonly PostgresRaftStorageOptions _options;
    private readonly ILogger _logger;
    private readonly string _q;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private MemoryStorage _state;
    private long _writeSeq;
    // A write whose COMMIT outcome is unknown: adopted or dropped by the next operation once the
    // stored write_seq says whether it committed. Never reported as persisted before that.
    private (MemoryStorage Next, long Seq)? _pending;
    private PostgresStorageException? _fault;
    private bool _disposed;

    private PostgresRaftStorage(NpgsqlDataSource dataSource, NpgsqlDataSource relaxedSource, NpgsqlConnectionStringBuilder where, long groupId,
        PostgresRaftStorageOptions options, ILogger logger, MemoryStorage state, long writeSeq)
    {
        _dataSource = dataSource;
        _relaxedSource = relaxedSource;
        _where = where;
        GroupId = groupId;
        _options = options;
        _logger = logger;
        _q = SchemaMigrations.Quote(options.Schema);
        _state = state;
        _writeSeq = writeSeq;
    }

    public long GroupId { get; }

    /// <summary>The latest acknowledged state as an immutable value (safe to hold while writes go on).</summary>
    public MemoryStorage State => Volatile.Read(ref _state);

    /// <summary>
    /// Connects, brings the schema up to date, and loads the group's state (created empty when new).
    /// Errors (bad connection string, unreachable server, login, permissions, missing database,
    /// newer schema) are <see cref="PostgresStorageException"/>s that say what to fix.
    /// </summary>
    public static async Task<PostgresRaftStorage> OpenAsync(string connectionString, long groupId,
        PostgresRaftStorageOptions? options = null, ILogger? logger = null, CancellationToken cancellationToken = default)
    {
        options ??= new PostgresRaftStorageOptions();
        options.Validate();
        logger ??= NullLogger.Instance;
        NpgsqlConnectionStringBuilder csb;
        try
        {
            csb = new NpgsqlConnectionStringBuilder(connectionString);
        }
        catch (Exception e) when (e is ArgumentException or FormatException or InvalidCastException)
        {
            // The message of the parser never contains the password; the string itself might.
            throw new PostgresStorageException(PostgresStorageErrorKind.InvalidConnectionString,
                $"the PostgreSQL connection string is invalid: {e.Message}", e);
        }
        if (string.IsNullOrEmpty(csb.Host))
            throw new PostgresStorageException(PostgresStorageErrorKind.InvalidConnectionString,
                "the PostgreSQL connection string names no Host.");
        var where = new NpgsqlConnectionStringBuilder { Host = csb.Host, Port = csb.Port, Database = csb.Database, Username = csb.Username };
        // The same few statements run for every save: prepared once per connection, they skip parsing and planning.
        if (csb.MaxAutoPrepare == 0) csb.MaxAutoPrepare = 32;
        // These connections never change session state (no SET, temporary tables, LISTEN or session
        // locks), so the reset Npgsql otherwise runs whenever a pooled connection is reused (RESET ALL,
        // DISCARD …, in front of every save's statement) is work for nothing.
        csb.NoResetOnClose = true;
        var baseOptions = csb.Options is { Length: > 0 } o ? o + " " : "";
        if (options.ForceSynchronousCommit) csb.Options = baseOptions + "-c synchronous_commit=on";
        var dataSource = NpgsqlDataSource.Create(csb);
        csb.Options = baseOptions + "-c synchronous_commit=off";
        var relaxedSource = NpgsqlDataSource.Create(csb);
        try
        {
            await using var conn = await dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
            await SchemaMigrations.MigrateAsync(conn, options.Schema, logger, cancellationToken).ConfigureAwait(false);
            var (state, seq) = await LoadAsync(conn, SchemaMigrations.Quote(options.Schema), groupId, cancellationToken).ConfigureAwait(false);
            logger.LogInformation("opened Raft group {GroupId}: entries {First}..{Last}, snapshot at {SnapshotIndex}, write_seq {Seq}",
                groupId, state.FirstIndex, state.LastIndex, MemoryStorageModule.snapshot(state).Metadata.Index, seq);
            return new PostgresRaftStorage(dataSource, relaxedSource, where, groupId, options, logger, state, seq);
        }
        catch (Exception e)
        {
            await dataSource.DisposeAsync().ConfigureAwait(false);
            await relaxedSource.DisposeAsync().ConfigureAwait(false);
            if (e is OperationCanceledException && cancellationToken.IsCancellationRequested) throw;
            throw PostgresErrors.Map(e, where, $"opening Raft group {groupId}");
        }
    }

    private static async Task<(MemoryStorage, long)> LoadAsync(NpgsqlConnection conn, string q, long groupId, CancellationToken ct)
    {
        // One snapshot of the database for all reads: a writer elsewhere cannot tear the state.
        await using var tx = await conn.BeginTransactionAsync(System.Data.IsolationLevel.RepeatableRead, ct).ConfigureAwait(false);
        await using (var ensure = new NpgsqlCommand($"INSERT INTO {q}.raft_groups (group_id) VALUES ($1) ON CONFLICT DO NOTHING", conn, tx)
                     { Parameters = { new() { Value = groupId } } })
            await ensure.ExecuteNonQueryAsync(ct).ConfigureAwait(false);

        long offset, offsetTerm, seq;
        HardState hs;
        await using (var g = new NpgsqlCommand(
                         $"SELECT log_offset, log_offset_term, write_seq, term, vote, commit_index FROM {q}.raft_groups WHERE group_id = $1", conn, tx)
                     { Parameters = { new() { Value = groupId } } })
        await using (var r = await g.ExecuteReaderAsync(ct).ConfigureAwait(false))
        {
            await r.ReadAsync(ct).ConfigureAwait(false);
            (offset, offsetTerm, seq) = (r.GetInt64(0), r.GetInt64(1), r.GetInt64(2));
            hs = new HardState((ulong)r.GetInt64(3), Unbits(r.GetInt64(4)), (ulong)r.GetInt64(5));
        }

        var snapshot = SnapshotModule.empty;
        await using (var s = new NpgsqlCommand(
                         $"""
                          SELECT s.idx, s.term, s.data, c.voters, c.learners, c.voters_outgoing, c.learners_next, c.auto_leave
                          FROM {q}.raft_snapshots s LEFT JOIN {q}.raft_conf_state c USING (group_id) WHERE s.group_id = $1
                          """, conn, tx) { Parameters = { new() { Value = groupId } } })
        await using (var r = await s.ExecuteReaderAsync(ct).ConfigureAwait(false))
        {
            if (await r.ReadAsync(ct).ConfigureAwait(false))
            {
                if (r.IsDBNull(3))
                    throw new PostgresStorageException(PostgresStorageErrorKind.Corrupt, $"Raft group {groupId} has a snapshot but no conf state");
                var cs = new ConfState(Ids(r.GetFieldValue<long[]>(3)), Ids(r.GetFieldValue<long[]>(4)),
                    Ids(r.GetFieldValue<long[]>(5)), Ids(r.GetFieldValue<long[]>(6)), r.GetBoolean(7));
                snapshot = new SpecSnapshot(r.GetFieldValue<byte[]>(2), new SnapshotMetadata(cs, (ulong)r.GetInt64(0), (ulong)r.GetInt64(1)));
            }
        }

        var entries = new List<Entry>();
        await using (var e = new NpgsqlCommand($"SELECT idx, term, entry_type, data FROM {q}.raft_entries WHERE group_id = $1 ORDER BY idx", conn, tx)
                     { Parameters = { new() { Value = groupId } } })
        await using (var r = await e.ExecuteReaderAsync(System.Data.CommandBehavior.SequentialAccess, ct).ConfigureAwait(false))
        {
            var expected = offset + 1;
            while (await r.ReadAsync(ct).ConfigureAwait(false))
            {
                var idx = r.GetInt64(0);
                if (idx != expected)
                    throw new PostgresStorageException(PostgresStorageErrorKind.Corrupt,
                        $"Raft group {groupId}: the log has a gap or stale entry: expected index {expected}, found {idx} (log offset {offset})");
                var term = r.GetInt64(1);
                var type = EntryTypeOf(r.GetInt16(2), idx);
                entries.Add(new Entry((ulong)term, (ulong)idx, type, r.GetFieldValue<byte[]>(3)));
                expected++;
            }
        }
        await tx.CommitAsync(ct).ConfigureAwait(false);
        return (Restore(groupId, hs, snapshot, (ulong)offset, (ulong)offsetTerm, entries), seq);
    }

    // ---- writes ----------------------------------------------------------------------------

    /// <summary>
    /// Persists one Ready: installs <paramref name="snapshot"/> (when given), appends
    /// <paramref name="entries"/> (replacing any stored suffix from the first new index on) and
    /// saves <paramref name="hardState"/> (when given), all in one transaction. Returns only once
    /// PostgreSQL has committed it; throws otherwise, and then none of it is visible.
    /// </summary>
    public Task SaveAsync(HardState? hardState, Entry[] entries, SpecSnapshot? snapshot = null, CancellationToken cancellationToken = default) =>
        SaveAsync(hardState, entries, snapshot, mustSync: true, cancellationToken);

    /// <summary>
    /// As <see cref="SaveAsync(HardState?, Entry[], SpecSnapshot?, CancellationToken)"/>; with
    /// <paramref name="mustSync"/> false (etcd's Ready.MustSync: no entries, term and vote unchanged,
    /// only the commit index moved) the transaction commits without waiting for its WAL flush, as
    /// etcd writes such a HardState to its WAL without fsync. A crash may then lose the newer commit
    /// index, which raft learns again from the leader; the next synchronous commit makes it durable.
    /// Entries and snapshots are always synchronous.
    /// </summary>
    public Task SaveAsync(HardState? hardState, Entry[] entries, SpecSnapshot? snapshot, bool mustSync, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(entries);
        CheckEntries(entries);
        var relaxed = !mustSync && entries.Length == 0 && snapshot is null;
        return WriteAsync(state =>
        {
            var batch = new WriteBatch();
            if (snapshot is not null)
            {
                state = Ok(MemoryStorageModule.applySnapshot(snapshot, state));
                AddInstallSnapshot(batch, snapshot);
            }
            if (entries.Length > 0)
            {
                var before = state;
                state = MemoryStorageModule.append(entries, state); // throws on a gap, before anything is written
                if (!ReferenceEquals(before, state))
                {
                    // What append kept: the entries not already compacted.
                    var first = before.FirstIndex;
                    var kept = first > entries[0].Index ? entries[(int)(first - entries[0].Index)..] : entries;
                    if (kept[0].Index <= before.LastIndex)
                        batch.Before.Add(($"DELETE FROM {_q}.raft_entries WHERE group_id = $1 AND idx >= $2", [GroupId, (long)kept[0].Index]));
                    batch.Append = kept;
                }
            }
            if (hardState is not null)
            {
                state = MemoryStorageModule.setHardState(hardState, state);
                batch.HardState = [Ordered(hardState.Term, "term"), Bits(hardState.Vote), Ordered(hardState.Commit, "commit index")];
            }
            return (state, batch);
        }, cancellationToken, relaxed);
    }

    /// <summary>Replaces the whole state with the snapshot's (etcd's ApplySnapshot); an older one is
    /// refused with <see cref="RaftStorageErrorException"/> (SnapOutOfDate).</summary>
    public Task ApplySnapshotAsync(SpecSnapshot snapshot, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        return WriteAsync(state =>
        {
            var next = Ok(MemoryStorageModule.applySnapshot(snapshot, state));
            var batch = new WriteBatch();
            AddInstallSnapshot(batch, snapshot);
            return (next, batch);
        }, cancellationToken);
    }

    /// <summary>Makes and stores the snapshot at <paramref name="index"/> (etcd's CreateSnapshot); the
    /// log is not compacted. Null <paramref name="confState"/> keeps the previous snapshot's.</summary>
    public async Task<SpecSnapshot> CreateSnapshotAsync(ulong index, ConfState? confState, byte[] data, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(data);
        SpecSnapshot? made = null;
        await WriteAsync(state =>
        {
            var cs = confState is null ? FSharpOption<ConfState>.None : FSharpOption<ConfState>.Some(confState);
            var (next, snap) = Ok(MemoryStorageModule.createSnapshot(index, cs, data, state)).ToValueTuple();
            made = snap;
            var batch = new WriteBatch();
            AddSaveSnapshot(batch, snap);
            return (next, batch);
        }, cancellationToken).ConfigureAwait(false);
        return made!;
    }

    /// <summary>Discards the entries before <paramref name="index"/> (etcd's Compact); compacting
    /// what is already compacted is refused with <see cref="RaftStorageErrorException"/> (Compacted).</summary>
    public Task CompactAsync(ulong index, CancellationToken cancellationToken = default) =>
        WriteAsync(state =>
        {
            var next = Ok(MemoryStorageModule.compact(index, state));
            var term = Ok(((IStorage)state).Term(index));
            var batch = new WriteBatch();
            batch.After.Add(($"DELETE FROM {_q}.raft_entries WHERE group_id = $1 AND idx <= $2", [GroupId, Ordered(index, "index")]));
            batch.After.Add(($"UPDATE {_q}.raft_groups SET log_offset = $2, log_offset_term = $3 WHERE group_id = $1",
                [GroupId, Ordered(index, "index"), Ordered(term, "term")]));
            return (next, batch);
        }, cancellationToken);

    private void AddInstallSnapshot(WriteBatch batch, SpecSnapshot snapshot)
    {
        var meta = snapshot.Metadata;
        batch.Before.Add(($"DELETE FROM {_q}.raft_entries WHERE group_id = $1", [GroupId]));
        batch.Before.Add(($"UPDATE {_q}.raft_groups SET log_offset = $2, log_offset_term = $3 WHERE group_id = $1",
            [GroupId, Ordered(meta.Index, "snapshot index"), Ordered(meta.Term, "snapshot term")]));
        AddSaveSnapshot(batch, snapshot);
    }

    private void AddSaveSnapshot(WriteBatch batch, SpecSnapshot snapshot)
    {
        var meta = snapshot.Metadata;
        var cs = meta.ConfState;
        batch.Before.Add(($"""
                          INSERT INTO {_q}.raft_snapshots (group_id, idx, term, data) VALUES ($1, $2, $3, $4)
                          ON CONFLICT (group_id) DO UPDATE SET idx = excluded.idx, term = excluded.term, data = excluded.data
                          """,
            [GroupId, Ordered(meta.Index, "snapshot index"), Ordered(meta.Term, "snapshot term"), snapshot.Data ?? []]));
        batch.Before.Add(($"""
                          INSERT INTO {_q}.raft_conf_state (group_id, voters, learners, voters_outgoing, learners_next, auto_leave)
                          VALUES ($1, $2, $3, $4, $5, $6)
                          ON CONFLICT (group_id) DO UPDATE SET voters = excluded.voters, learners = excluded.learners,
                              voters_outgoing = excluded.voters_outgoing, learners_next = excluded.learners_next, auto_leave = excluded.auto_leave
                          """,
            [GroupId, Ids(cs.Voters), Ids(cs.Learners), Ids(cs.VotersOutgoing), Ids(cs.LearnersNext), cs.AutoLeave]));
    }

    private static void CheckEntries(Entry[] entries)
    {
        for (var i = 0; i < entries.Length; i++)
        {
            var e = entries[i] ?? throw new ArgumentException($"entry {i} is null", nameof(entries));
            Ordered(e.Index, "entry index");
            Ordered(e.Term, "entry term");
            if (i > 0 && e.Index != entries[i - 1].Index + 1)
                throw new ArgumentException($"entries are not contiguous: index {e.Index} follows {entries[i - 1].Index}", nameof(entries));
        }
    }

    /// <summary>What one write changes, in order: Before (snapshot rows, truncation), the appended
    /// entries, the hard state, After (compaction).</summary>
    private sealed class WriteBatch
    {
        public List<(string Sql, object[] Args)> Before { get; } = [];
        public Entry[] Append { get; set; } = [];
        /// <summary>term, vote, commit_index as stored; null when the write keeps the hard state.</summary>
        public object[]? HardState { get; set; }
        public List<(string Sql, object[] Args)> After { get; } = [];
        public bool IsEmpty => Before.Count == 0 && Append.Length == 0 && HardState is null && After.Count == 0;
        /// <summary>Raft's everyday save: entries appended past the stored log and/or a hard state, nothing else.</summary>
        public bool IsPlainSave => Before.Count == 0 && After.Count == 0;
    }

    private async Task WriteAsync(Func<MemoryStorage, (MemoryStorage Next, WriteBatch Batch)> plan, CancellationToken ct, bool relaxed = false)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        await _writeLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            if (_fault is not null) throw _fault;
            await ResolvePendingAsync(ct).ConfigureAwait(false);
            // Planning validates against the current state and may throw; nothing is written then.
            var (next, batch) = plan(_state);
            if (batch.IsEmpty)
            {
                Volatile.Write(ref _state, next);
                return;
            }
            await CommitAsync(batch, next, relaxed ? _relaxedSource : _dataSource, ct).ConfigureAwait(false);
            _writeSeq++;
            Volatile.Write(ref _state, next);
        }
        finally
        {
            _writeLock.Release();
        }
    }

    private async Task CommitAsync(WriteBatch batch, MemoryStorage next, NpgsqlDataSource source, CancellationToken ct)
    {
        var deadline = Stopwatch.StartNew();
        var doing = $"saving Raft group {GroupId}";
        while (true)
        {
            NpgsqlConnection conn;
            try
            {
                conn = await source.OpenConnectionAsync(ct).ConfigureAwait(false);
            }
            catch (Exception e) when (PostgresErrors.IsConnectionFailure(e) && !ct.IsCancellationRequested)
            {
                // Nothing was sent: retrying on a new connection is safe.
                if (deadline.Elapsed >= _options.RetryTimeout) throw PostgresErrors.Map(e, _where, doing);
                source.Clear();
                await Task.Delay(_options.RetryDelay, ct).ConfigureAwait(false);
                continue;
            }
            await using (conn.ConfigureAwait(false))
            {
                const string fencedOff = "another process wrote this group since it was opened here; this storage stops writing (reopen it to continue from the stored state).";
                try
                {
                    if (await ExecuteAsync(conn, batch, ct).ConfigureAwait(false)) return;
                }
                catch (PostgresException e) when (e.SqlState == SchemaMigrations.ConcurrentWriterSqlState)
                {
                    throw Fault(new PostgresStorageException(PostgresStorageErrorKind.ConcurrentWriter, $"{doing}: {fencedOff}", e));
                }
                catch (Exception e) when (PostgresErrors.CertainlyNotCommitted(e))
                {
                    throw PostgresErrors.Map(e, _where, doing);
                }
                catch (Exception e)
                {
                    // The connection broke, or the wait was cancelled, after the write may have reached
                    // the server: it may or may not have committed. Never report it either way unread.
                    _pending = (next, _writeSeq);
                    _logger.LogWarning(e, "{Doing}: outcome of the commit unknown; reading it back", doing);
                    if (e is OperationCanceledException && ct.IsCancellationRequested) throw;
                    source.Clear();
                    var committed = await TryResolvePendingAsync(deadline, ct).ConfigureAwait(false);
                    if (committed is null)
                        throw new PostgresStorageException(PostgresStorageErrorKind.CommitOutcomeUnknown,
                            $"{doing}: the connection to {PostgresErrors.Describe(_where)} broke during the commit and the outcome could not be read back within {_options.RetryTimeout}; the save is not acknowledged.", e);
                    if (committed.Value)
                    {
                        // ResolvePending adopted the state; WriteAsync must not advance it again.
                        _writeSeq--;
                        return;
                    }
                    if (deadline.Elapsed >= _options.RetryTimeout) throw PostgresErrors.Map(e, _where, doing);
                    await Task.Delay(_options.RetryDelay, ct).ConfigureAwait(false);
                    continue;
                }
                // The fenced save matched no group row at our write_seq: it wrote nothing and committed nothing.
                throw Fault(new PostgresStorageException(PostgresStorageErrorKind.ConcurrentWriter, $"{doing}: {fencedOff}"));
            }
        }
    }

    private PostgresStorageException Fault(PostgresStorageException e)
    {
        _fault = e;
        return e;
    }

    private async Task ResolvePendingAsync(CancellationToken ct)
    {
        if (_pending is null) return;
        var committed = await TryResolvePendingAsync(Stopwatch.StartNew(), ct).ConfigureAwait(false);
        if (committed is null)
            throw new PostgresStorageException(PostgresStorageErrorKind.CommitOutcomeUnknown,
                $"Raft group {GroupId}: the outcome of an earlier interrupted save is still unknown ({PostgresErrors.Describe(_where)} unreachable); nothing new is written until it is known.");
    }

    /// <summary>Reads write_seq to learn whether the pending write committed; adopts it if so.
    /// Null when PostgreSQL could not be reached in time.</summary>
    private async Task<bool?> TryResolvePendingAsync(Stopwatch since, CancellationToken ct)
    {
        var (next, seq) = _pending!.Value;
        while (true)
        {
            try
            {
                await using var conn = await _dataSource.OpenConnectionAsync(ct).ConfigureAwait(false);
                await using var cmd = new NpgsqlCommand($"SELECT write_seq FROM {_q}.raft_groups WHERE group_id = $1", conn)
                { Parameters = { new() { Value = GroupId } } };
                var stored = (long)(await cmd.ExecuteScalarAsync(ct).ConfigureAwait(false))!;
                _pending = null;
                if (stored == seq + 1)
                {
                    _logger.LogInformation("Raft group {GroupId}: the interrupted save had committed", GroupId);
                    _writeSeq = stored;
                    Volatile.Write(ref _state, next);
                    return true;
                }
                if (stored == seq) return false;
                throw Fault(new PostgresStorageException(PostgresStorageErrorKind.ConcurrentWriter,
                    $"Raft group {GroupId}: write_seq is {stored}, expected {seq} or {seq + 1}: another process writes this group; reopen the storage."));
            }
            catch (Exception e) when (PostgresErrors.IsConnectionFailure(e) && !ct.IsCancellationRequested)
            {
                if (since.Elapsed >= _options.RetryTimeout) return null;
                _dataSource.Clear();
                await Task.Delay(_options.RetryDelay, ct).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Runs the write in one transaction; false when the fence found another writer's
    /// write_seq (nothing was written). The fence of the multi-statement paths raises instead.</summary>
    private async Task<bool> ExecuteAsync(NpgsqlConnection conn, WriteBatch batch, CancellationToken ct)
    {
        var copy = _options.WriteMethod == EntryWriteMethod.BinaryCopy && batch.Append.Length > 0;
        if (batch.IsPlainSave && !copy)
        {
            var (sql, args) = PlainSave(batch);
            await using var cmd = new NpgsqlCommand(sql, conn);
            foreach (var a in args) cmd.Parameters.Add(new NpgsqlParameter { Value = a });
            return await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false) > 0;
        }
        var fence = ($"SELECT {_q}.raft_advance_write_seq($1, $2)", new object[] { GroupId, _writeSeq });
        (string, object[])? hardState = batch.HardState is { } hs
            ? ($"UPDATE {_q}.raft_groups SET term = $2, vote = $3, commit_index = $4 WHERE group_id = $1", new object[] { GroupId, hs[0], hs[1], hs[2] })
            : null;
        if (copy)
        {
            await using var tx = await conn.BeginTransactionAsync(ct).ConfigureAwait(false);
            await RunAsync(conn, [fence, .. batch.Before], ct).ConfigureAwait(false);
            await using (var importer = await conn.BeginBinaryImportAsync(
                             $"COPY {_q}.raft_entries (group_id, idx, term, entry_type, data) FROM STDIN (FORMAT BINARY)", ct).ConfigureAwait(false))
            {
                foreach (var e in batch.Append)
                {
                    await importer.StartRowAsync(ct).ConfigureAwait(false);
                    await importer.WriteAsync(GroupId, NpgsqlDbType.Bigint, ct).ConfigureAwait(false);
                    await importer.WriteAsync((long)e.Index, NpgsqlDbType.Bigint, ct).ConfigureAwait(false);
                    await importer.WriteAsync((long)e.Term, NpgsqlDbType.Bigint, ct).ConfigureAwait(false);
                    await importer.WriteAsync(Wire(e.Type), NpgsqlDbType.Smallint, ct).ConfigureAwait(false);
                    await importer.WriteAsync(e.Data ?? [], NpgsqlDbType.Bytea, ct).ConfigureAwait(false);
                }
                await importer.CompleteAsync(ct).ConfigureAwait(false);
            }
            List<(string, object[])> after = hardState is { } h ? [h, .. batch.After] : batch.After;
            if (after.Count > 0) await RunAsync(conn, after, ct).ConfigureAwait(false);
            await tx.CommitAsync(ct).ConfigureAwait(false);
            return true;
        }
        // One round trip: the statements of a batch without an explicit transaction run in one
        // implicit transaction (a single Sync), so they commit together or not at all.
        var statements = new List<(string, object[])> { fence };
        statements.AddRange(batch.Before);
        if (batch.Append.Length > 0)
        {
            var (source, args, _) = EntryRows(batch.Append, 1);
            statements.Add(($"INSERT INTO {_q}.raft_entries (group_id, idx, term, entry_type, data) SELECT $1, * FROM {source}", [GroupId, .. args]));
        }
        if (hardState is { } hsUpdate) statements.Add(hsUpdate);
        statements.AddRange(batch.After);
        await RunAsync(conn, statements, ct).ConfigureAwait(false);
        return true;
    }

    // By schema, whether the hard state is stored, and the entries' row source (EntryRows' Shape,
    // -1 for no entries): the statement text is built once per shape, not per save.
    private static readonly ConcurrentDictionary<(string Schema, bool HardState, int Rows), string> PlainSaveSql = new();

    /// <summary>
    /// Raft's everyday save as ONE statement: the fence is a plain single-row UPDATE of the group's
    /// row that also stores the hard state, and the entry insert only happens when that UPDATE found
    /// the row at our write_seq. Rows affected: 0 means another writer took the group and nothing
    /// was written. Two row writes (the group row, HOT; the entries) where the batch made three and
    /// a PL/pgSQL call.
    /// </summary>
    private (string Sql, object[] Args) PlainSave(WriteBatch batch)
    {
        var hs = batch.HardState;
        object[] head = hs is null ? [GroupId, _writeSeq] : [GroupId, _writeSeq, .. hs];
        if (batch.Append.Length == 0) return (PlainSaveSql.GetOrAdd((_q, hs is not null, -1), k => Fence(k.Schema, k.HardState)), head);
        var (source, args, shape) = EntryRows(batch.Append, head.Length);
        var sql = PlainSaveSql.GetOrAdd((_q, hs is not null, shape), static (k, source) =>
            $"""
             WITH fence AS ({Fence(k.Schema, k.HardState)} RETURNING 1)
             INSERT INTO {k.Schema}.raft_entries (group_id, idx, term, entry_type, data)
             SELECT $1, * FROM {source} WHERE EXISTS (SELECT FROM fence)
             """, source);
        return (sql, [.. head, .. args]);

        static string Fence(string schema, bool hardState) =>
            $"UPDATE {schema}.raft_groups SET write_seq = $2 + 1{(hardState ? ", term = $3, vote = $4, commit_index = $5" : "")} WHERE group_id = $1 AND write_seq = $2";
    }

    private static async Task RunAsync(NpgsqlConnection conn, IEnumerable<(string Sql, object[] Args)> statements, CancellationToken ct)
    {
        await using var b = new NpgsqlBatch(conn);
        foreach (var (sql, args) in statements)
        {
            var c = new NpgsqlBatchCommand(sql);
            foreach (var a in args) c.Parameters.Add(new NpgsqlParameter { Value = a });
            b.BatchCommands.Add(c);
        }
        await b.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
    }

    // By the parameters before the rows and the number of rows (0: the unnest form).
    private static readonly ConcurrentDictionary<(int Before, int Rows), string> EntryRowsSql = new();

    /// <summary>The entries as a row source of (idx, term, entry_type, data) for an INSERT … SELECT,
    /// with its parameters numbered from <paramref name="before"/> + 1. Its text depends only on
    /// <paramref name="before"/> and <c>Shape</c>: the number of rows, or 0 for the unnest form.</summary>
    private (string Source, object[] Args, int Shape) EntryRows(Entry[] entries, int before)
    {
        if (_options.WriteMethod == EntryWriteMethod.MultiRowInsert && before + entries.Length * 4 < ushort.MaxValue)
        {
            var sql = EntryRowsSql.GetOrAdd((before, entries.Length), k =>
                "(VALUES " + string.Join(", ", Enumerable.Range(0, k.Rows).Select(i =>
                    $"(${k.Before + 1 + 4 * i}, ${k.Before + 2 + 4 * i}, ${k.Before + 3 + 4 * i}, ${k.Before + 4 + 4 * i})")) + ") AS entry_rows");
            var args = new object[4 * entries.Length];
            for (var i = 0; i < entries.Length; i++)
            {
                args[4 * i] = (long)entries[i].Index;
                args[1 + 4 * i] = (long)entries[i].Term;
                args[2 + 4 * i] = Wire(entries[i].Type);
                args[3 + 4 * i] = entries[i].Data ?? [];
            }
            return (sql, args, entries.Length);
        }
        return (EntryRowsSql.GetOrAdd((before, 0), k => $"unnest(${k.Before + 1}::bigint[], ${k.Before + 2}::bigint[], ${k.Before + 3}::smallint[], ${k.Before + 4}::bytea[])"),
            [entries.Select(e => (long)e.Index).ToArray(), entries.Select(e => (long)e.Term).ToArray(),
             entries.Select(e => Wire(e.Type)).ToArray(), entries.Select(e => e.Data ?? []).ToArray()], 0);
    }

    // ---- reads (IStorage): the latest acknowledged state, from memory ----------------------

    private IStorage Current => Volatile.Read(ref _state);

    public FSharpResult<Tuple<HardState, ConfState>, string> InitialState() => Current.InitialState();
    public FSharpResult<Entry[], StorageError> Entries(ulong lo, ulong hi, ulong maxSize) => Current.Entries(lo, hi, maxSize);
    public FSharpResult<ulong, StorageError> Term(ulong index) => Current.Term(index);
    public FSharpResult<ulong, StorageError> LastIndex() => Current.LastIndex();
    public FSharpResult<ulong, StorageError> FirstIndex() => Current.FirstIndex();
    public FSharpResult<SpecSnapshot, StorageError> Snapshot() => Current.Snapshot();

    /// <summary>synchronous_commit as saves run with it, by their mustSync.</summary>
    internal async Task<string> CommitSettingAsync(bool mustSync, CancellationToken ct = default)
    {
        await using var conn = await (mustSync ? _dataSource : _relaxedSource).OpenConnectionAsync(ct).ConfigureAwait(false);
        await using var cmd = new NpgsqlCommand("SHOW synchronous_commit", conn);
        return (string)(await cmd.ExecuteScalarAsync(ct).ConfigureAwait(false))!;
    }

    public async ValueTask DisposeAsync()
    {
        if (_disposed) return;
        _disposed = true;
        await _writeLock.WaitAsync().ConfigureAwait(false);
        try
        {
            await _dataSource.DisposeAsync().ConfigureAwait(false);
            await _relaxedSource.DisposeAsync().ConfigureAwait(false);
        }
        finally
        {
            _writeLock.Release();
        }
    }
}
