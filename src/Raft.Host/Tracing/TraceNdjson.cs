using System.Buffers;
using System.Text;
using System.Text.Json;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using Raft.Spec;

namespace Raft.Host.Tracing;

/// <summary>A trace line is not in etcd's TracingEvent schema; the message says where.</summary>
public sealed class TraceFormatException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// etcd's TracingEvent ndjson: one JSON object a line whose "event" member holds the event.
/// Node ids and votes are strings, counters are numbers, as etcd writes them.
/// </summary>
public static class TraceNdjson
{
    private static readonly Dictionary<string, StateType> Roles = new()
    {
        ["StateFollower"] = StateType.StateFollower,
        ["StateCandidate"] = StateType.StateCandidate,
        ["StateLeader"] = StateType.StateLeader,
        ["StatePreCandidate"] = StateType.StatePreCandidate,
    };

    private static readonly Dictionary<string, MessageType> MessageTypes =
        MessageTypeModule.all.ToDictionary(t => t.ToString(), t => t);

    private static readonly Dictionary<string, ConfChangeType> ChangeActions = new()
    {
        ["AddNewServer"] = ConfChangeType.ConfChangeAddNode,
        ["RemoveServer"] = ConfChangeType.ConfChangeRemoveNode,
        ["AddLearner"] = ConfChangeType.ConfChangeAddLearnerNode,
        ["UpdateNode"] = ConfChangeType.ConfChangeUpdateNode,
    };

    /// <summary>One ndjson line (no newline) for <paramref name="e"/>, stamped with <paramref name="timestamp"/>.</summary>
    public static string Format(TraceEvent e, DateTimeOffset timestamp)
    {
        var buffer = new ArrayBufferWriter<byte>(512);
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("level", "debug");
            w.WriteNumber("ts", timestamp.ToUnixTimeMilliseconds() / 1000.0);
            w.WriteString("msg", "trace");
            w.WriteString("tag", "trace");
            w.WritePropertyName("event");
            WriteEvent(w, e);
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    private static void WriteEvent(Utf8JsonWriter w, TraceEvent e)
    {
        w.WriteStartObject();
        w.WriteString("name", e.Name);
        w.WriteString("nid", Id(e.NodeId));
        w.WriteStartObject("state");
        w.WriteNumber("term", e.Term);
        w.WriteString("vote", Id(e.Vote));
        w.WriteNumber("commit", e.Commit);
        w.WriteEndObject();
        w.WriteString("role", e.Role.ToString());
        w.WriteNumber("log", e.LogLength);
        w.WriteStartArray("conf");
        WriteIds(w, e.Conf.Item1);
        WriteIds(w, e.Conf.Item2);
        w.WriteEndArray();
        if (OptionModule.ToObj(e.Message) is { } m)
        {
            w.WriteStartObject("msg");
            w.WriteString("type", m.Type.ToString());
            w.WriteNumber("term", m.Term);
            w.WriteString("from", Id(m.From));
            w.WriteString("to", Id(m.To));
            w.WriteNumber("entries", m.EntryCount);
            w.WriteNumber("logTerm", m.LogTerm);
            w.WriteNumber("index", m.Index);
            w.WriteNumber("commit", m.Commit);
            w.WriteString("vote", Id(m.Vote));
            w.WriteBoolean("reject", m.Reject);
            w.WriteNumber("rejectHint", m.RejectHint);
            w.WriteEndObject();
        }
        var cc = OptionModule.ToObj(e.ConfChange);
        var progress = OptionModule.ToObj(e.Progress);
        if (cc is not null || progress is not null)
        {
            w.WriteStartObject("prop");
            if (cc is not null)
            {
                w.WriteStartObject("cc");
                if (!cc.Changes.IsEmpty)
                {
                    w.WriteStartArray("changes");
                    foreach (var c in cc.Changes)
                    {
                        w.WriteStartObject();
                        w.WriteString("nid", Id(c.NodeId));
                        w.WriteString("action", ChangeActions.First(kv => kv.Value.Equals(c.Type)).Key);
                        w.WriteEndObject();
                    }
                    w.WriteEndArray();
                }
                if (!cc.NewConf.IsEmpty)
                {
                    w.WritePropertyName("newconf");
                    WriteIds(w, cc.NewConf);
                }
                w.WriteEndObject();
            }
            if (progress is not null)
            {
                w.WriteNumber("match", progress.Item1);
                w.WriteNumber("next", progress.Item2);
            }
            w.WriteEndObject();
        }
        w.WriteEndObject();
    }

    private static string Id(ulong id) => id.ToString(System.Globalization.CultureInfo.InvariantCulture);

    private static void WriteIds(Utf8JsonWriter w, FSharpList<ulong> ids)
    {
        w.WriteStartArray();
        foreach (var id in ids) w.WriteStringValue(Id(id));
        w.WriteEndArray();
    }

    /// <summary>The options line of a run: {"tag":"raftv-trace","boot":...} (no newline).</summary>
    public static string FormatOptions(TraceRunOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var buffer = new ArrayBufferWriter<byte>(256);
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("tag", OptionsTag);
            w.WriteString("boot", options.Boot == TraceBoot.Entries ? "entries" : "snapshot");
            if (options.Boot == TraceBoot.Snapshot)
            {
                w.WriteNumber("bootIndex", options.BootIndex);
                w.WriteNumber("bootTerm", options.BootTerm);
            }
            w.WriteStartArray("voters");
            foreach (var v in options.Voters) w.WriteStringValue(Id(v));
            w.WriteEndArray();
            w.WriteBoolean("prevote", options.PreVote);
            w.WriteBoolean("checkquorum", options.CheckQuorum);
            w.WriteBoolean("asyncwrites", options.AsyncStorageWrites);
            if (options.Replay is { } replay) w.WriteString("replay", replay);
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    private const string OptionsTag = "raftv-trace";

    /// <summary>Reads a run's options line.</summary>
    public static TraceRunOptions ParseOptions(string line)
    {
        try
        {
            using var doc = JsonDocument.Parse(line);
            var o = doc.RootElement;
            if (o.GetProperty("tag").GetString() != OptionsTag) throw new TraceFormatException($"not an options line (tag is not '{OptionsTag}')");
            var boot = o.GetProperty("boot").GetString() switch
            {
                "entries" => TraceBoot.Entries,
                "snapshot" => TraceBoot.Snapshot,
                var other => throw new TraceFormatException($"unknown boot '{other}'"),
            };
            var options = new TraceRunOptions
            {
                Boot = boot,
                Voters = ParseIds(o.GetProperty("voters")),
                BootIndex = boot == TraceBoot.Snapshot ? o.GetProperty("bootIndex").GetUInt64() : 0,
                BootTerm = boot == TraceBoot.Snapshot ? o.GetProperty("bootTerm").GetUInt64() : 0,
                PreVote = o.GetProperty("prevote").GetBoolean(),
                CheckQuorum = o.GetProperty("checkquorum").GetBoolean(),
                AsyncStorageWrites = o.TryGetProperty("asyncwrites", out var a) && a.GetBoolean(),
                Replay = o.TryGetProperty("replay", out var r) ? r.GetString() : null,
            };
            options.Validate();
            return options;
        }
        catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException or FormatException or ArgumentException)
        {
            throw new TraceFormatException($"not a trace options line: {ex.Message}", ex);
        }
    }

    /// <summary>Reads the event of one ndjson line.</summary>
    public static TraceEvent Parse(string line)
    {
        try
        {
            using var doc = JsonDocument.Parse(line);
            if (!doc.RootElement.TryGetProperty("event", out var e))
                throw new TraceFormatException("no \"event\" member");
            var state = e.GetProperty("state");
            var conf = e.GetProperty("conf");
            if (conf.GetArrayLength() != 2) throw new TraceFormatException("\"conf\" must hold two lists");

            var message = FSharpOption<TraceMessage>.None;
            if (e.TryGetProperty("msg", out var m))
            {
                var typeName = m.GetProperty("type").GetString() ?? "";
                if (!MessageTypes.TryGetValue(typeName, out var type))
                    throw new TraceFormatException($"unknown message type '{typeName}'");
                message = new TraceMessage(type, m.GetProperty("term").GetUInt64(), ParseId(m.GetProperty("from")),
                    ParseId(m.GetProperty("to")), m.GetProperty("entries").GetInt32(), m.GetProperty("logTerm").GetUInt64(),
                    m.GetProperty("index").GetUInt64(), m.GetProperty("commit").GetUInt64(), ParseId(m.GetProperty("vote")),
                    m.GetProperty("reject").GetBoolean(), m.GetProperty("rejectHint").GetUInt64());
            }

            var confChange = FSharpOption<TraceConfChange>.None;
            var progress = FSharpOption<Tuple<ulong, ulong>>.None;
            if (e.TryGetProperty("prop", out var prop))
            {
                if (prop.TryGetProperty("cc", out var cc))
                {
                    var changes = cc.TryGetProperty("changes", out var ch)
                        ? ch.EnumerateArray().Select(c =>
                        {
                            var action = c.GetProperty("action").GetString() ?? "";
                            if (!ChangeActions.TryGetValue(action, out var kind))
                                throw new TraceFormatException($"unknown conf change action '{action}'");
                            return new ConfChangeSingle(kind, ParseId(c.GetProperty("nid")));
                        }).ToList()
                        : [];
                    var newConf = cc.TryGetProperty("newconf", out var nc) ? ParseIds(nc) : [];
                    confChange = new TraceConfChange(ListModule.OfSeq(changes), ListModule.OfSeq(newConf));
                }
                if (prop.TryGetProperty("match", out var match) && prop.TryGetProperty("next", out var next))
                    progress = Tuple.Create(match.GetUInt64(), next.GetUInt64());
            }

            var roleName = e.GetProperty("role").GetString() ?? "";
            if (!Roles.TryGetValue(roleName, out var role))
                throw new TraceFormatException($"unknown role '{roleName}'");

            return new TraceEvent(
                e.GetProperty("name").GetString() ?? throw new TraceFormatException("\"name\" is null"),
                ParseId(e.GetProperty("nid")),
                state.GetProperty("term").GetUInt64(),
                ParseId(state.GetProperty("vote")),
                state.GetProperty("commit").GetUInt64(),
                role,
                e.GetProperty("log").GetUInt64(),
                Tuple.Create(ListModule.OfSeq(ParseIds(conf[0])), ListModule.OfSeq(ParseIds(conf[1]))),
                message, confChange, progress);
        }
        catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new TraceFormatException($"not a TracingEvent line: {ex.Message}", ex);
        }
    }

    private static ulong ParseId(JsonElement e) =>
        ulong.TryParse(e.GetString(), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var id)
            ? id
            : throw new TraceFormatException($"node id '{e}' is not a decimal string");

    private static List<ulong> ParseIds(JsonElement array) => array.EnumerateArray().Select(ParseId).ToList();
}
