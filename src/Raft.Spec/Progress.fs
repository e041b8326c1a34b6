/// The leader's view of one follower (etcd's tracker.Progress): how much of the log it is
/// known to hold, what to send it next, and the replication mode it is in.
namespace Raft.Spec

open System.Text

/// How the leader replicates to a follower.
type ProgressState =
    /// The follower's last index is unknown: send one append per heartbeat interval to find it.
    | StateProbe
    /// Steady state: stream appends optimistically, bounded by the inflights window.
    | StateReplicate
    /// The follower needs a snapshot; appends stop until it is applied or reported failed.
    | StateSnapshot

module ProgressState =
    let toString (s: ProgressState) =
        match s with
        | StateProbe -> "StateProbe"
        | StateReplicate -> "StateReplicate"
        | StateSnapshot -> "StateSnapshot"

/// Invariant: Match < Next. In StateSnapshot, Next = PendingSnapshot + 1 = SentCommit + 1.
type Progress =
    {
      /// Highest index known to be in the follower's log, matching the leader's.
      Match: uint64
      /// Next index to send; (Match, Next) is in flight.
      Next: uint64
      /// Highest commit index sent to the follower (may regress on probing or rejection).
      SentCommit: uint64
      State: ProgressState
      /// In StateSnapshot: the leader's last index when it decided a snapshot was needed.
      PendingSnapshot: uint64
      /// Heard from the follower since the last check-quorum round.
      RecentActive: bool
      /// Appends are throttled: in StateProbe after a probe, in StateReplicate when the
      /// window is full; cleared by a heartbeat response or progress.
      MsgAppFlowPaused: bool
      Inflights: Inflights
      IsLearner: bool }

    /// Whether sending appends is throttled right now.
    member this.IsPaused =
        match this.State with
        | StateProbe
        | StateReplicate -> this.MsgAppFlowPaused
        | StateSnapshot -> true

    /// etcd's form, e.g. "StateReplicate match=5 next=6 learner paused pendingSnap=3 inactive inflight=2[full]".
    override this.ToString() =
        let sb = StringBuilder()
        sb.AppendFormat("{0} match={1} next={2}", ProgressState.toString this.State, this.Match, this.Next) |> ignore
        if this.IsLearner then sb.Append " learner" |> ignore
        if this.IsPaused then sb.Append " paused" |> ignore
        if this.PendingSnapshot > 0UL then sb.AppendFormat(" pendingSnap={0}", this.PendingSnapshot) |> ignore
        if not this.RecentActive then sb.Append " inactive" |> ignore
        if this.Inflights.Count > 0 then
            sb.AppendFormat(" inflight={0}", this.Inflights.Count) |> ignore
            if this.Inflights.Full then sb.Append "[full]" |> ignore
        sb.ToString()

module Progress =
    /// A probing progress with nothing known, the given next index and an empty window.
    let create (next: uint64) (inflights: Inflights) (isLearner: bool) : Progress =
        { Match = 0UL
          Next = next
          SentCommit = 0UL
          State = StateProbe
          PendingSnapshot = 0UL
          RecentActive = false
          MsgAppFlowPaused = false
          Inflights = inflights
          IsLearner = isLearner }

    let toString (pr: Progress) = pr.ToString()
    let isPaused (pr: Progress) = pr.IsPaused

    /// Enters a state with no pause, no pending snapshot and nothing in flight.
    let resetState (state: ProgressState) (pr: Progress) : Progress =
        { pr with
            State = state
            MsgAppFlowPaused = false
            PendingSnapshot = 0UL
            Inflights = Inflights.reset pr.Inflights }

    /// Back to probing from Match+1, or from just after a snapshot the follower has
    /// evidently received (leaving StateSnapshot with a pending snapshot).
    let becomeProbe (pr: Progress) : Progress =
        let next =
            match pr.State with
            | StateSnapshot -> max (pr.Match + 1UL) (pr.PendingSnapshot + 1UL)
            | _ -> pr.Match + 1UL
        let p = resetState StateProbe pr
        { p with Next = next; SentCommit = min p.SentCommit (next - 1UL) }

    let becomeReplicate (pr: Progress) : Progress =
        { resetState StateReplicate pr with Next = pr.Match + 1UL }

    /// Waits for the snapshot at `snapshotIndex`; the follower is then known to be at it.
    let becomeSnapshot (snapshotIndex: uint64) (pr: Progress) : Progress =
        { resetState StateSnapshot pr with
            PendingSnapshot = snapshotIndex
            Next = snapshotIndex + 1UL
            SentCommit = snapshotIndex }

    /// Accounts for an append of `entries` entries (of `bytes` bytes) starting at Next.
    /// In StateReplicate the window grows and a full window pauses the flow; in StateProbe
    /// a non-empty append is a probe and pauses the flow. Never called in StateSnapshot.
    let sentEntries (entries: int) (bytes: uint64) (pr: Progress) : Progress =
        match pr.State with
        | StateReplicate ->
            let pr =
                if entries > 0 then
                    let next = pr.Next + uint64 entries
                    { pr with Next = next; Inflights = Inflights.add (next - 1UL) bytes pr.Inflights }
                else
                    pr
            { pr with MsgAppFlowPaused = pr.Inflights.Full }
        | StateProbe -> if entries > 0 then { pr with MsgAppFlowPaused = true } else pr
        | StateSnapshot -> invalidOp (sprintf "sending append in unhandled state %s" (ProgressState.toString pr.State))

    /// Whether sending commit index `index` could still advance the follower's commit:
    /// only until a commit covering everything sent (Next-1) has gone out.
    let canBumpCommit (index: uint64) (pr: Progress) =
        index > pr.SentCommit && pr.SentCommit < pr.Next - 1UL

    let sentCommit (commit: uint64) (pr: Progress) : Progress = { pr with SentCommit = commit }

    /// An acknowledgement of index `n`: Some updated progress, or None when it is stale
    /// (not above Match).
    let maybeUpdate (n: uint64) (pr: Progress) : Progress option =
        if n <= pr.Match then
            None
        else
            Some
                { pr with
                    Match = n
                    Next = max pr.Next (n + 1UL)
                    MsgAppFlowPaused = false }

    /// A rejection of the append at index `rejected`, with the follower's hint of its last
    /// possibly matching index. Some lowered progress, or None when the rejection is stale
    /// (in StateReplicate: at or below Match; otherwise: not about the last probe, Next-1).
    let maybeDecrTo (rejected: uint64) (matchHint: uint64) (pr: Progress) : Progress option =
        match pr.State with
        | StateReplicate ->
            if rejected <= pr.Match then
                None
            else
                let next = pr.Match + 1UL
                Some { pr with Next = next; SentCommit = min pr.SentCommit (next - 1UL) }
        | _ ->
            if pr.Next - 1UL <> rejected then
                None
            else
#if MUTANT_REJECT_HINT_OFF_BY_ONE // seeded bug (tests/mutants.sh): backs off one entry too far
                let next = max (min rejected matchHint) (pr.Match + 1UL)
#else
                let next = max (min rejected (matchHint + 1UL)) (pr.Match + 1UL)
#endif
                Some
                    { pr with
                        Next = next
                        SentCommit = min pr.SentCommit (next - 1UL)
                        MsgAppFlowPaused = false }

/// Progress of every tracked node by id.
type ProgressMap = Map<uint64, Progress>

[<CompilationRepresentation(CompilationRepresentationFlags.ModuleSuffix)>]
module ProgressMap =
    /// One "id: progress" line per node in id order (ids in decimal, as etcd prints them here).
    let toString (m: ProgressMap) : string =
        let sb = StringBuilder()
        for KeyValue(id, pr) in m do
            sb.AppendFormat("{0}: {1}\n", id, pr) |> ignore
        sb.ToString()
