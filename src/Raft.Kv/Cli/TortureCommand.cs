using System.Globalization;
using Raft.Kv.Torture;

namespace Raft.Kv.Cli;

/// <summary>'raftv torture': a multi-process cluster under a seeded nemesis, then the checks (see <see cref="TortureRun"/>).</summary>
internal static class TortureCommand
{
    public const string Usage =
        "raftv torture [--duration 30s] [--nodes 3] [--clients 5] [--keys 5] [--nemesis LIST] --history FILE [--seed S]\n" +
        "                [--pg CONNSTRING] [--data DIR] [--check-timeout SECONDS]\n" +
        "  LIST: " + TortureOptions.NemesisNames + "\n" +
        "  exit 0 when every check holds, 1 on a violation";

    public static async Task<int> Run(CommandArgs args, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        TortureOptions options;
        try
        {
            var duration = TortureOptions.ParseDuration(args.Option("--duration") ?? "30s");
            var nodes = args.IntOption("--nodes") ?? 3;
            var clients = args.IntOption("--clients") ?? 5;
            var keys = args.IntOption("--keys") ?? 5;
            var pg = args.Option("--pg");
            var nemesis = TortureOptions.ParseNemesis(args.Option("--nemesis") ?? "all", ownPostgres: pg is null);
            var history = args.Option("--history") ?? throw new CommandArgsException("--history FILE is required");
            var seedText = args.Option("--seed");
            var seed = seedText is null ? Random.Shared.Next(1, int.MaxValue)
                : int.TryParse(seedText, NumberStyles.Integer, CultureInfo.InvariantCulture, out var s) ? s
                : throw new CommandArgsException($"--seed must be an integer, not '{seedText}'");
            var data = args.Option("--data");
            var checkTimeout = args.Option("--check-timeout") is { } ct2 ? TortureOptions.ParseDuration(ct2) : TimeSpan.FromSeconds(120);
            args.EnsureNoneLeft();
            options = new TortureOptions
            {
                Duration = duration, Nodes = nodes, Clients = clients, Keys = keys, Nemesis = nemesis, HistoryPath = history,
                Seed = seed, PostgresConnection = pg, DataDirectory = data, CheckTimeout = checkTimeout,
            };
            options.Validate();
        }
        catch (ArgumentException e)
        {
            throw new CommandArgsException(e.Message);
        }

        var report = await TortureRun.RunAsync(options, stdout, ct);
        report.Print(stdout);
        return report.Passed ? 0 : 1;
    }
}
