using Microsoft.FSharp.Core;
using Raft.Spec;
using Spec = Raft.Spec;

namespace Raft.Host;

/// <summary>
/// A batch of work from a node (etcd's Ready). The application must, in this order:
/// <list type="number">
/// <item>persist <see cref="Snapshot"/>, <see cref="Entries"/> and <see cref="HardState"/>
/// (synchronously if <see cref="MustSync"/>);</item>
/// <item>send <see cref="Messages"/> (only now: they may vouch for what was just persisted);</item>
/// <item>apply <see cref="CommittedEntries"/> (conf changes through ApplyConfChange);</item>
/// <item>call Advance.</item>
/// </list>
/// With async storage writes the persisting and applying is ordered by the MsgStorageAppend and
/// MsgStorageApply messages among <see cref="Messages"/> instead (see <see cref="StorageAppend"/>),
/// the other messages may be sent right away, and Advance is not called.
/// </summary>
public sealed class Ready
{
    internal Ready(Spec.Ready core)
    {
        Core = core;
        SoftState = OptionModule.ToObj(core.SoftState);
        HardState = OptionModule.ToObj(core.HardState);
        ReadStates = [.. core.ReadStates];
        Snapshot = OptionModule.ToObj(core.Snapshot);
        StorageAppend = null;
        StorageApply = null;
        foreach (var m in core.Messages)
        {
            if (m.Type.IsMsgStorageAppend) StorageAppend = new StorageAppend(m);
            else if (m.Type.IsMsgStorageApply) StorageApply = new StorageApply(m);
        }
        PeerMessages = StorageAppend is null && StorageApply is null
            ? core.Messages
            : [.. core.Messages.Where(m => !NodeId.isLocalThread(m.To))];
    }

    /// <summary>The core's value, e.g. for <c>RawNodeModule.describeReady</c>.</summary>
    public Spec.Ready Core { get; }

    /// <summary>The leader and role, when they changed since the previous Ready.</summary>
    public SoftState? SoftState { get; }

    /// <summary>Term, vote and commit to persist before sending messages, when they changed.</summary>
    public HardState? HardState { get; }

    /// <summary>Answered ReadIndex requests: reads may be served once Index is applied.</summary>
    public IReadOnlyList<ReadState> ReadStates { get; }

    /// <summary>Entries to persist before sending messages.</summary>
    public IReadOnlyList<Entry> Entries => Core.Entries;

    /// <summary>A snapshot to persist (and to load into the state machine).</summary>
    public Snapshot? Snapshot { get; }

    /// <summary>Committed entries to apply, in order.</summary>
    public IReadOnlyList<Entry> CommittedEntries => Core.CommittedEntries;

    /// <summary>
    /// Every message of the Ready, as etcd hands them out; with async storage writes this
    /// includes the messages to the local storage threads.
    /// </summary>
    public IReadOnlyList<Message> Messages => Core.Messages;

    /// <summary>The messages for other nodes (all of <see cref="Messages"/> but the storage-thread ones).</summary>
    public IReadOnlyList<Message> PeerMessages { get; }

    /// <summary>Whether HardState and Entries must reach stable storage synchronously.</summary>
    public bool MustSync => Core.MustSync;

    /// <summary>Async storage writes: the work order for the append thread, if any.</summary>
    public StorageAppend? StorageAppend { get; }

    /// <summary>Async storage writes: the work order for the apply thread, if any.</summary>
    public StorageApply? StorageApply { get; }

    /// <summary>Whether the Ready carries nothing at all.</summary>
    public bool IsEmpty =>
        SoftState is null && HardState is null && ReadStates.Count == 0 && Entries.Count == 0
        && Snapshot is null && CommittedEntries.Count == 0 && Messages.Count == 0;

    /// <summary>etcd's DescribeReady text.</summary>
    public override string ToString() => RawNodeModule.describeReady(Core);
}

/// <summary>
/// A MsgStorageAppend (async storage writes): persist the snapshot, entries and hard state,
/// then deliver every one of <see cref="Responses"/>: those addressed to this node through
/// Step, the others to their peers. Work orders must be handled in the order they come.
/// </summary>
public sealed class StorageAppend
{
    internal StorageAppend(Message message)
    {
        Message = message;
        var hs = new HardState(message.Term, message.Vote, message.Commit);
        HardState = HardStateModule.isEmpty(hs) ? null : hs;
        Snapshot = OptionModule.ToObj(message.Snapshot);
    }

    public Message Message { get; }
    public HardState? HardState { get; }
    public IReadOnlyList<Entry> Entries => Message.Entries;
    public Snapshot? Snapshot { get; }

    /// <summary>Messages to deliver once the write is durable.</summary>
    public IReadOnlyList<Message> Responses => Message.Responses;
}

/// <summary>
/// A MsgStorageApply (async storage writes): apply <see cref="Entries"/> to the state machine,
/// then deliver <see cref="Responses"/> (to this node through Step).
/// </summary>
public sealed class StorageApply
{
    internal StorageApply(Message message) => Message = message;

    public Message Message { get; }
    public IReadOnlyList<Entry> Entries => Message.Entries;
    public IReadOnlyList<Message> Responses => Message.Responses;
}
