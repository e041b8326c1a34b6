using System.Diagnostics;
using System.Threading.Channels;
using Raft.Host;
using Raft.Kv.Cli;
using Raft.Spec;

namespace Raft.Kv.Bench;

/// <summary>
/// 'raftv bench node': proposals committed per second through <see cref="Node"/> (its channel-fed
/// loop, one application loop per node doing persist, send, apply, advance) in a 3-node
/// in-process cluster over in-memory channels and <see cref="Raft.Host.MemoryStorage"/>, next to
/// the bare F# core driving the same cluster synchronously (<see cref="CoreBench.run"/>). The
/// ratio is what the host (threads, channels, tasks) costs on top of the core.
/// </summary>
public static class NodeBenchmark
{
    public const string Usage = "raftv bench node [--seconds N] [--batch B]";

    private static readonly byte[] Payload = new byte[16];

    public static async Task<int> Run(CommandArgs args, TextWriter stdout, CancellationToken ct)
    {
        var seconds = args.IntOption("--seconds") ?? 3;
        var batch = args.IntOption("--batch");
        args.EnsureNoneLeft();
        if (seconds < 1) throw new CommandArgsException("--seconds must be at least 1");
        if (batch is < 1) throw new CommandArgsException("--batch must be at least 1");

        stdout.WriteLine($"node vs core: 3 nodes in memory (MemoryStorage, synchronous Ready handling), 16-byte proposals, batch = proposals per round, {seconds} s each");
        stdout.WriteLine($"  {"batch",5} {"Node (entries/s)",18} {"core (entries/s)",18} {"core/Node",10}");
        foreach (var b in batch is { } only ? new[] { only } : new[] { 1, 64 })
        {
            // Short runs first, so that the figures do not include JIT compilation.
            await MeasureNodeAsync(TimeSpan.FromMilliseconds(300), b, ct);
            var node = await MeasureNodeAsync(TimeSpan.FromSeconds(seconds), b, ct);
            var core = MeasureCore(TimeSpan.FromSeconds(seconds), b);
            stdout.WriteLine($"  {b,5} {node,18:F0} {core,18:F0} {core / node,10:F1}");
        }
        return 0;
    }

    /// <summary>Runs <see cref="CoreBench.run"/> for about <paramref name="duration"/>, sized from a short run.</summary>
    private static double MeasureCore(TimeSpan duration, int batch)
    {
        var probe = CoreBench.run(Math.Max(batch, 2000), batch);
        var entries = (int)Math.Clamp(probe.EntriesPerSecond * duration.TotalSeconds, batch, 50_000_000);
        return CoreBench.run(entries, batch).EntriesPerSecond;
    }

    /// <summary>Proposes <paramref name="batch"/> entries on the leader, waits until they are applied there, and again.</summary>
    private static async Task<double> MeasureNodeAsync(TimeSpan duration, int batch, CancellationToken ct)
    {
        await using var cluster = new BenchCluster();
        var leader = await cluster.ElectAsync(ct);
        var proposals = new Task[batch];
        long proposed = 0;
        var clock = Stopwatch.StartNew();
        var start = leader.AppliedData;
        while (clock.Elapsed < duration)
        {
            for (var i = 0; i < batch; i++) proposals[i] = leader.Node.ProposeAsync(Payload, ct);
            await Task.WhenAll(proposals);
            proposed += batch;
            await leader.WaitForAppliedAsync(start + proposed, ct);
        }
        clock.Stop();
        return proposed / clock.Elapsed.TotalSeconds;
    }

    private sealed class BenchCluster : IAsyncDisposable
    {
        private readonly CancellationTokenSource _stop = new();
        private readonly List<Task> _loops = [];

        public BenchCluster()
        {
            ulong[] ids = [1, 2, 3];
            foreach (var id in ids)
            {
                var options = new RaftNodeOptions { Id = id, ElectionTick = 10, HeartbeatTick = 1, MaxSizePerMsg = 1024 * 1024, MaxInflightMsgs = 256 };
                Members.Add(new BenchMember(options, ids));
            }
            foreach (var m in Members)
            {
                _loops.Add(Task.Run(() => m.ReceiveAsync(_stop.Token)));
                _loops.Add(Task.Run(() => m.ReadyLoopAsync(Members, _stop.Token)));
            }
        }

        public List<BenchMember> Members { get; } = [];

        public async Task<BenchMember> ElectAsync(CancellationToken ct)
        {
            var leader = Members[0];
            // A node with bootstrap conf changes still to apply refuses to campaign (as etcd does).
            while (true)
            {
                var s = await leader.Node.StatusAsync(ct);
                if (s.Applied >= s.Commit) break;
                await Task.Delay(1, ct);
            }
            await leader.Node.CampaignAsync(ct);
            // No ticks: nothing else campaigns, so the leader is 1 once it says so.
            while (!(await leader.Node.StatusAsync(ct)).IsLeader) await Task.Delay(1, ct);
            // Its empty entry of the new term is applied before the measurement starts.
            while (true)
            {
                var s = await leader.Node.StatusAsync(ct);
                if (s.Commit > 0 && s.Applied >= s.Commit) return leader;
                await Task.Delay(1, ct);
            }
        }

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            foreach (var m in Members) await m.Node.StopAsync();
            try
            {
                await Task.WhenAll(_loops);
            }
            catch (Exception e) when (e is OperationCanceledException or NodeStoppedException)
            {
            }
            _stop.Dispose();
        }
    }

    private sealed class BenchMember
    {
        private readonly Channel<Message> _inbox = Channel.CreateUnbounded<Message>(new UnboundedChannelOptions { SingleReader = true });
        private readonly Raft.Host.MemoryStorage _storage = new();
        private long _appliedData;
        private TaskCompletionSource _appliedChanged = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public BenchMember(RaftNodeOptions options, IReadOnlyCollection<ulong> peers) => Node = Node.Start(options, _storage, peers);

        public Node Node { get; }

        public long AppliedData => Interlocked.Read(ref _appliedData);

        public async Task WaitForAppliedAsync(long count, CancellationToken ct)
        {
            while (true)
            {
                var changed = Volatile.Read(ref _appliedChanged);
                if (AppliedData >= count) return;
                await changed.Task.WaitAsync(ct);
            }
        }

        public async Task ReceiveAsync(CancellationToken ct)
        {
            try
            {
                await foreach (var m in _inbox.Reader.ReadAllAsync(ct)) await Node.StepAsync(m, ct);
            }
            catch (Exception e) when (e is OperationCanceledException or NodeStoppedException)
            {
            }
        }

        /// <summary>etcd's doc.go loop: persist, send, apply, advance.</summary>
        public async Task ReadyLoopAsync(IReadOnlyList<BenchMember> members, CancellationToken ct)
        {
            try
            {
                while (true)
                {
                    var rd = await Node.ReadyAsync(ct);
                    _storage.Save(rd);
                    foreach (var m in rd.Messages) members[(int)m.To - 1]._inbox.Writer.TryWrite(m);
                    var applied = 0;
                    foreach (var e in rd.CommittedEntries)
                    {
                        if (e.TryGetConfChange(out var cc)) await Node.ApplyConfChangeAsync(cc, ct);
                        else if (e.Data.Length > 0) applied++;
                    }
                    if (applied > 0)
                    {
                        Interlocked.Add(ref _appliedData, applied);
                        Interlocked.Exchange(ref _appliedChanged, new(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
                    }
                    Node.Advance();
                }
            }
            catch (Exception e) when (e is OperationCanceledException or NodeStoppedException)
            {
            }
        }
    }
}
