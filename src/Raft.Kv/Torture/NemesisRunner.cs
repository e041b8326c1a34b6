using System.Diagnostics;
using Raft.Kv.Etcd.Serverpb;
using Raft.Transport.Grpc.Wire;

namespace Raft.Kv.Torture;

/// <summary>Plays a <see cref="NemesisSchedule"/> against a <see cref="TortureCluster"/>, one fault at a time, logging each.</summary>
internal sealed class NemesisRunner(TortureCluster cluster, IReadOnlyList<FaultStep> steps, Action<string> log)
{
    private readonly Dictionary<string, int> _injected = [];

    /// <summary>Faults injected, by kind/variant.</summary>
    public IReadOnlyDictionary<string, int> Injected => _injected;
    public int Transfers { get; private set; }
    /// <summary>Membership changes that took effect: spare members added, promoted and removed.</summary>
    public int MemberChanges { get; private set; }

    public async Task RunAsync(Stopwatch clock, CancellationToken stop)
    {
        foreach (var step in steps)
        {
            var wait = step.At - clock.Elapsed;
            try
            {
                if (wait > TimeSpan.Zero) await Task.Delay(wait, stop);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            var detail = await BeginAsync(step, stop);
            _injected[step.Name] = _injected.GetValueOrDefault(step.Name) + 1;
            log($"{clock.Elapsed.TotalSeconds,7:F1}s nemesis begins {step}{detail}");
            try
            {
                if (step.Kind == NemesisKind.Transfer) await StormAsync(step, clock, stop);
                else if (step.Kind == NemesisKind.Member && step.Variant == "learner" && cluster.SpareId is not null) await PromoteWhenReadyAsync(step, clock, stop);
                else await Task.Delay(step.Length, stop);
            }
            catch (OperationCanceledException)
            {
            }
            await HealAsync(step, CancellationToken.None);
            log($"{clock.Elapsed.TotalSeconds,7:F1}s nemesis heals #{step.Number}{(step.Kind == NemesisKind.Transfer ? $" ({Transfers} leadership transfers done so far)" : "")}");
            if (stop.IsCancellationRequested) return;
        }
    }

    private int _target;

    private async Task<string> BeginAsync(FaultStep step, CancellationToken ct)
    {
        switch (step.Kind)
        {
            case NemesisKind.Kill:
            case NemesisKind.Pause:
            {
                _target = step.Targets[0];
                var note = "";
                if (step.Variant == "leader")
                {
                    var leader = await cluster.LeaderAsync(ct);
                    if (leader is { } l) _target = l;
                    note = leader is null ? $" (no leader known: node {_target + 1})" : $" (leader is node {_target + 1})";
                }
                if (step.Kind == NemesisKind.Kill) await cluster.KillAsync(_target);
                else cluster.Pause(_target);
                return note;
            }
            case NemesisKind.Partition:
                cluster.SetLinks(step.Links, step.LinkFault, step.LinkDelay);
                return "";
            case NemesisKind.Postgres:
                await cluster.StopPostgresAsync(step.Variant == "immediate", ct);
                return "";
            case NemesisKind.Transfer:
                return "";
            case NemesisKind.Member:
                try
                {
                    var id = await cluster.AddSpareAsync(step.Variant == "learner", TimeSpan.FromSeconds(10), ct);
                    MemberChanges++;
                    return $" (spare member {id:x} added as a {step.Variant})";
                }
                catch (Exception e) when (e is GrpcCallException or TimeoutException && !ct.IsCancellationRequested)
                {
                    return $" (adding the spare member failed: {e.Message})";
                }
            default:
                throw new ArgumentOutOfRangeException(nameof(step));
        }
    }

    private async Task HealAsync(FaultStep step, CancellationToken ct)
    {
        switch (step.Kind)
        {
            case NemesisKind.Kill:
                cluster.Restart(_target);
                break;
            case NemesisKind.Pause:
                cluster.Resume(_target);
                break;
            case NemesisKind.Partition:
                cluster.HealLinks();
                break;
            case NemesisKind.Postgres:
                await cluster.StartPostgresAsync(ct);
                break;
            case NemesisKind.Member:
                if (cluster.SpareId is { } id)
                {
                    try
                    {
                        await cluster.RemoveSpareAsync(TimeSpan.FromSeconds(30), ct);
                        MemberChanges++;
                    }
                    catch (Exception e) when (e is GrpcCallException or TimeoutException)
                    {
                        log($"removing the spare member {id:x} failed: {e.Message}");
                    }
                }
                break;
        }
    }

    /// <summary>While a spare learner is in the cluster, promotes it as soon as the leader allows (it must have caught up).</summary>
    private async Task PromoteWhenReadyAsync(FaultStep step, Stopwatch clock, CancellationToken stop)
    {
        var end = clock.Elapsed + step.Length;
        while (clock.Elapsed < end && !stop.IsCancellationRequested)
        {
            if (await cluster.TryPromoteSpareAsync(stop))
            {
                MemberChanges++;
                log($"{clock.Elapsed.TotalSeconds,7:F1}s spare member {cluster.SpareId:x} promoted to voter");
                break;
            }
            await Task.Delay(300, stop);
        }
        var rest = end - clock.Elapsed;
        if (rest > TimeSpan.Zero) await Task.Delay(rest, stop);
    }

    /// <summary>Asks the leader to hand leadership to the step's targets in turn, as fast as it answers.</summary>
    private async Task StormAsync(FaultStep step, Stopwatch clock, CancellationToken stop)
    {
        var end = clock.Elapsed + step.Length;
        var i = 0;
        while (clock.Elapsed < end && !stop.IsCancellationRequested)
        {
            var target = step.Targets[i++ % step.Targets.Count];
            var leader = await cluster.LeaderAsync(stop);
            if (leader is { } l && l != target)
            {
                try
                {
                    await cluster.Endpoints[l].CallAsync(EtcdEndpoint.MoveLeader, new MoveLeaderRequest { TargetID = (ulong)(target + 1) },
                        TimeSpan.FromSeconds(3), stop);
                    Transfers++;
                }
                catch (Exception e) when (e is GrpcCallException or OperationCanceledException && !stop.IsCancellationRequested)
                {
                    log($"{clock.Elapsed.TotalSeconds,7:F1}s move leader {l + 1} -> {target + 1}: {e.Message}");
                }
            }
            await Task.Delay(200, stop);
        }
    }
}
