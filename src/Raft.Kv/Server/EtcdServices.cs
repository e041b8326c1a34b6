using Google.Protobuf;
using Raft.Kv.Etcd.Serverpb;
using Raft.Kv.Protocol;
using Raft.Kv.State;
using Raft.Transport.Grpc.Wire;

namespace Raft.Kv.Server;

/// <summary>etcd's KV, Cluster and Maintenance services on the gRPC server layer, backed by a <see cref="KvServer"/>.</summary>
internal static class EtcdServices
{
    private static GrpcMethod<TReq, TResp> Unary<TReq, TResp>(string service, string method, MessageParser<TReq> req, MessageParser<TResp> resp)
        where TReq : IMessage<TReq> where TResp : IMessage<TResp> =>
        GrpcMethod.Protobuf(GrpcMethodType.Unary, "etcdserverpb." + service, method, req, resp);

    /// <summary>Cluster/MemberPromote, also called by a follower on the leader.</summary>
    public static readonly GrpcMethod<MemberPromoteRequest, MemberPromoteResponse> PromoteMethod =
        Unary("Cluster", "MemberPromote", MemberPromoteRequest.Parser, MemberPromoteResponse.Parser);

    /// <summary>Cluster/MemberList, also served on the peer endpoint: a member joining a running cluster learns its id there (etcd's peer /members).</summary>
    public static readonly GrpcMethod<MemberListRequest, MemberListResponse> PeerMemberListMethod =
        Unary("Cluster", "MemberList", MemberListRequest.Parser, MemberListResponse.Parser);

    /// <summary>etcd's grpcOverheadBytes: gRPC accepts a message this much larger than --max-request-bytes, so the limit is etcd's own error.</summary>
    public const int GrpcOverheadBytes = 512 * 1024;

    /// <summary>What the peer endpoint serves besides raft's messages: the member list as this member has applied it.</summary>
    public static GrpcServiceRegistry RegisterPeer(GrpcServiceRegistry registry, KvServer server) =>
        registry.AddUnary(PeerMemberListMethod, (_, _) =>
            Task.FromResult(new MemberListResponse { Header = server.Header(0), Members = { server.Members() } }));

    public static GrpcServiceRegistry Register(GrpcServiceRegistry registry, KvServer server)
    {
        registry
            .AddUnary(Unary("KV", "Range", RangeRequest.Parser, RangeResponse.Parser),
                (r, ctx) => Guard(() => server.RangeAsync(r, ctx.CancellationToken)))
            .AddUnary(Unary("KV", "Put", PutRequest.Parser, PutResponse.Parser), (r, ctx) => Guard(async () =>
            {
                KvApplier.ValidatePut(r);
                var result = Ok(await server.WriteAsync(new KvCommand { Put = r, RequestId = RequestId(ctx) }, ctx.CancellationToken));
                result.Put.Header = server.Header(result.Put.Header.Revision);
                return result.Put;
            }))
            .AddUnary(Unary("KV", "DeleteRange", DeleteRangeRequest.Parser, DeleteRangeResponse.Parser), (r, ctx) => Guard(async () =>
            {
                KvApplier.ValidateDeleteRange(r);
                var result = Ok(await server.WriteAsync(new KvCommand { DeleteRange = r, RequestId = RequestId(ctx) }, ctx.CancellationToken));
                result.DeleteRange.Header = server.Header(result.DeleteRange.Header.Revision);
                return result.DeleteRange;
            }))
            .AddUnary(Unary("KV", "Txn", TxnRequest.Parser, TxnResponse.Parser), (r, ctx) => Guard(async () =>
            {
                KvApplier.ValidateTxn(r, server.MaxTxnOps);
                var result = Ok(await server.WriteAsync(new KvCommand { Txn = r, RequestId = RequestId(ctx) }, ctx.CancellationToken));
                result.Txn.Header = server.Header(result.Txn.Header.Revision);
                return result.Txn;
            }))
            .AddUnary(Unary("KV", "Compact", CompactionRequest.Parser, CompactionResponse.Parser), (r, ctx) => Guard(async () =>
            {
                var result = Ok(await server.WriteAsync(new KvCommand { Compact = r, RequestId = RequestId(ctx) }, ctx.CancellationToken));
                result.Compact.Header = server.Header(result.Compact.Header.Revision);
                return result.Compact;
            }))
            .AddUnary(Unary("Cluster", "MemberList", MemberListRequest.Parser, MemberListResponse.Parser), (r, ctx) => Guard(async () =>
            {
                if (r.Linearizable) await server.WaitLinearizableAsync(ctx.CancellationToken);
                return new MemberListResponse { Header = server.Header(0), Members = { server.Members() } };
            }))
            .AddUnary(Unary("Cluster", "MemberRemove", MemberRemoveRequest.Parser, MemberRemoveResponse.Parser), (r, ctx) => Guard(async () =>
                new MemberRemoveResponse { Header = server.Header(0), Members = { await server.RemoveMemberAsync(r.ID, ctx.CancellationToken) } }))
            .AddUnary(Unary("Cluster", "MemberAdd", MemberAddRequest.Parser, MemberAddResponse.Parser), (r, ctx) => Guard(async () =>
            {
                var (added, members) = await server.AddMemberAsync([.. r.PeerURLs], r.IsLearner, ctx.CancellationToken);
                return new MemberAddResponse { Header = server.Header(0), Member = added, Members = { members } };
            }))
            .AddUnary(Unary("Cluster", "MemberUpdate", MemberUpdateRequest.Parser, MemberUpdateResponse.Parser), (r, ctx) => Guard(async () =>
                new MemberUpdateResponse { Header = server.Header(0), Members = { await server.UpdateMemberAsync(r.ID, [.. r.PeerURLs], ctx.CancellationToken) } }))
            .AddUnary(PromoteMethod, (r, ctx) => Guard(async () =>
                new MemberPromoteResponse { Header = server.Header(0), Members = { await server.PromoteMemberAsync(r.ID, ctx.CancellationToken) } }))
            .AddUnary(Unary("Maintenance", "Status", StatusRequest.Parser, StatusResponse.Parser),
                (_, ctx) => Guard(() => server.StatusAsync(ctx.CancellationToken)))
            .AddUnary(Unary("Maintenance", "MoveLeader", MoveLeaderRequest.Parser, MoveLeaderResponse.Parser), (r, ctx) => Guard(async () =>
            {
                await server.MoveLeaderAsync(r.TargetID, ctx.CancellationToken);
                return new MoveLeaderResponse { Header = server.Header(0) };
            }));
        return registry;
    }

    private static ByteString RequestId(GrpcServerCallContext ctx) =>
        ctx.RequestHeaders.TryGetValue(KvServer.RequestIdHeader, out var v) && !string.IsNullOrEmpty(v.ToString())
            ? ByteString.CopyFromUtf8(v.ToString())
            : ByteString.Empty;

    private static KvResult Ok(KvResult result) =>
        result.ResultCase == KvResult.ResultOneofCase.Error
            ? throw new EtcdException((StatusCode)result.Error.Code, result.Error.Message)
            : result;

    private static async Task<T> Guard<T>(Func<Task<T>> handler)
    {
        try
        {
            return await handler();
        }
        catch (EtcdException e)
        {
            throw e.ToGrpc();
        }
        catch (Exception e) when (StorageUnreachable(e) is { } reason)
        {
            // The member cannot serve now, but another may (or this one shortly): clients retry
            // UNAVAILABLE elsewhere, as for etcd's own "server stopped" or "request timed out".
            throw new GrpcCallException(StatusCode.Unavailable, $"raftv: PostgreSQL is unavailable to this member: {reason}", e);
        }
    }

    /// <summary>
    /// Why <paramref name="error"/> (or one of its causes) says PostgreSQL cannot be reached or is
    /// not accepting work (connection refused or broken, timeout, shutdown, too many connections);
    /// null for any other error, which stays a server fault.
    /// </summary>
    private static string? StorageUnreachable(Exception error)
    {
        for (var e = error; e is not null; e = e.InnerException)
        {
            switch (e)
            {
                case Raft.Storage.Postgres.PostgresStorageException { Kind: Raft.Storage.Postgres.PostgresStorageErrorKind.Unreachable } storage:
                    return storage.Message;
                case Npgsql.PostgresException server when server.IsTransient || server.SqlState.StartsWith("08", StringComparison.Ordinal)
                                                         || server.SqlState.StartsWith("57P", StringComparison.Ordinal):
                    return $"{server.SqlState}: {server.MessageText}";
                case Npgsql.PostgresException:
                    return null;
                case Npgsql.NpgsqlException client:
                    // Raised by the client library itself: the connection failed, broke or timed out.
                    return client.InnerException is { } cause ? $"{client.Message} ({cause.Message})" : client.Message;
            }
        }
        return null;
    }
}
