/// Runs etcd-raft interaction test files through the harness and reports per file:
///
///     Raft.Interaction.Runner [--ignore-logs] [--diff] [--rewrite] [--all] FILE...
///
/// One line per file, "PASS path" or "FAIL path", then "N passed, N failed"; exit code 0
/// only when every file passed (and at least one ran).
module Raft.Interaction.Runner.Program

open System
open System.IO
open Raft.Spec.Tests
open Raft.Spec.Tests.DataDriven

type Options =
    { IgnoreLogs: bool
      ShowDiff: bool
      Rewrite: bool
      All: bool
      Files: string list }

let private usage =
    "usage: interaction.sh [--ignore-logs] [--diff] [--rewrite] [--all] FILE...\n"
    + "  --ignore-logs  compare without log lines (INFO, DEBUG, WARN, ERROR), on both sides\n"
    + "  --diff         show the first differences of each failing file\n"
    + "  --rewrite      print each file with the actual outputs in place of the expected ones\n"
    + "  --all          every file of ../shared/etcd-raft-testdata/interaction"

let rec private parseArgs (o: Options) (args: string list) : Result<Options, string> =
    match args with
    | [] -> Ok { o with Files = List.rev o.Files }
    | "--ignore-logs" :: rest -> parseArgs { o with IgnoreLogs = true } rest
    | "--diff" :: rest -> parseArgs { o with ShowDiff = true } rest
    | "--rewrite" :: rest -> parseArgs { o with Rewrite = true } rest
    | "--all" :: rest -> parseArgs { o with All = true } rest
    | ("-h" | "--help") :: _ -> Error usage
    | a :: _ when a.StartsWith "-" -> Error(sprintf "unknown option %s\n%s" a usage)
    | f :: rest -> parseArgs { o with Files = f :: o.Files } rest

/// A line the raft logger wrote; the harness indents them inside stabilize and friends.
let private isLogLine (line: string) =
    let t = line.TrimStart()
    [ "INFO"; "DEBUG"; "WARN"; "ERROR" ]
    |> List.exists (fun lvl -> t = lvl || t.StartsWith(lvl + " "))

let private dropLogLines (text: string) =
    text.Split('\n') |> Array.filter (isLogLine >> not) |> String.concat "\n"

type FileResult =
    { Path: string
      Passed: bool
      /// The first differences, as shown by --diff.
      Details: string
      Rewritten: string option }

/// How many mismatching directives --diff shows per file.
let private shownMismatches = 3

let runFile (ignoreLogs: bool) (path: string) : FileResult =
    let text = File.ReadAllText path
    match parse path text with
    | Error e -> { Path = path; Passed = false; Details = e + "\n"; Rewritten = None }
    | Ok file ->
        let comparable (s: string) = if ignoreLogs then dropLogLines s else s
        let details = Text.StringBuilder()
        let mutable env = Interaction.newEnv ()
        let mutable mismatches = 0
        let mutable stopped = false
        let outputs = ResizeArray<string>()
        for d in file.Directives do
            if not stopped then
                let data = d.Data
                match (try Ok(Interaction.handle env data) with e -> Error e) with
                | Error e ->
                    stopped <- true
                    let msg =
                        match e with
                        | DirectiveError m -> m
                        | e -> sprintf "%s: %s\n%O" data.Pos data.Cmd e
                    details.Append("stopped: ").Append(msg).Append('\n') |> ignore
                | Ok(env', output) ->
                    env <- env'
                    let actual = normalizeOutput output
                    outputs.Add actual
                    if comparable actual <> comparable data.Expected then
                        mismatches <- mismatches + 1
                        if mismatches <= shownMismatches then
                            let line = String.Join(" ", data.Cmd :: List.map string data.CmdArgs)
                            details
                                .AppendFormat("{0}: {1}\n", data.Pos, line)
                                .Append("output didn't match expected (- expected, + actual):\n")
                                .Append(diff (comparable data.Expected) (comparable actual))
                            |> ignore
        if mismatches > shownMismatches then
            details.AppendFormat("... and {0} more mismatching directives\n", mismatches - shownMismatches) |> ignore
        { Path = path
          Passed = not stopped && mismatches = 0
          Details = details.ToString()
          Rewritten = if stopped then None else Some(rewrite file (List.ofSeq outputs)) }

let private allFiles () =
    let dir = etcdTestdataDir "interaction"
    Directory.GetFiles(dir, "*.txt") |> Array.sort |> List.ofArray

[<EntryPoint>]
let main argv =
    let empty = { IgnoreLogs = false; ShowDiff = false; Rewrite = false; All = false; Files = [] }
    match parseArgs empty (List.ofArray argv) with
    | Error e ->
        eprintfn "%s" e
        2
    | Ok o ->
        let files = (if o.All then allFiles () else []) @ o.Files
        if files.IsEmpty then
            eprintfn "%s" usage
            2
        else
            let results =
                files
                |> List.map (fun path ->
                    let r =
                        if File.Exists path then runFile o.IgnoreLogs path
                        else { Path = path; Passed = false; Details = "no such file\n"; Rewritten = None }
                    printfn "%s %s" (if r.Passed then "PASS" else "FAIL") path
                    if o.ShowDiff && not r.Passed then printf "%s" r.Details
                    if o.Rewrite then
                        match r.Rewritten with
                        | Some text -> printf "%s" text
                        | None -> printf "%s" r.Details
                    r)
            let passed = results |> List.filter (fun r -> r.Passed) |> List.length
            printfn "%d passed, %d failed" passed (results.Length - passed)
            if passed = results.Length then 0 else 1
