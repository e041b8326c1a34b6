/// The leader's bookkeeping of the configuration and of every member (etcd's
/// tracker.ProgressTracker): who votes, who learns, how far each is replicated, and the
/// votes of the current election.
namespace Raft.Spec

open System.Text

/// The active membership. Invariant: Learners intersects neither half of Voters.
type TrackerConfig =
    { Voters: JointConfig
      /// In a joint config: leave it automatically once it is applied.
      AutoLeave: bool
      Learners: Set<uint64>
      /// Voters of the outgoing half that become learners when the joint config is left
      /// (they cannot be learners and voters at the same time before that).
      LearnersNext: Set<uint64> }

    /// etcd's form, e.g. "voters=(1 2 3)&&(1) learners=(4) learners_next=(5) autoleave".
    override this.ToString() =
        let sb = StringBuilder()
        sb.Append("voters=").Append(JointConfig.toString this.Voters) |> ignore
        // etcd keeps these sets nil while empty and prints only non-nil ones.
        if not this.Learners.IsEmpty then
            sb.Append(" learners=").Append(MajorityConfig.toString this.Learners) |> ignore
        if not this.LearnersNext.IsEmpty then
            sb.Append(" learners_next=").Append(MajorityConfig.toString this.LearnersNext) |> ignore
        if this.AutoLeave then sb.Append " autoleave" |> ignore
        sb.ToString()

module TrackerConfig =
    let empty: TrackerConfig =
        { Voters = JointConfig.empty; AutoLeave = false; Learners = Set.empty; LearnersNext = Set.empty }

    let toString (c: TrackerConfig) = c.ToString()

    /// The configuration as persisted in snapshots, ids sorted.
    let confState (c: TrackerConfig) : ConfState =
        { Voters = Set.toList c.Voters.Incoming
          VotersOutgoing = Set.toList c.Voters.Outgoing
          Learners = Set.toList c.Learners
          LearnersNext = Set.toList c.LearnersNext
          AutoLeave = c.AutoLeave }

type ProgressTracker =
    { Config: TrackerConfig
      Progress: ProgressMap
      /// Votes of the current election: true granted, false rejected.
      Votes: Map<uint64, bool>
      /// Inflights limits for new progresses.
      MaxInflight: int
      MaxInflightBytes: uint64 }

module ProgressTracker =
    let create (maxInflight: int) (maxInflightBytes: uint64) : ProgressTracker =
        { Config = TrackerConfig.empty
          Progress = Map.empty
          Votes = Map.empty
          MaxInflight = maxInflight
          MaxInflightBytes = maxInflightBytes }

    /// An empty inflights window with this tracker's limits.
    let newInflights (t: ProgressTracker) = Inflights.create t.MaxInflight t.MaxInflightBytes

    let confState (t: ProgressTracker) = TrackerConfig.confState t.Config

    /// Exactly one voter (the leader itself) and not joint.
    let isSingleton (t: ProgressTracker) =
        t.Config.Voters.Incoming.Count = 1 && t.Config.Voters.Outgoing.IsEmpty

    /// The Match of a tracked node, as the quorum functions look it up.
    let ackedIndex (t: ProgressTracker) : AckedIndexer =
        fun id ->
            match t.Progress.TryGetValue id with
            | true, pr -> Some pr.Match
            | _ -> None

    /// MajorityConfig.committedIndex over the progress map, without an option per voter:
    /// the leader computes it on every acknowledgement.
    let private majorityCommitted (prs: ProgressMap) (voters: MajorityConfig) : uint64 =
        let n = voters.Count
        if n = 0 then System.UInt64.MaxValue
        else
            // Voters without progress count as having acknowledged nothing (index 0).
            let idxs = Array.zeroCreate<uint64> n
            let mutable i = 0
            for id in voters do
                match prs.TryGetValue id with
                | true, pr -> idxs[i] <- pr.Match
                | _ -> ()
                i <- i + 1
            Array.sortInPlace idxs
            idxs[n - (n / 2 + 1)]

    /// The largest index acknowledged by a quorum of voters (both halves when joint);
    /// the same as JointConfig.committedIndex (ackedIndex t) t.Config.Voters.
    let committed (t: ProgressTracker) : uint64 =
#if MUTANT_LEARNER_IN_QUORUM // seeded bug (tests/mutants.sh): learners' acknowledgements count towards commit
        min (majorityCommitted t.Progress (Set.union t.Config.Voters.Incoming t.Config.Learners)) (majorityCommitted t.Progress t.Config.Voters.Outgoing)
#else
#if MUTANT_JOINT_QUORUM_ONE_HALF // seeded bug (tests/mutants.sh): a joint configuration commits on its incoming half alone
        majorityCommitted t.Progress t.Config.Voters.Incoming
#else
        min (majorityCommitted t.Progress t.Config.Voters.Incoming) (majorityCommitted t.Progress t.Config.Voters.Outgoing)
#endif
#endif

    /// Calls `f` for every tracked progress in ascending id order.
    let visit (f: uint64 -> Progress -> unit) (t: ProgressTracker) = Map.iter f t.Progress

    /// Whether a quorum of voters was recently active (learners do not count).
    let quorumActive (t: ProgressTracker) =
        let votes =
            t.Progress
            |> Map.filter (fun _ pr -> not pr.IsLearner)
            |> Map.map (fun _ pr -> pr.RecentActive)
        JointConfig.voteResult votes t.Config.Voters = VoteWon

    /// Voters of both halves, sorted.
    let voterNodes (t: ProgressTracker) : uint64 list = JointConfig.ids t.Config.Voters |> Set.toList

    /// Learners, sorted.
    let learnerNodes (t: ProgressTracker) : uint64 list = Set.toList t.Config.Learners

    /// Prepares for a new round of vote counting.
    let resetVotes (t: ProgressTracker) = { t with Votes = Map.empty }

    /// Records the vote of `id` unless it already voted (the first answer counts).
    let recordVote (id: uint64) (granted: bool) (t: ProgressTracker) =
        if t.Votes.ContainsKey id then t else { t with Votes = Map.add id granted t.Votes }

    /// Granted and rejected votes among tracked voters (informational), and the outcome.
    let tallyVotes (t: ProgressTracker) : int * int * VoteResult =
        let mutable granted = 0
        let mutable rejected = 0
        for KeyValue(id, pr) in t.Progress do
            if not pr.IsLearner then
                match Map.tryFind id t.Votes with
                | Some true -> granted <- granted + 1
                | Some false -> rejected <- rejected + 1
                | None -> ()
        granted, rejected, JointConfig.voteResult t.Votes t.Config.Voters
