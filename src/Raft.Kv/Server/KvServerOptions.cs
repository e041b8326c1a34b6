using Raft.Kv.State;
using Raft.Kv.Storage;

namespace Raft.Kv.Server;

/// <summary>One member of the cluster: its raft id, name and the URLs peers and clients use.</summary>
public sealed record KvMember(ulong Id, string Name, string PeerUrl, string ClientUrl);

/// <summary>What one raftv member needs to run.</summary>
public sealed record KvServerOptions
{
    public required ulong NodeId { get; init; }
    public required IReadOnlyList<KvMember> Members { get; init; }
    /// <summary>PostgreSQL database of this member (raft log and key-value state).</summary>
    public required string ConnectionString { get; init; }
    public ulong ClusterId { get; init; } = 0x7261667476; // "raftv"
    public TimeSpan TickInterval { get; init; } = TimeSpan.FromMilliseconds(100);
    public int ElectionTick { get; init; } = 10;
    public int HeartbeatTick { get; init; } = 1;
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(7);
    public LogCompactionPolicy Compaction { get; init; } = new();
    /// <summary>
    /// etcd's --initial-cluster-state existing: this member was added with MemberAdd and joins a
    /// running cluster, so it does not bootstrap a configuration; the leader sends it the log or a
    /// snapshot. <see cref="Members"/> then lists the running members and this one.
    /// </summary>
    public bool JoinExisting { get; init; }
    /// <summary>
    /// The name this member publishes through raft once it runs (etcd's --name); null keeps the
    /// name <see cref="Members"/> gives it. Members' records start from <see cref="Members"/>, which
    /// every member is given alike, so their tables agree from the first entry on.
    /// </summary>
    public string? Name { get; init; }
    public PostgresKvStoreOptions Store { get; init; } = new();

    public KvMember Self => Members.First(m => m.Id == NodeId);

    public void Validate()
    {
        if (NodeId == 0) throw new ArgumentException("NodeId must not be 0");
        if (Members.Count == 0) throw new ArgumentException("Members must list the cluster's members");
        if (Members.Select(m => m.Id).Distinct().Count() != Members.Count) throw new ArgumentException("member ids must be distinct");
        if (Members.All(m => m.Id != NodeId)) throw new ArgumentException($"member {NodeId} is not among Members");
        foreach (var m in Members)
        {
            if (!Uri.TryCreate(m.PeerUrl, UriKind.Absolute, out _)) throw new ArgumentException($"member {m.Id}: peer URL '{m.PeerUrl}' is not an absolute URL");
            if (!Uri.TryCreate(m.ClientUrl, UriKind.Absolute, out _)) throw new ArgumentException($"member {m.Id}: client URL '{m.ClientUrl}' is not an absolute URL");
        }
        if (TickInterval <= TimeSpan.Zero) throw new ArgumentException("TickInterval must be positive");
        if (RequestTimeout <= TimeSpan.Zero) throw new ArgumentException("RequestTimeout must be positive");
        Compaction.Validate();
        Store.Validate();
    }
}
