using Raft.Kv.Etcd.Mvccpb;

namespace Raft.Kv.State;

/// <summary>A read-only view of the key-value state at one revision.</summary>
public interface IKvView
{
    /// <summary>The store's revision: the number of write transactions applied (etcd starts at 1).</summary>
    long Revision { get; }

    /// <summary>Revisions at or below this one have been compacted away.</summary>
    long CompactRevision { get; }

    /// <summary>The live keys of the range, in ascending key order. Callers must not modify the records.</summary>
    IEnumerable<KeyValue> Scan(KeyRange range);

    /// <summary>
    /// The keys as they were at <paramref name="revision"/> (at least <see cref="CompactRevision"/>, at most
    /// <see cref="Revision"/>), or null when this view keeps no history reaching that far back.
    /// </summary>
    IKvView? AtRevision(long revision) => revision == Revision ? this : null;
}

public static class KvViewExtensions
{
    public static KeyValue? Get(this IKvView view, byte[] key) => view.Scan(new KeyRange(key, null)).FirstOrDefault();
}
