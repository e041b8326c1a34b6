using System.Net;
using System.Net.Http.Headers;
using System.Net.Security;
using Google.Protobuf;
using Raft.Transport.Grpc.Tests.Interop;
using Raft.Transport.Grpc.Wire;

namespace Raft.Transport.Grpc.Tests;

/// <summary>Mutual TLS: both ends must hold a certificate from the cluster's authority.</summary>
public sealed class TlsTests : IAsyncLifetime, IDisposable
{
    private readonly TestCertificates _certificates = new();
    private TestCertificates.Authority _cluster = null!;
    private TestCertificates.Authority _stranger = null!;
    private GrpcServer _server = null!;

    public async Task InitializeAsync()
    {
        _cluster = _certificates.CreateAuthority("cluster-ca");
        _stranger = _certificates.CreateAuthority("stranger-ca");
        _server = await GrpcServer.StartAsync(
            new GrpcServerOptions { Tls = _certificates.Issue(_cluster, "server", trusted: _cluster) },
            new EchoService().Register(new GrpcServiceRegistry()));
    }

    public async Task DisposeAsync() => await _server.DisposeAsync();

    public void Dispose() => _certificates.Dispose();

    private GrpcClient ClientWith(GrpcTlsFiles tls) =>
        new(new GrpcClientOptions { Address = _server.Address, Tls = tls });

    [Fact]
    public async Task A_client_certificate_from_the_cluster_authority_is_accepted()
    {
        Assert.Equal("https", _server.Address.Scheme);
        using var client = ClientWith(_certificates.Issue(_cluster, "good-client", trusted: _cluster));
        Assert.Equal("hi", (await client.UnaryAsync(EchoMethods.Unary, new EchoRequest { Text = "hi" })).Text);
        await using var call = client.StartDuplexStreaming(EchoMethods.Bidi);
        await call.WriteAsync(new EchoRequest { Text = "stream" });
        Assert.Equal("stream", (await call.ReadNextAsync()).Message!.Text);
    }

    [Fact]
    public async Task A_client_certificate_from_another_authority_is_refused()
    {
        using var client = ClientWith(_certificates.Issue(_stranger, "intruder", trusted: _cluster));
        var e = await Assert.ThrowsAsync<GrpcCallException>(() => client.UnaryAsync(EchoMethods.Unary, new EchoRequest { Text = "hi" },
            new GrpcCallOptions(Timeout: TimeSpan.FromSeconds(10))));
        Assert.Equal(StatusCode.Unavailable, e.StatusCode);
        Assert.True(_server.RefusedHandshakes >= 1, "the refusal was not counted");
    }

    [Fact]
    public async Task A_client_presenting_no_certificate_is_refused_and_counted()
    {
        var handler = new SocketsHttpHandler
        {
            // Trusts the server; presents nothing.
            SslOptions = new SslClientAuthenticationOptions { RemoteCertificateValidationCallback = (_, _, _, _) => true },
        };
        using var http = new HttpClient(handler) { DefaultRequestVersion = HttpVersion.Version20, DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact };
        var content = new ByteArrayContent(GrpcFrame.Encode(new EchoRequest { Text = "hi" }.ToByteArray()));
        content.Headers.ContentType = new MediaTypeHeaderValue("application/grpc");
        await Assert.ThrowsAsync<HttpRequestException>(() => http.PostAsync(new Uri(_server.Address, EchoMethods.Unary.FullName), content));
        Assert.Equal(1, _server.RefusedHandshakes);
        // A good client still gets through.
        using var client = ClientWith(_certificates.Issue(_cluster, "good-client", trusted: _cluster));
        Assert.Equal("after", (await client.UnaryAsync(EchoMethods.Unary, new EchoRequest { Text = "after" })).Text);
        Assert.Equal(1, _server.RefusedHandshakes);
    }

    [Fact]
    public async Task Server_only_tls_serves_clients_whatever_certificate_they_hold()
    {
        var serverFiles = _certificates.Issue(_cluster, "plain-server", trusted: _cluster) with { RequireClientCertificate = false };
        await using var server = await GrpcServer.StartAsync(new GrpcServerOptions { Tls = serverFiles },
            new EchoService().Register(new GrpcServiceRegistry()));
        using var client = new GrpcClient(new GrpcClientOptions { Address = server.Address, Tls = _certificates.Issue(_stranger, "anyone", trusted: _cluster) });
        Assert.Equal("hi", (await client.UnaryAsync(EchoMethods.Unary, new EchoRequest { Text = "hi" })).Text);
        Assert.Equal(0, server.RefusedHandshakes);
    }

    [Fact]
    public async Task A_client_without_an_authority_checks_the_server_against_the_system_store()
    {
        // The cluster's private authority is in no system store: the server is not trusted.
        using var client = ClientWith(_certificates.Issue(_cluster, "system-trusting", trusted: _cluster) with { AuthorityPemPath = null });
        var e = await Assert.ThrowsAsync<GrpcCallException>(() => client.UnaryAsync(EchoMethods.Unary, new EchoRequest { Text = "hi" },
            new GrpcCallOptions(Timeout: TimeSpan.FromSeconds(10))));
        Assert.Equal(StatusCode.Unavailable, e.StatusCode);
    }

    [Fact]
    public async Task A_server_certificate_from_another_authority_is_refused_by_the_client()
    {
        // The client's certificate is good, but it trusts only the stranger's authority.
        using var client = ClientWith(_certificates.Issue(_cluster, "wary-client", trusted: _stranger));
        var e = await Assert.ThrowsAsync<GrpcCallException>(() => client.UnaryAsync(EchoMethods.Unary, new EchoRequest { Text = "hi" },
            new GrpcCallOptions(Timeout: TimeSpan.FromSeconds(10))));
        Assert.Equal(StatusCode.Unavailable, e.StatusCode);
        Assert.Contains("TLS", e.StatusMessage);
    }

    [Fact]
    public void Options_name_what_is_missing()
    {
        var missing = new GrpcTlsFiles("/nonexistent/cert.pem", "/nonexistent/key.pem", "/nonexistent/ca.pem");
        var server = Assert.Throws<ArgumentException>(() => new GrpcServerOptions { Tls = missing }.Validate());
        Assert.Contains("/nonexistent/cert.pem", server.Message);
        var https = Assert.Throws<ArgumentException>(() => new GrpcClientOptions { Address = new Uri("https://127.0.0.1:1") }.Validate());
        Assert.Contains("no TLS files", https.Message);
        var plain = Assert.Throws<ArgumentException>(() =>
            new GrpcClientOptions { Address = new Uri("http://127.0.0.1:1"), Tls = _certificates.Issue(_cluster, "c", _cluster) }.Validate());
        Assert.Contains("cleartext", plain.Message);
        var noAuthority = Assert.Throws<ArgumentException>(() =>
            new GrpcServerOptions { Tls = _certificates.Issue(_cluster, "s", _cluster) with { AuthorityPemPath = null } }.Validate());
        Assert.Contains("authority", noAuthority.Message);
    }
}
