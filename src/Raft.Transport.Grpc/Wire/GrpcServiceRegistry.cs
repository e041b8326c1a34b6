using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Http;

namespace Raft.Transport.Grpc.Wire;

/// <summary>Writes a call's messages in order. Not safe for concurrent use by several writers.</summary>
public interface IGrpcStreamWriter<in T>
{
    Task WriteAsync(T message, CancellationToken cancellationToken = default);
}

/// <summary>What a server handler knows about its call.</summary>
public sealed class GrpcServerCallContext
{
    internal GrpcServerCallContext(string method, CancellationToken cancellationToken, DateTimeOffset? deadline,
        IHeaderDictionary requestHeaders, X509Certificate2? clientCertificate, string? peer)
    {
        Method = method;
        CancellationToken = cancellationToken;
        Deadline = deadline;
        RequestHeaders = requestHeaders;
        ClientCertificate = clientCertificate;
        Peer = peer;
    }

    /// <summary>The full method name, "/package.Service/Method".</summary>
    public string Method { get; }

    /// <summary>Cancelled when the client cancels, the deadline passes or the server stops.</summary>
    public CancellationToken CancellationToken { get; }

    public DateTimeOffset? Deadline { get; }
    public IHeaderDictionary RequestHeaders { get; }

    /// <summary>The client's certificate on a mutual-TLS endpoint (already verified against the authority).</summary>
    public X509Certificate2? ClientCertificate { get; }

    /// <summary>The client's address, "ip:port".</summary>
    public string? Peer { get; }
}

/// <summary>The methods a <see cref="GrpcServer"/> serves, by full name.</summary>
public sealed class GrpcServiceRegistry
{
    private readonly Dictionary<string, Func<GrpcServerCall, Task>> _routes = new(StringComparer.Ordinal);

    internal bool TryGetRoute(string fullName, out Func<GrpcServerCall, Task> route) =>
        _routes.TryGetValue(fullName, out route!);

    public IReadOnlyCollection<string> Methods => _routes.Keys;

    public GrpcServiceRegistry AddUnary<TRequest, TResponse>(GrpcMethod<TRequest, TResponse> method,
        Func<TRequest, GrpcServerCallContext, Task<TResponse>> handler) =>
        Add(method, GrpcMethodType.Unary, async call =>
        {
            var request = await call.ReadSingleAsync(method.RequestMarshaller).ConfigureAwait(false);
            var response = await handler(request, call.Context).ConfigureAwait(false);
            await call.WriteAsync(response, method.ResponseMarshaller, CancellationToken.None).ConfigureAwait(false);
        });

    public GrpcServiceRegistry AddClientStreaming<TRequest, TResponse>(GrpcMethod<TRequest, TResponse> method,
        Func<IAsyncEnumerable<TRequest>, GrpcServerCallContext, Task<TResponse>> handler) =>
        Add(method, GrpcMethodType.ClientStreaming, async call =>
        {
            var response = await handler(call.ReadAllAsync(method.RequestMarshaller), call.Context).ConfigureAwait(false);
            await call.WriteAsync(response, method.ResponseMarshaller, CancellationToken.None).ConfigureAwait(false);
        });

    public GrpcServiceRegistry AddServerStreaming<TRequest, TResponse>(GrpcMethod<TRequest, TResponse> method,
        Func<TRequest, IGrpcStreamWriter<TResponse>, GrpcServerCallContext, Task> handler) =>
        Add(method, GrpcMethodType.ServerStreaming, async call =>
        {
            await call.StartStreamingResponseAsync().ConfigureAwait(false);
            var request = await call.ReadSingleAsync(method.RequestMarshaller).ConfigureAwait(false);
            await handler(request, new ResponseWriter<TResponse>(call, method.ResponseMarshaller), call.Context).ConfigureAwait(false);
        });

    public GrpcServiceRegistry AddDuplexStreaming<TRequest, TResponse>(GrpcMethod<TRequest, TResponse> method,
        Func<IAsyncEnumerable<TRequest>, IGrpcStreamWriter<TResponse>, GrpcServerCallContext, Task> handler) =>
        Add(method, GrpcMethodType.DuplexStreaming, async call =>
        {
            await call.StartStreamingResponseAsync().ConfigureAwait(false);
            await handler(call.ReadAllAsync(method.RequestMarshaller), new ResponseWriter<TResponse>(call, method.ResponseMarshaller), call.Context)
                .ConfigureAwait(false);
        });

    private GrpcServiceRegistry Add<TRequest, TResponse>(GrpcMethod<TRequest, TResponse> method, GrpcMethodType expected,
        Func<GrpcServerCall, Task> route)
    {
        if (method.Type != expected)
            throw new ArgumentException($"method {method.FullName} is {method.Type}, not {expected}", nameof(method));
        if (!_routes.TryAdd(method.FullName, route))
            throw new ArgumentException($"method {method.FullName} is already registered", nameof(method));
        return this;
    }

    private sealed class ResponseWriter<T>(GrpcServerCall call, GrpcMarshaller<T> marshaller) : IGrpcStreamWriter<T>
    {
        public Task WriteAsync(T message, CancellationToken cancellationToken = default) =>
            call.WriteAsync(message, marshaller, cancellationToken);
    }
}
