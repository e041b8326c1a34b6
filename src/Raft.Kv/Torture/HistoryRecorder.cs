using System.Diagnostics;
using System.Text;
using System.Text.Json;

namespace Raft.Kv.Torture;

/// <summary>
/// Writes the clients' history as JSON lines (docs/history-format.md) as events happen, and keeps
/// the lines for the checker. Times are nanoseconds on one monotonic clock, taken under the lock
/// so the file is in time order.
/// </summary>
internal sealed class HistoryRecorder : IDisposable
{
    private readonly StreamWriter _file;
    private readonly List<string> _lines = [];
    private readonly long _origin = Stopwatch.GetTimestamp();
    private readonly object _gate = new();

    public HistoryRecorder(string path)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        _file = new StreamWriter(path, append: false, new UTF8Encoding(false));
    }

    public IReadOnlyList<string> Lines
    {
        get
        {
            lock (_gate) return [.. _lines];
        }
    }

    public void Invoke(int process, string f, string key, HistoryValue value) => Add(process, "invoke", f, key, value);

    public void Complete(int process, string type, string f, string key, HistoryValue value) => Add(process, type, f, key, value);

    private void Add(int process, string type, string f, string key, HistoryValue value)
    {
        lock (_gate)
        {
            var time = (long)Stopwatch.GetElapsedTime(_origin).TotalNanoseconds;
            var line = Format(process, type, f, key, value, time);
            _lines.Add(line);
            _file.WriteLine(line);
        }
    }

    public static string Format(int process, string type, string f, string key, HistoryValue value, long time)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteNumber("process", process);
            w.WriteString("type", type);
            w.WriteString("f", f);
            w.WriteString("key", key);
            w.WritePropertyName("value");
            value.Write(w);
            w.WriteNumber("time", time);
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    public void Flush()
    {
        lock (_gate) _file.Flush();
    }

    public void Dispose()
    {
        lock (_gate) _file.Dispose();
    }
}

/// <summary>An event's value: none (null), one register value (null = absent), or a compare-and-set pair.</summary>
internal readonly record struct HistoryValue(bool IsPair, string? First, string? Second)
{
    public static readonly HistoryValue None = new(false, null, null);
    public static HistoryValue One(string? value) => new(false, value, null);
    public static HistoryValue Pair(string? expected, string updated) => new(true, expected, updated);

    public void Write(Utf8JsonWriter w)
    {
        if (IsPair)
        {
            w.WriteStartArray();
            WriteScalar(w, First);
            WriteScalar(w, Second);
            w.WriteEndArray();
        }
        else WriteScalar(w, First);
    }

    private static void WriteScalar(Utf8JsonWriter w, string? v)
    {
        if (v is null) w.WriteNullValue();
        else w.WriteStringValue(v);
    }
}
