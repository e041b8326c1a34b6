/// Quorum arithmetic (etcd's quorum package): which log index a group of voters has
/// committed and how an election among them ends, for a single majority and for the
/// joint configurations of joint consensus.
namespace Raft.Spec

open System
open System.Text

/// The outcome of a vote as far as it is known.
type VoteResult =
    /// Neither a quorum of yes nor a quorum of no has been reached yet.
    | VotePending
    /// A quorum voted no.
    | VoteLost
    /// A quorum voted yes.
    | VoteWon

/// The index a voter has acknowledged, or None when nothing is known about it.
type AckedIndexer = uint64 -> uint64 option

/// A set of voter ids deciding by simple majority.
type MajorityConfig = Set<uint64>

/// Two majorities that must both agree. Outside joint consensus Outgoing is empty, and an
/// empty majority agrees with everything, so the joint config behaves like Incoming alone.
type JointConfig =
    { Incoming: MajorityConfig
      Outgoing: MajorityConfig }

module VoteResult =
    let toString (r: VoteResult) =
        match r with
        | VotePending -> "VotePending"
        | VoteLost -> "VoteLost"
        | VoteWon -> "VoteWon"

/// A committed index as etcd prints it: the "no constraint" value of an empty majority is ∞.
module QuorumIndex =
    let toString (i: uint64) = if i = UInt64.MaxValue then "∞" else string i

[<CompilationRepresentation(CompilationRepresentationFlags.ModuleSuffix)>]
module MajorityConfig =
    let empty: MajorityConfig = Set.empty

    /// "(1 2 3)" with ids in hex, as etcd prints them.
    let toString (c: MajorityConfig) =
        "(" + (c |> Seq.map (fun id -> id.ToString "x") |> String.concat " ") + ")"

    /// The ids in ascending order.
    let slice (c: MajorityConfig) : uint64 list = Set.toList c

    /// The largest index acknowledged by a majority. Voters that have acknowledged nothing
    /// count as index 0. An empty config commits everything (UInt64.MaxValue), which lets
    /// it act as the neutral half of a joint config.
    let committedIndex (acked: AckedIndexer) (c: MajorityConfig) : uint64 =
        let n = c.Count
        if n = 0 then
            UInt64.MaxValue
        else
            let idxs = Array.zeroCreate<uint64> n
            let mutable filled = 0
            for id in c do
                match acked id with
                | Some idx ->
                    idxs[filled] <- idx
                    filled <- filled + 1
                | None -> ()
            Array.sortInPlace idxs
            // The (n/2+1)-th largest index is held by a quorum.
            idxs[n - (n / 2 + 1)]

    /// Yes votes are `true`, no votes `false`, missing ids are undecided. An empty config
    /// wins every election, again so that it is neutral in a joint config.
    let voteResult (votes: Map<uint64, bool>) (c: MajorityConfig) : VoteResult =
        if c.IsEmpty then
            VoteWon
        else
            let mutable yes = 0
            let mutable missing = 0
            for id in c do
                match Map.tryFind id votes with
                | Some true -> yes <- yes + 1
                | Some false -> ()
                | None -> missing <- missing + 1
            let q = c.Count / 2 + 1
            if yes >= q then VoteWon
            elif yes + missing >= q then VotePending
            else VoteLost

    /// The table etcd prints for a commit computation: one row per voter (by id) with a bar
    /// whose length is the voter's rank by acknowledged index (equal indexes, equal bars),
    /// or "?" for a voter that acknowledged nothing.
    let describe (acked: AckedIndexer) (c: MajorityConfig) : string =
        if c.IsEmpty then
            "<empty majority quorum>"
        else
            let n = c.Count
            let rows =
                c
                |> Seq.map (fun id ->
                    match acked id with
                    | Some idx -> id, idx, true
                    | None -> id, 0UL, false)
                |> Seq.sortBy (fun (id, idx, _) -> idx, id)
                |> Array.ofSeq
            let bars = Array.zeroCreate<int> n
            for i in 1 .. n - 1 do
                let (_, prev, _) = rows[i - 1]
                let (_, cur, _) = rows[i]
                bars[i] <- if prev < cur then i else bars[i - 1]
            let sb = StringBuilder()
            sb.Append(String(' ', n)).Append("    idx\n") |> ignore
            Array.zip rows bars
            |> Array.sortBy (fun ((id, _, _), _) -> id)
            |> Array.iter (fun ((id, idx, known), bar) ->
                if known then
                    sb.Append(String('x', bar)).Append('>').Append(String(' ', n - bar)) |> ignore
                else
                    sb.Append('?').Append(String(' ', n)) |> ignore
                sb.Append(' ').Append((string idx).PadLeft 5).Append("    (id=").Append(id.ToString "x").Append(")\n")
                |> ignore)
            sb.ToString()

module JointConfig =
    let empty: JointConfig = { Incoming = Set.empty; Outgoing = Set.empty }

    /// A plain majority config seen as a joint config with an empty outgoing half.
    let ofMajority (c: MajorityConfig) : JointConfig = { Incoming = c; Outgoing = Set.empty }

    /// Whether this is a joint configuration proper (the outgoing half is populated).
    let isJoint (c: JointConfig) = not c.Outgoing.IsEmpty

    /// "(1 2 3)&&(1 2)", or just "(1 2 3)" when not joint.
    let toString (c: JointConfig) =
        if c.Outgoing.IsEmpty then
            MajorityConfig.toString c.Incoming
        else
            MajorityConfig.toString c.Incoming + "&&" + MajorityConfig.toString c.Outgoing

    /// The incoming voters, sorted.
    let incomingIds (c: JointConfig) : uint64 list = Set.toList c.Incoming

    /// The outgoing voters, sorted (empty when not joint).
    let outgoingIds (c: JointConfig) : uint64 list = Set.toList c.Outgoing

    /// Every voter of either half.
    let ids (c: JointConfig) : Set<uint64> = Set.union c.Incoming c.Outgoing

    /// The describe table over all voters of both halves.
    let describe (acked: AckedIndexer) (c: JointConfig) = MajorityConfig.describe acked (ids c)

    /// An index is committed when both halves have committed it.
    let committedIndex (acked: AckedIndexer) (c: JointConfig) : uint64 =
        min (MajorityConfig.committedIndex acked c.Incoming) (MajorityConfig.committedIndex acked c.Outgoing)

    /// Both halves must win; a loss in either half is final.
    let voteResult (votes: Map<uint64, bool>) (c: JointConfig) : VoteResult =
        match MajorityConfig.voteResult votes c.Incoming, MajorityConfig.voteResult votes c.Outgoing with
        | a, b when a = b -> a
        | VoteLost, _
        | _, VoteLost -> VoteLost
        | _ -> VotePending
