using System.Diagnostics;
using System.Globalization;
using Raft.Check;

namespace Raft.Kv.Cli;

/// <summary>
/// 'raftv check-history': checks a client history (JSON lines, docs/history-format.md) for
/// linearizability with Raft.Check and prints the verdict per key and overall.
/// Exit status: 0 linearizable, 1 not linearizable, 3 unknown (time budget ran out), 2 usage or format error.
/// </summary>
public static class CheckHistoryCommand
{
    public const string Usage = "raftv check-history FILE [--timeout SECONDS]   (default 60; exit 0 linearizable, 1 not, 3 unknown, 2 bad input)";

    private static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(60);

    public static Task<int> Run(CommandArgs args, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var timeout = TimeoutOption(args.Option("--timeout"));
        var path = args.Positional("history FILE");
        args.EnsureNoneLeft();
        if (!File.Exists(path))
        {
            stderr.WriteLine($"raftv check-history: no such file '{path}'");
            return Task.FromResult(RaftvCli.UsageError);
        }

        var clock = Stopwatch.StartNew();
        Microsoft.FSharp.Core.FSharpResult<Checker.Report, HistoryError> result;
        try
        {
            result = Checker.checkLines(timeout, File.ReadLines(path));
        }
        catch (IOException e)
        {
            stderr.WriteLine($"raftv check-history: cannot read '{path}': {e.Message}");
            return Task.FromResult(RaftvCli.UsageError);
        }
        if (result.IsError)
        {
            var error = result.ErrorValue;
            stderr.WriteLine(error.Line > 0
                ? $"raftv check-history: {path}, line {error.Line}: {error.Message}"
                : $"raftv check-history: {path}: {error.Message}");
            return Task.FromResult(RaftvCli.UsageError);
        }
        var report = result.ResultValue;
        stdout.Write(ReportText.render(report));
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"time: {clock.Elapsed.TotalSeconds:F3} s to read and check {path} (budget {timeout.TotalSeconds:0.###} s)"));
        return Task.FromResult(Checker.exitCode(report.Overall));
    }

    private static TimeSpan TimeoutOption(string? text)
    {
        if (text is null) return DefaultTimeout;
        return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var seconds)
               && seconds > 0 && seconds <= TimeSpan.MaxValue.TotalSeconds / 2
            ? TimeSpan.FromSeconds(seconds)
            : throw new CommandArgsException($"--timeout must be a positive number of seconds, not '{text}'");
    }
}
