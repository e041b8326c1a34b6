using Google.Protobuf;

namespace Raft.Kv.Storage;

/// <summary>Length-delimited protobuf records on a stream (varint length, then the message), read and written asynchronously.</summary>
internal static class DelimitedRecords
{
    public static async Task WriteAsync(Stream stream, IMessage message, CancellationToken ct)
    {
        var body = message.ToByteArray();
        var prefix = new byte[10];
        var n = 0;
        var length = (uint)body.Length;
        while (length >= 0x80)
        {
            prefix[n++] = (byte)(length | 0x80);
            length >>= 7;
        }
        prefix[n++] = (byte)length;
        await stream.WriteAsync(prefix.AsMemory(0, n), ct).ConfigureAwait(false);
        await stream.WriteAsync(body, ct).ConfigureAwait(false);
    }

    /// <summary>The next record; throws <see cref="InvalidDataException"/> on a truncated or oversized one.</summary>
    public static async Task<T> ReadAsync<T>(Stream stream, MessageParser<T> parser, int maxSize, CancellationToken ct)
        where T : IMessage<T>
    {
        var one = new byte[1];
        uint length = 0;
        for (var shift = 0; ; shift += 7)
        {
            if (shift > 28) throw new InvalidDataException("snapshot record length is not a valid varint");
            if (await stream.ReadAsync(one, ct).ConfigureAwait(false) == 0)
                throw new InvalidDataException("snapshot stream ended before its last record");
            length |= (uint)(one[0] & 0x7f) << shift;
            if ((one[0] & 0x80) == 0) break;
        }
        if (length > maxSize) throw new InvalidDataException($"snapshot record of {length} bytes exceeds the limit of {maxSize}");
        var body = new byte[length];
        try
        {
            await stream.ReadExactlyAsync(body, ct).ConfigureAwait(false);
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException("snapshot stream ended inside a record", e);
        }
        try
        {
            return parser.ParseFrom(body);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new InvalidDataException($"snapshot record is malformed: {e.Message}", e);
        }
    }
}
