namespace Raft.Host.Tests;

public class OptionsTests
{
    private static readonly RaftNodeOptions Valid = new() { Id = 1 };

    public static TheoryData<RaftNodeOptions, string> Invalid => new()
    {
        { Valid with { Id = 0 }, "cannot use none as id" },
        { Valid with { Id = ulong.MaxValue }, "cannot use local target as id" },
        { Valid with { HeartbeatTick = 0 }, "heartbeat tick must be greater than 0" },
        { Valid with { ElectionTick = 1, HeartbeatTick = 1 }, "election tick must be greater than heartbeat tick" },
        { Valid with { MaxInflightMsgs = 0 }, "max inflight messages must be greater than 0" },
        { Valid with { MaxSizePerMsg = 1024, MaxInflightBytes = 100 }, "max inflight bytes must be >= max message size" },
        { Valid with { ReadOnly = ReadOnlyMode.LeaseBased }, "CheckQuorum must be enabled when ReadOnlyOption is ReadOnlyLeaseBased" },
        { Valid with { TickInterval = TimeSpan.Zero }, "tick interval must be positive" },
    };

    [Theory]
    [MemberData(nameof(Invalid))]
    public void Invalid_options_are_refused_with_etcds_reason(RaftNodeOptions options, string reason)
    {
        var ex = Assert.Throws<ArgumentException>(options.Validate);
        Assert.Contains(reason, ex.Message);
        Assert.StartsWith("invalid raft node options: ", ex.Message);
        // Creating a node checks the same rules before touching the storage.
        ex = Assert.Throws<ArgumentException>(() => RawNode.Create(options, new MemoryStorage()));
        Assert.Contains(reason, ex.Message);
    }

    [Fact]
    public void Valid_options_map_onto_the_core_configuration()
    {
        var options = Valid with
        {
            Id = 7, ElectionTick = 20, HeartbeatTick = 2, PreVote = true, CheckQuorum = true,
            ReadOnly = ReadOnlyMode.LeaseBased, AsyncStorageWrites = true, MaxUncommittedEntriesSize = 1 << 20,
            RandomSeed = 42, TickInterval = TimeSpan.FromMilliseconds(100),
        };
        options.Validate();
        var config = options.ToConfig(new MemoryStorage(), tracing: true);
        Assert.Equal(7UL, config.Id);
        Assert.Equal(20, config.ElectionTick);
        Assert.Equal(2, config.HeartbeatTick);
        Assert.True(config.PreVote && config.CheckQuorum && config.AsyncStorageWrites && config.Tracing);
        Assert.True(config.ReadOnlyOption.IsReadOnlyLeaseBased);
        Assert.Equal(1UL << 20, config.MaxUncommittedEntriesSize);
        Assert.Equal(42UL, config.RandomSeed);
        Assert.Equal(7UL, (Valid with { Id = 7 }).ToConfig(new MemoryStorage(), false).RandomSeed);
    }
}
