/// The abstraction function from the implementation to the TLA+ spec (tlaplus/Raft.tla):
/// one node's RaftState plus its durable storage, seen as the values of the spec's
/// variables for that node. The model-based suites and the simulator's invariant checks
/// read implementation states only through this view, so the invariants they check are
/// the spec's, stated on the spec's variables.
namespace Raft.Spec

/// A configuration as the spec sees it (Raft.tla's Config record).
type SpecConfig =
    { Voters: Set<uint64>
      /// The outgoing voters while joint; empty otherwise.
      Outgoing: Set<uint64>
      Learners: Set<uint64>
      LearnersNext: Set<uint64>
      AutoLeave: bool }

/// One node's part of the spec's variables (each field is the spec variable of the same
/// name, indexed by this node).
[<NoComparison; CustomEquality>]
type SpecState =
    { Id: uint64
      // persistVars
      CurrentTerm: uint64
      VotedFor: uint64
      /// The entries after SnapshotIndex, durable and unstable: Log[k] has index SnapshotIndex + 1 + k.
      Log: Entry[]
      SnapshotIndex: uint64
      SnapshotTerm: uint64
      /// The configuration of the durable snapshot.
      SnapshotConfig: SpecConfig
      // diskVars
      /// The HardState last written to storage (the spec's hardState).
      HardState: HardState
      /// Entries up to this index are durable (the rest of Log is etcd's unstable tail).
      StableIndex: uint64
      // nodeVars
      Role: StateType
      Leader: uint64
      /// Heard from the leader within the election timeout (etcd's electionElapsed < electionTimeout).
      Heard: bool
      CommitIndex: uint64
      Applied: uint64
      Config: SpecConfig
      // leaderVars (canonical values when not leading / campaigning)
      VotesGranted: Set<uint64>
      MatchIndex: Map<uint64, uint64>
      NextIndex: Map<uint64, uint64>
      RecentActive: Set<uint64>
      PendingConfIndex: uint64
      LeadTransferee: uint64 }

    // Logs hold byte arrays: compare entries by content.
    override s.Equals(o: obj) =
        match o with
        | :? SpecState as t ->
            s.Id = t.Id && s.CurrentTerm = t.CurrentTerm && s.VotedFor = t.VotedFor
            && s.Log.Length = t.Log.Length && Array.forall2 (=) s.Log t.Log
            && s.SnapshotIndex = t.SnapshotIndex && s.SnapshotTerm = t.SnapshotTerm
            && s.SnapshotConfig = t.SnapshotConfig && s.HardState = t.HardState
            && s.StableIndex = t.StableIndex && s.Role = t.Role && s.Leader = t.Leader
            && s.Heard = t.Heard && s.CommitIndex = t.CommitIndex && s.Applied = t.Applied
            && s.Config = t.Config && s.VotesGranted = t.VotesGranted && s.MatchIndex = t.MatchIndex
            && s.NextIndex = t.NextIndex && s.RecentActive = t.RecentActive
            && s.PendingConfIndex = t.PendingConfIndex && s.LeadTransferee = t.LeadTransferee
        | _ -> false

    override s.GetHashCode() = hash (s.Id, s.CurrentTerm, s.Log.Length, s.CommitIndex)

module SpecConfig =
    let ofConfState (cs: ConfState) : SpecConfig =
        { Voters = Set.ofList cs.Voters
          Outgoing = Set.ofList cs.VotersOutgoing
          Learners = Set.ofList cs.Learners
          LearnersNext = Set.ofList cs.LearnersNext
          AutoLeave = cs.AutoLeave }

    let ofTracker (c: TrackerConfig) : SpecConfig =
        { Voters = c.Voters.Incoming
          Outgoing = c.Voters.Outgoing
          Learners = c.Learners
          LearnersNext = c.LearnersNext
          AutoLeave = c.AutoLeave }

    /// Everyone who votes in some half of the configuration (Raft.tla's Voters(c)).
    let voters (c: SpecConfig) = Set.union c.Voters c.Outgoing

    /// A strict majority of each non-empty half (Raft.tla's TrueIsQuorum). Written
    /// independently of Quorum.fs so that checks using it do not trust the code they check.
    let isQuorum (s: Set<uint64>) (c: SpecConfig) =
        let majority (v: Set<uint64>) = (Set.intersect s v).Count >= v.Count / 2 + 1
        majority c.Voters && (c.Outgoing.IsEmpty || majority c.Outgoing)

module SpecState =
    /// The spec's role names.
    let roleName (r: StateType) =
        match r with
        | StateFollower -> "Follower"
        | StatePreCandidate -> "PreCandidate"
        | StateCandidate -> "Candidate"
        | StateLeader -> "Leader"

    let lastIndex (s: SpecState) = s.SnapshotIndex + uint64 s.Log.Length

    /// The term of entry n; None when compacted or beyond the end (Raft.tla's TermAt = -1).
    let termAt (n: uint64) (s: SpecState) : uint64 option =
        if n = s.SnapshotIndex then Some s.SnapshotTerm
        elif n > s.SnapshotIndex && n <= lastIndex s then Some s.Log[int (n - s.SnapshotIndex - 1UL)].Term
        else None

    /// Entry n, when it is in the log (not compacted, not beyond the end).
    let entryAt (n: uint64) (s: SpecState) : Entry option =
        if n > s.SnapshotIndex && n <= lastIndex s then Some s.Log[int (n - s.SnapshotIndex - 1UL)] else None

module SpecMap =
    /// The spec's view of one node: its RaftState (volatile state, unstable log) and the
    /// storage it writes to (durable hard state, stable entries, snapshot). The log is the
    /// node's own view (storage entries overlaid by the unstable tail); the snapshot bounds
    /// are the log's first index, which the unstable tail moves forward while a received
    /// snapshot is not yet written.
    let toSpecState (r: RaftState) (storage: MemoryStorage) : SpecState =
        let log = r.RaftLog
        let first = RaftLog.firstIndex log
        let snapIndex = first - 1UL
        let snapTerm = RaftLog.term snapIndex log |> RaftLog.zeroTermOnOutOfBounds
        let storedSnap = MemoryStorage.snapshot storage
        let leading = r.State = StateLeader
        let progress = r.Trk.Progress
        { Id = r.Id
          CurrentTerm = r.Term
          VotedFor = r.Vote
          Log = RaftLog.allEntries log
          SnapshotIndex = snapIndex
          SnapshotTerm = snapTerm
          SnapshotConfig = SpecConfig.ofConfState storedSnap.Metadata.ConfState
          HardState = MemoryStorage.hardState storage
          // Everything before the unstable offset is in storage; a pending snapshot is not.
          StableIndex =
            if log.Unstable.Snapshot.IsSome then MemoryStorage.lastIndex storage |> min snapIndex
            else log.Unstable.Offset - 1UL
          Role = r.State
          Leader = r.Lead
          Heard = r.ElectionElapsed < r.ElectionTimeout
          CommitIndex = log.Committed
          Applied = log.Applied
          Config = SpecConfig.ofTracker r.Trk.Config
          VotesGranted =
            if r.State = StateCandidate || r.State = StatePreCandidate then
                r.Trk.Votes |> Map.filter (fun _ granted -> granted) |> Map.keys |> Set.ofSeq
            else Set.empty
          MatchIndex = if leading then progress |> Map.map (fun _ pr -> pr.Match) else Map.empty
          NextIndex = if leading then progress |> Map.map (fun _ pr -> pr.Next) else Map.empty
          RecentActive =
            if leading then progress |> Map.filter (fun _ pr -> pr.RecentActive) |> Map.keys |> Set.ofSeq
            else Set.empty
          PendingConfIndex = r.PendingConfIndex
          LeadTransferee = r.LeadTransferee }
