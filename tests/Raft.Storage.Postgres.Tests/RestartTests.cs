using System.Buffers.Binary;
using Raft.Spec;
using Xunit.Abstractions;

namespace Raft.Storage.Postgres.Tests;

/// <summary>
/// PostgreSQL restarts (fast and immediate stops) under a stream of saves: every save that returned
/// is there after reopening, and no save that threw is half-visible.
/// </summary>
public class RestartTests(ITestOutputHelper output)
{
    private const int Seed = 20240806;

    private static Entry[] Batch(long group, ulong first, int count) =>
        Enumerable.Range(0, count).Select(i =>
        {
            var index = first + (ulong)i;
            var data = new byte[16];
            BinaryPrimitives.WriteInt64LittleEndian(data, group);
            BinaryPrimitives.WriteUInt64LittleEndian(data.AsSpan(8), index);
            return new Entry(1, index, EntryType.EntryNormal, data);
        }).ToArray();

    private sealed class Writer(PostgresRaftStorage storage, int seed)
    {
        public ulong Acknowledged;
        public int Saves;
        public int Failures;
        public readonly List<string> FailureKinds = [];

        public async Task RunAsync(CancellationToken stop)
        {
            var random = new Random(seed);
            while (!stop.IsCancellationRequested)
            {
                // Each save carries entries and a hard state whose commit is its last index:
                // after reopening, commit == last index proves the two were stored together.
                var first = storage.State.LastIndex + 1;
                var entries = Batch(storage.GroupId, first, random.Next(1, 9));
                try
                {
                    await storage.SaveAsync(new HardState(1, 1, entries[^1].Index), entries);
                    Acknowledged = entries[^1].Index;
                    Saves++;
                }
                catch (PostgresStorageException e)
                {
                    Failures++;
                    lock (FailureKinds) FailureKinds.Add(e.Kind.ToString());
                    await Task.Delay(20, CancellationToken.None);
                }
            }
        }
    }

    [Fact]
    public async Task Saves_acknowledged_across_fast_and_immediate_restarts_survive_and_none_is_half_visible()
    {
        await using var server = await LocalPostgres.StartAsync(new LocalPostgresOptions(TestDatabase.NewDataDirectory(), Durable: false));
        try
        {
            var cs = server.ConnectionString;
            var retrying = new PostgresRaftStorageOptions { Schema = "restart", RetryTimeout = TimeSpan.FromSeconds(30) };
            var failing = retrying with { RetryTimeout = TimeSpan.Zero };
            var a = await PostgresRaftStorage.OpenAsync(cs, 1, retrying);
            var b = await PostgresRaftStorage.OpenAsync(cs, 2, failing);
            var writerA = new Writer(a, Seed);
            var writerB = new Writer(b, Seed + 1);
            using var stop = new CancellationTokenSource();
            var running = Task.WhenAll(Task.Run(() => writerA.RunAsync(stop.Token)), Task.Run(() => writerB.RunAsync(stop.Token)));

            foreach (var immediate in new[] { false, true, false, true })
            {
                await Task.Delay(400);
                var before = (writerA.Saves, writerB.Saves);
                await server.RestartAsync(immediate);
                await Task.Delay(400);
                Assert.True(before.Item1 > 0 && before.Item2 > 0, $"writers made no progress before a restart (seed {Seed})");
            }
            var savesBeforeEnd = writerA.Saves;
            await Task.Delay(500);
            stop.Cancel();
            await running;
            await a.DisposeAsync();
            await b.DisposeAsync();

            foreach (var (group, writer) in new[] { (1L, writerA), (2L, writerB) })
            {
                await using var reopened = await PostgresRaftStorage.OpenAsync(cs, group, retrying);
                var state = reopened.State;
                var why = $"group {group}: acknowledged {writer.Acknowledged}, stored {state.LastIndex}, commit {state.HardState.Commit}, " +
                          $"{writer.Saves} saves, {writer.Failures} failures [{string.Join(",", writer.FailureKinds.Distinct())}] (seed {Seed})";
                output.WriteLine(why);
                Assert.True(state.LastIndex >= writer.Acknowledged, "an acknowledged save was lost: " + why);
                Assert.True(state.HardState.Commit == state.LastIndex, "entries and hard state of one save were split: " + why);
                var ents = state.StoredEntries;
                Assert.Equal((int)state.LastIndex, ents.Length);
                for (var i = 0; i < ents.Length; i++)
                {
                    Assert.Equal((ulong)i + 1, ents[i].Index);
                    Assert.Equal(group, BinaryPrimitives.ReadInt64LittleEndian(ents[i].Data));
                    Assert.Equal(ents[i].Index, BinaryPrimitives.ReadUInt64LittleEndian(ents[i].Data.AsSpan(8)));
                }
            }
            Assert.True(writerA.Saves > savesBeforeEnd,
                $"the retrying writer did not resume after the restarts: [{string.Join(",", writerA.FailureKinds.Distinct())}] (seed {Seed})");
            Assert.True(writerB.Failures > 0, $"the non-retrying writer never saw a failure: the restarts were not exercised (seed {Seed})");
        }
        finally
        {
            await server.DestroyAsync();
        }
    }
}
