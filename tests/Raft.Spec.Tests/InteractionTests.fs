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
