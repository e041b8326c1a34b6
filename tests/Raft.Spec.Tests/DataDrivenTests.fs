module Raft.Spec.Tests.DataDrivenTests

open Xunit
open Raft.Spec.Tests.DataDriven

let private args line =
    match parseLine line with
    | Ok(Some(cmd, a)) -> cmd, a |> List.map (fun x -> x.Key, x.Vals)
    | other -> failwithf "unexpected %A" other

[<Fact>]
let ``command lines split into flags, single values and lists`` () =
    let cmd, a = args "committed cfg=(1, 2,3) idx=(100,101, _) autoleave=true flag  x="
    Assert.Equal("committed", cmd)
    Assert.Equal<(string * string list) list>(
        [ "cfg", [ "1"; "2"; "3" ]; "idx", [ "100"; "101"; "_" ]; "autoleave", [ "true" ]; "flag", []; "x", [ "" ] ],
        a)

[<Fact>]
let ``nested parentheses stay inside one value`` () =
    let _, a = args "cmd exprs=(a + (b + c), d + f) k=v=w"
    Assert.Equal<(string * string list) list>([ "exprs", [ "a + (b + c)"; "d + f" ]; "k", [ "v=w" ] ], a)

[<Fact>]
let ``unbalanced parentheses are an error naming the column`` () =
    match parseLine "cmd a=(1, 2" with
    | Error e -> Assert.Equal("cannot parse directive at column 7: cmd a=(1, 2", e)
    | other -> failwithf "unexpected %A" other
    match parseLine "cmd =x" with
    | Error e -> Assert.Equal("cannot parse directive at column 5: cmd =x", e)
    | other -> failwithf "unexpected %A" other

let private sample =
    "# leading comment\n\
     echo a=1\n\
     line one\n\
     line two\n\
     ----\n\
     out1\n\
     out2\n\
     \n\
     # with blank lines\n\
     echo\n\
     ----\n\
     ----\n\
     x\n\
     \n\
     y\n\
     ----\n\
     ----\n\
     \n\
     empty\n\
     ----\n\
     \n\
     long \\\n\
       k=2\n\
     ----\n\
     z\n"

[<Fact>]
let ``blocks carry position, input and expected output`` () =
    match parse "f.txt" sample with
    | Error e -> failwith e
    | Ok file ->
        let ds = file.Directives |> List.map (fun d -> d.Data)
        Assert.Equal(4, ds.Length)
        Assert.Equal("f.txt:2", ds[0].Pos)
        Assert.Equal("line one\nline two", ds[0].Input)
        Assert.Equal("out1\nout2\n", ds[0].Expected)
        Assert.Equal("x\n\ny\n", ds[1].Expected)
        Assert.Equal("", ds[2].Expected)
        Assert.Equal("long", ds[3].Cmd)
        Assert.Equal("k", ds[3].CmdArgs.Head.Key)
        Assert.Equal("z\n", ds[3].Expected)

[<Fact>]
let ``mismatches are collected with position and diff; the rest still runs`` () =
    let r = runText "f.txt" sample (fun d -> if d.Cmd = "echo" && d.Input <> "" then "out1\nOUT2" else d.Expected)
    Assert.Equal(4, r.Ran)
    let m = Assert.Single r.Mismatches
    Assert.Equal("f.txt:2", m.Pos)
    Assert.Equal("  out1\n- out2\n+ OUT2\n", m.Diff)
    Assert.False r.Passed

[<Fact>]
let ``expected outputs reproduce the file when rewritten`` () =
    let r = runText "f.txt" sample (fun d -> d.Expected)
    Assert.True(r.Passed, report r)
    Assert.Equal(Some sample, r.Rewritten)

[<Fact>]
let ``rewriting picks the fenced form only for outputs with blank lines`` () =
    let text = "a\n----\nold\n\nb\n----\n----\nx\n\ny\n----\n----\n\nc\n----\nq\n"
    let outputs = dict [ "a", "1\n\n2"; "b", "flat"; "c", "" ]
    let r = runText "t" text (fun d -> outputs[d.Cmd])
    Assert.Equal(Some "a\n----\n----\n1\n\n2\n----\n----\n\nb\n----\nflat\n\nc\n----\n", r.Rewritten)

[<Fact>]
let ``a handler exception stops the file with the position`` () =
    let r = runText "t" "a\n----\n\nb\n----\n\nc\n----\n" (fun d -> if d.Cmd = "b" then fail d "bad %s" "arg" else "")
    Assert.Equal(2, r.Ran)
    Assert.Equal(Some "t:4: bad arg", r.Error)
    Assert.Equal(None, r.Rewritten)

[<Fact>]
let ``text after a closing double separator must be blank`` () =
    match parse "t" "a\n----\n----\nx\n----\n----\nb\n" with
    | Error e -> Assert.Equal("t:1: non-blank line after end of double ---- separator section", e)
    | Ok _ -> failwith "parsed"

let interactionFiles = suiteFiles "interaction"

[<Theory; MemberData(nameof interactionFiles)>]
let ``etcd's interaction files parse, and echoing the expected outputs rewrites them unchanged`` (file: string) =
    let path = System.IO.Path.Combine(etcdTestdataDir "interaction", file)
    let r = runFile path (fun d -> d.Expected)
    Assert.True(r.Passed, report r)
    Assert.True(r.Ran > 0)
    Assert.Equal(Some(System.IO.File.ReadAllText path), r.Rewritten)
