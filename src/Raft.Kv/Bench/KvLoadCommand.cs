using Raft.Kv.Cli;

namespace Raft.Kv.Bench;

/// <summary>'raftv bench put|range': load on any etcd v3 endpoint (raftv's or etcd's own).</summary>
internal static class KvLoadCommand
{
    public const string Usage =
        "raftv bench put|range --endpoints URL[,URL...] [--clients C] [--conns K] [--total T] [--val-size V] [--key-space S]\n" +
        "      [--consistency l|s] [--seed N] [--timeout SECONDS] [--json FILE] [--progress]";

    public static async Task<int> Run(string kind, CommandArgs args, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var endpoints = args.Option("--endpoints") ?? throw new CommandArgsException("--endpoints URL[,URL...] is required");
        var consistency = args.Option("--consistency") ?? "l";
        var json = args.Option("--json");
        var progress = args.Flag("--progress");
        KvLoadOptions options;
        try
        {
            options = new KvLoadOptions
            {
                Kind = kind == "put" ? KvLoadKind.Put : KvLoadKind.Range,
                Endpoints = endpoints.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(ParseEndpoint).ToArray(),
                Clients = args.IntOption("--clients") ?? 1,
                Connections = args.IntOption("--conns") ?? 1,
                Total = args.IntOption("--total") ?? 10_000,
                ValueSize = args.IntOption("--val-size") ?? 256,
                KeySpace = args.IntOption("--key-space") ?? 10_000,
                Seed = args.IntOption("--seed") ?? 1,
                RequestTimeout = TimeSpan.FromSeconds(args.IntOption("--timeout") ?? 30),
                Serializable = consistency switch
                {
                    "l" or "linearizable" => false,
                    "s" or "serializable" => true,
                    _ => throw new CommandArgsException($"--consistency must be l or s, not '{consistency}'"),
                },
            };
            args.EnsureNoneLeft();
            if (kind == "put" && options.Serializable) throw new CommandArgsException("--consistency applies to range only");
            options.Validate();
        }
        catch (ArgumentException e)
        {
            throw new CommandArgsException(e.Message);
        }

        // A progress line only where someone watches it: redirected stderr stays clean for logs.
        var progressWriter = progress || !Console.IsErrorRedirected ? stderr : null;
        KvLoadResult result;
        try
        {
            result = await KvLoadBenchmark.RunAsync(options, progressWriter, ct);
        }
        catch (Transport.Grpc.Wire.GrpcCallException e)
        {
            stderr.WriteLine($"raftv bench {kind}: the endpoints do not answer: {e.Message}");
            return 1;
        }
        finally
        {
            if (progressWriter is not null) stderr.WriteLine();
        }
        stdout.Write(result.ToText());
        if (json is not null) await File.WriteAllTextAsync(json, result.ToJson() + "\n", ct);
        return result.Failed == 0 ? 0 : 1;
    }

    /// <summary>Accepts etcdctl's host:port form as well as http://host:port.</summary>
    private static Uri ParseEndpoint(string text)
    {
        var withScheme = text.Contains("://", StringComparison.Ordinal) ? text : "http://" + text;
        return Uri.TryCreate(withScheme, UriKind.Absolute, out var uri)
            ? uri
            : throw new CommandArgsException($"endpoint '{text}' is not host:port or http://host:port");
    }
}
