/// Reading histories: accepted forms, and the errors for malformed input, each naming its line.
module Raft.Check.Tests.ParseTests

open Xunit
open Raft.Check

let private line (fields: string) = "{" + fields + "}"

let private errorOf (lines: string list) =
    match Operations.parse lines with
    | Ok ops -> failwithf "expected an error, parsed %A" ops
    | Error e -> e

let private okOf (lines: string list) =
    match Operations.parse lines with
    | Ok ops -> ops
    | Error e -> failwithf "line %d: %s" e.Line e.Message

let private ev proc typ f key value time =
    line $"\"process\":{proc},\"type\":\"{typ}\",\"f\":\"{f}\",\"key\":\"{key}\",\"value\":{value},\"time\":{time}"

[<Fact>]
let ``operations pair invocations with completions per process`` () =
    let ops =
        okOf
            [ ev 0 "invoke" "put" "k" "\"a\"" 1
              ev 1 "invoke" "get" "k" "null" 2
              ""
              ev 1 "ok" "get" "k" "\"a\"" 3
              ev 0 "ok" "put" "k" "\"a\"" 4
              ev 2 "invoke" "cas" "k" "[\"a\", 7]" 5
              ev 2 "info" "cas" "k" "null" 6
              ev 2 "invoke" "put" "j" "true" 7 ]
    Assert.Equal(4, ops.Length)
    Assert.Equal(
        { Index = 0; Process = 0; Key = "k"; Command = Write(Some(Value "\"a\"")); Invoked = 1L
          Outcome = Succeeded(4L, None); InvokeLine = 1; CompleteLine = Some 5 },
        ops[0])
    Assert.Equal(Succeeded(3L, Some(Value "\"a\"")), ops[1].Outcome)
    Assert.Equal(CompareAndSet(Some(Value "\"a\""), Some(Value "7")), ops[2].Command)
    Assert.Equal(Indeterminate(Some 6L), ops[2].Outcome)
    // Invoked again after its info: the unknown cas and this put are both open.
    Assert.Equal(Indeterminate None, ops[3].Outcome)
    Assert.Equal(Write(Some(Value "true")), ops[3].Command)

[<Fact>]
let ``string values compare by content, not by escaping`` () =
    let ops = okOf [ ev 0 "invoke" "put" "k" "\"\\u0061\"" 1; ev 0 "ok" "put" "k" "null" 2 ]
    Assert.Equal(Write(Some(Value "\"a\"")), ops[0].Command)

[<Fact>]
let ``a get that read nothing read absent`` () =
    let ops = okOf [ ev 0 "invoke" "get" "k" "null" 1; ev 0 "ok" "get" "k" "null" 2 ]
    Assert.Equal(Succeeded(2L, None), ops[0].Outcome)

let private expectError (lineNo: int) (fragment: string) (lines: string list) =
    let e = errorOf lines
    Assert.Equal(lineNo, e.Line)
    Assert.Contains(fragment, e.Message)

[<Fact>]
let ``malformed lines are errors naming the line`` () =
    let first = ev 0 "invoke" "put" "k" "1" 1
    expectError 2 "not valid JSON" [ first; "{\"process\": 0," ]
    expectError 2 "expected a JSON object" [ first; "[1, 2]" ]
    expectError 1 "missing field \"time\"" [ line "\"process\":0,\"type\":\"invoke\",\"f\":\"put\",\"key\":\"k\",\"value\":1" ]
    expectError 1 "missing field \"process\"" [ line "\"type\":\"invoke\",\"f\":\"put\",\"key\":\"k\",\"value\":1,\"time\":1" ]
    expectError 1 "\"type\" must be" [ ev 0 "done" "put" "k" "1" 1 ]
    expectError 1 "\"f\" must be" [ ev 0 "invoke" "delete" "k" "1" 1 ]
    expectError 1 "\"key\" must be a string" [ line "\"process\":0,\"type\":\"invoke\",\"f\":\"put\",\"key\":3,\"value\":1,\"time\":1" ]
    expectError 1 "\"process\" must be" [ line "\"process\":\"p\",\"type\":\"invoke\",\"f\":\"put\",\"key\":\"k\",\"value\":1,\"time\":1" ]
    expectError 1 "\"time\" must be" [ line "\"process\":0,\"type\":\"invoke\",\"f\":\"put\",\"key\":\"k\",\"value\":1,\"time\":1.5" ]
    expectError 1 "a put's invocation needs" [ line "\"process\":0,\"type\":\"invoke\",\"f\":\"put\",\"key\":\"k\",\"time\":1" ]
    expectError 1 "a put's value must be" [ ev 0 "invoke" "put" "k" "{\"a\":1}" 1 ]
    expectError 1 "a cas's value is [expected, new]" [ ev 0 "invoke" "cas" "k" "[1]" 1 ]
    expectError 1 "a get's invocation has value null" [ ev 0 "invoke" "get" "k" "1" 1 ]

[<Fact>]
let ``rules of pairing are errors naming the line`` () =
    expectError 3 "still outstanding" [ ev 0 "invoke" "put" "k" "1" 1; ""; ev 0 "invoke" "get" "k" "null" 2 ]
    expectError 1 "never invoked" [ ev 0 "ok" "put" "k" "1" 1 ]
    expectError 2 "does not match its invocation on line 1" [ ev 0 "invoke" "put" "k" "1" 1; ev 0 "ok" "put" "j" "1" 2 ]
    expectError 2 "does not match" [ ev 0 "invoke" "put" "k" "1" 1; ev 0 "ok" "get" "k" "1" 2 ]
    expectError 2 "is before its invocation" [ ev 0 "invoke" "put" "k" "1" 5; ev 0 "ok" "put" "k" "1" 4 ]
    expectError 2 "differs from its invocation" [ ev 0 "invoke" "put" "k" "1" 1; ev 0 "ok" "put" "k" "2" 2 ]

[<Fact>]
let ``formatted events read back as the same events`` () =
    let lines =
        [ ev 0 "invoke" "cas" "k" "[null, \"x\"]" 1
          ev 0 "fail" "cas" "k" "null" 2
          ev 1 "invoke" "get" "k \\\" q" "null" 3
          ev 1 "ok" "get" "k \\\" q" "12.5" 4
          ev 2 "invoke" "put" "k" "false" 5 ]
    match HistoryJson.parseLines lines with
    | Error e -> failwithf "line %d: %s" e.Line e.Message
    | Ok events ->
        Assert.Equal("k \" q", events[2].Key)
        match HistoryJson.parseLines (events |> List.map HistoryJson.format) with
        | Error e -> failwithf "line %d: %s" e.Line e.Message
        | Ok again -> Assert.Equal<Event list>(events, again)
