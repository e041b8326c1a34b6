/// A reader and runner for the test-file format of cockroachdb/datadriven, as etcd-raft's
/// test suites use it. A file is a sequence of directives:
///
///     # comment
///     cmd arg1 key=value key=(v1, v2)
///     optional input lines
///     ----
///     expected output, ended by a blank line
///
/// Output that itself contains blank lines is fenced by doubled separators:
/// "----\n----\n<output>\n----\n----". The parsing rules (argument splitting, which lines
/// end a block, trimming) follow datadriven's reader so that files rewritten by either tool
/// are byte-identical.
module Raft.Spec.Tests.DataDriven

open System
open System.Globalization
open System.IO
open System.Text
open System.Text.RegularExpressions

/// One argument of a command line: `key`, `key=value` or `key=(v1, v2, ...)`.
type CmdArg =
    { Key: string
      Vals: string list }

    /// The argument as it would be written on a command line.
    override this.ToString() =
        match this.Vals with
        | [] -> this.Key
        | [ v ] -> sprintf "%s=%s" this.Key v
        | vs -> sprintf "%s=(%s)" this.Key (String.Join(", ", vs))

/// A directive as the handler sees it.
type TestData =
    {
      /// "file:line" of the command line, for messages.
      Pos: string
      Cmd: string
      CmdArgs: CmdArg list
      /// The lines between the command line and "----", trimmed as a whole.
      Input: string
      /// The expected output, each line ending in "\n" ("" when there is none).
      Expected: string }

/// Raised by argument helpers and handlers for a malformed directive (datadriven's t.Fatal).
exception DirectiveError of string

let fail (d: TestData) fmt =
    Printf.kprintf (fun msg -> raise (DirectiveError(sprintf "%s: %s" d.Pos msg))) fmt

/// Typed access to a directive's arguments, with datadriven's number and bool syntax.
module TestData =
    let tryArg (key: string) (d: TestData) = d.CmdArgs |> List.tryFind (fun a -> a.Key = key)

    let hasArg key d = (tryArg key d).IsSome

    let arg key (d: TestData) =
        match tryArg key d with
        | Some a -> a
        | None -> fail d "missing argument: %s" key

    let private single (d: TestData) (a: CmdArg) =
        match a.Vals with
        | [ v ] -> v
        | vs -> fail d "argument \"%s\" requires 1 values, has %d" a.Key vs.Length

    let parseUInt64 (d: TestData) key (s: string) =
        match UInt64.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture) with
        | true, v -> v
        | _ -> fail d "%s: cannot parse \"%s\" as uint64" key s

    let parseInt (d: TestData) key (s: string) =
        match Int64.TryParse(s, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture) with
        | true, v when v >= int64 Int32.MinValue && v <= int64 Int32.MaxValue -> int v
        | _ -> fail d "%s: cannot parse \"%s\" as int" key s

    /// Go's strconv.ParseBool.
    let parseBool (d: TestData) key (s: string) =
        match s with
        | "1" | "t" | "T" | "true" | "TRUE" | "True" -> true
        | "0" | "f" | "F" | "false" | "FALSE" | "False" -> false
        | _ -> fail d "%s: cannot parse \"%s\" as bool" key s

    let vals key d = (arg key d).Vals
    let string key d = arg key d |> single d
    let uint64 key d = string key d |> parseUInt64 d key
    let int key d = string key d |> parseInt d key
    let bool key d = string key d |> parseBool d key
    let uint64s key d = vals key d |> List.map (parseUInt64 d key)
    let ints key d = vals key d |> List.map (parseInt d key)

    let tryString key d = tryArg key d |> Option.map (single d)
    let tryUInt64 key d = tryString key d |> Option.map (parseUInt64 d key)
    let tryInt key d = tryString key d |> Option.map (parseInt d key)
    let tryBool key d = tryString key d |> Option.map (parseBool d key)
    let tryUInt64s key d = tryArg key d |> Option.map (fun a -> a.Vals |> List.map (parseUInt64 d key))

/// Splits a command line into the command and its arguments. A value in parentheses is cut
/// at top-level commas (nested parentheses stay inside a value) and the spaces after each
/// comma are dropped. None for a blank line.
let parseLine (line: string) : Result<(string * CmdArg list) option, string> =
    let whole = line.Trim()
    if whole = "" then
        Ok None
    else
        // `rest` is the unparsed suffix; an error reports the column where it starts.
        let failAt (rest: string) =
            Error(sprintf "cannot parse directive at column %d: %s" (whole.Length - rest.Length + 1) whole)
        let cutAt (chars: char[]) (rest: string) =
            let i = rest.IndexOfAny chars
            let i = if i < 0 then rest.Length else i
            rest.Substring(0, i), rest.Substring i
        // Values of "(a, b(c, d), e)": returns them and the text after the closing parenthesis.
        let parenthesised (rest: string) =
            let vals = ResizeArray<string>()
            let mutable pos = 1
            let mutable depth = 1
            let mutable start = 1
            let mutable ok = true
            while ok && depth > 0 do
                if pos = rest.Length then
                    ok <- false
                else
                    let c = rest[pos]
                    pos <- pos + 1
                    match c with
                    | ',' when depth = 1 ->
                        vals.Add(rest.Substring(start, pos - 1 - start))
                        while pos < rest.Length && rest[pos] = ' ' do
                            pos <- pos + 1
                        start <- pos
                    | '(' -> depth <- depth + 1
                    | ')' -> depth <- depth - 1
                    | _ -> ()
            if ok then
                vals.Add(rest.Substring(start, pos - 1 - start))
                Some(List.ofSeq vals, rest.Substring(pos).Trim())
            else
                None
        let rec args (acc: CmdArg list) (rest: string) =
            if rest = "" then
                Ok(List.rev acc)
            else
                match cutAt [| ' '; '=' |] rest with
                | "", _ -> failAt rest
                | key, afterKey when afterKey.StartsWith '=' ->
                    let value = afterKey.Substring 1
                    if value = "" || value[0] = ' ' then
                        args ({ Key = key; Vals = [ "" ] } :: acc) (value.Trim())
                    elif value[0] <> '(' then
                        let v, after = cutAt [| ' ' |] value
                        args ({ Key = key; Vals = [ v ] } :: acc) (after.Trim())
                    else
                        match parenthesised value with
                        | Some(vs, after) -> args ({ Key = key; Vals = vs } :: acc) after
                        | None -> failAt value
                | key, afterKey -> args ({ Key = key; Vals = [] } :: acc) (afterKey.Trim())
        let cmd, rest = cutAt [| ' ' |] whole
        args [] (rest.Trim()) |> Result.map (fun a -> Some(cmd, a))

/// A directive with the file lines that precede its "----" (comments and blank lines before
/// it, its command line and its input), kept verbatim for rewriting.
type Directive =
    { Data: TestData
      Lines: string list }

type ParsedFile =
    { Directives: Directive list
      /// Lines after the last directive (comments, blank lines).
      Trailer: string list }

/// Lines as Go's bufio.Scanner yields them: split at "\n", one trailing "\r" dropped, no
/// empty last line for a file that ends in a newline.
let private splitLines (text: string) =
    let lines = text.Split '\n' |> Array.map (fun l -> if l.EndsWith '\r' then l.Substring(0, l.Length - 1) else l)
    if lines.Length > 0 && lines[lines.Length - 1] = "" then Array.sub lines 0 (lines.Length - 1) else lines

/// Reads a whole file into directives; an error names the position of the bad line.
let parse (sourceName: string) (text: string) : Result<ParsedFile, string> =
    let lines = splitLines text
    let directives = ResizeArray<Directive>()
    let pending = ResizeArray<string>()
    let mutable i = 0
    let mutable error = None
    let next () =
        let l = lines[i]
        i <- i + 1
        l
    let more () = i < lines.Length
    // The expected output after "----"; i is on the line after the separator.
    let readExpected () : Result<string, string> =
        let buf = StringBuilder()
        let line (s: string) = buf.Append(s).Append('\n') |> ignore
        let first = if more () then next () else ""
        if first = "----" then
            let mutable result = None
            while result.IsNone && more () do
                let l = next ()
                if l = "----" && more () then
                    let l2 = next ()
                    if l2 = "----" then
                        // The closing fence is followed by a blank line (or the end of the file).
                        if more () && next () <> "" then
                            result <- Some(Error "non-blank line after end of double ---- separator section")
                        else
                            result <- Some(Ok())
                    else
                        line l
                        line l2
                else
                    line l
            match result with
            | Some(Error e) -> Error e
            | _ -> Ok(buf.ToString())
        else
            let mutable l = first
            let mutable fin = false
            while not fin do
                if l.Trim() = "" then
                    fin <- true
                else
                    line l
                    if more () then l <- next () else fin <- true
            Ok(buf.ToString())
    while error.IsNone && more () do
        let raw = next ()
        pending.Add raw
        let pos = sprintf "%s:%d" sourceName i
        let mutable cmdLine = raw.Trim()
        if not (cmdLine.StartsWith '#') then
            // A trailing backslash continues the command line on the next line.
            while cmdLine.EndsWith '\\' && more () do
                let cont = next ()
                pending.Add cont
                cmdLine <- cmdLine.Substring(0, cmdLine.Length - 1) + " " + cont.Trim()
            match parseLine cmdLine with
            | Error e -> error <- Some(sprintf "%s: %s" pos e)
            | Ok None -> ()
            | Ok(Some(cmd, args)) ->
                let input = StringBuilder()
                let mutable separator = false
                while not separator && more () do
                    let l = next ()
                    if l = "----" then
                        separator <- true
                    else
                        pending.Add l
                        input.Append(l).Append('\n') |> ignore
                let expected = if separator then readExpected () else Ok ""
                match expected with
                | Error e -> error <- Some(sprintf "%s: %s" pos e)
                | Ok expected ->
                    let data =
                        { Pos = pos; Cmd = cmd; CmdArgs = args; Input = input.ToString().Trim(); Expected = expected }
                    directives.Add { Data = data; Lines = List.ofSeq pending }
                    pending.Clear()
    match error with
    | Some e -> Error e
    | None -> Ok { Directives = List.ofSeq directives; Trailer = List.ofSeq pending }

/// datadriven normalises a non-empty output to end in a newline before comparing.
let normalizeOutput (actual: string) =
    if actual <> "" && not (actual.EndsWith '\n') then actual + "\n" else actual

let private blankLine = Regex(@"^[\t ]*\n", RegexOptions.Multiline)

/// Whether an output needs the double-separator form.
let hasBlankLine (output: string) = blankLine.IsMatch output

/// A line diff of expected against actual: unchanged lines prefixed "  ", removed "- ", added "+ ".
let diff (expected: string) (actual: string) : string =
    let a = splitLines expected
    let b = splitLines actual
    // Longest common subsequence table, filled from the ends.
    let lcs = Array2D.zeroCreate (a.Length + 1) (b.Length + 1)
    for x in a.Length - 1 .. -1 .. 0 do
        for y in b.Length - 1 .. -1 .. 0 do
            lcs[x, y] <- if a[x] = b[y] then lcs[x + 1, y + 1] + 1 else max lcs[x + 1, y] lcs[x, y + 1]
    let out = StringBuilder()
    let emit (prefix: string) (l: string) = out.Append(prefix).Append(l).Append('\n') |> ignore
    let mutable x = 0
    let mutable y = 0
    while x < a.Length || y < b.Length do
        if x < a.Length && y < b.Length && a[x] = b[y] then
            emit "  " a[x]
            x <- x + 1
            y <- y + 1
        elif y < b.Length && (x = a.Length || lcs[x, y + 1] > lcs[x + 1, y]) then
            emit "+ " b[y]
            y <- y + 1
        else
            emit "- " a[x]
            x <- x + 1
    out.ToString()

/// A directive whose output differed from the expected one.
type Mismatch =
    { Pos: string
      Cmd: string
      Input: string
      Expected: string
      Actual: string
      Diff: string }

type RunResult =
    {
      /// How many directives ran.
      Ran: int
      Mismatches: Mismatch list
      /// A parse error, or an exception of a handler (which stops the file, as t.Fatal does).
      Error: string option
      /// The file with actual outputs in place of the expected ones (datadriven's -rewrite);
      /// None when the run stopped on an error.
      Rewritten: string option }

    member this.Passed = this.Error.IsNone && this.Mismatches.IsEmpty

/// The file with the given outputs in place of the expected ones, laid out as datadriven's
/// rewrite does: the separator, then the output and a blank line, or the fenced form for an
/// output with blank lines; no blank line at the very end.
let rewrite (file: ParsedFile) (outputs: string list) : string =
    let sb = StringBuilder()
    let emit (s: string) = sb.Append(s).Append('\n') |> ignore
    for d, output in List.zip file.Directives outputs do
        d.Lines |> List.iter emit
        emit "----"
        let output = normalizeOutput output
        if hasBlankLine output then
            emit "----"
            sb.Append output |> ignore
            emit "----"
            emit "----"
            emit ""
        else
            // The output ends in a newline, so this adds the blank line that ends the block.
            emit output
    file.Trailer |> List.iter emit
    let s = sb.ToString()
    if s.Length > 2 && s.EndsWith "\n\n" then s.Substring(0, s.Length - 1) else s

/// Runs every directive of a file's text through the handler, in order, and compares.
/// Mismatches do not stop the run; an exception from the handler does.
let runText (sourceName: string) (text: string) (handler: TestData -> string) : RunResult =
    match parse sourceName text with
    | Error e -> { Ran = 0; Mismatches = []; Error = Some e; Rewritten = None }
    | Ok file ->
        let rec go (ds: Directive list) ran mismatches outputs =
            match ds with
            | [] ->
                { Ran = ran
                  Mismatches = List.rev mismatches
                  Error = None
                  Rewritten = Some(rewrite file (List.rev outputs)) }
            | d :: rest ->
                let data = d.Data
                match (try Ok(handler data |> normalizeOutput) with e -> Error e) with
                | Error e ->
                    let msg =
                        match e with
                        | DirectiveError m -> m
                        | e -> sprintf "%s: %s %s\n%O" data.Pos data.Cmd (String.Join(" ", data.CmdArgs)) e
                    { Ran = ran + 1; Mismatches = List.rev mismatches; Error = Some msg; Rewritten = None }
                | Ok actual when actual = data.Expected -> go rest (ran + 1) mismatches (actual :: outputs)
                | Ok actual ->
                    let m =
                        { Pos = data.Pos
                          Cmd = sprintf "%s %s" data.Cmd (String.Join(" ", data.CmdArgs))
                          Input = data.Input
                          Expected = data.Expected
                          Actual = actual
                          Diff = diff data.Expected actual }
                    go rest (ran + 1) (m :: mismatches) (actual :: outputs)
        go file.Directives 0 [] []

let runFile (path: string) (handler: TestData -> string) : RunResult =
    runText path (File.ReadAllText path) handler

let private fileName (path: string) : string =
    match Path.GetFileName path with
    | null -> path
    | name -> name

/// A readable account of a failed run: each mismatch with its position and diff.
let report (r: RunResult) : string =
    let sb = StringBuilder()
    sb.AppendFormat("{0} directives ran, {1} mismatched\n", r.Ran, r.Mismatches.Length) |> ignore
    for m in r.Mismatches do
        sb.AppendFormat("\n{0}: {1}\n", m.Pos, m.Cmd) |> ignore
        if m.Input <> "" then sb.Append(m.Input).Append('\n') |> ignore
        sb.Append("output didn't match expected (- expected, + actual):\n").Append(m.Diff) |> ignore
    r.Error |> Option.iter (fun e -> sb.Append("\nstopped: ").Append(e).Append('\n') |> ignore)
    sb.ToString()

/// Runs a file and fails (with the report) unless every directive matched. When the
/// environment variable DATADRIVEN_REWRITE_DIR is set, the rewritten file is also written
/// there under the same name, for inspecting differences with a diff tool.
let check (path: string) (handler: TestData -> string) : unit =
    let r = runFile path handler
    match Option.ofObj (Environment.GetEnvironmentVariable "DATADRIVEN_REWRITE_DIR"), r.Rewritten with
    | Some dir, Some text when dir <> "" ->
        Directory.CreateDirectory dir |> ignore
        File.WriteAllText(Path.Combine(dir, fileName path), text)
    | _ -> ()
    if not r.Passed then
        failwithf "%s\n%s" path (report r)

/// The repository root (the directory holding RaftVerified.sln), found from the test binary.
let repoRoot () : string =
    let rec up (dir: DirectoryInfo | null) =
        match dir with
        | null -> failwith "RaftVerified.sln not found above the test directory"
        | d when File.Exists(Path.Combine(d.FullName, "RaftVerified.sln")) -> d.FullName
        | d -> up d.Parent
    // Test binaries may be built outside the tree (--artifacts-path), so fall back to the
    // directory this file was compiled from.
    let found (start: string) =
        try Some(up (DirectoryInfo start)) with _ -> None
    match found AppContext.BaseDirectory with
    | Some root -> root
    | None -> up (DirectoryInfo __SOURCE_DIRECTORY__)

/// etcd's example test files, shipped next to the repository (../shared/etcd-raft-testdata).
let etcdTestdataDir (suite: string) : string =
    Path.GetFullPath(Path.Combine(repoRoot (), "..", "shared", "etcd-raft-testdata", suite))

/// The files of a suite sorted by name, as xunit theory data (one file name per row).
let suiteFiles (suite: string) : seq<obj[]> =
    Directory.GetFiles(etcdTestdataDir suite, "*.txt")
    |> Array.map fileName
    |> Array.sort
    |> Seq.map (fun f -> [| f :> obj |])
