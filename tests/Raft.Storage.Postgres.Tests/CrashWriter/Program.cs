using System.Buffers.Binary;
using Raft.Spec;
using Raft.Storage.Postgres;

// usage: CrashWriter CONNSTRING SCHEMA GROUP SEED
// Prints "opened LAST" once, then "ack INDEX" after every save that returned: the test kills this
// process at any instant and checks that every printed index survived.
if (args.Length != 4)
{
    Console.Error.WriteLine("usage: CrashWriter CONNSTRING SCHEMA GROUP SEED");
    return 2;
}
var group = long.Parse(args[2]);
var random = new Random(int.Parse(args[3]));
await using var storage = await PostgresRaftStorage.OpenAsync(args[0], group, new PostgresRaftStorageOptions { Schema = args[1] });
var stdout = Console.Out;
stdout.WriteLine($"opened {storage.State.LastIndex}");
stdout.Flush();
while (true)
{
    var first = storage.State.LastIndex + 1;
    var entries = Enumerable.Range(0, random.Next(1, 9)).Select(i =>
    {
        var data = new byte[8 + random.Next(0, 300)];
        BinaryPrimitives.WriteUInt64LittleEndian(data, first + (ulong)i);
        return new Entry(1, first + (ulong)i, EntryType.EntryNormal, data);
    }).ToArray();
    // The hard state's commit is the save's last index: after a crash, commit == last index shows
    // the entries and the hard state of each save were stored together.
    await storage.SaveAsync(new HardState(1, 1, entries[^1].Index), entries);
    stdout.WriteLine($"ack {entries[^1].Index}");
    stdout.Flush();
}
