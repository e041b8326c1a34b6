/// Configuration changes (etcd's confchange package and raftpb's conversions): validating
/// and applying simple changes and joint consensus to the tracker's configuration and
/// progress, rebuilding a configuration from a ConfState, and the v1/v2 forms of a change.
namespace Raft.Spec

/// The result of a change: the new configuration and progress map, or etcd's error text.
type ChangeResult = Result<TrackerConfig * ProgressMap, string>

module Changer =
    /// What a change applies to: the current tracker and the last log index (new members
    /// start probing there).
    type private Context =
        { Tracker: ProgressTracker
          LastIndex: uint64 }

    /// Both halves of the configuration, rebuilt by each step of a change.
    type private Work = { Cfg: TrackerConfig; Trk: ProgressMap }

    let private isJoint (cfg: TrackerConfig) = JointConfig.isJoint cfg.Voters

    let private setIncoming f (w: Work) =
        { w with Cfg = { w.Cfg with Voters = { w.Cfg.Voters with Incoming = f w.Cfg.Voters.Incoming } } }

    /// The configuration and progress must agree: every member has a progress, learners
    /// are marked as such and are not voters, staged learners are outgoing voters.
    let private checkInvariants (w: Work) : Result<Work, string> =
        let cfg = w.Cfg
        let hasProgress id = w.Trk.ContainsKey id
        let isLearner id = w.Trk[id].IsLearner
        let members = Seq.concat [ JointConfig.ids cfg.Voters; cfg.Learners; cfg.LearnersNext ]
        let errors =
            seq {
                // Ids are checked in ascending order so that the reported one is deterministic.
                for id in Seq.sort members do
                    if not (hasProgress id) then sprintf "no progress for %d" id
                for id in cfg.LearnersNext do
                    if not (cfg.Voters.Outgoing.Contains id) then sprintf "%d is in LearnersNext, but not Voters[1]" id
                    elif isLearner id then sprintf "%d is in LearnersNext, but is already marked as learner" id
                for id in cfg.Learners do
                    if cfg.Voters.Outgoing.Contains id then sprintf "%d is in Learners and Voters[1]" id
                    elif cfg.Voters.Incoming.Contains id then sprintf "%d is in Learners and Voters[0]" id
                    elif not (isLearner id) then sprintf "%d is in Learners, but is not marked as learner" id
                if not (isJoint cfg) then
                    // etcd also requires an empty outgoing half to be nil; here empty is the only form.
                    if not cfg.LearnersNext.IsEmpty then "cfg.LearnersNext must be nil when not joint"
                    if cfg.AutoLeave then "AutoLeave must be false when not joint"
            }
        match Seq.tryHead errors with
        | Some e -> Error e
        | None -> Ok w

    /// The starting point of every change. Like etcd's copy of the config, it does not
    /// carry AutoLeave over: each change decides it afresh.
    let private start (c: Context) : Result<Work, string> =
        checkInvariants { Cfg = { c.Tracker.Config with AutoLeave = false }; Trk = c.Tracker.Progress }

    let private finish (w: Work) : ChangeResult =
        checkInvariants w |> Result.map (fun w -> w.Cfg, w.Trk)

    /// A new member probes from the last index; it counts as recently active so that a
    /// check-quorum round right after adding it does not depose the leader.
    let private initProgress (c: Context) (id: uint64) (isLearner: bool) (w: Work) : Work =
        let w =
            if isLearner then { w with Cfg = { w.Cfg with Learners = Set.add id w.Cfg.Learners } }
            else setIncoming (Set.add id) w
        let pr =
            { Progress.create (max c.LastIndex 1UL) (ProgressTracker.newInflights c.Tracker) isLearner with
                RecentActive = true }
        { w with Trk = Map.add id pr w.Trk }

    /// Removes id as voter or learner of the incoming config; its progress stays while it
    /// is still an outgoing voter.
    let private remove (id: uint64) (w: Work) : Work =
        if not (w.Trk.ContainsKey id) then
            w
        else
            let w = setIncoming (Set.remove id) w
            let cfg =
                { w.Cfg with
                    Learners = Set.remove id w.Cfg.Learners
                    LearnersNext = Set.remove id w.Cfg.LearnersNext }
            let trk = if cfg.Voters.Outgoing.Contains id then w.Trk else Map.remove id w.Trk
            { Cfg = cfg; Trk = trk }

    /// Adds id as a voter of the incoming config, promoting it if it was a learner.
    let private makeVoter (c: Context) (id: uint64) (w: Work) : Work =
        match Map.tryFind id w.Trk with
        | None -> initProgress c id false w
        | Some pr ->
            let w =
                { Cfg =
                    { w.Cfg with
                        Learners = Set.remove id w.Cfg.Learners
                        LearnersNext = Set.remove id w.Cfg.LearnersNext }
                  Trk = Map.add id { pr with IsLearner = false } w.Trk }
            setIncoming (Set.add id) w

    /// Makes id a learner. A voter of the outgoing config cannot be a learner while the
    /// joint config lasts, so it is staged in LearnersNext instead.
    let private makeLearner (c: Context) (id: uint64) (w: Work) : Work =
        match Map.tryFind id w.Trk with
        | None -> initProgress c id true w
        | Some pr when pr.IsLearner -> w
        | Some pr ->
            // Demote: drop it as an incoming voter but keep its progress.
            let w = remove id w
            if w.Cfg.Voters.Outgoing.Contains id then
                { Cfg = { w.Cfg with LearnersNext = Set.add id w.Cfg.LearnersNext }; Trk = Map.add id pr w.Trk }
            else
                { Cfg = { w.Cfg with Learners = Set.add id w.Cfg.Learners }
                  Trk = Map.add id { pr with IsLearner = true } w.Trk }

    /// Applies changes to the incoming config in order. Node id 0 marks a change the
    /// application decided not to apply; updates change nothing here.
    let private apply (c: Context) (ccs: ConfChangeSingle list) (w: Work) : Result<Work, string> =
        let step (w: Work) (cc: ConfChangeSingle) =
            if cc.NodeId = 0UL then
                w
            else
                match cc.Type with
                | ConfChangeAddNode -> makeVoter c cc.NodeId w
                | ConfChangeAddLearnerNode -> makeLearner c cc.NodeId w
                | ConfChangeRemoveNode -> remove cc.NodeId w
                | ConfChangeUpdateNode -> w
        let w = List.fold step w ccs
        if w.Cfg.Voters.Incoming.IsEmpty then Error "removed all voters" else Ok w

    /// Enters joint consensus: the current voters become the outgoing half and the changes
    /// are applied to the incoming half (C_old,new of the Raft thesis).
    let enterJoint (trk: ProgressTracker) (lastIndex: uint64) (autoLeave: bool) (ccs: ConfChangeSingle list) : ChangeResult =
        let c = { Tracker = trk; LastIndex = lastIndex }
        start c
        |> Result.bind (fun w ->
            if isJoint w.Cfg then Error "config is already joint"
            elif w.Cfg.Voters.Incoming.IsEmpty then
                // Changes may start from an empty config (bootstrap), but never jointly.
                Error "can't make a zero-voter config joint"
            else
                Ok { w with Cfg = { w.Cfg with Voters = { w.Cfg.Voters with Outgoing = w.Cfg.Voters.Incoming } } })
        |> Result.bind (apply c ccs)
        |> Result.bind (fun w -> finish { w with Cfg = { w.Cfg with AutoLeave = autoLeave } })

    /// Leaves joint consensus: the outgoing half is dropped, staged learners become
    /// learners, and members of neither the incoming config nor the learners are forgotten.
    let leaveJoint (trk: ProgressTracker) (lastIndex: uint64) : ChangeResult =
        let c = { Tracker = trk; LastIndex = lastIndex }
        start c
        |> Result.bind (fun w ->
            if not (isJoint w.Cfg) then
                Error "can't leave a non-joint config"
            else
                let cfg = w.Cfg
                let learners = Set.union cfg.Learners cfg.LearnersNext
                let trk =
                    cfg.LearnersNext
                    |> Set.fold (fun trk id -> Map.add id { Map.find id trk with IsLearner = true } trk) w.Trk
                let trk =
                    cfg.Voters.Outgoing
                    |> Set.fold
                        (fun trk id ->
                            if cfg.Voters.Incoming.Contains id || learners.Contains id then trk else Map.remove id trk)
                        trk
                finish
                    { Cfg =
                        { Voters = { cfg.Voters with Outgoing = Set.empty }
                          Learners = learners
                          LearnersNext = Set.empty
                          AutoLeave = false }
                      Trk = trk })

    /// Applies changes without joint consensus; they may change the set of voters by at
    /// most one (adding or removing learners is unrestricted).
    let simple (trk: ProgressTracker) (lastIndex: uint64) (ccs: ConfChangeSingle list) : ChangeResult =
        let c = { Tracker = trk; LastIndex = lastIndex }
        start c
        |> Result.bind (fun w ->
            if isJoint w.Cfg then Error "can't apply simple config change in joint config" else Ok w)
        |> Result.bind (apply c ccs)
        |> Result.bind (fun w ->
            let before = c.Tracker.Config.Voters.Incoming
            let after = w.Cfg.Voters.Incoming
            let changed = (Set.difference before after).Count + (Set.difference after before).Count
            if changed > 1 then Error "more than one voter changed without entering joint config" else finish w)

    /// The raftpb enum name of a change type.
    let typeName (t: ConfChangeType) =
        match t with
        | ConfChangeAddNode -> "ConfChangeAddNode"
        | ConfChangeRemoveNode -> "ConfChangeRemoveNode"
        | ConfChangeUpdateNode -> "ConfChangeUpdateNode"
        | ConfChangeAddLearnerNode -> "ConfChangeAddLearnerNode"

    /// "ConfChangeAddNode(1) ConfChangeRemoveNode(2)" (etcd's confchange.Describe).
    let describe (ccs: ConfChangeSingle list) : string =
        ccs |> List.map (fun cc -> sprintf "%s(%d)" (typeName cc.Type) cc.NodeId) |> String.concat " "

module Restore =
    /// Changes that rebuild a ConfState from an empty config: first the ones creating the
    /// config that becomes the outgoing half, then the ones to apply while entering the
    /// joint config (remove every outgoing voter, add the incoming voters, the learners
    /// and the staged learners). Without an outgoing half the first list is empty.
    let toConfChangeSingle (cs: ConfState) : ConfChangeSingle list * ConfChangeSingle list =
        let change t id : ConfChangeSingle = { Type = t; NodeId = id }
        let outgoing = cs.VotersOutgoing |> List.map (change ConfChangeAddNode)
        let incoming =
            [ yield! cs.VotersOutgoing |> List.map (change ConfChangeRemoveNode)
              yield! cs.Voters |> List.map (change ConfChangeAddNode)
              yield! cs.Learners |> List.map (change ConfChangeAddLearnerNode)
              yield! cs.LearnersNext |> List.map (change ConfChangeAddLearnerNode) ]
        outgoing, incoming

    /// Builds the configuration of a ConfState on top of the tracker's (empty) config: one
    /// simple change per member, and for a joint ConfState the outgoing voters first, then
    /// entering the joint config with the incoming changes.
    let restore (trk: ProgressTracker) (lastIndex: uint64) (cs: ConfState) : ChangeResult =
        let outgoing, incoming = toConfChangeSingle cs
        let steps: (ProgressTracker -> ChangeResult) list =
            if outgoing.IsEmpty then
                incoming |> List.map (fun cc trk -> Changer.simple trk lastIndex [ cc ])
            else
                (outgoing |> List.map (fun cc trk -> Changer.simple trk lastIndex [ cc ]))
                @ [ fun trk -> Changer.enterJoint trk lastIndex cs.AutoLeave incoming ]
        let run (acc: Result<ProgressTracker, string>) step =
            acc
            |> Result.bind (fun trk ->
                step trk |> Result.map (fun (cfg, prs) -> { trk with Config = cfg; Progress = prs }))
        List.fold run (Ok trk) steps
        |> Result.map (fun trk -> trk.Config, trk.Progress)

[<CompilationRepresentation(CompilationRepresentationFlags.ModuleSuffix)>]
module ConfChangeI =
    /// The change as a ConfChangeV2 (a v1 change becomes a single change with the same
    /// context and the automatic transition).
    let asV2 (cc: ConfChangeI) : ConfChangeV2 =
        match cc with
        | ConfChangeV1 v1 ->
            { Transition = ConfChangeTransitionAuto
              Changes = [ { Type = v1.Type; NodeId = v1.NodeId } ]
              Context = v1.Context }
        | ConfChangeV2Change v2 -> v2

    /// The v1 change, if that is what it is.
    let asV1 (cc: ConfChangeI) : ConfChange option =
        match cc with
        | ConfChangeV1 v1 -> Some v1
        | ConfChangeV2Change _ -> None

[<CompilationRepresentation(CompilationRepresentationFlags.ModuleSuffix)>]
module ConfChangeV2 =
    /// Whether the change uses joint consensus (more than one change, or requested
    /// explicitly): Some autoLeave when it does, telling whether the joint config is left
    /// automatically; None for a simple change.
    let enterJoint (cc: ConfChangeV2) : bool option =
        if cc.Transition <> ConfChangeTransitionAuto || List.length cc.Changes > 1 then
            match cc.Transition with
            | ConfChangeTransitionAuto
            | ConfChangeTransitionJointImplicit -> Some true
            | ConfChangeTransitionJointExplicit -> Some false
        else
            None

    /// Whether this is the request to leave a joint config: no changes and the automatic
    /// transition (the context may be anything).
    let leaveJoint (cc: ConfChangeV2) : bool =
        cc.Transition = ConfChangeTransitionAuto && List.isEmpty cc.Changes
