using Raft.Storage.Postgres;

namespace Raft.Kv.Tests;

/// <summary>
/// PostgreSQL for the tests: ./test.sh's shared server (RAFTV_TEST_PG) when set, otherwise a private
/// server started on first use and destroyed when the test process exits. Each test takes a schema
/// of its own so tests never share tables.
/// </summary>
internal static class TestDatabase
{
    private static readonly Lazy<Task<string>> Server = new(StartAsync);
    private static LocalPostgres? _own;

    public static Task<string> ConnectionStringAsync() => Server.Value;

    public static string NewSchema() => "kvt" + Guid.NewGuid().ToString("N")[..20];

    private static async Task<string> StartAsync()
    {
        var shared = Environment.GetEnvironmentVariable("RAFTV_TEST_PG");
        if (!string.IsNullOrEmpty(shared)) return shared;
        var dir = Path.Combine(Path.GetTempPath(), "raftv-kv-tests-" + Guid.NewGuid().ToString("N")[..12]);
        _own = await LocalPostgres.StartAsync(new LocalPostgresOptions(dir, Durable: false));
        AppDomain.CurrentDomain.ProcessExit += (_, _) => _own.DestroyAsync().GetAwaiter().GetResult();
        return _own.ConnectionString;
    }
}
