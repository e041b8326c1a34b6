/// The vocabulary of a client-observed history of a key-value store: events as a client
/// records them (docs/history-format.md), and operations made of an invocation and its
/// completion.
namespace Raft.Check

/// A register value: a JSON scalar (string, number, true or false) kept as canonical JSON
/// text, so that values compare by text and print as they were written. "Absent" (JSON null)
/// is `None` wherever a `Value option` appears.
[<Struct>]
type Value =
    | Value of string

    override this.ToString() =
        let (Value text) = this
        text

module Value =
    let text (Value t) = t

    /// How an optional value prints: its JSON text, or `null` for absent.
    let show (v: Value option) =
        match v with
        | Some (Value t) -> t
        | None -> "null"

/// The operation a client asked for.
type Fn =
    | Put
    | Get
    | Cas

/// What an event says about its operation: Jepsen's and Porcupine's meanings. Qualified
/// access keeps `Ok` from hiding Result's.
[<RequireQualifiedAccess>]
type EventType =
    /// The client sent the request.
    | Invoke
    /// The operation took effect (for a get: and returned the value given).
    | Ok
    /// The operation certainly did not take effect.
    | Fail
    /// The outcome is unknown: it may take effect at any time after its invocation, or never.
    | Info

/// The `value` field of an event, already interpreted for its function.
type EventValue =
    /// No value: a get's invocation, or a completion that does not repeat its invocation's.
    | NoValue
    /// One value, possibly absent: what a put writes, or what a get returned.
    | One of Value option
    /// A compare-and-set's pair: the value expected and the value written.
    | Pair of expected: Value option * updated: Value option

/// One line of a history.
type Event =
    { /// 1-based line number in the input, for error messages and reports.
      Line: int
      Process: int
      Type: EventType
      F: Fn
      Key: string
      Value: EventValue
      /// Nanoseconds on a clock shared by all processes.
      Time: int64 }

/// What an operation asked for.
type Command =
    | Write of Value option
    | Read
    | CompareAndSet of expected: Value option * updated: Value option

/// How an operation ended, as far as the client knows.
type Outcome =
    /// Took effect; `read` is what a get returned (None for absent; always None for writes).
    | Succeeded of at: int64 * read: Value option
    /// Certainly did not take effect.
    | Failed of at: int64
    /// May or may not take effect, at any time after the invocation: an "info" completion
    /// (its time recorded) or no completion at all by the end of the history.
    | Indeterminate of at: int64 option

/// An invocation paired with its completion.
type Operation =
    { /// Position in invocation order over the whole history (0-based); names the operation in reports.
      Index: int
      Process: int
      Key: string
      Command: Command
      Invoked: int64
      Outcome: Outcome
      InvokeLine: int
      CompleteLine: int option }

/// A history that cannot be read: the line (1-based; 0 when not about one line) and why.
type HistoryError = { Line: int; Message: string }
