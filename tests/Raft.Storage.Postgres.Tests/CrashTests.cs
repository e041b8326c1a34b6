using System.Buffers.Binary;
using System.Diagnostics;
using Xunit.Abstractions;

namespace Raft.Storage.Postgres.Tests;

/// <summary>
/// kill -9 of a process in the middle of its saves: every index it printed as acknowledged is
/// stored, the log is contiguous, and no save is half there.
/// </summary>
public class CrashTests(ITestOutputHelper output)
{
    private const int Seed = 8080;

    [Fact]
    public async Task Every_acknowledged_index_survives_kill_9_of_the_writer()
    {
        var cs = await TestDatabase.ConnectionStringAsync();
        var schema = TestDatabase.NewSchema();
        var random = new Random(Seed);
        ulong acknowledged = 0;
        for (var round = 0; round < 3; round++)
        {
            var killAfterAcks = random.Next(50, 400);
            var (opened, acked) = await RunAndKillAsync(cs, schema, Seed + round, killAfterAcks);
            output.WriteLine($"round {round}: opened at {opened}, killed after ack {acked} (seed {Seed})");
            Assert.True(opened >= acknowledged, $"round {round}: reopened at {opened}, below the acknowledged {acknowledged} (seed {Seed})");
            acknowledged = acked;

            await using var storage = await PostgresRaftStorage.OpenAsync(cs, 1, new PostgresRaftStorageOptions { Schema = schema });
            var state = storage.State;
            Assert.True(state.LastIndex >= acknowledged, $"acknowledged {acknowledged} but stored only up to {state.LastIndex} (seed {Seed})");
            Assert.True(state.HardState.Commit == state.LastIndex,
                $"half a save is visible: commit {state.HardState.Commit}, last index {state.LastIndex} (seed {Seed})");
            var ents = state.StoredEntries;
            for (var i = 0; i < ents.Length; i++)
            {
                Assert.Equal((ulong)i + 1, ents[i].Index);
                Assert.Equal(ents[i].Index, BinaryPrimitives.ReadUInt64LittleEndian(ents[i].Data));
            }
        }
    }

    /// <summary>Starts the writer, waits for some acknowledgements, kills it; returns where it opened and its last ack.</summary>
    private static async Task<(ulong Opened, ulong LastAck)> RunAndKillAsync(string cs, string schema, int seed, int killAfterAcks)
    {
        var dir = AppContext.BaseDirectory;
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        // The project reference copies the writer (with its runtimeconfig) next to the tests.
        foreach (var a in new[] { Path.Combine(dir, "CrashWriter.dll"), cs, schema, "1", seed.ToString() })
            psi.ArgumentList.Add(a);
        using var process = Process.Start(psi)!;
        var stderr = process.StandardError.ReadToEndAsync();
        ulong opened = 0, last = 0;
        var acks = 0;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            while (acks < killAfterAcks)
            {
                var line = await process.StandardOutput.ReadLineAsync(timeout.Token)
                           ?? throw new Xunit.Sdk.XunitException($"the writer exited early ({process.ExitCode}): {await stderr}");
                if (line.StartsWith("opened ", StringComparison.Ordinal)) opened = ulong.Parse(line[7..]);
                else if (line.StartsWith("ack ", StringComparison.Ordinal)) { last = ulong.Parse(line[4..]); acks++; }
            }
        }
        finally
        {
            process.Kill(entireProcessTree: true); // SIGKILL: no cleanup, no flush
            await process.WaitForExitAsync(CancellationToken.None);
        }
        // Acknowledgements printed before the kill landed still count: read what is left in the pipe.
        while (await process.StandardOutput.ReadLineAsync(CancellationToken.None) is { } rest)
            if (rest.StartsWith("ack ", StringComparison.Ordinal)) last = ulong.Parse(rest[4..]);
        return (opened, last);
    }
}
