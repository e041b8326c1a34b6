using System.Diagnostics;
using System.Text;
using Raft.Kv.Server;

namespace Raft.Kv.Tests;

/// <summary>'raftv up' as a person runs it: starts a cluster with its own PostgreSQL, serves etcdctl, and Ctrl-C or SIGTERM stops everything.</summary>
public class UpCommandTests
{
    private static IReadOnlyList<int> ChildrenOf(int pid) =>
        [.. Directory.GetDirectories("/proc").Select(Path.GetFileName).Where(d => int.TryParse(d, out _)).Select(int.Parse!)
            .Where(p => ParentOf(p) == pid)];

    private static int ParentOf(int pid)
    {
        try
        {
            // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces, so read after the last ')'.
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return int.Parse(fields[1]);
        }
        catch (IOException)
        {
            return -1;
        }
    }

    private static bool Alive(int pid) => File.Exists($"/proc/{pid}/stat") && !File.ReadAllText($"/proc/{pid}/stat").Contains(") Z ");

    [Theory]
    [InlineData("INT", false)]
    [InlineData("TERM", true)]
    public async Task Up_serves_a_cluster_and_a_signal_stops_every_process_and_the_private_postgres(string signal, bool keepData)
    {
        var dataDir = keepData ? Path.Combine(Path.GetTempPath(), "raftv-up-test-" + Guid.NewGuid().ToString("N")[..8]) : null;
        // env --default-signal: a test host started in the background ignores SIGINT, and children would inherit that.
        var info = new ProcessStartInfo("env") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "--default-signal=INT", "dotnet", typeof(KvServer).Assembly.Location, "up", "--nodes", "3" }) info.ArgumentList.Add(a);
        if (dataDir is not null) { info.ArgumentList.Add("--data"); info.ArgumentList.Add(dataDir); }
        using var up = Process.Start(info)!;
        var log = new StringBuilder();
        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        up.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (log) log.AppendLine(e.Data);
            if (e.Data.Contains("Ctrl-C stops the cluster.")) ready.TrySetResult();
        };
        up.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.AppendLine(e.Data); };
        up.BeginOutputReadLine();
        up.BeginErrorReadLine();
        string Log() { lock (log) return log.ToString(); }
        try
        {
            await ready.Task.WaitAsync(TimeSpan.FromSeconds(90));
            var text = Log();
            var dir = dataDir ?? text.Split('\n').Single(l => l.StartsWith("PostgreSQL:")).Split("(data in ")[1].TrimEnd(')', '\r');
            var endpoints = text.Split('\n').Single(l => l.StartsWith("client endpoints:"))["client endpoints:".Length..].Trim().Split(',');
            Assert.Equal(3, endpoints.Length);
            var postgresPid = int.Parse(File.ReadLines(Path.Combine(dir, "pg", "postmaster.pid")).First());
            var members = ChildrenOf(up.Id).SelectMany(p => ChildrenOf(p).Append(p)).Where(p => p != postgresPid).ToList();

            using (var client = new EtcdClient(endpoints[0]))
                await ClusterKit.EventuallyAsync(async () => { await client.PutAsync("up", "works"); return true; }, "a write through raftv up", 60, Log);

            Process.Start("kill", ["-" + signal, up.Id.ToString()])!.WaitForExit();
            using (var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60)))
                await up.WaitForExitAsync(timeout.Token);
            Assert.True(up.ExitCode == 0, $"exit status {up.ExitCode}\n{Log()}");
            Assert.Contains("cluster stopped", Log());
            Assert.False(Alive(postgresPid), "the private PostgreSQL is still running");
            Assert.DoesNotContain(ChildrenOf(up.Id), _ => true);
            foreach (var p in members) Assert.False(Alive(p), $"process {p} of the cluster is still running\n{Log()}");
            Assert.Equal(keepData, Directory.Exists(dir));
        }
        finally
        {
            if (!up.HasExited) up.Kill(entireProcessTree: true);
            if (dataDir is not null && Directory.Exists(dataDir))
            {
                if (File.Exists(Path.Combine(dataDir, "pg", "postmaster.pid")))
                    await Raft.Storage.Postgres.LocalPostgres.Attach(Path.Combine(dataDir, "pg")).DestroyAsync();
                Directory.Delete(dataDir, recursive: true);
            }
        }
    }
}
