using Google.Protobuf;
using Npgsql;
using Raft.Kv.Etcd.Serverpb;
using Raft.Kv.Protocol;
using Raft.Kv.Server;
using Raft.Kv.State;
using Raft.Kv.Storage;
using Raft.Spec;
using Raft.Transport.Grpc.Wire;
using static Raft.Kv.Tests.Kv;

namespace Raft.Kv.Tests;

/// <summary>Reads at past revisions (the Range request's revision), compaction, and the history in PostgreSQL and in snapshots.</summary>
public class RevisionTests
{
    private const string Compacted = "etcdserver: mvcc: required revision has been compacted";
    private const string Future = "etcdserver: mvcc: required revision is a future revision";

    private static RangeRequest All(long revision = 0) => new() { Key = ByteString.CopyFrom(0), RangeEnd = ByteString.CopyFrom(0), Revision = revision };

    private static string Dump(RangeResponse r) => string.Join(" ", r.Kvs.Select(kv => $"{S(kv.Key)}={S(kv.Value)}@{kv.CreateRevision}/{kv.ModRevision}/v{kv.Version}"));

    private static Entry E(ulong index, KvCommand command) => new(1, index, EntryType.EntryNormal, command.ToByteArray());

    [Fact]
    public void The_model_answers_every_revision_from_the_compaction_point_on()
    {
        var kv = new MemoryKv();
        kv.Put("a", "1");                 // 2
        kv.Put("b", "1");                 // 3
        kv.Put("a", "2");                 // 4
        kv.Delete(Del("b"));              // 5
        kv.Put("b", "2");                 // 6
        Assert.Equal("a=1@2/2/v1", Dump(kv.Range(All(2))));
        Assert.Equal("a=1@2/2/v1 b=1@3/3/v1", Dump(kv.Range(All(3))));
        Assert.Equal("a=2@2/4/v2 b=1@3/3/v1", Dump(kv.Range(All(4))));
        Assert.Equal("a=2@2/4/v2", Dump(kv.Range(All(5))));
        Assert.Equal("a=2@2/4/v2 b=2@6/6/v1", Dump(kv.Range(All(6))));
        Assert.Empty(kv.Range(All(1)).Kvs);
        // The header names the current revision, as etcd's does.
        Assert.Equal(6, kv.Range(All(3)).Header.Revision);
        Assert.Equal(2, kv.Range(new RangeRequest(All(3)) { CountOnly = true }).Count);

        // A transaction reads at a past revision too, and its writes do not show there.
        var txn = kv.Txn(Txn([], [Op(Put("a", "3")), Op(new RangeRequest(Get("a")) { Revision = 2 }), Op(Get("a"))]));
        Assert.Equal("1", S(txn.Responses[1].ResponseRange.Kvs.Single().Value));
        Assert.Equal("3", S(txn.Responses[2].ResponseRange.Kvs.Single().Value));

        kv.Apply(Command(new CompactionRequest { Revision = 5 }));
        EtcdAssert.Error(Raft.Transport.Grpc.Wire.StatusCode.OutOfRange, Compacted, () => kv.Range(All(4)));
        Assert.Equal("a=2@2/4/v2", Dump(kv.Range(All(5))));
        EtcdAssert.Error(Raft.Transport.Grpc.Wire.StatusCode.OutOfRange, Future, () => kv.Range(All(8)));
        EtcdAssert.Error(Raft.Transport.Grpc.Wire.StatusCode.OutOfRange, Compacted,
            kv.Fails(Command(Txn([], [Op(new RangeRequest(Get("a")) { Revision = 3 })]))));
    }

    /// <summary>
    /// Seeded random writes applied to the model and to PostgreSQL (in batches, as raft delivers them),
    /// then every revision read from both, before and after compactions and through a snapshot.
    /// Replay: the seed is printed on failure.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task PostgreSQL_answers_past_revisions_as_the_model_does(int seed)
    {
        var cs = await TestDatabase.ConnectionStringAsync();
        var schema = TestDatabase.NewSchema();
        await using var store = await PostgresKvStore.OpenAsync(cs, 1, new PostgresKvStoreOptions { Schema = schema });
        var model = new MemoryKv();
        var random = new Random(seed);
        string Key() => ((char)('a' + random.Next(6))).ToString();
        ulong index = 0;
        var commands = new List<KvCommand>();
        for (var i = 0; i < 120; i++)
        {
            var roll = random.Next(100);
            KvCommand c = roll switch
            {
                < 55 => Command(Put(Key(), $"v{i}")),
                < 70 => Command(Del(Key())),
                < 75 => Command(Del("b", "e")),
                < 90 => Command(Txn([], [Op(Put(Key(), $"t{i}")), Op(new RangeRequest(Get("a", "z")) { Revision = Math.Max(1, model.State.Revision - random.Next(5)) })])),
                _ => Command(new CompactionRequest { Revision = Math.Max(1, model.State.Revision - random.Next(1, 30)) }),
            };
            commands.Add(c);
            model.Apply(c);
        }
        // Raft hands entries over in batches of varying sizes.
        var results = new List<KvResult?>();
        for (var i = 0; i < commands.Count;)
        {
            var n = Math.Min(commands.Count - i, 1 + random.Next(8));
            var applied = await store.ApplyAsync([.. commands.Skip(i).Take(n).Select(c => E(++index, c))]);
            results.AddRange(applied.Select(a => a.Result));
            i += n;
        }

        async Task SameAsModel(PostgresKvStore s, string where)
        {
            var state = await s.ReadStateAsync();
            Assert.Equal(model.State.Revision, state.Revision);
            Assert.Equal(model.State.CompactRevision, state.CompactRevision);
            for (var rev = 1L; rev <= model.State.Revision + 1; rev++)
            {
                string expected, actual;
                try { expected = Dump(model.Range(All(rev))); } catch (EtcdException e) { expected = e.Message; }
                try { actual = Dump(await s.RangeAsync(All(rev))); } catch (EtcdException e) { actual = e.Message; }
                Assert.True(expected == actual, $"seed {seed} ({where}), revision {rev}:\n  model {expected}\n  store {actual}");
            }
        }

        await SameAsModel(store, "after applying");
        // Transactions that read at a past revision got the model's answers too.
        var modelResults = new MemoryKv();
        for (var i = 0; i < commands.Count; i++)
            Assert.True(modelResults.Apply(commands[i]).Equals(results[i]), $"seed {seed}: result of command {i} differs");

        // A snapshot carries the history: a member installing it answers the same.
        var snapshot = new MemoryStream();
        await store.ExportSnapshotAsync(snapshot);
        await using var other = await PostgresKvStore.OpenAsync(cs, 1, new PostgresKvStoreOptions { Schema = TestDatabase.NewSchema() });
        snapshot.Position = 0;
        await other.ImportSnapshotAsync(snapshot);
        await SameAsModel(other, "after a snapshot");

        // Compaction drops the versions no read can see any more.
        var compactTo = model.State.Revision - 3;
        model.Apply(Command(new CompactionRequest { Revision = compactTo }));
        await store.ApplyAsync([E(++index, Command(new CompactionRequest { Revision = compactTo }))]);
        await SameAsModel(store, "after a compaction");
        await store.PurgesDone;
        await using var conn = new NpgsqlConnection(cs);
        await conn.OpenAsync();
        await using var count = new NpgsqlCommand($"SELECT count(*) FROM \"{schema}\".kv_history WHERE mod_revision <= {compactTo} AND version = 0", conn);
        Assert.Equal(0L, await count.ExecuteScalarAsync());
    }

    [Fact]
    public async Task A_store_from_before_history_answers_from_its_revision_on()
    {
        var cs = await TestDatabase.ConnectionStringAsync();
        var options = new PostgresKvStoreOptions { Schema = TestDatabase.NewSchema() };
        await using (var store = await PostgresKvStore.OpenAsync(cs, 1, options))
            await store.ApplyAsync([E(1, Command(Put("a", "1"))), E(2, Command(Put("a", "2"))), E(3, Command(Put("b", "1")))]);
        // Back to schema 1 as an older raftv left it: no history table.
        await using (var conn = new NpgsqlConnection(cs))
        {
            await conn.OpenAsync();
            await using var downgrade = new NpgsqlCommand(
                $"DROP TABLE \"{options.Schema}\".kv_history; ALTER TABLE \"{options.Schema}\".kv_groups DROP COLUMN history_from; DELETE FROM \"{options.Schema}\".kv_schema WHERE version = 2", conn);
            await downgrade.ExecuteNonQueryAsync();
        }
        await using var upgraded = await PostgresKvStore.OpenAsync(cs, 1, options);
        Assert.Equal(4, (await upgraded.ReadStateAsync()).HistoryFrom);
        var e = await Assert.ThrowsAsync<EtcdException>(() => upgraded.RangeAsync(All(3)));
        Assert.Equal(Raft.Transport.Grpc.Wire.StatusCode.Unimplemented, e.Code);
        await upgraded.ApplyAsync([E(4, Command(Put("a", "3")))]);
        Assert.Equal("a=2@2/3/v2 b=1@4/4/v1", Dump(await upgraded.RangeAsync(All(4))));
        Assert.Equal("a=3@2/5/v3 b=1@4/4/v1", Dump(await upgraded.RangeAsync(All(5))));
    }

    [Fact]
    public async Task The_leader_compacts_old_history_through_raft_keeping_the_retention()
    {
        var members = Enumerable.Range(1, 3).Select(i => ClusterKit.NewMember((ulong)i)).ToList();
        var servers = new List<KvServer>();
        try
        {
            foreach (var m in members)
                servers.Add(await KvServer.StartAsync(new KvServerOptions
                {
                    NodeId = m.Id, Members = members, ConnectionString = await ClusterKit.NewDatabaseAsync(), TickInterval = TimeSpan.FromMilliseconds(50),
                    AutoCompactionRetention = 10, AutoCompactionInterval = TimeSpan.FromMilliseconds(200),
                }));
            using var c = new EtcdClient(members[2].ClientUrl);
            await ClusterKit.EventuallyAsync(async () => { await c.PutAsync("k", "0"); return true; }, "a write");
            long revision = 0;
            for (var i = 1; i <= 30; i++) revision = (await c.PutAsync("k", i.ToString())).Header.Revision;
            var range = GrpcMethod.Protobuf(GrpcMethodType.Unary, "etcdserverpb.KV", "Range", RangeRequest.Parser, RangeResponse.Parser);
            using var client = new GrpcClient(new GrpcClientOptions { Address = new Uri(members[1].ClientUrl) });
            await ClusterKit.EventuallyAsync(async () =>
            {
                try
                {
                    await client.UnaryAsync(range, new RangeRequest { Key = B("k"), Revision = 3 });
                    return false;
                }
                catch (GrpcCallException e) when (e.StatusMessage == Compacted)
                {
                    return true;
                }
            }, "revision 3 compacted");
            // The retention is kept: the last ten revisions are still there, on every member.
            foreach (var m in members)
            {
                using var each = new GrpcClient(new GrpcClientOptions { Address = new Uri(m.ClientUrl) });
                var r = await each.UnaryAsync(range, new RangeRequest { Key = B("k"), Revision = revision - 9, Serializable = true });
                Assert.Equal("21", S(r.Kvs.Single().Value));
            }
        }
        finally
        {
            foreach (var s in servers) await s.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_cluster_serves_past_revisions_on_every_member_with_etcds_errors()
    {
        var members = Enumerable.Range(1, 3).Select(i => ClusterKit.NewMember((ulong)i)).ToList();
        var servers = new List<KvServer>();
        try
        {
            foreach (var m in members)
                servers.Add(await KvServer.StartAsync(new KvServerOptions
                {
                    NodeId = m.Id, Members = members, ConnectionString = await ClusterKit.NewDatabaseAsync(), TickInterval = TimeSpan.FromMilliseconds(50),
                }));
            using var c = new EtcdClient(members[0].ClientUrl);
            await ClusterKit.EventuallyAsync(async () => { await c.PutAsync("k", "1"); return true; }, "a write");
            var first = (await c.PutAsync("k", "2")).Header.Revision;
            await c.PutAsync("k", "3");

            var range = GrpcMethod.Protobuf(GrpcMethodType.Unary, "etcdserverpb.KV", "Range", RangeRequest.Parser, RangeResponse.Parser);
            var compact = GrpcMethod.Protobuf(GrpcMethodType.Unary, "etcdserverpb.KV", "Compact", CompactionRequest.Parser, CompactionResponse.Parser);
            foreach (var m in members)
            {
                using var client = new GrpcClient(new GrpcClientOptions { Address = new Uri(m.ClientUrl) });
                foreach (var serializable in new[] { false, true })
                {
                    var r = await client.UnaryAsync(range, new RangeRequest { Key = B("k"), Revision = first, Serializable = serializable });
                    Assert.Equal("2", S(r.Kvs.Single().Value));
                }
            }
            using var one = new GrpcClient(new GrpcClientOptions { Address = new Uri(members[1].ClientUrl) });
            await one.UnaryAsync(compact, new CompactionRequest { Revision = first });
            Assert.Equal("2", S((await one.UnaryAsync(range, new RangeRequest { Key = B("k"), Revision = first })).Kvs.Single().Value));
            var old = await Assert.ThrowsAsync<GrpcCallException>(() => one.UnaryAsync(range, new RangeRequest { Key = B("k"), Revision = first - 1 }));
            Assert.Equal((StatusCode.OutOfRange, Compacted), (old.StatusCode, old.StatusMessage));
            var future = await Assert.ThrowsAsync<GrpcCallException>(() => one.UnaryAsync(range, new RangeRequest { Key = B("k"), Revision = first + 100 }));
            Assert.Equal((StatusCode.OutOfRange, Future), (future.StatusCode, future.StatusMessage));
        }
        finally
        {
            foreach (var s in servers) await s.DisposeAsync();
        }
    }
}
