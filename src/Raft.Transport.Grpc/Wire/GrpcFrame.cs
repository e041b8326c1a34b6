using System.Buffers.Binary;

namespace Raft.Transport.Grpc.Wire;

/// <summary>A gRPC length-prefixed message could not be read; the connection must be closed.</summary>
public sealed class GrpcFrameException(string message) : Exception(message);

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
        var header = new byte[HeaderSize];
        header[0] = 0;
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(1), checked((uint)message.Length));
        await stream.WriteAsync(header, cancellationToken).ConfigureAwait(false);
        await stream.WriteAsync(message, cancellationToken).ConfigureAwait(false);
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
            throw new GrpcFrameException($"message of {length} bytes exceeds the limit of {maxMessageSize} bytes");
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
