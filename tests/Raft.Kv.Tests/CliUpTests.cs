using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Raft.Kv.Cli;

namespace Raft.Kv.Tests;

/// <summary>
/// 'raftv up' and 'raftv down' as a person runs them, each a separate process. Tests pass free
/// ports: the defaults (2379...) may be taken on the machine that runs them.
/// </summary>
public class CliUpTests
{
    private static (string Client, string Peer) FreePorts(int n) =>
        (string.Join(',', Enumerable.Range(0, n).Select(_ => ClusterKit.FreePort())),
         string.Join(',', Enumerable.Range(0, n).Select(_ => ClusterKit.FreePort())));

    private static string[] Endpoints(string output) =>
        output.Split('\n').Single(l => l.StartsWith("client endpoints:"))["client endpoints:".Length..].Trim().Split(',');

    [Fact]
    public void Default_ports_follow_etcds_local_cluster_convention()
    {
        Assert.Equal([2379, 22379, 32379, 42379, 52379, 62379], Enumerable.Range(0, 6).Select(i => UpCommand.DefaultPort(i, peer: false)));
        Assert.Equal([2380, 22380, 32380, 42380], Enumerable.Range(0, 4).Select(i => UpCommand.DefaultPort(i, peer: true)));
    }

    [Fact]
    public async Task Up_detach_down_and_up_again_recover_the_cluster_and_its_data_and_a_removed_member_stays_out()
    {
        var dir = CliKit.NewTempDir("up");
        var (client, peer) = FreePorts(3);
        string Diagnostics() => File.Exists(Path.Combine(dir, "logs", "up.log")) ? File.ReadAllText(Path.Combine(dir, "logs", "up.log")) : "(no up.log)";
        try
        {
            var up = await CliKit.RunAsync(["up", "--detach", "--data-dir", dir, "--client-ports", client, "--peer-ports", peer]);
            Assert.True(up.Exit == 0, $"{up}\n{Diagnostics()}");
            Assert.Contains("cluster ready", up.Out);
            var endpoints = Endpoints(up.Out);
            Assert.Equal(client.Split(',').Select(p => $"http://127.0.0.1:{p}"), endpoints);
            var pid = UpCommand.RunningSupervisor(dir);
            Assert.NotNull(pid);

            // A second 'up' on the same directory is refused while the first runs.
            var again = await CliKit.RunAsync(["up", "--data-dir", dir]);
            Assert.Equal(1, again.Exit);
            Assert.Contains($"a cluster is already running from {dir}", again.Err);

            using (var c = new EtcdClient(endpoints[0]))
            {
                await ClusterKit.EventuallyAsync(async () => { await c.PutAsync("kept", "across restarts"); return true; }, "a write", 30, Diagnostics);
                // 'member remove' stops node3; 'up' keeps the others running and remembers that node3 is gone.
                await c.MemberRemoveAsync(3);
            }
            await ClusterKit.EventuallyAsync(() => Task.FromResult(UpCommand.LoadState(dir)!.Members.Single(m => m.Id == 3).Removed),
                "node3 marked removed in cluster.json", 30, Diagnostics);
            Assert.Equal(pid, UpCommand.RunningSupervisor(dir));
            Assert.Contains("node3 was removed from the cluster and stopped; the others keep serving", Diagnostics());

            var down = await CliKit.RunAsync(["down", "--data-dir", dir]);
            Assert.True(down.Exit == 0, down.ToString());
            Assert.Contains("cluster stopped", down.Out);
            Assert.False(CliKit.Alive(pid!.Value), "the up process is still running");
            Assert.Empty(CliKit.ProcessesMentioning(dir));
            Assert.False(File.Exists(Path.Combine(dir, "pg", "postmaster.pid")), "the private PostgreSQL is still running");
            var downAgain = await CliKit.RunAsync(["down", "--data-dir", dir]);
            Assert.Equal(0, downAgain.Exit);
            Assert.Contains("no cluster is running", downAgain.Out);

            // The same directory again: the two remaining members, on their data.
            var recovered = await CliKit.RunAsync(["up", "--detach", "--data-dir", dir]);
            Assert.True(recovered.Exit == 0, $"{recovered}\n{Diagnostics()}");
            var left = Endpoints(recovered.Out);
            Assert.Equal(endpoints.Take(2), left);
            using (var c = new EtcdClient(left[1]))
            {
                Assert.Equal("across restarts", await c.GetAsync("kept"));
                var members = await c.MemberListAsync();
                Assert.Equal([1UL, 2UL], members.Members.Select(m => m.ID).Order());
            }
            Assert.True((await CliKit.RunAsync(["down", "--data-dir", dir])).Exit == 0);
        }
        finally
        {
            await CliKit.CleanUpAsync(dir);
        }
    }

    [Theory]
    [InlineData("INT")]
    [InlineData("TERM")]
    public async Task Up_in_the_foreground_stops_every_process_on_a_signal_and_keeps_the_data(string signal)
    {
        var dir = CliKit.NewTempDir("up-fg");
        var (client, peer) = FreePorts(3);
        var pg = await TestDatabase.ConnectionStringAsync();
        await using var up = new CliKit.Running(["up", "--data-dir", dir, "--client-ports", client, "--peer-ports", peer, "--pg", pg], defaultSignals: true);
        try
        {
            await up.WaitForAsync("cluster ready");
            var endpoints = Endpoints(up.Log);
            using (var c = new EtcdClient(endpoints[2]))
                await ClusterKit.EventuallyAsync(async () => { await c.PutAsync("fg", "works"); return true; }, "a write", 30, () => up.Log);
            var members = CliKit.ProcessesMentioning(dir);
            Assert.NotEmpty(members);

            System.Diagnostics.Process.Start("kill", ["-" + signal, up.Process.Id.ToString()])!.WaitForExit();
            Assert.True(await up.WaitForExitAsync() == 0, up.Log);
            Assert.Contains("cluster stopped", up.Log);
            foreach (var p in members) Assert.False(CliKit.Alive(p), $"process {p} of the cluster is still running\n{up.Log}");
            Assert.True(File.Exists(Path.Combine(dir, "cluster.json")));
            Assert.False(File.Exists(Path.Combine(dir, "up.pid")));
            Assert.Contains("serving etcd v3 clients", File.ReadAllText(Path.Combine(dir, "logs", "node1.log")));
        }
        finally
        {
            await CliKit.CleanUpAsync(dir);
        }
    }

    [Fact]
    public async Task Up_names_the_port_that_is_taken_and_starts_nothing()
    {
        var dir = CliKit.NewTempDir("up-port");
        using var squatter = new TcpListener(IPAddress.Loopback, 0);
        squatter.Start();
        var taken = ((IPEndPoint)squatter.LocalEndpoint).Port;
        var client = $"{ClusterKit.FreePort()},{taken},{ClusterKit.FreePort()}";
        var peer = string.Join(',', Enumerable.Range(0, 3).Select(_ => ClusterKit.FreePort()));
        try
        {
            var up = await CliKit.RunAsync(["up", "--data-dir", dir, "--client-ports", client, "--peer-ports", peer, "--pg", await TestDatabase.ConnectionStringAsync()]);
            Assert.Equal(1, up.Exit);
            Assert.Contains($"port {taken} (client port of node2) is already in use", up.Err);
            Assert.False(File.Exists(Path.Combine(dir, "cluster.json")), "a cluster that never started must not be recorded");
            Assert.False(File.Exists(Path.Combine(dir, "up.pid")));
        }
        finally
        {
            await CliKit.CleanUpAsync(dir);
        }
    }

    [Fact]
    public async Task Up_refuses_settings_that_do_not_fit()
    {
        var dir = CliKit.NewTempDir("up-args");
        try
        {
            var many = await CliKit.RunAsync(["up", "--data-dir", dir, "--nodes", "7"]);
            Assert.Equal(RaftvCli.UsageError, many.Exit);
            Assert.Contains("--nodes 7 needs --client-ports and --peer-ports", many.Err);
            var mismatch = await CliKit.RunAsync(["up", "--data-dir", dir, "--nodes", "2", "--client-ports", "1,2,3"]);
            Assert.Equal(RaftvCli.UsageError, mismatch.Exit);
            Assert.Contains("--client-ports lists 3 ports for 2 members", mismatch.Err);

            // A recorded cluster keeps its shape: --nodes that differs is refused, not ignored.
            Directory.CreateDirectory(dir);
            File.WriteAllText(Path.Combine(dir, "cluster.json"), JsonSerializer.Serialize(new UpCommand.UpState("t0", null,
                [new(1, "node1", "http://127.0.0.1:1", "http://127.0.0.1:2")]), new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.CamelCase }));
            var other = await CliKit.RunAsync(["up", "--data-dir", dir, "--nodes", "3"]);
            Assert.Equal(RaftvCli.UsageError, other.Exit);
            Assert.Contains("holds a cluster of 1 members; --nodes 3 does not match", other.Err);
        }
        finally
        {
            await CliKit.CleanUpAsync(dir);
        }
    }
}
