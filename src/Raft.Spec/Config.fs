/// The parameters of a Raft node (etcd's raft.Config) and their validation.
namespace Raft.Spec

/// How read-only requests (ReadIndex) are confirmed (etcd's ReadOnlyOption).
type ReadOnlyOption =
    /// Confirmed by a round of heartbeats to a quorum: linearizable whatever the clocks do.
    | ReadOnlySafe
    /// Answered from the leader lease: relies on bounded clock drift; needs CheckQuorum.
    | ReadOnlyLeaseBased

type Config =
    { /// The identity of the local node; never 0 nor a local storage thread id.
      Id: uint64
      /// Ticks without hearing from a leader before a follower campaigns; must exceed HeartbeatTick.
      ElectionTick: int
      /// Ticks between the leader's heartbeats.
      HeartbeatTick: int
      /// Where the log, hard state and configuration are read from at start.
      Storage: IStorage
      /// The last applied index, set when restarting so that applied entries are not handed out again.
      Applied: uint64
      /// Storage writes through MsgStorageAppend/MsgStorageApply messages instead of Ready/Advance.
      AsyncStorageWrites: bool
      /// Byte limit of the entries of one MsgApp; UInt64.MaxValue for unlimited, 0 for one entry per message.
      MaxSizePerMsg: uint64
      /// Byte limit of the committed entries being applied at once; 0 means MaxSizePerMsg.
      MaxCommittedSizePerReady: uint64
      /// Byte limit of the uncommitted tail of a leader's log; 0 for no limit.
      MaxUncommittedEntriesSize: uint64
      /// Number of MsgApp in flight to one follower in StateReplicate.
      MaxInflightMsgs: int
      /// Bytes of entries in flight to one follower; 0 for no limit.
      MaxInflightBytes: uint64
      /// The leader steps down when a quorum was not active during an election timeout.
      CheckQuorum: bool
      /// Run the pre-vote phase (thesis 9.6) before real elections.
      PreVote: bool
      ReadOnlyOption: ReadOnlyOption
      /// Followers drop proposals instead of forwarding them to the leader.
      DisableProposalForwarding: bool
      /// Skip the propose-time checks of conf changes against the active configuration.
      DisableConfChangeValidation: bool
      /// A leader removed from (or demoted in) the configuration steps down.
      StepDownOnRemoval: bool
      /// Seed of the node's own pseudo-random generator for randomized election timeouts,
      /// so that runs are reproducible (etcd draws from a global random source).
      RandomSeed: uint64
      /// Record trace events (etcd's TraceLogger being set).
      Tracing: bool }

module Config =
    /// etcd's noLimit.
    [<Literal>]
    let NoLimit = System.UInt64.MaxValue

    /// A configuration with etcd's usual values: election after 10 ticks, heartbeat every tick,
    /// no size limits, 256 messages in flight.
    let create (id: uint64) (storage: IStorage) : Config =
        { Id = id
          ElectionTick = 10
          HeartbeatTick = 1
          Storage = storage
          Applied = 0UL
          AsyncStorageWrites = false
          MaxSizePerMsg = NoLimit
          MaxCommittedSizePerReady = 0UL
          MaxUncommittedEntriesSize = 0UL
          MaxInflightMsgs = 256
          MaxInflightBytes = 0UL
          CheckQuorum = false
          PreVote = false
          ReadOnlyOption = ReadOnlySafe
          DisableProposalForwarding = false
          DisableConfChangeValidation = false
          StepDownOnRemoval = false
          RandomSeed = id
          Tracing = false }

    /// etcd's Config.validate: the first violated rule as etcd's error text, or the
    /// configuration with its defaults filled in (0 limits become unlimited or MaxSizePerMsg).
    let validate (c: Config) : Result<Config, string> =
        if c.Id = NodeId.None then Error "cannot use none as id"
        elif NodeId.isLocalThread c.Id then Error "cannot use local target as id"
        elif c.HeartbeatTick <= 0 then Error "heartbeat tick must be greater than 0"
        elif c.ElectionTick <= c.HeartbeatTick then Error "election tick must be greater than heartbeat tick"
        elif isNull (box c.Storage) then Error "storage cannot be nil"
        elif c.MaxInflightMsgs <= 0 then Error "max inflight messages must be greater than 0"
        elif c.MaxInflightBytes <> 0UL && c.MaxInflightBytes < c.MaxSizePerMsg then
            Error "max inflight bytes must be >= max message size"
        elif c.ReadOnlyOption = ReadOnlyLeaseBased && not c.CheckQuorum then
            Error "CheckQuorum must be enabled when ReadOnlyOption is ReadOnlyLeaseBased"
        else
            Ok
                { c with
                    MaxUncommittedEntriesSize =
                        if c.MaxUncommittedEntriesSize = 0UL then NoLimit else c.MaxUncommittedEntriesSize
                    MaxCommittedSizePerReady =
                        if c.MaxCommittedSizePerReady = 0UL then c.MaxSizePerMsg else c.MaxCommittedSizePerReady
                    MaxInflightBytes = if c.MaxInflightBytes = 0UL then NoLimit else c.MaxInflightBytes }
