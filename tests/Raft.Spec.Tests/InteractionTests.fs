/// etcd-raft's interaction tests: every file of ../shared/etcd-raft-testdata/interaction run
/// through the harness, output compared verbatim (log lines included).
module Raft.Spec.Tests.InteractionTests

open Xunit
open Raft.Spec.Tests.DataDriven

let files () = suiteFiles "interaction"

[<Theory>]
[<MemberData(nameof files)>]
let ``etcd interaction file`` (file: string) =
    Interaction.runFile (System.IO.Path.Combine(etcdTestdataDir "interaction", file))

/// Our own interaction scenarios (tests/interaction/scenarios), in the same format and with
/// etcd-raft's outputs: elections, pre-vote and check-quorum, transfers, conf changes,
/// snapshots, flow control, async storage writes.
let scenarioDir () =
    System.IO.Path.Combine(repoRoot (), "tests", "interaction", "scenarios")

let scenarios () : seq<obj[]> =
    System.IO.Directory.GetFiles(scenarioDir (), "*.txt")
    |> Array.map (fun path -> System.IO.Path.GetFileName path |> string)
    |> Array.sort
    |> Seq.map (fun f -> [| f :> obj |])

[<Theory>]
[<MemberData(nameof scenarios)>]
let ``interaction scenario`` (file: string) =
    Interaction.runFile (System.IO.Path.Combine(scenarioDir (), file))

// ---- the harness's own outputs (independent of the node's behaviour) ------------------------

/// Runs directives given as "cmd args\ninput" texts and returns each output.
let private run (directives: string list) : string list =
    let text =
        directives |> List.map (fun d -> d + "\n----\n") |> String.concat "\n"
    match parse "inline" text with
    | Error e -> failwith e
    | Ok file ->
        file.Directives
        |> List.mapFold (fun env d -> let env, out = Interaction.handle env d.Data in out, env) (Interaction.newEnv ())
        |> fst

[<Fact>]
let ``commands without output answer ok and errors are printed`` () =
    let outs =
        run [ "log-level none"; "add-nodes 2 voters=(1,2) index=2"; "log-level info"; "propose 1 foo"
              "deliver-msgs 1"; "process-append-thread 1"; "process-apply-thread 1 2"; "frobnicate"
              "log-level chatty"; "report-unreachable 1"; "raft-state"; "status 1"; "raft-log 2" ]
    Assert.Equal<string list>(
        [ "ok"; "ok"; "ok"
          "INFO 1 no leader at term 0; dropping proposal\nraft proposal dropped"
          "no messages\n"
          "no append work to perform"
          "> 1 processing apply thread\n  no apply work to perform\n> 2 processing apply thread\n  no apply work to perform\n"
          "unknown command"
          "log levels must be either of [DEBUG INFO WARN ERROR FATAL NONE]"
          "must specify exactly two node indexes: node on which to report, and reported node"
          "1: StateFollower (Voter) Term:0 Lead:0\n2: StateFollower (Voter) Term:0 Lead:0\n"
          "ok"
          "log is empty: first index=3, last index=2" ],
        outs)

[<Fact>]
let ``a silenced harness still reports errors, alone`` () =
    let outs = run [ "log-level none"; "add-nodes 1 voters=(1) index=1" ]
    Assert.Equal<string list>([ "ok"; "index must be specified as > 1 due to bootstrap" ], outs)
    let outs = run [ "log-level none"; "add-nodes 1 voters=(1,2) index=5"; "propose 1 foo" ]
    Assert.Equal("raft proposal dropped", List.last outs)

[<Fact>]
let ``conf change commands are checked as etcd checks them`` () =
    let outs =
        run [ "log-level none"; "add-nodes 1 voters=(1) index=2"
              "propose-conf-change 1 v1=true\nv2 v3"; "propose-conf-change 1 transition=sideways\nv2"
              "propose-conf-change 1\nv2 x3"; "propose-conf-change 1 color=red\nv2" ]
    Assert.Equal<string list>(
        [ "v1 conf change can only have one operation and no transition"
          "unknown transition sideways"
          "unknown input: x3"
          "unknown command color" ],
        List.skip 2 outs)

[<Fact>]
let ``dropped messages are listed and never reach the node`` () =
    let outs =
        run [ "log-level none"; "add-nodes 3 voters=(1,2,3) index=2"; "campaign 1"; "process-ready 1"
              "log-level debug"; "deliver-msgs drop=(2,3)"; "deliver-msgs 2 3"; "send-snapshot 1 2"
              "deliver-msgs type=MsgApp 2" ]
    Assert.Equal<string list>(
        [ "dropped: 1->2 MsgVote Term:1 Log:1/2\ndropped: 1->3 MsgVote Term:1 Log:1/2\n"
          "no messages\n"
          "1->2 MsgSnap Term:1 Log:0/0\n  Snapshot: Index:2 Term:1 ConfState:Voters:[1 2 3] VotersOutgoing:[] Learners:[] LearnersNext:[] AutoLeave:false"
          "no messages\n" ],
        List.skip 5 outs)
