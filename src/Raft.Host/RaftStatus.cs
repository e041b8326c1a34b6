using Raft.Spec;

namespace Raft.Host;

/// <summary>What a node says about itself (etcd's Status): its state and, on a leader, every peer's progress.</summary>
public sealed record RaftStatus(
    ulong Id,
    HardState HardState,
    SoftState SoftState,
    ulong Applied,
    ulong LeadTransferee,
    IReadOnlyList<ulong> Voters,
    IReadOnlyList<ulong> VotersOutgoing,
    IReadOnlyList<ulong> Learners,
    IReadOnlyDictionary<ulong, Progress> Progress,
    Status Core)
{
    public ulong Term => HardState.Term;
    public ulong Commit => HardState.Commit;
    public ulong Lead => SoftState.Lead;
    public StateType Role => SoftState.RaftState;
    public bool IsLeader => SoftState.RaftState.IsStateLeader;

    internal static RaftStatus Of(Status s) => new(
        s.Basic.Id, s.Basic.HardState, s.Basic.SoftState, s.Basic.Applied, s.Basic.LeadTransferee,
        [.. s.Config.Voters.Incoming], [.. s.Config.Voters.Outgoing], [.. s.Config.Learners],
        s.Progress.ToDictionary(kv => kv.Key, kv => kv.Value), s);

    public override string ToString() =>
        $"{Id:x} term={Term} commit={Commit} applied={Applied} lead={Lead:x} {Role} {Core.Config}";
}
