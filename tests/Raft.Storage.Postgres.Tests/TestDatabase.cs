using Npgsql;

namespace Raft.Storage.Postgres.Tests;

/// <summary>
/// The PostgreSQL the tests use: ./test.sh's shared server (RAFTV_TEST_PG) when set, otherwise one
/// private server started on first use and removed when the test process exits. Each test works in
/// a schema of its own, so tests never see each other's tables.
/// </summary>
internal static class TestDatabase
{
    private static readonly Lazy<Task<string>> Shared = new(StartAsync);
    private static LocalPostgres? _own;

    public static Task<string> ConnectionStringAsync() => Shared.Value;

    public static string NewSchema() => "t" + Guid.NewGuid().ToString("N");

    public static string NewDataDirectory() =>
        Path.Combine(Path.GetTempPath(), "raftverified-pgstore-" + Guid.NewGuid().ToString("N")[..12]);

    private static async Task<string> StartAsync()
    {
        var cs = Environment.GetEnvironmentVariable("RAFTV_TEST_PG");
        if (!string.IsNullOrEmpty(cs)) return cs;
        RemoveStoppedLeftovers();
        _own = await LocalPostgres.StartAsync(new LocalPostgresOptions(NewDataDirectory(), Durable: false));
        AppDomain.CurrentDomain.ProcessExit += (_, _) => _own.DestroyAsync().GetAwaiter().GetResult();
        return _own.ConnectionString;
    }

    // The test host may end before the exit handler has deleted the directory; a later run
    // removes the stopped servers' directories (no postmaster.pid) left under our prefix.
    private static void RemoveStoppedLeftovers()
    {
        foreach (var dir in Directory.GetDirectories(Path.GetTempPath(), "raftverified-pgstore-*"))
        {
            if (File.Exists(Path.Combine(dir, "postmaster.pid"))) continue;
            try { Directory.Delete(dir, recursive: true); }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
    }

    public static async Task ExecuteAsync(string connectionString, string sql)
    {
        await using var conn = new NpgsqlConnection(connectionString);
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand(sql, conn);
        await cmd.ExecuteNonQueryAsync();
    }

    public static async Task<T> ScalarAsync<T>(string connectionString, string sql)
    {
        await using var conn = new NpgsqlConnection(connectionString);
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand(sql, conn);
        return (T)(await cmd.ExecuteScalarAsync())!;
    }
}
