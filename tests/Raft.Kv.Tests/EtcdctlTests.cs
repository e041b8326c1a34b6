using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Npgsql;
using Raft.Kv.Server;

namespace Raft.Kv.Tests;

/// <summary>
/// etcd's own client against a 3-member raftv cluster in this process (each member with its own
/// database). Needs etcdctl (Debian package etcd-client).
/// </summary>
public class EtcdctlTests
{
    private static int FreePort() => Raft.Host.FreePorts.Next();

    private static async Task<string> NewDatabaseAsync(string cs)
    {
        var name = "kvc" + Guid.NewGuid().ToString("N")[..16];
        await using var conn = new NpgsqlConnection(cs);
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand($"CREATE DATABASE \"{name}\"", conn);
        await cmd.ExecuteNonQueryAsync();
        return new NpgsqlConnectionStringBuilder(cs) { Database = name }.ConnectionString;
    }

    private static async Task<(int Exit, string Out, string Err)> EtcdctlAsync(string endpoints, string? stdin, params string[] args)
    {
        var info = new ProcessStartInfo("etcdctl")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            Environment = { ["ETCDCTL_API"] = "3" },
        };
        info.ArgumentList.Add("--endpoints=" + endpoints);
        info.ArgumentList.Add("--command-timeout=10s");
        foreach (var a in args) info.ArgumentList.Add(a);
        Process process;
        try
        {
            process = Process.Start(info)!;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException("etcdctl is not installed: apt-get install -y etcd-client", e);
        }
        using var _ = process;
        if (stdin is not null) await process.StandardInput.WriteAsync(stdin);
        process.StandardInput.Close();
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, (await output).Replace("\r", ""), await error);
    }

    [Fact]
    public async Task Etcdctl_works_against_a_three_member_cluster()
    {
        var cs = await TestDatabase.ConnectionStringAsync();
        var members = Enumerable.Range(1, 3)
            .Select(i => new KvMember((ulong)i, $"node{i}", $"http://127.0.0.1:{FreePort()}", $"http://127.0.0.1:{FreePort()}"))
            .ToList();
        var servers = new List<KvServer>();
        try
        {
            foreach (var m in members)
                servers.Add(await KvServer.StartAsync(new KvServerOptions
                {
                    NodeId = m.Id, Members = members, ConnectionString = await NewDatabaseAsync(cs),
                    TickInterval = TimeSpan.FromMilliseconds(50),
                }));
            // URLs, as etcd's docs give them: etcdctl 3.4 then sends the whole URL as :authority of endpoint status calls.
            string Endpoint(KvMember m) => m.ClientUrl;
            var all = string.Join(",", members.Select(Endpoint));

            // Wait for a leader, as seen by etcd's client.
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
            while (true)
            {
                var (code, json, _) = await EtcdctlAsync(Endpoint(members[0]), null, "endpoint", "status", "--write-out=json");
                if (code == 0 && !json.Contains("\"leader\":0")) break;
                Assert.True(DateTime.UtcNow < deadline, "no leader within 30 s: " + json);
                await Task.Delay(200);
            }

            // Every member takes writes (followers through raft's forwarding) and reads linearizably.
            for (var i = 0; i < members.Count; i++)
            {
                var put = await EtcdctlAsync(Endpoint(members[i]), null, "put", $"key{i}", $"value{i}");
                Assert.True(put.Exit == 0, put.Err);
                Assert.Equal("OK\n", put.Out);
                var get = await EtcdctlAsync(Endpoint(members[(i + 1) % members.Count]), null, "get", $"key{i}");
                Assert.Equal($"key{i}\nvalue{i}\n", get.Out);
            }

            var prefix = await EtcdctlAsync(all, null, "get", "key", "--prefix", "--keys-only");
            Assert.Equal("key0\n\nkey1\n\nkey2\n\n", prefix.Out);
            var limited = await EtcdctlAsync(all, null, "get", "key", "--prefix", "--limit=1", "--write-out=json");
            Assert.Contains("\"more\":true,\"count\":3", limited.Out);

            var txn = await EtcdctlAsync(all, "value(\"key0\") = \"value0\"\n\nput key0 changed\nput txnkey yes\n\nput key0 failed\n\n", "txn");
            Assert.True(txn.Exit == 0, txn.Err);
            Assert.Equal("SUCCESS\n\nOK\n\nOK\n", txn.Out);
            Assert.Equal("key0\nchanged\n", (await EtcdctlAsync(all, null, "get", "key0")).Out);

            var del = await EtcdctlAsync(all, null, "del", "key", "--prefix");
            Assert.Equal("3\n", del.Out);
            Assert.Equal("", (await EtcdctlAsync(all, null, "get", "key", "--prefix")).Out);

            var list = await EtcdctlAsync(all, null, "member", "list");
            Assert.True(list.Exit == 0, list.Err);
            foreach (var m in members) Assert.Contains($"{m.Id:x}, started, {m.Name}, {m.PeerUrl}, {m.ClientUrl}", list.Out);

            var status = await EtcdctlAsync(all, null, "endpoint", "status");
            Assert.True(status.Exit == 0, status.Err);
            Assert.Equal(3, status.Out.Trim().Split('\n').Length);
            // etcd's DB SIZE column: the member's PostgreSQL database, never empty.
            Assert.DoesNotContain(" 0 B,", status.Out);
            var health = await EtcdctlAsync(all, null, "endpoint", "health");
            Assert.True(health.Exit == 0, health.Err);

            var empty = await EtcdctlAsync(all, null, "put", "", "x");
            Assert.NotEqual(0, empty.Exit);
            Assert.Contains("key is not provided", empty.Err);
        }
        finally
        {
            foreach (var s in servers) await s.DisposeAsync();
        }
    }
}
