/// Read-only requests confirmed by heartbeats (etcd's read_only.go). The leader numbers
/// pending reads by position; a heartbeat carries the position of the newest pending read,
/// and once a quorum acknowledged a position every read up to it is confirmed.
namespace Raft.Spec

open System.Buffers.Binary

/// The answer to a ReadIndex request: reads are linearizable once the state machine has
/// applied Index. RequestCtx identifies the request (etcd's ReadState).
type ReadState = { Index: uint64; RequestCtx: byte[] }

/// A pending read: the original MsgReadIndex and the commit index when it arrived.
type ReadIndexRequest = { Req: Message; Index: uint64 }

type ReadOnly =
    { Option: ReadOnlyOption
      /// Per voter, the highest read position it acknowledged through a heartbeat response.
      Acks: Map<uint64, uint64>
      /// Reads not yet confirmed, oldest first.
      UnconfirmedReads: ReadIndexRequest list
      /// How many reads were confirmed (and removed from the front) so far: the position
      /// of the first unconfirmed read is ConfirmedReads + 1.
      ConfirmedReads: uint64 }

module ReadOnly =
    let create (option: ReadOnlyOption) : ReadOnly =
        { Option = option; Acks = Map.empty; UnconfirmedReads = []; ConfirmedReads = 0UL }

    /// Queues a read that arrived when the commit index was commitIndex.
    let addRequest (commitIndex: uint64) (req: Message) (ro: ReadOnly) : ReadOnly =
        { ro with UnconfirmedReads = ro.UnconfirmedReads @ [ { Req = req; Index = commitIndex } ] }

    /// Records a heartbeat acknowledgement; an empty context acknowledges nothing.
    let recvAck (from: uint64) (ctx: byte[]) (ro: ReadOnly) : ReadOnly =
        if ctx.Length = 0 then ro
        else
            // Contexts shorter than 8 bytes are not ours; etcd would panic reading them.
            if ctx.Length < 8 then invalidOp (sprintf "runtime error: index out of range [7] with length %d" ctx.Length)
            let position = BinaryPrimitives.ReadUInt64LittleEndian(System.ReadOnlySpan ctx)
            let previous = ro.Acks |> Map.tryFind from |> Option.defaultValue 0UL
            { ro with Acks = Map.add from (max previous position) ro.Acks }

    /// The acknowledged position of a voter, for the quorum computation.
    let ackedIndex (ro: ReadOnly) (voter: uint64) : uint64 option = Map.tryFind voter ro.Acks

    /// Confirms as many reads as the quorum acknowledged. quorumIndex is the voters'
    /// committed-index function (JointConfig.committedIndex) applied to an acked-index lookup.
    let maybeAdvance (quorumIndex: (uint64 -> uint64 option) -> uint64) (ro: ReadOnly) : ReadIndexRequest list * ReadOnly =
        let confirmed = quorumIndex (ackedIndex ro)
        if confirmed <= ro.ConfirmedReads then [], ro
        else
            let n = confirmed - ro.ConfirmedReads
            // Positions are only handed out for queued reads, so a quorum can't confirm more.
            if n > uint64 ro.UnconfirmedReads.Length then
                invalidOp (sprintf "runtime error: slice bounds out of range [:%d] with capacity %d" n ro.UnconfirmedReads.Length)
            let n = int n
            let released, rest = List.splitAt n ro.UnconfirmedReads
            released, { ro with UnconfirmedReads = rest; ConfirmedReads = confirmed }

    /// The heartbeat context that confirms every pending read: the little-endian position
    /// of the newest one; empty when nothing is pending.
    let heartbeatCtx (ro: ReadOnly) : byte[] =
        if List.isEmpty ro.UnconfirmedReads then [||]
        else
            let position = ro.ConfirmedReads + uint64 ro.UnconfirmedReads.Length
            let buf = Array.zeroCreate<byte> 8
            BinaryPrimitives.WriteUInt64LittleEndian(System.Span buf, position)
            buf
