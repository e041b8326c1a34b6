using Google.Protobuf;

namespace Raft.Kv.State;

/// <summary>Keys are compared as unsigned bytes, lexicographically, as etcd (and PostgreSQL's bytea) do.</summary>
public sealed class KeyComparer : IComparer<byte[]>, IEqualityComparer<byte[]>
{
    public static readonly KeyComparer Instance = new();

    public int Compare(byte[]? x, byte[]? y) => x.AsSpan().SequenceCompareTo(y);
    public bool Equals(byte[]? x, byte[]? y) => x.AsSpan().SequenceEqual(y);

    public int GetHashCode(byte[] key)
    {
        var hash = new HashCode();
        hash.AddBytes(key);
        return hash.ToHashCode();
    }
}

/// <summary>
/// A key interval in etcd's conventions: <see cref="End"/> null is the single key <see cref="Start"/>;
/// otherwise [Start, End), with an empty End meaning "every key >= Start" (etcd's range_end "\0").
/// </summary>
public readonly record struct KeyRange(byte[] Start, byte[]? End)
{
    /// <summary>Reads etcd's key and range_end fields.</summary>
    public static KeyRange FromEtcd(ByteString key, ByteString rangeEnd)
    {
        var start = key.ToByteArray();
        if (rangeEnd.IsEmpty) return new(start, null);
        if (rangeEnd.Length == 1 && rangeEnd[0] == 0) return new(start, []);
        return new(start, rangeEnd.ToByteArray());
    }

    public bool IsSingleKey => End is null;
    public bool IsUnbounded => End is { Length: 0 };

    public bool Contains(ReadOnlySpan<byte> key)
    {
        if (End is null) return key.SequenceEqual(Start);
        if (key.SequenceCompareTo(Start) < 0) return false;
        return End.Length == 0 || key.SequenceCompareTo(End) < 0;
    }

    /// <summary>No key can be in it: an end at or before the start selects nothing, as in etcd.</summary>
    public bool IsEmpty => End is { Length: > 0 } && End.AsSpan().SequenceCompareTo(Start) <= 0;

    /// <summary>The prefix range of <paramref name="prefix"/>: [prefix, prefix+1), or all keys >= prefix when it is all 0xff.</summary>
    public static KeyRange Prefix(byte[] prefix)
    {
        var end = (byte[])prefix.Clone();
        for (var i = end.Length - 1; i >= 0; i--)
        {
            if (end[i] < 0xff)
            {
                end[i]++;
                return new(prefix, end[..(i + 1)]);
            }
        }
        return new(prefix, []);
    }
}
