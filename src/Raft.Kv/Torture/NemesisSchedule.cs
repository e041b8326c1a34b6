using System.Globalization;

namespace Raft.Kv.Torture;

/// <summary>How a fault's links are disturbed (partition faults only).</summary>
public enum LinkFault
{
    /// <summary>Connections are reset and new ones refused at once.</summary>
    Drop,
    /// <summary>Bytes are read and thrown away; connections stay open and silent.</summary>
    Blackhole,
    /// <summary>Bytes arrive late.</summary>
    Delay,
}

/// <summary>
/// One fault of the schedule: at <see cref="At"/> from the start it begins, after <see cref="Length"/>
/// it is healed. <see cref="Targets"/> are member indexes (0-based); <see cref="Links"/> the directed
/// peer links (from, to) a partition disturbs.
/// </summary>
public sealed record FaultStep(
    int Number,
    TimeSpan At,
    TimeSpan Length,
    NemesisKind Kind,
    string Variant,
    IReadOnlyList<int> Targets,
    IReadOnlyList<(int From, int To)> Links,
    LinkFault LinkFault = LinkFault.Drop,
    TimeSpan LinkDelay = default)
{
    /// <summary>"kill", "partition/halves", ...: the kind and variant counted in the summary.</summary>
    public string Name => Variant.Length == 0 ? KindName(Kind) : $"{KindName(Kind)}/{Variant}";

    public static string KindName(NemesisKind kind) => kind.ToString().ToLowerInvariant();

    public override string ToString()
    {
        var text = string.Create(CultureInfo.InvariantCulture, $"#{Number} at {At.TotalSeconds:F1}s for {Length.TotalSeconds:F1}s: {Name}");
        if (Targets.Count > 0) text += " nodes " + string.Join(",", Targets.Select(t => t + 1));
        if (Links.Count > 0)
        {
            text += $" {LinkFault.ToString().ToLowerInvariant()}";
            if (LinkFault == LinkFault.Delay) text += string.Create(CultureInfo.InvariantCulture, $" {LinkDelay.TotalMilliseconds:0}ms");
            text += " links " + string.Join(" ", Links.Select(l => $"{l.From + 1}->{l.To + 1}"));
        }
        return text;
    }
}

/// <summary>
/// The nemesis schedule as a pure function of the seed: faults one at a time, separated by quiet
/// spells, so a run can be replayed with the same faults at the same times (outcomes depend on timing).
/// "leader" variants name a fallback member, used when no leader is known when the fault starts.
/// </summary>
public static class NemesisSchedule
{
    public static IReadOnlyList<FaultStep> Generate(int seed, TimeSpan duration, int nodes, IReadOnlyList<NemesisKind> kinds)
    {
        var steps = new List<FaultStep>();
        if (kinds.Count == 0) return steps;
        var random = new Random(seed);
        var at = Seconds(random, 1.0, 2.5);
        // Leave the end quiet so the last fault is healed while clients still run.
        var end = duration - TimeSpan.FromSeconds(Math.Min(2, duration.TotalSeconds / 4));
        // Kinds come in rounds, each round every kind once in a shuffled order, so a short run
        // still meets every kind it was given.
        var round = new Queue<NemesisKind>();
        while (true)
        {
            if (round.Count == 0)
            {
                var order = kinds.ToArray();
                random.Shuffle(order);
                foreach (var k in order) round.Enqueue(k);
            }
            var kind = round.Dequeue();
            var length = Seconds(random, 1.5, 5.0);
            // A spare member needs the time to start, catch up and be promoted before its removal.
            if (kind == NemesisKind.Member) length += TimeSpan.FromSeconds(4);
            if (at + length > end) break;
            steps.Add(Make(steps.Count + 1, at, length, kind, nodes, random));
            at += length + Seconds(random, 1.0, 3.0);
        }
        return steps;
    }

    private static TimeSpan Seconds(Random random, double min, double max) =>
        TimeSpan.FromMilliseconds(Math.Round((min + random.NextDouble() * (max - min)) * 1000));

    private static FaultStep Make(int number, TimeSpan at, TimeSpan length, NemesisKind kind, int nodes, Random random)
    {
        var node = random.Next(nodes);
        switch (kind)
        {
            case NemesisKind.Kill:
            case NemesisKind.Pause:
                return new(number, at, length, kind, random.Next(2) == 0 ? "leader" : "node", [node], []);
            case NemesisKind.Postgres:
                return new(number, at, length, kind, random.Next(2) == 0 ? "fast" : "immediate", [], []);
            case NemesisKind.Transfer:
                // The storm's successive targets.
                return new(number, at, length, kind, "", [.. Enumerable.Range(0, 12).Select(_ => random.Next(nodes))], []);
            case NemesisKind.Partition:
                return Partition(number, at, length, nodes, random);
            case NemesisKind.Member:
                // Long enough for the spare to start, catch up and be promoted before its removal.
                return new(number, at, length, kind, random.Next(2) == 0 ? "learner" : "voter", [], []);
            default:
                throw new ArgumentOutOfRangeException(nameof(kind), kind, null);
        }
    }

    private static FaultStep Partition(int number, TimeSpan at, TimeSpan length, int nodes, Random random)
    {
        var order = Enumerable.Range(0, nodes).ToArray();
        random.Shuffle(order);
        var fault = random.Next(2) == 0 ? LinkFault.Drop : LinkFault.Blackhole;
        var variants = nodes >= 3 ? new[] { "halves", "bridge", "one-way", "isolate-in", "isolate-out", "slow" } : ["halves", "one-way", "slow"];
        var variant = variants[random.Next(variants.Length)];
        var links = new List<(int, int)>();
        void Cut(IEnumerable<int> a, IEnumerable<int> b)
        {
            foreach (var x in a)
            foreach (var y in b)
            {
                links.Add((x, y));
                links.Add((y, x));
            }
        }
        switch (variant)
        {
            case "halves":
            {
                // A minority (random size, at least one) against the majority.
                var minority = 1 + random.Next(Math.Max(1, nodes / 2));
                Cut(order[..minority], order[minority..]);
                break;
            }
            case "bridge":
            {
                // order[0] talks to everyone; the others split in two sides that cannot talk.
                var rest = order[1..];
                var side = Math.Max(1, rest.Length / 2);
                Cut(rest[..side], rest[side..]);
                break;
            }
            case "one-way":
                links.Add((order[0], order[1]));
                break;
            case "isolate-in":
                links.AddRange(order[1..].Select(x => (x, order[0])));
                break;
            case "isolate-out":
                links.AddRange(order[1..].Select(x => (order[0], x)));
                break;
            case "slow":
                for (var x = 0; x < nodes; x++)
                for (var y = 0; y < nodes; y++)
                    if (x != y) links.Add((x, y));
                return new(number, at, length, NemesisKind.Partition, variant, [], links, LinkFault.Delay,
                    TimeSpan.FromMilliseconds(50 + random.Next(350)));
        }
        return new(number, at, length, NemesisKind.Partition, variant, [], links, fault);
    }
}
