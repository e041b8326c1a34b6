using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Connections;

namespace Raft.Transport.Grpc.Wire;

/// <summary>
/// A Kestrel connection middleware for cleartext or decrypted HTTP/2 that turns a request's
/// <c>:authority</c> of the form <c>scheme://host:port</c> into <c>host:port</c> before Kestrel
/// reads it.
/// <para>
/// Why: gRPC-Go clients dialled with a target such as <c>passthrough:///http://127.0.0.1:2379</c>
/// send the whole URL as <c>:authority</c> (etcdctl 3.4 does this for <c>endpoint status</c>
/// and <c>endpoint health</c> when endpoints are given as URLs). Go's HTTP/2 server accepts it;
/// Kestrel checks <c>:authority</c> as a Host header and resets the stream with PROTOCOL_ERROR,
/// with no option to relax the check. So the header blocks are rewritten on their way in.
/// </para>
/// <para>
/// Each header block from the client is decoded with an HPACK decoder that follows the client's
/// dynamic table, and re-encoded as literals that neither use nor fill Kestrel's dynamic table,
/// so both tables stay consistent whatever the rewrite changed. Other frames pass unchanged.
/// </para>
/// </summary>
internal sealed class Http2AuthorityRewriter
{
    private const int PrefaceLength = 24;
    // Kestrel's SETTINGS_MAX_FRAME_SIZE (its default, which GrpcServer keeps): frames we emit stay within it.
    private const int MaxFrameSize = 16 * 1024;
    private const int MaxHeaderBlock = 1024 * 1024;
    private const byte TypeHeaders = 0x1, TypeContinuation = 0x9;
    private const byte FlagEndStream = 0x1, FlagEndHeaders = 0x4, FlagPadded = 0x8, FlagPriority = 0x20;

    private readonly HpackDecoder _decoder = new();
    private long _prefaceLeft = PrefaceLength;
    private bool _passThrough;
    private PendingBlock? _pending;

    private sealed class PendingBlock(uint streamId, byte endStream, byte[]? priority)
    {
        public uint StreamId { get; } = streamId;
        public byte EndStream { get; } = endStream;
        public byte[]? Priority { get; } = priority;
        public MemoryStream Fragments { get; } = new();
    }

    /// <summary>Runs <paramref name="next"/> (Kestrel's HTTP/2 handling) on a transport whose input is rewritten.</summary>
    public static async Task RunAsync(ConnectionContext context, ConnectionDelegate next)
    {
        var original = context.Transport;
        var rewritten = new Pipe(new PipeOptions(useSynchronizationContext: false));
        using var stop = new CancellationTokenSource();
        var pump = new Http2AuthorityRewriter().PumpAsync(original.Input, rewritten.Writer, stop.Token);
        context.Transport = new DuplexPipe(rewritten.Reader, original.Output);
        try
        {
            await next(context).ConfigureAwait(false);
        }
        finally
        {
            context.Transport = original;
            await stop.CancelAsync().ConfigureAwait(false);
            original.Input.CancelPendingRead();
            await pump.ConfigureAwait(false);
        }
    }

    private sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;
        public PipeWriter Output { get; } = output;
    }

    private async Task PumpAsync(PipeReader input, PipeWriter output, CancellationToken ct)
    {
        Exception? error = null;
        try
        {
            while (!ct.IsCancellationRequested)
            {
                var result = await input.ReadAsync(ct).ConfigureAwait(false);
                if (result.IsCanceled) break;
                var buffer = result.Buffer;
                var consumed = Process(buffer, output);
                input.AdvanceTo(consumed, buffer.End);
                var flush = await output.FlushAsync(ct).ConfigureAwait(false);
                if (result.IsCompleted || flush.IsCompleted) break;
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
        }
        catch (Exception e)
        {
            // A malformed header block or a broken socket ends the connection, as Kestrel would.
            error = e;
        }
        await output.CompleteAsync(error).ConfigureAwait(false);
    }

    /// <summary>Copies or rewrites every whole frame in <paramref name="buffer"/>; returns where the unread rest starts.</summary>
    internal SequencePosition Process(ReadOnlySequence<byte> buffer, IBufferWriter<byte> output)
    {
        if (_passThrough)
        {
            Copy(buffer, output);
            return buffer.End;
        }
        if (_prefaceLeft > 0)
        {
            var n = Math.Min(_prefaceLeft, buffer.Length);
            Copy(buffer.Slice(0, n), output);
            buffer = buffer.Slice(n);
            _prefaceLeft -= n;
            if (_prefaceLeft > 0) return buffer.Start;
        }
        Span<byte> header = stackalloc byte[9];
        while (buffer.Length >= 9)
        {
            buffer.Slice(0, 9).CopyTo(header);
            var length = header[0] << 16 | header[1] << 8 | header[2];
            var type = header[3];
            var flags = header[4];
            var streamId = BinaryPrimitives.ReadUInt32BigEndian(header[5..]) & 0x7fffffffu;
            if (length > MaxFrameSize)
            {
                // Kestrel refuses such a frame and closes the connection: let it see the bytes as they came.
                if (_pending is not null) throw new InvalidDataException("oversized frame inside a header block");
                _passThrough = true;
                Copy(buffer, output);
                return buffer.End;
            }
            if (buffer.Length < 9 + length) break;
            var payload = buffer.Slice(9, length).ToArray();
            if (type == TypeHeaders && _pending is null) StartBlock(payload, flags, streamId, output);
            else if (type == TypeContinuation && _pending is not null && _pending.StreamId == streamId) ContinueBlock(payload, flags, output);
            else if (_pending is not null) throw new InvalidDataException($"frame of type {type} inside the header block of stream {_pending.StreamId}");
            else Copy(buffer.Slice(0, 9 + length), output);
            buffer = buffer.Slice(9 + length);
        }
        return buffer.Start;
    }

    private void StartBlock(byte[] payload, byte flags, uint streamId, IBufferWriter<byte> output)
    {
        var pos = 0;
        var padding = 0;
        if ((flags & FlagPadded) != 0)
        {
            if (payload.Length < 1) throw new InvalidDataException("HEADERS frame too short for its padding");
            padding = payload[0];
            pos = 1;
        }
        byte[]? priority = null;
        if ((flags & FlagPriority) != 0)
        {
            if (payload.Length < pos + 5) throw new InvalidDataException("HEADERS frame too short for its priority");
            priority = payload[pos..(pos + 5)];
            pos += 5;
        }
        if (payload.Length - pos < padding) throw new InvalidDataException("HEADERS frame padding exceeds the frame");
        _pending = new PendingBlock(streamId, (byte)(flags & FlagEndStream), priority);
        _pending.Fragments.Write(payload, pos, payload.Length - pos - padding);
        if ((flags & FlagEndHeaders) != 0) EmitBlock(output);
    }

    private void ContinueBlock(byte[] payload, byte flags, IBufferWriter<byte> output)
    {
        _pending!.Fragments.Write(payload);
        if (_pending.Fragments.Length > MaxHeaderBlock) throw new InvalidDataException("header block too large");
        if ((flags & FlagEndHeaders) != 0) EmitBlock(output);
    }

    private void EmitBlock(IBufferWriter<byte> output)
    {
        var block = _pending!;
        _pending = null;
        var fields = _decoder.Decode(block.Fragments.GetBuffer().AsSpan(0, (int)block.Fragments.Length));
        for (var i = 0; i < fields.Count; i++)
            if (fields[i].Name == ":authority") fields[i] = fields[i] with { Value = AuthorityOf(fields[i].Value) };
        var encoded = HpackDecoder.EncodeWithoutIndexing(fields);

        var prefix = block.Priority ?? [];
        var first = Math.Min(encoded.Length, MaxFrameSize - prefix.Length);
        var flags = (byte)(block.EndStream | (block.Priority is null ? 0 : FlagPriority) | (first == encoded.Length ? FlagEndHeaders : 0));
        WriteFrame(output, TypeHeaders, flags, block.StreamId, prefix, encoded.AsSpan(0, first));
        for (var at = first; at < encoded.Length; at += MaxFrameSize)
        {
            var n = Math.Min(MaxFrameSize, encoded.Length - at);
            WriteFrame(output, TypeContinuation, at + n == encoded.Length ? FlagEndHeaders : (byte)0, block.StreamId, [], encoded.AsSpan(at, n));
        }
    }

    /// <summary>"http://host:port" or "http://host:port/" becomes "host:port"; anything else stays as it is.</summary>
    internal static string AuthorityOf(string value)
    {
        var scheme = value.IndexOf("://", StringComparison.Ordinal);
        if (scheme < 0) return value;
        var rest = value[(scheme + 3)..];
        var slash = rest.IndexOf('/');
        return slash < 0 ? rest : rest[..slash];
    }

    private static void WriteFrame(IBufferWriter<byte> output, byte type, byte flags, uint streamId, ReadOnlySpan<byte> prefix, ReadOnlySpan<byte> body)
    {
        var length = prefix.Length + body.Length;
        var span = output.GetSpan(9 + length);
        span[0] = (byte)(length >> 16);
        span[1] = (byte)(length >> 8);
        span[2] = (byte)length;
        span[3] = type;
        span[4] = flags;
        BinaryPrimitives.WriteUInt32BigEndian(span[5..], streamId);
        prefix.CopyTo(span[9..]);
        body.CopyTo(span[(9 + prefix.Length)..]);
        output.Advance(9 + length);
    }

    private static void Copy(ReadOnlySequence<byte> bytes, IBufferWriter<byte> output)
    {
        foreach (var segment in bytes) output.Write(segment.Span);
    }
}
