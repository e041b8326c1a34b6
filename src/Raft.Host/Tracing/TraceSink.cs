using Raft.Spec;

namespace Raft.Host.Tracing;

/// <summary>
/// Receives the trace events of nodes (etcd's TraceLogger), one per state transition, in the
/// order each node produced them. Called on the nodes' own threads: implementations shared by
/// several nodes must be thread-safe, and should be quick.
/// </summary>
public interface IRaftTraceSink
{
    void Write(TraceEvent traceEvent);
}

/// <summary>
/// Appends trace events to a file in etcd's ndjson format (one TracingEvent a line), the input
/// of the TLA+ trace validation. Safe to share between the nodes of a process.
/// </summary>
public sealed class NdjsonTraceFile : IRaftTraceSink, IAsyncDisposable, IDisposable
{
    private readonly Lock _lock = new();
    private readonly StreamWriter _writer;
    private readonly TimeProvider _clock;
    private bool _disposed;

    public NdjsonTraceFile(string path, TimeProvider? clock = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        _clock = clock ?? TimeProvider.System;
        var stream = new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.Read);
        _writer = new StreamWriter(stream) { NewLine = "\n" };
        Path = path;
    }

    public string Path { get; }

    /// <summary>
    /// Writes the run's options line (how the nodes started, see <see cref="TraceRunOptions"/>);
    /// trace validation reads it. Write it first, before any node of the run starts.
    /// </summary>
    public void WriteOptions(TraceRunOptions options)
    {
        var line = TraceNdjson.FormatOptions(options);
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _writer.WriteLine(line);
        }
    }

    public void Write(TraceEvent traceEvent)
    {
        var line = TraceNdjson.Format(traceEvent, _clock.GetUtcNow());
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _writer.WriteLine(line);
        }
    }

    /// <summary>Pushes buffered lines to the file.</summary>
    public void Flush()
    {
        lock (_lock) if (!_disposed) _writer.Flush();
    }

    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            _writer.Dispose();
        }
    }

    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }
}

/// <summary>How the nodes of a traced run started.</summary>
public enum TraceBoot
{
    /// <summary>etcd's Bootstrap (<see cref="Node.Start"/>): conf-change entries adding the voters, in order, at term 1.</summary>
    Entries,
    /// <summary>Storages seeded with a snapshot holding the configuration (the simulator's bootstrap).</summary>
    Snapshot,
}

/// <summary>
/// The options line of a trace (TraceRaft.tla reads it): how the run started and the settings
/// that change what the nodes may do. Nodes not among <see cref="Voters"/> start empty.
/// </summary>
public sealed record TraceRunOptions
{
    /// <summary>The initial voters, in the order they were bootstrapped.</summary>
    public required IReadOnlyList<ulong> Voters { get; init; }

    public TraceBoot Boot { get; init; } = TraceBoot.Entries;

    /// <summary>The snapshot the voters start from (<see cref="TraceBoot.Snapshot"/> only).</summary>
    public ulong BootIndex { get; init; }

    public ulong BootTerm { get; init; }

    public bool PreVote { get; init; }

    public bool CheckQuorum { get; init; }

    /// <summary>
    /// The nodes persisted through storage threads (<see cref="RaftNodeOptions.AsyncStorageWrites"/>):
    /// a crash may then lose the writes of several Readys, not only of the last one.
    /// </summary>
    public bool AsyncStorageWrites { get; init; }

    /// <summary>For people: how to run this again (a command line), or null.</summary>
    public string? Replay { get; init; }

    /// <summary>Throws <see cref="ArgumentException"/> naming what is wrong.</summary>
    public void Validate()
    {
        if (Voters.Count == 0) throw new ArgumentException("trace options: a run needs at least one initial voter", nameof(Voters));
        if (Voters.Contains(0UL)) throw new ArgumentException("trace options: 0 is not a node id", nameof(Voters));
        if (Voters.Distinct().Count() != Voters.Count) throw new ArgumentException("trace options: a voter is listed twice", nameof(Voters));
        if (Boot == TraceBoot.Snapshot && (BootIndex == 0 || BootTerm == 0))
            throw new ArgumentException("trace options: a snapshot bootstrap needs a snapshot index and term above 0", nameof(BootIndex));
    }
}
