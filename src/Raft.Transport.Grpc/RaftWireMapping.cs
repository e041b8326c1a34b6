using Google.Protobuf;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using Raft.Spec;
using Pb = Raft.Transport.Grpc.Protos;

namespace Raft.Transport.Grpc;

/// <summary>A message from the wire that has no meaning in Raft (an unknown enum value).</summary>
public sealed class RaftWireFormatException(string message) : Exception(message);

/// <summary>
/// Converts between the core's values (Raft.Spec) and their wire form (raft.proto). Byte
/// arrays are shared, not copied: the core never mutates data it was handed.
/// </summary>
public static class RaftWireMapping
{
    public static Pb.Message ToWire(Message message)
    {
        var wire = new Pb.Message
        {
            Type = (Pb.MessageType)MessageTypeModule.toWire(message.Type),
            To = message.To,
            From = message.From,
            Term = message.Term,
            LogTerm = message.LogTerm,
            Index = message.Index,
            Commit = message.Commit,
            Vote = message.Vote,
            Reject = message.Reject,
            RejectHint = message.RejectHint,
            Context = Wrap(message.Context),
        };
        foreach (var entry in message.Entries) wire.Entries.Add(ToWire(entry));
        if (OptionModule.ToObj(message.Snapshot) is { } snapshot) wire.Snapshot = ToWire(snapshot);
        foreach (var response in message.Responses) wire.Responses.Add(ToWire(response));
        return wire;
    }

    public static Message FromWire(Pb.Message wire) =>
        new(
            Check(MessageTypeModule.ofWire((int)wire.Type)),
            wire.To,
            wire.From,
            wire.Term,
            wire.LogTerm,
            wire.Index,
            wire.Entries.Select(FromWire).ToArray(),
            wire.Commit,
            wire.Vote,
            wire.Snapshot is null ? FSharpOption<Snapshot>.None : FSharpOption<Snapshot>.Some(FromWire(wire.Snapshot)),
            wire.Reject,
            wire.RejectHint,
            wire.Context.ToByteArray(),
            wire.Responses.Select(FromWire).ToArray());

    public static Pb.Entry ToWire(Entry entry) => new()
    {
        Term = entry.Term,
        Index = entry.Index,
        Type = (Pb.EntryType)EntryTypeModule.toWire(entry.Type),
        Data = Wrap(entry.Data),
    };

    public static Entry FromWire(Pb.Entry wire) =>
        new(wire.Term, wire.Index, Check(EntryTypeModule.ofWire((int)wire.Type)), wire.Data.ToByteArray());

    public static Pb.Snapshot ToWire(Snapshot snapshot) => new()
    {
        Data = Wrap(snapshot.Data),
        Metadata = ToWire(snapshot.Metadata),
    };

    public static Snapshot FromWire(Pb.Snapshot wire) =>
        new(wire.Data.ToByteArray(), FromWire(wire.Metadata ?? new Pb.SnapshotMetadata()));

    public static Pb.SnapshotMetadata ToWire(SnapshotMetadata metadata) => new()
    {
        ConfState = ToWire(metadata.ConfState),
        Index = metadata.Index,
        Term = metadata.Term,
    };

    public static SnapshotMetadata FromWire(Pb.SnapshotMetadata wire) =>
        new(FromWire(wire.ConfState ?? new Pb.ConfState()), wire.Index, wire.Term);

    public static Pb.ConfState ToWire(ConfState state)
    {
        var wire = new Pb.ConfState { AutoLeave = state.AutoLeave };
        wire.Voters.AddRange(state.Voters);
        wire.Learners.AddRange(state.Learners);
        wire.VotersOutgoing.AddRange(state.VotersOutgoing);
        wire.LearnersNext.AddRange(state.LearnersNext);
        return wire;
    }

    public static ConfState FromWire(Pb.ConfState wire) =>
        new(ListModule.OfSeq(wire.Voters), ListModule.OfSeq(wire.Learners), ListModule.OfSeq(wire.VotersOutgoing),
            ListModule.OfSeq(wire.LearnersNext), wire.AutoLeave);

    private static ByteString Wrap(byte[] bytes) =>
        bytes.Length == 0 ? ByteString.Empty : UnsafeByteOperations.UnsafeWrap(bytes);

    private static T Check<T>(FSharpResult<T, string> result) =>
        result.IsOk ? result.ResultValue : throw new RaftWireFormatException(result.ErrorValue);
}
