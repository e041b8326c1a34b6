using System.Text;
using Google.Protobuf;
using Raft.Kv.Etcd.Serverpb;

namespace Raft.Kv.Cli;

/// <summary>
/// The text form of a transaction, as 'etcdctl txn' reads it: compares, a blank line, the
/// operations on success, a blank line, the operations on failure. A compare is
/// <c>TARGET("KEY"[, "RANGE_END"]) OP "VALUE"</c> with TARGET value/val, version/ver, create/c,
/// mod/m or lease and OP one of = != &lt; &gt;; an operation is <c>put KEY VALUE</c>,
/// <c>get KEY [RANGE_END] [--prefix] [--from-key] [--limit N] [--keys-only] [--count-only] [--rev N]</c>
/// or <c>del KEY [RANGE_END] [--prefix] [--from-key] [--prev-kv]</c>, with shell-like quoting.
/// </summary>
internal static class TxnText
{
    public static TxnRequest Parse(TextReader input)
    {
        var sections = new List<List<string>> { new(), new(), new() };
        var section = 0;
        while (input.ReadLine() is { } line)
        {
            if (line.Trim().Length == 0)
            {
                // A blank line ends a section; the failure section may also end at the end of input.
                if (++section == 3) break;
                continue;
            }
            sections[section].Add(line);
        }
        return Build(sections[0], sections[1], sections[2]);
    }

    public static TxnRequest Build(IEnumerable<string> compares, IEnumerable<string> success, IEnumerable<string> failure)
    {
        var txn = new TxnRequest();
        foreach (var c in compares) txn.Compare.Add(ParseCompare(c));
        foreach (var op in success) txn.Success.Add(ParseOp(op));
        foreach (var op in failure) txn.Failure.Add(ParseOp(op));
        return txn;
    }

    public static Compare ParseCompare(string line)
    {
        var text = line.Trim();
        var open = text.IndexOf('(');
        if (open <= 0) throw Malformed(line, "expected TARGET(\"KEY\") OP \"VALUE\"");
        var target = text[..open].Trim();
        var pos = open + 1;
        var key = ReadQuoted(text, ref pos, line);
        SkipSpaces(text, ref pos);
        string? rangeEnd = null;
        if (pos < text.Length && text[pos] == ',')
        {
            pos++;
            SkipSpaces(text, ref pos);
            rangeEnd = ReadQuoted(text, ref pos, line);
            SkipSpaces(text, ref pos);
        }
        if (pos >= text.Length || text[pos] != ')') throw Malformed(line, "expected ')' after the key");
        pos++;
        SkipSpaces(text, ref pos);
        var opStart = pos;
        while (pos < text.Length && "=!<>".Contains(text[pos])) pos++;
        var op = text[opStart..pos];
        SkipSpaces(text, ref pos);
        var value = ReadQuoted(text, ref pos, line);
        SkipSpaces(text, ref pos);
        if (pos != text.Length) throw Malformed(line, $"unexpected '{text[pos..]}' after the value");

        var compare = new Compare
        {
            Key = ByteString.CopyFromUtf8(key),
            Result = op switch
            {
                "=" or "==" => Compare.Types.CompareResult.Equal,
                "!=" => Compare.Types.CompareResult.NotEqual,
                "<" => Compare.Types.CompareResult.Less,
                ">" => Compare.Types.CompareResult.Greater,
                _ => throw Malformed(line, $"unknown operator '{op}' (=, !=, <, >)"),
            },
        };
        if (rangeEnd is not null) compare.RangeEnd = ByteString.CopyFromUtf8(rangeEnd);
        long Number() => long.TryParse(value, out var n) ? n : throw Malformed(line, $"'{value}' is not a number");
        switch (target)
        {
            case "value" or "val": compare.Target = Compare.Types.CompareTarget.Value; compare.Value = ByteString.CopyFromUtf8(value); break;
            case "version" or "ver": compare.Target = Compare.Types.CompareTarget.Version; compare.Version = Number(); break;
            case "create" or "c": compare.Target = Compare.Types.CompareTarget.Create; compare.CreateRevision = Number(); break;
            case "mod" or "m": compare.Target = Compare.Types.CompareTarget.Mod; compare.ModRevision = Number(); break;
            case "lease": compare.Target = Compare.Types.CompareTarget.Lease; compare.Lease = Number(); break;
            default: throw Malformed(line, $"unknown target '{target}' (value, version, create, mod, lease)");
        }
        return compare;
    }

    public static RequestOp ParseOp(string line)
    {
        var words = Words(line);
        if (words.Count == 0) throw new CommandArgsException($"malformed operation: '{line}'");
        var args = new CommandArgs(words.Skip(1));
        switch (words[0])
        {
            case "put":
            {
                var prevKv = args.Flag("--prev-kv");
                var ignoreValue = args.Flag("--ignore-value");
                var key = args.Positional($"key in '{line}'");
                var value = ignoreValue ? "" : args.Positional($"value in '{line}'");
                args.EnsureNoneLeft();
                return new RequestOp { RequestPut = new PutRequest { Key = ByteString.CopyFromUtf8(key), Value = ByteString.CopyFromUtf8(value), PrevKv = prevKv, IgnoreValue = ignoreValue } };
            }
            case "get":
                return new RequestOp { RequestRange = ClientCommands.RangeFrom(args, $"key in '{line}'") };
            case "del" or "delete":
            {
                var prevKv = args.Flag("--prev-kv");
                var (key, end) = ClientCommands.KeyRange(args, $"key in '{line}'");
                args.EnsureNoneLeft();
                return new RequestOp { RequestDeleteRange = new DeleteRangeRequest { Key = key, RangeEnd = end, PrevKv = prevKv } };
            }
            default:
                throw new CommandArgsException($"malformed operation: '{line}' (put, get or del)");
        }
    }

    private static CommandArgsException Malformed(string line, string why) => new($"malformed comparison: '{line.Trim()}': {why}");

    private static void SkipSpaces(string s, ref int pos)
    {
        while (pos < s.Length && char.IsWhiteSpace(s[pos])) pos++;
    }

    /// <summary>A double-quoted string with Go's backslash escapes (\", \\, \n, \t, \xHH).</summary>
    private static string ReadQuoted(string s, ref int pos, string line)
    {
        SkipSpaces(s, ref pos);
        if (pos >= s.Length || s[pos] != '"') throw Malformed(line, "expected a double-quoted string");
        pos++;
        var bytes = new List<byte>();
        while (pos < s.Length && s[pos] != '"')
        {
            if (s[pos] == '\\' && pos + 1 < s.Length)
            {
                var c = s[pos + 1];
                pos += 2;
                switch (c)
                {
                    case 'n': bytes.Add((byte)'\n'); break;
                    case 't': bytes.Add((byte)'\t'); break;
                    case 'r': bytes.Add((byte)'\r'); break;
                    case '0': bytes.Add(0); break;
                    case 'x' when pos + 2 <= s.Length && byte.TryParse(s.AsSpan(pos, 2), System.Globalization.NumberStyles.HexNumber, null, out var b):
                        bytes.Add(b);
                        pos += 2;
                        break;
                    default: bytes.AddRange(Encoding.UTF8.GetBytes(c.ToString())); break;
                }
                continue;
            }
            var end = pos;
            while (end < s.Length && s[end] != '"' && s[end] != '\\') end++;
            bytes.AddRange(Encoding.UTF8.GetBytes(s[pos..end]));
            pos = end;
        }
        if (pos >= s.Length) throw Malformed(line, "a quoted string is not closed");
        pos++;
        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    /// <summary>Splits an operation into words: spaces separate, single or double quotes group, backslash escapes.</summary>
    internal static List<string> Words(string line)
    {
        var words = new List<string>();
        var current = new StringBuilder();
        var inWord = false;
        char quote = '\0';
        for (var i = 0; i < line.Length; i++)
        {
            var c = line[i];
            if (quote != '\0')
            {
                if (c == quote) quote = '\0';
                else if (c == '\\' && quote == '"' && i + 1 < line.Length) current.Append(line[++i]);
                else current.Append(c);
                continue;
            }
            if (char.IsWhiteSpace(c))
            {
                if (inWord) words.Add(current.ToString());
                current.Clear();
                inWord = false;
                continue;
            }
            inWord = true;
            if (c is '"' or '\'') quote = c;
            else if (c == '\\' && i + 1 < line.Length) current.Append(line[++i]);
            else current.Append(c);
        }
        if (quote != '\0') throw new CommandArgsException($"malformed operation: '{line}' (a quote is not closed)");
        if (inWord) words.Add(current.ToString());
        return words;
    }
}
