using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using Raft.Host.Tracing;
using Raft.Spec;
using Spec = Raft.Spec;
using MsLogLevel = Microsoft.Extensions.Logging.LogLevel;

namespace Raft.Host;

/// <summary>
/// etcd's RawNode for C#: a single-threaded, synchronous handle on one Raft node. It holds the
/// core's immutable node value and replaces it on every call; the core's log lines go to the
/// <see cref="ILogger"/> (etcd's texts and levels) and its trace events to the trace sink.
/// Not thread-safe: use <see cref="Node"/> to drive a node from several threads.
/// </summary>
public sealed class RawNode
{
    private Spec.RawNode _node;
    private readonly ILogger _logger;
    private readonly IRaftTraceSink? _trace;
    private bool _readyOutstanding;

    private RawNode(Spec.RawNode node, ILogger logger, IRaftTraceSink? trace)
    {
        _node = node;
        _logger = logger;
        _trace = trace;
        DrainOutput();
    }

    /// <summary>
    /// A node over <paramref name="storage"/>, restarted from whatever it holds (etcd's
    /// NewRawNode). A fresh group's storage needs a ConfState (a snapshot) or a call to
    /// <see cref="Bootstrap"/>.
    /// </summary>
    public static RawNode Create(RaftNodeOptions options, IStorage storage, ILogger? logger = null, IRaftTraceSink? traceSink = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(storage);
        options.Validate();
        var created = RawNodeModule.create(options.ToConfig(storage, tracing: traceSink is not null));
        if (created.IsError)
            throw new InvalidOperationException($"raft: cannot start node {options.Id:x} from its storage: {created.ErrorValue}");
        return new RawNode(created.ResultValue, logger ?? NullLogger.Instance, traceSink);
    }

    /// <summary>The core's current value (immutable; for inspection).</summary>
    public Spec.RawNode Core => _node;

    public ulong Id => _node.Raft.Id;

    public bool AsyncStorageWrites => _node.AsyncStorageWrites;

    /// <summary>
    /// Seeds an empty storage's node with the initial members as committed conf change entries
    /// (etcd's Bootstrap). The first Ready carries them; apply them as usual.
    /// </summary>
    public void Bootstrap(IEnumerable<ulong> peerIds)
    {
        ArgumentNullException.ThrowIfNull(peerIds);
        var peers = ListModule.OfSeq(peerIds.Select(id => new Peer(id, [])));
        var result = RawNodeModule.bootstrap(peers, _node);
        if (result.IsError) throw new InvalidOperationException($"raft: cannot bootstrap node {Id:x}: {result.ErrorValue}");
        _node = result.ResultValue;
        DrainOutput();
    }

    /// <summary>Advances the logical clock by one tick (elections, heartbeats).</summary>
    public void Tick() => Apply(RawNodeModule.tick(_node));

    /// <summary>Starts an election now.</summary>
    public void Campaign() => Apply(RawNodeModule.campaign(_node), proposal: false);

    /// <summary>
    /// Proposes data for the log. Returns once the proposal is in this leader's log or forwarded
    /// to the leader; throws <see cref="ProposalDroppedException"/> when it was dropped.
    /// </summary>
    public void Propose(byte[] data)
    {
        ArgumentNullException.ThrowIfNull(data);
        Apply(RawNodeModule.propose(data, _node), proposal: true);
    }

    /// <summary>Proposes a configuration change; dropped like any proposal, or when another change is pending.</summary>
    public void ProposeConfChange(ConfChangeI confChange)
    {
        ArgumentNullException.ThrowIfNull(confChange);
        Apply(RawNodeModule.proposeConfChange(confChange, _node), proposal: true);
    }

    /// <summary>
    /// Applies a committed conf change to the node's configuration and returns the new one.
    /// Call it when applying the entry (etcd's ApplyConfChange).
    /// </summary>
    public ConfState ApplyConfChange(ConfChangeI confChange)
    {
        ArgumentNullException.ThrowIfNull(confChange);
        var (node, cs) = RawNodeModule.applyConfChange(confChange, _node);
        Apply(node);
        return cs;
    }

    /// <summary>
    /// Steps a message from a peer or from a storage thread. Throws <see cref="RaftStepException"/>
    /// for local message types from elsewhere and for responses from unknown peers.
    /// </summary>
    public void Step(Message message)
    {
        ArgumentNullException.ThrowIfNull(message);
        Apply(RawNodeModule.step(message, _node), proposal: message.Type.IsMsgProp);
    }

    /// <summary>Whether <see cref="Ready"/> would return any work (etcd's HasReady).</summary>
    public bool HasReady => RawNodeModule.hasReady(_node);

    /// <summary>
    /// Takes the pending work. With synchronous storage, handle it and call <see cref="Advance"/>
    /// before asking again; asking twice is a programming error.
    /// </summary>
    public Ready Ready()
    {
        if (_readyOutstanding)
            throw new InvalidOperationException(
                $"raft node {Id:x}: Ready was called again before Advance; persist, send and apply the previous Ready, then call Advance");
        var (node, ready) = RawNodeModule.ready(_node);
        Apply(node);
        _readyOutstanding = !_node.AsyncStorageWrites;
        return new Ready(ready);
    }

    /// <summary>
    /// Reports that the last Ready was persisted, sent and applied (etcd's Advance). Not used
    /// with async storage writes, where the storage threads' responses report instead.
    /// </summary>
    public void Advance()
    {
        if (_node.AsyncStorageWrites)
            throw new InvalidOperationException(
                $"raft node {Id:x}: Advance must not be called when using AsyncStorageWrites; step the storage threads' responses instead");
        if (!_readyOutstanding)
            throw new InvalidOperationException($"raft node {Id:x}: Advance was called without a Ready to acknowledge");
        _readyOutstanding = false;
        Apply(RawNodeModule.advance(_node));
    }

    /// <summary>Asks the leader to hand leadership to <paramref name="transferee"/>.</summary>
    public void TransferLeader(ulong transferee) => Apply(RawNodeModule.transferLeader(transferee, _node));

    /// <summary>Makes a follower forget its leader, e.g. after learning it is gone (etcd's ForgetLeader).</summary>
    public void ForgetLeader() => Apply(RawNodeModule.forgetLeader(_node), proposal: false);

    /// <summary>
    /// Requests a linearizable read point; the answer comes as a <see cref="ReadState"/>
    /// carrying <paramref name="requestContext"/> in a later Ready.
    /// </summary>
    public void ReadIndex(byte[] requestContext)
    {
        ArgumentNullException.ThrowIfNull(requestContext);
        Apply(RawNodeModule.readIndex(requestContext, _node));
    }

    /// <summary>Reports that sending to a peer failed (the leader stops pipelining to it).</summary>
    public void ReportUnreachable(ulong id) => Apply(RawNodeModule.reportUnreachable(id, _node));

    /// <summary>Reports whether a snapshot sent to a peer arrived.</summary>
    public void ReportSnapshot(ulong id, SnapshotStatus status) => Apply(RawNodeModule.reportSnapshot(id, status, _node));

    public RaftStatus Status() => RaftStatus.Of(RawNodeModule.status(_node));

    public BasicStatus BasicStatus() => RawNodeModule.basicStatus(_node);

    /// <summary>Pins the randomized election timeout (for deterministic tests).</summary>
    public void SetRandomizedElectionTimeout(int ticks) => Apply(RawNodeModule.setRandomizedElectionTimeout(ticks, _node));

    private void Apply(Spec.RawNode node)
    {
        _node = node;
        DrainOutput();
    }

    private void Apply(Tuple<Spec.RawNode, FSharpOption<StepError>?> stepped, bool proposal)
    {
        _node = stepped.Item1;
        var lines = DrainOutput();
        var error = stepped.Item2?.Value;
        if (error is null) return;
        if (error.IsProposalDropped && proposal) throw Dropped(lines);
        throw new RaftStepException(error);
    }

    /// <summary>Why the core dropped a proposal, read from the state it left and the line it logged.</summary>
    private ProposalDroppedException Dropped(FSharpList<LogLine> lines)
    {
        var r = _node.Raft;
        ProposalDropReason reason;
        string fallback;
        if (r.State.IsStateLeader)
        {
            if (!r.Trk.Progress.ContainsKey(r.Id)) (reason, fallback) = (ProposalDropReason.NotInConfiguration, $"{r.Id:x} is not in the configuration");
            else if (r.LeadTransferee != NodeId.None) (reason, fallback) = (ProposalDropReason.LeadershipTransferInProgress, $"transfer leadership to {r.LeadTransferee:x} is in progress");
            else (reason, fallback) = (ProposalDropReason.UncommittedSizeLimit, "uncommitted entry size limit exceeded");
        }
        else if (r.Lead == NodeId.None || !r.State.IsStateFollower)
            (reason, fallback) = (ProposalDropReason.NoLeader, $"no leader at term {r.Term}");
        else
            (reason, fallback) = (ProposalDropReason.ForwardingDisabled, "proposal forwarding is disabled");
        var detail = lines.LastOrDefault(l => l.Text.Contains("dropping proposal", StringComparison.Ordinal))?.Text ?? fallback;
        return new ProposalDroppedException(reason, detail);
    }

    private FSharpList<LogLine> DrainOutput()
    {
        var (node, lines, traces) = RawNodeModule.takeOutput(_node);
        _node = node;
        foreach (var line in lines) Log(line);
        if (_trace is not null)
            foreach (var e in traces) _trace.Write(e);
        return lines;
    }

    private void Log(LogLine line)
    {
        var level = line.Level.Tag switch
        {
            Spec.LogLevel.Tags.Debug => MsLogLevel.Debug,
            Spec.LogLevel.Tags.Info => MsLogLevel.Information,
            Spec.LogLevel.Tags.Warn => MsLogLevel.Warning,
            _ => MsLogLevel.Error,
        };
        if (_logger.IsEnabled(level)) _logger.Log(level, default, line.Text, null, static (text, _) => text);
    }
}
