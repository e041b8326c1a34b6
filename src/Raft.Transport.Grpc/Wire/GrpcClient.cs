using System.Net;
using System.Net.Http.Headers;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;

namespace Raft.Transport.Grpc.Wire;

/// <summary>Where and how a <see cref="GrpcClient"/> connects.</summary>
public sealed record GrpcClientOptions
{
    /// <summary>http://host:port for cleartext HTTP/2 (h2c), https://host:port for mutual TLS.</summary>
    public required Uri Address { get; init; }

    /// <summary>
    /// Client certificate, and the authority that signs servers' certificates (none: the system's
    /// store); required for https.
    /// </summary>
    public GrpcTlsFiles? Tls { get; init; }

    public int MaxReceiveMessageSize { get; init; } = 4 * 1024 * 1024;
    public int MaxSendMessageSize { get; init; } = 4 * 1024 * 1024;
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>HTTP/2 pings on an idle connection, so a dead peer is noticed even on a quiet stream.</summary>
    public TimeSpan KeepAlivePingDelay { get; init; } = TimeSpan.FromSeconds(20);
    public TimeSpan KeepAlivePingTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Throws with a clear message when the address and TLS settings disagree or a value is out of range.</summary>
    public void Validate()
    {
        ArgumentNullException.ThrowIfNull(Address, nameof(Address));
        if (!Address.IsAbsoluteUri || (Address.Scheme != Uri.UriSchemeHttp && Address.Scheme != Uri.UriSchemeHttps))
            throw new ArgumentException($"gRPC address '{Address}' must be an absolute http:// or https:// address");
        if (Address.Scheme == Uri.UriSchemeHttps && Tls is null)
            throw new ArgumentException($"gRPC address '{Address}' is https but no TLS files are set");
        if (Address.Scheme == Uri.UriSchemeHttp && Tls is not null)
            throw new ArgumentException($"gRPC address '{Address}' is cleartext http but TLS files are set; use https://");
        if (MaxReceiveMessageSize <= 0) throw new ArgumentException($"MaxReceiveMessageSize must be positive, not {MaxReceiveMessageSize}");
        if (MaxSendMessageSize <= 0) throw new ArgumentException($"MaxSendMessageSize must be positive, not {MaxSendMessageSize}");
        if (ConnectTimeout <= TimeSpan.Zero) throw new ArgumentException($"ConnectTimeout must be positive, not {ConnectTimeout}");
        Tls?.Validate();
    }
}

/// <summary>Per-call settings.</summary>
/// <param name="Timeout">The call's deadline, from now: sent as grpc-timeout and enforced locally.</param>
/// <param name="Headers">Extra request headers (metadata).</param>
public readonly record struct GrpcCallOptions(
    TimeSpan? Timeout = null,
    CancellationToken CancellationToken = default,
    IReadOnlyDictionary<string, string>? Headers = null);

/// <summary>
/// A gRPC client over one <see cref="SocketsHttpHandler"/>: HTTP/2 only, calls multiplexed on
/// its connections. Failures of any kind surface as <see cref="GrpcCallException"/>.
/// </summary>
public sealed class GrpcClient : IDisposable
{
    private readonly HttpMessageInvoker _invoker;

    public GrpcClient(GrpcClientOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        Options = options;
        var handler = new SocketsHttpHandler
        {
            EnableMultipleHttp2Connections = true,
            ConnectTimeout = options.ConnectTimeout,
            KeepAlivePingDelay = options.KeepAlivePingDelay,
            KeepAlivePingTimeout = options.KeepAlivePingTimeout,
            KeepAlivePingPolicy = HttpKeepAlivePingPolicy.WithActiveRequests,
            PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
            AutomaticDecompression = DecompressionMethods.None,
            UseCookies = false,
            UseProxy = false,
        };
        if (options.Tls is { } tls)
        {
            var certificate = tls.LoadCertificate();
            var authorities = tls.LoadAuthorities();
            handler.SslOptions = new SslClientAuthenticationOptions
            {
                ClientCertificates = new X509CertificateCollection { certificate },
                RemoteCertificateValidationCallback = (_, serverCertificate, _, errors) =>
                {
                    if (authorities is null) return errors == SslPolicyErrors.None;
                    // The name must match; the chain is checked against the given authority only.
                    if (serverCertificate is null || (errors & ~SslPolicyErrors.RemoteCertificateChainErrors) != 0) return false;
                    var server = serverCertificate as X509Certificate2 ?? new X509Certificate2(serverCertificate);
                    return GrpcTlsFiles.ChainsTo(server, authorities, out _);
                },
            };
        }
        _invoker = new HttpMessageInvoker(handler, disposeHandler: true);
    }

    public GrpcClientOptions Options { get; }

    public async Task<TResponse> UnaryAsync<TRequest, TResponse>(GrpcMethod<TRequest, TResponse> method, TRequest request,
        GrpcCallOptions options = default)
    {
        await using var call = Start(method, GrpcMethodType.Unary, options);
        await call.WriteAsync(request).ConfigureAwait(false);
        await call.CompleteRequestAsync().ConfigureAwait(false);
        return await call.ReadResponseAsync().ConfigureAwait(false);
    }

    /// <summary>Write requests, complete, then await <see cref="GrpcClientCall{TRequest,TResponse}.ReadResponseAsync"/>.</summary>
    public GrpcClientCall<TRequest, TResponse> StartClientStreaming<TRequest, TResponse>(GrpcMethod<TRequest, TResponse> method,
        GrpcCallOptions options = default) =>
        Start(method, GrpcMethodType.ClientStreaming, options);

    /// <summary>Sends the request; read the responses with <see cref="GrpcClientCall{TRequest,TResponse}.ReadAllAsync"/>.</summary>
    public async Task<GrpcClientCall<TRequest, TResponse>> StartServerStreamingAsync<TRequest, TResponse>(
        GrpcMethod<TRequest, TResponse> method, TRequest request, GrpcCallOptions options = default)
    {
        var call = Start(method, GrpcMethodType.ServerStreaming, options);
        try
        {
            await call.WriteAsync(request).ConfigureAwait(false);
            await call.CompleteRequestAsync().ConfigureAwait(false);
            return call;
        }
        catch
        {
            await call.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Requests and responses flow independently: write from one task, read from another.</summary>
    public GrpcClientCall<TRequest, TResponse> StartDuplexStreaming<TRequest, TResponse>(GrpcMethod<TRequest, TResponse> method,
        GrpcCallOptions options = default) =>
        Start(method, GrpcMethodType.DuplexStreaming, options);

    private GrpcClientCall<TRequest, TResponse> Start<TRequest, TResponse>(GrpcMethod<TRequest, TResponse> method,
        GrpcMethodType expected, GrpcCallOptions options)
    {
        if (method.Type != expected)
            throw new ArgumentException($"method {method.FullName} is {method.Type}, not {expected}", nameof(method));
        return new GrpcClientCall<TRequest, TResponse>(_invoker, Options, method, options);
    }

    public void Dispose() => _invoker.Dispose();
}

/// <summary>
/// One call in flight. The request stream is written with <see cref="WriteAsync"/> and closed
/// with <see cref="CompleteRequestAsync"/>; responses are read as they arrive. A non-OK status,
/// the deadline, cancellation or a transport failure is thrown as <see cref="GrpcCallException"/>.
/// Disposing a call that has not ended cancels it (the server sees RST_STREAM CANCEL).
/// </summary>
public sealed class GrpcClientCall<TRequest, TResponse> : IAsyncDisposable
{
    private static readonly TimeSpan StatusAfterWriteFailureWait = TimeSpan.FromMilliseconds(500);

    private readonly GrpcClientOptions _clientOptions;
    private readonly GrpcMethod<TRequest, TResponse> _method;
    private readonly TimeSpan? _timeout;
    private readonly CancellationToken _userToken;
    private readonly CancellationTokenSource _deadline = new();
    private readonly CancellationTokenSource _abort = new();
    private readonly CancellationTokenSource _call;
    private readonly RequestStreamContent _content = new();
    private readonly Task<HttpResponseMessage> _response;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private Stream? _responseBody;
    private GrpcCallException? _failure;
    private bool _ended;

    internal GrpcClientCall(HttpMessageInvoker invoker, GrpcClientOptions clientOptions, GrpcMethod<TRequest, TResponse> method,
        GrpcCallOptions options)
    {
        _clientOptions = clientOptions;
        _method = method;
        _timeout = options.Timeout;
        _userToken = options.CancellationToken;
        _call = CancellationTokenSource.CreateLinkedTokenSource(_userToken, _deadline.Token, _abort.Token);

        var request = new HttpRequestMessage(HttpMethod.Post, new Uri(clientOptions.Address, method.FullName))
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = _content,
        };
        request.Headers.TE.Add(new TransferCodingWithQualityHeaderValue("trailers"));
        request.Headers.TryAddWithoutValidation("user-agent", "raftverified-grpc/0.1");
        if (options.Timeout is { } timeout)
        {
            request.Headers.TryAddWithoutValidation(GrpcTimeout.Header, GrpcTimeout.Format(timeout));
            _deadline.CancelAfter(timeout < TimeSpan.Zero ? TimeSpan.Zero : timeout);
        }
        if (options.Headers is { } headers)
            foreach (var (name, value) in headers)
                request.Headers.TryAddWithoutValidation(name, value);
        _response = invoker.SendAsync(request, _call.Token);
    }

    /// <summary>Sends one request message (and flushes it).</summary>
    public async Task WriteAsync(TRequest message, CancellationToken cancellationToken = default)
    {
        if (_failure is { } failed) throw failed;
        var bytes = _method.RequestMarshaller.Serialize(message);
        if (bytes.Length > _clientOptions.MaxSendMessageSize)
            throw Fail(new GrpcCallException(StatusCode.ResourceExhausted,
                $"request message of {bytes.Length} bytes exceeds the limit of {_clientOptions.MaxSendMessageSize} bytes"));
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(_call.Token, cancellationToken);
        var locked = false;
        try
        {
            // Waiting for the lock is part of the write: an expired deadline or a cancellation
            // here is the call's status too, never a bare OperationCanceledException.
            await _writeLock.WaitAsync(linked.Token).ConfigureAwait(false);
            locked = true;
            var stream = await RequestStreamAsync(linked.Token).ConfigureAwait(false);
            await stream.WriteAsync(GrpcFrame.Encode(bytes), linked.Token).ConfigureAwait(false);
            await stream.FlushAsync(linked.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not GrpcCallException)
        {
            throw await WriteFailureAsync(e, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            if (locked) _writeLock.Release();
        }
    }

    /// <summary>Ends the request stream: the server sees the end of its requests.</summary>
    public async Task CompleteRequestAsync()
    {
        await _writeLock.WaitAsync().ConfigureAwait(false);
        try
        {
            _content.Complete();
        }
        finally
        {
            _writeLock.Release();
        }
    }

    private async Task<Stream> RequestStreamAsync(CancellationToken cancellationToken)
    {
        var ready = await Task.WhenAny(_content.Stream, _response).WaitAsync(cancellationToken).ConfigureAwait(false);
        if (ready == _content.Stream) return await _content.Stream.ConfigureAwait(false);
        await _response.ConfigureAwait(false); // a failed send throws here
        throw new InvalidOperationException("the server answered before it read the request");
    }

    private async Task<GrpcCallException> WriteFailureAsync(Exception writeError, CancellationToken writeToken)
    {
        // A write usually fails because the call ended; its status says why. The server's
        // reset of the request stream may be seen a moment before its status: wait briefly.
        if (!writeToken.IsCancellationRequested && !_response.IsCompleted && !_call.IsCancellationRequested)
            await Task.WhenAny(_response, Task.Delay(StatusAfterWriteFailureWait)).ConfigureAwait(false);
        if (_response.IsCompletedSuccessfully && !_call.IsCancellationRequested)
        {
            var headers = await _response.ConfigureAwait(false);
            if (GrpcStatusHeaders.ParseStatus(HeaderValue(headers.Headers, GrpcStatusHeaders.Status)) is { } code && code != StatusCode.OK)
                return Fail(new GrpcCallException(code, DecodedMessage(headers.Headers)));
            return new GrpcCallException(StatusCode.Internal,
                "the request stream was closed because the server ended the call; read the response for its status", writeError);
        }
        return Fail(ToCallException(writeError));
    }

    /// <summary>The next response message, or false once the call ended with OK.</summary>
    public async Task<(bool Received, TResponse? Message)> ReadNextAsync(CancellationToken cancellationToken = default)
    {
        if (_failure is { } failed) throw failed;
        if (_ended) return (false, default);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(_call.Token, cancellationToken);
        byte[]? frame;
        HttpResponseMessage response;
        try
        {
            response = await _response.WaitAsync(linked.Token).ConfigureAwait(false);
            if (_responseBody is null)
            {
                if (StatusBeforeBody(response) is { } status)
                {
                    if (status.StatusCode != StatusCode.OK) throw Fail(status);
                    _ended = true;
                    return (false, default);
                }
                _responseBody = await response.Content.ReadAsStreamAsync(linked.Token).ConfigureAwait(false);
            }
            frame = await GrpcFrame.ReadAsync(_responseBody, _clientOptions.MaxReceiveMessageSize, linked.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not GrpcCallException)
        {
            throw Fail(ToCallException(e));
        }
        if (frame is null)
        {
            var code = GrpcStatusHeaders.ParseStatus(HeaderValue(response.TrailingHeaders, GrpcStatusHeaders.Status));
            if (code is null)
                throw Fail(new GrpcCallException(StatusCode.Internal, "the server ended the call without a grpc-status"));
            if (code != StatusCode.OK) throw Fail(new GrpcCallException(code.Value, DecodedMessage(response.TrailingHeaders)));
            _ended = true;
            return (false, default);
        }
        try
        {
            return (true, _method.ResponseMarshaller.Deserialize(frame));
        }
        catch (Exception e)
        {
            throw Fail(new GrpcCallException(StatusCode.Internal, $"response message could not be parsed: {e.Message}", e));
        }
    }

    /// <summary>Every response message until the call ends with OK; a non-OK end throws.</summary>
    public async IAsyncEnumerable<TResponse> ReadAllAsync(
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        while (true)
        {
            var (received, message) = await ReadNextAsync(cancellationToken).ConfigureAwait(false);
            if (!received) yield break;
            yield return message!;
        }
    }

    /// <summary>The single response of a unary or client-streaming call.</summary>
    public async Task<TResponse> ReadResponseAsync(CancellationToken cancellationToken = default)
    {
        var (received, message) = await ReadNextAsync(cancellationToken).ConfigureAwait(false);
        if (!received) throw Fail(new GrpcCallException(StatusCode.Internal, "the call ended with OK but without a response message"));
        if ((await ReadNextAsync(cancellationToken).ConfigureAwait(false)).Received)
            throw Fail(new GrpcCallException(StatusCode.Internal, "more than one response message for a method that returns one"));
        return message!;
    }

    /// <summary>The status found before any body: a non-200 HTTP status, a trailers-only response or a non-gRPC answer.</summary>
    private static GrpcCallException? StatusBeforeBody(HttpResponseMessage response)
    {
        var code = GrpcStatusHeaders.ParseStatus(HeaderValue(response.Headers, GrpcStatusHeaders.Status));
        if (code is { } trailersOnly) return new GrpcCallException(trailersOnly, DecodedMessage(response.Headers));
        if (response.StatusCode != HttpStatusCode.OK)
            return new GrpcCallException(FromHttpStatus(response.StatusCode), $"HTTP status {(int)response.StatusCode} {response.ReasonPhrase} from the server");
        var contentType = response.Content.Headers.ContentType?.MediaType;
        if (contentType is null || !contentType.StartsWith("application/grpc", StringComparison.Ordinal))
            return new GrpcCallException(StatusCode.Internal, $"the server answered with content-type '{contentType}', not application/grpc");
        return null;
    }

    /// <summary>gRPC's mapping of HTTP statuses seen without a grpc-status.</summary>
    private static StatusCode FromHttpStatus(HttpStatusCode status) => (int)status switch
    {
        400 => StatusCode.Internal,
        401 => StatusCode.Unauthenticated,
        403 => StatusCode.PermissionDenied,
        404 => StatusCode.Unimplemented,
        429 or 502 or 503 or 504 => StatusCode.Unavailable,
        _ => StatusCode.Unknown,
    };

    private GrpcCallException ToCallException(Exception error)
    {
        if (_deadline.IsCancellationRequested)
            return new GrpcCallException(StatusCode.DeadlineExceeded, $"deadline exceeded ({_timeout?.TotalMilliseconds:0} ms)", error);
        if (_userToken.IsCancellationRequested || _abort.IsCancellationRequested)
            return new GrpcCallException(StatusCode.Cancelled, "call cancelled", error);
        for (var e = error; e is not null; e = e.InnerException)
        {
            switch (e)
            {
                case GrpcCallException call:
                    return call;
                case GrpcFrameException frame:
                    return new GrpcCallException(frame.TooLarge ? StatusCode.ResourceExhausted : StatusCode.Internal,
                        $"malformed response stream: {frame.Message}", error);
                case HttpProtocolException reset:
                    return FromResetCode(reset.ErrorCode, error);
                case AuthenticationException tls:
                    return new GrpcCallException(StatusCode.Unavailable, $"TLS handshake with {_clientOptions.Address} failed: {tls.Message}", error);
                case SocketException socket:
                    return new GrpcCallException(StatusCode.Unavailable, $"cannot reach {_clientOptions.Address}: {socket.Message}", error);
            }
        }
        if (error is HttpRequestException or IOException)
            return new GrpcCallException(StatusCode.Unavailable, $"connection to {_clientOptions.Address} failed: {error.Message}", error);
        if (error is OperationCanceledException)
            return new GrpcCallException(StatusCode.Cancelled, "call cancelled", error);
        return new GrpcCallException(StatusCode.Internal, $"{error.GetType().Name}: {error.Message}", error);
    }

    /// <summary>gRPC's mapping of HTTP/2 RST_STREAM codes.</summary>
    private static GrpcCallException FromResetCode(long code, Exception error) => code switch
    {
        0x7 => new GrpcCallException(StatusCode.Unavailable, "stream refused by the server (REFUSED_STREAM)", error),
        0x8 => new GrpcCallException(StatusCode.Cancelled, "stream cancelled by the server (CANCEL)", error),
        0xB => new GrpcCallException(StatusCode.ResourceExhausted, "the server asked to slow down (ENHANCE_YOUR_CALM)", error),
        0xC => new GrpcCallException(StatusCode.PermissionDenied, "inadequate security (INADEQUATE_SECURITY)", error),
        _ => new GrpcCallException(StatusCode.Internal, $"stream reset by the server with HTTP/2 error code {code}", error),
    };

    private GrpcCallException Fail(GrpcCallException failure)
    {
        _failure ??= failure;
        // The server must learn that this call is over (RST_STREAM CANCEL) when it ended here.
        _abort.Cancel();
        return failure;
    }

    private static string? HeaderValue(HttpHeaders headers, string name) =>
        headers.TryGetValues(name, out var values) ? values.FirstOrDefault() : null;

    private static string DecodedMessage(HttpHeaders headers) =>
        HeaderValue(headers, GrpcStatusHeaders.Message) is { } message ? GrpcStatusHeaders.DecodeMessage(message) : "";

    public async ValueTask DisposeAsync()
    {
        if (!_ended && _failure is null) _failure = new GrpcCallException(StatusCode.Cancelled, "call disposed before it ended");
        await _abort.CancelAsync().ConfigureAwait(false);
        _content.Complete();
        try
        {
            (await _response.ConfigureAwait(false)).Dispose();
        }
        catch (Exception)
        {
            // The call's outcome was already reported (or nobody asked for it).
        }
        _call.Dispose();
        _deadline.Dispose();
        _abort.Dispose();
    }

    /// <summary>The request body: HttpClient pulls it once the stream opens; our writers push frames into it.</summary>
    private sealed class RequestStreamContent : HttpContent
    {
        private readonly TaskCompletionSource<Stream> _stream = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource _completed = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public RequestStreamContent() => Headers.ContentType = new MediaTypeHeaderValue("application/grpc");

        public Task<Stream> Stream => _stream.Task;

        public void Complete() => _completed.TrySetResult();

        protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) =>
            SerializeToStreamAsync(stream, context, CancellationToken.None);

        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
        {
            _stream.TrySetResult(stream);
            await _completed.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        }

        protected override bool TryComputeLength(out long length)
        {
            length = -1;
            return false;
        }
    }
}
