using System.Globalization;
using System.Text;
using Google.Protobuf;
using Google.Protobuf.Reflection;

namespace Raft.Kv.Cli;

/// <summary>
/// etcdctl's output formats: JSON as Go's encoding/json writes etcd's responses (field names as in
/// the .proto, 64-bit numbers as numbers, bytes in base64, zero values left out, a oneof as
/// {"Oneof":{"Field":...}}), tables drawn as etcdctl draws them, and sizes as it prints them.
/// </summary>
internal static class EtcdOutput
{
    public static string Json(IMessage message)
    {
        var sb = new StringBuilder();
        WriteMessage(sb, message);
        return sb.ToString();
    }

    private static void WriteMessage(StringBuilder sb, IMessage message)
    {
        sb.Append('{');
        var first = true;
        void Key(string name)
        {
            if (!first) sb.Append(',');
            first = false;
            sb.Append('"').Append(name).Append("\":");
        }
        var doneOneofs = new HashSet<string>();
        foreach (var field in message.Descriptor.Fields.InFieldNumberOrder())
        {
            if (field.RealContainingOneof is { } oneof)
            {
                if (!doneOneofs.Add(oneof.Name)) continue;
                var set = oneof.Accessor.GetCaseFieldDescriptor(message);
                if (set is null) continue;
                Key(Pascal(oneof.Name));
                sb.Append("{\"").Append(Pascal(set.Name)).Append("\":");
                WriteValue(sb, set, set.Accessor.GetValue(message));
                sb.Append('}');
                continue;
            }
            var value = field.Accessor.GetValue(message);
            if (field.IsRepeated)
            {
                var list = (System.Collections.IList)value;
                if (list.Count == 0) continue;
                Key(field.Name);
                sb.Append('[');
                for (var i = 0; i < list.Count; i++)
                {
                    if (i > 0) sb.Append(',');
                    WriteValue(sb, field, list[i]!);
                }
                sb.Append(']');
                continue;
            }
            if (IsZero(field, value)) continue;
            Key(field.Name);
            WriteValue(sb, field, value);
        }
        sb.Append('}');
    }

    private static bool IsZero(FieldDescriptor field, object? value) => field.FieldType switch
    {
        FieldType.Message => value is null,
        FieldType.String => string.IsNullOrEmpty((string?)value),
        FieldType.Bytes => value is null || ((ByteString)value).IsEmpty,
        FieldType.Bool => !(bool)value!,
        FieldType.Enum => Convert.ToInt64(value, CultureInfo.InvariantCulture) == 0,
        FieldType.Double => (double)value! == 0,
        FieldType.Float => (float)value! == 0,
        _ => Convert.ToDecimal(value, CultureInfo.InvariantCulture) == 0,
    };

    private static void WriteValue(StringBuilder sb, FieldDescriptor field, object value)
    {
        switch (field.FieldType)
        {
            case FieldType.Message: WriteMessage(sb, (IMessage)value); break;
            case FieldType.String: WriteString(sb, (string)value); break;
            case FieldType.Bytes: sb.Append('"').Append(((ByteString)value).ToBase64()).Append('"'); break;
            case FieldType.Bool: sb.Append((bool)value ? "true" : "false"); break;
            case FieldType.Enum: sb.Append(Convert.ToInt64(value, CultureInfo.InvariantCulture).ToString(CultureInfo.InvariantCulture)); break;
            default: sb.Append(Convert.ToString(value, CultureInfo.InvariantCulture)); break;
        }
    }

    public static void WriteString(StringBuilder sb, string s)
    {
        sb.Append('"');
        foreach (var c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                // Go escapes these for safe embedding in HTML, and so does etcdctl's output.
                case '<': sb.Append("\\u003c"); break;
                case '>': sb.Append("\\u003e"); break;
                case '&': sb.Append("\\u0026"); break;
                default:
                    if (c < 0x20) sb.Append($"\\u{(int)c:x4}");
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }

    public static string JsonString(string s)
    {
        var sb = new StringBuilder();
        WriteString(sb, s);
        return sb.ToString();
    }

    private static string Pascal(string name) =>
        string.Concat(name.Split('_').Where(p => p.Length > 0).Select(p => char.ToUpperInvariant(p[0]) + p[1..]));

    /// <summary>
    /// A table as etcdctl draws it: a rule, the headers centred, a rule, the rows right-aligned, a rule;
    /// every cell padded with one space each side.
    /// </summary>
    public static string Table(IReadOnlyList<string> headers, IReadOnlyList<IReadOnlyList<string>> rows)
    {
        var widths = headers.Select((h, i) => Math.Max(h.Length, rows.Count == 0 ? 0 : rows.Max(r => r[i].Length))).ToArray();
        var rule = "+" + string.Join("+", widths.Select(w => new string('-', w + 2))) + "+";
        var sb = new StringBuilder();
        sb.Append(rule).Append('\n');
        sb.Append('|');
        for (var i = 0; i < headers.Count; i++)
        {
            var gap = widths[i] - headers[i].Length;
            var left = gap / 2;
            sb.Append(' ').Append(new string(' ', left)).Append(headers[i]).Append(new string(' ', gap - left)).Append(" |");
        }
        sb.Append('\n').Append(rule).Append('\n');
        foreach (var row in rows)
        {
            sb.Append('|');
            for (var i = 0; i < headers.Count; i++) sb.Append(' ').Append(row[i].PadLeft(widths[i])).Append(" |");
            sb.Append('\n');
        }
        sb.Append(rule).Append('\n');
        return sb.ToString();
    }

    /// <summary>Bytes in SI units as etcdctl prints database sizes: "20 kB", "8.0 MB", "123 B".</summary>
    public static string Bytes(long bytes)
    {
        if (bytes < 10) return $"{bytes} B";
        string[] units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
        var exponent = Math.Floor(Math.Log(bytes) / Math.Log(1000));
        var value = Math.Floor(bytes / Math.Pow(1000, exponent) * 10 + 0.5) / 10;
        var unit = units[(int)exponent];
        return value < 10
            ? value.ToString("0.0", CultureInfo.InvariantCulture) + " " + unit
            // Go's %.0f rounds a half to even (20.5 kB prints as "20 kB").
            : Math.Round(value, 0, MidpointRounding.ToEven).ToString("0", CultureInfo.InvariantCulture) + " " + unit;
    }
}
