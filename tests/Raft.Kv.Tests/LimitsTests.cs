using Google.Protobuf;
using Raft.Kv.Etcd.Serverpb;
using Raft.Kv.Server;
using Raft.Transport.Grpc.Wire;

namespace Raft.Kv.Tests;

/// <summary>Bad input over the wire: each request gets etcd's gRPC error, and nothing of it is applied.</summary>
public class LimitsTests
{
    private static GrpcMethod<TReq, TResp> M<TReq, TResp>(string service, string method, MessageParser<TReq> req, MessageParser<TResp> resp)
        where TReq : IMessage<TReq> where TResp : IMessage<TResp> =>
        GrpcMethod.Protobuf(GrpcMethodType.Unary, "etcdserverpb." + service, method, req, resp);

    private static readonly GrpcMethod<PutRequest, PutResponse> Put = M("KV", "Put", PutRequest.Parser, PutResponse.Parser);
    private static readonly GrpcMethod<RangeRequest, RangeResponse> Range = M("KV", "Range", RangeRequest.Parser, RangeResponse.Parser);
    private static readonly GrpcMethod<DeleteRangeRequest, DeleteRangeResponse> Delete = M("KV", "DeleteRange", DeleteRangeRequest.Parser, DeleteRangeResponse.Parser);
    private static readonly GrpcMethod<TxnRequest, TxnResponse> Txn = M("KV", "Txn", TxnRequest.Parser, TxnResponse.Parser);
    private static readonly GrpcMethod<MemberAddRequest, MemberAddResponse> Add = M("Cluster", "MemberAdd", MemberAddRequest.Parser, MemberAddResponse.Parser);
    private static readonly GrpcMethod<MemberRemoveRequest, MemberRemoveResponse> Remove = M("Cluster", "MemberRemove", MemberRemoveRequest.Parser, MemberRemoveResponse.Parser);
    private static readonly GrpcMethod<MemberUpdateRequest, MemberUpdateResponse> Update = M("Cluster", "MemberUpdate", MemberUpdateRequest.Parser, MemberUpdateResponse.Parser);
    private static readonly GrpcMethod<MemberPromoteRequest, MemberPromoteResponse> Promote = M("Cluster", "MemberPromote", MemberPromoteRequest.Parser, MemberPromoteResponse.Parser);
    private static readonly GrpcMethod<MoveLeaderRequest, MoveLeaderResponse> MoveLeader = M("Maintenance", "MoveLeader", MoveLeaderRequest.Parser, MoveLeaderResponse.Parser);
    private static readonly GrpcMethod<byte[], byte[]> RawPut = new(GrpcMethodType.Unary, "/etcdserverpb.KV/Put", new(b => b, b => b), new(b => b, b => b));

    private static readonly GrpcCallOptions Call = new(Timeout: TimeSpan.FromSeconds(15));

    private static async Task<(List<KvServer> Servers, List<KvMember> Members)> StartAsync(int n, int maxRequestBytes = 1536 * 1024)
    {
        var members = Enumerable.Range(1, n).Select(i => ClusterKit.NewMember((ulong)i)).ToList();
        var servers = new List<KvServer>();
        foreach (var m in members)
            servers.Add(await KvServer.StartAsync(new KvServerOptions
            {
                NodeId = m.Id, Members = members, ConnectionString = await ClusterKit.NewDatabaseAsync(),
                TickInterval = TimeSpan.FromMilliseconds(50), MaxRequestBytes = maxRequestBytes,
            }));
        using var c = new EtcdClient(members[0].ClientUrl);
        await ClusterKit.EventuallyAsync(async () => (await c.MemberListAsync()).Members.All(m => m.Name.Length > 0), "a leader and started members");
        return (servers, members);
    }

    private static async Task<GrpcCallException> Refused(Func<Task> call, StatusCode code, string message)
    {
        var e = await Assert.ThrowsAsync<GrpcCallException>(call);
        Assert.True(e.StatusCode == code && e.StatusMessage == message, $"expected {code} '{message}', got {e.StatusCode} '{e.StatusMessage}'");
        return e;
    }

    private static ByteString B(string s) => ByteString.CopyFromUtf8(s);

    [Fact]
    public async Task Bad_requests_get_etcds_errors_and_change_nothing()
    {
        var (servers, members) = await StartAsync(1);
        try
        {
            using var client = new GrpcClient(new GrpcClientOptions { Address = new Uri(members[0].ClientUrl) });
            await client.UnaryAsync(Put, new PutRequest { Key = B("a"), Value = B("1") }, Call);
            var before = (await client.UnaryAsync(Range, new RangeRequest { Key = B("a") }, Call)).Header.Revision;

            const string emptyKey = "etcdserver: key is not provided";
            await Refused(() => client.UnaryAsync(Put, new PutRequest { Value = B("x") }, Call), StatusCode.InvalidArgument, emptyKey);
            await Refused(() => client.UnaryAsync(Range, new RangeRequest(), Call), StatusCode.InvalidArgument, emptyKey);
            await Refused(() => client.UnaryAsync(Delete, new DeleteRangeRequest(), Call), StatusCode.InvalidArgument, emptyKey);
            await Refused(() => client.UnaryAsync(Txn, new TxnRequest { Compare = { new Compare { Value = B("v") } } }, Call), StatusCode.InvalidArgument, emptyKey);
            await Refused(() => client.UnaryAsync(Txn, new TxnRequest
            {
                Success = { new RequestOp { RequestPut = new PutRequest { Key = B("ok"), Value = B("1") } }, new RequestOp { RequestPut = new PutRequest { Value = B("2") } } },
            }, Call), StatusCode.InvalidArgument, emptyKey);

            // etcd's --max-request-bytes (1.5 MiB): above it, etcd's own error; above it plus gRPC's margin, gRPC's.
            await Refused(() => client.UnaryAsync(Put, new PutRequest { Key = B("big"), Value = ByteString.CopyFrom(new byte[1600 * 1024]) }, Call),
                StatusCode.InvalidArgument, "etcdserver: request is too large");
            var huge = await Assert.ThrowsAsync<GrpcCallException>(() => client.UnaryAsync(Put, new PutRequest { Key = B("big"), Value = ByteString.CopyFrom(new byte[2200 * 1024]) }, Call));
            Assert.Equal(StatusCode.ResourceExhausted, huge.StatusCode);
            await client.UnaryAsync(Put, new PutRequest { Key = B("fits"), Value = ByteString.CopyFrom(new byte[1400 * 1024]) }, Call);

            // etcd's --max-txn-ops (128) and its duplicate-key rule.
            var tooMany = new TxnRequest();
            for (var i = 0; i < 129; i++) tooMany.Success.Add(new RequestOp { RequestPut = new PutRequest { Key = B($"k{i}"), Value = B("v") } });
            await Refused(() => client.UnaryAsync(Txn, tooMany, Call), StatusCode.InvalidArgument, "etcdserver: too many operations in txn request");
            tooMany.Success.RemoveAt(128);
            var allowed = await client.UnaryAsync(Txn, tooMany, Call);
            Assert.True(allowed.Succeeded);
            await Refused(() => client.UnaryAsync(Txn, new TxnRequest
            {
                Success = { new RequestOp { RequestPut = new PutRequest { Key = B("dup"), Value = B("1") } }, new RequestOp { RequestPut = new PutRequest { Key = B("dup"), Value = B("2") } } },
            }, Call), StatusCode.InvalidArgument, "etcdserver: duplicate key given in txn request");
            await Refused(() => client.UnaryAsync(Txn, new TxnRequest
            {
                Success = { new RequestOp { RequestDeleteRange = new DeleteRangeRequest { Key = B("d"), RangeEnd = B("e") } }, new RequestOp { RequestPut = new PutRequest { Key = B("dx"), Value = B("2") } } },
            }, Call), StatusCode.InvalidArgument, "etcdserver: duplicate key given in txn request");

            // Malformed requests: values outside etcd's enums, and bytes that are no protobuf at all.
            await Refused(() => client.UnaryAsync(Range, new RangeRequest { Key = B("a"), SortOrder = (RangeRequest.Types.SortOrder)9 }, Call),
                StatusCode.InvalidArgument, "etcdserver: invalid sort option");
            await Refused(() => client.UnaryAsync(Range, new RangeRequest { Key = B("a"), SortTarget = (RangeRequest.Types.SortTarget)9 }, Call),
                StatusCode.InvalidArgument, "etcdserver: invalid sort option");
            await Refused(() => client.UnaryAsync(Txn, new TxnRequest { Compare = { new Compare { Key = B("a"), Target = (Compare.Types.CompareTarget)9 } }, Success = { new RequestOp { RequestPut = new PutRequest { Key = B("t"), Value = B("v") } } } }, Call),
                StatusCode.InvalidArgument, "raftv: invalid compare: unknown target 9");
            var garbage = await Assert.ThrowsAsync<GrpcCallException>(() => client.UnaryAsync(RawPut, [0xff, 0xff, 0xff, 0x07, 0x0a], Call));
            Assert.Equal(StatusCode.Internal, garbage.StatusCode);

            // Nothing of the refused requests was applied: one revision for the accepted put, one for the accepted txn.
            var after = await client.UnaryAsync(Range, new RangeRequest { Key = B("a"), RangeEnd = B("\0"), KeysOnly = true }, Call);
            Assert.Equal(before + 2, after.Header.Revision);
            var keys = after.Kvs.Select(kv => kv.Key.ToStringUtf8()).ToHashSet();
            foreach (var k in new[] { "ok", "big", "dup", "dx", "t", "k128" }) Assert.DoesNotContain(k, keys);
            Assert.Contains("fits", keys);
            Assert.Contains("k127", keys);
        }
        finally
        {
            foreach (var s in servers) await s.DisposeAsync();
        }
    }

    [Fact]
    public async Task Max_request_bytes_is_the_servers_setting()
    {
        var (servers, members) = await StartAsync(1, maxRequestBytes: 1000);
        try
        {
            using var client = new GrpcClient(new GrpcClientOptions { Address = new Uri(members[0].ClientUrl) });
            await client.UnaryAsync(Put, new PutRequest { Key = B("small"), Value = ByteString.CopyFrom(new byte[500]) }, Call);
            await Refused(() => client.UnaryAsync(Put, new PutRequest { Key = B("large"), Value = ByteString.CopyFrom(new byte[2000]) }, Call),
                StatusCode.InvalidArgument, "etcdserver: request is too large");
        }
        finally
        {
            foreach (var s in servers) await s.DisposeAsync();
        }
    }

    [Fact]
    public async Task Membership_requests_name_what_is_wrong_and_a_second_change_is_refused_not_timed_out()
    {
        var (servers, members) = await StartAsync(3);
        try
        {
            using var client = new GrpcClient(new GrpcClientOptions { Address = new Uri(members[1].ClientUrl) });
            const ulong unknown = 0xdead;
            const string notFound = "etcdserver: member not found";
            await Refused(() => client.UnaryAsync(Remove, new MemberRemoveRequest { ID = unknown }, Call), StatusCode.NotFound, notFound);
            await Refused(() => client.UnaryAsync(Update, new MemberUpdateRequest { ID = unknown, PeerURLs = { "http://127.0.0.1:1" } }, Call), StatusCode.NotFound, notFound);
            await Refused(() => client.UnaryAsync(Promote, new MemberPromoteRequest { ID = unknown }, Call), StatusCode.NotFound, notFound);
            await Refused(() => client.UnaryAsync(Add, new MemberAddRequest { PeerURLs = { members[2].PeerUrl } }, Call),
                StatusCode.FailedPrecondition, "etcdserver: Peer URLs already exists");
            await Refused(() => client.UnaryAsync(Update, new MemberUpdateRequest { ID = 1, PeerURLs = { members[2].PeerUrl } }, Call),
                StatusCode.FailedPrecondition, "etcdserver: Peer URLs already exists");
            foreach (var bad in new[] { "not a url", "ftp://127.0.0.1:2380", "http://127.0.0.1:2380/path" })
                await Refused(() => client.UnaryAsync(Add, new MemberAddRequest { PeerURLs = { bad } }, Call),
                    StatusCode.InvalidArgument, "etcdserver: given member URLs are invalid");
            await Refused(() => client.UnaryAsync(Add, new MemberAddRequest(), Call), StatusCode.InvalidArgument, "etcdserver: given member URLs are invalid");
            await Refused(() => client.UnaryAsync(Promote, new MemberPromoteRequest { ID = 1 }, Call),
                StatusCode.FailedPrecondition, "etcdserver: can only promote a learner member");

            using var leaderClient = new EtcdClient(members[0].ClientUrl);
            var leader = (await leaderClient.StatusAsync()).Leader;
            using var atLeader = new GrpcClient(new GrpcClientOptions { Address = new Uri(members.Single(m => m.Id == leader).ClientUrl) });
            await Refused(() => atLeader.UnaryAsync(MoveLeader, new MoveLeaderRequest { TargetID = unknown }, Call),
                StatusCode.FailedPrecondition, "etcdserver: bad leader transferee");

            // While one change is under way on a member, a second one there is refused after a short wait, not left to time out.
            using (await servers[1].BeginMembershipChangeAsync(CancellationToken.None))
            {
                var started = DateTime.UtcNow;
                await Refused(() => client.UnaryAsync(Add, new MemberAddRequest { PeerURLs = { $"http://127.0.0.1:{ClusterKit.FreePort()}" }, IsLearner = true }, Call),
                    StatusCode.FailedPrecondition, "raftv: another membership change is in progress; retry once it has been applied");
                Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(6), "the refusal waited as long as a timeout");
                await Refused(() => client.UnaryAsync(Remove, new MemberRemoveRequest { ID = 3 }, Call),
                    StatusCode.FailedPrecondition, "raftv: another membership change is in progress; retry once it has been applied");
            }
            var added = await client.UnaryAsync(Add, new MemberAddRequest { PeerURLs = { $"http://127.0.0.1:{ClusterKit.FreePort()}" }, IsLearner = true }, Call);
            await client.UnaryAsync(Remove, new MemberRemoveRequest { ID = added.Member.ID }, Call);
            Assert.Equal(3, (await leaderClient.MemberListAsync()).Members.Count);
        }
        finally
        {
            foreach (var s in servers) await s.DisposeAsync();
        }
    }
}
