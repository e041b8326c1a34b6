/// Trace events in etcd's TracingEvent schema: one per state transition of a node,
/// checked against the spec by tlaplus/TraceRaft.tla. Values only; the host serialises them.
namespace Raft.Spec

/// The message fields a trace records (etcd's TracingMessage): entries by count only.
type TraceMessage =
    { Type: MessageType
      Term: uint64
      From: uint64
      To: uint64
      EntryCount: int
      LogTerm: uint64
      Index: uint64
      Commit: uint64
      Vote: uint64
      Reject: bool
      RejectHint: uint64 }

/// A configuration change as traced: the single changes, or the configuration it produced.
type TraceConfChange =
    { Changes: ConfChangeSingle list
      NewConf: uint64 list }

type TraceEvent =
    { /// etcd's event name, e.g. "BecomeLeader", "SendAppendEntriesRequest", "Commit".
      Name: string
      NodeId: uint64
      Term: uint64
      Vote: uint64
      Commit: uint64
      Role: StateType
      /// The index of the last log entry.
      LogLength: uint64
      /// Voters of the incoming and of the outgoing configuration.
      Conf: uint64 list * uint64 list
      Message: TraceMessage option
      ConfChange: TraceConfChange option
      /// A peer's progress (match, next) for replication events.
      Progress: (uint64 * uint64) option }

module TraceMessage =
    let ofMessage (m: Message) : TraceMessage =
        { Type = m.Type; Term = m.Term; From = m.From; To = m.To; EntryCount = m.Entries.Length
          LogTerm = m.LogTerm; Index = m.Index; Commit = m.Commit; Vote = m.Vote
          Reject = m.Reject; RejectHint = m.RejectHint }
