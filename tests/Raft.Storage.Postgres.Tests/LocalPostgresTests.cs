using System.Net;
using System.Net.Sockets;
using Npgsql;

namespace Raft.Storage.Postgres.Tests;

public class LocalPostgresTests
{
    private static string NewDataDirectory() =>
        Path.Combine(Path.GetTempPath(), "raftverified-pgtest-" + Guid.NewGuid().ToString("N")[..12]);

    [Fact]
    public async Task Starts_answers_queries_and_is_removed()
    {
        var dir = NewDataDirectory();
        var server = await LocalPostgres.StartAsync(new LocalPostgresOptions(dir, Database: "lp_test", Durable: false));
        try
        {
            await using var conn = new NpgsqlConnection(server.ConnectionString);
            await conn.OpenAsync();
            await using var cmd = new NpgsqlCommand("SELECT current_database(), current_setting('port')", conn);
            await using var reader = await cmd.ExecuteReaderAsync();
            Assert.True(await reader.ReadAsync());
            Assert.Equal("lp_test", reader.GetString(0));
            Assert.Equal(server.Port.ToString(), reader.GetString(1));
        }
        finally
        {
            await server.DestroyAsync();
        }
        Assert.False(Directory.Exists(dir));
    }

    [Fact]
    public async Task A_taken_port_is_a_clear_error()
    {
        using var holder = new TcpListener(IPAddress.Loopback, 0);
        holder.Start();
        var port = ((IPEndPoint)holder.LocalEndpoint).Port;
        var e = await Assert.ThrowsAsync<LocalPostgresException>(() =>
            LocalPostgres.StartAsync(new LocalPostgresOptions(NewDataDirectory(), Port: port, Durable: false)));
        Assert.Contains($"port {port}", e.Message);
        Assert.Contains("already in use", e.Message);
    }

    [Fact]
    public async Task Missing_binaries_are_a_clear_error()
    {
        var empty = Directory.CreateTempSubdirectory().FullName;
        var e = await Assert.ThrowsAsync<LocalPostgresException>(() =>
            LocalPostgres.StartAsync(new LocalPostgresOptions(NewDataDirectory(), BinDirectory: empty)));
        Assert.Contains("does not hold initdb and pg_ctl", e.Message);
    }

    [Fact]
    public async Task The_shared_test_server_is_reachable_when_given()
    {
        // ./test.sh starts one PostgreSQL for all suites and exports its connection string.
        var cs = Environment.GetEnvironmentVariable("RAFTV_TEST_PG");
        if (cs is null)
        {
            await using var own = await LocalPostgres.StartAsync(new LocalPostgresOptions(NewDataDirectory(), Durable: false));
            cs = own.ConnectionString;
            await AssertAnswers(cs);
            await own.DestroyAsync();
            return;
        }
        await AssertAnswers(cs);

        static async Task AssertAnswers(string cs)
        {
            await using var conn = new NpgsqlConnection(cs);
            await conn.OpenAsync();
            await using var cmd = new NpgsqlCommand("SELECT 40 + 2", conn);
            Assert.Equal(42, await cmd.ExecuteScalarAsync());
        }
    }
}
