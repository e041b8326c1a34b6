/// etcd's datadriven suites for quorum arithmetic (quorum/testdata) and configuration
/// changes (confchange/testdata), run on the example files in ../shared. The commands and
/// the extra consistency checks they print follow etcd's quorum and confchange
/// datadriven_test.go, so the output must match byte for byte.
module Raft.Spec.Tests.QuorumDataDrivenTests

open System
open System.IO
open System.Text
open Xunit
open Raft.Spec
open Raft.Spec.Tests.DataDriven

/// Go's %v of a map[uint64]struct{}: "map[1:{} 2:{}]", keys in order.
let private goSetString (ids: Set<uint64>) =
    "map[" + (ids |> Seq.map (sprintf "%d:{}") |> String.concat " ") + "]"

/// A naive committed index: the largest acknowledged index that at least a quorum has
/// acknowledged (or reached beyond); 0 when there is none.
let naiveCommittedIndex (c: MajorityConfig) (acked: AckedIndexer) : uint64 =
    if c.IsEmpty then
        UInt64.MaxValue
    else
        let known = c |> Seq.choose acked |> List.ofSeq
        let q = c.Count / 2 + 1
        known
        |> List.filter (fun idx -> (known |> List.filter (fun other -> other >= idx)).Length >= q)
        |> List.fold max 0UL

/// etcd's `committed` and `vote` commands. cfg= and cfgj= give the two majorities
/// (cfgj=zero: an empty second half), idx= the acknowledged indexes and votes= the votes
/// (y, n, _ for none) of the voters in order of first appearance.
let quorumHandler (d: TestData) : string =
    let mutable joint = false
    let ids = ResizeArray<uint64>()
    let idsj = ResizeArray<uint64>()
    // Both lists use 0 for "no information": acknowledged indexes must not be 0, and votes
    // are 1 (no) or 2 (yes).
    let idxs = ResizeArray<uint64>()
    let votes = ResizeArray<uint64>()
    for arg in d.CmdArgs do
        for v in arg.Vals do
            match arg.Key with
            | "cfg" -> ids.Add(TestData.parseUInt64 d arg.Key v)
            | "cfgj" ->
                joint <- true
                if v = "zero" then
                    if arg.Vals.Length <> 1 then fail d "cannot mix 'zero' into configuration"
                else
                    idsj.Add(TestData.parseUInt64 d arg.Key v)
            | "idx" ->
                if v = "_" then
                    idxs.Add 0UL
                else
                    let n = TestData.parseUInt64 d arg.Key v
                    if n = 0UL then fail d "cannot use 0 as idx"
                    idxs.Add n
            | "votes" ->
                match v with
                | "y" -> votes.Add 2UL
                | "n" -> votes.Add 1UL
                | "_" -> votes.Add 0UL
                | _ -> fail d "unknown vote: %s" v
            | key -> fail d "unknown arg %s" key
    let c: MajorityConfig = Set.ofSeq ids
    let cj: MajorityConfig = Set.ofSeq idsj
    // Values are handed out to voters in order of first appearance across both halves;
    // placeholders (0) then mean "unknown".
    let lookup (values: ResizeArray<uint64>) : Map<uint64, uint64> =
        let order = Seq.append ids idsj |> Seq.distinct |> Seq.truncate values.Count
        Seq.zip order values |> Seq.filter (fun (_, v) -> v <> 0UL) |> Map.ofSeq
    let input = if d.Cmd = "vote" then votes else idxs
    let voters = Set.union c cj
    if voters.Count <> input.Count then
        let shown = input |> Seq.map QuorumIndex.toString |> String.concat " "
        sprintf "error: mismatched input (explicit or _) for voters %s: [%s]" (goSetString voters) shown
    else
        let buf = StringBuilder()
        let out (s: string) = buf.Append s |> ignore
        let idx = QuorumIndex.toString
        match d.Cmd with
        | "committed" ->
            let l = lookup idxs
            let acked: AckedIndexer = fun id -> Map.tryFind id l
            if not joint then
                let committed = MajorityConfig.committedIndex acked c
                out (MajorityConfig.describe acked c)
                // Other ways of computing the same index; any disagreement shows in the output.
                let alt = naiveCommittedIndex c acked
                if alt <> committed then out (sprintf "%s <-- via alternative computation\n" (idx alt))
                let zeroJoint = JointConfig.committedIndex acked { Incoming = c; Outgoing = Set.empty }
                if zeroJoint <> committed then out (sprintf "%s <-- via zero-joint quorum\n" (idx zeroJoint))
                let selfJoint = JointConfig.committedIndex acked { Incoming = c; Outgoing = c }
                if selfJoint <> committed then out (sprintf "%s <-- via self-joint quorum\n" (idx selfJoint))
                // Lowering an index that is below the committed one must not change it.
                let overlay id (value: uint64) : AckedIndexer =
                    fun other -> if other = id then Some value else acked other
                for id in c do
                    let own = acked id |> Option.defaultValue 0UL
                    if committed > own && own > 0UL then
                        let a = MajorityConfig.committedIndex (overlay id (own - 1UL)) c
                        if a <> committed then out (sprintf "%s <-- overlaying %d->%d" (idx a) id own)
                        let a = MajorityConfig.committedIndex (overlay id 0UL) c
                        if a <> committed then out (sprintf "%s <-- overlaying %d->0" (idx a) id)
                out (sprintf "%s\n" (idx committed))
            else
                let cc = { Incoming = c; Outgoing = cj }
                out (JointConfig.describe acked cc)
                let committed = JointConfig.committedIndex acked cc
                let swapped = JointConfig.committedIndex acked { Incoming = cj; Outgoing = c }
                if swapped <> committed then out (sprintf "%s <-- via symmetry\n" (idx swapped))
                out (sprintf "%s\n" (idx committed))
        | "vote" ->
            let l = lookup votes |> Map.map (fun _ v -> v <> 1UL)
            if not joint then
                out (VoteResult.toString (MajorityConfig.voteResult l c) + "\n")
            else
                let r = JointConfig.voteResult l { Incoming = c; Outgoing = cj }
                let swapped = JointConfig.voteResult l { Incoming = cj; Outgoing = c }
                if swapped <> r then out (VoteResult.toString swapped + " <-- via symmetry\n")
                out (VoteResult.toString r + "\n")
        | cmd -> fail d "unknown command: %s" cmd
        buf.ToString()

/// Go's strconv.ParseUint error text for the id part of a token.
let private parseId (s: string) : Result<uint64, string> =
    if s <> "" && s |> Seq.forall Char.IsAsciiDigit then
        match UInt64.TryParse s with
        | true, v -> Ok v
        | _ -> Error(sprintf "strconv.ParseUint: parsing %s: value out of range" ("\"" + s + "\""))
    else
        Error(sprintf "strconv.ParseUint: parsing %s: invalid syntax" ("\"" + s + "\""))

/// The changes of a command's input ("v1 l2 r3 u4"), or the error text etcd's test prints.
let private parseChanges (input: string) : Result<ConfChangeSingle list, string> =
    let toks = input.Trim().Split ' '
    let toks = if toks[0] = "" then [] else List.ofArray toks
    let token (tok: string) =
        if tok.Length < 2 then
            Error(sprintf "unknown token %s" tok)
        else
            let kind =
                match tok[0] with
                | 'v' -> Some ConfChangeAddNode
                | 'l' -> Some ConfChangeAddLearnerNode
                | 'r' -> Some ConfChangeRemoveNode
                | 'u' -> Some ConfChangeUpdateNode
                | _ -> None
            match kind with
            | None -> Error(sprintf "unknown input: %s" tok)
            | Some t -> parseId (tok.Substring 1) |> Result.map (fun id -> { Type = t; NodeId = id })
    let rec go acc toks =
        match toks with
        | [] -> Ok(List.rev acc)
        | t :: rest ->
            match token t with
            | Ok cc -> go (cc :: acc) rest
            | Error e -> Error e
    go [] toks

/// etcd's `simple`, `enter-joint [autoleave=...]` and `leave-joint` commands on one tracker
/// per file (max 10 inflights); the last index grows by one with every command.
let confChangeHandler () : TestData -> string =
    let mutable tracker = ProgressTracker.create 10 0UL
    let mutable lastIndex = 0UL
    fun d ->
        try
            match parseChanges d.Input with
            | Error e -> e
            | Ok ccs ->
                let result =
                    match d.Cmd with
                    | "simple" -> Some(Changer.simple tracker lastIndex ccs)
                    | "enter-joint" ->
                        let autoLeave = if d.CmdArgs.IsEmpty then false else TestData.bool "autoleave" d
                        Some(Changer.enterJoint tracker lastIndex autoLeave ccs)
                    | "leave-joint" ->
                        if ccs.IsEmpty then Some(Changer.leaveJoint tracker lastIndex)
                        else Some(Error "this command takes no input")
                    | _ -> None
                match result with
                | None -> "unknown command"
                | Some(Error e) -> e + "\n"
                | Some(Ok(cfg, prs)) ->
                    tracker <- { tracker with Config = cfg; Progress = prs }
                    sprintf "%s\n%s" (TrackerConfig.toString cfg) (ProgressMap.toString prs)
        finally
            lastIndex <- lastIndex + 1UL

let quorumFiles = suiteFiles "quorum"
let confChangeFiles = suiteFiles "confchange"

/// Runs a file; besides matching every output, the run must have executed directives and
/// its rewrite (which, with all outputs matching, reproduces the file) must equal the file.
let private runSuiteFile (suite: string) (file: string) (handler: TestData -> string) =
    let path = Path.Combine(etcdTestdataDir suite, file)
    let r = runFile path handler
    if not r.Passed then failwithf "%s\n%s" path (report r)
    Assert.True(r.Ran > 0, "no directives in " + path)
    Assert.Equal(Some(File.ReadAllText path), r.Rewritten)

[<Theory; MemberData(nameof quorumFiles)>]
let ``etcd quorum datadriven file`` (file: string) = runSuiteFile "quorum" file quorumHandler

[<Theory; MemberData(nameof confChangeFiles)>]
let ``etcd confchange datadriven file`` (file: string) =
    runSuiteFile "confchange" file (confChangeHandler ())

[<Fact>]
let ``the suites are present`` () =
    // A missing directory would make the theories above vacuous.
    Assert.True(Seq.length quorumFiles >= 4)
    Assert.True(Seq.length confChangeFiles >= 4)
