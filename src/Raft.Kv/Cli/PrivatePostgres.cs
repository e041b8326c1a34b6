using Npgsql;
using Raft.Storage.Postgres;

namespace Raft.Kv.Cli;

/// <summary>The private PostgreSQL server that 'raftv up' and 'raftv node' keep in their data directory.</summary>
internal static class PrivatePostgres
{
    /// <summary>
    /// Starts the server on its existing data (or a new one), after stopping a server that a killed
    /// raftv left running there: its data is reused, never re-initialised.
    /// </summary>
    public static async Task<LocalPostgres> StartAsync(string directory, string database, CancellationToken ct)
    {
        if (File.Exists(Path.Combine(directory, "postmaster.pid")))
        {
            try
            {
                await LocalPostgres.Attach(directory).StopAsync(cancellationToken: ct);
            }
            catch (LocalPostgresException)
            {
                // A stale pid file of a server that is gone: pg_ctl start handles it.
            }
        }
        return await LocalPostgres.StartAsync(new LocalPostgresOptions(directory, Database: database), cancellationToken: ct);
    }

    /// <summary>Stops a server left running in <paramref name="directory"/>, if any; true when one was stopped.</summary>
    public static async Task<bool> StopIfRunningAsync(string directory, CancellationToken ct)
    {
        if (!File.Exists(Path.Combine(directory, "postmaster.pid"))) return false;
        try
        {
            await LocalPostgres.Attach(directory).StopAsync(cancellationToken: ct);
            return true;
        }
        catch (LocalPostgresException)
        {
            return false;
        }
    }

    /// <summary>Creates <paramref name="database"/> when missing; returns a connection string naming it.</summary>
    public static async Task<string> EnsureDatabaseAsync(string connectionString, string database, CancellationToken ct)
    {
        await using (var conn = new NpgsqlConnection(connectionString))
        {
            await conn.OpenAsync(ct);
            await using var exists = new NpgsqlCommand("SELECT 1 FROM pg_database WHERE datname = $1", conn) { Parameters = { new() { Value = database } } };
            if (await exists.ExecuteScalarAsync(ct) is null)
            {
                await using var create = new NpgsqlCommand($"CREATE DATABASE \"{database.Replace("\"", "\"\"")}\"", conn);
                await create.ExecuteNonQueryAsync(ct);
            }
        }
        return new NpgsqlConnectionStringBuilder(connectionString) { Database = database }.ConnectionString;
    }
}
