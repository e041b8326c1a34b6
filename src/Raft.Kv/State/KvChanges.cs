using Raft.Kv.Etcd.Mvccpb;

namespace Raft.Kv.State;

/// <summary>
/// What one applied command does to the state: the keys it writes (the new record, or null for a
/// deletion) and the revisions after it. Applying it is all a store does; deciding it is the applier's.
/// </summary>
public sealed class KvChanges
{
    private readonly SortedDictionary<byte[], KeyValue?> _writes = new(KeyComparer.Instance);

    public KvChanges(long revision, long compactRevision)
    {
        Revision = revision;
        CompactRevision = compactRevision;
    }

    public long Revision { get; internal set; }
    public long CompactRevision { get; internal set; }

    /// <summary>Written keys in ascending order: the new record, or null where the key was deleted.</summary>
    public IReadOnlyDictionary<byte[], KeyValue?> Writes => _writes;

    public bool IsEmpty => _writes.Count == 0;

    internal void Put(KeyValue kv) => _writes[kv.Key.ToByteArray()] = kv;
    internal void Delete(byte[] key) => _writes[key] = null;
    internal bool TryGetWrite(byte[] key, out KeyValue? kv) => _writes.TryGetValue(key, out kv);
}
