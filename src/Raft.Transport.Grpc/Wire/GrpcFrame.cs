using System.Buffers.Binary;

namespace Raft.Transport.Grpc.Wire;

/// <summary>A gRPC length-prefixed message could not be read; the stream must be closed.</summary>
/// <param name="tooLarge">The frame announced a message over the size limit (RESOURCE_EXHAUSTED
/// rather than INTERNAL in gRPC's terms).</param>
public sealed class GrpcFrameException(string message, bool tooLarge = false) : Exception(message)
{
    public bool TooLarge { get; } = tooLarge;
}

/// <summary>
/// gRPC's length-prefixed messages: one flag byte (1 = compressed), a 4-byte big-endian
/// length, then the message. Every gRPC call body, in both directions, is a sequence of these.
/// </summary>
public static class GrpcFrame
{
    public const int HeaderSize = 5;

    /// <summary>Writes one uncompressed message.</summary>
    public static async ValueTask WriteAsync(Stream stream, ReadOnlyMemory<byte> message, CancellationToken cancellationToken)
    {
        // One write per frame: each write may become its own HTTP/2 DATA frame.
        await stream.WriteAsync(Encode(message.Span), cancellationToken).ConfigureAwait(false);
    }

    /// <summary>One uncompressed message with its 5-byte prefix.</summary>
    public static byte[] Encode(ReadOnlySpan<byte> message)
    {
        var frame = new byte[HeaderSize + message.Length];
        frame[0] = 0;
        BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(1), checked((uint)message.Length));
        message.CopyTo(frame.AsSpan(HeaderSize));
        return frame;
    }

    /// <summary>
    /// Reads one message, or null at a clean end of stream (no byte of a next frame).
    /// Refuses compressed frames (none is negotiated), frames over <paramref name="maxMessageSize"/>
    /// and a stream that ends inside a frame.
    /// </summary>
    public static async ValueTask<byte[]?> ReadAsync(Stream stream, int maxMessageSize, CancellationToken cancellationToken)
    {
        var header = new byte[HeaderSize];
        var got = await ReadFullyAsync(stream, header, cancellationToken).ConfigureAwait(false);
        if (got == 0) return null;
        if (got < HeaderSize) throw new GrpcFrameException($"stream ended inside a frame header ({got} of {HeaderSize} bytes)");
        switch (header[0])
        {
            case 0: break;
            case 1: throw new GrpcFrameException("compressed message received but no compression was negotiated");
            default: throw new GrpcFrameException($"invalid frame flag {header[0]}");
        }
        var length = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(1));
        if (length > (uint)maxMessageSize)
            throw new GrpcFrameException($"message of {length} bytes exceeds the limit of {maxMessageSize} bytes", tooLarge: true);
        var body = new byte[length];
        var read = await ReadFullyAsync(stream, body, cancellationToken).ConfigureAwait(false);
        if (read < length) throw new GrpcFrameException($"stream ended inside a message ({read} of {length} bytes)");
        return body;
    }

    private static async ValueTask<int> ReadFullyAsync(Stream stream, Memory<byte> buffer, CancellationToken ct)
    {
        var total = 0;
        while (total < buffer.Length)
        {
            var n = await stream.ReadAsync(buffer[total..], ct).ConfigureAwait(false);
            if (n == 0) break;
            total += n;
        }
        return total;
    }
}
