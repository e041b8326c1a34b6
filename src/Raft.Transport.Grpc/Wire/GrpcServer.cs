using System.Net;
using System.Net.Security;
using System.Runtime.CompilerServices;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Core.Features;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Raft.Transport.Grpc.Wire;

/// <summary>Where and how a <see cref="GrpcServer"/> listens.</summary>
public sealed record GrpcServerOptions
{
    /// <summary>Address to listen on; port 0 picks a free port (see <see cref="GrpcServer.Address"/>).</summary>
    public IPEndPoint Endpoint { get; init; } = new(IPAddress.Loopback, 0);

    /// <summary>
    /// TLS (mutual when <see cref="GrpcTlsFiles.RequireClientCertificate"/>); null serves cleartext
    /// HTTP/2 (h2c), for tests and trusted networks only.
    /// </summary>
    public GrpcTlsFiles? Tls { get; init; }

    public int MaxReceiveMessageSize { get; init; } = 4 * 1024 * 1024;
    public int MaxSendMessageSize { get; init; } = 4 * 1024 * 1024;

    /// <summary>Put a failing handler's exception type and message in the status sent to the client.</summary>
    public bool IncludeExceptionDetails { get; init; }

    /// <summary>
    /// Accept requests whose <c>:authority</c> is a URL (<c>http://host:port</c>), as Go's HTTP/2
    /// server does: gRPC-Go clients such as etcdctl 3.4 send that when given endpoints as URLs, and
    /// Kestrel alone would reset those streams with PROTOCOL_ERROR. See <see cref="Http2AuthorityRewriter"/>.
    /// </summary>
    public bool AcceptUrlAuthority { get; init; }

    /// <summary>How long stopping waits for calls to end after they are cancelled.</summary>
    public TimeSpan ShutdownTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Throws with a clear message when an option is out of range or a TLS file is missing.</summary>
    public void Validate()
    {
        ArgumentNullException.ThrowIfNull(Endpoint, nameof(Endpoint));
        if (MaxReceiveMessageSize <= 0) throw new ArgumentException($"MaxReceiveMessageSize must be positive, not {MaxReceiveMessageSize}");
        if (MaxSendMessageSize <= 0) throw new ArgumentException($"MaxSendMessageSize must be positive, not {MaxSendMessageSize}");
        if (ShutdownTimeout < TimeSpan.Zero) throw new ArgumentException($"ShutdownTimeout must not be negative, not {ShutdownTimeout}");
        Tls?.Validate();
        if (Tls is { RequireClientCertificate: true, AuthorityPemPath: null })
            throw new ArgumentException("a TLS server that requires client certificates needs the authority file they are checked against");
    }
}

/// <summary>
/// A gRPC server over Kestrel: one HTTP/2-only endpoint, calls routed by full method name
/// to the handlers of a <see cref="GrpcServiceRegistry"/>. Every call ends with a grpc-status;
/// a failing handler or a malformed request ends its own call only.
/// </summary>
public sealed class GrpcServer : IAsyncDisposable
{
    private const string GrpcContentType = "application/grpc";

    private readonly WebApplication _app;
    private readonly GrpcServerOptions _options;
    private readonly GrpcServiceRegistry _services;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stopping = new();
    private readonly StrongBox<long> _refusedHandshakes;
    private int _disposed;

    private GrpcServer(WebApplication app, GrpcServerOptions options, GrpcServiceRegistry services, ILogger logger, StrongBox<long> refusedHandshakes)
    {
        _app = app;
        _options = options;
        _services = services;
        _logger = logger;
        _refusedHandshakes = refusedHandshakes;
    }

    /// <summary>TLS connections refused because the client presented no certificate or one the authority did not sign.</summary>
    public long RefusedHandshakes => Interlocked.Read(ref _refusedHandshakes.Value);

    /// <summary>The address clients connect to, e.g. http://127.0.0.1:5001 (the real port when 0 was asked).</summary>
    public Uri Address { get; private set; } = null!;

    public static async Task<GrpcServer> StartAsync(GrpcServerOptions options, GrpcServiceRegistry services,
        ILogger? logger = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(services);
        options.Validate();
        logger ??= NullLogger.Instance;

        X509Certificate2? certificate = null;
        X509Certificate2Collection? authorities = null;
        if (options.Tls is { } tls)
        {
            certificate = tls.LoadCertificate();
            authorities = tls.RequireClientCertificate ? tls.LoadAuthorities() : null;
        }
        var refusedHandshakes = new StrongBox<long>();

        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = options.ShutdownTimeout);
        builder.WebHost.UseKestrelCore();
        if (certificate is not null) builder.WebHost.UseKestrelHttpsConfiguration();
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            // Raft streams stay open and idle between batches: no body size or data-rate limits
            // (messages are limited one by one instead).
            kestrel.Limits.MaxRequestBodySize = null;
            kestrel.Limits.MinRequestBodyDataRate = null;
            kestrel.Limits.MinResponseDataRate = null;
            kestrel.Listen(options.Endpoint, listen =>
            {
                listen.Protocols = HttpProtocols.Http2;
                if (certificate is not null) UseTls(listen, certificate, authorities, refusedHandshakes, logger);
                // After TLS, so the rewriter sees the decrypted frames.
                if (options.AcceptUrlAuthority) listen.Use(next => context => Http2AuthorityRewriter.RunAsync(context, next));
            });
        });

        var app = builder.Build();
        var server = new GrpcServer(app, options, services, logger, refusedHandshakes);
        ((IApplicationBuilder)app).Run(server.HandleAsync);
        await app.StartAsync(cancellationToken).ConfigureAwait(false);

        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses.FirstOrDefault()
            ?? throw new InvalidOperationException("Kestrel started without reporting its address");
        server.Address = new Uri(address);
        logger.LogInformation("gRPC server listening on {Address} ({MethodCount} methods)", server.Address, services.Methods.Count);
        return server;
    }

    /// <summary>
    /// TLS on the endpoint; with <paramref name="authorities"/>, mutual: a client must present a
    /// certificate that chains to them. The handshake's options are ours (not Kestrel's certificate
    /// mode) so that a client presenting no certificate at all is refused, counted and logged too.
    /// </summary>
    private static void UseTls(ListenOptions listen, X509Certificate2 certificate, X509Certificate2Collection? authorities,
        StrongBox<long> refused, ILogger logger)
    {
        var context = SslStreamCertificateContext.Create(certificate, additionalCertificates: null, offline: true);
        listen.UseHttps(new TlsHandshakeCallbackOptions
        {
            OnConnection = _ => ValueTask.FromResult(new SslServerAuthenticationOptions
            {
                ServerCertificateContext = context,
                ApplicationProtocols = [SslApplicationProtocol.Http2],
                ClientCertificateRequired = authorities is not null,
                CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
                RemoteCertificateValidationCallback = authorities is null ? null : (_, presented, _, _) =>
                {
                    string reason;
                    if (presented is null) reason = "no client certificate was presented";
                    else
                    {
                        var client = presented as X509Certificate2 ?? X509CertificateLoader.LoadCertificate(presented.GetRawCertData());
                        if (GrpcTlsFiles.ChainsTo(client, authorities, out var chainError)) return true;
                        reason = $"certificate {client.Subject} is not from the trusted authority: {chainError}";
                    }
                    Interlocked.Increment(ref refused.Value);
                    logger.LogWarning("Refused a TLS connection: {Reason}", reason);
                    return false;
                },
            }),
        });
    }

    private async Task HandleAsync(HttpContext http)
    {
        if (!HttpMethods.IsPost(http.Request.Method))
        {
            http.Response.StatusCode = StatusCodes.Status405MethodNotAllowed;
            return;
        }
        var contentType = http.Request.ContentType;
        if (contentType is null || !(contentType == GrpcContentType || contentType.StartsWith(GrpcContentType + "+", StringComparison.Ordinal)
                                     || contentType.StartsWith(GrpcContentType + ";", StringComparison.Ordinal)))
        {
            // The gRPC spec's answer to a non-gRPC request: 415, so it is clearly not a gRPC status.
            http.Response.StatusCode = StatusCodes.Status415UnsupportedMediaType;
            await http.Response.WriteAsync($"content-type '{contentType}' is not application/grpc").ConfigureAwait(false);
            return;
        }
        http.Response.ContentType = GrpcContentType;
        var method = http.Request.Path.Value ?? "";

        if (!_services.TryGetRoute(method, out var route))
        {
            GrpcServerCall.WriteStatus(http.Response, StatusCode.Unimplemented, $"method {method} is not implemented by this server");
            return;
        }

        TimeSpan? timeout = null;
        var timeoutHeader = http.Request.Headers[GrpcTimeout.Header].ToString();
        if (timeoutHeader.Length > 0)
        {
            timeout = GrpcTimeout.Parse(timeoutHeader);
            if (timeout is null)
            {
                GrpcServerCall.WriteStatus(http.Response, StatusCode.Internal, $"malformed {GrpcTimeout.Header} header '{timeoutHeader}'");
                return;
            }
        }

        // Streams stay open and idle; the request body is limited per message, not in total.
        if (http.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } bodySize) bodySize.MaxRequestBodySize = null;
        if (http.Features.Get<IHttpMinRequestBodyDataRateFeature>() is { } rate) rate.MinDataRate = null;

        using var deadline = new CancellationTokenSource();
        using var callCancellation = CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted, deadline.Token, _stopping.Token);
        if (timeout is { } t) deadline.CancelAfter(t);
        var context = new GrpcServerCallContext(method, callCancellation.Token, timeout is { } d ? DateTimeOffset.UtcNow + d : null,
            http.Request.Headers, http.Connection.ClientCertificate, FormatPeer(http.Connection));
        var call = new GrpcServerCall(http, context, _options.MaxReceiveMessageSize, _options.MaxSendMessageSize);

        var handler = RunHandlerAsync(route, call, deadline.Token, http.RequestAborted);
        var deadlinePassed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using (deadline.Token.Register(() => deadlinePassed.TrySetResult()))
        {
            if (await Task.WhenAny(handler, deadlinePassed.Task).ConfigureAwait(false) != handler)
            {
                // The client gets its status at the deadline even if the handler is slow to notice.
                await FinishQuietlyAsync(call, StatusCode.DeadlineExceeded, "deadline exceeded").ConfigureAwait(false);
            }
        }
        var (status, message) = await handler.ConfigureAwait(false);
        await FinishQuietlyAsync(call, status, message).ConfigureAwait(false);
    }

    private async Task<(StatusCode, string)> RunHandlerAsync(Func<GrpcServerCall, Task> route, GrpcServerCall call,
        CancellationToken deadline, CancellationToken clientGone)
    {
        var method = call.Context.Method;
        try
        {
            await route(call).ConfigureAwait(false);
            // A handler that swallowed a request-stream error still ends the call with it.
            return call.RequestError is { } swallowed ? (swallowed.StatusCode, swallowed.StatusMessage) : (StatusCode.OK, "");
        }
        catch (Exception) when (call.RequestError is { } requestError)
        {
            _logger.LogWarning("Call {Method} from {Peer} ended: {Error}", method, call.Context.Peer, requestError.Message);
            return (requestError.StatusCode, requestError.StatusMessage);
        }
        catch (GrpcCallException e)
        {
            return (e.StatusCode, e.StatusMessage);
        }
        catch (Exception) when (deadline.IsCancellationRequested)
        {
            return (StatusCode.DeadlineExceeded, "deadline exceeded");
        }
        catch (Exception) when (clientGone.IsCancellationRequested)
        {
            _logger.LogDebug("Call {Method} from {Peer} was cancelled by the client", method, call.Context.Peer);
            return (StatusCode.Cancelled, "cancelled by the client");
        }
        catch (Exception) when (_stopping.IsCancellationRequested)
        {
            return (StatusCode.Unavailable, "server is shutting down");
        }
        catch (Exception e)
        {
            _logger.LogError(e, "Handler of {Method} failed", method);
            return (StatusCode.Unknown, _options.IncludeExceptionDetails
                ? $"Exception was thrown by handler: {e.GetType().Name}: {e.Message}"
                : "Exception was thrown by handler.");
        }
    }

    private async Task FinishQuietlyAsync(GrpcServerCall call, StatusCode status, string message)
    {
        try
        {
            await call.FinishAsync(status, message).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or ObjectDisposedException)
        {
            // The client went away while the status was being sent: nobody is left to tell.
            _logger.LogDebug("Status {Status} of {Method} not delivered: {Error}", status, call.Context.Method, e.Message);
        }
    }

    private static string? FormatPeer(ConnectionInfo connection) =>
        connection.RemoteIpAddress is { } ip ? new IPEndPoint(ip, connection.RemotePort).ToString() : null;

    /// <summary>Cancels every call (they end with UNAVAILABLE) and stops listening.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        await _stopping.CancelAsync().ConfigureAwait(false);
        try
        {
            await _app.StopAsync().ConfigureAwait(false);
        }
        finally
        {
            await _app.DisposeAsync().ConfigureAwait(false);
            _stopping.Dispose();
        }
    }
}
