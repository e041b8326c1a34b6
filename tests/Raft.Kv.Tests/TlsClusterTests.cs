using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Security;
using Google.Protobuf;
using Raft.Kv.Etcd.Serverpb;
using Raft.Kv.Server;
using Raft.Kv.State;
using Raft.Spec;
using Raft.Transport.Grpc.Peers;
using Raft.Transport.Grpc.Wire;

namespace Raft.Kv.Tests;

/// <summary>
/// A 3-member cluster with mutual TLS between members and TLS (with client certificates) for
/// clients, every certificate from one private authority made for the run.
/// </summary>
public sealed class TlsClusterFixture : IAsyncLifetime
{
    private static readonly GrpcMethod<StatusRequest, StatusResponse> StatusMethod =
        GrpcMethod.Protobuf(GrpcMethodType.Unary, "etcdserverpb.Maintenance", "Status", StatusRequest.Parser, StatusResponse.Parser);

    private readonly DirectoryInfo _folder = Directory.CreateTempSubdirectory("raftv-tls-cluster-");

    public LocalCertificateAuthority Authority { get; private set; } = null!;
    public IReadOnlyList<KvMember> Members { get; private set; } = [];
    public List<KvServer> Servers { get; } = [];
    /// <summary>What etcdctl presents (--cert/--key) and trusts (--cacert).</summary>
    public TlsFiles Client { get; private set; } = null!;
    public string Folder => _folder.FullName;

    public async Task InitializeAsync()
    {
        Authority = LocalCertificateAuthority.Create(Path.Combine(Folder, "ca"));
        Client = Authority.Issue("etcdctl", clientCertAuth: false);
        Members = Enumerable.Range(1, 3).Select(i => new KvMember((ulong)i, $"node{i}",
            $"https://127.0.0.1:{ClusterKit.FreePort()}", $"https://127.0.0.1:{ClusterKit.FreePort()}")).ToList();
        foreach (var m in Members)
        {
            var files = Authority.Issue(m.Name, clientCertAuth: true);
            Servers.Add(await KvServer.StartAsync(new KvServerOptions
            {
                NodeId = m.Id, Members = Members, ConnectionString = await ClusterKit.NewDatabaseAsync(),
                TickInterval = TimeSpan.FromMilliseconds(50), RequestTimeout = TimeSpan.FromSeconds(5),
                PeerTls = files, ClientTls = files,
            }));
        }
        await PeerKit.LeaderAsync(Members.Count, async i =>
        {
            using var client = ClientTo(Members[i].ClientUrl);
            return await client.UnaryAsync(StatusMethod, new StatusRequest(), new GrpcCallOptions(Timeout: TimeSpan.FromSeconds(5)));
        });
    }

    /// <summary>Our own gRPC client to a member's client endpoint with etcdctl's certificate.</summary>
    public GrpcClient ClientTo(string url) =>
        new(new GrpcClientOptions { Address = new Uri(url), Tls = new GrpcTlsFiles(Client.CertFile, Client.KeyFile, Client.TrustedCaFile) });

    public async Task DisposeAsync()
    {
        foreach (var s in Servers) await s.DisposeAsync();
        Authority?.Dispose();
        _folder.Delete(recursive: true);
    }
}

public class TlsClusterTests(TlsClusterFixture cluster) : IClassFixture<TlsClusterFixture>
{
    private static Task<(int Exit, string Out, string Err)> EtcdctlAsync(params string[] args) => EtcdctlAsync(TimeSpan.FromSeconds(10), args);

    /// <summary>etcdctl with <paramref name="commandTimeout"/>: calls meant to fail are given a short one (etcdctl retries until it ends).</summary>
    private static async Task<(int Exit, string Out, string Err)> EtcdctlAsync(TimeSpan commandTimeout, params string[] args)
    {
        var info = new ProcessStartInfo("etcdctl")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            Environment = { ["ETCDCTL_API"] = "3" },
        };
        info.ArgumentList.Add($"--command-timeout={commandTimeout.TotalSeconds:0}s");
        info.ArgumentList.Add($"--dial-timeout={Math.Min(3, commandTimeout.TotalSeconds):0}s");
        foreach (var a in args) info.ArgumentList.Add(a);
        Process process;
        try
        {
            process = Process.Start(info)!;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException("etcdctl is not installed: apt-get install -y etcd-client", e);
        }
        using var _ = process;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, (await output).Replace("\r", ""), await error);
    }

    private string[] Tls(params string[] args) =>
        [$"--cacert={cluster.Client.TrustedCaFile}", $"--cert={cluster.Client.CertFile}", $"--key={cluster.Client.KeyFile}", .. args];

    [Fact]
    public async Task Etcdctl_puts_and_gets_over_tls_with_a_client_certificate()
    {
        var endpoints = $"--endpoints={string.Join(",", cluster.Members.Select(m => m.ClientUrl))}";
        for (var i = 0; i < cluster.Members.Count; i++)
        {
            var put = await EtcdctlAsync(Tls($"--endpoints={cluster.Members[i].ClientUrl}", "put", $"tls{i}", $"secret{i}"));
            Assert.True(put.Exit == 0, put.Err);
            Assert.Equal("OK\n", put.Out);
            var get = await EtcdctlAsync(Tls($"--endpoints={cluster.Members[(i + 1) % 3].ClientUrl}", "get", $"tls{i}"));
            Assert.True(get.Exit == 0, get.Err);
            Assert.Equal($"tls{i}\nsecret{i}\n", get.Out);
        }
        var list = await EtcdctlAsync(Tls(endpoints, "member", "list"));
        Assert.True(list.Exit == 0, list.Err);
        foreach (var m in cluster.Members) Assert.Contains($"{m.Id:x}, started, {m.Name}, {m.PeerUrl}, {m.ClientUrl}", list.Out);
        var health = await EtcdctlAsync(Tls(endpoints, "endpoint", "health"));
        Assert.True(health.Exit == 0, health.Err);

        // The client endpoint requires a certificate from the authority, and speaks only TLS.
        var fail = TimeSpan.FromSeconds(2);
        var noCertificate = await EtcdctlAsync(fail, $"--cacert={cluster.Client.TrustedCaFile}", $"--endpoints={cluster.Members[0].ClientUrl}", "get", "tls0");
        Assert.NotEqual(0, noCertificate.Exit);
        var untrusted = await EtcdctlAsync(fail, $"--endpoints={cluster.Members[0].ClientUrl}", "get", "tls0");
        Assert.NotEqual(0, untrusted.Exit);
        var cleartext = await EtcdctlAsync(fail, $"--endpoints={cluster.Members[0].ClientUrl.Replace("https://", "http://")}", "get", "tls0");
        Assert.NotEqual(0, cleartext.Exit);
    }

    [Fact]
    public async Task A_peer_with_a_certificate_from_another_authority_or_none_is_refused_and_the_cluster_is_unaffected()
    {
        var target = cluster.Servers[0];
        var member = cluster.Members[0];
        var refusedBefore = target.RefusedPeerHandshakes;
        var status = await StatusAsync(member.ClientUrl);

        // An intruder that knows the cluster's authority (so it trusts the members) but holds a
        // certificate from its own: it claims to be member 2 and asks for votes at a far higher term.
        using var rogueAuthority = LocalCertificateAuthority.Create(Path.Combine(cluster.Folder, "rogue-" + Guid.NewGuid().ToString("N")[..6]));
        var rogue = rogueAuthority.Issue("node2", clientCertAuth: false);
        var unreachable = 0;
        await using (var intruder = new RaftTransport(
            new RaftTransportOptions { ClusterId = 0x7261667476, NodeId = 2, ReconnectDelayMin = TimeSpan.FromMilliseconds(50) },
            _ => Interlocked.Increment(ref unreachable), (_, _) => { }))
        {
            intruder.AddPeer(member.Id, new GrpcClientOptions
            {
                Address = new Uri(member.PeerUrl), Tls = new GrpcTlsFiles(rogue.CertFile, rogue.KeyFile, cluster.Authority.CertificateFile),
            });
            intruder.Send(PeerKit.Message(MessageType.MsgVote, 2, member.Id, status.RaftTerm + 100));
            await ClusterKit.EventuallyAsync(() => Task.FromResult(target.RefusedPeerHandshakes > refusedBefore), "the foreign certificate refused");
            await ClusterKit.EventuallyAsync(() => Task.FromResult(Volatile.Read(ref unreachable) > 0), "the intruder seeing member 1 unreachable");
        }

        // A connection presenting no certificate at all.
        var beforeNone = target.RefusedPeerHandshakes;
        var handler = new SocketsHttpHandler { SslOptions = new SslClientAuthenticationOptions { RemoteCertificateValidationCallback = (_, _, _, _) => true } };
        using (var http = new HttpClient(handler) { DefaultRequestVersion = HttpVersion.Version20, DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact })
        {
            var content = new ByteArrayContent(GrpcFrame.Encode(new Raft.Transport.Grpc.Protos.ProbeRequest { ClusterId = 0x7261667476 }.ToByteArray()));
            content.Headers.ContentType = new MediaTypeHeaderValue("application/grpc");
            await Assert.ThrowsAsync<HttpRequestException>(() => http.PostAsync(new Uri(new Uri(member.PeerUrl), RaftPeerMethods.Probe.FullName), content));
        }
        Assert.True(target.RefusedPeerHandshakes > beforeNone, "the connection without a certificate was not counted");

        // Nothing got through: the intruder's term never reached the member, and the cluster takes writes.
        var after = await StatusAsync(member.ClientUrl);
        Assert.True(after.RaftTerm < status.RaftTerm + 100, $"the intruder's vote request reached raft (term {status.RaftTerm} -> {after.RaftTerm})");
        var put = await EtcdctlAsync(Tls($"--endpoints={cluster.Members[1].ClientUrl}", "put", "after-intruder", "ok"));
        Assert.True(put.Exit == 0, put.Err);
        Assert.Equal("after-intruder\nok\n", (await EtcdctlAsync(Tls($"--endpoints={member.ClientUrl}", "get", "after-intruder"))).Out);
    }

    [Fact]
    public void Options_name_the_etcd_flag_that_is_wrong()
    {
        var m = cluster.Members[0];
        var files = cluster.Client;
        KvServerOptions Options(TlsFiles? peer, TlsFiles? client, KvMember? self = null) => new()
        {
            NodeId = m.Id, Members = [self ?? m], ConnectionString = "Host=127.0.0.1", PeerTls = peer, ClientTls = client,
        };
        Assert.Contains("--peer-trusted-ca-file is required",
            Assert.Throws<ArgumentException>(() => Options(files with { TrustedCaFile = null }, files).Validate()).Message);
        Assert.Contains("--peer-key-file '/nonexistent/key.pem' does not exist",
            Assert.Throws<ArgumentException>(() => Options(files with { KeyFile = "/nonexistent/key.pem" }, files).Validate()).Message);
        Assert.Contains("--client-cert-auth needs --trusted-ca-file",
            Assert.Throws<ArgumentException>(() => Options(files, files with { TrustedCaFile = null, ClientCertAuth = true }).Validate()).Message);
        Assert.Contains("must be https:// with peer TLS",
            Assert.Throws<ArgumentException>(() => Options(files, files, m with { PeerUrl = m.PeerUrl.Replace("https", "http") }).Validate()).Message);
        Assert.Contains("no client TLS files",
            Assert.Throws<ArgumentException>(() => Options(files, null).Validate()).Message);
        // Server-only TLS for clients needs no authority.
        Options(files, files with { TrustedCaFile = null, ClientCertAuth = false }).Validate();
    }

    private async Task<StatusResponse> StatusAsync(string url)
    {
        using var client = cluster.ClientTo(url);
        return await client.UnaryAsync(
            GrpcMethod.Protobuf(GrpcMethodType.Unary, "etcdserverpb.Maintenance", "Status", StatusRequest.Parser, StatusResponse.Parser),
            new StatusRequest(), new GrpcCallOptions(Timeout: TimeSpan.FromSeconds(5)));
    }
}
