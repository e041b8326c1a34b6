/// The state graphs of tlaplus/graph (written by tlaplus/graph/regenerate.sh): every state
/// of a small model of Raft.tla and every step between them, with the step's action.
module Raft.Conformance.Graph

open System
open System.IO
open System.IO.Compression
open System.Security.Cryptography
open System.Text.Json
open Raft.Conformance.SpecState

/// An argument of an action label: a server or value name, a number, or a conf change.
type Arg =
    | AName of string
    | ANum of uint64
    | ACC of SCC

/// An edge label: Raft.tla's action and its arguments. Deliveries, drops and duplicates of
/// messages are labelled "Next" by TLC (their message is found by comparing the states).
type Action =
    { Name: string
      Args: Arg list }

    override a.ToString() =
        let arg x =
            match x with
            | AName s -> s
            | ANum n -> string n
            | ACC cc -> showCC cc
        if a.Args.IsEmpty then a.Name else sprintf "%s(%s)" a.Name (a.Args |> List.map arg |> String.concat ", ")

/// Compares arrays of value ids by content (a node is the same whenever its components are).
type private IdsComparer() =
    interface Collections.Generic.IEqualityComparer<int[]> with
        member _.Equals(a, b) = Collections.StructuralComparisons.StructuralEqualityComparer.Equals(a, b)
        member _.GetHashCode(a) =
            let mutable h = 17
            for x in a do
                h <- h * 31 + x
            h

type Graph =
    { Model: string
      /// SHA-256 of each spec file the graph came from, by path relative to tlaplus/.
      Stamp: Map<string, string>
      /// The model's constants (as JSON values).
      Config: Map<string, JsonElement>
      Servers: string list
      Actions: Action[]
      Init: int
      /// Whether TLC explored the state's successors (it satisfies the model's constraint).
      Expanded: bool[]
      /// Per state: its successors and the action leading there.
      Out: (int * int)[][]
      /// The variables that are functions of the servers, and the others.
      NodeVars: string[]
      OtherVars: string[]
      /// Per state: the value ids of the other variables, and per server of its components.
      OtherIds: int[][]
      NodeIds: int[][][]
      /// Decoded values by variable and id.
      Values: Map<string, VarValue[]>
      /// Nodes already built, per server: equal components give the same NodeS object.
      NodeCache: Collections.Concurrent.ConcurrentDictionary<int[], NodeS>[] }

    member g.StateCount = g.Expanded.Length

/// The cluster state of a state id, built from the stored values.
let private build (g: Graph) (id: int) : ClusterS =
    let nodes =
        g.Servers
        |> List.mapi (fun k server ->
            let ids = g.NodeIds[id][k]
            let node =
                g.NodeCache[k].GetOrAdd(
                    ids,
                    fun ids ->
                        let byName = g.NodeVars |> Array.mapi (fun v name -> name, g.Values[name][ids[v]]) |> Map.ofArray
                        assembleNode server (fun name -> byName[name])
                )
            server, node)
        |> Map.ofList
    let others = g.OtherVars |> Array.mapi (fun v name -> name, g.Values[name][g.OtherIds[id][v]]) |> Map.ofArray
    assembleCluster nodes (fun name -> others[name])

let private built = Runtime.CompilerServices.ConditionalWeakTable<Graph, ClusterS option[]>()

/// The cluster state of a state id (built once per graph).
let state (g: Graph) (id: int) : ClusterS =
    let states = built.GetValue(g, fun g -> Array.create g.StateCount None)
    match states[id] with
    | Some s -> s
    | None ->
        let s = build g id
        states[id] <- Some s
        s

let private decodeArg (e: JsonElement) : Arg =
    match e.ValueKind with
    | JsonValueKind.String -> AName(e.GetString() |> Option.ofObj |> Option.defaultValue "")
    | JsonValueKind.Number -> ANum(e.GetUInt64())
    | JsonValueKind.Object -> ACC(decodeCC e)
    | k -> failwithf "unexpected action argument of kind %A" k

let private text (e: JsonElement) = e.GetString() |> Option.ofObj |> Option.defaultValue ""

/// Reads a graph file (gzip-compressed JSON lines, see tlaplus/graph/dot2graph.py).
let load (path: string) : Graph =
    use file = File.OpenRead path
    use gz = new GZipStream(file, CompressionMode.Decompress)
    use reader = new StreamReader(gz)
    let mutable header: JsonElement option = None
    let values = Collections.Generic.Dictionary<string, Collections.Generic.List<VarValue>>()
    let actions = Collections.Generic.List<Action>()
    // Per state: its base state and the variables that differ from it (value ids, or per
    // server lists of them; see dot2graph.py).
    let states = Collections.Generic.List<int * (int * int[])[]>()
    let expanded = Collections.Generic.List<bool>()
    let mutable init = -1
    let out = Collections.Generic.Dictionary<int, (int * int)[]>()
    let mutable reading = true
    while reading do
        match reader.ReadLine() with
        | null -> reading <- false
        | line ->
            use doc = JsonDocument.Parse(line)
            let row = doc.RootElement
            match row[0].GetString() with
            | "graph" -> header <- Some(row[1].Clone())
            | "value" ->
                let var = text row[1]
                let id = row[2].GetInt32()
                let list =
                    match values.TryGetValue var with
                    | true, l -> l
                    | _ ->
                        let l = Collections.Generic.List<VarValue>()
                        values[var] <- l
                        l
                if id <> list.Count then failwithf "%s: value ids of %s out of order" path var
                list.Add(decodeVar var row[3])
            | "action" ->
                if row[1].GetInt32() <> actions.Count then failwithf "%s: action ids out of order" path
                actions.Add { Name = text row[2]; Args = row[3].EnumerateArray() |> Seq.map decodeArg |> List.ofSeq }
            | "state" ->
                if row[1].GetInt32() <> states.Count then failwithf "%s: state ids out of order" path
                if row[2].GetBoolean() then init <- states.Count
                expanded.Add(row[3].GetBoolean())
                let diff =
                    row[5].EnumerateArray()
                    |> Seq.map (fun d ->
                        let v = d[1]
                        let ids =
                            if v.ValueKind = JsonValueKind.Array then [| for x in v.EnumerateArray() -> x.GetInt32() |]
                            else [| v.GetInt32() |]
                        d[0].GetInt32(), ids)
                    |> Array.ofSeq
                states.Add((row[4].GetInt32(), diff))
            | "edges" ->
                let src = row[1].GetInt32()
                let mutable prev = src
                out[src] <-
                    row[2].EnumerateArray()
                    |> Seq.map (fun e ->
                        prev <- prev + e[0].GetInt32()
                        prev, e[1].GetInt32())
                    |> Array.ofSeq
            | other -> failwithf "%s: unknown line kind %s" path other
    let header = header |> Option.defaultWith (fun () -> failwithf "%s: no header" path)
    if header.GetProperty("format").GetInt32() <> 2 then failwithf "%s: not a format-2 graph; regenerate it" path
    let names (p: string) = header.GetProperty(p).EnumerateArray() |> Seq.map text |> Array.ofSeq
    let vars = names "vars"
    let perServer = names "perServer" |> Set.ofArray
    let servers = names "servers" |> List.ofArray
    let config =
        header.GetProperty("config").EnumerateObject() |> Seq.map (fun p -> p.Name, p.Value.Clone()) |> Map.ofSeq
    if init < 0 then failwithf "%s: no initial state" path
    let varIndex = vars |> Array.mapi (fun k v -> v, k) |> Map.ofArray
    let nodeVars = vars |> Array.filter perServer.Contains
    let otherVars = vars |> Array.filter (perServer.Contains >> not)
    // Full rows (per variable, the id or per-server ids), resolved from the bases.
    let resolved: int[][] option[] = Array.create states.Count None
    // Iterative: chains of bases may be long.
    let resolve (sid: int) : int[][] =
        let chain = Collections.Generic.Stack<int>()
        let mutable cur = sid
        while cur >= 0 && resolved[cur].IsNone do
            chain.Push cur
            cur <- fst states[cur]
        while chain.Count > 0 do
            let id = chain.Pop()
            let b, diff = states[id]
            let row = if b < 0 then Array.create vars.Length [||] else Array.copy resolved[b].Value
            for k, ids in diff do
                row[k] <- ids
            resolved[id] <- Some row
        resolved[sid].Value
    let rows = Array.init states.Count resolve
    let nodeIds =
        rows
        |> Array.map (fun row ->
            servers
            |> List.mapi (fun k _ -> nodeVars |> Array.map (fun v -> row[varIndex[v]][k]))
            |> Array.ofList)
    let otherIds = rows |> Array.map (fun row -> otherVars |> Array.map (fun v -> row[varIndex[v]][0]))
    { Model = header.GetProperty("model").GetString() |> string
      Stamp = header.GetProperty("stamp").EnumerateObject() |> Seq.map (fun p -> p.Name, text p.Value) |> Map.ofSeq
      Config = config
      Servers = servers
      Actions = actions.ToArray()
      Init = init
      Expanded = expanded.ToArray()
      Out = Array.init states.Count (fun s -> match out.TryGetValue s with | true, e -> e | _ -> [||])
      NodeVars = nodeVars
      OtherVars = otherVars
      OtherIds = otherIds
      NodeIds = nodeIds
      Values = vars |> Array.map (fun v -> v, values[v].ToArray()) |> Map.ofArray
      NodeCache = servers |> List.map (fun _ -> Collections.Concurrent.ConcurrentDictionary<int[], NodeS>(IdsComparer())) |> Array.ofList }

// ---- where the graphs are -----------------------------------------------------------------

/// The repository root: the folder holding RaftVerified.sln above the test binaries (CI
/// builds map source paths, so the compile-time folder is only a fallback).
let repoRoot () : string =
    let rec up (dir: DirectoryInfo | null) =
        match dir with
        | null -> None
        | d when File.Exists(Path.Combine(d.FullName, "RaftVerified.sln")) -> Some d.FullName
        | d -> up d.Parent
    match up (DirectoryInfo AppContext.BaseDirectory) with
    | Some root -> root
    | None ->
        match up (DirectoryInfo __SOURCE_DIRECTORY__) with
        | Some root -> root
        | None -> failwith "RaftVerified.sln not found above the test binaries"

let graphDir () = Path.Combine(repoRoot (), "tlaplus", "graph")

/// The stored graphs, by model name (file name without .jsonl.gz), sorted.
let graphFiles () : (string * string) list =
    Directory.GetFiles(graphDir (), "*.jsonl.gz")
    |> Array.map (fun f -> (Path.GetFileName f |> string).Replace(".jsonl.gz", ""), f)
    |> Array.sortBy fst
    |> List.ofArray

let private cache = Collections.Concurrent.ConcurrentDictionary<string, Lazy<Graph>>()

/// A stored graph, loaded once per test run.
let byModel (model: string) : Graph =
    let path = Path.Combine(graphDir (), model + ".jsonl.gz")
    cache.GetOrAdd(path, fun p -> lazy (load p)).Value

/// The SHA-256 of a file, lower-case hex.
let sha256 (path: string) : string =
    use f = File.OpenRead path
    Convert.ToHexString(SHA256.HashData f).ToLowerInvariant()

// ---- the model's constants ---------------------------------------------------------------

let configBool (g: Graph) (name: string) = g.Config[name].GetBoolean()
let configInt (g: Graph) (name: string) = g.Config[name].GetInt32()

let configNames (g: Graph) (name: string) : Set<string> =
    g.Config[name].EnumerateArray() |> Seq.map (fun v -> v.GetString() |> string) |> Set.ofSeq
