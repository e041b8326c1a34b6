using System.Text;

namespace Raft.Host.Tests.Cluster;

/// <summary>
/// In-process clusters of Nodes over an <see cref="InMemoryNetwork"/>. The clock is driven by
/// the test (<see cref="TickAllAsync"/>), elections are started explicitly, and outcomes are
/// awaited with <see cref="Eventually"/>, whose bound only guards against hanging.
/// </summary>
public sealed class TestCluster : IAsyncDisposable
{
    /// <summary>Only a guard against a hung test; assertions never depend on durations.</summary>
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(Environment.GetEnvironmentVariable("RAFT_TEST_BOUND_SECONDS") is { } s ? double.Parse(s) : 60);

    public InMemoryNetwork Network { get; } = new();
    public Dictionary<ulong, TestMember> Members { get; } = [];

    public TestMember this[ulong id] => Members[id];

    /// <summary>Options every member gets; PreVote keeps an isolated member from disrupting the others.</summary>
    public static RaftNodeOptions DefaultOptions(ulong id) => new() { Id = id, ElectionTick = 10, HeartbeatTick = 1, PreVote = true };

    /// <summary>The trace sink of every member (trace validation), if any.</summary>
    public Raft.Host.Tracing.IRaftTraceSink? TraceSink { get; private init; }

    // How Start configured its members: members that join later are configured alike.
    private Func<RaftNodeOptions, RaftNodeOptions>? _configure;

    public static TestCluster Start(int size, Func<RaftNodeOptions, RaftNodeOptions>? configure = null,
        Raft.Host.Tracing.IRaftTraceSink? traceSink = null)
    {
        var cluster = new TestCluster { TraceSink = traceSink, _configure = configure };
        var ids = Enumerable.Range(1, size).Select(i => (ulong)i).ToArray();
        foreach (var id in ids)
        {
            var options = DefaultOptions(id);
            cluster.Members[id] = new TestMember(id, configure?.Invoke(options) ?? options, cluster.Network, traceSink: traceSink);
        }
        foreach (var m in cluster.Members.Values) m.Start(ids);
        return cluster;
    }

    /// <summary>A new member with an empty storage, waiting to be added by a conf change; configured as Start configured the others unless <paramref name="configure"/> says otherwise.</summary>
    public TestMember Join(ulong id, Func<RaftNodeOptions, RaftNodeOptions>? configure = null)
    {
        configure ??= _configure;
        var options = DefaultOptions(id);
        var member = new TestMember(id, configure?.Invoke(options) ?? options, Network, traceSink: TraceSink);
        Members[id] = member;
        member.Start(null);
        return member;
    }

    public IEnumerable<TestMember> Running => Members.Values.Where(m => m.Running);

    /// <summary>Campaigns on one member and waits until every connected member follows it.</summary>
    public async Task<TestMember> ElectAsync(ulong id)
    {
        // A node with conf changes still to apply refuses to campaign (as etcd does).
        foreach (var m in Running)
            await Eventually(async () => { var s = await m.Node.StatusAsync(); return s.Applied >= s.Commit; }, $"node {m.Id} applied its log", this);
        await this[id].Node.CampaignAsync();
        await Eventually(async () =>
        {
            var s = await this[id].Node.StatusAsync();
            return s.IsLeader;
        }, $"node {id} becomes leader", this);
        await WaitForLeaderEverywhereAsync(id);
        return this[id];
    }

    public async Task WaitForLeaderEverywhereAsync(ulong leader, IEnumerable<ulong>? except = null)
    {
        var skip = except?.ToHashSet() ?? [];
        foreach (var m in Running.Where(m => !skip.Contains(m.Id)))
            await Eventually(async () => (await m.Node.StatusAsync()).Lead == leader, $"node {m.Id} follows {leader}", this);
    }

    /// <summary>The member that leads at the highest term, if any.</summary>
    public async Task<TestMember?> LeaderAsync()
    {
        TestMember? leader = null;
        ulong term = 0;
        foreach (var m in Running)
        {
            var s = await m.Node.StatusAsync();
            if (s.IsLeader && s.Term >= term) (leader, term) = (m, s.Term);
        }
        return leader;
    }

    public async Task TickAllAsync(int ticks = 1)
    {
        for (var i = 0; i < ticks; i++)
        {
            foreach (var m in Running) m.Node.Tick();
            // Let the ticks take effect before the next ones: a status call is answered after them.
            foreach (var m in Running) await m.Node.StatusAsync();
        }
    }

    /// <summary>Waits until every running member (or those listed) applied the payloads, in order, as its last ones.</summary>
    public async Task WaitForAppliedAsync(IReadOnlyList<string> payloads, IEnumerable<ulong>? ids = null)
    {
        var members = ids?.Select(id => this[id]) ?? Running;
        foreach (var m in members)
            await Eventually(() => Task.FromResult(EndsWith(m.Applied, payloads)),
                $"node {m.Id} applies [{string.Join(",", payloads)}] (has [{string.Join(",", m.Applied)}])", this);
    }

    private static bool EndsWith(IReadOnlyList<string> applied, IReadOnlyList<string> tail) =>
        applied.Count >= tail.Count && applied.Skip(applied.Count - tail.Count).SequenceEqual(tail);

    public static byte[] Bytes(string s) => Encoding.UTF8.GetBytes(s);

    /// <summary>Polls until the condition holds; fails with <paramref name="what"/> if it never does.</summary>
    public static async Task Eventually(Func<Task<bool>> condition, string what, TestCluster? cluster = null)
    {
        var deadline = DateTime.UtcNow + Bound;
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline) Assert.Fail($"never happened: {what}\n{cluster?.RecentLogs()}");
            await Task.Delay(2);
        }
    }

    /// <summary>Polls like <see cref="Eventually"/>, ticking every running member between checks.</summary>
    /// <summary>No more message loss, and every stopped member started again.</summary>
    public void Heal()
    {
        Network.Drop = null;
        foreach (var m in Members.Values.Where(m => !m.Running)) m.Start(null);
    }

    /// <summary>
    /// Proposes <paramref name="value"/> to whichever member leads (again to the next leader while
    /// proposals are dropped) until every member applied it; waits with <paramref name="wait"/>
    /// (<see cref="EventuallyTicking"/> by default).
    /// </summary>
    public async Task CommitEverywhereAsync(string value, string what, Func<Func<Task<bool>>, string, Task>? wait = null)
    {
        var proposed = false;
        await (wait ?? EventuallyTicking)(async () =>
        {
            if (Members.Values.All(m => m.Applied.Contains(value))) return true;
            if (!proposed && await LeaderAsync() is { } leader)
            {
                try
                {
                    await leader.Node.ProposeAsync(Bytes(value));
                    proposed = true;
                }
                catch (ProposalDroppedException)
                {
                    // A leader about to step down or transferring: ask the next one.
                }
            }
            return false;
        }, what);
    }

    public async Task EventuallyTicking(Func<Task<bool>> condition, string what)
    {
        var deadline = DateTime.UtcNow + Bound;
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline) Assert.Fail($"never happened: {what}\n{RecentLogs()}");
            await TickAllAsync();
            await Task.Delay(1);
        }
    }

    /// <summary>The last log lines of every member, for failure messages.</summary>
    public string RecentLogs(int perMember = 40)
    {
        var sb = new StringBuilder();
        foreach (var m in Members.Values)
        {
            List<(Microsoft.Extensions.Logging.LogLevel Level, string Text)> lines;
            lock (m.Log.Lines) lines = [.. m.Log.Lines];
            sb.Append("--- node ").Append(m.Id).Append(" (").Append(lines.Count).Append(" lines)\n");
            foreach (var (level, text) in lines.Skip(Math.Max(0, lines.Count - perMember)))
                sb.Append(level).Append(' ').Append(text).Append('\n');
        }
        return sb.ToString();
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var m in Members.Values) await m.StopAsync();
    }
}
