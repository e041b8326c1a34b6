/// The application's handle on a Raft node (etcd's RawNode): feed it ticks, proposals and
/// messages; take Ready batches of work (entries and state to persist, entries to apply,
/// messages to send); report back with Advance, or, with async storage writes, by stepping
/// the responses carried by MsgStorageAppend/MsgStorageApply. Every function returns the
/// new node; nothing is mutated.
namespace Raft.Spec

open System.Text

/// A batch of work for the application (etcd's Ready).
type Ready =
    { /// The new soft state, when it changed since the last Ready.
      SoftState: SoftState option
      /// The hard state to persist before sending Messages, when it changed.
      HardState: HardState option
      /// Answered ReadIndex requests.
      ReadStates: ReadState list
      /// Entries to persist before sending Messages.
      Entries: Entry[]
      /// A snapshot to persist.
      Snapshot: Snapshot option
      /// Committed entries to apply (already persisted, unless async storage writes
      /// let them be applied only once durable).
      CommittedEntries: Entry[]
      /// Messages to send once Entries and HardState are durable (with async storage
      /// writes, right away: the ones that must wait travel inside MsgStorageAppend).
      Messages: Message[]
      /// Whether HardState and Entries need a synchronous write.
      MustSync: bool }

/// The result of sending a snapshot (etcd's SnapshotStatus).
type SnapshotStatus =
    | SnapshotFinish
    | SnapshotFailure

/// A member to bootstrap a fresh group with (etcd's Peer).
type Peer = { Id: uint64; Context: byte[] }

/// What a node says about itself (etcd's BasicStatus).
type BasicStatus =
    { Id: uint64
      HardState: HardState
      SoftState: SoftState
      Applied: uint64
      LeadTransferee: uint64 }

/// BasicStatus plus the configuration and, on a leader, every peer's progress (etcd's Status).
type Status =
    { Basic: BasicStatus
      Config: TrackerConfig
      /// Empty unless the node is the leader.
      Progress: ProgressMap }

[<NoComparison; NoEquality>]
type RawNode =
    { Raft: RaftState
      AsyncStorageWrites: bool
      /// The soft and hard state of the last accepted Ready: later Readies carry only changes.
      PrevSoftState: SoftState
      PrevHardState: HardState
      /// Messages to step on Advance (synchronous storage only): the self-addressed
      /// responses and storage acknowledgements of the accepted Ready.
      StepsOnAdvance: Message list }

module RawNode =
    let private localAppendResp (r: RaftState) (rd: Ready) : Message =
        // Index/LogTerm attest the last entry at this term, whenever the unstable log is
        // non-empty (not only when this Ready has entries): an earlier attestation may have
        // been dropped after a term change, and only one at the current term truncates the
        // unstable log (etcd's newStorageAppendRespMsg).
        let last =
            if RaftLog.hasNextOrInProgressUnstableEnts r.RaftLog then Some(RaftLog.lastEntryId r.RaftLog) else None
        { Message.empty with
            Type = MsgStorageAppendResp
            To = r.Id
            From = NodeId.LocalAppendThread
            Term = r.Term
            Index = last |> Option.map (fun id -> id.Index) |> Option.defaultValue 0UL
            LogTerm = last |> Option.map (fun id -> id.Term) |> Option.defaultValue 0UL
            Snapshot = rd.Snapshot }

    /// Raft must hear that entries or a snapshot became durable.
    let private needsAppendResp (r: RaftState) (rd: Ready) =
        RaftLog.hasNextOrInProgressUnstableEnts r.RaftLog || rd.Snapshot.IsSome

    /// Anything to write, or messages that may only leave after the earlier writes.
    let private needsStorageAppend (r: RaftState) (rd: Ready) =
        rd.Entries.Length > 0 || rd.HardState.IsSome || rd.Snapshot.IsSome || not r.MsgsAfterAppend.IsEmpty

    /// The work order for the append thread; the responses go out once it is done.
    let private storageAppend (r: RaftState) (rd: Ready) : Message =
        // Without a hard state update the term/vote/commit fields stay zero, so that the
        // hard state rebuilt from them is empty.
        let hs = defaultArg rd.HardState HardState.empty
        let responses =
            if needsAppendResp r rd then Outbox.add (localAppendResp r rd) r.MsgsAfterAppend else r.MsgsAfterAppend
        { Message.empty with
            Type = MsgStorageAppend
            To = NodeId.LocalAppendThread
            From = r.Id
            Entries = rd.Entries
            Term = hs.Term
            Vote = hs.Vote
            Commit = hs.Commit
            Snapshot = rd.Snapshot
            Responses = Outbox.toArray responses }

    /// Committed entries are applied under no particular term.
    let private localApplyResp (r: RaftState) (ents: Entry[]) : Message =
        { Message.empty with
            Type = MsgStorageApplyResp
            To = r.Id
            From = NodeId.LocalApplyThread
            Entries = ents }

    let private storageApply (r: RaftState) (ents: Entry[]) : Message =
        { Message.empty with
            Type = MsgStorageApply
            To = NodeId.LocalApplyThread
            From = r.Id
            Entries = ents
            Responses = [| localApplyResp r ents |] }

    /// Whether committed entries may be applied before they are durable locally: only when
    /// the application writes synchronously (it persists a Ready before applying it).
    let private applyUnstableEntries (rn: RawNode) = not rn.AsyncStorageWrites

    /// Whether hard state and entry count require a synchronous write (etcd's MustSync):
    /// term, vote and log entries must be durable before answering anyone.
    let mustSync (st: HardState) (prev: HardState) (entries: int) =
        entries <> 0 || st.Vote <> prev.Vote || st.Term <> prev.Term

    /// The pending work, without accepting it (etcd's readyWithoutAccept).
    let private readyWithoutAccept (rn: RawNode) : Ready =
        let r = rn.Raft
        let soft = Raft.softState r
        let hard = Raft.hardState r
        let entries = RaftLog.nextUnstableEnts r.RaftLog
        let rd =
            { SoftState = if soft <> rn.PrevSoftState then Some soft else None
              HardState = if hard <> rn.PrevHardState then Some hard else None
              ReadStates = r.ReadStates
              Entries = entries
              Snapshot = RaftLog.nextUnstableSnapshot r.RaftLog
              CommittedEntries = RaftLog.nextCommittedEnts (applyUnstableEntries rn) r.RaftLog
              Messages = Outbox.toArray r.Msgs
              MustSync = mustSync hard rn.PrevHardState entries.Length }
        if rn.AsyncStorageWrites then
            let append = if needsStorageAppend r rd then [| storageAppend r rd |] else [||]
            let apply = if rd.CommittedEntries.Length > 0 then [| storageApply r rd.CommittedEntries |] else [||]
            { rd with Messages = Array.concat [ rd.Messages; append; apply ] }
        else
            // The waiting messages leave with this Ready (the application persists before
            // sending); those to ourselves are stepped on Advance instead.
            let afterAppend = r.MsgsAfterAppend |> Outbox.toArray |> Array.filter (fun m -> m.To <> r.Id)
            { rd with Messages = Array.append rd.Messages afterAppend }

    /// Records that the application took the Ready (etcd's acceptReady): its changes are
    /// no longer pending and, with synchronous storage, Advance will step what it implies.
    let private acceptReady (rd: Ready) (rn: RawNode) : RawNode =
        let r = rn.Raft
        let steps =
            if rn.AsyncStorageWrites then
                []
            else
                if not rn.StepsOnAdvance.IsEmpty then
                    invalidOp "two accepted Ready structs without call to Advance"
                let selfResponses = r.MsgsAfterAppend |> Outbox.toList |> List.filter (fun m -> m.To = r.Id)
                let appendResp = if needsAppendResp r rd then [ localAppendResp r rd ] else []
                let applyResp =
                    if rd.CommittedEntries.Length > 0 then [ localApplyResp r rd.CommittedEntries ] else []
                selfResponses @ appendResp @ applyResp
        let log = RaftLog.acceptUnstable r.RaftLog
        let log =
            match Array.tryLast rd.CommittedEntries with
            | Some last ->
                RaftLog.acceptApplying last.Index (Codec.entriesSize rd.CommittedEntries) (applyUnstableEntries rn) log
            | None -> log
        let r =
            { r with
                Msgs = Outbox.empty
                MsgsAfterAppend = Outbox.empty
                ReadStates = if rd.ReadStates.IsEmpty then r.ReadStates else []
                RaftLog = log }
            |> Raft.traceEvent "Ready" None None None
        { rn with
            Raft = r
            PrevSoftState = defaultArg rd.SoftState rn.PrevSoftState
            PrevHardState = defaultArg rd.HardState rn.PrevHardState
            StepsOnAdvance = steps }

    // ---- creation ------------------------------------------------------------------------

    /// A node restarted from the storage in the config (etcd's NewRawNode).
    let create (config: Config) : Result<RawNode, string> =
        Raft.create config
        |> Result.map (fun r ->
            { Raft = r
              AsyncStorageWrites = config.AsyncStorageWrites
              PrevSoftState = Raft.softState r
              PrevHardState = Raft.hardState r
              StepsOnAdvance = [] })

    /// Seeds an empty storage's node with a configuration of the given peers, as committed
    /// conf change entries at term 1 (etcd's Bootstrap). Prefer starting from a storage that
    /// already holds a snapshot with the ConfState.
    let bootstrap (peers: Peer list) (rn: RawNode) : Result<RawNode, string> =
        if peers.IsEmpty then
            Error "must provide at least one peer to Bootstrap"
        else
            match rn.Raft.RaftLog.Storage.LastIndex() with
            | Error e -> Error(StorageError.message e)
            | Ok last when last <> 0UL -> Error "can't bootstrap a nonempty Storage"
            | Ok _ ->
                let r = Raft.becomeFollower 1UL NodeId.None rn.Raft
                let entries =
                    peers
                    |> List.mapi (fun i p ->
                        let cc = { Type = ConfChangeAddNode; NodeId = p.Id; Context = p.Context; Id = 0UL }
                        { Term = 1UL; Index = uint64 (i + 1); Type = EntryConfChange; Data = Codec.encodeConfChange cc })
                    |> List.toArray
                let log, lines = RaftLog.append entries r.RaftLog
                // Committed but not applied: the application still sees the conf changes in
                // CommittedEntries and applies them (a second time) itself.
                let r = { Raft.logLines lines r with RaftLog = { log with Committed = uint64 entries.Length } }
                let addNode (acc: Result<RaftState, string>) (p: Peer) =
                    acc
                    |> Result.bind (fun r ->
                        let cc = ConfChangeI.asV2 (ConfChangeV1 { Type = ConfChangeAddNode; NodeId = p.Id; Context = [||]; Id = 0UL })
                        Raft.applyConfChange r cc |> Result.map fst)
                peers
                |> List.fold addNode (Ok r)
                // Nothing is persisted yet: the first Ready must carry the hard state.
                |> Result.map (fun r -> { rn with Raft = r; PrevHardState = HardState.empty })

    // ---- input -----------------------------------------------------------------------------

    let private stepRaft (m: Message) (rn: RawNode) : RawNode * StepError option =
        // The state is kept on errors too: a dropped proposal still logs why.
        let r, result = Step.step rn.Raft m
        { rn with Raft = r }, (match result with Ok() -> None | Error e -> Some e)

    /// Advances the logical clock by one tick.
    let tick (rn: RawNode) : RawNode = { rn with Raft = Step.tick rn.Raft }

    /// Advances only the election clock, skipping heartbeats and elections (etcd's deprecated
    /// TickQuiesced, for groups known to be idle). Misuse subverts Raft; prefer tick.
    let tickQuiesced (rn: RawNode) : RawNode =
        { rn with Raft = { rn.Raft with ElectionElapsed = rn.Raft.ElectionElapsed + 1 } }

    /// Starts an election (MsgHup).
    let campaign (rn: RawNode) : RawNode * StepError option =
        stepRaft { Message.empty with Type = MsgHup } rn

    /// Proposes data to be appended to the log.
    let propose (data: byte[]) (rn: RawNode) : RawNode * StepError option =
        stepRaft
            { Message.empty with
                Type = MsgProp
                From = rn.Raft.Id
                Entries = [| Entry.create 0UL 0UL data |] }
            rn

    /// Proposes a configuration change (etcd's confChangeToMsg: an entry of the matching type).
    let proposeConfChange (cc: ConfChangeI) (rn: RawNode) : RawNode * StepError option =
        let typ, data = Codec.marshalConfChange (Some cc)
        stepRaft
            { Message.empty with
                Type = MsgProp
                Entries = [| { Term = 0UL; Index = 0UL; Type = typ; Data = data } |] }
            rn

    /// Applies a committed configuration change and returns the new configuration. The
    /// application calls this when it applies the entry (unless it rejects the change).
    /// An invalid change is a programming error, as in etcd.
    let applyConfChange (cc: ConfChangeI) (rn: RawNode) : RawNode * ConfState =
        match Raft.applyConfChange rn.Raft (ConfChangeI.asV2 cc) with
        | Ok(r, cs) -> { rn with Raft = r }, cs
        | Error e -> invalidOp e

    /// Steps a message from the network or a storage thread. Local message types are only
    /// accepted from the storage threads; responses only from known peers.
    let step (m: Message) (rn: RawNode) : RawNode * StepError option =
        if MessageType.isLocal m.Type && not (NodeId.isLocalThread m.From) then
            rn, Some StepLocalMsg
        elif MessageType.isResponse m.Type
             && not (NodeId.isLocalThread m.From)
             && not (rn.Raft.Trk.Progress.ContainsKey m.From) then
            rn, Some StepPeerNotFound
        else
            stepRaft m rn

    /// Reports that the last send to a peer failed.
    let reportUnreachable (id: uint64) (rn: RawNode) : RawNode =
        stepRaft { Message.empty with Type = MsgUnreachable; From = id } rn |> fst

    /// Reports whether a snapshot sent to a peer arrived.
    let reportSnapshot (id: uint64) (status: SnapshotStatus) (rn: RawNode) : RawNode =
        stepRaft { Message.empty with Type = MsgSnapStatus; From = id; Reject = (status = SnapshotFailure) } rn |> fst

    /// Asks the leader to hand leadership to the transferee.
    let transferLeader (transferee: uint64) (rn: RawNode) : RawNode =
        stepRaft { Message.empty with Type = MsgTransferLeader; From = transferee } rn |> fst

    /// Makes a follower forget its leader (etcd's ForgetLeader).
    let forgetLeader (rn: RawNode) : RawNode * StepError option =
        stepRaft { Message.empty with Type = MsgForgetLeader } rn

    /// Requests a read index; the answer arrives as a ReadState carrying rctx.
    let readIndex (rctx: byte[]) (rn: RawNode) : RawNode =
        stepRaft { Message.empty with Type = MsgReadIndex; Entries = [| Entry.create 0UL 0UL rctx |] } rn |> fst

    /// Pins the randomized election timeout (tests use this to make elections predictable).
    let setRandomizedElectionTimeout (timeout: int) (rn: RawNode) : RawNode =
        { rn with Raft = Raft.setRandomizedElectionTimeout timeout rn.Raft }

    /// Hands raft the storage as it is now. An immutable storage (MemoryStorage) is a new
    /// value after every write; raft must read the latest one.
    let withStorage (storage: IStorage) (rn: RawNode) : RawNode =
        { rn with Raft = { rn.Raft with RaftLog = RaftLog.withStorage storage rn.Raft.RaftLog } }

    // ---- output ----------------------------------------------------------------------------

    /// The pending work, accepted: the application must handle it and, with synchronous
    /// storage, call advance before the next ready (etcd's Ready).
    let ready (rn: RawNode) : RawNode * Ready =
        let rd = readyWithoutAccept rn
        acceptReady rd rn, rd

    /// Whether ready would return any work (etcd's HasReady).
    let hasReady (rn: RawNode) : bool =
        let r = rn.Raft
        // The soft and hard state compared field by field: hasReady runs after every step.
        let prevSoft, prevHard, commit = rn.PrevSoftState, rn.PrevHardState, r.RaftLog.Committed
        r.Lead <> prevSoft.Lead
        || r.State <> prevSoft.RaftState
        || (not (r.Term = 0UL && r.Vote = 0UL && commit = 0UL)
            && (r.Term <> prevHard.Term || r.Vote <> prevHard.Vote || commit <> prevHard.Commit))
        || RaftLog.hasNextUnstableSnapshot r.RaftLog
        || not r.Msgs.IsEmpty
        || not r.MsgsAfterAppend.IsEmpty
        || RaftLog.hasNextUnstableEnts r.RaftLog
        || RaftLog.hasNextCommittedEnts (applyUnstableEntries rn) r.RaftLog
        || not r.ReadStates.IsEmpty

    /// The application persisted and applied the last Ready: step the responses it implies
    /// (etcd's Advance). With async storage writes the storage threads' responses do this
    /// instead, and calling advance is a programming error.
    let advance (rn: RawNode) : RawNode =
        if rn.AsyncStorageWrites then
            invalidOp "Advance must not be called when using AsyncStorageWrites"
        // Errors are ignored, as etcd does: these are the node's own bookkeeping messages.
        let r = rn.StepsOnAdvance |> List.fold (fun r m -> Step.step r m |> fst) rn.Raft
        { rn with Raft = r; StepsOnAdvance = [] }

    /// Takes the pending log lines (for the host's logger).
    let takeLogs (rn: RawNode) : RawNode * LogLine list =
        let r, logs, traces = Raft.takeOutput rn.Raft
        // The traces stay pending for takeOutput.
        { rn with Raft = { r with Traces = Outbox.ofList traces } }, logs

    /// Whether log lines or trace events are pending (takeOutput would return some).
    let hasOutput (rn: RawNode) : bool = not rn.Raft.Logs.IsEmpty || not rn.Raft.Traces.IsEmpty

    /// Takes the pending log lines and trace events.
    let takeOutput (rn: RawNode) : RawNode * LogLine list * TraceEvent list =
        let r, logs, traces = Raft.takeOutput rn.Raft
        (if obj.ReferenceEquals(r, rn.Raft) then rn else { rn with Raft = r }), logs, traces

    let basicStatus (rn: RawNode) : BasicStatus =
        let r = rn.Raft
        { Id = r.Id
          HardState = Raft.hardState r
          SoftState = Raft.softState r
          Applied = r.RaftLog.Applied
          LeadTransferee = r.LeadTransferee }

    let status (rn: RawNode) : Status =
        let basic = basicStatus rn
        { Basic = basic
          Config = rn.Raft.Trk.Config
          Progress = if basic.SoftState.RaftState = StateLeader then rn.Raft.Trk.Progress else Map.empty }

    // ---- description -------------------------------------------------------------------------

    /// Go's %v of read states: "[{index [ctx bytes]} ...]".
    let private describeReadStates (rs: ReadState list) =
        let one (s: ReadState) =
            sprintf "{%d [%s]}" s.Index (s.RequestCtx |> Array.map string |> String.concat " ")
        "[" + (rs |> List.map one |> String.concat " ") + "]"

    /// etcd's DescribeReady: only the parts with content; "<empty Ready>" for none.
    let describeReadyWith (format: Describe.EntryFormatter) (rd: Ready) : string =
        let sb = StringBuilder()
        rd.SoftState
        |> Option.iter (fun ss -> sb.Append(Describe.softState ss.Lead ss.RaftState).Append('\n') |> ignore)
        rd.HardState
        |> Option.filter (HardState.isEmpty >> not)
        |> Option.iter (fun hs -> sb.Append("HardState ").Append(Describe.hardState hs).Append('\n') |> ignore)
        if not rd.ReadStates.IsEmpty then
            sb.Append("ReadStates ").Append(describeReadStates rd.ReadStates).Append('\n') |> ignore
        if rd.Entries.Length > 0 then
            sb.Append("Entries:\n").Append(Describe.entriesWith format rd.Entries) |> ignore
        rd.Snapshot
        |> Option.filter (Snapshot.isEmpty >> not)
        |> Option.iter (fun s -> sb.Append("Snapshot ").Append(Describe.snapshot s).Append('\n') |> ignore)
        if rd.CommittedEntries.Length > 0 then
            sb.Append("CommittedEntries:\n").Append(Describe.entriesWith format rd.CommittedEntries) |> ignore
        if rd.Messages.Length > 0 then
            sb.Append("Messages:\n") |> ignore
            for m in rd.Messages do
                sb.Append(Describe.messageWith format m).Append('\n') |> ignore
        if sb.Length > 0 then
            sprintf "Ready MustSync=%s:\n%s" (if rd.MustSync then "true" else "false") (sb.ToString())
        else
            "<empty Ready>"

    let describeReady (rd: Ready) : string = describeReadyWith Describe.defaultFormatter rd
