using System.Net.Sockets;
using Npgsql;
using Raft.Spec;

namespace Raft.Storage.Postgres;

/// <summary>Why a PostgreSQL storage operation failed.</summary>
public enum PostgresStorageErrorKind
{
    InvalidConnectionString,
    /// <summary>The server could not be reached (refused, unknown host, timeout, restarting).</summary>
    Unreachable,
    AuthenticationFailed,
    PermissionDenied,
    DatabaseMissing,
    /// <summary>The database holds a schema version this code does not know.</summary>
    SchemaTooNew,
    /// <summary>Another process wrote the same Raft group since this one opened it.</summary>
    ConcurrentWriter,
    /// <summary>The connection broke while a save was committing and the outcome could not be read
    /// back: the save is NOT acknowledged; the next operation reads the outcome first.</summary>
    CommitOutcomeUnknown,
    /// <summary>The stored state breaks an invariant (e.g. a gap in the log).</summary>
    Corrupt,
    /// <summary>Any other error reported by PostgreSQL.</summary>
    Server,
}

/// <summary>A storage operation failed; <see cref="Kind"/> says how, the message what to do.</summary>
public sealed class PostgresStorageException(PostgresStorageErrorKind kind, string message, Exception? inner = null)
    : Exception(message, inner)
{
    public PostgresStorageErrorKind Kind { get; } = kind;
}

/// <summary>A storage error Raft knows how to handle (etcd's ErrCompacted, ErrSnapOutOfDate, …).</summary>
public sealed class RaftStorageErrorException(StorageError error)
    : Exception(StorageErrorModule.message(error))
{
    public StorageError Error { get; } = error;
}

/// <summary>Turns Npgsql's exceptions into messages that say what is wrong and what to do.</summary>
internal static class PostgresErrors
{
    /// <summary>Where we talk to, without the password (never put it in a message).</summary>
    public static string Describe(NpgsqlConnectionStringBuilder cs) =>
        $"database '{cs.Database}' as user '{cs.Username}' on {cs.Host}:{cs.Port}";

    public static PostgresStorageException Map(Exception e, NpgsqlConnectionStringBuilder cs, string doing)
    {
        var where = Describe(cs);
        if (e is PostgresStorageException p) return p;
        if (e is PostgresException pg)
        {
            return pg.SqlState switch
            {
                "28P01" or "28000" => new(PostgresStorageErrorKind.AuthenticationFailed,
                    $"{doing}: PostgreSQL refused the login to {where}: {pg.MessageText}. Check the user name, the password and pg_hba.conf.", e),
                "42501" => new(PostgresStorageErrorKind.PermissionDenied,
                    $"{doing}: permission denied for {where}: {pg.MessageText}. Grant the user CREATE and USAGE on the schema (or run the migrations once as the schema's owner) and SELECT/INSERT/UPDATE/DELETE on its tables.", e),
                "3D000" => new(PostgresStorageErrorKind.DatabaseMissing,
                    $"{doing}: {where}: {pg.MessageText}. Create the database first (CREATE DATABASE) or fix the connection string.", e),
                "57P01" or "57P02" or "57P03" or "08006" or "08001" or "08004" => new(PostgresStorageErrorKind.Unreachable,
                    $"{doing}: PostgreSQL at {where} is shutting down, starting up or dropped the connection: {pg.MessageText}.", e),
                _ => new(PostgresStorageErrorKind.Server, $"{doing}: PostgreSQL error {pg.SqlState} from {where}: {pg.MessageText}", e),
            };
        }
        var socket = FindInner<SocketException>(e);
        if (socket is not null)
        {
            var what = socket.SocketErrorCode switch
            {
                SocketError.ConnectionRefused => "connection refused (is PostgreSQL running and listening on that port?)",
                SocketError.HostNotFound or SocketError.NoData or SocketError.TryAgain => $"host '{cs.Host}' not found",
                SocketError.TimedOut => "connection timed out",
                _ => socket.Message,
            };
            return new(PostgresStorageErrorKind.Unreachable, $"{doing}: could not reach {where}: {what}.", e);
        }
        if (e is NpgsqlException or TimeoutException or IOException)
            return new(PostgresStorageErrorKind.Unreachable, $"{doing}: lost or could not open the connection to {where}: {e.Message}", e);
        return new(PostgresStorageErrorKind.Server, $"{doing}: {e.Message}", e);
    }

    /// <summary>Errors after which a new connection may succeed: the server went away or is restarting.</summary>
    public static bool IsConnectionFailure(Exception e) => e switch
    {
        PostgresException pg => pg.SqlState is "57P01" or "57P02" or "57P03" || pg.SqlState.StartsWith("08", StringComparison.Ordinal),
        NpgsqlException or IOException or SocketException or TimeoutException => true,
        _ => false,
    };

    /// <summary>
    /// A statement error reported by a live server: the implicit transaction is rolled back, so
    /// the write certainly did not commit. Anything else (a broken connection, a FATAL error) may
    /// have arrived after the commit, and the outcome has to be read back.
    /// </summary>
    public static bool CertainlyNotCommitted(Exception e) =>
        e is PostgresException { Severity: "ERROR" } pg && !IsConnectionFailure(pg);

    private static T? FindInner<T>(Exception? e) where T : Exception
    {
        for (; e is not null; e = e.InnerException)
            if (e is T t) return t;
        return null;
    }
}
