using System.Collections.Concurrent;
using System.Net;
using Google.Protobuf;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Raft.Host;
using Raft.Kv.Etcd.Serverpb;
using Raft.Kv.Protocol;
using Raft.Kv.State;
using Raft.Kv.Storage;
using Raft.Spec;
using Raft.Storage.Postgres;
using Raft.Transport.Grpc.Wire;

namespace Raft.Kv.Server;

/// <summary>
/// One raftv member: a raft node whose log lives in PostgreSQL (Raft.Storage.Postgres), the
/// key-value state machine (<see cref="PostgresKvStore"/>), the peer transport, and etcd's KV,
/// Cluster and Maintenance services on the client endpoint. Writes are proposed through raft (a
/// follower's proposals are forwarded to the leader by raft itself) and answered once applied
/// here; linearizable reads wait for a ReadIndex and its application; serializable reads are local.
/// </summary>
public sealed class KvServer : IAsyncDisposable
{
    /// <summary>gRPC metadata naming a write: a retry with the same id returns the first result.</summary>
    public const string RequestIdHeader = "raftv-request-id";
    private const long GroupId = 1;
    private const string EtcdVersion = "3.5.0";

    private readonly KvServerOptions _options;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<ByteString, TaskCompletionSource<KvResult>> _writes = new();
    private readonly ConcurrentDictionary<ByteString, TaskCompletionSource<ulong>> _reads = new();
    private readonly CancellationTokenSource _stop = new();
    private PostgresRaftStorage _raftStorage = null!;
    private PostgresKvStore _store = null!;
    private Node _node = null!;
    private PeerTransport _transport = null!;
    private GrpcServer _peerServer = null!;
    private GrpcServer _clientServer = null!;
    private Task _loop = Task.CompletedTask;
    private TaskCompletionSource _appliedChanged = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private ulong _applied;
    private ulong _lastSnapshot;
    private ulong _term;
    private ulong _leader;
    private ConfState _confState = ConfStateModule.empty;

    private KvServer(KvServerOptions options, ILogger logger)
    {
        _options = options;
        _logger = logger;
    }

    public Uri ClientAddress => _clientServer.Address;
    public Uri PeerAddress => _peerServer.Address;
    public ulong Applied => Volatile.Read(ref _applied);

    public static async Task<KvServer> StartAsync(KvServerOptions options, ILogger? logger = null, CancellationToken cancellationToken = default)
    {
        options.Validate();
        var server = new KvServer(options, logger ?? NullLogger.Instance);
        try
        {
            await server.StartCoreAsync(cancellationToken);
            return server;
        }
        catch
        {
            await server.DisposeAsync();
            throw;
        }
    }

    private async Task StartCoreAsync(CancellationToken ct)
    {
        _raftStorage = await PostgresRaftStorage.OpenAsync(_options.ConnectionString, GroupId, logger: _logger, cancellationToken: ct);
        _store = await PostgresKvStore.OpenAsync(_options.ConnectionString, GroupId, _options.Store, _logger, ct);
        var state = await _store.ReadStateAsync(ct);
        var snapshot = _raftStorage.Snapshot().ResultValue;
        if (snapshot.Metadata.Index > state.AppliedIndex)
        {
            // The raft snapshot was saved but its key-value state not installed before a crash.
            await _store.ImportSnapshotAsync(new MemoryStream(snapshot.Data), ct);
            state = await _store.ReadStateAsync(ct);
        }
        _applied = state.AppliedIndex;
        _lastSnapshot = snapshot.Metadata.Index;
        _confState = snapshot.Metadata.ConfState;
        var initial = _raftStorage.InitialState().ResultValue;
        _confState = initial.Item2;
        _term = initial.Item1.Term;

        var raftOptions = new RaftNodeOptions
        {
            Id = _options.NodeId,
            ElectionTick = _options.ElectionTick,
            HeartbeatTick = _options.HeartbeatTick,
            TickInterval = _options.TickInterval,
            Applied = _applied,
            MaxSizePerMsg = 1024 * 1024,
            MaxInflightMsgs = 256,
            CheckQuorum = true,
            PreVote = true,
        };
        var fresh = _raftStorage.LastIndex().ResultValue == 0 && SnapshotModule.isEmpty(snapshot);
        _node = fresh
            ? Node.Start(raftOptions, _raftStorage, _options.Members.Select(m => m.Id), _logger)
            : Node.Restart(raftOptions, _raftStorage, _logger);

        _transport = new PeerTransport(_options.ClusterId, _options.NodeId, _options.Members, () => _node, _logger);
        var peerServices = new GrpcServiceRegistry();
        _transport.Register(peerServices);
        _peerServer = await GrpcServer.StartAsync(new GrpcServerOptions
        {
            Endpoint = EndpointOf(_options.Self.PeerUrl),
            MaxReceiveMessageSize = PeerTransport.MaxMessageSize,
            MaxSendMessageSize = PeerTransport.MaxMessageSize,
        }, peerServices, _logger, ct);
        _clientServer = await GrpcServer.StartAsync(new GrpcServerOptions { Endpoint = EndpointOf(_options.Self.ClientUrl) },
            EtcdServices.Register(new GrpcServiceRegistry(), this), _logger, ct);
        _transport.Start();
        _loop = Task.Run(() => RunAsync(_stop.Token), CancellationToken.None);
    }

    private static IPEndPoint EndpointOf(string url)
    {
        var uri = new Uri(url);
        var address = uri.Host == "localhost" ? IPAddress.Loopback : IPAddress.Parse(uri.Host);
        return new IPEndPoint(address, uri.Port);
    }

    // ---- the raft loop: persist, send, apply, advance ---------------------------------------

    private async Task RunAsync(CancellationToken ct)
    {
        try
        {
            while (true)
            {
                var rd = await _node.ReadyAsync(ct);
                if (rd.SoftState is { } soft) Volatile.Write(ref _leader, soft.Lead);
                if (rd.HardState is { } hard) Volatile.Write(ref _term, hard.Term);
                var snapshot = rd.Snapshot is { } s && !SnapshotModule.isEmpty(s) ? s : null;
                await _raftStorage.SaveAsync(rd.HardState, [.. rd.Entries], snapshot, ct);
                if (snapshot is not null)
                {
                    await _store.ImportSnapshotAsync(new MemoryStream(snapshot.Data), ct);
                    _confState = snapshot.Metadata.ConfState;
                    _lastSnapshot = snapshot.Metadata.Index;
                    SetApplied(snapshot.Metadata.Index);
                }
                foreach (var m in rd.PeerMessages) _transport.Send(m);
                if (rd.CommittedEntries.Count > 0) await ApplyAsync(rd.CommittedEntries, ct);
                foreach (var rs in rd.ReadStates)
                    if (_reads.TryRemove(ByteString.CopyFrom(rs.RequestCtx), out var read)) read.TrySetResult(rs.Index);
                _node.Advance();
                await MaybeSnapshotAsync(ct);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or NodeStoppedException && _stop.IsCancellationRequested)
        {
        }
        catch (Exception e)
        {
            _logger.LogCritical(e, "raft loop of member {Id:x} failed; the member stops serving", _options.NodeId);
            foreach (var w in _writes.Values) w.TrySetException(EtcdErrors.Stopped());
            throw;
        }
    }

    private async Task ApplyAsync(IReadOnlyList<Entry> entries, CancellationToken ct)
    {
        var results = await _store.ApplyAsync(entries, ct);
        foreach (var entry in entries)
        {
            if (entry.Index <= _applied || !entry.TryGetConfChange(out var cc)) continue;
            _confState = await _node.ApplyConfChangeAsync(cc, ct);
        }
        foreach (var r in results)
        {
            if (r.Command is { RequestId.IsEmpty: false } c && r.Result is { } result && _writes.TryRemove(c.RequestId, out var waiter))
                waiter.TrySetResult(result);
        }
        SetApplied(entries[^1].Index);
    }

    private void SetApplied(ulong index)
    {
        if (index <= _applied) return;
        Volatile.Write(ref _applied, index);
        Interlocked.Exchange(ref _appliedChanged, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
    }

    private async Task MaybeSnapshotAsync(CancellationToken ct)
    {
        var decision = _options.Compaction.Decide(_applied, _lastSnapshot);
        if (decision.IsNone) return;
        var data = new MemoryStream();
        var header = await _store.ExportSnapshotAsync(data, ct);
        await _raftStorage.CreateSnapshotAsync(header.AppliedIndex, _confState, data.ToArray(), ct);
        _lastSnapshot = header.AppliedIndex;
        var compact = Math.Min(decision.CompactIndex, header.AppliedIndex);
        var first = _raftStorage.FirstIndex().ResultValue;
        if (compact >= first) await _raftStorage.CompactAsync(compact, ct);
        _logger.LogInformation("member {Id:x}: snapshot at {Index}, log compacted to {Compact}", _options.NodeId, header.AppliedIndex, compact);
    }

    // ---- requests --------------------------------------------------------------------------

    internal ResponseHeader Header(long revision) => new()
    {
        ClusterId = _options.ClusterId,
        MemberId = _options.NodeId,
        Revision = revision,
        RaftTerm = Volatile.Read(ref _term),
    };

    /// <summary>Proposes a write and waits until it is applied here; a known request id is answered without proposing.</summary>
    internal async Task<KvResult> WriteAsync(KvCommand command, CancellationToken ct)
    {
        var nowMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        if (command.RequestId.IsEmpty) command.RequestId = ByteString.CopyFrom(Guid.NewGuid().ToByteArray());
        else if (await _store.FindAppliedRequestAsync(command.RequestId, nowMs, ct) is { } known) return known;
        command.ProposedAtUnixMs = nowMs;

        var waiter = _writes.GetOrAdd(command.RequestId, _ => new TaskCompletionSource<KvResult>(TaskCreationOptions.RunContinuationsAsynchronously));
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(_options.RequestTimeout);
        try
        {
            await WaitForLeaderAsync(timeout.Token);
            await _node.ProposeAsync(command.ToByteArray(), timeout.Token);
            return await waiter.Task.WaitAsync(timeout.Token);
        }
        catch (ProposalDroppedException)
        {
            throw EtcdErrors.NoLeader();
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw EtcdErrors.Timeout();
        }
        finally
        {
            _writes.TryRemove(new KeyValuePair<ByteString, TaskCompletionSource<KvResult>>(command.RequestId, waiter));
        }
    }

    /// <summary>During an election requests wait (up to their timeout) rather than fail: a leader usually comes within an election timeout.</summary>
    private async Task WaitForLeaderAsync(CancellationToken ct)
    {
        try
        {
            while (Volatile.Read(ref _leader) == 0) await Task.Delay(_options.TickInterval, ct);
        }
        catch (OperationCanceledException)
        {
            throw EtcdErrors.NoLeader();
        }
    }

    /// <summary>Waits until this member has applied everything committed when the read arrived (ReadIndex).</summary>
    internal async Task WaitLinearizableAsync(CancellationToken ct)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(_options.RequestTimeout);
        var context = ByteString.CopyFrom(Guid.NewGuid().ToByteArray());
        var waiter = _reads.GetOrAdd(context, _ => new TaskCompletionSource<ulong>(TaskCreationOptions.RunContinuationsAsynchronously));
        try
        {
            await WaitForLeaderAsync(timeout.Token);
            await _node.ReadIndexAsync(context.ToByteArray(), timeout.Token);
            var index = await waiter.Task.WaitAsync(timeout.Token);
            while (Volatile.Read(ref _applied) < index)
                await Volatile.Read(ref _appliedChanged).Task.WaitAsync(timeout.Token);
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw EtcdErrors.Timeout();
        }
        finally
        {
            _reads.TryRemove(context, out _);
        }
    }

    internal async Task<RangeResponse> RangeAsync(RangeRequest request, CancellationToken ct)
    {
        KvApplier.ValidateRange(request);
        if (!request.Serializable) await WaitLinearizableAsync(ct);
        var response = await _store.RangeAsync(request, ct);
        response.Header = Header(response.Header.Revision);
        return response;
    }

    internal async Task<StatusResponse> StatusAsync(CancellationToken ct)
    {
        var status = await _node.StatusAsync(ct);
        var state = await _store.ReadStateAsync(ct);
        return new StatusResponse
        {
            Header = Header(state.Revision),
            Version = EtcdVersion,
            Leader = status.Lead,
            RaftIndex = status.Commit,
            RaftTerm = status.Term,
            RaftAppliedIndex = state.AppliedIndex,
            IsLearner = status.Learners.Contains(_options.NodeId),
        };
    }

    internal IReadOnlyList<Member> Members()
    {
        var voters = _confState.Voters.Concat(_confState.VotersOutgoing).ToHashSet();
        var learners = _confState.Learners.Concat(_confState.LearnersNext).ToHashSet();
        var list = new List<Member>();
        foreach (var m in _options.Members)
        {
            if (!voters.Contains(m.Id) && !learners.Contains(m.Id)) continue;
            list.Add(new Member { ID = m.Id, Name = m.Name, PeerURLs = { m.PeerUrl }, ClientURLs = { m.ClientUrl }, IsLearner = learners.Contains(m.Id) });
        }
        return list;
    }

    internal async Task<IReadOnlyList<Member>> RemoveMemberAsync(ulong id, CancellationToken ct)
    {
        if (Members().All(m => m.ID != id)) throw EtcdErrors.MemberNotFound();
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(_options.RequestTimeout);
        try
        {
            await _node.ProposeConfChangeAsync(ConfChanges.RemoveNode(id), timeout.Token);
            while (Members().Any(m => m.ID == id))
                await Volatile.Read(ref _appliedChanged).Task.WaitAsync(timeout.Token);
            return Members();
        }
        catch (ProposalDroppedException)
        {
            throw EtcdErrors.NoLeader();
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw EtcdErrors.Timeout();
        }
    }

    internal async Task MoveLeaderAsync(ulong target, CancellationToken ct)
    {
        var status = await _node.StatusAsync(ct);
        if (!status.IsLeader) throw EtcdErrors.NotLeader();
        if (!status.Voters.Contains(target) && !status.VotersOutgoing.Contains(target)) throw EtcdErrors.BadLeaderTransferee();
        await _node.TransferLeadershipAsync(target, ct);
        var deadline = DateTime.UtcNow + _options.RequestTimeout;
        while (Volatile.Read(ref _leader) != target)
        {
            if (DateTime.UtcNow > deadline) throw EtcdErrors.Timeout();
            await Task.Delay(50, ct);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        if (_clientServer is not null) await _clientServer.DisposeAsync();
        if (_node is not null) await _node.StopAsync();
        try { await _loop; } catch (Exception e) { _logger.LogDebug("raft loop ended: {Error}", e.Message); }
        if (_transport is not null) await _transport.DisposeAsync();
        if (_peerServer is not null) await _peerServer.DisposeAsync();
        if (_store is not null) await _store.DisposeAsync();
        if (_raftStorage is not null) await _raftStorage.DisposeAsync();
        foreach (var w in _writes.Values) w.TrySetException(EtcdErrors.Stopped());
        _stop.Dispose();
    }
}
