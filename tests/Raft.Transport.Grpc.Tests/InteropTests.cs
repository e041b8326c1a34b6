using System.Text.Json.Nodes;
using Google.Protobuf;
using Raft.Transport.Grpc.Tests.Interop;
using Raft.Transport.Grpc.Wire;

namespace Raft.Transport.Grpc.Tests;

/// <summary>One grpc-js peer and one of our servers, shared by the interop tests of a class.</summary>
public sealed class InteropFixture : IAsyncLifetime
{
    /// <summary>Both servers refuse messages above this size.</summary>
    public const int MaxMessageBytes = 64 * 1024;

    public NodePeer Peer { get; private set; } = null!;
    public GrpcServer Server { get; private set; } = null!;
    public EchoService Echo { get; } = new();
    public GrpcClient ToNode { get; private set; } = null!;

    /// <summary>The "host:port" grpc-js dials to reach our server.</summary>
    public string ServerTarget => $"127.0.0.1:{Server.Address.Port}";

    public async Task InitializeAsync()
    {
        Peer = await NodePeer.StartAsync(MaxMessageBytes);
        Server = await GrpcServer.StartAsync(new GrpcServerOptions { MaxReceiveMessageSize = MaxMessageBytes },
            Echo.Register(new GrpcServiceRegistry()));
        ToNode = new GrpcClient(new GrpcClientOptions { Address = new Uri($"http://127.0.0.1:{Peer.Port}") });
    }

    public async Task DisposeAsync()
    {
        ToNode?.Dispose();
        if (Server is not null) await Server.DisposeAsync();
        if (Peer is not null) await Peer.DisposeAsync();
    }
}

/// <summary>grpc-js's client against our server.</summary>
public sealed class GrpcJsClientToOurServerTests(InteropFixture fixture) : IClassFixture<InteropFixture>
{
    private Task<NodeCallResult> CallAsync(string op, JsonArray requests, int deadlineMs = 0, int cancelAfterMs = 0, int maxReceiveBytes = 0)
    {
        var command = new JsonObject { ["op"] = op, ["target"] = fixture.ServerTarget, ["requests"] = requests };
        if (deadlineMs > 0) command["deadlineMs"] = deadlineMs;
        if (cancelAfterMs > 0) command["cancelAfterMs"] = cancelAfterMs;
        if (maxReceiveBytes > 0) command["maxReceiveBytes"] = maxReceiveBytes;
        return fixture.Peer.CallAsync(command);
    }

    private static JsonArray Requests(params JsonObject[] requests) => new(requests.Cast<JsonNode?>().ToArray());

    [Fact]
    public async Task Unary()
    {
        var result = await CallAsync("unary", Requests(new JsonObject { ["text"] = "héllo" }));
        Assert.True(result.Ok, result.Details);
        Assert.Equal("héllo", Assert.Single(result.Replies).Text);
    }

    [Fact]
    public async Task Client_streaming()
    {
        var result = await CallAsync("clientStream", Requests(new() { ["text"] = "a" }, new() { ["text"] = "b" }, new() { ["text"] = "c" }));
        Assert.True(result.Ok, result.Details);
        var reply = Assert.Single(result.Replies);
        Assert.Equal(("a,b,c", 3), (reply.Text, reply.Index));
    }

    [Fact]
    public async Task Server_streaming()
    {
        var result = await CallAsync("serverStream", Requests(new JsonObject { ["text"] = "x", ["count"] = 5 }));
        Assert.True(result.Ok, result.Details);
        Assert.Equal(["x0", "x1", "x2", "x3", "x4"], result.Replies.Select(r => r.Text));
    }

    [Fact]
    public async Task Bidirectional_streaming()
    {
        var result = await CallAsync("bidi", Requests(new() { ["text"] = "1" }, new() { ["text"] = "2" }));
        Assert.True(result.Ok, result.Details);
        Assert.Equal(["1", "2"], result.Replies.Select(r => r.Text));
    }

    [Fact]
    public async Task Error_status_and_its_message_arrive_intact()
    {
        const string message = "nope: 100% wrong, ünïcode ✓\nsecond line";
        var result = await CallAsync("fail", Requests(new JsonObject { ["statusCode"] = (int)StatusCode.FailedPrecondition, ["statusMessage"] = message }));
        Assert.False(result.Ok);
        Assert.Equal((int)StatusCode.FailedPrecondition, result.Code);
        Assert.Equal(message, result.Details);
    }

    [Fact]
    public async Task Deadline_exceeded()
    {
        var result = await CallAsync("unary", Requests(new JsonObject { ["text"] = "slow", ["delayMs"] = 5000 }), deadlineMs: 200);
        Assert.False(result.Ok);
        Assert.Equal((int)StatusCode.DeadlineExceeded, result.Code);
    }

    [Fact]
    public async Task Cancellation_reaches_our_handler()
    {
        var before = fixture.Echo.Cancelled;
        var result = await CallAsync("unary", Requests(new JsonObject { ["text"] = "slow", ["delayMs"] = 10_000 }), cancelAfterMs: 200);
        Assert.False(result.Ok);
        Assert.Equal((int)StatusCode.Cancelled, result.Code);
        await Eventually.TrueAsync(() => fixture.Echo.Cancelled > before, "our handler saw the cancellation");
    }

    [Fact]
    public async Task Request_over_our_size_limit_is_resource_exhausted()
    {
        var result = await CallAsync("unary", Requests(new JsonObject { ["text"] = "big", ["paddingBytes"] = InteropFixture.MaxMessageBytes * 2 }));
        Assert.False(result.Ok);
        Assert.Equal((int)StatusCode.ResourceExhausted, result.Code);
        Assert.Contains("exceeds the limit", result.Details);
    }

    [Fact]
    public async Task Response_over_the_clients_limit_is_resource_exhausted()
    {
        var result = await CallAsync("unary", Requests(new JsonObject { ["text"] = "big", ["replyPadding"] = 5000 }), maxReceiveBytes: 1000);
        Assert.False(result.Ok);
        Assert.Equal((int)StatusCode.ResourceExhausted, result.Code);
    }
}

/// <summary>Our client against grpc-js's server.</summary>
public sealed class OurClientToGrpcJsServerTests(InteropFixture fixture) : IClassFixture<InteropFixture>
{
    private GrpcClient Client => fixture.ToNode;

    [Fact]
    public async Task Unary()
    {
        var reply = await Client.UnaryAsync(EchoMethods.Unary, new EchoRequest { Text = "héllo" });
        Assert.Equal("héllo", reply.Text);
    }

    [Fact]
    public async Task Client_streaming()
    {
        await using var call = Client.StartClientStreaming(EchoMethods.ClientStream);
        foreach (var text in new[] { "a", "b", "c" }) await call.WriteAsync(new EchoRequest { Text = text });
        await call.CompleteRequestAsync();
        var reply = await call.ReadResponseAsync();
        Assert.Equal(("a,b,c", 3), (reply.Text, reply.Index));
    }

    [Fact]
    public async Task Server_streaming()
    {
        await using var call = await Client.StartServerStreamingAsync(EchoMethods.ServerStream, new EchoRequest { Text = "x", Count = 5 });
        var texts = new List<string>();
        await foreach (var reply in call.ReadAllAsync()) texts.Add(reply.Text);
        Assert.Equal(["x0", "x1", "x2", "x3", "x4"], texts);
    }

    [Fact]
    public async Task Bidirectional_streaming_answers_each_request_before_the_next_is_sent()
    {
        await using var call = Client.StartDuplexStreaming(EchoMethods.Bidi);
        for (var i = 0; i < 3; i++)
        {
            await call.WriteAsync(new EchoRequest { Text = $"m{i}" });
            var (received, reply) = await call.ReadNextAsync();
            Assert.True(received);
            Assert.Equal(($"m{i}", i), (reply!.Text, reply.Index));
        }
        await call.CompleteRequestAsync();
        Assert.False((await call.ReadNextAsync()).Received);
    }

    [Fact]
    public async Task Error_status_and_its_message_arrive_intact()
    {
        const string message = "nope: 100% wrong, ünïcode ✓";
        var e = await Assert.ThrowsAsync<GrpcCallException>(() =>
            Client.UnaryAsync(EchoMethods.Fail, new EchoRequest { StatusCode = (int)StatusCode.NotFound, StatusMessage = message }));
        Assert.Equal(StatusCode.NotFound, e.StatusCode);
        Assert.Equal(message, e.StatusMessage);
    }

    [Fact]
    public async Task Deadline_exceeded()
    {
        var e = await Assert.ThrowsAsync<GrpcCallException>(() =>
            Client.UnaryAsync(EchoMethods.Unary, new EchoRequest { DelayMs = 5000 }, new GrpcCallOptions(Timeout: TimeSpan.FromMilliseconds(200))));
        Assert.Equal(StatusCode.DeadlineExceeded, e.StatusCode);
    }

    [Fact]
    public async Task Cancellation_reaches_the_grpc_js_server()
    {
        var before = (await Client.UnaryAsync(EchoMethods.Stats, new StatsRequest())).Cancelled;
        using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
        var e = await Assert.ThrowsAsync<GrpcCallException>(() =>
            Client.UnaryAsync(EchoMethods.Unary, new EchoRequest { DelayMs = 10_000 }, new GrpcCallOptions(CancellationToken: cancel.Token)));
        Assert.Equal(StatusCode.Cancelled, e.StatusCode);
        await Eventually.TrueAsync(async () => (await Client.UnaryAsync(EchoMethods.Stats, new StatsRequest())).Cancelled > before,
            "the grpc-js server saw the cancellation");
    }

    [Fact]
    public async Task Cancelling_a_server_stream_midway_ends_it()
    {
        using var cancel = new CancellationTokenSource();
        await using var call = await Client.StartServerStreamingAsync(EchoMethods.ServerStream,
            new EchoRequest { Text = "t", Count = 1000, DelayMs = 20 }, new GrpcCallOptions(CancellationToken: cancel.Token));
        var received = 0;
        var e = await Assert.ThrowsAsync<GrpcCallException>(async () =>
        {
            await foreach (var _ in call.ReadAllAsync())
                if (++received == 3) await cancel.CancelAsync();
        });
        Assert.Equal(StatusCode.Cancelled, e.StatusCode);
        Assert.Equal(3, received);
    }

    [Fact]
    public async Task Request_over_the_servers_limit_is_resource_exhausted()
    {
        var e = await Assert.ThrowsAsync<GrpcCallException>(() => Client.UnaryAsync(EchoMethods.Unary,
            new EchoRequest { Padding = ByteString.CopyFrom(new byte[InteropFixture.MaxMessageBytes * 2]) }));
        Assert.Equal(StatusCode.ResourceExhausted, e.StatusCode);
    }

    [Fact]
    public async Task Response_over_our_limit_is_resource_exhausted()
    {
        using var small = new GrpcClient(fixture.ToNode.Options with { MaxReceiveMessageSize = 1000 });
        var e = await Assert.ThrowsAsync<GrpcCallException>(() => small.UnaryAsync(EchoMethods.Unary, new EchoRequest { ReplyPadding = 5000 }));
        Assert.Equal(StatusCode.ResourceExhausted, e.StatusCode);
        Assert.Contains("exceeds the limit of 1000 bytes", e.StatusMessage);
    }

    [Fact]
    public async Task Request_over_our_send_limit_is_refused_before_sending()
    {
        using var small = new GrpcClient(fixture.ToNode.Options with { MaxSendMessageSize = 1000 });
        var e = await Assert.ThrowsAsync<GrpcCallException>(() =>
            small.UnaryAsync(EchoMethods.Unary, new EchoRequest { Padding = ByteString.CopyFrom(new byte[5000]) }));
        Assert.Equal(StatusCode.ResourceExhausted, e.StatusCode);
    }

    [Fact]
    public async Task Unknown_method_is_unimplemented()
    {
        var missing = GrpcMethod.Protobuf(GrpcMethodType.Unary, "interop.v1.Echo", "Missing", EchoRequest.Parser, EchoReply.Parser);
        var e = await Assert.ThrowsAsync<GrpcCallException>(() => Client.UnaryAsync(missing, new EchoRequest()));
        Assert.Equal(StatusCode.Unimplemented, e.StatusCode);
    }
}

public static class Eventually
{
    /// <summary>Waits (up to 10 s) for a condition that becomes true asynchronously.</summary>
    public static async Task TrueAsync(Func<Task<bool>> condition, string what)
    {
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (!await condition())
        {
            if (DateTime.UtcNow > until) Assert.Fail($"timed out waiting until {what}");
            await Task.Delay(20);
        }
    }

    public static Task TrueAsync(Func<bool> condition, string what) => TrueAsync(() => Task.FromResult(condition()), what);
}
