using Google.Protobuf;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using Raft.Spec;
using Pb = Raft.Transport.Grpc.Protos;

namespace Raft.Transport.Grpc.Tests;

public class RaftWireMappingTests
{
    private const int Seed = 90210;

    [Fact]
    public void Random_messages_survive_the_wire_unchanged()
    {
        var random = new Random(Seed);
        for (var i = 0; i < 500; i++)
        {
            var message = RandomMessage(random, depth: 0);
            // Through the mapping and through protobuf bytes, as a peer would receive it.
            var bytes = RaftWireMapping.ToWire(message).ToByteArray();
            var back = RaftWireMapping.FromWire(Pb.Message.Parser.ParseFrom(bytes));
            // The message is only formatted on failure: F# %A formatting is slow.
            if (!message.Equals(back)) Assert.Fail($"seed {Seed}, case {i}: {message} came back as {back}");
        }
    }

    [Fact]
    public void Absent_and_empty_snapshots_stay_distinct()
    {
        var none = MessageModule.empty;
        var empty = new Message(MessageType.MsgSnap, 1, 2, 3, 0, 0, [], 0, 0, FSharpOption<Snapshot>.Some(SnapshotModule.empty), false, 0, [], []);
        Assert.Null(RaftWireMapping.ToWire(none).Snapshot);
        Assert.Equal(none, RaftWireMapping.FromWire(Pb.Message.Parser.ParseFrom(RaftWireMapping.ToWire(none).ToByteArray())));
        Assert.Equal(empty, RaftWireMapping.FromWire(Pb.Message.Parser.ParseFrom(RaftWireMapping.ToWire(empty).ToByteArray())));
    }

    [Fact]
    public void Every_message_type_keeps_etcds_number()
    {
        foreach (var type in MessageTypeModule.all)
        {
            var wire = RaftWireMapping.ToWire(new Message(type, 0, 0, 0, 0, 0, [], 0, 0, FSharpOption<Snapshot>.None, false, 0, [], []));
            Assert.Equal(MessageTypeModule.toWire(type), (int)wire.Type);
            Assert.Equal(type.ToString(), "Msg" + wire.Type.ToString()[3..]);
        }
    }

    [Fact]
    public void Unknown_enum_values_are_refused_clearly()
    {
        var badType = new Pb.Message { Type = (Pb.MessageType)99 };
        Assert.Contains("unknown message type 99", Assert.Throws<RaftWireFormatException>(() => RaftWireMapping.FromWire(badType)).Message);
        var badEntry = new Pb.Message();
        badEntry.Entries.Add(new Pb.Entry { Type = (Pb.EntryType)7 });
        Assert.Contains("unknown entry type 7", Assert.Throws<RaftWireFormatException>(() => RaftWireMapping.FromWire(badEntry)).Message);
    }

    private static Message RandomMessage(Random random, int depth)
    {
        var types = MessageTypeModule.all.ToArray();
        return new Message(
            types[random.Next(types.Length)],
            RandomId(random), RandomId(random), RandomId(random), RandomId(random), RandomId(random),
            Enumerable.Range(0, random.Next(4)).Select(_ => RandomEntry(random)).ToArray(),
            RandomId(random), RandomId(random),
            random.Next(3) == 0 ? FSharpOption<Snapshot>.Some(RandomSnapshot(random)) : FSharpOption<Snapshot>.None,
            random.Next(2) == 0,
            RandomId(random),
            RandomBytes(random),
            depth == 0 ? Enumerable.Range(0, random.Next(3)).Select(_ => RandomMessage(random, depth + 1)).ToArray() : []);
    }

    private static Entry RandomEntry(Random random)
    {
        EntryType[] types = [EntryType.EntryNormal, EntryType.EntryConfChange, EntryType.EntryConfChangeV2];
        return new Entry(RandomId(random), RandomId(random), types[random.Next(3)], RandomBytes(random));
    }

    private static Snapshot RandomSnapshot(Random random) =>
        new(RandomBytes(random), new SnapshotMetadata(
            new ConfState(RandomIds(random), RandomIds(random), RandomIds(random), RandomIds(random), random.Next(2) == 0),
            RandomId(random), RandomId(random)));

    private static FSharpList<ulong> RandomIds(Random random) =>
        ListModule.OfSeq(Enumerable.Range(0, random.Next(4)).Select(_ => RandomId(random)).Order());

    /// <summary>Small values mostly, extremes sometimes (varint edges).</summary>
    private static ulong RandomId(Random random) => random.Next(6) switch
    {
        0 => 0,
        1 => ulong.MaxValue,
        2 => (ulong)random.NextInt64(),
        _ => (ulong)random.Next(1000),
    };

    private static byte[] RandomBytes(Random random)
    {
        var bytes = new byte[random.Next(3) == 0 ? 0 : random.Next(64)];
        random.NextBytes(bytes);
        return bytes;
    }
}
