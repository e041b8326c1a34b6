using Raft.Transport.Grpc.Wire;

namespace Raft.Transport.Grpc.Tests;

public class GrpcFrameTests
{
    private static async Task<byte[]> EncodeAsync(params byte[][] messages)
    {
        var stream = new MemoryStream();
        foreach (var m in messages) await GrpcFrame.WriteAsync(stream, m, CancellationToken.None);
        return stream.ToArray();
    }

    [Fact]
    public async Task Frames_have_a_flag_byte_and_a_big_endian_length()
    {
        var bytes = await EncodeAsync([0xAA, 0xBB, 0xCC]);
        Assert.Equal(new byte[] { 0, 0, 0, 0, 3, 0xAA, 0xBB, 0xCC }, bytes);
    }

    [Fact]
    public async Task Messages_read_back_in_order_then_end_cleanly()
    {
        var stream = new MemoryStream(await EncodeAsync([1], [], [2, 3]));
        Assert.Equal(new byte[] { 1 }, await GrpcFrame.ReadAsync(stream, 100, CancellationToken.None));
        Assert.Equal(Array.Empty<byte>(), await GrpcFrame.ReadAsync(stream, 100, CancellationToken.None));
        Assert.Equal(new byte[] { 2, 3 }, await GrpcFrame.ReadAsync(stream, 100, CancellationToken.None));
        Assert.Null(await GrpcFrame.ReadAsync(stream, 100, CancellationToken.None));
    }

    [Theory]
    [InlineData(new byte[] { 0, 0, 0 }, "inside a frame header")]
    [InlineData(new byte[] { 0, 0, 0, 0, 4, 1, 2 }, "inside a message")]
    [InlineData(new byte[] { 1, 0, 0, 0, 1, 9 }, "compressed")]
    [InlineData(new byte[] { 7, 0, 0, 0, 1, 9 }, "invalid frame flag")]
    [InlineData(new byte[] { 0, 0, 0, 1, 0 }, "exceeds the limit")]
    public async Task Malformed_frames_are_refused_with_a_reason(byte[] bytes, string reason)
    {
        var e = await Assert.ThrowsAsync<GrpcFrameException>(async () =>
            await GrpcFrame.ReadAsync(new MemoryStream(bytes), maxMessageSize: 100, CancellationToken.None));
        Assert.Contains(reason, e.Message);
    }

    [Fact]
    public async Task Reads_a_frame_delivered_one_byte_at_a_time()
    {
        var payload = Enumerable.Range(0, 300).Select(i => (byte)i).ToArray();
        var stream = new TrickleStream(await EncodeAsync(payload));
        Assert.Equal(payload, await GrpcFrame.ReadAsync(stream, 1000, CancellationToken.None));
    }

    /// <summary>Returns at most one byte per read, as a slow network may.</summary>
    private sealed class TrickleStream(byte[] data) : MemoryStream(data)
    {
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            base.ReadAsync(buffer[..Math.Min(1, buffer.Length)], cancellationToken);
    }
}
