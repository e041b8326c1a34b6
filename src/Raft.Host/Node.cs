using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Raft.Host.Tracing;
using Raft.Spec;

namespace Raft.Host;

/// <summary>
/// etcd's Node for C#: a Raft node driven by its own loop. Every call is queued to the loop
/// (a channel) and executed there in order against a <see cref="RawNode"/>, so the node may be
/// used from any thread. The application's loop takes work with <see cref="ReadyAsync"/>,
/// handles it as <see cref="Raft.Host.Ready"/> describes, and calls <see cref="Advance"/>.
/// </summary>
/// <remarks>
/// The core is an immutable value: an operation that throws leaves the node as it was, so a
/// failed call reports to its caller only. A failure with no caller to report to (a tick, an
/// Advance) stops the node; <see cref="Completion"/> then holds the exception.
/// </remarks>
public sealed class Node : IAsyncDisposable
{
    /// <summary>Ticks queued beyond this are dropped with etcd's warning (its tick channel holds 128).</summary>
    private const int MaxQueuedTicks = 128;

    private readonly RawNode _raw;
    private readonly ILogger _logger;
    private readonly Channel<Command> _commands =
        Channel.CreateUnbounded<Command>(new UnboundedChannelOptions { SingleReader = true });
    private readonly CancellationTokenSource _stopping = new();
    private readonly Task _loop;
    private readonly Task _ticker;
    private int _queuedTicks;
    private int _readyHandedOut;
    private int _readyAwaited;
    private volatile Exception? _fault;

    // Loop-owned state.
    private TaskCompletionSource<Ready>? _readyWaiter;
    private Ready? _undelivered;
    private bool _awaitingAdvance;

    private Node(RawNode raw, RaftNodeOptions options, ILogger logger)
    {
        _raw = raw;
        _logger = logger;
        Options = options;
        Id = raw.Id;
        AsyncStorageWrites = raw.AsyncStorageWrites;
        _loop = Task.Run(RunAsync);
        _ticker = options.TickInterval is { } interval ? Task.Run(() => TickEveryAsync(interval)) : Task.CompletedTask;
    }

    /// <summary>
    /// Starts a node of a new group over an empty storage, with the initial members
    /// <paramref name="peers"/> (etcd's StartNode).
    /// </summary>
    public static Node Start(RaftNodeOptions options, IStorage storage, IEnumerable<ulong> peers,
        ILogger? logger = null, IRaftTraceSink? traceSink = null)
    {
        ArgumentNullException.ThrowIfNull(peers);
        logger ??= NullLogger.Instance;
        var raw = RawNode.Create(options, storage, logger, traceSink);
        raw.Bootstrap(peers);
        return new Node(raw, options, logger);
    }

    /// <summary>
    /// Restarts a node from what its storage holds (etcd's RestartNode); also starts a node
    /// whose storage was seeded with a snapshot holding the configuration.
    /// </summary>
    public static Node Restart(RaftNodeOptions options, IStorage storage, ILogger? logger = null, IRaftTraceSink? traceSink = null)
    {
        logger ??= NullLogger.Instance;
        return new Node(RawNode.Create(options, storage, logger, traceSink), options, logger);
    }

    public ulong Id { get; }

    public RaftNodeOptions Options { get; }

    public bool AsyncStorageWrites { get; }

    /// <summary>Completes when the node stopped; faulted if it stopped because of a failure.</summary>
    public Task Completion => _loop;

    // ---- input ----------------------------------------------------------------------------

    /// <summary>
    /// Advances the logical clock by one tick. Never blocks: when the loop is far behind, the
    /// tick is dropped with a warning, as etcd does.
    /// </summary>
    public void Tick()
    {
        if (Interlocked.Increment(ref _queuedTicks) > MaxQueuedTicks)
        {
            Interlocked.Decrement(ref _queuedTicks);
            _logger.LogWarning("{NodeId:x} A tick missed to fire. Node blocks too long!", Id);
            return;
        }
        Post(TickCommand.Instance);
    }

    /// <summary>Starts an election now.</summary>
    public Task CampaignAsync(CancellationToken cancellationToken = default) =>
        CallAsync(raw => { raw.Campaign(); return true; }, cancellationToken);

    /// <summary>
    /// Proposes data for the log. Completes once the proposal is in the leader's log (this
    /// node leads) or forwarded to the leader; fails with <see cref="ProposalDroppedException"/>
    /// when it was dropped. A forwarded proposal may still be lost: watch the committed entries.
    /// </summary>
    public Task ProposeAsync(byte[] data, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(data);
        return CallAsync(raw => { raw.Propose(data); return true; }, cancellationToken);
    }

    /// <summary>Proposes a configuration change, accepted or dropped like any proposal.</summary>
    public Task ProposeConfChangeAsync(ConfChangeI confChange, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(confChange);
        return CallAsync(raw => { raw.ProposeConfChange(confChange); return true; }, cancellationToken);
    }

    /// <summary>
    /// Steps a message from a peer or from a storage thread; completes once the node took it.
    /// As in etcd's node, local message types from elsewhere and responses from peers not in
    /// the configuration are ignored.
    /// </summary>
    public Task StepAsync(Message message, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (MessageTypeModule.isLocal(message.Type) && !NodeId.isLocalThread(message.From)) return Task.CompletedTask;
        return CallAsync(raw =>
        {
            try
            {
                raw.Step(message);
            }
            catch (RaftStepException e) when (e.Error.IsStepPeerNotFound)
            {
            }
            catch (ProposalDroppedException)
            {
                // A proposal forwarded to us that we could not take: its sender is not told, as in etcd.
            }
            return true;
        }, cancellationToken);
    }

    /// <summary>Applies a committed conf change and returns the new configuration (etcd's ApplyConfChange).</summary>
    public Task<ConfState> ApplyConfChangeAsync(ConfChangeI confChange, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(confChange);
        return CallAsync(raw => raw.ApplyConfChange(confChange), cancellationToken);
    }

    /// <summary>Asks the leader to hand leadership to <paramref name="transferee"/> (on a follower, forwarded).</summary>
    public Task TransferLeadershipAsync(ulong transferee, CancellationToken cancellationToken = default) =>
        CallAsync(raw => { raw.TransferLeader(transferee); return true; }, cancellationToken);

    /// <summary>Makes a follower forget its leader (etcd's ForgetLeader).</summary>
    public Task ForgetLeaderAsync(CancellationToken cancellationToken = default) =>
        CallAsync(raw => { raw.ForgetLeader(); return true; }, cancellationToken);

    /// <summary>
    /// Requests a linearizable read point. The answer is a <see cref="ReadState"/> carrying
    /// <paramref name="requestContext"/> in a later Ready; none comes if the request is lost.
    /// </summary>
    public Task ReadIndexAsync(byte[] requestContext, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(requestContext);
        return CallAsync(raw => { raw.ReadIndex(requestContext); return true; }, cancellationToken);
    }

    public Task<RaftStatus> StatusAsync(CancellationToken cancellationToken = default) =>
        CallAsync(raw => raw.Status(), cancellationToken);

    /// <summary>Reports that sending to a peer failed (the leader stops pipelining to it).</summary>
    public void ReportUnreachable(ulong id) => Post(new Call<bool>(raw => { raw.ReportUnreachable(id); return true; }));

    /// <summary>Reports whether a snapshot sent to a peer arrived.</summary>
    public void ReportSnapshot(ulong id, SnapshotStatus status) =>
        Post(new Call<bool>(raw => { raw.ReportSnapshot(id, status); return true; }));

    // ---- output ---------------------------------------------------------------------------

    /// <summary>
    /// Waits for the next batch of work. With synchronous storage, call <see cref="Advance"/>
    /// after handling it and before asking again. One caller at a time.
    /// </summary>
    public async Task<Ready> ReadyAsync(CancellationToken cancellationToken = default)
    {
        if (!AsyncStorageWrites && Volatile.Read(ref _readyHandedOut) == 1)
            throw new InvalidOperationException(
                $"raft node {Id:x}: ReadyAsync was called again before Advance; persist, send and apply the previous Ready, then call Advance");
        if (Interlocked.Exchange(ref _readyAwaited, 1) == 1)
            throw new InvalidOperationException($"raft node {Id:x}: ReadyAsync is already being awaited; the Ready stream has one consumer");
        try
        {
            var waiter = new TaskCompletionSource<Ready>(TaskCreationOptions.RunContinuationsAsynchronously);
            using var registration = cancellationToken.Register(() => waiter.TrySetCanceled(cancellationToken));
            Post(new ReadyRequest(waiter));
            var ready = await waiter.Task.ConfigureAwait(false);
            if (!AsyncStorageWrites) Volatile.Write(ref _readyHandedOut, 1);
            return ready;
        }
        finally
        {
            Volatile.Write(ref _readyAwaited, 0);
        }
    }

    /// <summary>
    /// Reports that the last Ready was persisted, sent and applied; the next Ready follows.
    /// Not used with async storage writes.
    /// </summary>
    public void Advance()
    {
        if (AsyncStorageWrites)
            throw new InvalidOperationException(
                $"raft node {Id:x}: Advance must not be called when using AsyncStorageWrites; step the storage threads' responses instead");
        if (Interlocked.Exchange(ref _readyHandedOut, 0) == 0)
            throw new InvalidOperationException($"raft node {Id:x}: Advance was called without a Ready to acknowledge");
        Post(AdvanceCommand.Instance);
    }

    // ---- stopping -------------------------------------------------------------------------

    /// <summary>Stops the loop and the tick timer; calls still queued fail with <see cref="NodeStoppedException"/>.</summary>
    public async Task StopAsync()
    {
        _commands.Writer.TryComplete();
        if (!_stopping.IsCancellationRequested) await _stopping.CancelAsync().ConfigureAwait(false);
        try
        {
            await _ticker.ConfigureAwait(false);
            await _loop.ConfigureAwait(false);
        }
        catch (Exception) when (_fault is not null)
        {
            // The failure was logged and stays in Completion.
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync().ConfigureAwait(false);
        _stopping.Dispose();
    }

    // ---- the loop -------------------------------------------------------------------------

    private void Post(Command command)
    {
        if (!_commands.Writer.TryWrite(command)) throw new NodeStoppedException(_fault);
    }

    private async Task<T> CallAsync<T>(Func<RawNode, T> action, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var call = new Call<T>(action);
        using var registration = cancellationToken.Register(() => call.Completion.TrySetCanceled(cancellationToken));
        Post(call);
        return await call.Completion.Task.ConfigureAwait(false);
    }

    private async Task TickEveryAsync(TimeSpan interval)
    {
        using var timer = new PeriodicTimer(interval);
        try
        {
            while (await timer.WaitForNextTickAsync(_stopping.Token).ConfigureAwait(false))
            {
                try
                {
                    Tick();
                }
                catch (NodeStoppedException)
                {
                    return;
                }
            }
        }
        catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
        {
        }
    }

    private async Task RunAsync()
    {
        var reader = _commands.Reader;
        try
        {
            while (await reader.WaitToReadAsync(_stopping.Token).ConfigureAwait(false))
            {
                // A bounded batch, then the Ready: a stream of input must not starve the application.
                for (var i = 0; i < 256 && reader.TryRead(out var command); i++)
                    Execute(command);
                DeliverReady();
            }
        }
        catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
        {
        }
        catch (Exception e)
        {
            _fault = e;
            _logger.LogError(e, "raft node {NodeId:x} stopped after a failure", Id);
            throw;
        }
        finally
        {
            _commands.Writer.TryComplete();
            var stopped = new NodeStoppedException(_fault);
            while (reader.TryRead(out var left)) left.Fail(stopped);
            _readyWaiter?.TrySetException(stopped);
        }
    }

    private void Execute(Command command)
    {
        switch (command)
        {
            case TickCommand:
                Interlocked.Decrement(ref _queuedTicks);
                _raw.Tick();
                break;
            case AdvanceCommand:
                _raw.Advance();
                _awaitingAdvance = false;
                break;
            case ReadyRequest request:
                _readyWaiter = request.Waiter;
                break;
            default:
                command.Run(_raw);
                break;
        }
    }

    /// <summary>
    /// Hands the next Ready to a waiting caller. The Ready is taken from the node only when
    /// someone waits for it; if that caller gave up meanwhile, it is kept for the next one.
    /// </summary>
    private void DeliverReady()
    {
        var waiter = _readyWaiter;
        if (waiter is null) return;
        if (waiter.Task.IsCompleted)
        {
            _readyWaiter = null;
            return;
        }
        var ready = _undelivered;
        if (ready is null)
        {
            if (_awaitingAdvance || !_raw.HasReady) return;
            ready = _raw.Ready();
            _awaitingAdvance = !AsyncStorageWrites;
        }
        _readyWaiter = null;
        _undelivered = waiter.TrySetResult(ready) ? null : ready;
    }

    private abstract class Command
    {
        public virtual void Run(RawNode raw) { }

        public virtual void Fail(Exception error) { }
    }

    private sealed class TickCommand : Command
    {
        public static readonly TickCommand Instance = new();
    }

    private sealed class AdvanceCommand : Command
    {
        public static readonly AdvanceCommand Instance = new();
    }

    private sealed class ReadyRequest(TaskCompletionSource<Ready> waiter) : Command
    {
        public TaskCompletionSource<Ready> Waiter { get; } = waiter;

        public override void Fail(Exception error) => Waiter.TrySetException(error);
    }

    /// <summary>An operation with a caller waiting for its result (or exception).</summary>
    private sealed class Call<T>(Func<RawNode, T> action) : Command
    {
        public TaskCompletionSource<T> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public override void Run(RawNode raw)
        {
            // A caller who cancelled before we got here no longer wants the operation done.
            if (Completion.Task.IsCompleted) return;
            try
            {
                Completion.TrySetResult(action(raw));
            }
            catch (Exception e)
            {
                Completion.TrySetException(e);
            }
        }

        public override void Fail(Exception error) => Completion.TrySetException(error);
    }
}
