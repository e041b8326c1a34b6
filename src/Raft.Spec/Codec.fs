/// The protobuf wire form of entries and configuration changes, byte-compatible with
/// etcd's raftpb (proto2, explicit presence). Sizes matter beyond the wire: etcd limits
/// messages and Ready batches by the encoded size of entries (Entry.Size()), so the
/// presence rules below follow how etcd-raft itself builds these values:
/// - Entry: Term and Index are always set; Type only for conf-change entries (normal
///   proposals are built without a type); Data only when non-empty.
/// - ConfChange (v1): Type and NodeId always set; Id and Context only when non-zero/non-empty.
/// - ConfChangeV2: Transition always set; each change carries Type and NodeId; Context
///   only when non-empty.
module Raft.Spec.Codec

open System

// ---- wire primitives -------------------------------------------------------------

let private wireVarint = 0
let private wireFixed64 = 1
let private wireBytes = 2
let private wireFixed32 = 5

/// Bytes a varint of this value takes.
let varintSize (v: uint64) : int =
    let mutable n = 1
    let mutable x = v >>> 7
    while x <> 0UL do
        n <- n + 1
        x <- x >>> 7
    n

let private tagSize (field: int) = varintSize (uint64 ((field <<< 3) ||| wireVarint))

/// Size of a varint field including its tag.
let private varintFieldSize field (v: uint64) = tagSize field + varintSize v

/// Size of a length-delimited field including its tag and length prefix.
let private bytesFieldSize field (len: int) = tagSize field + varintSize (uint64 len) + len

/// An append-only byte buffer used only inside encoders (the mutation never escapes).
type private Writer() =
    let buf = Collections.Generic.List<byte>(32)

    member _.Varint(v: uint64) =
        let mutable x = v
        while x >= 0x80UL do
            buf.Add(byte (x &&& 0x7FUL) ||| 0x80uy)
            x <- x >>> 7
        buf.Add(byte x)

    member w.Tag(field: int, wire: int) = w.Varint(uint64 ((field <<< 3) ||| wire))

    member w.VarintField(field, v: uint64) =
        w.Tag(field, wireVarint)
        w.Varint v

    member w.BytesField(field, data: byte[]) =
        w.Tag(field, wireBytes)
        w.Varint(uint64 data.Length)
        buf.AddRange data

    member _.ToArray() = buf.ToArray()

/// One decoded field: its number and either a varint value or a byte slice.
type private Field =
    | VarintValue of field: int * value: uint64
    | BytesValue of field: int * value: byte[]
    | Skipped of field: int

let private readVarint (data: byte[]) (pos: int) : Result<uint64 * int, string> =
    let rec go (acc: uint64) shift p =
        if p >= data.Length then Error "unexpected EOF"
        elif shift >= 64 then Error "proto: integer overflow"
        else
            let b = data[p]
            let acc = acc ||| (uint64 (b &&& 0x7Fuy) <<< shift)
            if b < 0x80uy then Ok(acc, p + 1) else go acc (shift + 7) (p + 1)
    go 0UL 0 pos

/// Splits a message into its fields, in wire order.
let private readFields (data: byte[]) : Result<Field list, string> =
    let rec go pos acc =
        if pos >= data.Length then Ok(List.rev acc)
        else
            match readVarint data pos with
            | Error e -> Error e
            | Ok(key, pos) ->
                let field = int (key >>> 3)
                let wire = int (key &&& 7UL)
                if field <= 0 then Error(sprintf "proto: invalid field number %d" field)
                elif wire = wireVarint then
                    match readVarint data pos with
                    | Ok(v, pos) -> go pos (VarintValue(field, v) :: acc)
                    | Error e -> Error e
                elif wire = wireBytes then
                    match readVarint data pos with
                    | Error e -> Error e
                    | Ok(len, pos) ->
                        if len > uint64 (data.Length - pos) then Error "unexpected EOF"
                        else go (pos + int len) (BytesValue(field, data[pos .. pos + int len - 1]) :: acc)
                elif wire = wireFixed64 then
                    if pos + 8 > data.Length then Error "unexpected EOF" else go (pos + 8) (Skipped field :: acc)
                elif wire = wireFixed32 then
                    if pos + 4 > data.Length then Error "unexpected EOF" else go (pos + 4) (Skipped field :: acc)
                else Error(sprintf "proto: cannot parse reserved wire type %d" wire)
    go 0 []

let private wrongWire name field = Error(sprintf "proto: %s: wrong wire type for field %d" name field)

let private toInt32Enum (v: uint64) = int32 (int64 v)

/// Length of a byte field; a null array from a C# caller counts as absent.
let private byteLength (b: byte[]) : int =
    match box b with
    | null -> 0
    | _ -> b.Length

// ---- enums ----------------------------------------------------------------------

module ConfChangeType =
    let toWire (t: ConfChangeType) : int32 =
        match t with
        | ConfChangeAddNode -> 0
        | ConfChangeRemoveNode -> 1
        | ConfChangeUpdateNode -> 2
        | ConfChangeAddLearnerNode -> 3

    let ofWire (v: int32) : Result<ConfChangeType, string> =
        match v with
        | 0 -> Ok ConfChangeAddNode
        | 1 -> Ok ConfChangeRemoveNode
        | 2 -> Ok ConfChangeUpdateNode
        | 3 -> Ok ConfChangeAddLearnerNode
        | _ -> Error(sprintf "unknown conf change type %d" v)

module ConfChangeTransition =
    let toWire (t: ConfChangeTransition) : int32 =
        match t with
        | ConfChangeTransitionAuto -> 0
        | ConfChangeTransitionJointImplicit -> 1
        | ConfChangeTransitionJointExplicit -> 2

    let ofWire (v: int32) : Result<ConfChangeTransition, string> =
        match v with
        | 0 -> Ok ConfChangeTransitionAuto
        | 1 -> Ok ConfChangeTransitionJointImplicit
        | 2 -> Ok ConfChangeTransitionJointExplicit
        | _ -> Error(sprintf "unknown conf change transition %d" v)

// ---- Entry ----------------------------------------------------------------------

/// The encoded size of an entry (etcd's proto.Size(entry)); what MaxSizePerMsg and
/// MaxCommittedSizePerReady are measured in.
let entrySize (e: Entry) : uint64 =
    let typ = if e.Type = EntryNormal then 0 else varintFieldSize 1 (uint64 (EntryType.toWire e.Type))
    let data = if byteLength e.Data = 0 then 0 else bytesFieldSize 4 e.Data.Length
    uint64 (typ + varintFieldSize 2 e.Term + varintFieldSize 3 e.Index + data)

/// Sum of the encoded sizes (etcd's entsSize).
let entriesSize (ents: Entry seq) : uint64 =
    match ents with
    // Arrays (what the core passes) without an enumerator.
    | :? (Entry[]) as a ->
        let mutable size = 0UL
        for e in a do
            size <- size + entrySize e
        size
    | _ -> ents |> Seq.sumBy entrySize

/// The payload size of an entry: its data length (etcd's payloadSize), what the
/// uncommitted-size limit counts.
let payloadSize (e: Entry) : uint64 = uint64 (byteLength e.Data)

let payloadsSize (ents: Entry seq) : uint64 =
    match ents with
    | :? (Entry[]) as a ->
        let mutable size = 0UL
        for e in a do
            size <- size + payloadSize e
        size
    | _ -> ents |> Seq.sumBy payloadSize

/// The longest prefix whose encoded size stays within maxSize, but at least one entry
/// (etcd's limitSize).
let limitSize (maxSize: uint64) (ents: Entry[]) : Entry[] =
    if ents.Length <= 1 then ents
    else
        let rec go limit size =
            if limit >= ents.Length then ents
            else
                let size = size + entrySize ents[limit]
                if size > maxSize then ents[.. limit - 1] else go (limit + 1) size
        go 1 (entrySize ents[0])

let encodeEntry (e: Entry) : byte[] =
    let w = Writer()
    if e.Type <> EntryNormal then w.VarintField(1, uint64 (EntryType.toWire e.Type))
    w.VarintField(2, e.Term)
    w.VarintField(3, e.Index)
    if byteLength e.Data > 0 then w.BytesField(4, e.Data)
    w.ToArray()

let decodeEntry (data: byte[]) : Result<Entry, string> =
    readFields data
    |> Result.bind (fun fields ->
        (Ok(Entry.create 0UL 0UL [||]), fields)
        ||> List.fold (fun acc f ->
            acc
            |> Result.bind (fun (e: Entry) ->
                match f with
                | VarintValue(1, v) -> EntryType.ofWire (toInt32Enum v) |> Result.map (fun t -> { e with Type = t })
                | VarintValue(2, v) -> Ok { e with Term = v }
                | VarintValue(3, v) -> Ok { e with Index = v }
                | BytesValue(4, v) -> Ok { e with Data = v }
                | VarintValue(n, _) when n = 4 -> wrongWire "Entry" n
                | BytesValue(n, _) when n <= 3 -> wrongWire "Entry" n
                | _ -> Ok e)))

// ---- ConfChange (v1) ---------------------------------------------------------------

let encodeConfChange (cc: ConfChange) : byte[] =
    let w = Writer()
    if cc.Id <> 0UL then w.VarintField(1, cc.Id)
    w.VarintField(2, uint64 (ConfChangeType.toWire cc.Type))
    w.VarintField(3, cc.NodeId)
    if byteLength cc.Context > 0 then w.BytesField(4, cc.Context)
    w.ToArray()

let decodeConfChange (data: byte[]) : Result<ConfChange, string> =
    let empty: ConfChange = { Type = ConfChangeAddNode; NodeId = 0UL; Context = [||]; Id = 0UL }
    readFields data
    |> Result.bind (fun fields ->
        (Ok empty, fields)
        ||> List.fold (fun acc f ->
            acc
            |> Result.bind (fun (cc: ConfChange) ->
                match f with
                | VarintValue(1, v) -> Ok { cc with Id = v }
                | VarintValue(2, v) -> ConfChangeType.ofWire (toInt32Enum v) |> Result.map (fun t -> { cc with Type = t })
                | VarintValue(3, v) -> Ok { cc with NodeId = v }
                | BytesValue(4, v) -> Ok { cc with Context = v }
                | VarintValue(4, _) -> wrongWire "ConfChange" 4
                | BytesValue(n, _) when n <= 3 -> wrongWire "ConfChange" n
                | _ -> Ok cc)))

// ---- ConfChangeV2 --------------------------------------------------------------------

let private encodeSingle (c: ConfChangeSingle) : byte[] =
    let w = Writer()
    w.VarintField(1, uint64 (ConfChangeType.toWire c.Type))
    w.VarintField(2, c.NodeId)
    w.ToArray()

let private decodeSingle (data: byte[]) : Result<ConfChangeSingle, string> =
    readFields data
    |> Result.bind (fun fields ->
        (Ok { Type = ConfChangeAddNode; NodeId = 0UL }, fields)
        ||> List.fold (fun acc f ->
            acc
            |> Result.bind (fun (c: ConfChangeSingle) ->
                match f with
                | VarintValue(1, v) -> ConfChangeType.ofWire (toInt32Enum v) |> Result.map (fun t -> { c with Type = t })
                | VarintValue(2, v) -> Ok { c with NodeId = v }
                | BytesValue(n, _) when n <= 2 -> wrongWire "ConfChangeSingle" n
                | _ -> Ok c)))

let encodeConfChangeV2 (cc: ConfChangeV2) : byte[] =
    let w = Writer()
    w.VarintField(1, uint64 (ConfChangeTransition.toWire cc.Transition))
    for c in cc.Changes do
        w.BytesField(2, encodeSingle c)
    if byteLength cc.Context > 0 then w.BytesField(3, cc.Context)
    w.ToArray()

let decodeConfChangeV2 (data: byte[]) : Result<ConfChangeV2, string> =
    let empty: ConfChangeV2 = { Transition = ConfChangeTransitionAuto; Changes = []; Context = [||] }
    readFields data
    |> Result.bind (fun fields ->
        (Ok empty, fields)
        ||> List.fold (fun acc f ->
            acc
            |> Result.bind (fun (cc: ConfChangeV2) ->
                match f with
                | VarintValue(1, v) ->
                    ConfChangeTransition.ofWire (toInt32Enum v) |> Result.map (fun t -> { cc with Transition = t })
                | BytesValue(2, v) -> decodeSingle v |> Result.map (fun c -> { cc with Changes = cc.Changes @ [ c ] })
                | BytesValue(3, v) -> Ok { cc with Context = v }
                | VarintValue(n, _) when n = 2 || n = 3 -> wrongWire "ConfChangeV2" n
                | BytesValue(1, _) -> wrongWire "ConfChangeV2" 1
                | _ -> Ok cc)))

// ---- conf changes inside entries ---------------------------------------------------------

/// The entry type and data of a conf-change proposal (etcd's MarshalConfChange).
/// None is the empty ConfChangeV2 with no data, used to leave a joint config automatically:
/// its payload is zero bytes so the uncommitted-size limit never refuses it.
let marshalConfChange (cc: ConfChangeI option) : EntryType * byte[] =
    match cc with
    | None -> EntryConfChangeV2, [||]
    | Some(ConfChangeV1 c) -> EntryConfChange, encodeConfChange c
    | Some(ConfChangeV2Change c) -> EntryConfChangeV2, encodeConfChangeV2 c

/// The conf change carried by an entry, None for normal entries.
let confChangeOfEntry (e: Entry) : Result<ConfChangeI option, string> =
    match e.Type with
    | EntryNormal -> Ok None
    | EntryConfChange -> decodeConfChange e.Data |> Result.map (ConfChangeV1 >> Some)
    | EntryConfChangeV2 -> decodeConfChangeV2 e.Data |> Result.map (ConfChangeV2Change >> Some)
