/// Config.validate: etcd's rules, error texts and defaults.
module Raft.Spec.Tests.ConfigTests

open Xunit
open Raft.Spec

let private valid = Config.create 1UL (MemoryStorage.asStorage MemoryStorage.empty)

let private errorOf (c: Config) =
    match Config.validate c with
    | Error e -> e
    | Ok _ -> "<valid>"

[<Fact>]
let ``each rule reports etcd's error`` () =
    Assert.Equal("cannot use none as id", errorOf { valid with Id = 0UL })
    Assert.Equal("cannot use local target as id", errorOf { valid with Id = NodeId.LocalAppendThread })
    Assert.Equal("cannot use local target as id", errorOf { valid with Id = NodeId.LocalApplyThread })
    Assert.Equal("heartbeat tick must be greater than 0", errorOf { valid with HeartbeatTick = 0 })
    Assert.Equal("election tick must be greater than heartbeat tick", errorOf { valid with ElectionTick = 1; HeartbeatTick = 1 })
    Assert.Equal("storage cannot be nil", errorOf { valid with Storage = Unchecked.defaultof<IStorage> })
    Assert.Equal("max inflight messages must be greater than 0", errorOf { valid with MaxInflightMsgs = 0 })
    Assert.Equal(
        "max inflight bytes must be >= max message size",
        errorOf { valid with MaxSizePerMsg = 100UL; MaxInflightBytes = 99UL }
    )
    Assert.Equal(
        "CheckQuorum must be enabled when ReadOnlyOption is ReadOnlyLeaseBased",
        errorOf { valid with ReadOnlyOption = ReadOnlyLeaseBased }
    )

[<Fact>]
let ``zero limits get etcd's defaults`` () =
    let c = { valid with MaxSizePerMsg = 1024UL } |> Config.validate |> Tests.RaftTestNet.okOr
    Assert.Equal(Config.NoLimit, c.MaxUncommittedEntriesSize)
    Assert.Equal(1024UL, c.MaxCommittedSizePerReady)
    Assert.Equal(Config.NoLimit, c.MaxInflightBytes)
    let c = { valid with MaxCommittedSizePerReady = 7UL; MaxInflightBytes = System.UInt64.MaxValue } |> Config.validate |> Tests.RaftTestNet.okOr
    Assert.Equal(7UL, c.MaxCommittedSizePerReady)
