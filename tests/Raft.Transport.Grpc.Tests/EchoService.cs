using Google.Protobuf;
using Raft.Transport.Grpc.Tests.Interop;
using Raft.Transport.Grpc.Wire;

namespace Raft.Transport.Grpc.Tests;

/// <summary>interop.v1.Echo's methods, as both our client and our server know them.</summary>
public static class EchoMethods
{
    private const string Service = "interop.v1.Echo";

    public static readonly GrpcMethod<EchoRequest, EchoReply> Unary =
        GrpcMethod.Protobuf(GrpcMethodType.Unary, Service, "Unary", EchoRequest.Parser, EchoReply.Parser);
    public static readonly GrpcMethod<EchoRequest, EchoReply> ClientStream =
        GrpcMethod.Protobuf(GrpcMethodType.ClientStreaming, Service, "ClientStream", EchoRequest.Parser, EchoReply.Parser);
    public static readonly GrpcMethod<EchoRequest, EchoReply> ServerStream =
        GrpcMethod.Protobuf(GrpcMethodType.ServerStreaming, Service, "ServerStream", EchoRequest.Parser, EchoReply.Parser);
    public static readonly GrpcMethod<EchoRequest, EchoReply> Bidi =
        GrpcMethod.Protobuf(GrpcMethodType.DuplexStreaming, Service, "Bidi", EchoRequest.Parser, EchoReply.Parser);
    public static readonly GrpcMethod<EchoRequest, EchoReply> Fail =
        GrpcMethod.Protobuf(GrpcMethodType.Unary, Service, "Fail", EchoRequest.Parser, EchoReply.Parser);
    public static readonly GrpcMethod<StatsRequest, StatsReply> Stats =
        GrpcMethod.Protobuf(GrpcMethodType.Unary, Service, "Stats", StatsRequest.Parser, StatsReply.Parser);
}

/// <summary>Our server's Echo: the same behaviour as the grpc-js peer's (interop/peer.js).</summary>
public sealed class EchoService
{
    private int _cancelled;

    /// <summary>Calls whose handler saw the client cancel.</summary>
    public int Cancelled => Volatile.Read(ref _cancelled);

    public GrpcServiceRegistry Register(GrpcServiceRegistry registry) => registry
        .AddUnary(EchoMethods.Unary, async (request, context) =>
        {
            await DelayAsync(request.DelayMs, context).ConfigureAwait(false);
            return Reply(request, 0);
        })
        .AddClientStreaming(EchoMethods.ClientStream, async (requests, context) =>
        {
            var texts = new List<string>();
            var delay = 0;
            await foreach (var request in requests.ConfigureAwait(false))
            {
                texts.Add(request.Text);
                delay = Math.Max(delay, request.DelayMs);
            }
            await DelayAsync(delay, context).ConfigureAwait(false);
            return new EchoReply { Text = string.Join(",", texts), Index = texts.Count };
        })
        .AddServerStreaming(EchoMethods.ServerStream, async (request, responses, context) =>
        {
            for (var i = 0; i < request.Count; i++)
            {
                await responses.WriteAsync(Reply(new EchoRequest(request) { Text = request.Text + i }, i)).ConfigureAwait(false);
                await DelayAsync(request.DelayMs, context).ConfigureAwait(false);
            }
        })
        .AddDuplexStreaming(EchoMethods.Bidi, async (requests, responses, context) =>
        {
            var i = 0;
            await foreach (var request in requests.ConfigureAwait(false))
            {
                await DelayAsync(request.DelayMs, context).ConfigureAwait(false);
                await responses.WriteAsync(Reply(request, i++)).ConfigureAwait(false);
            }
        })
        .AddUnary(EchoMethods.Fail, (request, _) =>
            throw new GrpcCallException((StatusCode)request.StatusCode, request.StatusMessage))
        .AddUnary(EchoMethods.Stats, (_, _) => Task.FromResult(new StatsReply { Cancelled = Cancelled }));

    private async Task DelayAsync(int milliseconds, GrpcServerCallContext context)
    {
        if (milliseconds <= 0) return;
        try
        {
            await Task.Delay(milliseconds, context.CancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            Interlocked.Increment(ref _cancelled);
            throw;
        }
    }

    private static EchoReply Reply(EchoRequest request, int index) => new()
    {
        Text = request.Text,
        Index = index,
        Padding = ByteString.CopyFrom(new byte[request.ReplyPadding]),
    };
}
