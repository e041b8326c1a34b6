using System.Diagnostics;
using System.Reflection;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;

namespace Raft.Transport.Grpc.Tests;

/// <summary>The answer of the grpc-js peer to one client command.</summary>
public sealed record NodeCallResult(bool Ok, int Code, string Details, IReadOnlyList<NodeReply> Replies);

public sealed record NodeReply(string Text, int Index, int PaddingBytes);

/// <summary>
/// The grpc-js peer (interop/peer.js) as a child process: it serves interop.v1.Echo and runs
/// client calls on command. Node and npm are required; their absence fails the tests loudly.
/// </summary>
public sealed class NodePeer : IAsyncDisposable
{
    private static readonly SemaphoreSlim InstallLock = new(1, 1);
    private static bool _installed;

    private readonly Process _process;
    private readonly Dictionary<int, TaskCompletionSource<JsonObject>> _pending = new();
    private readonly StringBuilder _stderr;
    private readonly Task _reader;
    private int _nextId;

    public static string InteropDirectory { get; } =
        typeof(NodePeer).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == "InteropDirectory").Value!;

    private NodePeer(Process process, int port, Channel<string> lines, StringBuilder stderr)
    {
        _process = process;
        _stderr = stderr;
        Port = port;
        _reader = Task.Run(async () =>
        {
            await foreach (var line in lines.Reader.ReadAllAsync().ConfigureAwait(false))
            {
                var answer = JsonNode.Parse(line)!.AsObject();
                TaskCompletionSource<JsonObject>? waiter = null;
                lock (_pending)
                    if (answer["id"] is { } id && _pending.Remove(id.GetValue<int>(), out var w)) waiter = w;
                waiter?.TrySetResult(answer);
            }
            lock (_pending)
            {
                foreach (var w in _pending.Values) w.TrySetException(new InvalidOperationException($"the grpc-js peer exited: {Stderr()}"));
                _pending.Clear();
            }
        });
    }

    private string Stderr()
    {
        lock (_stderr) return _stderr.ToString();
    }

    /// <summary>The port of the peer's Echo server on 127.0.0.1.</summary>
    public int Port { get; }

    public static async Task<NodePeer> StartAsync(int maxMessageBytes)
    {
        await EnsureInstalledAsync().ConfigureAwait(false);
        var start = new ProcessStartInfo("node")
        {
            WorkingDirectory = InteropDirectory,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add("peer.js");
        start.ArgumentList.Add(maxMessageBytes.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var process = Process.Start(start) ?? throw new InvalidOperationException("node could not be started");
        var lines = Channel.CreateUnbounded<string>();
        var stderr = new StringBuilder();
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (stderr) stderr.AppendLine(e.Data); };
        process.BeginErrorReadLine();
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) lines.Writer.TryComplete();
            else lines.Writer.TryWrite(e.Data);
        };
        process.BeginOutputReadLine();

        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        string first;
        try
        {
            first = await lines.Reader.ReadAsync(timeout.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is OperationCanceledException or ChannelClosedException)
        {
            process.Kill(entireProcessTree: true);
            throw new InvalidOperationException($"the grpc-js peer did not start: {stderr}", e);
        }
        var port = JsonNode.Parse(first)!["port"]!.GetValue<int>();
        return new NodePeer(process, port, lines, stderr);
    }

    /// <summary>Runs a grpc-js client call (see peer.js for the command's fields).</summary>
    public async Task<NodeCallResult> CallAsync(JsonObject command)
    {
        var id = Interlocked.Increment(ref _nextId);
        command["id"] = id;
        var answer = new TaskCompletionSource<JsonObject>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_pending) _pending[id] = answer;
        await _process.StandardInput.WriteLineAsync(command.ToJsonString()).ConfigureAwait(false);
        await _process.StandardInput.FlushAsync().ConfigureAwait(false);
        var result = await answer.Task.WaitAsync(TimeSpan.FromSeconds(30)).ConfigureAwait(false);
        var replies = result["replies"] is JsonArray array
            ? array.Select(r => new NodeReply(r!["text"]!.GetValue<string>(), r["index"]!.GetValue<int>(), r["paddingBytes"]!.GetValue<int>())).ToList()
            : [];
        return new NodeCallResult(result["ok"]!.GetValue<bool>(), result["code"]?.GetValue<int>() ?? 0,
            result["details"]?.GetValue<string>() ?? "", replies);
    }

    /// <summary>Installs grpc-js (npm ci) when node_modules is missing; fails clearly when node or npm is absent.</summary>
    private static async Task EnsureInstalledAsync()
    {
        await InstallLock.WaitAsync().ConfigureAwait(false);
        try
        {
            if (_installed) return;
            var (nodeOk, nodeOutput) = await RunAsync("node", "--version").ConfigureAwait(false);
            if (!nodeOk)
                throw new InvalidOperationException($"Node.js is required by the gRPC interop tests but `node --version` failed: {nodeOutput}. Install Node.js 18+ and npm.");
            if (!File.Exists(Path.Combine(InteropDirectory, "node_modules", "@grpc", "grpc-js", "package.json"))
                || !File.Exists(Path.Combine(InteropDirectory, "node_modules", "@grpc", "proto-loader", "package.json")))
            {
                var (npmOk, npmOutput) = await RunAsync("npm", "ci", "--no-audit", "--no-fund").ConfigureAwait(false);
                if (!npmOk)
                    throw new InvalidOperationException($"`npm ci` in {InteropDirectory} failed (npm and the npm registry are required by the gRPC interop tests): {npmOutput}");
            }
            _installed = true;
        }
        finally
        {
            InstallLock.Release();
        }
    }

    private static async Task<(bool Ok, string Output)> RunAsync(string file, params string[] arguments)
    {
        var start = new ProcessStartInfo(file)
        {
            WorkingDirectory = InteropDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in arguments) start.ArgumentList.Add(a);
        try
        {
            using var process = Process.Start(start)!;
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            await process.WaitForExitAsync().ConfigureAwait(false);
            return (process.ExitCode == 0, (await stdout.ConfigureAwait(false)) + (await stderr.ConfigureAwait(false)));
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return (false, $"{file} was not found on PATH ({e.Message})");
        }
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            _process.StandardInput.Close(); // peer.js exits when its stdin closes
            using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await _process.WaitForExitAsync(wait.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            _process.Kill(entireProcessTree: true);
        }
        await _reader.ConfigureAwait(false);
        _process.Dispose();
    }
}
