/// Reading events from JSON lines (docs/history-format.md). Every malformed line is an
/// error naming the line; nothing is guessed or skipped except blank lines.
module Raft.Check.HistoryJson

open System
open System.Text.Json

let private fail line message : Result<'a, HistoryError> = Error { Line = line; Message = message }

/// A JSON scalar as canonical text: strings re-encoded (so "\u0061" and "a" are one value),
/// numbers and booleans as written. Arrays and objects are not register values.
let private scalar (line: int) (what: string) (e: JsonElement) : Result<Value option, HistoryError> =
    match e.ValueKind with
    | JsonValueKind.Null -> Ok None
    | JsonValueKind.String ->
        match e.GetString() with
        | null -> Ok None
        | s -> Ok(Some(Value(JsonSerializer.Serialize s)))
    | JsonValueKind.Number -> Ok(Some(Value(e.GetRawText())))
    | JsonValueKind.True -> Ok(Some(Value "true"))
    | JsonValueKind.False -> Ok(Some(Value "false"))
    | kind -> fail line $"{what} must be a string, number, boolean or null, not {kind.ToString().ToLowerInvariant()}"

let private property (root: JsonElement) (name: string) : JsonElement option =
    match root.TryGetProperty name with
    | true, v -> Some v
    | _ -> None

let private required line (root: JsonElement) name =
    match property root name with
    | Some v -> Ok v
    | None -> fail line $"missing field \"{name}\""

let private parseType line (e: JsonElement) =
    match (if e.ValueKind = JsonValueKind.String then e.GetString() else null) with
    | "invoke" -> Ok EventType.Invoke
    | "ok" -> Ok EventType.Ok
    | "fail" -> Ok EventType.Fail
    | "info" -> Ok EventType.Info
    | _ -> fail line $"\"type\" must be \"invoke\", \"ok\", \"fail\" or \"info\", not {e.GetRawText()}"

let private parseFn line (e: JsonElement) =
    match (if e.ValueKind = JsonValueKind.String then e.GetString() else null) with
    | "put" -> Ok Put
    | "get" -> Ok Get
    | "cas" -> Ok Cas
    | _ -> fail line $"\"f\" must be \"put\", \"get\" or \"cas\", not {e.GetRawText()}"

let private isNull (v: JsonElement option) =
    match v with
    | None -> true
    | Some e -> e.ValueKind = JsonValueKind.Null

/// The value field as its function and event type give it meaning.
let private parseValue line (fn: Fn) (typ: EventType) (v: JsonElement option) : Result<EventValue, HistoryError> =
    match fn, typ, v with
    | Get, EventType.Invoke, None -> Ok NoValue
    | Get, EventType.Invoke, Some e when e.ValueKind = JsonValueKind.Null -> Ok NoValue
    | Get, EventType.Invoke, Some e -> fail line $"a get's invocation has value null, not {e.GetRawText()}"
    | Get, EventType.Ok, None -> Ok(One None)
    | Get, EventType.Ok, Some e -> scalar line "the value a get read" e |> Result.map One
    // A get that failed or whose outcome is unknown read nothing we can use.
    | Get, (EventType.Fail | EventType.Info), _ -> Ok NoValue
    | Put, EventType.Invoke, None -> fail line "a put's invocation needs \"value\" (the value written)"
    | Put, _, None -> Ok NoValue
    | Put, _, Some e when typ <> EventType.Invoke && e.ValueKind = JsonValueKind.Null -> Ok NoValue
    | Put, _, Some e -> scalar line "a put's value" e |> Result.map One
    | Cas, _, v when typ <> EventType.Invoke && isNull v -> Ok NoValue
    | Cas, _, Some e when e.ValueKind = JsonValueKind.Array && e.GetArrayLength() = 2 ->
        scalar line "a cas's expected value" e[0]
        |> Result.bind (fun expected ->
            scalar line "a cas's new value" e[1] |> Result.map (fun updated -> Pair(expected, updated)))
    | Cas, _, Some e -> fail line $"a cas's value is [expected, new], not {e.GetRawText()}"
    | Cas, _, None -> fail line "a cas's invocation needs \"value\": [expected, new]"

let private parseInt line name (e: JsonElement) =
    match e.ValueKind with
    | JsonValueKind.Number ->
        match e.TryGetInt32() with
        | true, v -> Ok v
        | _ -> fail line $"\"{name}\" must be a 32-bit integer, not {e.GetRawText()}"
    | _ -> fail line $"\"{name}\" must be a 32-bit integer, not {e.GetRawText()}"

let private parseTime line (e: JsonElement) =
    match e.ValueKind with
    | JsonValueKind.Number ->
        match e.TryGetInt64() with
        | true, v -> Ok v
        | _ -> fail line $"\"time\" must be an integer number of nanoseconds, not {e.GetRawText()}"
    | _ -> fail line $"\"time\" must be an integer number of nanoseconds, not {e.GetRawText()}"

let private parseKey line (e: JsonElement) =
    match (if e.ValueKind = JsonValueKind.String then e.GetString() else null) with
    | null -> fail line $"\"key\" must be a string, not {e.GetRawText()}"
    | k -> Ok k

let private ofObject (line: int) (root: JsonElement) : Result<Event, HistoryError> =
    if root.ValueKind <> JsonValueKind.Object then
        fail line $"expected a JSON object, not {root.ValueKind.ToString().ToLowerInvariant()}"
    else
        let field name parse = required line root name |> Result.bind (parse line)
        field "process" (fun l e -> parseInt l "process" e)
        |> Result.bind (fun proc ->
            field "type" parseType
            |> Result.bind (fun typ ->
                field "f" parseFn
                |> Result.bind (fun fn ->
                    field "key" parseKey
                    |> Result.bind (fun key ->
                        field "time" parseTime
                        |> Result.bind (fun time ->
                            parseValue line fn typ (property root "value")
                            |> Result.map (fun value ->
                                { Line = line
                                  Process = proc
                                  Type = typ
                                  F = fn
                                  Key = key
                                  Value = value
                                  Time = time }))))))

/// One line (1-based `line`) as an event; `None` for a blank line.
let parseLine (line: int) (text: string) : Result<Event option, HistoryError> =
    if String.IsNullOrWhiteSpace text then
        Ok None
    else
        try
            use doc = JsonDocument.Parse text
            ofObject line doc.RootElement |> Result.map Some
        with :? JsonException as e ->
            fail line $"not valid JSON: {e.Message}"

/// All events of a history, in input order; the first malformed line is the error.
let parseLines (lines: string seq) : Result<Event list, HistoryError> =
    use e = lines.GetEnumerator()
    let events = ResizeArray()
    let mutable error = None
    let mutable n = 0
    while error.IsNone && e.MoveNext() do
        n <- n + 1
        match parseLine n e.Current with
        | Ok(Some ev) -> events.Add ev
        | Ok None -> ()
        | Error err -> error <- Some err
    match error with
    | Some err -> Error err
    | None -> Ok(List.ofSeq events)

/// One event as a JSON line, the inverse of `parseLine` (used by tests and by writers of histories).
let format (ev: Event) : string =
    let typ =
        match ev.Type with
        | EventType.Invoke -> "invoke"
        | EventType.Ok -> "ok"
        | EventType.Fail -> "fail"
        | EventType.Info -> "info"
    let fn =
        match ev.F with
        | Put -> "put"
        | Get -> "get"
        | Cas -> "cas"
    let value =
        match ev.Value with
        | NoValue -> "null"
        | One v -> Value.show v
        | Pair(e, n) -> $"[{Value.show e},{Value.show n}]"
    $"{{\"process\":{ev.Process},\"type\":\"{typ}\",\"f\":\"{fn}\",\"key\":{JsonSerializer.Serialize ev.Key},\"value\":{value},\"time\":{ev.Time}}}"
