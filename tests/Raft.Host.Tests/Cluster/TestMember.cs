using System.Text;
using System.Threading.Channels;
using Raft.Spec;

namespace Raft.Host.Tests.Cluster;

/// <summary>
/// One member of a test cluster: a <see cref="Node"/>, its <see cref="MemoryStorage"/>, a
/// state machine (the list of applied payloads) and the application loops that connect them,
/// written the way etcd's doc.go tells applications to: persist, send, apply, advance.
/// </summary>
public sealed class TestMember : IAsyncDisposable
{
    private readonly InMemoryNetwork _network;
    private readonly Lock _stateLock = new();
    private readonly List<string> _applied = [];
    private readonly List<ReadState> _readStates = [];
    private CancellationTokenSource _stop = new();
    private Task _loops = Task.CompletedTask;
    private ulong _appliedIndex;
    private ConfState _confState = ConfStateModule.empty;

    public TestMember(ulong id, RaftNodeOptions options, InMemoryNetwork network, MemoryStorage? storage = null,
        Raft.Host.Tracing.IRaftTraceSink? traceSink = null)
    {
        Id = id;
        Options = options;
        _network = network;
        Storage = storage ?? new MemoryStorage();
        TraceSink = traceSink;
    }

    /// <summary>Where the node's trace events go (every start of the member), if anywhere.</summary>
    public Raft.Host.Tracing.IRaftTraceSink? TraceSink { get; }

    public ulong Id { get; }

    /// <summary>The node's log lines (printed when a test fails).</summary>
    public ListLogger Log { get; } = new();
    public RaftNodeOptions Options { get; private set; }
    public MemoryStorage Storage { get; }
    public Node Node { get; private set; } = null!;
    public bool Running { get; private set; }

    /// <summary>Messages this member could not deliver because a link was cut.</summary>
    public int Dropped;

    public IReadOnlyList<string> Applied { get { lock (_stateLock) return [.. _applied]; } }
    public ulong AppliedIndex { get { lock (_stateLock) return _appliedIndex; } }
    public ConfState ConfState { get { lock (_stateLock) return _confState; } }
    public IReadOnlyList<ReadState> ReadStates { get { lock (_stateLock) return [.. _readStates]; } }

    /// <summary>Starts a member of a new group (bootstrapping) or, with no peers, from its storage.</summary>
    public void Start(IReadOnlyCollection<ulong>? bootstrapPeers)
    {
        // The state machine restarts from the storage's snapshot; later entries are applied again.
        var snapshot = Storage.Snapshot;
        lock (_stateLock)
        {
            _applied.Clear();
            _readStates.Clear();
            _appliedIndex = snapshot.Metadata.Index;
            _confState = snapshot.Metadata.ConfState;
            if (snapshot.Data.Length > 0) _applied.AddRange(Encoding.UTF8.GetString(snapshot.Data).Split('\n'));
        }
        _stop = new CancellationTokenSource();
        var inbox = _network.Attach(Id);
        Node = bootstrapPeers is { Count: > 0 }
            ? Node.Start(Options, Storage, bootstrapPeers, Log, TraceSink)
            : Node.Restart(Options, Storage, Log, TraceSink);
        Running = true;
        _loops = Task.WhenAll(
            Task.Run(() => ReceiveAsync(inbox, _stop.Token)),
            Task.Run(() => Options.AsyncStorageWrites ? RunAsyncWritesAsync(_stop.Token) : RunAsync(_stop.Token)));
    }

    public async Task StopAsync()
    {
        if (!Running) return;
        Running = false;
        _network.Detach(Id);
        await _stop.CancelAsync();
        await Node.StopAsync();
        await _loops;
        _stop.Dispose();
    }

    public ValueTask DisposeAsync() => new(StopAsync());

    /// <summary>Makes a snapshot at the applied index and compacts the log up to it.</summary>
    public ulong SnapshotAndCompact()
    {
        ulong index;
        byte[] data;
        ConfState cs;
        lock (_stateLock)
        {
            index = _appliedIndex;
            data = Encoding.UTF8.GetBytes(string.Join('\n', _applied));
            cs = _confState;
        }
        Storage.CreateSnapshot(index, cs, data);
        Storage.Compact(index);
        return index;
    }

    private async Task ReceiveAsync(ChannelReader<Message> inbox, CancellationToken ct)
    {
        try
        {
            await foreach (var m in inbox.ReadAllAsync(ct))
                await Node.StepAsync(m, ct);
        }
        catch (Exception e) when (e is OperationCanceledException or NodeStoppedException)
        {
        }
    }

    private void Send(Message m)
    {
        if (!_network.Send(m))
        {
            Interlocked.Increment(ref Dropped);
            // Tell raft, as a transport would: it stops pipelining to the peer.
            Node.ReportUnreachable(m.To);
            if (m.Type.IsMsgSnap) Node.ReportSnapshot(m.To, SnapshotStatus.SnapshotFailure);
        }
        else if (m.Type.IsMsgSnap)
        {
            Node.ReportSnapshot(m.To, SnapshotStatus.SnapshotFinish);
        }
    }

    /// <summary>etcd's doc.go loop: persist, send, apply, advance.</summary>
    private async Task RunAsync(CancellationToken ct)
    {
        try
        {
            while (true)
            {
                var rd = await Node.ReadyAsync(ct);
                Storage.Save(rd);
                if (rd.Snapshot is { } snap && !SnapshotModule.isEmpty(snap)) Restore(snap);
                foreach (var m in rd.Messages) Send(m);
                foreach (var e in rd.CommittedEntries) await ApplyAsync(e, ct);
                if (rd.ReadStates.Count > 0) lock (_stateLock) _readStates.AddRange(rd.ReadStates);
                Node.Advance();
            }
        }
        catch (Exception e) when (e is OperationCanceledException or NodeStoppedException)
        {
        }
    }

    /// <summary>
    /// Async storage writes: peers' messages go out at once, the append and apply work orders
    /// to their own threads, whose responses are delivered once the work is done.
    /// </summary>
    private async Task RunAsyncWritesAsync(CancellationToken ct)
    {
        var appends = Channel.CreateUnbounded<StorageAppend>();
        var applies = Channel.CreateUnbounded<StorageApply>();
        var appendThread = Task.Run(async () =>
        {
            await foreach (var a in appends.Reader.ReadAllAsync(ct))
            {
                Storage.Save(a);
                if (a.Snapshot is { } snap && !SnapshotModule.isEmpty(snap)) Restore(snap);
                foreach (var response in a.Responses) await DeliverAsync(response, ct);
            }
        }, ct);
        var applyThread = Task.Run(async () =>
        {
            await foreach (var p in applies.Reader.ReadAllAsync(ct))
            {
                foreach (var e in p.Entries) await ApplyAsync(e, ct);
                foreach (var response in p.Responses) await DeliverAsync(response, ct);
            }
        }, ct);
        try
        {
            while (true)
            {
                var rd = await Node.ReadyAsync(ct);
                foreach (var m in rd.PeerMessages) Send(m);
                if (rd.StorageAppend is { } append) appends.Writer.TryWrite(append);
                if (rd.StorageApply is { } apply) applies.Writer.TryWrite(apply);
                if (rd.ReadStates.Count > 0) lock (_stateLock) _readStates.AddRange(rd.ReadStates);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or NodeStoppedException)
        {
        }
        appends.Writer.TryComplete();
        applies.Writer.TryComplete();
        try
        {
            await Task.WhenAll(appendThread, applyThread);
        }
        catch (Exception e) when (e is OperationCanceledException or NodeStoppedException)
        {
        }
    }

    private async Task DeliverAsync(Message response, CancellationToken ct)
    {
        if (response.To == Id) await Node.StepAsync(response, ct);
        else Send(response);
    }

    private async Task ApplyAsync(Entry e, CancellationToken ct)
    {
        if (e.TryGetConfChange(out var cc))
        {
            var cs = await Node.ApplyConfChangeAsync(cc, ct);
            lock (_stateLock)
            {
                _confState = cs;
                _appliedIndex = e.Index;
            }
            return;
        }
        lock (_stateLock)
        {
            if (e.Data.Length > 0) _applied.Add(Encoding.UTF8.GetString(e.Data));
            _appliedIndex = e.Index;
        }
    }

    private void Restore(Snapshot snap)
    {
        lock (_stateLock)
        {
            _applied.Clear();
            if (snap.Data.Length > 0) _applied.AddRange(Encoding.UTF8.GetString(snap.Data).Split('\n'));
            _appliedIndex = snap.Metadata.Index;
            _confState = snap.Metadata.ConfState;
        }
    }
}
