using Raft.Kv.State;
using Raft.Kv.Storage;

namespace Raft.Kv.Server;

/// <summary>One member of the cluster: its raft id, name and the URLs peers and clients use.</summary>
public sealed record KvMember(ulong Id, string Name, string PeerUrl, string ClientUrl);

/// <summary>
/// PEM files for one TLS endpoint, as etcd's flags name them: --cert-file/--key-file/--trusted-ca-file/
/// --client-cert-auth for clients, --peer-cert-file/--peer-key-file/--peer-trusted-ca-file/
/// --peer-client-cert-auth for peers. <see cref="CertFile"/> and <see cref="KeyFile"/> are this member's
/// certificate and key (served, and presented when it dials); <see cref="TrustedCaFile"/> is the authority
/// whose certificates are trusted (null: the system's store); <see cref="ClientCertAuth"/> makes the
/// server require a certificate from that authority of everyone who connects.
/// </summary>
public sealed record TlsFiles(string CertFile, string KeyFile, string? TrustedCaFile, bool ClientCertAuth)
{
    /// <summary>Throws with a message naming the etcd flag (<paramref name="flagPrefix"/> is "" or "peer-") of a missing or unset file.</summary>
    public void Validate(string flagPrefix)
    {
        foreach (var (flag, path) in new[] { ("cert-file", CertFile), ("key-file", KeyFile), ("trusted-ca-file", TrustedCaFile) })
        {
            if (path is null) continue;
            if (string.IsNullOrWhiteSpace(path)) throw new ArgumentException($"--{flagPrefix}{flag} is empty");
            if (!File.Exists(path)) throw new ArgumentException($"--{flagPrefix}{flag} '{path}' does not exist");
        }
        if (ClientCertAuth && TrustedCaFile is null)
            throw new ArgumentException($"--{flagPrefix}client-cert-auth needs --{flagPrefix}trusted-ca-file: client certificates are checked against it");
    }
}

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
    /// <summary>
    /// TLS between members (etcd's --peer-* flags); null is cleartext. Peers are dialled at https://
    /// peer URLs with this member's certificate, and their certificates are checked against
    /// <see cref="TlsFiles.TrustedCaFile"/>, which is therefore required.
    /// </summary>
    public TlsFiles? PeerTls { get; init; }
    /// <summary>TLS for etcd clients (etcd's --cert-file, --key-file, --trusted-ca-file, --client-cert-auth); null is cleartext.</summary>
    public TlsFiles? ClientTls { get; init; }
    /// <summary>Size of the chunks a snapshot is sent to a peer in (tests make it small to send many).</summary>
    internal int PeerSnapshotChunkBytes { get; init; } = 1024 * 1024;

    /// <summary>
    /// Revisions of key history kept for reads at past revisions (etcd's --auto-compaction-mode=revision
    /// --auto-compaction-retention): the leader compacts older ones through raft. 0 keeps everything
    /// until a client compacts.
    /// </summary>
    public long AutoCompactionRetention { get; init; } = 10_000;
    /// <summary>How often the leader checks whether to compact.</summary>
    public TimeSpan AutoCompactionInterval { get; init; } = TimeSpan.FromSeconds(5);
    /// <summary>etcd's --max-request-bytes: a write whose request is larger is refused ("request is too large").</summary>
    public int MaxRequestBytes { get; init; } = 1536 * 1024;
    /// <summary>Where the client endpoint listens (etcd's --listen-client-urls); null: <see cref="Self"/>'s client URL.</summary>
    public string? ListenClientUrl { get; init; }
    /// <summary>Where the peer endpoint listens (etcd's --listen-peer-urls); null: <see cref="Self"/>'s peer URL.</summary>
    public string? ListenPeerUrl { get; init; }

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
            // Other members' client URLs may be unknown at first (etcd's --initial-cluster names peer URLs only): they publish them.
            if ((m.Id == NodeId || m.ClientUrl.Length > 0) && !Uri.TryCreate(m.ClientUrl, UriKind.Absolute, out _))
                throw new ArgumentException($"member {m.Id}: client URL '{m.ClientUrl}' is not an absolute URL");
        }
        if (PeerTls is { } peerTls)
        {
            if (peerTls.TrustedCaFile is null)
                throw new ArgumentException("--peer-trusted-ca-file is required with peer TLS: members check each other's certificates against it");
            peerTls.Validate("peer-");
        }
        ClientTls?.Validate("");
        if (PeerSnapshotChunkBytes <= 0) throw new ArgumentException($"PeerSnapshotChunkBytes must be positive, not {PeerSnapshotChunkBytes}");
        foreach (var m in Members)
        {
            var peerScheme = new Uri(m.PeerUrl).Scheme;
            if (PeerTls is null && peerScheme != Uri.UriSchemeHttp)
                throw new ArgumentException($"member {m.Id}: peer URL '{m.PeerUrl}' is not http:// but no peer TLS files are given (--peer-cert-file, --peer-key-file, --peer-trusted-ca-file)");
            if (PeerTls is not null && peerScheme != Uri.UriSchemeHttps)
                throw new ArgumentException($"member {m.Id}: peer URL '{m.PeerUrl}' must be https:// with peer TLS");
        }
        var clientScheme = new Uri(Self.ClientUrl).Scheme;
        if (ClientTls is null && clientScheme != Uri.UriSchemeHttp)
            throw new ArgumentException($"client URL '{Self.ClientUrl}' is not http:// but no client TLS files are given (--cert-file, --key-file)");
        if (ClientTls is not null && clientScheme != Uri.UriSchemeHttps)
            throw new ArgumentException($"client URL '{Self.ClientUrl}' must be https:// with client TLS");
        if (TickInterval <= TimeSpan.Zero) throw new ArgumentException("TickInterval must be positive");
        if (RequestTimeout <= TimeSpan.Zero) throw new ArgumentException("RequestTimeout must be positive");
        if (MaxRequestBytes < 1) throw new ArgumentException($"MaxRequestBytes must be positive, not {MaxRequestBytes}");
        if (AutoCompactionRetention < 0) throw new ArgumentException($"AutoCompactionRetention must not be negative, not {AutoCompactionRetention}");
        if (AutoCompactionInterval <= TimeSpan.Zero) throw new ArgumentException($"AutoCompactionInterval must be positive, not {AutoCompactionInterval}");
        Compaction.Validate();
        Store.Validate();
    }
}
