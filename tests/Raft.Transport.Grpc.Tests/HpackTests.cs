using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Google.Protobuf;
using Raft.Transport.Grpc.Tests.Interop;
using Raft.Transport.Grpc.Wire;

namespace Raft.Transport.Grpc.Tests;

/// <summary>HPACK decoding (RFC 7541's examples) and the URL-:authority rewrite in front of Kestrel.</summary>
public class HpackTests
{
    private static byte[] Hex(string hex) => Convert.FromHexString(hex.Replace(" ", ""));

    [Fact]
    public void Huffman_codes_derived_from_the_lengths_are_rfc_7541s()
    {
        // A few codes as printed in RFC 7541 Appendix B.
        Assert.Equal(0x1ff8u, HpackHuffman.Codes[0]);
        Assert.Equal(0x3u, HpackHuffman.Codes['a']);
        Assert.Equal(0x5cu, HpackHuffman.Codes[':']);
        Assert.Equal(0xfcu, HpackHuffman.Codes['X']);
        Assert.Equal(0x7fff0u, HpackHuffman.Codes['\\']);
        Assert.Equal(0x3ffffeeu, HpackHuffman.Codes[255]);
        Assert.Equal(0x3fffffffu, HpackHuffman.Codes[256]);
        // A complete prefix code: Kraft's sum is exactly 1.
        Assert.Equal(1L << 30, HpackHuffman.CodeLengths.Sum(l => 1L << (30 - l)));
    }

    [Fact]
    public void Decodes_rfc_7541_c4_requests_with_huffman_and_the_dynamic_table()
    {
        var decoder = new HpackDecoder();
        Assert.Equal(
            [new(":method", "GET"), new(":scheme", "http"), new(":path", "/"), new(":authority", "www.example.com")],
            decoder.Decode(Hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff")));
        Assert.Equal(57, decoder.DynamicTableSize);
        Assert.Equal(
            [new(":method", "GET"), new(":scheme", "http"), new(":path", "/"), new(":authority", "www.example.com"), new HpackField("cache-control", "no-cache")],
            decoder.Decode(Hex("8286 84be 5886 a8eb 1064 9cbf")));
        Assert.Equal(110, decoder.DynamicTableSize);
        Assert.Equal(
            [new(":method", "GET"), new(":scheme", "https"), new(":path", "/index.html"), new(":authority", "www.example.com"), new HpackField("custom-key", "custom-value")],
            decoder.Decode(Hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf")));
        Assert.Equal(164, decoder.DynamicTableSize);
        // A table size update to 0 empties the table: index 62 is gone.
        Assert.Empty(decoder.Decode(Hex("20")));
        Assert.Equal(0, decoder.DynamicTableSize);
        Assert.Throws<HpackException>(() => decoder.Decode(Hex("be")));
    }

    [Theory]
    [InlineData("ff")] // integer that never ends
    [InlineData("4188 f1e3")] // string longer than the block
    [InlineData("4181 ff")] // Huffman padding longer than 7 bits
    [InlineData("3fe21f")] // table size update above 4096
    [InlineData("80")] // index 0
    public void Malformed_blocks_are_refused(string hex) =>
        Assert.Throws<HpackException>(() => new HpackDecoder().Decode(Hex(hex)));

    [Theory]
    [InlineData("http://127.0.0.1:2379", "127.0.0.1:2379")]
    [InlineData("https://example.com:443/", "example.com:443")]
    [InlineData("127.0.0.1:2379", "127.0.0.1:2379")]
    [InlineData("", "")]
    public void Authority_of_a_url_is_its_host_and_port(string value, string expected) =>
        Assert.Equal(expected, Http2AuthorityRewriter.AuthorityOf(value));

    private static byte[] HuffmanEncode(string text)
    {
        var bits = new List<bool>();
        foreach (var c in Encoding.Latin1.GetBytes(text))
            for (var i = HpackHuffman.CodeLengths[c] - 1; i >= 0; i--) bits.Add((HpackHuffman.Codes[c] >> i & 1) == 1);
        while (bits.Count % 8 != 0) bits.Add(true);
        return [.. bits.Chunk(8).Select(b => (byte)b.Aggregate(0, (acc, bit) => acc << 1 | (bit ? 1 : 0)))];
    }

    private static byte[] Literal(byte first, string value, bool huffman = false)
    {
        var bytes = huffman ? HuffmanEncode(value) : Encoding.Latin1.GetBytes(value);
        var s = new MemoryStream();
        s.WriteByte(first);
        HpackDecoder.WriteInteger(s, huffman ? (byte)0x80 : (byte)0, 7, bytes.Length);
        s.Write(bytes);
        return s.ToArray();
    }

    private static byte[] Frame(byte type, byte flags, int stream, byte[] payload)
    {
        var f = new byte[9 + payload.Length];
        f[0] = (byte)(payload.Length >> 16);
        f[1] = (byte)(payload.Length >> 8);
        f[2] = (byte)payload.Length;
        f[3] = type;
        f[4] = flags;
        f[5] = (byte)(stream >> 24);
        f[6] = (byte)(stream >> 16);
        f[7] = (byte)(stream >> 8);
        f[8] = (byte)stream;
        payload.CopyTo(f, 9);
        return f;
    }

    private static byte[] GrpcMessage(string text)
    {
        var body = new EchoRequest { Text = text }.ToByteArray();
        return [0, (byte)(body.Length >> 24), (byte)(body.Length >> 16), (byte)(body.Length >> 8), (byte)body.Length, .. body];
    }

    /// <summary>
    /// Two calls on one raw HTTP/2 connection, as gRPC-Go sends them when dialled with an URL: the
    /// first puts the Huffman-coded URL :authority into the dynamic table, the second refers to it by index.
    /// </summary>
    private static async Task<(List<string> Hosts, List<(int Stream, uint Code)> Resets)> TwoCallsWithUrlAuthorityAsync(bool accept)
    {
        var hosts = new ConcurrentQueue<string>();
        var registry = new GrpcServiceRegistry().AddUnary(EchoMethods.Unary, (request, context) =>
        {
            hosts.Enqueue(context.RequestHeaders.Host.ToString());
            return Task.FromResult(new EchoReply { Text = request.Text });
        });
        await using var server = await GrpcServer.StartAsync(new GrpcServerOptions { AcceptUrlAuthority = accept }, registry);
        var url = $"http://127.0.0.1:{server.Address.Port}";

        byte[] first = [0x83, 0x86, .. Literal(0x44, "/interop.v1.Echo/Unary"), .. Literal(0x41, url, huffman: true),
            .. Literal(0x5f, "application/grpc"), .. Literal(0x40, "te"), .. Encoding.Latin1.GetBytes("\x08trailers")];
        // Dynamic table now, newest first: te (62), content-type (63), :authority (64), :path (65).
        byte[] second = [0x83, 0x86, 0x80 | 65, 0x80 | 64, 0x80 | 63, 0x80 | 62];

        using var socket = new TcpClient();
        await socket.ConnectAsync(IPAddress.Loopback, server.Address.Port);
        var stream = socket.GetStream();
        var send = new MemoryStream();
        send.Write("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8);
        send.Write(Frame(0x4, 0, 0, []));
        send.Write(Frame(0x1, 0x4, 1, first));
        send.Write(Frame(0x0, 0x1, 1, GrpcMessage("one")));
        send.Write(Frame(0x1, 0x4, 3, second));
        send.Write(Frame(0x0, 0x1, 3, GrpcMessage("two")));
        await stream.WriteAsync(send.ToArray());

        // Read frames until both streams ended (trailers with END_STREAM, or RST_STREAM).
        var resets = new List<(int, uint)>();
        var ended = new HashSet<int>();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        var header = new byte[9];
        while (ended.Count < 2)
        {
            await stream.ReadExactlyAsync(header, timeout.Token);
            var length = header[0] << 16 | header[1] << 8 | header[2];
            var id = (header[5] & 0x7f) << 24 | header[6] << 16 | header[7] << 8 | header[8];
            var payload = new byte[length];
            await stream.ReadExactlyAsync(payload, timeout.Token);
            if (header[3] == 0x3)
            {
                resets.Add((id, (uint)(payload[0] << 24 | payload[1] << 16 | payload[2] << 8 | payload[3])));
                ended.Add(id);
            }
            else if (header[3] == 0x1 && (header[4] & 0x1) != 0) ended.Add(id);
            else if (header[3] == 0x4 && (header[4] & 0x1) == 0) await stream.WriteAsync(Frame(0x4, 0x1, 0, []), timeout.Token);
        }
        return ([.. hosts], resets);
    }

    [Fact]
    public async Task With_AcceptUrlAuthority_calls_whose_authority_is_a_url_reach_their_handler()
    {
        var (hosts, resets) = await TwoCallsWithUrlAuthorityAsync(accept: true);
        Assert.Empty(resets);
        Assert.Equal(2, hosts.Count);
        Assert.All(hosts, h => Assert.Matches(@"^127\.0\.0\.1:\d+$", h));
    }

    [Fact]
    public async Task Without_it_kestrel_resets_such_calls_with_protocol_error()
    {
        var (hosts, resets) = await TwoCallsWithUrlAuthorityAsync(accept: false);
        Assert.Empty(hosts);
        Assert.Contains((1, 1u), resets);
        Assert.Contains((3, 1u), resets);
    }
}
