using System.Diagnostics;
using System.Text.Json;
using Raft.Kv.Cli;
using Raft.Kv.Server;
using Xunit.Abstractions;

namespace Raft.Kv.Tests;

/// <summary>
/// The client commands (put, get, del, txn, status, member, move-leader) against a raftv cluster
/// and against a real etcd, their output compared line for line with etcdctl's on the same server.
/// </summary>
public class ClientCommandsTests(ITestOutputHelper output)
{
    private static async Task<CliKit.Result> Raftv(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var exit = await RaftvCli.RunAsync(args, stdout, stderr, CancellationToken.None);
        return new CliKit.Result(exit, stdout.ToString().Replace("\r", ""), stderr.ToString().Replace("\r", ""));
    }

    private static async Task<CliKit.Result> TxnFromStdin(string endpoint, string stdin, params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var exit = await ClientCommands.TxnWith(new CommandArgs(["--endpoints", endpoint, .. args]), new StringReader(stdin), stdout, stderr, CancellationToken.None);
        return new CliKit.Result(exit, stdout.ToString(), stderr.ToString());
    }

    private static async Task<CliKit.Result> Etcdctl(string endpoint, string? stdin, params string[] args)
    {
        var info = new ProcessStartInfo("etcdctl")
        {
            RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false,
            Environment = { ["ETCDCTL_API"] = "3" },
        };
        info.ArgumentList.Add("--endpoints=" + endpoint);
        foreach (var a in args) info.ArgumentList.Add(a);
        using var p = Process.Start(info)!;
        var o = p.StandardOutput.ReadToEndAsync();
        var e = p.StandardError.ReadToEndAsync();
        if (stdin is not null) await p.StandardInput.WriteAsync(stdin);
        p.StandardInput.Close();
        await p.WaitForExitAsync(new CancellationTokenSource(TimeSpan.FromSeconds(30)).Token);
        return new CliKit.Result(p.ExitCode, await o, await e);
    }

    private static async Task<List<KvServer>> StartClusterAsync(int n)
    {
        var members = Enumerable.Range(1, n).Select(i => ClusterKit.NewMember((ulong)i)).ToList();
        var servers = new List<KvServer>();
        foreach (var m in members)
            servers.Add(await KvServer.StartAsync(new KvServerOptions
            {
                NodeId = m.Id, Members = members, ConnectionString = await ClusterKit.NewDatabaseAsync(), TickInterval = TimeSpan.FromMilliseconds(50),
            }));
        using var c = new EtcdClient(members[0].ClientUrl);
        await ClusterKit.EventuallyAsync(async () => (await c.StatusAsync()).Leader != 0, "a leader");
        return servers;
    }

    /// <summary>
    /// Writes a few keys with raftv's commands, then runs reads and failing requests with both raftv and
    /// etcdctl against <paramref name="endpoint"/>: the outputs must be the same, byte for byte.
    /// </summary>
    private async Task SameOutputAsEtcdctlAsync(string endpoint)
    {
        Assert.Equal("OK\n", (await Raftv("put", "a", "1", "--endpoints", endpoint)).Out);
        Assert.Equal("OK\na\n1\n", (await Raftv("put", "a", "2", "--prev-kv", "--endpoints", endpoint)).Out);
        foreach (var (k, v) in new[] { ("b", "3"), ("c", "<4&>"), ("d/x", "5"), ("d/y", "6") })
            Assert.Equal("OK\n", (await Raftv("--endpoints", endpoint, "put", k, v)).Out);

        string[][] reads =
        [
            ["get", "a"], ["get", "a", "-w", "json"], ["get", "a", "d"], ["get", "d/", "--prefix"], ["get", "", "--prefix", "--keys-only"],
            ["get", "b", "--from-key", "--limit", "2"], ["get", "", "--from-key", "-w", "json", "--limit", "1"], ["get", "a", "--print-value-only"],
            ["get", "", "--prefix", "--sort-by", "VALUE", "--order", "DESCEND"], ["get", "a", "--rev", "0", "--consistency", "s"],
            ["get", "c", "-w", "json"], ["get", "none"], ["get", "none", "-w", "json"],
            ["del", "none"], ["del", "none", "-w", "json"],
            ["put", "", "x"], ["get", "a", "--rev", "100000"],
            ["member", "list"], ["member", "list", "-w", "json"], ["member", "list", "-w", "table"],
            ["endpoint", "status"], ["endpoint", "status", "-w", "json"], ["endpoint", "status", "-w", "table"],
            ["member", "remove", "1234"],
        ];
        foreach (var args in reads)
        {
            var ours = await Raftv([.. args, "--endpoints", endpoint]);
            var theirs = await Etcdctl(endpoint, null, args);
            // A status may move between the two calls (the database's size): both are asked again until they agree.
            for (var retry = 0; retry < 5 && args[0] == "endpoint" && ours.Out != theirs.Out; retry++)
            {
                await Task.Delay(200);
                (ours, theirs) = (await Raftv([.. args, "--endpoints", endpoint]), await Etcdctl(endpoint, null, args));
            }
            var what = $"'{string.Join(' ', args)}' on {endpoint}";
            output.WriteLine($"{what}: etcdctl exit {theirs.Exit}\n{theirs.Out}{theirs.Err}");
            Assert.True(theirs.Exit == ours.Exit, $"{what}: exit {ours.Exit}, etcdctl {theirs.Exit}\n{ours}\n{theirs}");
            Assert.True(theirs.Out == ours.Out, $"{what}: output differs\n--- raftv\n{ours.Out}\n--- etcdctl\n{theirs.Out}");
            // etcdctl logs a retry warning first; its last line is the error.
            if (theirs.Exit != 0) Assert.Equal(theirs.Err.Trim().Split('\n')[^1], ours.Err.Trim());
        }

        // A transaction read from stdin, as 'etcdctl txn' reads it; this one changes nothing (the compare fails).
        const string txn = "value(\"a\") = \"no\"\nmod(\"b\") > \"0\"\n\nput a never\n\nget a\nget d/ --prefix\ndel none\n\n";
        var oursTxn = await TxnFromStdin(endpoint, txn);
        var theirsTxn = await Etcdctl(endpoint, txn, "txn");
        Assert.Equal(theirsTxn.Out, oursTxn.Out);
        Assert.Equal("FAILURE\n\na\n2\n\nd/x\n5\nd/y\n6\n\n0\n", oursTxn.Out);
        Assert.Equal((await Etcdctl(endpoint, txn, "txn", "-w", "json")).Out, (await TxnFromStdin(endpoint, txn, "-w", "json")).Out);
    }

    [Fact]
    public async Task Outputs_match_etcdctls_on_a_raftv_cluster()
    {
        var servers = await StartClusterAsync(1);
        try
        {
            await SameOutputAsEtcdctlAsync(servers[0].ClientAddress.ToString().TrimEnd('/'));
        }
        finally
        {
            foreach (var s in servers) await s.DisposeAsync();
        }
    }

    [Fact]
    public async Task Outputs_match_etcdctls_on_a_real_etcd()
    {
        if (EtcdServer.Binary() is null)
        {
            // No etcd on this machine (Debian: apt-get install etcd-server; ./test.sh installs it when apt can).
            const string message = "SKIPPED: Outputs_match_etcdctls_on_a_real_etcd needs the etcd server binary ('etcd' on PATH); install etcd-server";
            output.WriteLine(message);
            Console.Error.WriteLine("\n!!!!!! " + message + " !!!!!!\n");
            return;
        }
        await using var etcd = await EtcdServer.StartAsync();
        await SameOutputAsEtcdctlAsync(etcd.ClientUrl);
    }

    [Fact]
    public async Task Client_commands_drive_a_raftv_cluster()
    {
        var servers = await StartClusterAsync(3);
        try
        {
            var urls = servers.Select(s => s.ClientAddress.ToString().TrimEnd('/')).ToArray();
            var all = string.Join(",", urls);

            // A dead endpoint first: the command goes on to the next one.
            var dead = $"127.0.0.1:{ClusterKit.FreePort()}";
            Assert.Equal("OK\n", (await Raftv("put", "k", "v", "--endpoints", $"{dead},{urls[1]}")).Out);
            var unreachable = await Raftv("get", "k", "--endpoints", dead, "--dial-timeout", "500ms");
            Assert.Equal(1, unreachable.Exit);
            Assert.StartsWith("Error: cannot reach the endpoint", unreachable.Err);

            // --count-only prints the count; txn from flags; compact.
            Assert.Equal("1\n", (await Raftv("get", "k", "--count-only", "--endpoints", all)).Out);
            var txn = await Raftv("txn", "--endpoints", all, "--compare", "version(\"k\") = \"1\"", "--success", "put k v2", "--success", "get k", "--failure", "del k");
            Assert.Equal("SUCCESS\n\nOK\n\nk\nv2\n", txn.Out);
            var revision = JsonDocument.Parse((await Raftv("get", "k", "-w", "json", "--endpoints", all)).Out).RootElement.GetProperty("header").GetProperty("revision").GetInt64();
            Assert.Equal($"compacted revision {revision}\n", (await Raftv("compact", revision.ToString(), "--endpoints", all)).Out);
            var badTxn = await Raftv("txn", "--endpoints", all, "--compare", "size(\"k\") = \"1\"");
            Assert.Equal(RaftvCli.UsageError, badTxn.Exit);
            Assert.Contains("unknown target 'size'", badTxn.Err);

            // status: a table with one row per endpoint and exactly one leader.
            var status = await Raftv("status", "--endpoints", all);
            Assert.True(status.Exit == 0, status.ToString());
            var rows = status.Out.Split('\n').Where(l => l.StartsWith("| ") && !l.Contains("ENDPOINT")).ToList();
            Assert.Equal(3, rows.Count);
            Assert.Single(rows, r => r.Split('|')[5].Trim() == "true");
            Assert.Contains("| RAFT APPLIED INDEX |", status.Out);
            // --cluster: one endpoint given, every member's row printed.
            var cluster = await Raftv("status", "--cluster", "--endpoints", urls[0], "-w", "simple");
            Assert.Equal(3, cluster.Out.Trim().Split('\n').Length);

            // member add (as a learner), list, promote (refused: it never started), remove.
            var peer = $"http://127.0.0.1:{ClusterKit.FreePort()}";
            var add = await Raftv("member", "add", "newbie", "--peer-urls", peer, "--learner", "--endpoints", all);
            Assert.True(add.Exit == 0, add.ToString());
            // etcdctl pads the id to 16 characters (%16x): an id below 2^60 follows two spaces.
            var id = add.Out.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1];
            Assert.Contains($"RAFTV_INITIAL_CLUSTER_STATE=\"existing\"", add.Out);
            Assert.Contains($"ETCD_INITIAL_CLUSTER=\"node1={servers[0].PeerAddress.ToString().TrimEnd('/')},", add.Out);
            Assert.Contains($"{id}, unstarted, , {peer}, , true", (await Raftv("member", "list", "--endpoints", all)).Out);
            var promote = await Raftv("member", "promote", id, "--endpoints", all);
            Assert.Equal(1, promote.Exit);
            Assert.Equal("Error: etcdserver: can only promote a learner member which is in sync with leader\n", promote.Err);
            var remove = await Raftv("member", "remove", id, "--endpoints", all);
            Assert.True(remove.Exit == 0, remove.ToString());
            Assert.Matches($"^Member +{id} removed from cluster +[0-9a-f]+\n$", remove.Out);
            Assert.DoesNotContain(id, (await Raftv("member", "list", "--endpoints", all)).Out);

            // move-leader: found among the endpoints; leadership moves to the member named.
            using var c = new EtcdClient(urls[0]);
            var leader = (await c.StatusAsync()).Leader;
            var target = servers.First(s => s.Id != leader).Id;
            var move = await Raftv("move-leader", $"{target:x}", "--endpoints", all);
            Assert.True(move.Exit == 0, move.ToString());
            Assert.Equal($"Leadership transferred from {leader:x} to {target:x}\n", move.Out);
            await ClusterKit.EventuallyAsync(async () => (await c.StatusAsync()).Leader == target, "the new leader");
            var follower = urls[servers.FindIndex(s => s.Id != target)];
            var noLeader = await Raftv("move-leader", $"{leader:x}", "--endpoints", follower);
            Assert.Equal(1, noLeader.Exit);
            Assert.StartsWith("Error: no leader endpoint given via --endpoints", noLeader.Err);

            // Usage errors say what is wrong.
            var badFormat = await Raftv("get", "k", "-w", "table", "--endpoints", all);
            Assert.Equal(RaftvCli.UsageError, badFormat.Exit);
            Assert.Contains("table is not a supported output format here", badFormat.Err);
            var badId = await Raftv("member", "remove", "xyz", "--endpoints", all);
            Assert.Contains("member ID 'xyz' is not a member id", badId.Err);
        }
        finally
        {
            foreach (var s in servers) await s.DisposeAsync();
        }
    }

    [Fact]
    public void Prefix_ends_and_txn_text_follow_etcdctl()
    {
        Assert.Equal("b", ClientCommands.PrefixEnd(Google.Protobuf.ByteString.CopyFromUtf8("a")).ToStringUtf8());
        Assert.Equal([0x61, 0x01], ClientCommands.PrefixEnd(Google.Protobuf.ByteString.CopyFrom(0x61, 0x00, 0xff)).ToByteArray());
        Assert.Equal([0x00], ClientCommands.PrefixEnd(Google.Protobuf.ByteString.CopyFrom(0xff, 0xff)).ToByteArray());

        var txn = TxnText.Parse(new StringReader("mod(\"a\", \"c\") > \"3\"\nval(\"b\") != \"x \\\"y\\\"\"\n\nput k 'two words'\nget a c\n\ndel p --prefix\n"));
        Assert.Equal(2, txn.Compare.Count);
        Assert.Equal("c", txn.Compare[0].RangeEnd.ToStringUtf8());
        Assert.Equal(3, txn.Compare[0].ModRevision);
        Assert.Equal("x \"y\"", txn.Compare[1].Value.ToStringUtf8());
        Assert.Equal("two words", txn.Success[0].RequestPut.Value.ToStringUtf8());
        Assert.Equal("c", txn.Success[1].RequestRange.RangeEnd.ToStringUtf8());
        Assert.Equal("q", txn.Failure[0].RequestDeleteRange.RangeEnd.ToStringUtf8());
        Assert.Contains("malformed comparison", Assert.Throws<CommandArgsException>(() => TxnText.ParseCompare("value(a) = \"b\"")).Message);
        Assert.Contains("unknown operator '=>'", Assert.Throws<CommandArgsException>(() => TxnText.ParseCompare("value(\"a\") => \"b\"")).Message);
        Assert.Contains("put, get or del", Assert.Throws<CommandArgsException>(() => TxnText.ParseOp("frob k")).Message);
    }

    [Fact]
    public void Json_and_tables_are_written_as_etcdctl_writes_them()
    {
        var r = new Etcd.Serverpb.RangeResponse
        {
            Header = new Etcd.Serverpb.ResponseHeader { ClusterId = ulong.MaxValue, Revision = 3 },
            Kvs = { new Etcd.Mvccpb.KeyValue { Key = Google.Protobuf.ByteString.CopyFromUtf8("foo"), Value = Google.Protobuf.ByteString.CopyFromUtf8("baz"), Version = 2 } },
            Count = 1,
        };
        Assert.Equal("{\"header\":{\"cluster_id\":18446744073709551615,\"revision\":3},\"kvs\":[{\"key\":\"Zm9v\",\"version\":2,\"value\":\"YmF6\"}],\"count\":1}", EtcdOutput.Json(r));
        var op = new Etcd.Serverpb.ResponseOp { ResponsePut = new Etcd.Serverpb.PutResponse { Header = new Etcd.Serverpb.ResponseHeader { Revision = 7 } } };
        Assert.Equal("{\"Response\":{\"ResponsePut\":{\"header\":{\"revision\":7}}}}", EtcdOutput.Json(op));
        Assert.Equal("20 kB", EtcdOutput.Bytes(20480));
        Assert.Equal("8.0 MB", EtcdOutput.Bytes(8_040_000));
        Assert.Equal("123 B", EtcdOutput.Bytes(123));
        Assert.Equal(
            "+----+-----------+\n| ID |  STATUS   |\n+----+-----------+\n|  1 | unstarted |\n+----+-----------+\n",
            EtcdOutput.Table(["ID", "STATUS"], [["1", "unstarted"]]));
    }
}

/// <summary>A real single-member etcd on free ports, for comparing behaviour (Debian package etcd-server).</summary>
internal sealed class EtcdServer : IAsyncDisposable
{
    private readonly Process _process;
    private readonly string _dir;

    private EtcdServer(Process process, string dir, string clientUrl)
    {
        _process = process;
        _dir = dir;
        ClientUrl = clientUrl;
    }

    public string ClientUrl { get; }

    public static string? Binary() =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Select(d => Path.Combine(d, "etcd")).FirstOrDefault(File.Exists);

    public static async Task<EtcdServer> StartAsync()
    {
        var dir = CliKit.NewTempDir("etcd");
        var client = $"http://127.0.0.1:{ClusterKit.FreePort()}";
        var peer = $"http://127.0.0.1:{ClusterKit.FreePort()}";
        var info = new ProcessStartInfo(Binary()!) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "--name", "e1", "--data-dir", dir, "--listen-client-urls", client, "--advertise-client-urls", client,
                     "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", $"e1={peer}" })
            info.ArgumentList.Add(a);
        var process = Process.Start(info)!;
        process.OutputDataReceived += (_, _) => { };
        process.ErrorDataReceived += (_, _) => { };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var server = new EtcdServer(process, dir, client);
        using var c = new EtcdClient(client);
        await ClusterKit.EventuallyAsync(async () => (await c.StatusAsync()).Leader != 0, "etcd to elect itself");
        return server;
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited) _process.Kill(entireProcessTree: true);
        await _process.WaitForExitAsync();
        _process.Dispose();
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }
}
