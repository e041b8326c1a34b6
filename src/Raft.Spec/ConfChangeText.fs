/// The short text form of configuration changes used in etcd's tests and log lines:
/// "v1 l2 r3 u4" adds voter 1, adds learner 2, removes 3, updates 4.
module Raft.Spec.ConfChangeText

open System

let private letter (t: ConfChangeType) =
    match t with
    | ConfChangeAddNode -> 'v'
    | ConfChangeAddLearnerNode -> 'l'
    | ConfChangeRemoveNode -> 'r'
    | ConfChangeUpdateNode -> 'u'

/// "v1 l2 r3"; the empty string for no changes.
let format (changes: ConfChangeSingle list) : string =
    changes |> List.map (fun c -> sprintf "%c%d" (letter c.Type) c.NodeId) |> String.concat " "

/// Parses the form written by `format`; an unknown letter or a bad id is an error naming the token.
let parse (text: string) : Result<ConfChangeSingle list, string> =
    let token (tok: string) =
        let kind =
            match tok[0] with
            | 'v' -> Ok ConfChangeAddNode
            | 'l' -> Ok ConfChangeAddLearnerNode
            | 'r' -> Ok ConfChangeRemoveNode
            | 'u' -> Ok ConfChangeUpdateNode
            | c -> Error(sprintf "unknown conf change type '%c' in '%s'" c tok)
        match kind, UInt64.TryParse(tok.AsSpan(1)) with
        | Ok k, (true, id) -> Ok { Type = k; NodeId = id }
        | Ok _, _ -> Error(sprintf "bad node id in '%s'" tok)
        | Error e, _ -> Error e
    text.Split(' ', StringSplitOptions.RemoveEmptyEntries)
    |> Array.fold
        (fun acc tok ->
            match acc, token tok with
            | Ok xs, Ok c -> Ok(c :: xs)
            | Error e, _ -> Error e
            | _, Error e -> Error e)
        (Ok [])
    |> Result.map List.rev
