using System.Collections.Concurrent;
using System.Diagnostics;
using Google.Protobuf;
using Raft.Kv.Etcd.Serverpb;
using Raft.Kv.Server;
using Raft.Transport.Grpc.Wire;

namespace Raft.Kv.Torture;

/// <summary>A write the cluster acknowledged, with the revision its response named.</summary>
internal sealed record AckedWrite(string Key, string Value, long Revision, string F);

/// <summary>
/// The clients: each runs one operation at a time (random put, linearizable get, or
/// compare-and-set) on a small key set, against a random member, and records it in the history.
/// Writes carry a request id and are retried with it on other members until the operation's
/// budget runs out (exactly-once retries). Outcomes: ok only on a definite success; fail only
/// when the operation certainly had no effect (every attempt refused, or the compare failed);
/// info otherwise, after which the client continues as a new process, as in Jepsen.
/// </summary>
internal sealed class Workload(IReadOnlyList<EtcdEndpoint> endpoints, HistoryRecorder history, TortureOptions options)
{
    /// <summary>An attempt with less time than this left is not started: it could only time out.</summary>
    private static readonly TimeSpan MinimumAttempt = TimeSpan.FromMilliseconds(100);

    private int _nextProcess;
    private readonly ConcurrentDictionary<string, string?> _lastSeen = new();

    public ConcurrentDictionary<(string F, string Type), int> Outcomes { get; } = new();
    public ConcurrentQueue<AckedWrite> Acked { get; } = new();
    /// <summary>Values of writes whose outcome is unknown: they may be present.</summary>
    public ConcurrentDictionary<(string Key, string Value), bool> Unknown { get; } = new();
    /// <summary>Error messages clients saw, counted (for the summary).</summary>
    public ConcurrentDictionary<string, int> Errors { get; } = new();

    public static string KeyName(int i) => $"k{i}";

    public int NewProcess() => Interlocked.Increment(ref _nextProcess) - 1;

    public async Task RunClientAsync(int client, CancellationToken stop)
    {
        var random = new Random(HashCode.Combine(options.Seed, client, 0x70727475));
        var process = NewProcess();
        var counter = 0;
        while (!stop.IsCancellationRequested)
        {
            var key = KeyName(random.Next(options.Keys));
            var roll = random.Next(10);
            string type;
            if (roll < 4) type = await GetAsync(process, key, random);
            else if (roll < 7) type = await PutAsync(process, key, $"{client}-{++counter}", random);
            else
            {
                var expected = random.Next(5) == 0 ? null : _lastSeen.GetValueOrDefault(key);
                type = await CasAsync(process, key, expected, $"{client}-{++counter}", random);
            }
            if (type == "info") process = NewProcess();
        }
    }

    private void Count(string f, string type) => Outcomes.AddOrUpdate((f, type), 1, (_, n) => n + 1);

    private void Error(Exception e)
    {
        // GrpcClient promises GrpcCallException; a deadline that fires before the request is written surfaces as a bare cancellation.
        var text = e is GrpcCallException g ? $"{g.StatusCode}: {g.StatusMessage}" : $"{e.GetType().Name}: {e.Message}";
        if (text.Length > 90) text = text[..90];
        Errors.AddOrUpdate(text, 1, (_, n) => n + 1);
    }

    private EtcdEndpoint Pick(Random random, EtcdEndpoint? not = null)
    {
        if (endpoints.Count == 1 || not is null) return endpoints[random.Next(endpoints.Count)];
        var i = random.Next(endpoints.Count - 1);
        return endpoints[i >= not.Index ? i + 1 : i];
    }

    /// <summary>A linearizable read of one key, tried on members until the budget is spent; a read has no effect, so giving up is a fail.</summary>
    public async Task<string> GetAsync(int process, string key, Random random, EtcdEndpoint? only = null, TimeSpan? budget = null)
    {
        history.Invoke(process, "get", key, HistoryValue.None);
        var clock = Stopwatch.StartNew();
        var endpoint = only ?? Pick(random);
        var limit = budget ?? options.OperationBudget;
        while (true)
        {
            var remaining = limit - clock.Elapsed;
            if (remaining < MinimumAttempt) break;
            try
            {
                var response = await endpoint.CallAsync(EtcdEndpoint.Range, new RangeRequest { Key = ByteString.CopyFromUtf8(key) },
                    Min(options.AttemptTimeout, remaining), CancellationToken.None);
                var value = response.Kvs.Count == 0 ? null : response.Kvs[0].Value.ToStringUtf8();
                history.Complete(process, "ok", "get", key, HistoryValue.One(value));
                _lastSeen[key] = value;
                Count("get", "ok");
                return "ok";
            }
            catch (Exception e) when (e is GrpcCallException or OperationCanceledException)
            {
                Error(e);
                if (only is null) endpoint = Pick(random, endpoint);
                await Backoff(random, clock, limit);
            }
        }
        history.Complete(process, "fail", "get", key, HistoryValue.None);
        Count("get", "fail");
        return "fail";
    }

    private async Task<string> PutAsync(int process, string key, string value, Random random)
    {
        history.Invoke(process, "put", key, HistoryValue.One(value));
        var request = new PutRequest { Key = ByteString.CopyFromUtf8(key), Value = ByteString.CopyFromUtf8(value) };
        var (type, response) = await WriteAsync(EtcdEndpoint.Put, request, random);
        if (response is not null)
        {
            Acked.Enqueue(new AckedWrite(key, value, response.Header.Revision, "put"));
            _lastSeen[key] = value;
        }
        if (type == "info") Unknown[(key, value)] = true;
        history.Complete(process, type, "put", key, HistoryValue.One(value));
        Count("put", type);
        return type;
    }

    private async Task<string> CasAsync(int process, string key, string? expected, string value, Random random)
    {
        history.Invoke(process, "cas", key, HistoryValue.Pair(expected, value));
        var k = ByteString.CopyFromUtf8(key);
        var compare = expected is null
            ? new Compare { Key = k, Target = Compare.Types.CompareTarget.Version, Result = Compare.Types.CompareResult.Equal, Version = 0 }
            : new Compare { Key = k, Target = Compare.Types.CompareTarget.Value, Result = Compare.Types.CompareResult.Equal, Value = ByteString.CopyFromUtf8(expected) };
        var request = new TxnRequest
        {
            Compare = { compare },
            Success = { new RequestOp { RequestPut = new PutRequest { Key = k, Value = ByteString.CopyFromUtf8(value) } } },
        };
        var (type, response) = await WriteAsync(EtcdEndpoint.Txn, request, random);
        if (response is not null)
        {
            if (response.Succeeded)
            {
                Acked.Enqueue(new AckedWrite(key, value, response.Header.Revision, "cas"));
                _lastSeen[key] = value;
            }
            else type = "fail"; // the comparison failed: nothing was written
        }
        if (type == "info") Unknown[(key, value)] = true;
        history.Complete(process, type, "cas", key, HistoryValue.Pair(expected, value));
        Count("cas", type);
        return type;
    }

    /// <summary>
    /// Sends a write, retrying on other members with the same request id until the budget is spent.
    /// Returns ("ok", response), or ("fail", null) when no attempt can have taken effect, or ("info", null).
    /// </summary>
    private async Task<(string Type, TResp? Response)> WriteAsync<TReq, TResp>(GrpcMethod<TReq, TResp> method, TReq request, Random random)
        where TResp : class
    {
        var headers = new Dictionary<string, string> { [KvServer.RequestIdHeader] = Guid.NewGuid().ToString("N") };
        var clock = Stopwatch.StartNew();
        var maybeApplied = false;
        var endpoint = Pick(random);
        while (true)
        {
            var remaining = options.OperationBudget - clock.Elapsed;
            if (remaining < MinimumAttempt) break;
            try
            {
                var response = await endpoint.CallAsync(method, request, Min(options.AttemptTimeout, remaining), CancellationToken.None, headers);
                return ("ok", response);
            }
            catch (Exception e) when (e is GrpcCallException or OperationCanceledException)
            {
                Error(e);
                var refused = e is GrpcCallException { StatusCode: var code } && EtcdEndpoint.IsRefusal(code);
                if (!EtcdEndpoint.NeverSent(e)) maybeApplied |= !refused;
                if (refused) break; // the same request would be refused again
                endpoint = Pick(random, endpoint);
                await Backoff(random, clock, options.OperationBudget);
            }
        }
        return (maybeApplied ? "info" : "fail", null);
    }

    private static async Task Backoff(Random random, Stopwatch clock, TimeSpan budget)
    {
        var pause = TimeSpan.FromMilliseconds(20 + random.Next(80));
        var remaining = budget - clock.Elapsed;
        if (remaining > TimeSpan.Zero) await Task.Delay(Min(pause, remaining));
    }

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;
}
