using Raft.Host.Tracing;
using Raft.Spec;
using System.Text.Json.Nodes;

namespace Raft.Host.Tests;

public class TraceNdjsonTests
{
    /// <summary>etcd's sample trace, beside the repository in shared/.</summary>
    private static string SampleTrace()
    {
        var path = Path.Combine(TestPaths.RepositoryRoot(), "..", "shared", "etcd-raft-testdata", "trace", "example-head.ndjson");
        Assert.True(File.Exists(path), $"etcd's sample trace is missing at {path}");
        return path;
    }

    [Fact]
    public void Every_event_of_etcds_sample_trace_round_trips()
    {
        var lines = File.ReadAllLines(SampleTrace()).Where(l => l.Length > 0).ToArray();
        Assert.True(lines.Length > 100);
        foreach (var line in lines)
        {
            var parsed = TraceNdjson.Parse(line);
            var written = TraceNdjson.Format(parsed, DateTimeOffset.UnixEpoch);
            var expected = JsonNode.Parse(line)!["event"]!;
            var actual = JsonNode.Parse(written)!["event"]!;
            Assert.True(JsonNode.DeepEquals(expected, actual), $"event differs:\n{expected.ToJsonString()}\n{actual.ToJsonString()}");
        }
    }

    [Fact]
    public void Events_carry_ids_and_the_message()
    {
        const string line = """{"event":{"name":"SendAppendEntriesRequest","nid":"2","state":{"term":2,"vote":"2","commit":5},"role":"StateLeader","log":6,"conf":[["1","2","3"],[]],"msg":{"type":"MsgApp","term":2,"from":"2","to":"1","entries":1,"logTerm":1,"index":5,"commit":5,"vote":"0","reject":false,"rejectHint":0},"prop":{"match":5,"next":6}}}""";
        var e = TraceNdjson.Parse(line);
        Assert.Equal(2UL, e.NodeId);
        Assert.Equal(StateType.StateLeader, e.Role);
        Assert.Equal(MessageType.MsgApp, e.Message!.Value.Type);
        Assert.Equal(1, e.Message!.Value.EntryCount);
        Assert.Equal(new[] { 1UL, 2UL, 3UL }, e.Conf.Item1);
        Assert.Equal(Tuple.Create(5UL, 6UL), e.Progress!.Value);
    }

    [Theory]
    [InlineData("not json")]
    [InlineData("""{"level":"debug"}""")]
    [InlineData("""{"event":{"name":"X","nid":"one","state":{"term":0,"vote":"0","commit":0},"role":"StateFollower","log":0,"conf":[[],[]]}}""")]
    [InlineData("""{"event":{"name":"X","nid":"1","state":{"term":0,"vote":"0","commit":0},"role":"Boss","log":0,"conf":[[],[]]}}""")]
    public void Malformed_lines_are_refused(string line)
    {
        Assert.Throws<TraceFormatException>(() => TraceNdjson.Parse(line));
    }
}
