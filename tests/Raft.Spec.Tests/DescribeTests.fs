module Raft.Spec.Tests.DescribeTests

open System.Text
open Xunit
open FsCheck
open FsCheck.FSharp
open Raft.Spec

let private bytes (s: string) = Encoding.UTF8.GetBytes s

[<Fact>]
let ``payloads are quoted as Go's %q does`` () =
    Assert.Equal("\"\"", Describe.goQuote [||])
    Assert.Equal("\"prop_1\"", Describe.goQuote (bytes "prop_1"))
    Assert.Equal("\"a\\\"b\\\\c\"", Describe.goQuote (bytes "a\"b\\c"))
    Assert.Equal("\"\\n\\t\\x00\\x7f\"", Describe.goQuote [| 10uy; 9uy; 0uy; 127uy |])
    // Valid UTF-8 stays as it is; a stray byte is written in hex.
    Assert.Equal("\"é\\xff\"", Describe.goQuote (Array.append (bytes "é") [| 0xFFuy |]))

[<Fact>]
let ``printable ASCII is never escaped except quote and backslash`` () =
    let prop (s: string | null) =
        let ascii = (match s with null -> "" | s -> s) |> String.filter (fun c -> c >= ' ' && c < '\127' && c <> '"' && c <> '\\')
        Describe.goQuote (bytes ascii) = "\"" + ascii + "\""
    Check.One(
        Config.QuickThrowOnFailure.WithReplay(Some { Rnd = Rnd(20240601UL, 3UL); Size = None }),
        Prop.forAll (ArbMap.defaults |> ArbMap.arbitrary<string>) prop)

[<Fact>]
let ``entries show conf changes in their short form`` () =
    let v1 = Codec.encodeConfChange { Type = ConfChangeAddNode; NodeId = 2UL; Context = [||]; Id = 0UL }
    let v2 =
        Codec.encodeConfChangeV2
            { Transition = ConfChangeTransitionJointExplicit
              Changes = [ { Type = ConfChangeAddNode; NodeId = 2UL }; { Type = ConfChangeRemoveNode; NodeId = 3UL } ]
              Context = [||] }
    Assert.Equal("1/4 EntryConfChange v2", Describe.entry { Term = 1UL; Index = 4UL; Type = EntryConfChange; Data = v1 })
    Assert.Equal("1/5 EntryConfChangeV2 v2 r3", Describe.entry { Term = 1UL; Index = 5UL; Type = EntryConfChangeV2; Data = v2 })
    // Leaving a joint config is an empty ConfChangeV2: no payload text at all.
    Assert.Equal("2/6 EntryConfChangeV2", Describe.entry { Term = 2UL; Index = 6UL; Type = EntryConfChangeV2; Data = [||] })
    Assert.Equal("1/11 EntryNormal \"\"", Describe.entry (Entry.create 1UL 11UL [||]))
    Assert.Equal("1/4 EntryConfChange v2\n1/11 EntryNormal \"x\"\n",
                 Describe.entries [ { Term = 1UL; Index = 4UL; Type = EntryConfChange; Data = v1 }; Entry.create 1UL 11UL (bytes "x") ])

[<Fact>]
let ``messages are described field by field as etcd does`` () =
    let app =
        { Message.empty with
            Type = MsgApp; From = 1UL; To = 2UL; Term = 1UL; LogTerm = 1UL; Index = 10UL; Commit = 10UL
            Entries = [| Entry.create 1UL 11UL [||] |] }
    Assert.Equal("1->2 MsgApp Term:1 Log:1/10 Commit:10 Entries:[1/11 EntryNormal \"\"]", Describe.message app)
    let rejected =
        { Message.empty with Type = MsgAppResp; From = 2UL; To = 1UL; Term = 1UL; Index = 3UL; Reject = true }
    Assert.Equal("2->1 MsgAppResp Term:1 Log:0/3 Rejected (Hint: 0)", Describe.message rejected)
    let two = { app with Entries = [| Entry.create 1UL 11UL (bytes "a"); Entry.create 1UL 12UL (bytes "b") |] }
    Assert.Equal(
        "1->2 MsgApp Term:1 Log:1/10 Commit:10 Entries:[\n  1/11 EntryNormal \"a\"\n  1/12 EntryNormal \"b\"\n]",
        Describe.message two)

[<Fact>]
let ``storage messages list their responses indented`` () =
    let append =
        { Message.empty with
            Type = MsgStorageAppend; From = 1UL; To = NodeId.LocalAppendThread; Term = 1UL; Commit = 10UL; Vote = 1UL
            Responses =
                [| { Message.empty with Type = MsgVoteResp; From = 1UL; To = 1UL; Term = 1UL }
                   { Message.empty with Type = MsgStorageAppendResp; From = NodeId.LocalAppendThread; To = 1UL; Term = 1UL; LogTerm = 1UL; Index = 11UL } |] }
    Assert.Equal(
        "1->AppendThread MsgStorageAppend Term:1 Log:0/0 Commit:10 Vote:1 Responses:[\n"
        + "  1->1 MsgVoteResp Term:1 Log:0/0\n"
        + "  AppendThread->1 MsgStorageAppendResp Term:1 Log:1/11\n"
        + "]",
        Describe.message append)

[<Fact>]
let ``snapshots inside messages are on their own indented line`` () =
    let snap =
        { Data = [||]
          Metadata = { ConfState = { ConfState.empty with Voters = [ 1UL; 2UL ] }; Index = 4UL; Term = 1UL } }
    let m = { Message.empty with Type = MsgSnap; From = 1UL; To = 2UL; Term = 1UL; Snapshot = Some snap }
    Assert.Equal(
        "1->2 MsgSnap Term:1 Log:0/0\n  Snapshot: Index:4 Term:1 ConfState:Voters:[1 2] VotersOutgoing:[] Learners:[] LearnersNext:[] AutoLeave:false",
        Describe.message m)
    // An empty snapshot (index 0) is not shown.
    Assert.Equal("1->2 MsgSnap Term:1 Log:0/0", Describe.message { m with Snapshot = Some Snapshot.empty })

[<Fact>]
let ``hard and soft state`` () =
    Assert.Equal("Term:1 Vote:1 Commit:3", Describe.hardState { Term = 1UL; Vote = 1UL; Commit = 3UL })
    Assert.Equal("Term:1 Commit:0", Describe.hardState { Term = 1UL; Vote = 0UL; Commit = 0UL })
    Assert.Equal("Lead:0 State:StateCandidate", Describe.softState 0UL StateCandidate)

[<Fact>]
let ``message type names parse back`` () =
    for t in MessageType.all do
        Assert.Equal(Some t, Describe.tryParseMessageType (Describe.messageTypeName t))
    Assert.Equal(None, Describe.tryParseMessageType "MsgNope")
