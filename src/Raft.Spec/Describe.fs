/// Human-readable descriptions of the protocol's values, in exactly the text etcd-raft's
/// Describe* functions produce. The interaction tests compare this text verbatim, so every
/// space and bracket here is behaviour, not taste.
module Raft.Spec.Describe

open System
open System.Globalization
open System.Text

/// Renders the payload of a normal entry (etcd's EntryFormatter).
type EntryFormatter = byte[] -> string

/// Go's printable-rune test (unicode.IsPrint) approximated by .NET's categories:
/// letters, marks, numbers, punctuation and symbols, plus the ASCII space.
let private isPrintable (r: Rune) =
    if r.Value = int ' ' then
        true
    else
        match Rune.GetUnicodeCategory r with
        | UnicodeCategory.UppercaseLetter | UnicodeCategory.LowercaseLetter
        | UnicodeCategory.TitlecaseLetter | UnicodeCategory.ModifierLetter
        | UnicodeCategory.OtherLetter | UnicodeCategory.NonSpacingMark
        | UnicodeCategory.SpacingCombiningMark | UnicodeCategory.EnclosingMark
        | UnicodeCategory.DecimalDigitNumber | UnicodeCategory.LetterNumber
        | UnicodeCategory.OtherNumber | UnicodeCategory.ConnectorPunctuation
        | UnicodeCategory.DashPunctuation | UnicodeCategory.OpenPunctuation
        | UnicodeCategory.ClosePunctuation | UnicodeCategory.InitialQuotePunctuation
        | UnicodeCategory.FinalQuotePunctuation | UnicodeCategory.OtherPunctuation
        | UnicodeCategory.MathSymbol | UnicodeCategory.CurrencySymbol
        | UnicodeCategory.ModifierSymbol | UnicodeCategory.OtherSymbol -> true
        | _ -> false

/// Go's %q of a byte slice (strconv.Quote): a double-quoted string with Go escapes;
/// bytes that are not valid UTF-8 are written as \xNN.
let goQuote (data: byte[]) : string =
    let sb = StringBuilder(data.Length + 2)
    sb.Append('"') |> ignore
    let mutable i = 0
    while i < data.Length do
        let mutable rune = Rune()
        let mutable consumed = 0
        match Rune.DecodeFromUtf8(ReadOnlySpan<byte>(data, i, data.Length - i), &rune, &consumed) with
        | Buffers.OperationStatus.Done ->
            let v = rune.Value
            match v with
            | 0x07 -> sb.Append("\\a") |> ignore
            | 0x08 -> sb.Append("\\b") |> ignore
            | 0x0C -> sb.Append("\\f") |> ignore
            | 0x0A -> sb.Append("\\n") |> ignore
            | 0x0D -> sb.Append("\\r") |> ignore
            | 0x09 -> sb.Append("\\t") |> ignore
            | 0x0B -> sb.Append("\\v") |> ignore
            | 0x22 -> sb.Append("\\\"") |> ignore
            | 0x5C -> sb.Append("\\\\") |> ignore
            | _ when isPrintable rune -> sb.Append(rune.ToString()) |> ignore
            | _ when v < 0x80 -> sb.AppendFormat("\\x{0:x2}", v) |> ignore
            | _ when v < 0x10000 -> sb.AppendFormat("\\u{0:x4}", v) |> ignore
            | _ -> sb.AppendFormat("\\U{0:x8}", v) |> ignore
            i <- i + consumed
        | _ ->
            sb.AppendFormat("\\x{0:x2}", data[i]) |> ignore
            i <- i + 1
    sb.Append('"').ToString()

/// etcd's default entry formatter: the payload as %q.
let defaultFormatter: EntryFormatter = goQuote

let messageTypeName (t: MessageType) : string =
    match t with
    | MsgHup -> "MsgHup"
    | MsgBeat -> "MsgBeat"
    | MsgProp -> "MsgProp"
    | MsgApp -> "MsgApp"
    | MsgAppResp -> "MsgAppResp"
    | MsgVote -> "MsgVote"
    | MsgVoteResp -> "MsgVoteResp"
    | MsgSnap -> "MsgSnap"
    | MsgHeartbeat -> "MsgHeartbeat"
    | MsgHeartbeatResp -> "MsgHeartbeatResp"
    | MsgUnreachable -> "MsgUnreachable"
    | MsgSnapStatus -> "MsgSnapStatus"
    | MsgCheckQuorum -> "MsgCheckQuorum"
    | MsgTransferLeader -> "MsgTransferLeader"
    | MsgTimeoutNow -> "MsgTimeoutNow"
    | MsgReadIndex -> "MsgReadIndex"
    | MsgReadIndexResp -> "MsgReadIndexResp"
    | MsgPreVote -> "MsgPreVote"
    | MsgPreVoteResp -> "MsgPreVoteResp"
    | MsgStorageAppend -> "MsgStorageAppend"
    | MsgStorageAppendResp -> "MsgStorageAppendResp"
    | MsgStorageApply -> "MsgStorageApply"
    | MsgStorageApplyResp -> "MsgStorageApplyResp"
    | MsgForgetLeader -> "MsgForgetLeader"

/// The message type named as in etcd's text ("MsgApp"); None for an unknown name.
let tryParseMessageType (name: string) : MessageType option =
    MessageType.all |> List.tryFind (fun t -> messageTypeName t = name)

let entryTypeName (t: EntryType) : string =
    match t with
    | EntryNormal -> "EntryNormal"
    | EntryConfChange -> "EntryConfChange"
    | EntryConfChangeV2 -> "EntryConfChangeV2"

let stateTypeName (s: StateType) : string =
    match s with
    | StateFollower -> "StateFollower"
    | StateCandidate -> "StateCandidate"
    | StateLeader -> "StateLeader"
    | StatePreCandidate -> "StatePreCandidate"

/// Go's %v of an id slice: "[1 2 3]", "[]" when empty.
let idList (ids: uint64 list) : string =
    "[" + (ids |> List.map string |> String.concat " ") + "]"

/// A message endpoint: hex ids as etcd prints them, with names for nobody and the storage threads.
let target (id: uint64) : string =
    match id with
    | NodeId.None -> "None"
    | NodeId.LocalAppendThread -> "AppendThread"
    | NodeId.LocalApplyThread -> "ApplyThread"
    | _ -> id.ToString("x")

/// The payload of a conf change entry in the "v2 r3" form, or the decoder's error text.
let private confChangePayload (e: Entry) : string =
    match e.Type with
    | EntryConfChange ->
        match Codec.decodeConfChange e.Data with
        // A v1 change is a single change of the same type and node (etcd's AsV2).
        | Ok cc -> ConfChangeText.format [ { Type = cc.Type; NodeId = cc.NodeId } ]
        | Error err -> err
    | EntryConfChangeV2 ->
        match Codec.decodeConfChangeV2 e.Data with
        | Ok cc -> ConfChangeText.format cc.Changes
        | Error err -> err
    | EntryNormal -> ""

/// etcd's DescribeEntry: "term/index Type payload"; conf changes show their changes.
let entryWith (format: EntryFormatter) (e: Entry) : string =
    let payload =
        match e.Type with
        | EntryNormal -> format e.Data
        | EntryConfChange | EntryConfChangeV2 -> confChangePayload e
    let payload = if payload = "" then "" else " " + payload
    sprintf "%d/%d %s%s" e.Term e.Index (entryTypeName e.Type) payload

let entry (e: Entry) : string = entryWith defaultFormatter e

/// etcd's DescribeEntries: one described entry per line, each ending in a newline.
let entriesWith (format: EntryFormatter) (ents: Entry seq) : string =
    let sb = StringBuilder()
    for e in ents do
        sb.Append(entryWith format e).Append('\n') |> ignore
    sb.ToString()

let entries (ents: Entry seq) : string = entriesWith defaultFormatter ents

/// etcd's DescribeHardState: the vote only when there is one.
let hardState (hs: HardState) : string =
    let vote = if hs.Vote <> 0UL then sprintf " Vote:%d" hs.Vote else ""
    sprintf "Term:%d%s Commit:%d" hs.Term vote hs.Commit

/// etcd's DescribeSoftState, from its two fields (the SoftState type lives with the node).
let softState (lead: uint64) (state: StateType) : string =
    sprintf "Lead:%d State:%s" lead (stateTypeName state)

let confState (cs: ConfState) : string =
    sprintf "Voters:%s VotersOutgoing:%s Learners:%s LearnersNext:%s AutoLeave:%s"
        (idList cs.Voters) (idList cs.VotersOutgoing) (idList cs.Learners) (idList cs.LearnersNext)
        (if cs.AutoLeave then "true" else "false")

let snapshot (s: Snapshot) : string =
    sprintf "Index:%d Term:%d ConfState:%s" s.Metadata.Index s.Metadata.Term (confState s.Metadata.ConfState)

/// etcd's describeMessageWithIndent: nested responses are indented two more spaces.
let rec private messageIndented (indent: string) (format: EntryFormatter) (m: Message) (sb: StringBuilder) =
    sb.Append(indent).Append(target m.From).Append("->").Append(target m.To)
      .Append(' ').Append(messageTypeName m.Type)
      .Append(sprintf " Term:%d Log:%d/%d" m.Term m.LogTerm m.Index) |> ignore
    if m.Reject then sb.Append(sprintf " Rejected (Hint: %d)" m.RejectHint) |> ignore
    if m.Commit <> 0UL then sb.Append(sprintf " Commit:%d" m.Commit) |> ignore
    if m.Vote <> 0UL then sb.Append(sprintf " Vote:%d" m.Vote) |> ignore
    match m.Entries with
    | [||] -> ()
    | [| e |] -> sb.Append(" Entries:[").Append(entryWith format e).Append(']') |> ignore
    | ents ->
        sb.Append(" Entries:[") |> ignore
        for e in ents do
            sb.Append('\n').Append(indent).Append("  ").Append(entryWith format e) |> ignore
        sb.Append('\n').Append(indent).Append(']') |> ignore
    match m.Snapshot with
    | Some s when not (Snapshot.isEmpty s) ->
        sb.Append('\n').Append(indent).Append("  Snapshot: ").Append(snapshot s) |> ignore
    | _ -> ()
    if m.Responses.Length > 0 then
        sb.Append(" Responses:[") |> ignore
        for r in m.Responses do
            sb.Append('\n') |> ignore
            messageIndented (indent + "  ") format r sb
        sb.Append('\n').Append(indent).Append(']') |> ignore

/// etcd's DescribeMessage.
let messageWith (format: EntryFormatter) (m: Message) : string =
    let sb = StringBuilder()
    messageIndented "" format m sb
    sb.ToString()

let message (m: Message) : string = messageWith defaultFormatter m

/// etcd's DescribeConfChange: transition and changes spelled out, for log lines.
/// Go's %v of a raftpb.ConfState (protobuf's one-line text form), as etcd prints it in log
/// lines: one "name:value" per element of each repeated field in field-number order, then
/// auto_leave, which etcd always sets.
let confStateProtoText (cs: ConfState) : string =
    [ yield! cs.Voters |> List.map (sprintf "voters:%d")
      yield! cs.Learners |> List.map (sprintf "learners:%d")
      yield! cs.VotersOutgoing |> List.map (sprintf "voters_outgoing:%d")
      yield! cs.LearnersNext |> List.map (sprintf "learners_next:%d")
      sprintf "auto_leave:%b" cs.AutoLeave ]
    |> String.concat " "

let confChange (cc: ConfChangeV2) : string =
    let transition =
        match cc.Transition with
        | ConfChangeTransitionAuto -> "ConfChangeTransitionAuto"
        | ConfChangeTransitionJointImplicit -> "ConfChangeTransitionJointImplicit"
        | ConfChangeTransitionJointExplicit -> "ConfChangeTransitionJointExplicit"
    let changeType t =
        match t with
        | ConfChangeAddNode -> "ConfChangeAddNode"
        | ConfChangeRemoveNode -> "ConfChangeRemoveNode"
        | ConfChangeUpdateNode -> "ConfChangeUpdateNode"
        | ConfChangeAddLearnerNode -> "ConfChangeAddLearnerNode"
    let sb = StringBuilder("transition:" + transition)
    for c in cc.Changes do
        sb.Append(sprintf " changes:{type:%s node_id:%d}" (changeType c.Type) c.NodeId) |> ignore
    if cc.Context.Length > 0 then sb.Append(" context:").Append(goQuote cc.Context) |> ignore
    sb.ToString()
