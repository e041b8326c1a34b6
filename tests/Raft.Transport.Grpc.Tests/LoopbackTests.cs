using System.Buffers.Binary;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using Google.Protobuf;
using Raft.Transport.Grpc.Tests.Interop;
using Raft.Transport.Grpc.Wire;

namespace Raft.Transport.Grpc.Tests;

/// <summary>Our server with Echo plus methods that misbehave, and a client to it.</summary>
public sealed class LoopbackFixture : IAsyncLifetime
{
    public const int MaxMessageBytes = 64 * 1024;

    public static readonly GrpcMethod<EchoRequest, EchoReply> Throw =
        GrpcMethod.Protobuf(GrpcMethodType.Unary, "test.Misbehaving", "Throw", EchoRequest.Parser, EchoReply.Parser);
    public static readonly GrpcMethod<EchoRequest, EchoReply> Hang =
        GrpcMethod.Protobuf(GrpcMethodType.Unary, "test.Misbehaving", "Hang", EchoRequest.Parser, EchoReply.Parser);

    /// <summary>Releases the handlers of <see cref="Hang"/>, which ignore cancellation.</summary>
    public TaskCompletionSource ReleaseHangs { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public EchoService Echo { get; } = new();
    public GrpcServer Server { get; private set; } = null!;
    public GrpcClient Client { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        var registry = Echo.Register(new GrpcServiceRegistry())
            .AddUnary(Throw, (_, _) => throw new InvalidOperationException("handler bug"))
            .AddUnary(Hang, async (request, _) =>
            {
                await ReleaseHangs.Task;
                return new EchoReply { Text = request.Text };
            });
        Server = await GrpcServer.StartAsync(new GrpcServerOptions { MaxReceiveMessageSize = MaxMessageBytes }, registry);
        Client = new GrpcClient(new GrpcClientOptions { Address = Server.Address });
    }

    public async Task DisposeAsync()
    {
        ReleaseHangs.TrySetResult();
        Client?.Dispose();
        if (Server is not null) await Server.DisposeAsync();
    }
}

/// <summary>Our client against our server, including what goes wrong.</summary>
public sealed class LoopbackTests(LoopbackFixture fixture) : IClassFixture<LoopbackFixture>
{
    private GrpcClient Client => fixture.Client;

    [Fact]
    public async Task All_four_shapes_work()
    {
        Assert.Equal("u", (await Client.UnaryAsync(EchoMethods.Unary, new EchoRequest { Text = "u" })).Text);

        await using (var call = Client.StartClientStreaming(EchoMethods.ClientStream))
        {
            await call.WriteAsync(new EchoRequest { Text = "a" });
            await call.WriteAsync(new EchoRequest { Text = "b" });
            await call.CompleteRequestAsync();
            Assert.Equal("a,b", (await call.ReadResponseAsync()).Text);
        }

        await using (var call = await Client.StartServerStreamingAsync(EchoMethods.ServerStream, new EchoRequest { Text = "s", Count = 3 }))
        {
            Assert.Equal(["s0", "s1", "s2"], await call.ReadAllAsync().Select(r => r.Text).ToListAsync());
        }

        await using (var call = Client.StartDuplexStreaming(EchoMethods.Bidi))
        {
            for (var i = 0; i < 3; i++)
            {
                await call.WriteAsync(new EchoRequest { Text = $"d{i}" });
                Assert.Equal($"d{i}", (await call.ReadNextAsync()).Message!.Text);
            }
            await call.CompleteRequestAsync();
            Assert.False((await call.ReadNextAsync()).Received);
        }
    }

    [Fact]
    public async Task Many_concurrent_calls_share_the_client()
    {
        var replies = await Task.WhenAll(Enumerable.Range(0, 200).Select(i =>
            Client.UnaryAsync(EchoMethods.Unary, new EchoRequest { Text = $"c{i}" })));
        Assert.Equal(Enumerable.Range(0, 200).Select(i => $"c{i}"), replies.Select(r => r.Text));
    }

    [Fact]
    public async Task A_message_just_under_the_limit_passes()
    {
        var reply = await Client.UnaryAsync(EchoMethods.Unary,
            new EchoRequest { Padding = ByteString.CopyFrom(new byte[LoopbackFixture.MaxMessageBytes - 100]), ReplyPadding = 1000 });
        Assert.Equal(1000, reply.Padding.Length);
    }

    [Fact]
    public async Task Error_status_with_message()
    {
        var e = await Assert.ThrowsAsync<GrpcCallException>(() =>
            Client.UnaryAsync(EchoMethods.Fail, new EchoRequest { StatusCode = (int)StatusCode.AlreadyExists, StatusMessage = "key exists: ✓ 100%" }));
        Assert.Equal((StatusCode.AlreadyExists, "key exists: ✓ 100%"), (e.StatusCode, e.StatusMessage));
    }

    [Fact]
    public async Task Handler_exception_is_unknown_and_the_server_keeps_serving()
    {
        var e = await Assert.ThrowsAsync<GrpcCallException>(() => Client.UnaryAsync(LoopbackFixture.Throw, new EchoRequest()));
        Assert.Equal(StatusCode.Unknown, e.StatusCode);
        Assert.DoesNotContain("handler bug", e.StatusMessage); // details stay on the server unless asked for
        Assert.Equal("after", (await Client.UnaryAsync(EchoMethods.Unary, new EchoRequest { Text = "after" })).Text);
    }

    [Fact]
    public async Task Unknown_method_is_unimplemented()
    {
        var missing = GrpcMethod.Protobuf(GrpcMethodType.Unary, "interop.v1.Echo", "Missing", EchoRequest.Parser, EchoReply.Parser);
        var e = await Assert.ThrowsAsync<GrpcCallException>(() => Client.UnaryAsync(missing, new EchoRequest()));
        Assert.Equal(StatusCode.Unimplemented, e.StatusCode);
        Assert.Contains("/interop.v1.Echo/Missing", e.StatusMessage);
    }

    [Fact]
    public async Task Client_deadline_and_cancellation()
    {
        var late = await Assert.ThrowsAsync<GrpcCallException>(() => Client.UnaryAsync(EchoMethods.Unary,
            new EchoRequest { DelayMs = 10_000 }, new GrpcCallOptions(Timeout: TimeSpan.FromMilliseconds(200))));
        Assert.Equal(StatusCode.DeadlineExceeded, late.StatusCode);

        var before = fixture.Echo.Cancelled;
        using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
        var cancelled = await Assert.ThrowsAsync<GrpcCallException>(() => Client.UnaryAsync(EchoMethods.Unary,
            new EchoRequest { DelayMs = 10_000 }, new GrpcCallOptions(CancellationToken: cancel.Token)));
        Assert.Equal(StatusCode.Cancelled, cancelled.StatusCode);
        await Eventually.TrueAsync(() => fixture.Echo.Cancelled > before, "the handler saw the cancellation");
    }

    [Fact]
    public async Task A_write_after_the_deadline_is_deadline_exceeded_not_a_bare_cancellation()
    {
        await using var call = Client.StartClientStreaming(EchoMethods.ClientStream, new GrpcCallOptions(Timeout: TimeSpan.FromMilliseconds(100)));
        await Task.Delay(400);
        var e = await Assert.ThrowsAsync<GrpcCallException>(() => call.WriteAsync(new EchoRequest { Text = "late" }));
        Assert.Equal(StatusCode.DeadlineExceeded, e.StatusCode);
        // The call stays failed with the same status.
        var again = await Assert.ThrowsAsync<GrpcCallException>(() => call.ReadResponseAsync());
        Assert.Equal(StatusCode.DeadlineExceeded, again.StatusCode);
    }

    [Fact]
    public async Task A_write_whose_own_token_is_cancelled_is_cancelled()
    {
        await using var call = Client.StartDuplexStreaming(EchoMethods.Bidi);
        using var cancelled = new CancellationTokenSource();
        await cancelled.CancelAsync();
        var e = await Assert.ThrowsAsync<GrpcCallException>(() => call.WriteAsync(new EchoRequest { Text = "x" }, cancelled.Token));
        Assert.Equal(StatusCode.Cancelled, e.StatusCode);
    }

    [Fact]
    public async Task Server_ends_a_call_at_its_deadline_even_when_the_handler_ignores_it()
    {
        // A raw request: our client would give up at the deadline by itself, hiding the server's answer.
        using var http = RawHttp2Client();
        using var request = GrpcRequest(LoopbackFixture.Hang.FullName, GrpcFrame.Encode(new EchoRequest { Text = "h" }.ToByteArray()));
        request.Headers.TryAddWithoutValidation(GrpcTimeout.Header, "300m");
        using var response = await http.SendAsync(request);
        Assert.Equal(StatusCode.DeadlineExceeded, await StatusOfAsync(response));
    }

    [Fact]
    public async Task Oversized_frame_is_resource_exhausted_and_the_server_keeps_serving()
    {
        var header = new byte[5];
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(1), 10 * 1024 * 1024);
        using var http = RawHttp2Client();
        using var response = await http.SendAsync(GrpcRequest(EchoMethods.Unary.FullName, [.. header, .. new byte[1000]]));
        Assert.Equal(StatusCode.ResourceExhausted, await StatusOfAsync(response));
        Assert.Contains($"exceeds the limit of {LoopbackFixture.MaxMessageBytes} bytes", MessageOf(response));
        Assert.Equal("next", (await Client.UnaryAsync(EchoMethods.Unary, new EchoRequest { Text = "next" })).Text);
    }

    [Theory]
    [InlineData(new byte[] { 7, 0, 0, 0, 1, 0 }, "invalid frame flag 7")]
    [InlineData(new byte[] { 1, 0, 0, 0, 1, 0 }, "compressed message")]
    [InlineData(new byte[] { 0, 0, 0, 0, 9, 1, 2 }, "stream ended inside a message")]
    [InlineData(new byte[] { 0, 0, 0, 0, 2, 0xFF, 0xFF }, "could not be parsed")]
    [InlineData(new byte[] { }, "request message missing")]
    public async Task Malformed_request_is_internal_with_a_reason_and_the_server_keeps_serving(byte[] body, string reason)
    {
        using var http = RawHttp2Client();
        using var response = await http.SendAsync(GrpcRequest(EchoMethods.Unary.FullName, body));
        Assert.Equal(StatusCode.Internal, await StatusOfAsync(response));
        Assert.Contains(reason, MessageOf(response));
        Assert.Equal("next", (await Client.UnaryAsync(EchoMethods.Unary, new EchoRequest { Text = "next" })).Text);
    }

    [Fact]
    public async Task Malformed_frame_in_a_stream_ends_that_stream_only()
    {
        await using var healthy = Client.StartDuplexStreaming(EchoMethods.Bidi);
        await healthy.WriteAsync(new EchoRequest { Text = "before" });
        Assert.Equal("before", (await healthy.ReadNextAsync()).Message!.Text);

        using var http = RawHttp2Client();
        byte[] body = [.. GrpcFrame.Encode(new EchoRequest { Text = "ok" }.ToByteArray()), 9, 0, 0, 0, 0];
        using var response = await http.SendAsync(GrpcRequest(EchoMethods.Bidi.FullName, body), HttpCompletionOption.ResponseHeadersRead);
        var stream = await response.Content.ReadAsStreamAsync();
        Assert.Equal("ok", EchoReply.Parser.ParseFrom(await GrpcFrame.ReadAsync(stream, 1000, CancellationToken.None)).Text);
        Assert.Null(await GrpcFrame.ReadAsync(stream, 1000, CancellationToken.None)); // the stream ended...
        Assert.Equal(StatusCode.Internal, GrpcStatusHeaders.ParseStatus(Header(response, GrpcStatusHeaders.Status))); // ...with the reason
        Assert.Contains("invalid frame flag 9", MessageOf(response));

        await healthy.WriteAsync(new EchoRequest { Text = "after" });
        Assert.Equal("after", (await healthy.ReadNextAsync()).Message!.Text);
    }

    [Fact]
    public async Task Non_grpc_requests_are_refused_with_415()
    {
        using var http = RawHttp2Client();
        using var request = GrpcRequest(EchoMethods.Unary.FullName, []);
        request.Content!.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        using var response = await http.SendAsync(request);
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, response.StatusCode);
    }

    [Fact]
    public async Task A_peer_that_never_answers_hits_the_deadline()
    {
        // Accepts TCP connections and then says nothing, not even the HTTP/2 preface.
        using var silent = new TcpListener(IPAddress.Loopback, 0);
        silent.Start();
        var accepted = new List<Socket>();
        var acceptLoop = Task.Run(async () =>
        {
            try { while (true) accepted.Add(await silent.AcceptSocketAsync()); }
            catch (SocketException) { }
            catch (ObjectDisposedException) { }
        });
        using var client = new GrpcClient(new GrpcClientOptions { Address = new Uri($"http://127.0.0.1:{((IPEndPoint)silent.LocalEndpoint).Port}") });
        var e = await Assert.ThrowsAsync<GrpcCallException>(() => client.UnaryAsync(EchoMethods.Unary, new EchoRequest(),
            new GrpcCallOptions(Timeout: TimeSpan.FromMilliseconds(300))));
        Assert.Equal(StatusCode.DeadlineExceeded, e.StatusCode);
        silent.Stop();
        await acceptLoop;
        foreach (var socket in accepted) socket.Dispose();
    }

    [Fact]
    public async Task A_closed_port_is_unavailable()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        using var client = new GrpcClient(new GrpcClientOptions { Address = new Uri($"http://127.0.0.1:{port}") });
        var e = await Assert.ThrowsAsync<GrpcCallException>(() => client.UnaryAsync(EchoMethods.Unary, new EchoRequest()));
        Assert.Equal(StatusCode.Unavailable, e.StatusCode);
    }

    private HttpClient RawHttp2Client() => new(new SocketsHttpHandler())
    {
        BaseAddress = fixture.Server.Address,
        DefaultRequestVersion = HttpVersion.Version20,
        DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
    };

    private static HttpRequestMessage GrpcRequest(string method, byte[] body)
    {
        var content = new ByteArrayContent(body);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/grpc");
        return new HttpRequestMessage(HttpMethod.Post, method)
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = content,
        };
    }

    /// <summary>The grpc-status of a response: in its headers (trailers-only) or its trailers.</summary>
    private static async Task<StatusCode?> StatusOfAsync(HttpResponseMessage response)
    {
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        await response.Content.ReadAsByteArrayAsync();
        return GrpcStatusHeaders.ParseStatus(Header(response, GrpcStatusHeaders.Status));
    }

    private static string MessageOf(HttpResponseMessage response) =>
        GrpcStatusHeaders.DecodeMessage(Header(response, GrpcStatusHeaders.Message) ?? "");

    private static string? Header(HttpResponseMessage response, string name) =>
        response.Headers.TryGetValues(name, out var values) || response.TrailingHeaders.TryGetValues(name, out values)
            ? values.First()
            : null;
}
