using Raft.Spec;

namespace Raft.Host;

/// <summary>Building and reading configuration changes from C#.</summary>
public static class ConfChanges
{
    /// <summary>Adds a voter, or promotes a learner to voter.</summary>
    public static ConfChangeI AddNode(ulong id, byte[]? context = null) => Single(ConfChangeType.ConfChangeAddNode, id, context);

    public static ConfChangeI AddLearner(ulong id, byte[]? context = null) => Single(ConfChangeType.ConfChangeAddLearnerNode, id, context);

    public static ConfChangeI RemoveNode(ulong id, byte[]? context = null) => Single(ConfChangeType.ConfChangeRemoveNode, id, context);

    /// <summary>Several changes at once (joint consensus, left automatically).</summary>
    public static ConfChangeI Joint(params ConfChangeSingle[] changes) =>
        ConfChangeI.NewConfChangeV2Change(new ConfChangeV2(
            ConfChangeTransition.ConfChangeTransitionAuto, Microsoft.FSharp.Collections.ListModule.OfArray(changes), []));

    private static ConfChangeI Single(ConfChangeType type, ulong id, byte[]? context) =>
        ConfChangeI.NewConfChangeV1(new ConfChange(type, id, context ?? [], 0UL));

    /// <summary>
    /// The conf change a committed entry carries; false for a normal entry. A conf change
    /// entry that does not decode is corrupt and throws <see cref="InvalidDataException"/>.
    /// </summary>
    public static bool TryGetConfChange(this Entry entry, out ConfChangeI confChange)
    {
        ArgumentNullException.ThrowIfNull(entry);
        var decoded = Codec.confChangeOfEntry(entry);
        if (decoded.IsError)
            throw new InvalidDataException($"entry {entry.Index} (term {entry.Term}) holds a malformed conf change: {decoded.ErrorValue}");
        var option = decoded.ResultValue;
        confChange = option?.Value!;
        return option is not null;
    }
}
