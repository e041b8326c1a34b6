using System.Text.Json;
using System.Text.Json.Nodes;
using Raft.Kv.Torture;

namespace Raft.Kv.Tests;

/// <summary>
/// One short torture run (3 member processes, every kind of fault, its own durable PostgreSQL for
/// the postgres nemesis; fixed seed), shared by the tests below. Replay it with
/// <c>./raftv torture --duration 50s --nodes 3 --clients 4 --keys 5 --nemesis all --seed SEED</c>.
/// </summary>
public sealed class TortureRunFixture : IAsyncLifetime
{
    public const int Seed = 20250611;
    public static readonly NemesisKind[] AllKinds = Enum.GetValues<NemesisKind>();

    public TortureReport Report { get; private set; } = null!;
    public string Log { get; private set; } = "";

    public async Task InitializeAsync()
    {
        var history = Path.Combine(Path.GetTempPath(), $"raftv-torture-test-{Guid.NewGuid():N}.jsonl");
        var log = new StringWriter();
        Report = await TortureRun.RunAsync(new TortureOptions
        {
            Duration = TimeSpan.FromSeconds(50),
            Nodes = 3,
            Clients = 4,
            Keys = 5,
            Nemesis = AllKinds,
            HistoryPath = history,
            Seed = Seed,
        }, log);
        Report.Print(log);
        Log = log.ToString();
    }

    public Task DisposeAsync()
    {
        if (Report?.Passed == true) File.Delete(Report.Options.HistoryPath);
        return Task.CompletedTask;
    }
}

public class TortureTests(TortureRunFixture run) : IClassFixture<TortureRunFixture>
{
    [Fact]
    public void A_short_run_under_every_kind_of_fault_passes_every_check()
    {
        var report = run.Report;
        Assert.True(report.Passed, $"torture run with seed {TortureRunFixture.Seed} failed:\n{run.Log}");
        Assert.Equal(["converged after healing", "final reads answered", "replicas agree", "linearizable", "acknowledged writes kept"],
            report.Verdicts.Select(v => v.Name));
        // The run did something worth checking: writes were acknowledged and faults injected.
        Assert.True(report.Operations.GetValueOrDefault(("put", "ok")) > 20, run.Log);
        Assert.True(report.Operations.GetValueOrDefault(("get", "ok")) > 20, run.Log);
        Assert.True(report.FaultsInjected.Values.Sum() >= 3, run.Log);
        Assert.Equal(report.Schedule.Count, report.FaultsInjected.Values.Sum());
        Assert.Equal(TortureRunFixture.AllKinds.Select(FaultStep.KindName).Order(),
            report.FaultsInjected.Keys.Select(k => k.Split('/')[0]).Distinct().Order());
        // The membership fault changed the membership: the spare was added and removed (a learner also promoted).
        Assert.Contains(report.Notes, n => n.Contains("membership changes took effect"));
    }

    [Fact]
    public void The_checker_catches_a_read_of_a_value_nobody_wrote_in_the_runs_history()
    {
        var lines = run.Report.HistoryLines.ToList();
        var intact = TortureRun.CheckHistory(lines, TimeSpan.FromSeconds(60));
        Assert.True(intact.Holds, intact.Detail);

        // Corrupt one ok read in the middle of the history.
        var reads = lines.Select((l, i) => (Line: JsonNode.Parse(l)!.AsObject(), Index: i))
            .Where(x => (string?)x.Line["type"] == "ok" && (string?)x.Line["f"] == "get")
            .ToList();
        Assert.NotEmpty(reads);
        var (line, index) = reads[reads.Count / 2];
        line["value"] = "corrupted-never-written";
        lines[index] = line.ToJsonString();

        var verdict = TortureRun.CheckHistory(lines, TimeSpan.FromSeconds(60));
        Assert.False(verdict.Holds, $"the corrupted line {index + 1} went unnoticed (seed {TortureRunFixture.Seed})");
        Assert.Equal("linearizable", verdict.Name);
        Assert.Contains($"key \"{(string)line["key"]!}\": NOT linearizable", verdict.Detail);
        Assert.Contains("corrupted-never-written", verdict.Detail);
    }

    [Fact]
    public void The_checker_catches_a_stale_read_in_the_runs_history()
    {
        // Make the final read of a key on the last member return the value the key held before its last write.
        var lines = run.Report.HistoryLines.ToList();
        var parsed = lines.Select(l => JsonNode.Parse(l)!.AsObject()).ToList();
        var finalRead = parsed.FindLastIndex(e => (string?)e["type"] == "ok" && (string?)e["f"] == "get" && e["value"] is not null);
        Assert.True(finalRead >= 0);
        var key = (string)parsed[finalRead]["key"]!;
        var current = (string)parsed[finalRead]["value"]!;
        // Any value an ok write put on that key before, other than the current one, is stale by now: the final reads come after all writes ended.
        var stale = parsed.Where(e => (string?)e["type"] == "ok" && (string?)e["f"] == "put" && (string?)e["key"] == key)
            .Select(e => (string)e["value"]!).FirstOrDefault(v => v != current);
        Assert.NotNull(stale);
        parsed[finalRead]["value"] = stale;
        lines[finalRead] = parsed[finalRead].ToJsonString();
        Assert.False(TortureRun.CheckHistory(lines, TimeSpan.FromSeconds(60)).Holds,
            $"a final read of {key} returning the stale {stale} went unnoticed (seed {TortureRunFixture.Seed})");
    }
}

public class NemesisScheduleTests
{
    private static readonly NemesisKind[] All = Enum.GetValues<NemesisKind>();

    [Theory]
    [InlineData(1, 3)]
    [InlineData(2, 5)]
    [InlineData(99, 4)]
    public void The_schedule_is_a_function_of_the_seed_and_stays_within_the_run(int seed, int nodes)
    {
        var a = NemesisSchedule.Generate(seed, TimeSpan.FromSeconds(120), nodes, All);
        var b = NemesisSchedule.Generate(seed, TimeSpan.FromSeconds(120), nodes, All);
        Assert.Equal(a.Select(s => s.ToString()), b.Select(s => s.ToString()));
        Assert.NotEqual(a.Select(s => s.ToString()), NemesisSchedule.Generate(seed + 1, TimeSpan.FromSeconds(120), nodes, All).Select(s => s.ToString()));
        Assert.True(a.Count >= 10, $"seed {seed}: only {a.Count} faults in 120 s");
        for (var i = 0; i < a.Count; i++)
        {
            var s = a[i];
            Assert.True(s.At + s.Length <= TimeSpan.FromSeconds(120), $"seed {seed}: {s}");
            if (i > 0) Assert.True(s.At >= a[i - 1].At + a[i - 1].Length, $"seed {seed}: {s} overlaps {a[i - 1]}");
            Assert.All(s.Targets, t => Assert.InRange(t, 0, nodes - 1));
            Assert.All(s.Links, l =>
            {
                Assert.NotEqual(l.From, l.To);
                Assert.InRange(l.From, 0, nodes - 1);
                Assert.InRange(l.To, 0, nodes - 1);
            });
            if (s.Kind == NemesisKind.Partition) Assert.NotEmpty(s.Links);
        }
        Assert.Equal(All.Order(), a.Select(s => s.Kind).Distinct().Order());
    }

    [Fact]
    public void A_partition_into_halves_cuts_every_link_between_the_sides_both_ways()
    {
        var halves = Enumerable.Range(1, 200).SelectMany(seed => NemesisSchedule.Generate(seed, TimeSpan.FromSeconds(60), 5, [NemesisKind.Partition]))
            .First(s => s.Variant == "halves");
        var cut = halves.Links.ToHashSet();
        var side = Enumerable.Range(0, 5).Where(y => y == 0 || !cut.Contains((0, y))).ToHashSet();
        var other = Enumerable.Range(0, 5).Where(y => !side.Contains(y)).ToHashSet();
        Assert.InRange(Math.Min(side.Count, other.Count), 1, 2);
        foreach (var a in side)
        foreach (var b in other)
        {
            Assert.Contains((a, b), cut);
            Assert.Contains((b, a), cut);
        }
        Assert.Equal(2 * side.Count * other.Count, cut.Count);
    }

    [Theory]
    [InlineData("kill,pause", new[] { NemesisKind.Kill, NemesisKind.Pause })]
    [InlineData("all", new[] { NemesisKind.Kill, NemesisKind.Pause, NemesisKind.Partition, NemesisKind.Postgres, NemesisKind.Transfer, NemesisKind.Member })]
    [InlineData("membership,kill", new[] { NemesisKind.Kill, NemesisKind.Member })]
    [InlineData("none", new NemesisKind[0])]
    [InlineData("pg, partition", new[] { NemesisKind.Partition, NemesisKind.Postgres })]
    public void Nemesis_lists_are_read(string text, NemesisKind[] expected) =>
        Assert.Equal(expected, TortureOptions.ParseNemesis(text, ownPostgres: true));

    [Fact]
    public void Bad_nemesis_names_and_impossible_combinations_are_refused_clearly()
    {
        Assert.Contains("unknown nemesis 'kil'", Assert.Throws<ArgumentException>(() => TortureOptions.ParseNemesis("kil", true)).Message);
        Assert.DoesNotContain(NemesisKind.Postgres, TortureOptions.ParseNemesis("all", ownPostgres: false));
        var external = new TortureOptions { HistoryPath = "h", PostgresConnection = "Host=x", Nemesis = [NemesisKind.Postgres] };
        Assert.Contains("own PostgreSQL", Assert.Throws<ArgumentException>(external.Validate).Message);
        Assert.Throws<ArgumentException>(() => TortureOptions.ParseDuration("soon"));
        Assert.Equal(TimeSpan.FromSeconds(90), TortureOptions.ParseDuration("1.5m"));
        Assert.Equal(TimeSpan.FromMilliseconds(500), TortureOptions.ParseDuration("500ms"));
        Assert.Equal(TimeSpan.FromSeconds(30), TortureOptions.ParseDuration("30"));
    }
}
