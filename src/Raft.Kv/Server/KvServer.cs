using System.Collections.Concurrent;
using System.Net;
using System.Threading.Channels;
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
using Raft.Transport.Grpc.Peers;
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
    /// <summary>etcd's default --max-learners.</summary>
    private const int MaxLearners = 1;

    private readonly KvServerOptions _options;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<ByteString, TaskCompletionSource<KvResult>> _writes = new();
    private readonly CancellationTokenSource _stop = new();
    private PostgresRaftStorage _raftStorage = null!;
    private PostgresKvStore _store = null!;
    private Node _node = null!;
    private RaftTransport _transport = null!;
    private RaftPeerService _peerService = null!;
    private GrpcServer _peerServer = null!;
    private GrpcServer _clientServer = null!;
    private Task _loop = Task.CompletedTask;
    // Linearizable reads waiting for the next ReadIndex request, the signal that one is wanted, and
    // the one request out (the read-index loop sends one at a time; the raft loop answers it).
    private TaskCompletionSource<ulong> _nextReadIndex = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private ReadIndexRequest? _readIndexOut;
    private readonly Channel<bool> _readIndexWanted =
        Channel.CreateBounded<bool>(new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropWrite, SingleReader = true });
    private long _readIndexRequests;
    // etcd's server sends an unanswered ReadIndex again after the same pause.
    private static readonly TimeSpan ReadIndexRetry = TimeSpan.FromMilliseconds(500);
    private TaskCompletionSource _appliedChanged = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private ulong _applied;
    private ulong _lastSnapshot;
    private ulong _term;
    private ulong _leader;
    private ConfState _confState = ConfStateModule.empty;
    // Members' names and URLs as the applied configuration changes left them (by id).
    private IReadOnlyDictionary<ulong, Member> _memberRecords = new Dictionary<ulong, Member>();
    // Members removed from the cluster, for good: their messages are refused with a status that tells them to stop.
    private IReadOnlySet<ulong> _removedMembers = new HashSet<ulong>();
    private bool _wasMember;
    private bool _snapshotAfterConfChange;
    private readonly TaskCompletionSource _removed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly SemaphoreSlim _membershipChange = new(1, 1);
    private Task _publish = Task.CompletedTask;
    private Task _compactor = Task.CompletedTask;

    private KvServer(KvServerOptions options, ILogger logger)
    {
        _options = options;
        _logger = logger;
    }

    public Uri ClientAddress => _clientServer.Address;
    public Uri PeerAddress => _peerServer.Address;
    public ulong Applied => Volatile.Read(ref _applied);

    /// <summary>
    /// Completes when this member learns that it was removed from the cluster: by applying the
    /// configuration change that removed it, from its own store at start, or from a peer that
    /// refuses its messages as a removed member's (it missed the change: the leader stops sending
    /// to a member once it applies its removal). It no longer belongs to the cluster.
    /// </summary>
    public Task Removed => _removed.Task;

    /// <summary>The raft and read-index loops: faults when an error (a storage failure) stops them, after which this member can no longer serve.</summary>
    public Task RaftLoop => _loop;

    public ulong Id => _options.NodeId;

    /// <summary>etcd's --max-txn-ops, as the store applies it.</summary>
    internal int MaxTxnOps => _options.Store.MaxTxnOps;

    /// <summary>First index still in this member's raft log (entries before it were compacted into a snapshot).</summary>
    internal ulong FirstLogIndex => _raftStorage.FirstIndex().ResultValue;

    /// <summary>Index of the newest snapshot this member holds (taken or received).</summary>
    internal ulong SnapshotIndex => Volatile.Read(ref _lastSnapshot);

    /// <summary>ReadIndex requests this member sent to raft (linearizable reads share them).</summary>
    internal long ReadIndexRequests => Interlocked.Read(ref _readIndexRequests);

    /// <summary>What arrives from peers: refusals (another cluster, non-members) are counted there.</summary>
    internal RaftPeerService PeerService => _peerService;

    /// <summary>The members this one knows were removed from the cluster (its store's record, as last applied).</summary>
    internal IReadOnlySet<ulong> RemovedMembers => Volatile.Read(ref _removedMembers);

    /// <summary>What goes to peers: dropped messages, snapshots sent and failed.</summary>
    internal RaftTransport PeerTransport => _transport;

    /// <summary>TLS connections to the peer endpoint refused (no certificate, or one from another authority).</summary>
    internal long RefusedPeerHandshakes => _peerServer.RefusedHandshakes;

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
        var initial = _raftStorage.InitialState().ResultValue;
        _confState = initial.Item2;
        _term = initial.Item1.Term;
        var fresh = _raftStorage.LastIndex().ResultValue == 0 && SnapshotModule.isEmpty(snapshot);
        // A joining member learns its own record from the log (MemberAdd), as the others did.
        // Client URLs are seeded only when every member's is given (as 'up' gives them); otherwise (etcd's
        // --initial-cluster names peer URLs only) each member publishes its own, so all tables agree.
        var clientUrlsKnown = _options.Members.All(m => m.ClientUrl.Length > 0);
        if (fresh)
            await _store.SeedMembersAsync(_options.Members.Where(m => !_options.JoinExisting || m.Id != _options.NodeId)
                .Select(m => ToMember(clientUrlsKnown ? m : m with { ClientUrl = "" })), ct);
        await ReloadMembersAsync(ct);
        if (_removedMembers.Contains(_options.NodeId) && _removed.TrySetResult())
            _logger.LogWarning("member {Id:x} was removed from the cluster (its store says so); it does not serve, and its data must not be used to rejoin",
                _options.NodeId);

        var raftOptions = new RaftNodeOptions
        {
            Id = _options.NodeId,
            ElectionTick = _options.ElectionTick,
            HeartbeatTick = _options.HeartbeatTick,
            TickInterval = _options.TickInterval,
            // Raft's configuration is the snapshot's: the committed entries after it are delivered
            // again so their configuration changes reach raft (the store skips what it applied).
            Applied = _lastSnapshot,
            MaxSizePerMsg = 1024 * 1024,
            MaxInflightMsgs = 256,
            CheckQuorum = true,
            PreVote = true,
        };
        // A member joining a running cluster starts with no configuration (etcd's RestartNode with no peers).
        _node = fresh && !_options.JoinExisting
            ? Node.Start(raftOptions, _raftStorage, _options.Members.Select(m => m.Id), _logger)
            : Node.Restart(raftOptions, _raftStorage, _logger);

        // Raft messages go over the library's transport: a stream per peer with a bounded queue
        // (dropping and reporting the peer unreachable when full), snapshots in chunks with their
        // outcome reported to raft, and the sender's cluster and membership checked on arrival.
        _transport = new RaftTransport(new RaftTransportOptions
        {
            ClusterId = _options.ClusterId,
            NodeId = _options.NodeId,
            SnapshotChunkBytes = _options.PeerSnapshotChunkBytes,
        }, ReportUnreachable, ReportSnapshot, _logger, ReportRemovedByPeer);
        _peerService = new RaftPeerService(_options.ClusterId, _options.NodeId, new NodeMessageSink(this), logger: _logger);
        var peerServices = new GrpcServiceRegistry();
        _peerService.Register(peerServices);
        EtcdServices.RegisterPeer(peerServices, this);
        _peerServer = await GrpcServer.StartAsync(new GrpcServerOptions
        {
            Endpoint = EndpointOf(_options.ListenPeerUrl ?? _options.Self.PeerUrl),
            MaxReceiveMessageSize = PeerMessageLimit,
            MaxSendMessageSize = PeerMessageLimit,
            Tls = _options.PeerTls is { } peerTls ? new GrpcTlsFiles(peerTls.CertFile, peerTls.KeyFile, peerTls.TrustedCaFile, peerTls.ClientCertAuth) : null,
        }, peerServices, _logger, ct);
        // etcd clients may name the endpoint by URL in :authority (etcdctl 3.4 'endpoint status' does).
        // As etcd: gRPC takes requests up to the limit plus room for framing; a write above the limit is refused with its own error.
        _clientServer = await GrpcServer.StartAsync(new GrpcServerOptions
            {
                Endpoint = EndpointOf(_options.ListenClientUrl ?? _options.Self.ClientUrl), AcceptUrlAuthority = true,
                Tls = _options.ClientTls is { } clientTls ? new GrpcTlsFiles(clientTls.CertFile, clientTls.KeyFile, clientTls.TrustedCaFile, clientTls.ClientCertAuth) : null,
                MaxReceiveMessageSize = _options.MaxRequestBytes + EtcdServices.GrpcOverheadBytes,
            },
            EtcdServices.Register(new GrpcServiceRegistry(), this), _logger, ct);
        _transport.SetPeers(PeerAddresses());
        _loop = RunLoopsAsync(_stop.Token);
        _publish = Task.Run(() => PublishAttributesAsync(_stop.Token), CancellationToken.None);
        if (_options.AutoCompactionRetention > 0) _compactor = Task.Run(() => AutoCompactAsync(_stop.Token), CancellationToken.None);
    }

    private static Member ToMember(KvMember m) =>
        new() { ID = m.Id, Name = m.Name, PeerURLs = { m.PeerUrl }, ClientURLs = { m.ClientUrl.Length > 0 ? [m.ClientUrl] : [] } };

    /// <summary>Largest message between members: a batch of raft messages or a snapshot chunk (batches are kept to a few MiB).</summary>
    private const int PeerMessageLimit = 64 * 1024 * 1024;

    /// <summary>The scheme of the peer URLs this member dials: https with peer TLS, http without.</summary>
    private string PeerScheme => _options.PeerTls is null ? Uri.UriSchemeHttp : Uri.UriSchemeHttps;

    /// <summary>How to reach each member (this one included; the transport skips it), as the applied member table has it.</summary>
    private Dictionary<ulong, GrpcClientOptions> PeerAddresses()
    {
        var addresses = new Dictionary<ulong, GrpcClientOptions>();
        foreach (var m in Volatile.Read(ref _memberRecords).Values.Where(m => m.PeerURLs.Count > 0))
        {
            // A URL this member cannot dial (https:// without peer TLS, or http:// with it) is skipped
            // and said, never fatal: the table may predate a change of this member's TLS settings.
            if (!Uri.TryCreate(m.PeerURLs[0], UriKind.Absolute, out var url) || url.Scheme != PeerScheme)
            {
                if (m.ID != _options.NodeId)
                    _logger.LogWarning("member {Id:x}: peer URL {Url} of member {Peer:x} is not {Scheme}://; no messages are sent to it",
                        _options.NodeId, m.PeerURLs[0], m.ID, PeerScheme);
                continue;
            }
            addresses[m.ID] = new GrpcClientOptions
            {
                Address = url,
                Tls = _options.PeerTls is { } tls ? new GrpcTlsFiles(tls.CertFile, tls.KeyFile, tls.TrustedCaFile) : null,
                MaxSendMessageSize = PeerMessageLimit,
                MaxReceiveMessageSize = PeerMessageLimit,
                ConnectTimeout = TimeSpan.FromSeconds(2),
            };
        }
        return addresses;
    }

    /// <summary>Options to dial another member's client URL (a follower forwarding to the leader), with this member's client TLS files.</summary>
    private GrpcClientOptions ClientDialOptions(string url)
    {
        var uri = new Uri(url);
        var tls = _options.ClientTls is { } t && uri.Scheme == Uri.UriSchemeHttps ? new GrpcTlsFiles(t.CertFile, t.KeyFile, t.TrustedCaFile) : null;
        return new GrpcClientOptions { Address = uri, Tls = tls };
    }

    private void ReportUnreachable(ulong peer)
    {
        try
        {
            _node.ReportUnreachable(peer);
        }
        catch (NodeStoppedException)
        {
            // Stopping: nobody is left to tell.
        }
    }

    private void ReportSnapshot(ulong peer, bool taken)
    {
        try
        {
            _node.ReportSnapshot(peer, taken ? SnapshotStatus.SnapshotFinish : SnapshotStatus.SnapshotFailure);
        }
        catch (NodeStoppedException)
        {
        }
    }

    /// <summary>
    /// A peer refused this member's messages because it was removed from the cluster: it missed the
    /// entry that removed it (cut off or down while it was applied) and stops as if it had applied
    /// it, as an etcd member stops on its peers' "removed" answer.
    /// </summary>
    private void ReportRemovedByPeer(ulong peer)
    {
        if (_removed.TrySetResult())
            _logger.LogWarning("member {Id:x} was removed from the cluster: member {Peer:x} refuses its messages as a removed member's; it stops serving, and its data must not be used to rejoin",
                _options.NodeId, peer);
    }

    /// <summary>
    /// Where the peer endpoint hands raft messages: stepped into the node, in order. A sender is a
    /// member when the applied member table or configuration names it (a member that joins starts
    /// with no configuration, but with the member table it was given).
    /// </summary>
    private sealed class NodeMessageSink(KvServer server) : IRaftMessageSink
    {
        public bool IsMember(ulong nodeId)
        {
            if (Volatile.Read(ref server._memberRecords).ContainsKey(nodeId)) return true;
            var cs = Volatile.Read(ref server._confState);
            return cs.Voters.Contains(nodeId) || cs.Learners.Contains(nodeId) || cs.VotersOutgoing.Contains(nodeId) || cs.LearnersNext.Contains(nodeId);
        }

        public bool IsRemoved(ulong nodeId) => Volatile.Read(ref server._removedMembers).Contains(nodeId);

        public async ValueTask DeliverAsync(ulong from, IReadOnlyList<Message> messages, CancellationToken cancellationToken)
        {
            try
            {
                foreach (var m in messages) await server._node.StepAsync(m, cancellationToken);
            }
            catch (NodeStoppedException e)
            {
                throw new GrpcCallException(StatusCode.Unavailable, $"member {server._options.NodeId:x} is stopping", e);
            }
        }

        public async ValueTask DeliverSnapshotAsync(ulong from, Message message, CancellationToken cancellationToken) =>
            await DeliverAsync(from, [message], cancellationToken);
    }

    private async Task ReloadMembersAsync(CancellationToken ct)
    {
        var (records, removed) = await _store.ReadMembershipAsync(ct);
        Volatile.Write(ref _memberRecords, records.ToDictionary(m => m.ID));
        Volatile.Write(ref _removedMembers, removed);
    }

    /// <summary>After the configuration changed: peers' addresses follow it, and a member that was removed says so.</summary>
    private async Task OnMembershipChangedAsync(CancellationToken ct)
    {
        await ReloadMembersAsync(ct);
        _transport.SetPeers(PeerAddresses());
        _snapshotAfterConfChange = true;
        var self = _options.NodeId;
        var isMember = _confState.Voters.Contains(self) || _confState.Learners.Contains(self)
                       || _confState.VotersOutgoing.Contains(self) || _confState.LearnersNext.Contains(self);
        if (isMember) _wasMember = true;
        else if (_wasMember && _removed.TrySetResult())
            _logger.LogWarning("member {Id:x} was removed from the cluster; it stops serving", self);
    }

    /// <summary>
    /// A member publishes its name and client URLs through raft (as etcd's member attributes), so
    /// a member added with only peer URLs becomes "started" in everyone's member list.
    /// </summary>
    private async Task PublishAttributesAsync(CancellationToken ct)
    {
        var self = _options.Self with { Name = _options.Name ?? _options.Self.Name };
        try
        {
            while (!ct.IsCancellationRequested)
            {
                await Task.Delay(_options.TickInterval * 3, ct);
                if (Volatile.Read(ref _leader) == 0 || !_wasMember) continue;
                if (Volatile.Read(ref _memberRecords).TryGetValue(self.Id, out var record)
                    && record.Name == self.Name && record.ClientURLs.SequenceEqual([self.ClientUrl])) return;
                var attributes = new Member { ID = self.Id, Name = self.Name, ClientURLs = { self.ClientUrl } };
                try
                {
                    using var exclusive = await BeginMembershipChangeAsync(ct);
                    await ChangeMembershipAsync(UpdateNode(self.Id, attributes),
                        () => Volatile.Read(ref _memberRecords).TryGetValue(self.Id, out var r) && r.Name == self.Name, ct);
                }
                catch (EtcdException e)
                {
                    _logger.LogDebug("publishing the attributes of {Id:x} failed, will retry: {Error}", self.Id, e.Message);
                }
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
        }
        catch (NodeStoppedException)
        {
        }
    }

    /// <summary>
    /// etcd's revision auto-compaction: the leader keeps the last <see cref="KvServerOptions.AutoCompactionRetention"/>
    /// revisions of history by proposing Compact through raft, so every member compacts at the same
    /// revision. It compacts once a tenth of the retention has accumulated, not at every write.
    /// </summary>
    private async Task AutoCompactAsync(CancellationToken ct)
    {
        var retention = _options.AutoCompactionRetention;
        try
        {
            while (true)
            {
                await Task.Delay(_options.AutoCompactionInterval, ct);
                if (Volatile.Read(ref _leader) != _options.NodeId) continue;
                KvStoreState state;
                try
                {
                    state = await _store.ReadStateAsync(ct);
                }
                catch (Npgsql.NpgsqlException e)
                {
                    _logger.LogDebug("auto compaction: the store cannot be read now: {Error}", e.Message);
                    continue;
                }
                var target = state.Revision - retention;
                if (target <= state.CompactRevision + Math.Max(1, retention / 10)) continue;
                try
                {
                    var result = await WriteAsync(new KvCommand { Compact = new CompactionRequest { Revision = target } }, ct);
                    if (result.ResultCase == KvResult.ResultOneofCase.Error)
                        _logger.LogDebug("auto compaction to {Revision} refused: {Error}", target, result.Error.Message);
                    else
                        _logger.LogInformation("member {Id:x}: compacted the history to revision {Revision} (keeping {Retention})", _options.NodeId, target, retention);
                }
                catch (Exception e) when (e is EtcdException or Npgsql.NpgsqlException or KvStoreException)
                {
                    _logger.LogDebug("auto compaction to {Revision} failed, will retry: {Error}", target, e.Message);
                }
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
        }
        catch (NodeStoppedException)
        {
        }
    }

    private static IPEndPoint EndpointOf(string url)
    {
        var uri = new Uri(url);
        var address = uri.Host == "localhost" ? IPAddress.Loopback : IPAddress.Parse(uri.Host);
        return new IPEndPoint(address, uri.Port);
    }

    // ---- the raft loop (persist, send, apply, advance) and the read-index loop ---------------

    /// <summary>
    /// Runs the raft loop and the read-index loop until the member stops. Either one's failure stops the
    /// other (the member can no longer serve) and faults the returned task.
    /// </summary>
    private async Task RunLoopsAsync(CancellationToken stop)
    {
        using var loops = CancellationTokenSource.CreateLinkedTokenSource(stop);
        var raft = Task.Run(() => RunLoopAsync("raft", RaftLoopAsync, loops), CancellationToken.None);
        var readIndex = Task.Run(() => RunLoopAsync("read-index", ReadIndexLoopAsync, loops), CancellationToken.None);
        await Task.WhenAll(raft, readIndex);
    }

    private async Task RunLoopAsync(string name, Func<CancellationToken, Task> loop, CancellationTokenSource loops)
    {
        try
        {
            await loop(loops.Token);
        }
        catch (Exception e) when (e is OperationCanceledException or NodeStoppedException && loops.IsCancellationRequested)
        {
            // Stopped: by DisposeAsync, or by the other loop's failure (which that loop reports).
        }
        catch (Exception e)
        {
            _logger.LogCritical(e, "{Loop} loop of member {Id:x} failed; the member stops serving", name, _options.NodeId);
            foreach (var w in _writes.Values) w.TrySetException(EtcdErrors.Stopped());
            await loops.CancelAsync();
            throw;
        }
    }

    private async Task RaftLoopAsync(CancellationToken ct)
    {
        while (true)
        {
            var rd = await _node.ReadyAsync(ct);
            if (rd.SoftState is { } soft) Volatile.Write(ref _leader, soft.Lead);
            if (rd.HardState is { } hard) Volatile.Write(ref _term, hard.Term);
            var snapshot = rd.Snapshot is { } s && !SnapshotModule.isEmpty(s) ? s : null;
            // A leader sends before it writes (etcd's raftNode does the same; Raft thesis
            // 10.2.1): its own write overlaps the followers', and it counts itself towards a
            // commit only after its write, when the MsgAppResp to itself is stepped on Advance.
            // Its term and vote were written before it campaigned. Others send after writing:
            // their votes and acknowledgements promise durable state.
            var leaderSends = Volatile.Read(ref _leader) == _options.NodeId;
            if (leaderSends) foreach (var m in rd.PeerMessages) _transport.Send(m);
            await _raftStorage.SaveAsync(rd.HardState, [.. rd.Entries], snapshot, rd.MustSync, ct);
            if (snapshot is not null)
            {
                await _store.ImportSnapshotAsync(new MemoryStream(snapshot.Data), ct);
                _confState = snapshot.Metadata.ConfState;
                Volatile.Write(ref _lastSnapshot, snapshot.Metadata.Index);
                await OnMembershipChangedAsync(ct);
                SetApplied(snapshot.Metadata.Index);
            }
            if (!leaderSends) foreach (var m in rd.PeerMessages) _transport.Send(m);
            // Applied in this loop, before Advance. An apply loop beside this one (as etcd's server
            // has) was measured slower here: each Ready then carried fewer entries, and a
            // PostgreSQL transaction per save and per apply costs more CPU per put than it saved
            // in waiting (docs/performance.md).
            if (rd.CommittedEntries.Count > 0) await ApplyAsync(rd.CommittedEntries, ct);
            foreach (var rs in rd.ReadStates)
                if (Volatile.Read(ref _readIndexOut) is { } request && rs.RequestCtx.AsSpan().SequenceEqual(request.Context))
                    request.Answer.TrySetResult(rs.Index);
            _node.Advance();
            await MaybeSnapshotAsync(ct);
        }
    }

    /// <summary>Waits, apply after apply, until <paramref name="done"/> holds.</summary>
    private async Task WaitForAppliesAsync(Func<bool> done, CancellationToken ct)
    {
        while (!done())
            await Volatile.Read(ref _appliedChanged).Task.WaitAsync(ct);
    }

    private async Task ApplyAsync(IReadOnlyList<Entry> entries, CancellationToken ct)
    {
        var results = await ApplyToStoreAsync(entries, ct);
        var membershipChanged = false;
        foreach (var entry in entries)
        {
            // Raft delivers each committed entry once per start (from the snapshot on): every
            // configuration change goes to raft, even one the store had applied before a restart.
            if (!entry.TryGetConfChange(out var cc)) continue;
            _confState = await _node.ApplyConfChangeAsync(cc, ct);
            membershipChanged = true;
        }
        if (membershipChanged) await OnMembershipChangedAsync(ct);
        foreach (var r in results)
        {
            if (r.Command is { } c && WaiterKey(c) is { IsEmpty: false } key && r.Result is { } result && _writes.TryRemove(key, out var waiter))
                waiter.TrySetResult(result);
        }
        SetApplied(entries[^1].Index);
    }

    /// <summary>
    /// Applies committed entries to the store. Applies commit asynchronously
    /// (<see cref="PostgresKvStoreOptions.AsynchronousApplyCommit"/>), so a PostgreSQL crash may
    /// undo the last of them while this process runs on: those entries are still in the raft log
    /// (a compaction follows a synchronous commit on the same server, which made them durable), and
    /// are applied again from it before the new ones, with the same results.
    /// </summary>
    private async Task<IReadOnlyList<AppliedEntry>> ApplyToStoreAsync(IReadOnlyList<Entry> entries, CancellationToken ct)
    {
        try
        {
            return await _store.ApplyAsync(entries, ct);
        }
        catch (KvApplyGapException gap)
        {
            await ApplyAgainFromLogAsync(gap.AppliedIndex, entries[0].Index, ct);
            return await _store.ApplyAsync(entries, ct);
        }
    }

    /// <summary>
    /// Applies the raft log's entries in [<paramref name="storeApplied"/> + 1, <paramref name="hi"/>)
    /// to the store again. Safe beside the raft loop: the store's appliers take turns on a row lock
    /// and skip what is applied.
    /// </summary>
    private async Task ApplyAgainFromLogAsync(ulong storeApplied, ulong hi, CancellationToken ct)
    {
        var lo = storeApplied + 1;
        if (lo >= hi) return;
        _logger.LogWarning("member {Id:x}: the store's applied index went back to {Applied} (a PostgreSQL crash undid asynchronous applies); applying entries {Lo}-{Hi} again from the raft log",
            _options.NodeId, storeApplied, lo, hi - 1);
        var missing = _raftStorage.Entries(lo, hi, ulong.MaxValue);
        if (missing.IsError)
            throw new KvStoreException($"member {_options.NodeId:x}: entries {lo}-{hi - 1} to apply again are not in the raft log: {StorageErrorModule.message(missing.ErrorValue)}");
        await _store.ApplyAsync(missing.ResultValue, ct);
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
        if (_snapshotAfterConfChange && _applied > _lastSnapshot && decision.IsNone)
        {
            // The newest snapshot must hold the newest configuration: a member added after it would
            // be sent a snapshot that does not list it, and raft refuses such a snapshot.
            var keep = _options.Compaction.KeepEntries;
            decision = new LogCompactionDecision(_applied, _applied > keep ? _applied - keep : 0);
        }
        _snapshotAfterConfChange = false;
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
        // etcd's limit on a proposal (--max-request-bytes), checked before anything is proposed.
        if (command.CalculateSize() > _options.MaxRequestBytes) throw EtcdErrors.RequestTooLarge();
        var nowMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        // Without the client's id the entry carries a waiter id: enough to find this caller when the
        // entry is applied, and the store does not remember it (nobody could retry with it).
        if (command.RequestId.IsEmpty) command.WaiterId = ByteString.CopyFrom(Guid.NewGuid().ToByteArray());
        else if (await _store.FindAppliedRequestAsync(command.RequestId, nowMs, ct) is { } known) return known;
        command.ProposedAtUnixMs = nowMs;

        var key = WaiterKey(command);
        var waiter = _writes.GetOrAdd(key, _ => new TaskCompletionSource<KvResult>(TaskCreationOptions.RunContinuationsAsynchronously));
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
            _writes.TryRemove(new KeyValuePair<ByteString, TaskCompletionSource<KvResult>>(key, waiter));
        }
    }

    /// <summary>
    /// What a write's caller waits under: the client's request id when it gave one (entries from
    /// older raftv versions carry a server-made one there too), else the proposer's waiter id.
    /// </summary>
    private static ByteString WaiterKey(KvCommand command) => command.RequestId.IsEmpty ? command.WaiterId : command.RequestId;

    /// <summary>During an election requests wait (up to their timeout) rather than fail: a leader usually comes within an election timeout.</summary>
    private async Task WaitForLeaderAsync(CancellationToken ct)
    {
        if (_removed.Task.IsCompleted) throw EtcdErrors.Stopped();
        try
        {
            while (Volatile.Read(ref _leader) == 0) await Task.Delay(_options.TickInterval, ct);
        }
        catch (OperationCanceledException)
        {
            throw EtcdErrors.NoLeader();
        }
    }

    /// <summary>
    /// Waits until this member has applied everything committed when the read arrived (ReadIndex).
    /// Reads share ReadIndex requests, as etcd's server batches them: a read joins the next request
    /// the read-index loop sends, so one heartbeat round confirms the leadership for all reads that
    /// arrived meanwhile instead of one round per read.
    /// </summary>
    internal async Task WaitLinearizableAsync(CancellationToken ct)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(_options.RequestTimeout);
        try
        {
            await WaitForLeaderAsync(timeout.Token);
            var round = Volatile.Read(ref _nextReadIndex);
            _readIndexWanted.Writer.TryWrite(true);
            var index = await round.Task.WaitAsync(timeout.Token);
            await WaitForAppliesAsync(() => Volatile.Read(ref _applied) >= index, timeout.Token);
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw EtcdErrors.Timeout();
        }
    }

    private async Task ReadIndexLoopAsync(CancellationToken ct)
    {
        while (await _readIndexWanted.Reader.WaitToReadAsync(ct))
        {
            _readIndexWanted.Reader.TryRead(out _);
            // Every read of this round arrived before the swap, so before its request is sent:
            // the index it gets is at least the commit index when each of them arrived. Later reads
            // join the next round.
            var round = Interlocked.Exchange(ref _nextReadIndex, new TaskCompletionSource<ulong>(TaskCreationOptions.RunContinuationsAsynchronously));
            try
            {
                round.TrySetResult(await ReadIndexRoundAsync(ct));
            }
            catch (Exception e) when (!ct.IsCancellationRequested)
            {
                round.TrySetException(e);
            }
        }
    }

    /// <summary>
    /// One ReadIndex request, sent again every <see cref="ReadIndexRetry"/> while unanswered (a
    /// leader change or a lost message drops it without an answer), until the request timeout.
    /// </summary>
    private async Task<ulong> ReadIndexRoundAsync(CancellationToken ct)
    {
        var request = new ReadIndexRequest(Guid.NewGuid().ToByteArray(), new TaskCompletionSource<ulong>(TaskCreationOptions.RunContinuationsAsynchronously));
        Volatile.Write(ref _readIndexOut, request);
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(ct);
        deadline.CancelAfter(_options.RequestTimeout);
        try
        {
            while (true)
            {
                await WaitForLeaderAsync(deadline.Token);
                await _node.ReadIndexAsync(request.Context, deadline.Token);
                Interlocked.Increment(ref _readIndexRequests);
                try
                {
                    return await request.Answer.Task.WaitAsync(ReadIndexRetry, deadline.Token);
                }
                catch (TimeoutException)
                {
                    // Unanswered: ask again with the same context (a late answer to the first is as good).
                }
            }
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw EtcdErrors.Timeout();
        }
        finally
        {
            Volatile.Write(ref _readIndexOut, null);
        }
    }

    /// <summary>A ReadIndex request: its context, as raft returns it in the ReadState, and the answer's index.</summary>
    private sealed record ReadIndexRequest(byte[] Context, TaskCompletionSource<ulong> Answer);

    internal async Task<RangeResponse> RangeAsync(RangeRequest request, CancellationToken ct)
    {
        KvApplier.ValidateRange(request);
        if (!request.Serializable) await WaitLinearizableAsync(ct);
        // Everything applied here so far must be in the answer, even after a PostgreSQL crash
        // undid asynchronous applies that the raft loop has not yet noticed.
        var applied = Volatile.Read(ref _applied);
        RangeResponse response;
        try
        {
            response = await _store.RangeAsync(request, applied, ct);
        }
        catch (KvApplyGapException gap)
        {
            await ApplyAgainFromLogAsync(gap.AppliedIndex, applied + 1, ct);
            response = await _store.RangeAsync(request, applied, ct);
        }
        response.Header = Header(response.Header.Revision);
        return response;
    }

    internal async Task<StatusResponse> StatusAsync(CancellationToken ct)
    {
        var status = await _node.StatusAsync(ct);
        var state = await _store.ReadStateAsync(ct);
        var (dbSize, inUse) = await _store.SizeAsync(ct);
        return new StatusResponse
        {
            Header = Header(state.Revision),
            Version = EtcdVersion,
            DbSize = dbSize,
            DbSizeInUse = inUse,
            Leader = status.Lead,
            RaftIndex = status.Commit,
            RaftTerm = status.Term,
            RaftAppliedIndex = state.AppliedIndex,
            IsLearner = status.Learners.Contains(_options.NodeId),
        };
    }

    // ---- cluster membership (etcd's Cluster service) -----------------------------------------

    private static ConfChangeI UpdateNode(ulong id, Member attributes) =>
        ConfChangeI.NewConfChangeV1(new ConfChange(ConfChangeType.ConfChangeUpdateNode, id, attributes.ToByteArray(), 0UL));

    /// <summary>The applied configuration: raft's voters and learners with the names and URLs the member table has.</summary>
    internal IReadOnlyList<Member> Members()
    {
        var cs = _confState;
        var learners = cs.Learners.Concat(cs.LearnersNext).ToHashSet();
        var ids = cs.Voters.Concat(cs.VotersOutgoing).Concat(learners).Distinct().Order();
        var records = Volatile.Read(ref _memberRecords);
        var list = new List<Member>();
        foreach (var id in ids)
        {
            var m = new Member { ID = id, IsLearner = learners.Contains(id) };
            if (records.TryGetValue(id, out var r))
            {
                m.Name = r.Name;
                m.PeerURLs.AddRange(r.PeerURLs);
                m.ClientURLs.AddRange(r.ClientURLs);
            }
            list.Add(m);
        }
        return list;
    }

    /// <summary>Proposes a configuration change and waits until it is applied here (<paramref name="applied"/> holds).</summary>
    private async Task ChangeMembershipAsync(ConfChangeI change, Func<bool> applied, CancellationToken ct)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(_options.RequestTimeout);
        try
        {
            await WaitForLeaderAsync(timeout.Token);
            await _node.ProposeConfChangeAsync(change, timeout.Token);
            await WaitForAppliesAsync(applied, timeout.Token);
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

    private void ValidatePeerUrls(IEnumerable<string> urls)
    {
        var list = urls.ToList();
        if (list.Count == 0) throw EtcdErrors.MemberBadUrls();
        foreach (var u in list)
        {
            if (!Uri.TryCreate(u, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https")
                || uri.AbsolutePath != "/" || uri.Port <= 0 || Uri.CheckHostName(uri.Host.Trim('[', ']')) == UriHostNameType.Unknown)
                throw EtcdErrors.MemberBadUrls();
            // Members dial each other with one scheme: https:// with peer TLS, http:// without.
            if (uri.Scheme != PeerScheme) throw EtcdErrors.MemberBadUrls();
        }
    }

    private static string NormalizeUrl(string url) => new Uri(url).GetLeftPart(UriPartial.Authority);

    /// <summary>
    /// One membership change at a time on this member: raft drops a configuration change proposed
    /// while another is unapplied, and its request would only time out. A change under way here, or
    /// already in this member's log (another member's, such as a new member publishing its name),
    /// gets a few seconds to finish; if it has not, the new one is refused with a clear error.
    /// (Two changes sent to two different members at the same instant can still race; one of them
    /// then times out, as in etcd.)
    /// </summary>
    internal async Task<IDisposable> BeginMembershipChangeAsync(CancellationToken ct)
    {
        var deadline = DateTime.UtcNow + PendingConfChangeWait;
        if (!await _membershipChange.WaitAsync(PendingConfChangeWait, ct)) throw EtcdErrors.MembershipChangeInProgress();
        try
        {
            while (HasUnappliedConfChange())
            {
                if (DateTime.UtcNow >= deadline) throw EtcdErrors.MembershipChangeInProgress();
                try
                {
                    await Volatile.Read(ref _appliedChanged).Task.WaitAsync(TimeSpan.FromMilliseconds(100), ct);
                }
                catch (TimeoutException)
                {
                }
            }
        }
        catch
        {
            _membershipChange.Release();
            throw;
        }
        return new MembershipChange(_membershipChange);
    }

    /// <summary>How long a membership change waits for one under way to finish before it is refused.</summary>
    private static readonly TimeSpan PendingConfChangeWait = TimeSpan.FromSeconds(3);

    private sealed class MembershipChange(SemaphoreSlim gate) : IDisposable
    {
        private int _released;
        public void Dispose() { if (Interlocked.Exchange(ref _released, 1) == 0) gate.Release(); }
    }

    /// <summary>Whether this member's log holds a configuration change that is not applied yet.</summary>
    private bool HasUnappliedConfChange()
    {
        var applied = Volatile.Read(ref _applied);
        var last = _raftStorage.LastIndex().ResultValue;
        if (last <= applied) return false;
        var entries = _raftStorage.Entries(applied + 1, last + 1, ulong.MaxValue);
        return entries.IsOk && entries.ResultValue.Any(e => !e.Type.IsEntryNormal);
    }

    /// <summary>etcd's strict reconfiguration check: the started voters (those that published their name) must keep a quorum.</summary>
    private void CheckQuorumAfter(int voterDelta, ulong? leaving)
    {
        var members = Members();
        var voters = members.Where(m => !m.IsLearner).ToList();
        var started = voters.Count(m => !string.IsNullOrEmpty(m.Name) && m.ID != leaving);
        var newVoters = voters.Count + voterDelta;
        if (started < newVoters / 2 + 1) throw EtcdErrors.NotEnoughStartedMembers();
    }

    internal async Task<(Member Added, IReadOnlyList<Member> Members)> AddMemberAsync(IReadOnlyList<string> peerUrls, bool isLearner, CancellationToken ct)
    {
        ValidatePeerUrls(peerUrls);
        using var exclusive = await BeginMembershipChangeAsync(ct);
        // Checks read the configuration as committed when the request came, not a lagging copy.
        await WaitLinearizableAsync(ct);
        var wanted = peerUrls.Select(NormalizeUrl).ToHashSet();
        var members = Members();
        if (members.SelectMany(m => m.PeerURLs).Select(NormalizeUrl).Any(wanted.Contains)) throw EtcdErrors.PeerUrlExists();
        if (isLearner)
        {
            if (members.Count(m => m.IsLearner) >= MaxLearners) throw EtcdErrors.TooManyLearners();
        }
        else
        {
            CheckQuorumAfter(+1, null);
        }
        // A removed member's id is never given again (etcd refuses it too): its old process would take it for itself.
        var removed = Volatile.Read(ref _removedMembers);
        ulong id;
        do id = (ulong)Random.Shared.NextInt64(1, long.MaxValue); while (members.Any(m => m.ID == id) || removed.Contains(id));
        var added = new Member { ID = id, PeerURLs = { peerUrls }, IsLearner = isLearner };
        var change = isLearner ? ConfChanges.AddLearner(id, added.ToByteArray()) : ConfChanges.AddNode(id, added.ToByteArray());
        await ChangeMembershipAsync(change, () => Members().Any(m => m.ID == id), ct);
        return (added, Members());
    }

    internal async Task<IReadOnlyList<Member>> RemoveMemberAsync(ulong id, CancellationToken ct)
    {
        using var exclusive = await BeginMembershipChangeAsync(ct);
        await WaitLinearizableAsync(ct);
        var member = Members().FirstOrDefault(m => m.ID == id) ?? throw EtcdErrors.MemberNotFound();
        if (!member.IsLearner) CheckQuorumAfter(-1, id);
        await ChangeMembershipAsync(ConfChanges.RemoveNode(id), () => Members().All(m => m.ID != id), ct);
        return Members();
    }

    internal async Task<IReadOnlyList<Member>> UpdateMemberAsync(ulong id, IReadOnlyList<string> peerUrls, CancellationToken ct)
    {
        ValidatePeerUrls(peerUrls);
        using var exclusive = await BeginMembershipChangeAsync(ct);
        await WaitLinearizableAsync(ct);
        var members = Members();
        if (members.All(m => m.ID != id)) throw EtcdErrors.MemberNotFound();
        var wanted = peerUrls.Select(NormalizeUrl).ToHashSet();
        if (members.Where(m => m.ID != id).SelectMany(m => m.PeerURLs).Select(NormalizeUrl).Any(wanted.Contains)) throw EtcdErrors.PeerUrlExists();
        var update = new Member { ID = id, PeerURLs = { peerUrls } };
        await ChangeMembershipAsync(UpdateNode(id, update),
            () => Members().FirstOrDefault(m => m.ID == id) is not { } m || m.PeerURLs.SequenceEqual(peerUrls), ct);
        return Members();
    }

    /// <summary>
    /// Learner to voter, decided on the leader, which alone knows how far the learner's log is
    /// (a follower forwards the request there, as etcd does).
    /// </summary>
    internal async Task<IReadOnlyList<Member>> PromoteMemberAsync(ulong id, CancellationToken ct)
    {
        await WaitLinearizableAsync(ct);
        var member = Members().FirstOrDefault(m => m.ID == id) ?? throw EtcdErrors.MemberNotFound();
        if (!member.IsLearner) throw EtcdErrors.MemberNotLearner();
        using (var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct))
        {
            timeout.CancelAfter(_options.RequestTimeout);
            await WaitForLeaderAsync(timeout.Token);
        }
        var status = await _node.StatusAsync(ct);
        if (!status.IsLeader)
        {
            var leader = Members().FirstOrDefault(m => m.ID == status.Lead && m.ClientURLs.Count > 0) ?? throw EtcdErrors.NoLeader();
            using var client = new GrpcClient(ClientDialOptions(leader.ClientURLs[0]));
            var response = await client.UnaryAsync(EtcdServices.PromoteMethod, new MemberPromoteRequest { ID = id },
                new GrpcCallOptions(Timeout: _options.RequestTimeout, CancellationToken: ct));
            // Answer once this member has applied the promotion too, so its member list agrees.
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(_options.RequestTimeout);
            try
            {
                await WaitForAppliesAsync(() => Members().FirstOrDefault(m => m.ID == id) is not { IsLearner: true }, timeout.Token);
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                throw EtcdErrors.Timeout();
            }
            return [.. response.Members];
        }
        // etcd's readiness rule: the learner's log matches at least 90% of the leader's.
        var leaderMatch = status.Progress.TryGetValue(_options.NodeId, out var own) ? own.Match : status.Commit;
        if (!status.Progress.TryGetValue(id, out var progress) || progress.Match < leaderMatch * 9 / 10)
            throw EtcdErrors.LearnerNotReady();
        var promoted = new Member { ID = id };
        using var exclusive = await BeginMembershipChangeAsync(ct);
        await ChangeMembershipAsync(ConfChanges.AddNode(id, promoted.ToByteArray()),
            () => Members().FirstOrDefault(m => m.ID == id) is not { IsLearner: true }, ct);
        return Members();
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
        try { await _publish; } catch (Exception e) { _logger.LogDebug("attribute publishing ended: {Error}", e.Message); }
        try { await _compactor; } catch (Exception e) { _logger.LogDebug("auto compaction ended: {Error}", e.Message); }
        if (_transport is not null) await _transport.DisposeAsync();
        if (_peerServer is not null) await _peerServer.DisposeAsync();
        if (_store is not null) await _store.DisposeAsync();
        if (_raftStorage is not null) await _raftStorage.DisposeAsync();
        foreach (var w in _writes.Values) w.TrySetException(EtcdErrors.Stopped());
        _stop.Dispose();
    }
}
