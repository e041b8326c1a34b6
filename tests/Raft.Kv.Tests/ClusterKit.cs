using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Google.Protobuf;
using Npgsql;
using Raft.Kv.Etcd.Serverpb;
using Raft.Kv.Server;
using Raft.Transport.Grpc.Wire;

namespace Raft.Kv.Tests;

/// <summary>Ports, databases, a small etcd v3 client and member processes for the cluster tests.</summary>
internal static class ClusterKit
{
    public static int FreePort() => Raft.Host.FreePorts.Next();

    public static KvMember NewMember(ulong id) =>
        new(id, $"node{id}", $"http://127.0.0.1:{FreePort()}", $"http://127.0.0.1:{FreePort()}");

    public static async Task<string> NewDatabaseAsync()
    {
        var cs = await TestDatabase.ConnectionStringAsync();
        var name = "kvc" + Guid.NewGuid().ToString("N")[..16];
        await using var conn = new NpgsqlConnection(cs);
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand($"CREATE DATABASE \"{name}\"", conn);
        await cmd.ExecuteNonQueryAsync();
        return new NpgsqlConnectionStringBuilder(cs) { Database = name }.ConnectionString;
    }

    /// <summary>Polls <paramref name="condition"/> until it holds, failing with <paramref name="what"/> after <paramref name="seconds"/>.</summary>
    public static async Task EventuallyAsync(Func<Task<bool>> condition, string what, int seconds = 30, Func<string>? details = null)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(seconds);
        Exception? last = null;
        while (DateTime.UtcNow < deadline)
        {
            try
            {
                if (await condition()) return;
            }
            catch (Exception e) when (e is GrpcCallException or HttpRequestException or IOException)
            {
                last = e;
            }
            await Task.Delay(100);
        }
        Assert.Fail($"{what} did not happen within {seconds} s (last error: {last?.Message ?? "none"}){(details is null ? "" : "\n" + details())}");
    }
}

/// <summary>etcd's KV, Cluster and Maintenance calls over the project's gRPC client.</summary>
internal sealed class EtcdClient(string url) : IDisposable
{
    private static GrpcMethod<TReq, TResp> M<TReq, TResp>(string service, string method, MessageParser<TReq> req, MessageParser<TResp> resp)
        where TReq : IMessage<TReq> where TResp : IMessage<TResp> =>
        GrpcMethod.Protobuf(GrpcMethodType.Unary, "etcdserverpb." + service, method, req, resp);

    private static readonly GrpcMethod<PutRequest, PutResponse> Put = M("KV", "Put", PutRequest.Parser, PutResponse.Parser);
    private static readonly GrpcMethod<RangeRequest, RangeResponse> Range = M("KV", "Range", RangeRequest.Parser, RangeResponse.Parser);
    private static readonly GrpcMethod<MemberAddRequest, MemberAddResponse> Add = M("Cluster", "MemberAdd", MemberAddRequest.Parser, MemberAddResponse.Parser);
    private static readonly GrpcMethod<MemberRemoveRequest, MemberRemoveResponse> Remove = M("Cluster", "MemberRemove", MemberRemoveRequest.Parser, MemberRemoveResponse.Parser);
    private static readonly GrpcMethod<MemberUpdateRequest, MemberUpdateResponse> Update = M("Cluster", "MemberUpdate", MemberUpdateRequest.Parser, MemberUpdateResponse.Parser);
    private static readonly GrpcMethod<MemberPromoteRequest, MemberPromoteResponse> Promote = M("Cluster", "MemberPromote", MemberPromoteRequest.Parser, MemberPromoteResponse.Parser);
    private static readonly GrpcMethod<MemberListRequest, MemberListResponse> List = M("Cluster", "MemberList", MemberListRequest.Parser, MemberListResponse.Parser);
    private static readonly GrpcMethod<StatusRequest, StatusResponse> StatusCall = M("Maintenance", "Status", StatusRequest.Parser, StatusResponse.Parser);

    private readonly GrpcClient _client = new(new GrpcClientOptions { Address = new Uri(url), ConnectTimeout = TimeSpan.FromSeconds(1) });
    private static readonly GrpcCallOptions Call = new(Timeout: TimeSpan.FromSeconds(10));

    public string Url => url;

    public Task<PutResponse> PutAsync(string key, string value) =>
        _client.UnaryAsync(Put, new PutRequest { Key = ByteString.CopyFromUtf8(key), Value = ByteString.CopyFromUtf8(value) }, Call);

    /// <summary>A put carrying the client's request id, as a client that may retry it sends it.</summary>
    public Task<PutResponse> PutAsync(string key, string value, string requestId) =>
        _client.UnaryAsync(Put, new PutRequest { Key = ByteString.CopyFromUtf8(key), Value = ByteString.CopyFromUtf8(value) },
            Call with { Headers = new Dictionary<string, string> { [KvServer.RequestIdHeader] = requestId } });

    public async Task<string?> GetAsync(string key, bool serializable = false)
    {
        var r = await _client.UnaryAsync(Range, new RangeRequest { Key = ByteString.CopyFromUtf8(key), Serializable = serializable }, Call);
        return r.Kvs.Count == 0 ? null : r.Kvs[0].Value.ToStringUtf8();
    }

    public async Task<Dictionary<string, string>> GetPrefixAsync(string prefix, bool serializable = false)
    {
        var end = Encoding.UTF8.GetBytes(prefix);
        end[^1]++;
        var r = await _client.UnaryAsync(Range, new RangeRequest
        {
            Key = ByteString.CopyFromUtf8(prefix), RangeEnd = ByteString.CopyFrom(end), Serializable = serializable,
        }, Call);
        return r.Kvs.ToDictionary(kv => kv.Key.ToStringUtf8(), kv => kv.Value.ToStringUtf8());
    }

    public Task<MemberAddResponse> MemberAddAsync(string peerUrl, bool learner) =>
        _client.UnaryAsync(Add, new MemberAddRequest { PeerURLs = { peerUrl }, IsLearner = learner }, Call);

    public Task<MemberRemoveResponse> MemberRemoveAsync(ulong id) => _client.UnaryAsync(Remove, new MemberRemoveRequest { ID = id }, Call);

    public Task<MemberUpdateResponse> MemberUpdateAsync(ulong id, string peerUrl) =>
        _client.UnaryAsync(Update, new MemberUpdateRequest { ID = id, PeerURLs = { peerUrl } }, Call);

    public Task<MemberPromoteResponse> MemberPromoteAsync(ulong id) => _client.UnaryAsync(Promote, new MemberPromoteRequest { ID = id }, Call);

    public Task<MemberListResponse> MemberListAsync() => _client.UnaryAsync(List, new MemberListRequest { Linearizable = true }, Call);

    public Task<StatusResponse> StatusAsync() => _client.UnaryAsync(StatusCall, new StatusRequest(), Call);

    public void Dispose() => _client.Dispose();
}

/// <summary>A raftv member as its own process ('dotnet raftv.dll serve ...'), so it can be killed with SIGKILL.</summary>
internal sealed class MemberProcess : IAsyncDisposable
{
    private readonly StringBuilder _log = new();
    private Process? _process;

    public MemberProcess(KvMember self, IReadOnlyList<KvMember> members, string database)
    {
        Self = self;
        Members = members;
        Database = database;
    }

    public KvMember Self { get; }
    public IReadOnlyList<KvMember> Members { get; }
    public string Database { get; }
    public bool Running => _process is { HasExited: false };

    public string Log
    {
        get { lock (_log) return _log.ToString(); }
    }

    public void Start()
    {
        var info = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add(typeof(KvServer).Assembly.Location);
        foreach (var a in new[] { "serve", "--id", Self.Id.ToString(), "--pg", Database }) info.ArgumentList.Add(a);
        foreach (var m in Members)
        {
            info.ArgumentList.Add("--member");
            info.ArgumentList.Add($"{m.Id},{m.PeerUrl},{m.ClientUrl}");
        }
        var p = Process.Start(info)!;
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (_log) _log.AppendLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (_log) _log.AppendLine(e.Data); };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        _process = p;
        lock (_log) _log.AppendLine($"--- started pid {p.Id}");
    }

    /// <summary>SIGKILL: no shutdown code runs, as in a crash.</summary>
    public async Task KillAsync()
    {
        if (_process is null) return;
        _process.Kill(entireProcessTree: true);
        await _process.WaitForExitAsync();
        _process.Dispose();
        _process = null;
        lock (_log) _log.AppendLine("--- killed");
    }

    public async ValueTask DisposeAsync() => await KillAsync();
}
