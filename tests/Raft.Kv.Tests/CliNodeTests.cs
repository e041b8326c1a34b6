using Raft.Kv.Cli;
using Raft.Kv.Server;

namespace Raft.Kv.Tests;

/// <summary>'raftv node': etcd's settings from flags, RAFTV_* variables and a JSON file, their checks, and a real cluster of node processes.</summary>
public class CliNodeTests
{
    private static NodePlan Plan(string[] args, Dictionary<string, string>? env = null)
    {
        var a = new CommandArgs(args);
        var legacyId = a.Option("--id");
        var legacyMembers = a.Options("--member");
        var config = NodeConfig.Read(a, env ?? []);
        a.EnsureNoneLeft();
        return NodePlan.Resolve(config, legacyId, legacyMembers);
    }

    private static string Refused(string[] args, Dictionary<string, string>? env = null) =>
        Assert.Throws<CommandArgsException>(() => Plan(args, env)).Message;

    [Fact]
    public void Defaults_are_etcds()
    {
        var p = Plan([]);
        Assert.Equal("default", p.Name);
        Assert.Equal("http://localhost:2379", p.AdvertiseClientUrl);
        Assert.Equal("http://localhost:2380", p.AdvertisePeerUrl);
        Assert.Equal([("default", "http://localhost:2380")], p.InitialCluster);
        Assert.Equal(Path.GetFullPath("default.raftv"), p.DataDir);
        Assert.False(p.JoinExisting);
        Assert.Equal(1536 * 1024, p.MaxRequestBytes);
        Assert.Equal(128, p.MaxTxnOps);
        Assert.Equal(TimeSpan.FromMilliseconds(100), p.HeartbeatInterval);
        Assert.Equal(10, p.ElectionTicks);
        Assert.Equal(10_000, p.AutoCompactionRetention);
        Assert.Equal(0, Plan(["--auto-compaction-retention", "0", "--auto-compaction-mode", "revision"]).AutoCompactionRetention);
    }

    [Fact]
    public void Flags_win_over_the_environment_which_wins_over_the_config_file()
    {
        var file = Path.GetTempFileName();
        try
        {
            File.WriteAllText(file, """
                { "name": "from-file", "data-dir": "/tmp/f", "heartbeat-interval": 50, "election-timeout": 500,
                  "initial-cluster": ["from-file=http://10.0.0.1:2380", "n2=http://10.0.0.2:2380"],
                  "initial-advertise-peer-urls": "http://10.0.0.1:2380", "listen-peer-urls": "http://0.0.0.0:2380",
                  "listen-client-urls": "http://0.0.0.0:2379", "advertise-client-urls": "http://10.0.0.1:2379" }
                """);
            var fromFile = Plan(["--config-file", file]);
            Assert.Equal("from-file", fromFile.Name);
            Assert.Equal("/tmp/f", fromFile.DataDir);
            Assert.Equal(TimeSpan.FromMilliseconds(50), fromFile.HeartbeatInterval);
            Assert.Equal("http://0.0.0.0:2379", fromFile.ListenClientUrl);
            Assert.Equal("http://10.0.0.1:2379", fromFile.AdvertiseClientUrl);
            Assert.Equal(2, fromFile.InitialCluster.Count);

            var env = new Dictionary<string, string> { ["RAFTV_DATA_DIR"] = "/tmp/e", ["RAFTV_CONFIG_FILE"] = file, ["RAFTV_MAX_TXN_OPS"] = "7" };
            var fromEnv = Plan([], env);
            Assert.Equal("/tmp/e", fromEnv.DataDir);
            Assert.Equal("from-file", fromEnv.Name);
            Assert.Equal(7, fromEnv.MaxTxnOps);

            var fromFlag = Plan(["--data-dir=/tmp/x", "--max-txn-ops", "9"], env);
            Assert.Equal("/tmp/x", fromFlag.DataDir);
            Assert.Equal(9, fromFlag.MaxTxnOps);
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public void Bad_settings_get_errors_that_name_them()
    {
        Assert.Contains("--initial-cluster-state must be new or existing, not 'old'", Refused(["--initial-cluster-state", "old"]));
        Assert.Contains("environment variable RAFTV_INITIAL_CLUSTER_STATE must be new or existing", Refused([], new() { ["RAFTV_INITIAL_CLUSTER_STATE"] = "maybe" }));
        Assert.Contains("does not list this member's name 'n9'", Refused(["--name", "n9", "--initial-cluster", "n1=http://127.0.0.1:2380"]));
        Assert.Contains("has n1=http://127.0.0.1:2380 but --initial-advertise-peer-urls is http://127.0.0.1:2390",
            Refused(["--name", "n1", "--initial-cluster", "n1=http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2390"]));
        Assert.Contains("'n1' is not NAME=PEER_URL", Refused(["--initial-cluster", "n1"]));
        Assert.Contains("peer URL http://127.0.0.1:2380 is given to two members",
            Refused(["--name", "a", "--initial-cluster", "a=http://127.0.0.1:2380,b=http://127.0.0.1:2380"]));
        Assert.Contains("is not an http:// or https:// URL", Refused(["--listen-client-urls", "localhost:2379"]));
        Assert.Contains("must name an IP address (or localhost) to listen on", Refused(["--listen-client-urls", "http://example.com:2379"]));
        Assert.Contains("raftv serves one URL per member", Refused(["--listen-client-urls", "http://127.0.0.1:1,http://127.0.0.1:2"]));
        Assert.Contains("--advertise-client-urls is required when --listen-client-urls is http://0.0.0.0:2379", Refused(["--listen-client-urls", "http://0.0.0.0:2379"]));
        Assert.Contains("must be at least 5 times --heartbeat-interval", Refused(["--heartbeat-interval", "100", "--election-timeout", "300"]));
        Assert.Contains("--max-request-bytes must be an integer of at least 1, not 'lots'", Refused(["--max-request-bytes", "lots"]));
        Assert.Contains("--cert-file and --key-file go together", Refused(["--cert-file", "/etc/hostname"]));
        Assert.Contains("--peer-cert-file 'missing.pem' does not exist", Refused(["--peer-cert-file", "missing.pem", "--peer-key-file", "missing.key"]));
        Assert.Contains("--client-cert-auth needs --trusted-ca-file", Refused(["--cert-file", "/etc/hostname", "--key-file", "/etc/hostname", "--client-cert-auth"]));
        Assert.Contains("give either --id/--member", Refused(["--id", "1", "--member", "1,http://127.0.0.1:1,http://127.0.0.1:2", "--initial-cluster", "a=http://127.0.0.1:1"]));
        Assert.Contains("--member needs --id", Refused(["--member", "1,http://127.0.0.1:1,http://127.0.0.1:2"]));
        Assert.Contains("--member-id 'xyz' is not a member id", Refused(["--member-id", "xyz"]));
        Assert.Contains("--auto-compaction-mode must be revision, not 'periodic'", Refused(["--auto-compaction-mode", "periodic"]));

        var file = Path.GetTempFileName();
        try
        {
            File.WriteAllText(file, """{ "nmae": "typo" }""");
            Assert.Contains("\"nmae\" is not a raftv node setting", Refused(["--config-file", file]));
            File.WriteAllText(file, "{ not json");
            Assert.Contains("is not valid JSON", Refused(["--config-file", file]));
        }
        finally
        {
            File.Delete(file);
        }
        Assert.Contains("cannot be read", Refused(["--config-file", "/nonexistent/raftv.json"]));
    }

    [Fact]
    public void Tls_flags_become_the_servers_tls_files()
    {
        var dir = CliKit.NewTempDir("tls-flags");
        Directory.CreateDirectory(dir);
        try
        {
            foreach (var f in new[] { "c.pem", "c.key", "ca.pem", "p.pem", "p.key", "pca.pem" }) File.WriteAllText(Path.Combine(dir, f), "x");
            string F(string name) => Path.Combine(dir, name);
            var p = Plan(["--name", "n1", "--cert-file", F("c.pem"), "--key-file", F("c.key"), "--trusted-ca-file", F("ca.pem"), "--client-cert-auth",
                "--peer-cert-file", F("p.pem"), "--peer-key-file", F("p.key"), "--peer-trusted-ca-file", F("pca.pem"), "--peer-client-cert-auth=true",
                "--listen-client-urls", "https://127.0.0.1:2379", "--listen-peer-urls", "https://127.0.0.1:2380"]);
            Assert.Equal(new TlsFiles(F("c.pem"), F("c.key"), F("ca.pem"), true), p.ClientTls);
            Assert.Equal(new TlsFiles(F("p.pem"), F("p.key"), F("pca.pem"), true), p.PeerTls);
            var options = p.ServerOptions(new NodeIdentity(5, [new KvMember(5, "n1", p.AdvertisePeerUrl, p.AdvertiseClientUrl)], false), "Host=x");
            Assert.Equal(p.ClientTls, options.ClientTls);
            Assert.Equal(p.PeerTls, options.PeerTls);
            // Without TLS files, https URLs are refused by the server's own checks, with the flags named.
            var plain = Plan(["--listen-client-urls", "https://127.0.0.1:2379"]);
            var e = Assert.Throws<ArgumentException>(() => plain.ServerOptions(
                new NodeIdentity(5, [new KvMember(5, "default", plain.AdvertisePeerUrl, plain.AdvertiseClientUrl)], false), "Host=x").Validate());
            Assert.Contains("--cert-file", e.Message);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Member_ids_of_a_new_cluster_follow_from_the_peer_urls_and_the_token()
    {
        var a = NodePlan.ComputeMemberId("http://10.0.0.1:2380", "t");
        Assert.Equal(a, NodePlan.ComputeMemberId("http://10.0.0.1:2380/", "t"));
        Assert.NotEqual(a, NodePlan.ComputeMemberId("http://10.0.0.2:2380", "t"));
        Assert.NotEqual(a, NodePlan.ComputeMemberId("http://10.0.0.1:2380", "u"));
        Assert.Equal(0x8e9e05c52164694dUL, NodePlan.ParseHexId("8e9e05c52164694d", "--member-id"));
    }

    /// <summary>
    /// Three members configured three ways (flags, RAFTV_* variables, a config file), a fourth added with
    /// 'member add' that learns its id from the others, and a restart that reuses member.json.
    /// </summary>
    [Fact]
    public async Task Nodes_form_a_cluster_from_initial_cluster_and_a_fourth_joins_an_existing_one()
    {
        var dir = CliKit.NewTempDir("nodes");
        Directory.CreateDirectory(dir);
        var peer = Enumerable.Range(0, 4).Select(_ => $"http://127.0.0.1:{ClusterKit.FreePort()}").ToArray();
        var client = Enumerable.Range(0, 4).Select(_ => $"http://127.0.0.1:{ClusterKit.FreePort()}").ToArray();
        var cluster = $"n1={peer[0]},n2={peer[1]},n3={peer[2]}";
        var token = "t-" + Guid.NewGuid().ToString("N")[..6];
        var dbs = new List<string>();
        for (var i = 0; i < 4; i++) dbs.Add(await ClusterKit.NewDatabaseAsync());
        var file = Path.Combine(dir, "n3.json");
        File.WriteAllText(file, $$"""
            { "name": "n3", "data-dir": "{{dir}}/n3", "pg": "{{dbs[2]}}", "initial-cluster": "{{cluster}}", "initial-cluster-token": "{{token}}",
              "listen-peer-urls": "{{peer[2]}}", "listen-client-urls": "{{client[2]}}", "heartbeat-interval": 50, "election-timeout": 500 }
            """);
        var nodes = new List<CliKit.Running>();
        try
        {
            nodes.Add(new(["node", "--name", "n1", "--data-dir", $"{dir}/n1", "--pg", dbs[0], "--initial-cluster", cluster, "--initial-cluster-token", token,
                "--listen-peer-urls", peer[0], "--listen-client-urls", client[0], "--heartbeat-interval", "50", "--election-timeout", "500"]));
            nodes.Add(new(["node"], new Dictionary<string, string>
            {
                ["RAFTV_NAME"] = "n2", ["RAFTV_DATA_DIR"] = $"{dir}/n2", ["RAFTV_PG"] = dbs[1], ["RAFTV_INITIAL_CLUSTER"] = cluster,
                ["RAFTV_INITIAL_CLUSTER_TOKEN"] = token, ["RAFTV_LISTEN_PEER_URLS"] = peer[1], ["RAFTV_LISTEN_CLIENT_URLS"] = client[1],
                ["RAFTV_HEARTBEAT_INTERVAL"] = "50", ["RAFTV_ELECTION_TIMEOUT"] = "500",
            }));
            nodes.Add(new(["node", "--config-file", file]));
            foreach (var n in nodes) await n.WaitForAsync("serving etcd v3 clients");
            string Logs() => string.Join("\n", nodes.Select((n, i) => $"--- node {i + 1}\n{n.Log}"));

            using var c1 = new EtcdClient(client[0]);
            await ClusterKit.EventuallyAsync(async () => { await c1.PutAsync("k", "v"); return true; }, "a write", 30, Logs);
            await ClusterKit.EventuallyAsync(async () =>
                (await c1.MemberListAsync()).Members.Count(m => m.Name.Length > 0 && m.ClientURLs.Count == 1) == 3, "three started members", 30, Logs);
            var ids = (await c1.MemberListAsync()).Members.ToDictionary(m => m.Name, m => m.ID);
            Assert.Equal(NodePlan.ComputeMemberId(peer[0], token), ids["n1"]);
            Assert.Equal(client[1], (await c1.MemberListAsync()).Members.Single(m => m.Name == "n2").ClientURLs[0]);

            // A fourth member: added first, then started as 'existing'; it asks the others for its id.
            var added = await c1.MemberAddAsync(peer[3], learner: false);
            nodes.Add(new(["node", "--name", "n4", "--data-dir", $"{dir}/n4", "--pg", dbs[3], "--initial-cluster", $"{cluster},n4={peer[3]}",
                "--initial-cluster-state", "existing", "--listen-peer-urls", peer[3], "--listen-client-urls", client[3],
                "--heartbeat-interval", "50", "--election-timeout", "500"]));
            await nodes[3].WaitForAsync($"n4 ({added.Member.ID:x}) serving etcd v3 clients");
            using var c4 = new EtcdClient(client[3]);
            await ClusterKit.EventuallyAsync(async () => await c4.GetAsync("k") == "v", "the new member serves the data", 30, Logs);

            // Restarted with nothing but its name and data directory, n4 is the same member (member.json).
            await nodes[3].DisposeAsync();
            nodes[3] = new(["node", "--name", "n4", "--data-dir", $"{dir}/n4", "--pg", dbs[3], "--listen-peer-urls", peer[3], "--listen-client-urls", client[3]]);
            await nodes[3].WaitForAsync($"n4 ({added.Member.ID:x}) serving etcd v3 clients");
            await c1.PutAsync("k2", "v2");
            await ClusterKit.EventuallyAsync(async () => await c4.GetAsync("k2") == "v2", "the restarted member catches up", 30, Logs);

            // A member started under another name on that data directory is refused.
            var wrong = await CliKit.RunAsync(["node", "--name", "n5", "--data-dir", $"{dir}/n4", "--pg", dbs[3],
                "--initial-cluster", $"n5={peer[3]}", "--listen-peer-urls", peer[3], "--listen-client-urls", client[3]]);
            Assert.Equal(RaftvCli.UsageError, wrong.Exit);
            Assert.Contains("belongs to member 'n4', not 'n5'", wrong.Err);
        }
        finally
        {
            foreach (var n in nodes) await n.DisposeAsync();
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task A_joining_member_that_was_not_added_is_told_to_add_it_first()
    {
        var peer = $"http://127.0.0.1:{ClusterKit.FreePort()}";
        var members = new[] { ClusterKit.NewMember(1) };
        await using var server = await KvServer.StartAsync(new KvServerOptions
        {
            NodeId = 1, Members = members, ConnectionString = await ClusterKit.NewDatabaseAsync(), TickInterval = TimeSpan.FromMilliseconds(50),
        });
        var result = await CliKit.RunAsync(["node", "--name", "late", "--data-dir", CliKit.NewTempDir("late"), "--pg", "Host=127.0.0.1;Port=1",
            "--initial-cluster", $"node1={members[0].PeerUrl},late={peer}", "--initial-cluster-state", "existing",
            "--listen-peer-urls", peer, "--listen-client-urls", $"http://127.0.0.1:{ClusterKit.FreePort()}"]);
        Assert.Equal(RaftvCli.UsageError, result.Exit);
        Assert.Contains($"has no member with peer URL {peer}: add it first with 'raftv member add late --peer-urls={peer}'", result.Err);
    }
}
