using System.Diagnostics;
using System.Net;
using System.Net.Security;
using System.Text.RegularExpressions;
using Raft.Kv.Cli;

namespace Raft.Kv.Tests;

/// <summary>'raftv up --tls': a private CA and member certificates in the data directory, mutual TLS between members, TLS for clients.</summary>
public class TlsUpTests
{
    private static async Task<(int Exit, string Out, string Err)> EtcdctlAsync(IEnumerable<string> args, int timeoutSeconds = 10)
    {
        var info = new ProcessStartInfo("etcdctl")
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, Environment = { ["ETCDCTL_API"] = "3" },
        };
        info.ArgumentList.Add($"--command-timeout={timeoutSeconds}s");
        info.ArgumentList.Add($"--dial-timeout={Math.Min(3, timeoutSeconds)}s");
        foreach (var a in args) info.ArgumentList.Add(a);
        using var process = Process.Start(info) ?? throw new InvalidOperationException("etcdctl could not be started (apt-get install -y etcd-client)");
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(timeoutSeconds + 20));
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, (await output).Replace("\r", ""), await error);
    }

    [Fact]
    public async Task Up_tls_runs_members_with_mutual_tls_and_serves_etcdctl_with_the_flags_it_prints_and_keeps_tls_when_recovered()
    {
        var dir = CliKit.NewTempDir("up-tls");
        var client = string.Join(',', Enumerable.Range(0, 3).Select(_ => ClusterKit.FreePort()));
        var peer = string.Join(',', Enumerable.Range(0, 3).Select(_ => ClusterKit.FreePort()));
        var pg = await TestDatabase.ConnectionStringAsync();
        string Diagnostics() => File.Exists(Path.Combine(dir, "logs", "up.log")) ? File.ReadAllText(Path.Combine(dir, "logs", "up.log")) : "(no up.log)";
        try
        {
            var up = await CliKit.RunAsync(["up", "--detach", "--tls", "--data-dir", dir, "--client-ports", client, "--peer-ports", peer, "--pg", pg]);
            Assert.True(up.Exit == 0, $"{up}\n{Diagnostics()}");
            var endpoints = up.Out.Split('\n').Single(l => l.StartsWith("client endpoints:"))["client endpoints:".Length..].Trim();
            Assert.Equal(client.Split(',').Select(p => $"https://127.0.0.1:{p}"), endpoints.Split(','));
            var flags = Regex.Match(up.Out, "etcdctl flags: (.*)").Groups[1].Value.Trim().Split(' ');
            var tls = Path.Combine(dir, "tls");
            Assert.Equal([$"--cacert={tls}/ca.pem", $"--cert={tls}/client.pem", $"--key={tls}/client-key.pem"], flags);
            // Private keys are readable by their owner only.
            if (!OperatingSystem.IsWindows())
                foreach (var key in new[] { "ca-key.pem", "node1-key.pem", "client-key.pem" })
                    Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(tls, key)));

            var put = await EtcdctlAsync([$"--endpoints={endpoints}", .. flags, "put", "secret", "kept"]);
            Assert.True(put.Exit == 0, $"{put.Err}\n{Diagnostics()}");
            var get = await EtcdctlAsync([$"--endpoints={endpoints.Split(',')[2]}", .. flags, "get", "secret"]);
            Assert.Equal("secret\nkept\n", get.Out);
            // TLS for clients: the private CA alone is enough (no client certificate is required); cleartext is not served.
            var caOnly = await EtcdctlAsync([$"--endpoints={endpoints}", flags[0], "get", "secret"]);
            Assert.Equal("secret\nkept\n", caOnly.Out);
            var cleartext = await EtcdctlAsync([$"--endpoints={endpoints.Replace("https://", "http://")}", "get", "secret"], timeoutSeconds: 2);
            Assert.NotEqual(0, cleartext.Exit);

            // Mutual TLS between members: a peer connection without a certificate from the CA is refused.
            var state = UpCommand.LoadState(dir)!;
            Assert.True(state.Tls);
            var handler = new SocketsHttpHandler { SslOptions = new SslClientAuthenticationOptions { RemoteCertificateValidationCallback = (_, _, _, _) => true } };
            using (var http = new HttpClient(handler) { DefaultRequestVersion = HttpVersion.Version20, DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact })
                await Assert.ThrowsAsync<HttpRequestException>(() => http.PostAsync(new Uri(new Uri(state.Members[0].PeerUrl), "/raftverified.v1.RaftPeer/Probe"), new ByteArrayContent([])));

            // Recovered without --tls: the cluster keeps TLS and its authority.
            var authority = File.ReadAllText(Path.Combine(tls, "ca.pem"));
            var down = await CliKit.RunAsync(["down", "--data-dir", dir]);
            Assert.True(down.Exit == 0, down.ToString());
            var again = await CliKit.RunAsync(["up", "--detach", "--data-dir", dir]);
            Assert.True(again.Exit == 0, $"{again}\n{Diagnostics()}");
            Assert.Contains("etcdctl flags: " + string.Join(' ', flags), again.Out);
            Assert.Equal(authority, File.ReadAllText(Path.Combine(tls, "ca.pem")));
            await ClusterKit.EventuallyAsync(async () => (await EtcdctlAsync([$"--endpoints={endpoints}", .. flags, "get", "secret"])).Out == "secret\nkept\n",
                "the value read back over TLS after recovery", 30, Diagnostics);
        }
        finally
        {
            await CliKit.RunAsync(["down", "--data-dir", dir]);
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task Up_tls_on_a_cluster_made_without_it_is_refused()
    {
        var dir = CliKit.NewTempDir("up-notls");
        Directory.CreateDirectory(dir);
        try
        {
            File.WriteAllText(Path.Combine(dir, "cluster.json"),
                """{ "token": "t", "pg": "Host=127.0.0.1", "members": [ { "id": 1, "name": "node1", "peerUrl": "http://127.0.0.1:1", "clientUrl": "http://127.0.0.1:2" } ] }""");
            var up = await CliKit.RunAsync(["up", "--tls", "--data-dir", dir]);
            Assert.Equal(RaftvCli.UsageError, up.Exit);
            Assert.Contains("made without --tls", up.Err);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
