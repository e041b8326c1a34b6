using System.Net;
using Npgsql;
using Raft.Kv.Cli;
using Raft.Kv.Server;
using Raft.Kv.Torture;
using Raft.Transport.Grpc.Wire;

namespace Raft.Kv.Tests;

/// <summary>
/// A member whose PostgreSQL cannot be reached: clients are told the member is unavailable (and
/// may retry elsewhere), never an unknown error, and 'raftv serve' says so instead of crashing.
/// </summary>
public class PeerOutageTests
{
    [Fact]
    public async Task A_member_whose_postgresql_is_unreachable_answers_unavailable_and_serves_again_once_it_is_back()
    {
        // The member reaches its database through a TCP proxy, which then drops every connection.
        var direct = new NpgsqlConnectionStringBuilder(await ClusterKit.NewDatabaseAsync());
        Assert.True(IPAddress.TryParse(direct.Host, out var host), $"the test database must be reached over TCP, not '{direct.Host}'");
        await using var proxy = new LinkProxy(0, 1, new IPEndPoint(host, direct.Port));
        proxy.Start();
        var viaProxy = new NpgsqlConnectionStringBuilder(direct.ConnectionString) { Port = proxy.Port, Timeout = 3 };
        var self = ClusterKit.NewMember(1);
        await using var server = await KvServer.StartAsync(new KvServerOptions
        {
            NodeId = 1, Members = [self], ConnectionString = viaProxy.ConnectionString, TickInterval = TimeSpan.FromMilliseconds(50),
        });
        using var client = new EtcdClient(self.ClientUrl);
        await PeerKit.LeaderAsync(1, _ => client.StatusAsync());
        await client.PutAsync("k", "before");

        proxy.Set(LinkFault.Drop);
        var read = await Assert.ThrowsAsync<GrpcCallException>(() => client.GetAsync("k", serializable: true));
        Assert.Equal(StatusCode.Unavailable, read.StatusCode);
        Assert.Contains("PostgreSQL", read.StatusMessage);
        var status = await Assert.ThrowsAsync<GrpcCallException>(() => client.StatusAsync());
        Assert.Equal(StatusCode.Unavailable, status.StatusCode);

        proxy.Set(null);
        await ClusterKit.EventuallyAsync(async () => await client.GetAsync("k", serializable: true) == "before", "reads once PostgreSQL is back");
    }

    [Fact]
    public async Task Serve_with_postgresql_down_says_so_and_exits_non_zero()
    {
        var closed = ClusterKit.FreePort();
        var self = ClusterKit.NewMember(1);
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var exit = await RaftvCli.RunAsync(["serve", "--id", "1", "--member", $"1,{self.PeerUrl},{self.ClientUrl}",
            "--pg", $"Host=127.0.0.1;Port={closed};Username=postgres;Database=nowhere;Timeout=3"], stdout, stderr, CancellationToken.None);
        Assert.Equal(1, exit);
        Assert.Contains("PostgreSQL", stderr.ToString());
        Assert.Contains($"127.0.0.1:{closed}", stderr.ToString());
    }
}
