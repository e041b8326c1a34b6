using System.Net.Sockets;
using Raft.Kv.Etcd.Serverpb;
using Raft.Transport.Grpc.Wire;

namespace Raft.Kv.Torture;

/// <summary>A gRPC client for one member's etcd v3 endpoint, with the methods the torture run calls.</summary>
internal sealed class EtcdEndpoint(int index, string url) : IDisposable
{
    public static readonly GrpcMethod<RangeRequest, RangeResponse> Range = Method("KV", "Range", RangeRequest.Parser, RangeResponse.Parser);
    public static readonly GrpcMethod<PutRequest, PutResponse> Put = Method("KV", "Put", PutRequest.Parser, PutResponse.Parser);
    public static readonly GrpcMethod<TxnRequest, TxnResponse> Txn = Method("KV", "Txn", TxnRequest.Parser, TxnResponse.Parser);
    public static readonly GrpcMethod<StatusRequest, StatusResponse> Status =
        Method("Maintenance", "Status", StatusRequest.Parser, StatusResponse.Parser);
    public static readonly GrpcMethod<MoveLeaderRequest, MoveLeaderResponse> MoveLeader =
        Method("Maintenance", "MoveLeader", MoveLeaderRequest.Parser, MoveLeaderResponse.Parser);
    public static readonly GrpcMethod<MemberAddRequest, MemberAddResponse> MemberAdd =
        Method("Cluster", "MemberAdd", MemberAddRequest.Parser, MemberAddResponse.Parser);
    public static readonly GrpcMethod<MemberRemoveRequest, MemberRemoveResponse> MemberRemove =
        Method("Cluster", "MemberRemove", MemberRemoveRequest.Parser, MemberRemoveResponse.Parser);
    public static readonly GrpcMethod<MemberPromoteRequest, MemberPromoteResponse> MemberPromote =
        Method("Cluster", "MemberPromote", MemberPromoteRequest.Parser, MemberPromoteResponse.Parser);
    public static readonly GrpcMethod<MemberListRequest, MemberListResponse> MemberList =
        Method("Cluster", "MemberList", MemberListRequest.Parser, MemberListResponse.Parser);

    private static GrpcMethod<TReq, TResp> Method<TReq, TResp>(string service, string name,
        Google.Protobuf.MessageParser<TReq> req, Google.Protobuf.MessageParser<TResp> resp)
        where TReq : Google.Protobuf.IMessage<TReq> where TResp : Google.Protobuf.IMessage<TResp> =>
        GrpcMethod.Protobuf(GrpcMethodType.Unary, "etcdserverpb." + service, name, req, resp);

    public int Index { get; } = index;

    public GrpcClient Client { get; } = new(new GrpcClientOptions
    {
        Address = new Uri(url),
        ConnectTimeout = TimeSpan.FromSeconds(1),
        KeepAlivePingDelay = TimeSpan.FromSeconds(2),
        KeepAlivePingTimeout = TimeSpan.FromSeconds(2),
    });

    public Task<TResp> CallAsync<TReq, TResp>(GrpcMethod<TReq, TResp> method, TReq request, TimeSpan timeout,
        CancellationToken ct, IReadOnlyDictionary<string, string>? headers = null) =>
        Client.UnaryAsync(method, request, new GrpcCallOptions(timeout, ct, headers));

    /// <summary>The member's status, or null when it does not answer in time.</summary>
    public async Task<StatusResponse?> TryStatusAsync(TimeSpan timeout, CancellationToken ct)
    {
        try
        {
            return await CallAsync(Status, new StatusRequest(), timeout, ct);
        }
        catch (Exception e) when (e is GrpcCallException or OperationCanceledException && !ct.IsCancellationRequested)
        {
            return null;
        }
    }

    /// <summary>True when the request certainly never reached the server: the connection was refused.</summary>
    public static bool NeverSent(Exception e)
    {
        for (var x = e; x is not null; x = x.InnerException)
            if (x is SocketException { SocketErrorCode: SocketError.ConnectionRefused })
                return true;
        return false;
    }

    /// <summary>
    /// Statuses by which etcd refuses a request before proposing it (validation, unknown method):
    /// this attempt had no effect. Anything else (unavailable, timeout, reset) may have.
    /// </summary>
    public static bool IsRefusal(StatusCode code) => code is StatusCode.InvalidArgument or StatusCode.Unimplemented
        or StatusCode.OutOfRange or StatusCode.NotFound or StatusCode.PermissionDenied or StatusCode.Unauthenticated;

    public void Dispose() => Client.Dispose();
}
