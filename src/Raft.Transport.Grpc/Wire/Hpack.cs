using System.Text;

namespace Raft.Transport.Grpc.Wire;

/// <summary>One decoded header field; <see cref="NeverIndexed"/> keeps the sender's "never index" mark.</summary>
internal readonly record struct HpackField(string Name, string Value, bool NeverIndexed = false);

/// <summary>An HPACK header block is malformed (RFC 7541's COMPRESSION_ERROR).</summary>
internal sealed class HpackException(string message) : Exception(message);

/// <summary>
/// HPACK (RFC 7541) decoding of the header blocks one peer sends on one connection, keeping the
/// dynamic table in step with the peer's encoder, and encoding of blocks that use no table at all.
/// Names and values are Latin-1 so every octet round-trips.
/// </summary>
internal sealed class HpackDecoder(int maxTableSizeLimit = HpackDecoder.DefaultTableSize)
{
    private readonly int _limit = maxTableSizeLimit;
    /// <summary>SETTINGS_HEADER_TABLE_SIZE unless a server announces another (Kestrel's default too).</summary>
    public const int DefaultTableSize = 4096;

    private static readonly Encoding Latin1 = Encoding.Latin1;

    private static readonly (string Name, string Value)[] StaticTable =
    [
        (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
        (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
        (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
        ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
        ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""), ("cache-control", ""),
        ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""), ("content-length", ""),
        ("content-location", ""), ("content-range", ""), ("content-type", ""), ("cookie", ""), ("date", ""),
        ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""), ("if-match", ""),
        ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""), ("if-unmodified-since", ""),
        ("last-modified", ""), ("link", ""), ("location", ""), ("max-forwards", ""), ("proxy-authenticate", ""),
        ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""), ("retry-after", ""),
        ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""), ("transfer-encoding", ""),
        ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
    ];

    // Newest first, as HPACK indexes them.
    private readonly List<(string Name, string Value)> _dynamic = [];
    private int _size;
    private int _maxSize = maxTableSizeLimit;

    public int DynamicTableSize => _size;

    public List<HpackField> Decode(ReadOnlySpan<byte> block)
    {
        var fields = new List<HpackField>();
        var pos = 0;
        while (pos < block.Length)
        {
            var b = block[pos];
            if ((b & 0x80) != 0)
            {
                var (name, value) = Lookup(ReadInteger(block, ref pos, 7));
                fields.Add(new HpackField(name, value));
            }
            else if ((b & 0xc0) == 0x40)
            {
                var field = ReadLiteral(block, ref pos, 6);
                Insert(field.Name, field.Value);
                fields.Add(field);
            }
            else if ((b & 0xe0) == 0x20)
            {
                if (fields.Count > 0) throw new HpackException("dynamic table size update after a header field");
                var size = ReadInteger(block, ref pos, 5);
                if (size > _limit) throw new HpackException($"dynamic table size {size} exceeds the limit {_limit}");
                _maxSize = size;
                Evict(0);
            }
            else
            {
                var neverIndexed = (b & 0xf0) == 0x10;
                fields.Add(ReadLiteral(block, ref pos, 4) with { NeverIndexed = neverIndexed });
            }
        }
        return fields;
    }

    /// <summary>The fields as literals that neither use nor change the receiver's dynamic table, strings not Huffman-coded.</summary>
    public static byte[] EncodeWithoutIndexing(IEnumerable<HpackField> fields)
    {
        var output = new MemoryStream();
        foreach (var f in fields)
        {
            output.WriteByte(f.NeverIndexed ? (byte)0x10 : (byte)0x00);
            WriteString(output, f.Name);
            WriteString(output, f.Value);
        }
        return output.ToArray();
    }

    private static void WriteString(MemoryStream output, string text)
    {
        var bytes = Latin1.GetBytes(text);
        WriteInteger(output, 0x00, 7, bytes.Length);
        output.Write(bytes);
    }

    internal static void WriteInteger(MemoryStream output, byte flags, int prefixBits, int value)
    {
        var max = (1 << prefixBits) - 1;
        if (value < max)
        {
            output.WriteByte((byte)(flags | value));
            return;
        }
        output.WriteByte((byte)(flags | max));
        value -= max;
        while (value >= 0x80)
        {
            output.WriteByte((byte)(value & 0x7f | 0x80));
            value >>= 7;
        }
        output.WriteByte((byte)value);
    }

    private HpackField ReadLiteral(ReadOnlySpan<byte> block, ref int pos, int prefixBits)
    {
        var index = ReadInteger(block, ref pos, prefixBits);
        var name = index == 0 ? ReadString(block, ref pos) : Lookup(index).Name;
        return new HpackField(name, ReadString(block, ref pos));
    }

    private (string Name, string Value) Lookup(int index)
    {
        if (index >= 1 && index <= StaticTable.Length) return StaticTable[index - 1];
        var d = index - StaticTable.Length - 1;
        if (index < 1 || d >= _dynamic.Count) throw new HpackException($"header index {index} is not in the tables");
        return _dynamic[d];
    }

    private void Insert(string name, string value)
    {
        var size = name.Length + value.Length + 32;
        if (size > _maxSize)
        {
            // RFC 7541 4.4: an entry larger than the table empties it and is not added.
            _dynamic.Clear();
            _size = 0;
            return;
        }
        Evict(size);
        _dynamic.Insert(0, (name, value));
        _size += size;
    }

    private void Evict(int room)
    {
        while (_dynamic.Count > 0 && _size + room > _maxSize)
        {
            var (n, v) = _dynamic[^1];
            _size -= n.Length + v.Length + 32;
            _dynamic.RemoveAt(_dynamic.Count - 1);
        }
    }

    internal static int ReadInteger(ReadOnlySpan<byte> block, ref int pos, int prefixBits)
    {
        if (pos >= block.Length) throw new HpackException("header block ends inside an integer");
        var max = (1 << prefixBits) - 1;
        long value = block[pos++] & max;
        if (value < max) return (int)value;
        for (var shift = 0; ; shift += 7)
        {
            if (pos >= block.Length) throw new HpackException("header block ends inside an integer");
            if (shift > 21) throw new HpackException("header block integer is too large");
            var b = block[pos++];
            value += (long)(b & 0x7f) << shift;
            if ((b & 0x80) == 0) break;
        }
        return value <= int.MaxValue ? (int)value : throw new HpackException("header block integer is too large");
    }

    private static string ReadString(ReadOnlySpan<byte> block, ref int pos)
    {
        if (pos >= block.Length) throw new HpackException("header block ends before a string");
        var huffman = (block[pos] & 0x80) != 0;
        var length = ReadInteger(block, ref pos, 7);
        if (length > block.Length - pos) throw new HpackException("header block ends inside a string");
        var raw = block.Slice(pos, length);
        pos += length;
        return huffman ? Latin1.GetString(HpackHuffman.Decode(raw)) : Latin1.GetString(raw);
    }
}

/// <summary>
/// HPACK's static Huffman code (RFC 7541 Appendix B). The code is canonical: codes of one length
/// follow each other in symbol order and each length starts where the shorter ones ended, so the
/// lengths alone define it.
/// </summary>
internal static class HpackHuffman
{
    /// <summary>Code length in bits of symbols 0..255 and of EOS (256), from RFC 7541 Appendix B.</summary>
    internal static readonly byte[] CodeLengths =
    [
        13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
        6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
        13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
        15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
        20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
        22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
        26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
        20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
        30,
    ];

    private const int Eos = 256;
    private const int MaxLength = 30;

    // Canonical decoding tables: for each length, the first code, how many codes, and where its symbols start.
    private static readonly uint[] FirstCode = new uint[MaxLength + 1];
    private static readonly int[] Count = new int[MaxLength + 1];
    private static readonly int[] Offset = new int[MaxLength + 1];
    private static readonly int[] SymbolsByCode;

    /// <summary>Each symbol's code (right-aligned), derived from the lengths.</summary>
    internal static readonly uint[] Codes = new uint[257];

    static HpackHuffman()
    {
        SymbolsByCode = [.. Enumerable.Range(0, 257).OrderBy(s => CodeLengths[s]).ThenBy(s => s)];
        foreach (var s in SymbolsByCode) Count[CodeLengths[s]]++;
        uint code = 0;
        var offset = 0;
        for (var len = 1; len <= MaxLength; len++)
        {
            FirstCode[len] = code;
            Offset[len] = offset;
            offset += Count[len];
            code = (code + (uint)Count[len]) << 1;
        }
        var next = (uint[])FirstCode.Clone();
        foreach (var s in SymbolsByCode) Codes[s] = next[CodeLengths[s]]++;
    }

    public static byte[] Decode(ReadOnlySpan<byte> input)
    {
        var output = new List<byte>(input.Length * 8 / 5);
        uint code = 0;
        var length = 0;
        foreach (var b in input)
        {
            for (var bit = 7; bit >= 0; bit--)
            {
                code = code << 1 | (uint)(b >> bit & 1);
                length++;
                if (length > MaxLength) throw new HpackException("invalid Huffman code in header block");
                var rank = code - FirstCode[length];
                if (code < FirstCode[length] || rank >= Count[length]) continue;
                var symbol = SymbolsByCode[Offset[length] + (int)rank];
                if (symbol == Eos) throw new HpackException("Huffman-coded string contains EOS");
                output.Add((byte)symbol);
                code = 0;
                length = 0;
            }
        }
        // Padding: fewer than 8 bits, all ones (a prefix of EOS).
        if (length > 7 || code != (1u << length) - 1) throw new HpackException("invalid Huffman padding in header block");
        return [.. output];
    }
}
