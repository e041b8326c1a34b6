using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;

namespace Raft.Storage.Postgres;

/// <summary>Settings of a private PostgreSQL server run from the machine's binaries.</summary>
/// <param name="DataDirectory">Where the cluster lives; created (initdb) when empty or absent.</param>
/// <param name="Port">TCP port on <paramref name="Host"/>; 0 picks a free one.</param>
/// <param name="Database">Created when absent; the connection string names it.</param>
/// <param name="Durable">When false, fsync and synchronous_commit are off: fast, for tests only.</param>
/// <param name="BinDirectory">Folder of initdb and pg_ctl; found automatically when null.</param>
public sealed record LocalPostgresOptions(
    string DataDirectory,
    int Port = 0,
    string Database = "raftverified",
    bool Durable = true,
    string Host = "127.0.0.1",
    string? BinDirectory = null)
{
    public TimeSpan StartTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>More server settings (name to value), passed as <c>-c name=value</c>.</summary>
    public IReadOnlyDictionary<string, string> Settings { get; init; } = new Dictionary<string, string>();
}

/// <summary>PostgreSQL cannot be started as asked; the message says why and what to do.</summary>
public sealed class LocalPostgresException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// A PostgreSQL server owned by this process: initdb, start, wait until it answers, create the
/// database, stop. PostgreSQL refuses to run as root, so under root every server command runs as
/// the <c>postgres</c> user, which must own the data directory.
/// </summary>
public sealed class LocalPostgres : IAsyncDisposable
{
    private const string ServiceUser = "postgres";
    private readonly ILogger _logger;
    private readonly string _bin;
    private bool _stopped;

    private LocalPostgres(LocalPostgresOptions options, int port, string bin, ILogger logger)
    {
        Options = options;
        Port = port;
        _bin = bin;
        _logger = logger;
    }

    public LocalPostgresOptions Options { get; }
    public int Port { get; }
    public string DataDirectory => Options.DataDirectory;

    /// <summary>A connection string for <see cref="LocalPostgresOptions.Database"/>.</summary>
    public string ConnectionString => BuildConnectionString(Options.Host, Port, Options.Database);

    public static string BuildConnectionString(string host, int port, string database) =>
        new NpgsqlConnectionStringBuilder
        {
            Host = host,
            Port = port,
            Username = ServiceUser,
            Database = database,
            Pooling = true,
        }.ConnectionString;

    private static bool RunningAsRoot => Environment.UserName == "root";

    /// <summary>The folder holding initdb and pg_ctl, or null when PostgreSQL's server is not installed.</summary>
    public static string? FindBinDirectory()
    {
        var fromEnv = Environment.GetEnvironmentVariable("PG_BIN");
        if (!string.IsNullOrEmpty(fromEnv))
            return HasServerBinaries(fromEnv) ? fromEnv : null;

        // Debian installs each major version under /usr/lib/postgresql/<major>/bin; prefer the newest.
        const string debianRoot = "/usr/lib/postgresql";
        if (Directory.Exists(debianRoot))
        {
            var newest = Directory.GetDirectories(debianRoot)
                .Select(d => (dir: Path.Combine(d, "bin"), major: int.TryParse(Path.GetFileName(d), out var m) ? m : -1))
                .Where(x => x.major >= 0 && HasServerBinaries(x.dir))
                .OrderByDescending(x => x.major)
                .Select(x => x.dir)
                .FirstOrDefault();
            if (newest is not null) return newest;
        }

        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
            if (HasServerBinaries(dir))
                return dir;
        return null;
    }

    private static bool HasServerBinaries(string dir) =>
        File.Exists(Path.Combine(dir, "initdb")) && File.Exists(Path.Combine(dir, "pg_ctl"));

    /// <summary>Initialises the data directory if needed, starts the server and waits until the database answers.</summary>
    public static async Task<LocalPostgres> StartAsync(LocalPostgresOptions options, ILogger? logger = null, CancellationToken cancellationToken = default)
    {
        logger ??= NullLogger.Instance;
        var bin = options.BinDirectory ?? FindBinDirectory()
            ?? throw new LocalPostgresException(
                "PostgreSQL server binaries (initdb, pg_ctl) were not found in /usr/lib/postgresql/*/bin, PG_BIN or PATH: " +
                "install them (apt-get install postgresql) or set PG_BIN to their folder.");
        if (!HasServerBinaries(bin))
            throw new LocalPostgresException($"'{bin}' does not hold initdb and pg_ctl.");

        var dataDir = Path.GetFullPath(options.DataDirectory);
        options = options with { DataDirectory = dataDir };
        var port = options.Port == 0 ? FreePort(options.Host) : options.Port;
        EnsurePortFree(options.Host, port);

        var server = new LocalPostgres(options, port, bin, logger);
        await server.InitialiseAsync(cancellationToken).ConfigureAwait(false);
        await server.StartServerAsync(cancellationToken).ConfigureAwait(false);
        await server.WaitReadyAndCreateDatabaseAsync(cancellationToken).ConfigureAwait(false);
        return server;
    }

    /// <summary>Attaches to a server that an earlier <see cref="StartAsync"/> left running in <paramref name="dataDirectory"/>.</summary>
    public static LocalPostgres Attach(string dataDirectory, ILogger? logger = null)
    {
        var bin = FindBinDirectory() ?? throw new LocalPostgresException("PostgreSQL server binaries were not found (see PG_BIN).");
        var dataDir = Path.GetFullPath(dataDirectory);
        var pidFile = Path.Combine(dataDir, "postmaster.pid");
        if (!File.Exists(pidFile))
            throw new LocalPostgresException($"no PostgreSQL server is running in '{dataDir}' (no postmaster.pid).");
        // postmaster.pid: line 4 is the port.
        var lines = File.ReadAllLines(pidFile);
        var port = lines.Length > 3 && int.TryParse(lines[3].Trim(), out var p) ? p : 0;
        return new LocalPostgres(new LocalPostgresOptions(dataDir, port), port, bin, logger ?? NullLogger.Instance);
    }

    private async Task InitialiseAsync(CancellationToken ct)
    {
        var dir = DataDirectory;
        if (File.Exists(Path.Combine(dir, "PG_VERSION")))
            return;
        if (Directory.Exists(dir) && Directory.EnumerateFileSystemEntries(dir).Any())
            throw new LocalPostgresException($"data directory '{dir}' is not empty and holds no PostgreSQL cluster: give an empty or new directory.");

        Directory.CreateDirectory(dir);
        if (RunningAsRoot)
        {
            await RunAsync("chown", ["-R", $"{ServiceUser}:{ServiceUser}", dir], asServiceUser: false, ct).ConfigureAwait(false);
            // The service user must be able to reach the directory through every parent.
            var probe = await RunAsync("test", ["-w", dir, "-a", "-x", dir], asServiceUser: true, ct, throwOnError: false).ConfigureAwait(false);
            if (probe.ExitCode != 0)
                throw new LocalPostgresException(
                    $"the '{ServiceUser}' user cannot reach '{dir}' (a parent folder is private): choose a data directory under /tmp or another place it can enter.");
        }

        _logger.LogInformation("initialising PostgreSQL data directory {DataDirectory}", dir);
        var args = new List<string> { "-D", dir, "-U", ServiceUser, "--auth=trust", "-E", "UTF8", "--no-locale" };
        if (!Options.Durable) args.Add("--no-sync");
        await RunAsync(Path.Combine(_bin, "initdb"), args, asServiceUser: RunningAsRoot, ct).ConfigureAwait(false);
    }

    private async Task StartServerAsync(CancellationToken ct)
    {
        var settings = new List<string>
        {
            $"-p {Port}",
            $"-c listen_addresses={Options.Host}",
            $"-c unix_socket_directories='{DataDirectory}'",
            "-c max_connections=200",
        };
        if (!Options.Durable)
            settings.AddRange(["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]);
        foreach (var (name, value) in Options.Settings)
        {
            if (name.Length == 0 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '.') || value.Contains('\''))
                throw new LocalPostgresException($"PostgreSQL setting '{name}' = '{value}' is not a plain name and value");
            settings.Add($"-c {name}='{value}'");
        }

        _logger.LogInformation("starting PostgreSQL on {Host}:{Port}", Options.Host, Port);
        var result = await RunAsync(Path.Combine(_bin, "pg_ctl"),
            ["-D", DataDirectory, "-l", Path.Combine(DataDirectory, "server.log"), "-o", string.Join(' ', settings),
             "-w", "-t", ((int)Options.StartTimeout.TotalSeconds).ToString(), "start"],
            asServiceUser: RunningAsRoot, ct, throwOnError: false).ConfigureAwait(false);
        if (result.ExitCode != 0)
            throw new LocalPostgresException(
                $"PostgreSQL did not start on {Options.Host}:{Port} (pg_ctl exit {result.ExitCode}): {result.Output.Trim()}\n{TailOfServerLog()}");
    }

    private async Task WaitReadyAndCreateDatabaseAsync(CancellationToken ct)
    {
        var deadline = DateTime.UtcNow + Options.StartTimeout;
        var admin = BuildConnectionString(Options.Host, Port, "postgres");
        while (true)
        {
            try
            {
                await using var conn = new NpgsqlConnection(admin);
                await conn.OpenAsync(ct).ConfigureAwait(false);
                await using var exists = new NpgsqlCommand("SELECT 1 FROM pg_database WHERE datname = $1", conn)
                { Parameters = { new() { Value = Options.Database } } };
                if (await exists.ExecuteScalarAsync(ct).ConfigureAwait(false) is null)
                {
                    var quoted = "\"" + Options.Database.Replace("\"", "\"\"") + "\"";
                    await using var create = new NpgsqlCommand($"CREATE DATABASE {quoted}", conn);
                    await create.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
                }
                NpgsqlConnection.ClearPool(conn);
                return;
            }
            catch (Exception e) when (e is NpgsqlException or SocketException && DateTime.UtcNow < deadline)
            {
                await Task.Delay(100, ct).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Stops the server. <paramref name="immediate"/> is a crash-like stop (no checkpoint).</summary>
    public async Task StopAsync(bool immediate = false, CancellationToken cancellationToken = default)
    {
        if (_stopped) return;
        NpgsqlConnection.ClearAllPools();
        var result = await RunAsync(Path.Combine(_bin, "pg_ctl"),
            ["-D", DataDirectory, "-m", immediate ? "immediate" : "fast", "-w", "stop"],
            asServiceUser: RunningAsRoot, cancellationToken, throwOnError: false).ConfigureAwait(false);
        // Exit 3 means no server was running there, which is the state asked for.
        if (result.ExitCode != 0 && result.ExitCode != 3)
            throw new LocalPostgresException($"pg_ctl stop failed (exit {result.ExitCode}): {result.Output.Trim()}");
        _stopped = true;
    }

    /// <summary>Starts a stopped server again on the same port and data.</summary>
    public Task RestartAsync(CancellationToken cancellationToken = default) => RestartAsync(immediate: false, cancellationToken);

    /// <summary>Stops the server (<paramref name="immediate"/>: crash-like, recovery at start) and starts it again.</summary>
    public async Task RestartAsync(bool immediate, CancellationToken cancellationToken = default)
    {
        await StopAsync(immediate, cancellationToken).ConfigureAwait(false);
        await StartServerAsync(cancellationToken).ConfigureAwait(false);
        _stopped = false;
        await WaitReadyAndCreateDatabaseAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Stops the server and deletes its data directory.</summary>
    public async Task DestroyAsync(CancellationToken cancellationToken = default)
    {
        await StopAsync(immediate: true, cancellationToken).ConfigureAwait(false);
        if (Directory.Exists(DataDirectory))
            Directory.Delete(DataDirectory, recursive: true);
    }

    public async ValueTask DisposeAsync() => await StopAsync().ConfigureAwait(false);

    private string TailOfServerLog()
    {
        var log = Path.Combine(DataDirectory, "server.log");
        if (!File.Exists(log)) return "";
        var lines = File.ReadAllLines(log);
        return "server log:\n" + string.Join('\n', lines.TakeLast(10));
    }

    // Below the ephemeral range: a restart on the same port never finds it taken by an outgoing connection.
    private static int FreePort(string host) => Raft.Host.FreePorts.Next(host);

    private static void EnsurePortFree(string host, int port)
    {
        try
        {
            using var listener = new TcpListener(IPAddress.Parse(host), port);
            listener.Start();
        }
        catch (SocketException e)
        {
            throw new LocalPostgresException($"port {port} on {host} is already in use: choose another port (or 0 for any free one).", e);
        }
    }

    private sealed record ProcessResult(int ExitCode, string Output);

    private static async Task<ProcessResult> RunAsync(string file, IReadOnlyList<string> args, bool asServiceUser, CancellationToken ct, bool throwOnError = true)
    {
        var psi = new ProcessStartInfo
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (asServiceUser)
        {
            psi.FileName = "runuser";
            foreach (var a in new[] { "-u", ServiceUser, "--", file }) psi.ArgumentList.Add(a);
        }
        else
        {
            psi.FileName = file;
        }
        foreach (var a in args) psi.ArgumentList.Add(a);

        using var process = Process.Start(psi) ?? throw new LocalPostgresException($"could not run {file}");
        var stdout = process.StandardOutput.ReadToEndAsync(ct);
        var stderr = process.StandardError.ReadToEndAsync(ct);
        await process.WaitForExitAsync(ct).ConfigureAwait(false);
        var output = (await stdout.ConfigureAwait(false)) + (await stderr.ConfigureAwait(false));
        if (throwOnError && process.ExitCode != 0)
            throw new LocalPostgresException($"{Path.GetFileName(file)} failed (exit {process.ExitCode}): {output.Trim()}");
        return new ProcessResult(process.ExitCode, output);
    }
}
