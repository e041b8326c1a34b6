/// Flow control of appends to one follower (etcd's tracker.Inflights): the MsgApps sent but
/// not yet acknowledged, bounded by a count and, softly, by their total byte size.
namespace Raft.Spec

open System

/// One MsgApp in flight: the index of its last entry and the byte size of its entries.
type Inflight = { Index: uint64; Bytes: uint64 }

/// An immutable FIFO of in-flight appends. Appends are added at the back and freed from the
/// front, so it is kept as two lists (front in order, back reversed); equality compares the
/// sequence, not how it happens to be split.
[<CustomEquality; NoComparison>]
type Inflights =
    private
        { front: Inflight list
          backRev: Inflight list
          count: int
          bytes: uint64
          size: int
          maxBytes: uint64 }

    /// Number of appends in flight.
    member this.Count = this.count
    /// Total byte size of the appends in flight.
    member this.Bytes = this.bytes
    /// The most appends allowed in flight.
    member this.Size = this.size
    /// The byte budget; 0 means unlimited.
    member this.MaxBytes = this.maxBytes
    /// The appends in flight, oldest first.
    member this.Items: Inflight list = this.front @ List.rev this.backRev

    /// No more appends may be sent: the count limit is reached, or the byte budget is used
    /// up (the budget is soft: a single append may overshoot it).
    member this.Full = this.count = this.size || (this.maxBytes <> 0UL && this.bytes >= this.maxBytes)

    override this.Equals(other: obj | null) =
        match other with
        | :? Inflights as o ->
            this.count = o.count && this.bytes = o.bytes && this.size = o.size && this.maxBytes = o.maxBytes
            && this.Items = o.Items
        | _ -> false

    override this.GetHashCode() = HashCode.Combine(this.count, this.bytes, this.size, this.maxBytes)

    override this.ToString() =
        sprintf "Inflights(count=%d bytes=%d size=%d maxBytes=%d)" this.count this.bytes this.size this.maxBytes

module Inflights =
    /// An empty window allowing `size` appends and `maxBytes` bytes (0: no byte limit).
    let create (size: int) (maxBytes: uint64) : Inflights =
        { front = []; backRev = []; count = 0; bytes = 0UL; size = size; maxBytes = maxBytes }

    let count (ins: Inflights) = ins.Count
    let full (ins: Inflights) = ins.Full

    /// Records an append whose last entry is `index`. Indexes must be added in increasing
    /// order, and only when the window is not full (etcd panics otherwise).
    let add (index: uint64) (bytes: uint64) (ins: Inflights) : Inflights =
        if ins.Full then invalidOp "cannot add into a Full inflights"
        { ins with
            backRev = { Index = index; Bytes = bytes } :: ins.backRev
            count = ins.count + 1
            bytes = ins.bytes + bytes }

    /// Frees every append whose last index is at most `upTo` (an acknowledgement up to there).
    let freeLE (upTo: uint64) (ins: Inflights) : Inflights =
        let rec drop (front: Inflight list) (backRev: Inflight list) freed bytes =
            match front, backRev with
            | f :: rest, _ when f.Index <= upTo -> drop rest backRev (freed + 1) (bytes + f.Bytes)
            | [], _ :: _ -> drop (List.rev backRev) [] freed bytes
            | _ -> front, backRev, freed, bytes
        if ins.count = 0 then
            ins
        else
            let front, backRev, freed, bytes = drop ins.front ins.backRev 0 0UL
            if freed = 0 then
                ins
            else
                { ins with front = front; backRev = backRev; count = ins.count - freed; bytes = ins.bytes - bytes }

    /// Frees everything.
    let reset (ins: Inflights) : Inflights = create ins.size ins.maxBytes
