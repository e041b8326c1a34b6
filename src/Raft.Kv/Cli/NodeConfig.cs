using System.Text.Json;

namespace Raft.Kv.Cli;

/// <summary>
/// The settings of 'raftv node', named as etcd names its flags. Each is read from, in order of
/// precedence: the command line (--name VALUE), the environment (RAFTV_NAME), the JSON file given
/// by --config-file (or RAFTV_CONFIG_FILE), then the default. The file holds the same names as keys
/// ("name", "listen-client-urls", ...); the TLS files may also sit in etcd's config-file sections
/// "client-transport-security" and "peer-transport-security" (keys "cert-file", "key-file",
/// "trusted-ca-file", "client-cert-auth"). An unknown key in the file is an error, so a misspelt
/// setting is never silently ignored; an unknown RAFTV_ variable is a warning (other raftv tools
/// read variables of that prefix too).
/// </summary>
internal sealed class NodeConfig
{
    /// <summary>Every setting: its name and whether it is a boolean flag.</summary>
    public static readonly IReadOnlyDictionary<string, bool> Settings = new Dictionary<string, bool>
    {
        ["name"] = false,
        ["data-dir"] = false,
        ["pg"] = false,
        ["listen-client-urls"] = false,
        ["advertise-client-urls"] = false,
        ["listen-peer-urls"] = false,
        ["initial-advertise-peer-urls"] = false,
        ["initial-cluster"] = false,
        ["initial-cluster-state"] = false,
        ["initial-cluster-token"] = false,
        ["member-id"] = false,
        ["heartbeat-interval"] = false,
        ["election-timeout"] = false,
        ["snapshot-count"] = false,
        ["max-request-bytes"] = false,
        ["max-txn-ops"] = false,
        ["auto-compaction-mode"] = false,
        ["auto-compaction-retention"] = false,
        ["cert-file"] = false,
        ["key-file"] = false,
        ["trusted-ca-file"] = false,
        ["client-cert-auth"] = true,
        ["peer-cert-file"] = false,
        ["peer-key-file"] = false,
        ["peer-trusted-ca-file"] = false,
        ["peer-client-cert-auth"] = true,
    };

    /// <summary>RAFTV_ variables other raftv tools read: not settings, and not worth a warning.</summary>
    private static readonly HashSet<string> OtherVariables =
        ["RAFTV_CONFIG_FILE", "RAFTV_TEST_PG", "RAFTV_ARTIFACTS", "RAFTV_BENCH_ARTIFACTS", "RAFTV_DLL", "RAFTV_FUZZ_SEED", "RAFTV_HOST_SEED", "RAFTV_WRITE_TRACE_FIXTURES"];

    private readonly Dictionary<string, (string Value, string Source)> _values = new();

    /// <summary>RAFTV_ variables of the environment that name no setting.</summary>
    public List<string> Warnings { get; } = [];

    public static string EnvironmentName(string setting) => "RAFTV_" + setting.ToUpperInvariant().Replace('-', '_');

    /// <summary>Reads the settings from <paramref name="args"/> (taking them), the environment and the config file.</summary>
    public static NodeConfig Read(CommandArgs args, IReadOnlyDictionary<string, string> environment)
    {
        var config = new NodeConfig();
        var file = args.Option("--config-file") ?? (environment.TryGetValue("RAFTV_CONFIG_FILE", out var f) && f.Length > 0 ? f : null);
        if (file is not null) config.ReadFile(file);
        foreach (var (variable, value) in environment)
        {
            if (!variable.StartsWith("RAFTV_", StringComparison.Ordinal) || OtherVariables.Contains(variable)) continue;
            var setting = Settings.Keys.FirstOrDefault(s => EnvironmentName(s) == variable);
            if (setting is null)
                config.Warnings.Add($"environment variable {variable} is not a raftv node setting; ignored");
            else
                config._values[setting] = (value, $"environment variable {variable}");
        }
        foreach (var (setting, isBool) in Settings)
        {
            var flag = "--" + setting;
            if (isBool)
            {
                if (args.BoolFlag(flag) is { } b) config._values[setting] = (b ? "true" : "false", flag);
            }
            else if (args.Option(flag) is { } v)
            {
                config._values[setting] = (v, flag);
            }
        }
        return config;
    }

    public static IReadOnlyDictionary<string, string> ProcessEnvironment() =>
        Environment.GetEnvironmentVariables().Cast<System.Collections.DictionaryEntry>()
            .ToDictionary(e => (string)e.Key, e => (string?)e.Value ?? "");

    private void ReadFile(string path)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(File.ReadAllText(path), new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CommandArgsException($"--config-file '{path}' cannot be read: {e.Message}");
        }
        catch (JsonException e)
        {
            throw new CommandArgsException($"--config-file '{path}' is not valid JSON: {e.Message}");
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new CommandArgsException($"--config-file '{path}' must hold a JSON object");
            foreach (var p in doc.RootElement.EnumerateObject())
            {
                if (p.Name is "client-transport-security" or "peer-transport-security")
                {
                    var prefix = p.Name.StartsWith("peer", StringComparison.Ordinal) ? "peer-" : "";
                    if (p.Value.ValueKind != JsonValueKind.Object) throw new CommandArgsException($"--config-file '{path}': \"{p.Name}\" must be an object");
                    foreach (var q in p.Value.EnumerateObject())
                    {
                        if (q.Name is not ("cert-file" or "key-file" or "trusted-ca-file" or "client-cert-auth"))
                            throw new CommandArgsException($"--config-file '{path}': \"{p.Name}\".\"{q.Name}\" is not a known setting (cert-file, key-file, trusted-ca-file, client-cert-auth)");
                        _values[prefix + q.Name] = (Scalar(q.Value, path, $"{p.Name}.{q.Name}"), $"--config-file {path}");
                    }
                    continue;
                }
                if (!Settings.ContainsKey(p.Name))
                    throw new CommandArgsException($"--config-file '{path}': \"{p.Name}\" is not a raftv node setting (known: {string.Join(", ", Settings.Keys)})");
                _values[p.Name] = (Scalar(p.Value, path, p.Name), $"--config-file {path}");
            }
        }
    }

    private static string Scalar(JsonElement e, string path, string key) => e.ValueKind switch
    {
        JsonValueKind.String => e.GetString()!,
        JsonValueKind.Number => e.GetRawText(),
        JsonValueKind.True => "true",
        JsonValueKind.False => "false",
        // etcd's config files list URLs either way: "a,b" or ["a", "b"].
        JsonValueKind.Array when e.EnumerateArray().All(x => x.ValueKind == JsonValueKind.String) => string.Join(",", e.EnumerateArray().Select(x => x.GetString())),
        _ => throw new CommandArgsException($"--config-file '{path}': \"{key}\" must be a string, number or boolean"),
    };

    public string? Get(string setting) => _values.TryGetValue(setting, out var v) ? v.Value : null;

    public bool Has(string setting) => _values.ContainsKey(setting);

    /// <summary>Where a setting came from, for error messages ("--name", "environment variable RAFTV_NAME"...).</summary>
    public string SourceOf(string setting) => _values.TryGetValue(setting, out var v) ? v.Source : $"--{setting} (default)";

    public bool Bool(string setting) => Get(setting) is { } text && CommandArgs.ParseBool(text, SourceOf(setting));

    public long Long(string setting, long fallback, long min)
    {
        if (Get(setting) is not { } text) return fallback;
        return long.TryParse(text, out var v) && v >= min
            ? v
            : throw new CommandArgsException($"{SourceOf(setting)} must be an integer of at least {min}, not '{text}'");
    }
}
