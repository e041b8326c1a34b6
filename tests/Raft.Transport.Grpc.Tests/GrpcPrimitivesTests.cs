using Raft.Transport.Grpc.Wire;

namespace Raft.Transport.Grpc.Tests;

public class GrpcTimeoutTests
{
    [Theory]
    [InlineData("2H", 2 * 3600_000_000_0L)]
    [InlineData("3M", 3 * 60_000_000_0L)]
    [InlineData("7S", 7 * 1000_000_0L)]
    [InlineData("250m", 250 * 1000_0L)]
    [InlineData("15u", 150L)]
    [InlineData("1000n", 10L)]
    [InlineData("1n", 1L)] // rounded up to one tick, never down to zero
    [InlineData("99999999S", 99_999_999 * 1000_000_0L)]
    public void Parses_every_unit(string header, long ticks) => Assert.Equal(TimeSpan.FromTicks(ticks), GrpcTimeout.Parse(header));

    [Theory]
    [InlineData("")]
    [InlineData("S")]
    [InlineData("10")]
    [InlineData("10s")]
    [InlineData("-5S")]
    [InlineData("123456789S")] // more than 8 digits
    [InlineData("1.5S")]
    public void Refuses_malformed_values(string header) => Assert.Null(GrpcTimeout.Parse(header));

    [Theory]
    [InlineData(0L, "0n")]
    [InlineData(1L, "100n")]
    [InlineData(10_000L, "1000000n")]
    [InlineData(1000_000_0L, "1000000u")]
    [InlineData(36_000_000_000L, "3600000m")] // one hour still fits in milliseconds
    public void Formats_in_the_finest_unit_that_fits(long ticks, string header) => Assert.Equal(header, GrpcTimeout.Format(TimeSpan.FromTicks(ticks)));

    [Fact]
    public void Format_never_shortens_and_parses_back()
    {
        var random = new Random(20240601);
        for (var i = 0; i < 1000; i++)
        {
            var timeout = TimeSpan.FromTicks((long)(random.NextDouble() * TimeSpan.FromDays(30).Ticks));
            var header = GrpcTimeout.Format(timeout);
            Assert.True(header.Length <= 9, header);
            var back = GrpcTimeout.Parse(header);
            Assert.NotNull(back);
            Assert.True(back >= timeout, $"seed 20240601, case {i}: {timeout} became {header} = {back}");
        }
    }
}

public class GrpcStatusMessageTests
{
    [Theory]
    [InlineData("plain text", "plain text")]
    [InlineData("100%", "100%25")]
    [InlineData("é", "%C3%A9")]
    [InlineData("a\nb", "a%0Ab")]
    [InlineData("✓ 🎉", "%E2%9C%93 %F0%9F%8E%89")]
    public void Encodes_non_printable_bytes_and_percent(string text, string encoded)
    {
        Assert.Equal(encoded, GrpcStatusHeaders.EncodeMessage(text));
        Assert.Equal(text, GrpcStatusHeaders.DecodeMessage(encoded));
    }

    [Theory]
    [InlineData("50%", "50%")]
    [InlineData("%zz and %4", "%zz and %4")]
    [InlineData("%41%", "A%")]
    public void Keeps_invalid_escapes_as_they_are(string encoded, string decoded) =>
        Assert.Equal(decoded, GrpcStatusHeaders.DecodeMessage(encoded));

    [Fact]
    public void Method_names_must_be_full()
    {
        var marshaller = new GrpcMarshaller<byte[]>(b => b, b => b);
        Assert.Throws<ArgumentException>(() => new GrpcMethod<byte[], byte[]>(GrpcMethodType.Unary, "Echo/Unary", marshaller, marshaller));
        Assert.Throws<ArgumentException>(() => new GrpcMethod<byte[], byte[]>(GrpcMethodType.Unary, "/Echo/", marshaller, marshaller));
        Assert.Equal("/a.B/C", new GrpcMethod<byte[], byte[]>(GrpcMethodType.Unary, "/a.B/C", marshaller, marshaller).FullName);
    }
}
