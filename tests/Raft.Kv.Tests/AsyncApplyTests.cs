using Npgsql;
using Raft.Kv.Server;

namespace Raft.Kv.Tests;

/// <summary>
/// Applies commit without waiting for their WAL flush: a PostgreSQL crash may undo the last of
/// them while the member runs on. These tests put the store's rows back to what they were a few
/// applies earlier (exactly what such a crash leaves) and check that nothing acknowledged is
/// missing from reads or from the state later writes build on.
/// </summary>
public class AsyncApplyTests
{
    /// <summary>Every row of the member's key-value tables, copied aside, and put back on demand.</summary>
    private sealed class StoreRollback(string connectionString)
    {
        private List<string> _tables = [];

        public async Task SaveAsync()
        {
            await using var conn = new NpgsqlConnection(connectionString);
            await conn.OpenAsync();
            await using (var list = new NpgsqlCommand(
                             "SELECT table_name FROM information_schema.columns WHERE table_schema = 'kv' AND column_name = 'group_id' ORDER BY table_name", conn))
            await using (var r = await list.ExecuteReaderAsync())
            {
                _tables = [];
                while (await r.ReadAsync()) _tables.Add(r.GetString(0));
            }
            Assert.Contains("kv_groups", _tables);
            Assert.Contains("kv_keys", _tables);
            foreach (var t in _tables)
            {
                await using var copy = new NpgsqlCommand($"DROP TABLE IF EXISTS public.saved_{t}; CREATE TABLE public.saved_{t} AS TABLE kv.{t}", conn);
                await copy.ExecuteNonQueryAsync();
            }
        }

        public async Task RestoreAsync()
        {
            await using var conn = new NpgsqlConnection(connectionString);
            await conn.OpenAsync();
            await using var tx = await conn.BeginTransactionAsync();
            foreach (var t in _tables)
            {
                await using var put = new NpgsqlCommand($"DELETE FROM kv.{t}; INSERT INTO kv.{t} SELECT * FROM public.saved_{t}", conn, tx);
                await put.ExecuteNonQueryAsync();
            }
            await tx.CommitAsync();
        }
    }

    private static async Task<(KvServer Server, EtcdClient Client, StoreRollback Rollback)> StartSingleMemberAsync()
    {
        var self = ClusterKit.NewMember(1);
        var cs = await ClusterKit.NewDatabaseAsync();
        var server = await KvServer.StartAsync(new KvServerOptions
        {
            NodeId = self.Id,
            Members = [self],
            ConnectionString = cs,
            TickInterval = TimeSpan.FromMilliseconds(50),
            RequestTimeout = TimeSpan.FromSeconds(4),
        });
        var client = new EtcdClient(self.ClientUrl);
        await ClusterKit.EventuallyAsync(async () => (await client.StatusAsync()).Leader == self.Id, "the single member leading");
        return (server, client, new StoreRollback(cs));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Reads_after_undone_applies_still_see_every_acknowledged_write(bool serializable)
    {
        var (server, client, rollback) = await StartSingleMemberAsync();
        await using var _1 = server;
        using var _2 = client;
        await client.PutAsync("a", "1");
        await rollback.SaveAsync();
        await client.PutAsync("a", "2");
        await client.PutAsync("b", "1");

        await rollback.RestoreAsync();
        Assert.Equal("2", await client.GetAsync("a", serializable));
        Assert.Equal("1", await client.GetAsync("b", serializable));
    }

    [Fact]
    public async Task Writes_after_undone_applies_build_on_every_acknowledged_write()
    {
        var (server, client, rollback) = await StartSingleMemberAsync();
        await using var _1 = server;
        using var _2 = client;
        await client.PutAsync("a", "1");
        await rollback.SaveAsync();
        var second = await client.PutAsync("a", "2");

        await rollback.RestoreAsync();
        var third = await client.PutAsync("c", "1");
        // The revision model continues from the undone write, not from the rolled-back state.
        Assert.Equal(second.Header.Revision + 1, third.Header.Revision);
        var a = await client.GetAsync("a");
        Assert.Equal("2", a);
    }
}
