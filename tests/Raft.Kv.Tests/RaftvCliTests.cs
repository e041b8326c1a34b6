using Raft.Kv.Cli;

namespace Raft.Kv.Tests;

public class RaftvCliTests
{
    private static async Task<(int Exit, string Out, string Err)> RunAsync(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var exit = await RaftvCli.RunAsync(args, stdout, stderr, CancellationToken.None);
        return (exit, stdout.ToString(), stderr.ToString());
    }

    [Fact]
    public async Task Version_prints_the_assembly_version()
    {
        var (exit, output, _) = await RunAsync("version");
        Assert.Equal(0, exit);
        Assert.StartsWith("raftv 0.1.0", output);
    }

    [Fact]
    public async Task Help_lists_every_command()
    {
        var (exit, output, _) = await RunAsync("--help");
        Assert.Equal(0, exit);
        Assert.Contains("version", output);
        Assert.Contains("pg", output);
    }

    [Fact]
    public async Task Unknown_commands_are_usage_errors()
    {
        var (exit, _, err) = await RunAsync("frobnicate");
        Assert.Equal(RaftvCli.UsageError, exit);
        Assert.Contains("unknown command 'frobnicate'", err);
    }

    [Fact]
    public async Task Unexpected_arguments_are_refused_not_ignored()
    {
        var (exit, _, err) = await RunAsync("version", "--verbose");
        Assert.Equal(RaftvCli.UsageError, exit);
        Assert.Contains("unexpected argument '--verbose'", err);
    }

    [Fact]
    public async Task Missing_option_values_are_reported()
    {
        var (exit, _, err) = await RunAsync("pg", "start", "--data");
        Assert.Equal(RaftvCli.UsageError, exit);
        Assert.Contains("--data needs a value", err);
    }
}
