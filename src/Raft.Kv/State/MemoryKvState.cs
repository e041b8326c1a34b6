using Raft.Kv.Etcd.Mvccpb;

namespace Raft.Kv.State;

/// <summary>
/// The key-value state in memory: the state machine of the unit tests, and the working copy the
/// PostgreSQL store loads the keys of one command into before running the applier on it. It keeps
/// the history of the keys it writes (and of those loaded with <see cref="LoadVersion"/>), so reads
/// at past revisions are served from it, as etcd's MVCC store serves them.
/// </summary>
public sealed class MemoryKvState : IKvView
{
    private readonly SortedDictionary<byte[], KeyValue> _keys = new(KeyComparer.Instance);
    // Versions of each key in ascending mod revision; a deletion is a record with Version 0 (etcd's tombstone).
    private readonly SortedDictionary<byte[], List<KeyValue>> _history = new(KeyComparer.Instance);

    /// <param name="historyFrom">Reads at revisions below this are not answered from here (history not kept).</param>
    public MemoryKvState(long revision = 1, long compactRevision = 0, long historyFrom = 0)
    {
        Revision = revision;
        CompactRevision = compactRevision;
        HistoryFrom = historyFrom;
    }

    public long Revision { get; private set; }
    public long CompactRevision { get; private set; }
    public long HistoryFrom { get; }
    public int Count => _keys.Count;

    public IEnumerable<KeyValue> Scan(KeyRange range) => ScanMap(_keys, range);

    private static IEnumerable<T> ScanMap<T>(SortedDictionary<byte[], T> map, KeyRange range)
    {
        if (range.IsSingleKey)
        {
            if (map.TryGetValue(range.Start, out var v)) yield return v;
            yield break;
        }
        if (range.IsEmpty) yield break;
        // SortedDictionary has no seek; the working copies this serves are small, so a filtered walk is enough.
        foreach (var (key, v) in map)
        {
            if (!range.IsUnbounded && KeyComparer.Instance.Compare(key, range.End!) >= 0) yield break;
            if (KeyComparer.Instance.Compare(key, range.Start) >= 0) yield return v;
        }
    }

    public IKvView? AtRevision(long revision)
    {
        if (revision == Revision) return this;
        if (revision < HistoryFrom || revision < CompactRevision || revision > Revision) return null;
        return new PastView(this, revision);
    }

    /// <summary>Loads a record as it is stored (used to build working copies and to import snapshots).</summary>
    public void Load(KeyValue kv) => _keys[kv.Key.ToByteArray()] = kv;

    /// <summary>Loads one past version of a key (a record with Version 0 for a deletion), for reads at past revisions.</summary>
    public void LoadVersion(KeyValue kv)
    {
        var key = kv.Key.ToByteArray();
        if (!_history.TryGetValue(key, out var versions)) _history[key] = versions = [];
        var i = versions.FindIndex(v => v.ModRevision >= kv.ModRevision);
        if (i < 0) versions.Add(kv);
        else if (versions[i].ModRevision != kv.ModRevision) versions.Insert(i, kv);
    }

    public void Apply(KvChanges changes)
    {
        foreach (var (key, kv) in changes.Writes)
        {
            if (kv is null)
            {
                _keys.Remove(key);
                LoadVersion(new KeyValue { Key = Google.Protobuf.ByteString.CopyFrom(key), ModRevision = changes.Revision });
            }
            else
            {
                _keys[key] = kv;
                LoadVersion(kv);
            }
        }
        Revision = changes.Revision;
        if (changes.CompactRevision > CompactRevision) Compact(changes.CompactRevision);
    }

    /// <summary>Forgets the versions no read at or after <paramref name="revision"/> can see.</summary>
    private void Compact(long revision)
    {
        CompactRevision = revision;
        foreach (var key in _history.Keys.ToList())
        {
            var versions = _history[key];
            var keep = versions.FindLastIndex(v => v.ModRevision <= revision);
            if (keep < 0) continue;
            // The newest version at or before the compaction stays (unless it is a deletion): reads at the compacted revision see it.
            versions.RemoveRange(0, versions[keep].Version == 0 ? keep + 1 : keep);
            if (versions.Count == 0) _history.Remove(key);
        }
    }

    public IEnumerable<KeyValue> All => _keys.Values;

    /// <summary>The keys at a past revision: each key's newest version at or before it, deletions left out.</summary>
    private sealed class PastView(MemoryKvState state, long revision) : IKvView
    {
        public long Revision => revision;
        public long CompactRevision => state.CompactRevision;

        public IEnumerable<KeyValue> Scan(KeyRange range)
        {
            foreach (var versions in ScanMap(state._history, range))
            {
                var i = versions.FindLastIndex(v => v.ModRevision <= revision);
                if (i >= 0 && versions[i].Version > 0) yield return versions[i];
            }
        }

        public IKvView? AtRevision(long other) => state.AtRevision(other);
    }
}
