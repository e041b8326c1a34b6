using Npgsql;
using Raft.Kv.Server;

namespace Raft.Kv.Tests;

/// <summary>
/// A member remembers the results of the writes whose clients sent a request id (a retry is answered
/// from the record) and nothing for the others: the id it makes up to find their callers is never kept.
/// </summary>
public class RequestIdTests
{
    private static async Task<List<string>> RememberedIdsAsync(string connectionString)
    {
        await using var conn = new NpgsqlConnection(connectionString);
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand("SELECT convert_from(request_id, 'UTF8') FROM kv.kv_applied_requests ORDER BY 1", conn);
        await using var r = await cmd.ExecuteReaderAsync();
        var ids = new List<string>();
        while (await r.ReadAsync()) ids.Add(r.GetString(0));
        return ids;
    }

    [Fact]
    public async Task Only_writes_with_a_clients_request_id_are_remembered_and_a_retry_is_answered_from_the_record()
    {
        var self = ClusterKit.NewMember(1);
        var cs = await ClusterKit.NewDatabaseAsync();
        await using var server = await KvServer.StartAsync(new KvServerOptions
        {
            NodeId = self.Id,
            Members = [self],
            ConnectionString = cs,
            TickInterval = TimeSpan.FromMilliseconds(50),
            RequestTimeout = TimeSpan.FromSeconds(4),
        });
        using var client = new EtcdClient(self.ClientUrl);
        await ClusterKit.EventuallyAsync(async () => (await client.StatusAsync()).Leader == self.Id, "the single member leading");

        var anonymous = await client.PutAsync("a", "1");
        Assert.Empty(await RememberedIdsAsync(cs));

        var first = await client.PutAsync("b", "first", requestId: "retry-me");
        Assert.Equal(anonymous.Header.Revision + 1, first.Header.Revision);
        Assert.Equal(["retry-me"], await RememberedIdsAsync(cs));

        // A retry with the same id is answered with the first result and writes nothing.
        await client.PutAsync("c", "1");
        var retry = await client.PutAsync("b", "second", requestId: "retry-me");
        Assert.Equal(first.Header.Revision, retry.Header.Revision);
        Assert.Equal("first", await client.GetAsync("b"));
        Assert.Equal(first.Header.Revision + 1, (await client.StatusAsync()).Header.Revision);
        Assert.Equal(["retry-me"], await RememberedIdsAsync(cs));
    }
}
