using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Google.Protobuf;
using Raft.Kv.Etcd.Serverpb;
using Raft.Transport.Grpc.Wire;

namespace Raft.Kv.Bench;

/// <summary>Which etcd KV call the load generator makes.</summary>
public enum KvLoadKind
{
    Put,
    Range,
}

/// <summary>
/// What 'raftv bench put|range' does: <see cref="Clients"/> concurrent clients, each issuing one
/// request at a time, spread over <see cref="Connections"/> HTTP/2 connections to the endpoints
/// (round robin), until <see cref="Total"/> requests have been made. Keys are drawn uniformly
/// from <see cref="KeySpace"/> keys by a generator seeded with <see cref="Seed"/>.
/// </summary>
public sealed record KvLoadOptions
{
    public required KvLoadKind Kind { get; init; }
    public required IReadOnlyList<Uri> Endpoints { get; init; }
    public int Clients { get; init; } = 1;
    public int Connections { get; init; } = 1;
    public int Total { get; init; } = 10_000;
    public int ValueSize { get; init; } = 256;
    public int KeySpace { get; init; } = 10_000;
    /// <summary>Serializable ranges are answered by the member locally; linearizable ones (the default) confirm leadership first.</summary>
    public bool Serializable { get; init; }
    public int Seed { get; init; } = 1;
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>Stop after this many failed requests: a dead cluster should not be measured for minutes.</summary>
    public int MaxErrors { get; init; } = 1000;

    public void Validate()
    {
        if (Endpoints.Count == 0) throw new ArgumentException("at least one endpoint is required");
        foreach (var e in Endpoints)
            if (!e.IsAbsoluteUri || e.Scheme != Uri.UriSchemeHttp)
                throw new ArgumentException($"endpoint '{e}' must be http://host:port (TLS is not supported by the benchmark)");
        if (Clients < 1) throw new ArgumentException("--clients must be at least 1");
        if (Connections < 1) throw new ArgumentException("--conns must be at least 1");
        if (Total < 1) throw new ArgumentException("--total must be at least 1");
        if (ValueSize < 0 || ValueSize > 1024 * 1024) throw new ArgumentException("--val-size must be between 0 and 1 MiB");
        if (KeySpace < 1) throw new ArgumentException("--key-space must be at least 1");
        if (RequestTimeout <= TimeSpan.Zero) throw new ArgumentException("the request timeout must be positive");
    }

    /// <summary>The key for number <paramref name="i"/> of the key space: fixed width, so every key has the same size.</summary>
    public static ByteString Key(int i) => ByteString.CopyFromUtf8($"bench/{i:D8}");
}

/// <summary>Latencies in milliseconds.</summary>
public sealed record LatencySummary(double Min, double Mean, double P50, double P90, double P99, double P999, double Max);

/// <summary>Requests whose latency is below <see cref="UpToMs"/> (and at or above the previous bucket's bound).</summary>
public sealed record HistogramBucket(double UpToMs, int Count);

public sealed record KvLoadResult(
    string Kind,
    string Consistency,
    IReadOnlyList<string> Endpoints,
    int Clients,
    int Connections,
    int Total,
    int ValueSize,
    int KeySpace,
    int Seed,
    int Succeeded,
    int Failed,
    IReadOnlyDictionary<string, int> Errors,
    double Seconds,
    double RequestsPerSecond,
    LatencySummary? LatencyMs,
    IReadOnlyList<HistogramBucket> Histogram)
{
    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    /// <summary>Throughput, percentiles and a text histogram, as etcd's benchmark tool prints them.</summary>
    public string ToText()
    {
        var s = new StringBuilder();
        s.AppendLine($"{Kind} ({Consistency}) {Total} requests, {Clients} clients over {Connections} connections, " +
                     $"{ValueSize}-byte values, {KeySpace} keys, seed {Seed}");
        s.AppendLine($"  endpoints: {string.Join(",", Endpoints)}");
        s.AppendLine($"  total:      {Seconds:F3} s");
        s.AppendLine($"  throughput: {RequestsPerSecond:F1} requests/s");
        s.AppendLine($"  succeeded:  {Succeeded}, failed: {Failed}");
        foreach (var (error, count) in Errors.OrderByDescending(e => e.Value))
            s.AppendLine($"    {count,8} x {error}");
        if (LatencyMs is { } l)
        {
            s.AppendLine($"  latency ms: min {l.Min:F3}  mean {l.Mean:F3}  p50 {l.P50:F3}  p90 {l.P90:F3}  p99 {l.P99:F3}  p99.9 {l.P999:F3}  max {l.Max:F3}");
            s.AppendLine("  histogram (ms):");
            var most = Histogram.Count == 0 ? 1 : Math.Max(1, Histogram.Max(b => b.Count));
            var lower = 0.0;
            foreach (var b in Histogram)
            {
                var bar = new string('#', (int)Math.Ceiling(40.0 * b.Count / most));
                s.AppendLine($"    {lower,9:F3} - {b.UpToMs,9:F3} [{b.Count,7}] {(b.Count == 0 ? "" : bar)}");
                lower = b.UpToMs;
            }
        }
        return s.ToString();
    }
}

/// <summary>A closed-loop load generator for any endpoint serving etcd's v3 KV API, over our gRPC client.</summary>
public static class KvLoadBenchmark
{
    private static readonly GrpcMethod<PutRequest, PutResponse> Put =
        GrpcMethod.Protobuf(GrpcMethodType.Unary, "etcdserverpb.KV", "Put", PutRequest.Parser, PutResponse.Parser);

    private static readonly GrpcMethod<RangeRequest, RangeResponse> Range =
        GrpcMethod.Protobuf(GrpcMethodType.Unary, "etcdserverpb.KV", "Range", RangeRequest.Parser, RangeResponse.Parser);

    /// <param name="progress">Where a progress line is redrawn while the benchmark runs; null for none.</param>
    public static async Task<KvLoadResult> RunAsync(KvLoadOptions options, TextWriter? progress, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var connections = Math.Min(options.Connections, options.Clients);
        // One client object per connection: each owns its own HTTP/2 connection pool.
        var grpc = Enumerable.Range(0, connections)
            .Select(i => new GrpcClient(new GrpcClientOptions { Address = options.Endpoints[i % options.Endpoints.Count] }))
            .ToArray();
        try
        {
            // Open every connection before the clock starts; a failure here means the endpoint is not serving.
            await Task.WhenAll(grpc.Select(c => c.UnaryAsync(Range,
                new RangeRequest { Key = KvLoadOptions.Key(0), Serializable = true },
                new GrpcCallOptions(options.RequestTimeout, cancellationToken))));

            var latencyTicks = new long[options.Total];
            var succeeded = new bool[options.Total];
            var errors = new Dictionary<string, int>();
            var next = -1;
            var failed = 0;
            using var stopRun = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            var clock = Stopwatch.StartNew();
            var workers = Enumerable.Range(0, options.Clients).Select(w => Task.Run(async () =>
            {
                var random = new Random(HashCode.Combine(options.Seed, w));
                var value = new byte[options.ValueSize];
                random.NextBytes(value);
                var valueBytes = ByteString.CopyFrom(value);
                var client = grpc[w % grpc.Length];
                while (!stopRun.IsCancellationRequested)
                {
                    var n = Interlocked.Increment(ref next);
                    if (n >= options.Total) break;
                    var key = KvLoadOptions.Key(random.Next(options.KeySpace));
                    var call = new GrpcCallOptions(options.RequestTimeout, stopRun.Token);
                    var start = Stopwatch.GetTimestamp();
                    try
                    {
                        if (options.Kind == KvLoadKind.Put)
                            await client.UnaryAsync(Put, new PutRequest { Key = key, Value = valueBytes }, call);
                        else
                            await client.UnaryAsync(Range, new RangeRequest { Key = key, Serializable = options.Serializable }, call);
                        latencyTicks[n] = Stopwatch.GetTimestamp() - start;
                        succeeded[n] = true;
                    }
                    catch (GrpcCallException e) when (!stopRun.IsCancellationRequested)
                    {
                        var what = $"{e.StatusCode}: {e.StatusMessage}";
                        lock (errors) errors[what] = errors.GetValueOrDefault(what) + 1;
                        if (Interlocked.Increment(ref failed) >= options.MaxErrors) await stopRun.CancelAsync();
                    }
                }
            }, CancellationToken.None)).ToArray();

            using (var _ = progress is null ? null : StartProgress(progress, options, () => Volatile.Read(ref next), clock))
                await Task.WhenAll(workers);
            clock.Stop();
            cancellationToken.ThrowIfCancellationRequested();
            return Summarize(options, connections, latencyTicks, succeeded, errors, failed, clock.Elapsed);
        }
        finally
        {
            foreach (var c in grpc) c.Dispose();
        }
    }

    private static Timer StartProgress(TextWriter progress, KvLoadOptions options, Func<int> started, Stopwatch clock)
    {
        var lastCount = 0;
        var lastSeconds = 0.0;
        return new Timer(_ =>
        {
            var done = Math.Min(options.Total, Math.Max(0, started()));
            var seconds = clock.Elapsed.TotalSeconds;
            var rate = (done - lastCount) / Math.Max(1e-9, seconds - lastSeconds);
            (lastCount, lastSeconds) = (done, seconds);
            lock (progress) progress.Write($"\r  {done,9}/{options.Total} requests  {100.0 * done / options.Total,5:F1}%  {rate,9:F0}/s  {seconds,7:F1} s ");
        }, null, TimeSpan.FromMilliseconds(500), TimeSpan.FromMilliseconds(500));
    }

    private static KvLoadResult Summarize(KvLoadOptions options, int connections, long[] latencyTicks, bool[] succeeded,
        Dictionary<string, int> errors, int failed, TimeSpan elapsed)
    {
        var ms = new List<double>(latencyTicks.Length);
        for (var i = 0; i < latencyTicks.Length; i++)
            if (succeeded[i]) ms.Add(latencyTicks[i] * 1000.0 / Stopwatch.Frequency);
        ms.Sort();
        LatencySummary? summary = ms.Count == 0 ? null : new LatencySummary(
            ms[0], ms.Average(), Percentile(ms, 50), Percentile(ms, 90), Percentile(ms, 99), Percentile(ms, 99.9), ms[^1]);
        return new KvLoadResult(
            options.Kind == KvLoadKind.Put ? "put" : "range",
            options.Kind == KvLoadKind.Put ? "-" : options.Serializable ? "serializable" : "linearizable",
            options.Endpoints.Select(e => e.ToString()).ToArray(),
            options.Clients, connections, options.Total, options.ValueSize, options.KeySpace, options.Seed,
            ms.Count, failed, errors, elapsed.TotalSeconds, ms.Count / elapsed.TotalSeconds, summary, Histogram(ms));
    }

    /// <summary>Nearest-rank percentile of sorted values.</summary>
    public static double Percentile(IReadOnlyList<double> sorted, double percent)
    {
        if (sorted.Count == 0) throw new ArgumentException("no values", nameof(sorted));
        var rank = (int)Math.Ceiling(percent / 100.0 * sorted.Count);
        return sorted[Math.Clamp(rank - 1, 0, sorted.Count - 1)];
    }

    /// <summary>Buckets whose bounds grow by a factor of √2 from 1/16 ms, up to the one holding the maximum.</summary>
    public static IReadOnlyList<HistogramBucket> Histogram(IReadOnlyList<double> sorted)
    {
        var buckets = new List<HistogramBucket>();
        if (sorted.Count == 0) return buckets;
        var bound = 1.0 / 16;
        var i = 0;
        while (i < sorted.Count)
        {
            var count = 0;
            while (i < sorted.Count && sorted[i] < bound) { count++; i++; }
            if (count > 0 || buckets.Count > 0) buckets.Add(new HistogramBucket(Math.Round(bound, 3), count));
            bound *= Math.Sqrt(2);
        }
        return buckets;
    }
}
