using System.Runtime.CompilerServices;
using Microsoft.AspNetCore.Http;

namespace Raft.Transport.Grpc.Wire;

/// <summary>
/// One call on the server: reads request frames, writes response frames and ends the call
/// with its status. Writes and the final status are serialized so that a deadline can end
/// the call while its handler is still writing.
/// </summary>
internal sealed class GrpcServerCall(HttpContext http, GrpcServerCallContext context, int maxReceiveMessageSize, int maxSendMessageSize)
{
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private bool _finished;

    public GrpcServerCallContext Context { get; } = context;

    /// <summary>Why the request stream could not be read (a malformed or oversized frame); it decides the call's status.</summary>
    public GrpcCallException? RequestError { get; private set; }

    public async Task<T> ReadSingleAsync<T>(GrpcMarshaller<T> marshaller)
    {
        var first = await ReadFrameAsync().ConfigureAwait(false)
            ?? throw Fail(new GrpcCallException(StatusCode.Internal, "request message missing: the request stream ended before any message"));
        var request = Deserialize(first, marshaller);
        if (await ReadFrameAsync().ConfigureAwait(false) is not null)
            throw Fail(new GrpcCallException(StatusCode.Internal, "more than one request message for a method that takes one"));
        return request;
    }

    public async IAsyncEnumerable<T> ReadAllAsync<T>(GrpcMarshaller<T> marshaller, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        while (await ReadFrameAsync(cancellationToken).ConfigureAwait(false) is { } frame)
            yield return Deserialize(frame, marshaller);
    }

    private async Task<byte[]?> ReadFrameAsync(CancellationToken cancellationToken = default)
    {
        if (RequestError is { } earlier) throw earlier;
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(Context.CancellationToken, cancellationToken);
        try
        {
            return await GrpcFrame.ReadAsync(http.Request.Body, maxReceiveMessageSize, linked.Token).ConfigureAwait(false);
        }
        catch (GrpcFrameException e)
        {
            throw Fail(new GrpcCallException(e.TooLarge ? StatusCode.ResourceExhausted : StatusCode.Internal,
                $"malformed request stream: {e.Message}", e));
        }
    }

    private T Deserialize<T>(byte[] frame, GrpcMarshaller<T> marshaller)
    {
        try
        {
            return marshaller.Deserialize(frame);
        }
        catch (Exception e)
        {
            throw Fail(new GrpcCallException(StatusCode.Internal, $"request message could not be parsed: {e.Message}", e));
        }
    }

    private GrpcCallException Fail(GrpcCallException error)
    {
        RequestError ??= error;
        return error;
    }

    /// <summary>Sends the response headers now, so a streaming client sees the call start before any message.</summary>
    public async Task StartStreamingResponseAsync()
    {
        await _writeLock.WaitAsync(Context.CancellationToken).ConfigureAwait(false);
        try
        {
            if (_finished) return;
            await http.Response.StartAsync(Context.CancellationToken).ConfigureAwait(false);
            await http.Response.Body.FlushAsync(Context.CancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _writeLock.Release();
        }
    }

    public async Task WriteAsync<T>(T message, GrpcMarshaller<T> marshaller, CancellationToken cancellationToken)
    {
        var bytes = marshaller.Serialize(message);
        if (bytes.Length > maxSendMessageSize)
            throw new GrpcCallException(StatusCode.ResourceExhausted,
                $"response message of {bytes.Length} bytes exceeds the limit of {maxSendMessageSize} bytes");
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(Context.CancellationToken, cancellationToken);
        await _writeLock.WaitAsync(linked.Token).ConfigureAwait(false);
        try
        {
            if (_finished) throw new InvalidOperationException($"call {Context.Method} has already ended; the message is not sent");
            await http.Response.Body.WriteAsync(GrpcFrame.Encode(bytes), linked.Token).ConfigureAwait(false);
            await http.Response.Body.FlushAsync(linked.Token).ConfigureAwait(false);
        }
        finally
        {
            _writeLock.Release();
        }
    }

    /// <summary>
    /// Ends the call with a status: in the trailers, or in the headers alone (a "trailers-only"
    /// response) when nothing was sent yet. Only the first status counts.
    /// </summary>
    public async Task FinishAsync(StatusCode status, string message)
    {
        await _writeLock.WaitAsync().ConfigureAwait(false);
        try
        {
            if (_finished) return;
            _finished = true;
            if (http.RequestAborted.IsCancellationRequested) return; // nobody to tell
            WriteStatus(http.Response, status, message);
            await http.Response.CompleteAsync().ConfigureAwait(false);
        }
        finally
        {
            _writeLock.Release();
        }
    }

    public static void WriteStatus(HttpResponse response, StatusCode status, string message)
    {
        var code = ((int)status).ToString(System.Globalization.CultureInfo.InvariantCulture);
        if (!response.HasStarted)
        {
            response.Headers[GrpcStatusHeaders.Status] = code;
            if (message.Length > 0) response.Headers[GrpcStatusHeaders.Message] = GrpcStatusHeaders.EncodeMessage(message);
            return;
        }
        response.AppendTrailer(GrpcStatusHeaders.Status, code);
        if (message.Length > 0) response.AppendTrailer(GrpcStatusHeaders.Message, GrpcStatusHeaders.EncodeMessage(message));
    }
}
