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
