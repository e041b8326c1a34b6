using Raft.Kv.Etcd.Mvccpb;

namespace Raft.Kv.State;

/// <summary>
/// The key-value state in memory: the state machine of the unit tests, and the working copy the
/// PostgreSQL store loads the keys of one command into before running the applier on it.
/// </summary>
public sealed class MemoryKvState : IKvView
{
    private readonly SortedDictionary<byte[], KeyValue> _keys = new(KeyComparer.Instance);

    public MemoryKvState(long revision = 1, long compactRevision = 0)
    {
        Revision = revision;
        CompactRevision = compactRevision;
    }

    public long Revision { get; private set; }
    public long CompactRevision { get; private set; }
    public int Count => _keys.Count;

    public IEnumerable<KeyValue> Scan(KeyRange range)
    {
        if (range.IsSingleKey)
        {
            if (_keys.TryGetValue(range.Start, out var kv)) yield return kv;
            yield break;
        }
        if (range.IsEmpty) yield break;
        // SortedDictionary has no seek; the working copies this serves are small, so a filtered walk is enough.
        foreach (var (key, kv) in _keys)
        {
            if (!range.IsUnbounded && KeyComparer.Instance.Compare(key, range.End!) >= 0) yield break;
            if (KeyComparer.Instance.Compare(key, range.Start) >= 0) yield return kv;
        }
    }

    /// <summary>Loads a record as it is stored (used to build working copies and to import snapshots).</summary>
    public void Load(KeyValue kv) => _keys[kv.Key.ToByteArray()] = kv;

    public void Apply(KvChanges changes)
    {
        foreach (var (key, kv) in changes.Writes)
        {
            if (kv is null) _keys.Remove(key);
            else _keys[key] = kv;
        }
        Revision = changes.Revision;
        CompactRevision = changes.CompactRevision;
    }

    public IEnumerable<KeyValue> All => _keys.Values;
}
