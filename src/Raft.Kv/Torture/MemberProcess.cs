using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Raft.Kv.Torture;

/// <summary>
/// One 'raftv serve' child process of a torture run, which can be killed (SIGKILL), paused
/// (SIGSTOP), resumed (SIGCONT) and started again with the same arguments. Its output goes to a
/// log file, kept across restarts.
/// </summary>
internal sealed class MemberProcess : IAsyncDisposable
{
    private readonly IReadOnlyList<string> _arguments;
    private readonly string _logPath;
    private readonly object _logGate = new();
    private Process? _process;
    private StreamWriter? _log;

    public MemberProcess(int index, ulong id, string clientUrl, IReadOnlyList<string> arguments, string logPath)
    {
        Index = index;
        Id = id;
        ClientUrl = clientUrl;
        _arguments = arguments;
        _logPath = logPath;
    }

    public int Index { get; }
    public ulong Id { get; }
    public string ClientUrl { get; }
    public string LogPath => _logPath;
    public bool Paused { get; private set; }
    /// <summary>Killed by the nemesis and not yet restarted.</summary>
    public bool Killed { get; private set; }
    public int Starts { get; private set; }
    public DateTime LastStart { get; private set; }

    public bool HasExited => _process is null || _process.HasExited;
    public int? ExitCode => _process is { HasExited: true } p ? p.ExitCode : null;
    public int? Pid => _process is { HasExited: false } p ? p.Id : null;

    public void Start()
    {
        var (file, prefix) = RaftvExecutable();
        var info = new ProcessStartInfo(file)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in prefix.Concat(_arguments)) info.ArgumentList.Add(a);
        lock (_logGate)
        {
            _log ??= new StreamWriter(new FileStream(_logPath, FileMode.Append, FileAccess.Write, FileShare.ReadWrite)) { AutoFlush = true };
            _log.WriteLine($"---- {DateTime.UtcNow:O} torture: starting node{Id}");
        }
        var process = Process.Start(info) ?? throw new InvalidOperationException($"could not start member {Id}");
        process.OutputDataReceived += (_, e) => Log(e.Data);
        process.ErrorDataReceived += (_, e) => Log(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        _process?.Dispose();
        _process = process;
        Paused = false;
        Killed = false;
        Starts++;
        LastStart = DateTime.UtcNow;
    }

    public void Log(string? line)
    {
        if (line is null) return;
        lock (_logGate) _log?.WriteLine(line);
    }

    /// <summary>kill -9: no chance to flush or say goodbye.</summary>
    public async Task KillAsync()
    {
        if (_process is not { HasExited: false } p) return;
        Log($"---- {DateTime.UtcNow:O} torture: kill -9");
        Killed = true; // before the signal, so the supervisor does not take the exit for a crash
        Signal(p.Id, SigKill);
        await p.WaitForExitAsync();
        Paused = false;
    }

    public void Pause()
    {
        if (_process is not { HasExited: false } p || Paused) return;
        Log($"---- {DateTime.UtcNow:O} torture: SIGSTOP");
        Signal(p.Id, SigStop);
        Paused = true;
    }

    public void Resume()
    {
        if (_process is not { HasExited: false } p || !Paused) return;
        Signal(p.Id, SigCont);
        Log($"---- {DateTime.UtcNow:O} torture: SIGCONT");
        Paused = false;
    }

    /// <summary>Stops the member cleanly (its stdin closes), killing it if it does not stop in time.</summary>
    public async Task StopAsync(TimeSpan grace)
    {
        if (_process is not { HasExited: false } p) return;
        Resume();
        try { p.StandardInput.Close(); } catch (Exception e) when (e is IOException or InvalidOperationException) { }
        using var timeout = new CancellationTokenSource(grace);
        try
        {
            await p.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            Log("---- torture: did not stop in time; killing it");
            p.Kill(entireProcessTree: true);
            await p.WaitForExitAsync();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync(TimeSpan.FromSeconds(10));
        _process?.Dispose();
        lock (_logGate)
        {
            _log?.Dispose();
            _log = null;
        }
    }

    /// <summary>The raftv apphost next to this assembly, or 'dotnet raftv.dll'.</summary>
    private static (string File, string[] Prefix) RaftvExecutable()
    {
        var dll = typeof(MemberProcess).Assembly.Location;
        var dir = Path.GetDirectoryName(dll) ?? ".";
        var apphost = Path.Combine(dir, "raftv");
        if (File.Exists(apphost)) return (apphost, []);
        var dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH");
        if (string.IsNullOrEmpty(dotnet))
            dotnet = Environment.ProcessPath is { } self && Path.GetFileNameWithoutExtension(self) == "dotnet" ? self : "dotnet";
        return (dotnet, [dll]);
    }

    private const int SigKill = 9;
    private const int SigCont = 18;
    private const int SigStop = 19;

    private static void Signal(int pid, int signal)
    {
        if (kill(pid, signal) != 0)
            throw new InvalidOperationException($"kill({pid}, {signal}) failed: errno {Marshal.GetLastPInvokeError()}");
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int sig);
}
