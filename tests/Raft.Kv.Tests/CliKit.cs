using System.Diagnostics;
using System.Text;
using Raft.Kv.Server;

namespace Raft.Kv.Tests;

/// <summary>The raftv command line as a separate process ('dotnet raftv.dll ...'), as a person runs it.</summary>
internal static class CliKit
{
    public static string RaftvDll => typeof(KvServer).Assembly.Location;

    public sealed record Result(int Exit, string Out, string Err)
    {
        public override string ToString() => $"exit {Exit}\n--- stdout\n{Out}\n--- stderr\n{Err}";
    }

    /// <summary>Runs raftv to completion (killed after <paramref name="timeoutSeconds"/>), with <paramref name="stdin"/> as its input.</summary>
    public static async Task<Result> RunAsync(string[] args, string? stdin = null, int timeoutSeconds = 120, IDictionary<string, string>? environment = null)
    {
        var info = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add(RaftvDll);
        foreach (var a in args) info.ArgumentList.Add(a);
        if (environment is not null)
            foreach (var (k, v) in environment) info.Environment[k] = v;
        using var process = Process.Start(info)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        if (stdin is not null) await process.StandardInput.WriteAsync(stdin);
        process.StandardInput.Close();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(timeoutSeconds));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"raftv {string.Join(' ', args)} did not finish within {timeoutSeconds} s\n{await output}\n{await error}");
        }
        return new Result(process.ExitCode, (await output).Replace("\r", ""), (await error).Replace("\r", ""));
    }

    /// <summary>A raftv process left running (a member, or 'up' in the foreground), its output collected.</summary>
    public sealed class Running : IAsyncDisposable
    {
        private readonly StringBuilder _log = new();
        private readonly List<(string Text, TaskCompletionSource Seen)> _waits = [];

        public Running(string[] args, IDictionary<string, string>? environment = null, bool defaultSignals = false)
        {
            // env --default-signal: a test host started in the background ignores SIGINT, and children would inherit that.
            var info = new ProcessStartInfo(defaultSignals ? "env" : "dotnet")
            {
                RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false,
            };
            if (defaultSignals) { info.ArgumentList.Add("--default-signal=INT"); info.ArgumentList.Add("dotnet"); }
            info.ArgumentList.Add(RaftvDll);
            foreach (var a in args) info.ArgumentList.Add(a);
            if (environment is not null)
                foreach (var (k, v) in environment) info.Environment[k] = v;
            Process = Process.Start(info)!;
            Process.OutputDataReceived += (_, e) => Add(e.Data);
            Process.ErrorDataReceived += (_, e) => Add(e.Data);
            Process.BeginOutputReadLine();
            Process.BeginErrorReadLine();
        }

        public Process Process { get; }

        public string Log
        {
            get { lock (_log) return _log.ToString(); }
        }

        private void Add(string? line)
        {
            if (line is null) return;
            lock (_log)
            {
                _log.AppendLine(line);
                foreach (var (text, seen) in _waits)
                    if (line.Contains(text)) seen.TrySetResult();
            }
        }

        /// <summary>Waits for a line containing <paramref name="text"/> (already printed or to come).</summary>
        public async Task WaitForAsync(string text, int seconds = 90)
        {
            var seen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            lock (_log)
            {
                if (_log.ToString().Contains(text)) return;
                _waits.Add((text, seen));
            }
            var exited = Process.WaitForExitAsync();
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(seconds));
            var done = await Task.WhenAny(seen.Task, exited, Task.Delay(Timeout.Infinite, timeout.Token).ContinueWith(_ => { }));
            if (done == seen.Task) return;
            if (Log.Contains(text)) return;
            Assert.Fail($"'{text}' was not printed within {seconds} s{(Process.HasExited ? $" (exited with {Process.ExitCode})" : "")}\n{Log}");
        }

        public async Task<int> WaitForExitAsync(int seconds = 60)
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(seconds));
            try
            {
                await Process.WaitForExitAsync(timeout.Token);
            }
            catch (OperationCanceledException)
            {
                Assert.Fail($"raftv did not exit within {seconds} s\n{Log}");
            }
            return Process.ExitCode;
        }

        public async ValueTask DisposeAsync()
        {
            if (!Process.HasExited)
            {
                Process.Kill(entireProcessTree: true);
                await Process.WaitForExitAsync();
            }
            Process.Dispose();
        }
    }

    public static bool Alive(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            return !stat[(stat.LastIndexOf(')') + 2)..].StartsWith('Z');
        }
        catch (IOException)
        {
            return false;
        }
    }

    /// <summary>Processes whose command line mentions <paramref name="text"/> (a data directory, a port).</summary>
    public static IReadOnlyList<int> ProcessesMentioning(string text) =>
        [.. Directory.GetDirectories("/proc").Select(Path.GetFileName).Where(d => int.TryParse(d, out _)).Select(int.Parse!)
            .Where(p =>
            {
                try { return Alive(p) && File.ReadAllText($"/proc/{p}/cmdline").Replace('\0', ' ').Contains(text); }
                catch (IOException) { return false; }
                catch (UnauthorizedAccessException) { return false; }
            })];

    public static string NewTempDir(string what) => Path.Combine(Path.GetTempPath(), $"raftv-{what}-{Guid.NewGuid().ToString("N")[..8]}");

    /// <summary>Stops whatever a test left running from <paramref name="dataDir"/> and deletes it.</summary>
    public static async Task CleanUpAsync(string dataDir)
    {
        if (!Directory.Exists(dataDir)) return;
        if (File.Exists(Path.Combine(dataDir, "up.pid"))) await RunAsync(["down", "--data-dir", dataDir], timeoutSeconds: 90);
        foreach (var pid in ProcessesMentioning(dataDir))
            try { Process.GetProcessById(pid).Kill(entireProcessTree: true); } catch (ArgumentException) { }
        var pg = Path.Combine(dataDir, "pg");
        if (File.Exists(Path.Combine(pg, "postmaster.pid")))
            await Raft.Storage.Postgres.LocalPostgres.Attach(pg).StopAsync(immediate: true);
        Directory.Delete(dataDir, recursive: true);
    }
}
