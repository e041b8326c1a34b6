using Microsoft.FSharp.Core;
using Raft.Spec;
using Spec = Raft.Spec;

namespace Raft.Host;

/// <summary>
/// etcd's MemoryStorage for C#: thread-safe, backed by the core's immutable
/// <see cref="Spec.MemoryStorage"/>. Every write computes the next value from the current one
/// and swaps it in under a lock; reads take the current value without locking, so a reader
/// always sees a consistent state and the log logic lives only in the core.
/// </summary>
public sealed class MemoryStorage : IStorage
{
    private readonly Lock _writeLock = new();
    private volatile Spec.MemoryStorage _current;

    public MemoryStorage() : this(MemoryStorageModule.empty) { }

    /// <summary>A storage starting from a given value, e.g. a copy of another node's state.</summary>
    public MemoryStorage(Spec.MemoryStorage initial) => _current = initial ?? throw new ArgumentNullException(nameof(initial));

    /// <summary>The current immutable value: a consistent copy of everything stored.</summary>
    public Spec.MemoryStorage Current => _current;

    public HardState HardState => _current.HardState;
    public ulong FirstIndex => _current.FirstIndex;
    public ulong LastIndex => _current.LastIndex;
    public Snapshot Snapshot => MemoryStorageModule.snapshot(_current);

    /// <summary>Entries [lo, hi) within <paramref name="maxSize"/> bytes (at least one).</summary>
    public Entry[] Entries(ulong lo, ulong hi, ulong maxSize = ulong.MaxValue) => this.GetEntries(lo, hi, maxSize);

    public ulong Term(ulong index) => this.GetTerm(index);

    public void SetHardState(HardState hardState)
    {
        ArgumentNullException.ThrowIfNull(hardState);
        Update(s => MemoryStorageModule.setHardState(hardState, s));
    }

    /// <summary>Appends entries, replacing stored entries from the first new index on.</summary>
    public void Append(IEnumerable<Entry> entries)
    {
        var array = entries as Entry[] ?? [.. entries];
        if (array.Length > 0) Update(s => MemoryStorageModule.append(array, s));
    }

    /// <summary>Replaces the whole content with the snapshot's; throws SnapOutOfDate for an older one.</summary>
    public void ApplySnapshot(Snapshot snapshot)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        Update(s => Unwrap(MemoryStorageModule.applySnapshot(snapshot, s)));
    }

    /// <summary>
    /// Records a snapshot of the application's state at <paramref name="index"/> (term from the
    /// log; ConfState given or the previous snapshot's). The log is not compacted.
    /// </summary>
    public Snapshot CreateSnapshot(ulong index, ConfState? confState, byte[] data)
    {
        ArgumentNullException.ThrowIfNull(data);
        Snapshot? made = null;
        var cs = confState is null ? FSharpOption<ConfState>.None : FSharpOption<ConfState>.Some(confState);
        Update(s =>
        {
            var (next, snap) = Unwrap(MemoryStorageModule.createSnapshot(index, cs, data, s));
            made = snap;
            return next;
        });
        return made!;
    }

    /// <summary>Discards the entries before <paramref name="compactIndex"/>; throws Compacted if already done.</summary>
    public void Compact(ulong compactIndex) => Update(s => Unwrap(MemoryStorageModule.compact(compactIndex, s)));

    /// <summary>
    /// Persists what a Ready asks for, in one step: snapshot, entries, then hard state (etcd's
    /// doc.go order). Call before sending the Ready's messages.
    /// </summary>
    public void Save(Ready ready)
    {
        ArgumentNullException.ThrowIfNull(ready);
        Save(ready.Snapshot, ready.Entries, ready.HardState);
    }

    /// <summary>Persists the work of a MsgStorageAppend (async storage writes) in one step.</summary>
    public void Save(StorageAppend append)
    {
        ArgumentNullException.ThrowIfNull(append);
        Save(append.Snapshot, append.Entries, append.HardState);
    }

    private void Save(Snapshot? snapshot, IReadOnlyList<Entry> entries, HardState? hardState)
    {
        var array = entries as Entry[] ?? [.. entries];
        Update(s =>
        {
            if (snapshot is not null && !SnapshotModule.isEmpty(snapshot))
                s = Unwrap(MemoryStorageModule.applySnapshot(snapshot, s));
            s = MemoryStorageModule.append(array, s);
            return hardState is null ? s : MemoryStorageModule.setHardState(hardState, s);
        });
    }

    private void Update(Func<Spec.MemoryStorage, Spec.MemoryStorage> change)
    {
        lock (_writeLock) _current = change(_current);
    }

    private static T Unwrap<T>(FSharpResult<T, StorageError> r) =>
        r.IsOk ? r.ResultValue : throw new RaftStorageException(r.ErrorValue);

    // Raft reads whatever is current: like etcd's shared MemoryStorage, writes are visible at once.
    FSharpResult<Tuple<HardState, ConfState>, string> IStorage.InitialState() => ((IStorage)_current).InitialState();
    FSharpResult<Entry[], StorageError> IStorage.Entries(ulong lo, ulong hi, ulong maxSize) => ((IStorage)_current).Entries(lo, hi, maxSize);
    FSharpResult<ulong, StorageError> IStorage.Term(ulong index) => ((IStorage)_current).Term(index);
    FSharpResult<ulong, StorageError> IStorage.LastIndex() => ((IStorage)_current).LastIndex();
    FSharpResult<ulong, StorageError> IStorage.FirstIndex() => ((IStorage)_current).FirstIndex();
    FSharpResult<Snapshot, StorageError> IStorage.Snapshot() => ((IStorage)_current).Snapshot();
}
