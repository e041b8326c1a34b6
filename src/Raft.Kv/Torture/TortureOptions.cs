using System.Globalization;

namespace Raft.Kv.Torture;

/// <summary>The kinds of fault the nemesis can inject.</summary>
public enum NemesisKind
{
    /// <summary>kill -9 a member (the leader or any), restart it later.</summary>
    Kill,
    /// <summary>SIGSTOP a member (the leader or any), SIGCONT it later.</summary>
    Pause,
    /// <summary>Cut, blackhole or slow peer links through the fault proxies (halves, bridge, one-way, slow).</summary>
    Partition,
    /// <summary>Restart the PostgreSQL server every member stores in (fast or immediate stop, then start).</summary>
    Postgres,
    /// <summary>A storm of leadership transfers (Maintenance.MoveLeader).</summary>
    Transfer,
    /// <summary>Membership changes under load: a spare member is added (as a learner then promoted, or
    /// as a voter at once), serves for a while, and is removed.</summary>
    Member,
}

/// <summary>What one 'raftv torture' run does.</summary>
public sealed record TortureOptions
{
    public TimeSpan Duration { get; init; } = TimeSpan.FromSeconds(30);
    public int Nodes { get; init; } = 3;
    public int Clients { get; init; } = 5;
    public int Keys { get; init; } = 5;
    public IReadOnlyList<NemesisKind> Nemesis { get; init; } = [];
    /// <summary>Where the history is written (JSON lines, docs/history-format.md).</summary>
    public required string HistoryPath { get; init; }
    /// <summary>Derives the nemesis schedule and the clients' choices; timing still varies between runs.</summary>
    public int Seed { get; init; }
    /// <summary>An existing PostgreSQL server (the run creates and drops its own databases); null: a private one is started.</summary>
    public string? PostgresConnection { get; init; }
    /// <summary>Folder for the private PostgreSQL and the members' logs; null: a new temporary folder, removed after a passing run.</summary>
    public string? DataDirectory { get; init; }
    /// <summary>The time one client request may take before the client gives up on it (and tries another member).</summary>
    public TimeSpan AttemptTimeout { get; init; } = TimeSpan.FromSeconds(1.5);
    /// <summary>The time a client spends on one operation, retries included; after it the outcome is unknown.</summary>
    public TimeSpan OperationBudget { get; init; } = TimeSpan.FromSeconds(4);
    public TimeSpan ConvergenceTimeout { get; init; } = TimeSpan.FromSeconds(90);
    public TimeSpan CheckTimeout { get; init; } = TimeSpan.FromSeconds(120);

    public void Validate()
    {
        if (Duration < TimeSpan.FromSeconds(1)) throw new ArgumentException($"the duration must be at least 1 s, not {Duration}");
        if (Nodes is < 1 or > 9) throw new ArgumentException($"nodes must be between 1 and 9, not {Nodes}");
        if (Clients is < 1 or > 200) throw new ArgumentException($"clients must be between 1 and 200, not {Clients}");
        if (Keys is < 1 or > 100) throw new ArgumentException($"keys must be between 1 and 100, not {Keys}");
        if (string.IsNullOrWhiteSpace(HistoryPath)) throw new ArgumentException("a history file is required");
        if (PostgresConnection is not null && Nemesis.Contains(NemesisKind.Postgres))
            throw new ArgumentException("the postgres nemesis restarts the server, so it needs the run's own PostgreSQL: leave out the external connection string");
        if (Nodes < 2 && (Nemesis.Contains(NemesisKind.Partition) || Nemesis.Contains(NemesisKind.Transfer)))
            throw new ArgumentException("partition and transfer faults need at least 2 nodes");
        if (AttemptTimeout <= TimeSpan.Zero || OperationBudget < AttemptTimeout)
            throw new ArgumentException("the attempt timeout must be positive and not longer than the operation budget");
    }

    public const string NemesisNames = "kill, pause, partition, postgres (or pg), transfer, member; 'all' for every one, 'none' for none";

    /// <summary>Reads a comma list of nemesis names.</summary>
    public static IReadOnlyList<NemesisKind> ParseNemesis(string text, bool ownPostgres)
    {
        var kinds = new List<NemesisKind>();
        foreach (var raw in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            switch (raw.ToLowerInvariant())
            {
                case "all":
                    kinds.AddRange([NemesisKind.Kill, NemesisKind.Pause, NemesisKind.Partition, NemesisKind.Transfer, NemesisKind.Member]);
                    if (ownPostgres) kinds.Add(NemesisKind.Postgres);
                    break;
                case "none": break;
                case "kill": kinds.Add(NemesisKind.Kill); break;
                case "pause": kinds.Add(NemesisKind.Pause); break;
                case "partition": kinds.Add(NemesisKind.Partition); break;
                case "postgres" or "pg": kinds.Add(NemesisKind.Postgres); break;
                case "transfer": kinds.Add(NemesisKind.Transfer); break;
                case "member" or "membership": kinds.Add(NemesisKind.Member); break;
                default:
                    throw new ArgumentException($"unknown nemesis '{raw}': use {NemesisNames}");
            }
        }
        return kinds.Distinct().Order().ToList();
    }

    /// <summary>Reads a duration: "30" or "30s" (seconds), "500ms", "2m".</summary>
    public static TimeSpan ParseDuration(string text)
    {
        var t = text.Trim();
        var (number, scale) = t.EndsWith("ms", StringComparison.Ordinal) ? (t[..^2], 0.001)
            : t.EndsWith('s') ? (t[..^1], 1.0)
            : t.EndsWith('m') ? (t[..^1], 60.0)
            : (t, 1.0);
        if (!double.TryParse(number, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) || value <= 0 || value > 86400 / scale)
            throw new ArgumentException($"'{text}' is not a duration (e.g. 30s, 500ms, 2m)");
        return TimeSpan.FromSeconds(value * scale);
    }
}
