using Google.Protobuf;
using Raft.Kv.Etcd.Serverpb;
using Raft.Kv.State;
using Raft.Transport.Grpc.Wire;
using static Raft.Kv.Tests.Kv;
using CR = Raft.Kv.Etcd.Serverpb.Compare.Types.CompareResult;
using CT = Raft.Kv.Etcd.Serverpb.Compare.Types.CompareTarget;
using SO = Raft.Kv.Etcd.Serverpb.RangeRequest.Types.SortOrder;
using ST = Raft.Kv.Etcd.Serverpb.RangeRequest.Types.SortTarget;

namespace Raft.Kv.Tests;

/// <summary>etcd's revision model and KV semantics (etcd's API reference and apply code), on the pure applier.</summary>
public class KvApplierTests
{
    [Fact]
    public void Revision_starts_at_1_and_each_write_advances_it_once()
    {
        var kv = new MemoryKv();
        Assert.Equal(1, kv.State.Revision);

        Assert.Equal(2, kv.Put("a", "1").Header.Revision);
        var a = kv.Get("a")!;
        Assert.Equal((2L, 2L, 1L, "1"), (a.CreateRevision, a.ModRevision, a.Version, S(a.Value)));

        Assert.Equal(3, kv.Put("a", "2").Header.Revision);
        a = kv.Get("a")!;
        Assert.Equal((2L, 3L, 2L, "2"), (a.CreateRevision, a.ModRevision, a.Version, S(a.Value)));

        kv.Put("b", "x");
        Assert.Equal(4, kv.State.Revision);
        Assert.Equal(4, kv.Range(Get("a")).Header.Revision);
    }

    [Fact]
    public void Delete_resets_the_key_a_new_put_recreates_it()
    {
        var kv = new MemoryKv();
        kv.Put("a", "1");
        kv.Put("a", "2");
        var del = kv.Delete(Del("a"));
        Assert.Equal((1L, 4L), (del.Deleted, del.Header.Revision));
        Assert.Null(kv.Get("a"));
        Assert.Equal(0, kv.Range(Get("a")).Count);

        kv.Put("a", "3");
        var a = kv.Get("a")!;
        Assert.Equal((5L, 5L, 1L), (a.CreateRevision, a.ModRevision, a.Version));
    }

    [Fact]
    public void Deleting_nothing_does_not_advance_the_revision()
    {
        var kv = new MemoryKv();
        kv.Put("a", "1");
        var del = kv.Delete(Del("zzz"));
        Assert.Equal((0L, 2L), (del.Deleted, del.Header.Revision));
        Assert.Equal(2, kv.State.Revision);
    }

    private static MemoryKv RangeFixture()
    {
        var kv = new MemoryKv();
        foreach (var k in new[] { "a", "ab", "abc", "b", "c" }) kv.Put(k, "v" + k);
        kv.Put(new PutRequest { Key = Bytes(0xff), Value = B("ff") });
        kv.Put(new PutRequest { Key = Bytes(0xff, 0xff), Value = B("ffff") });
        return kv;
    }

    public static TheoryData<string, byte[], byte[], string> RangeCases => new()
    {
        { "empty range_end: the single key", "ab"u8.ToArray(), [], "ab" },
        { "single missing key", "aa"u8.ToArray(), [], "" },
        { "prefix: range_end is key+1", "ab"u8.ToArray(), "ac"u8.ToArray(), "ab,abc" },
        { "half-open interval", "a"u8.ToArray(), "b"u8.ToArray(), "a,ab,abc" },
        { "\\0 range_end: every key >= key", "b"u8.ToArray(), [0], "b,c,\\xff,\\xff\\xff" },
        { "key and range_end \\0: all keys", [0], [0], "a,ab,abc,b,c,\\xff,\\xff\\xff" },
        { "range_end before key: nothing", "c"u8.ToArray(), "b"u8.ToArray(), "" },
        { "range_end equal to key: nothing", "b"u8.ToArray(), "b"u8.ToArray(), "" },
        { "prefix of 0xff is every key >= 0xff", [0xff], [0], "\\xff,\\xff\\xff" },
    };

    [Theory]
    [MemberData(nameof(RangeCases))]
    public void Range_follows_etcds_range_end_conventions(string name, byte[] key, byte[] end, string expected)
    {
        var kv = RangeFixture();
        var r = kv.Range(new RangeRequest { Key = ByteString.CopyFrom(key), RangeEnd = ByteString.CopyFrom(end) });
        Assert.True(expected == Keys(r), $"{name}: expected [{expected}], got [{Keys(r)}]");
        Assert.Equal(r.Kvs.Count, r.Count);
        Assert.False(r.More);
    }

    [Fact]
    public void Prefix_range_helper_matches_etcds_prefix_end()
    {
        Assert.Equal("ac"u8.ToArray(), KeyRange.Prefix("ab"u8.ToArray()).End);
        Assert.Equal(new byte[] { (byte)'b' }, KeyRange.Prefix([(byte)'a', 0xff]).End);
        Assert.True(KeyRange.Prefix([0xff, 0xff]).IsUnbounded);
    }

    [Fact]
    public void Limit_sets_more_and_count_stays_the_full_count()
    {
        var kv = RangeFixture();
        var all = new RangeRequest { Key = Bytes(0), RangeEnd = Bytes(0) };

        var limited = kv.Range(new RangeRequest(all) { Limit = 2 });
        Assert.Equal("a,ab", Keys(limited));
        Assert.True(limited.More);
        Assert.Equal(7, limited.Count);

        var exact = kv.Range(new RangeRequest(all) { Limit = 7 });
        Assert.False(exact.More);
        Assert.Equal(7, exact.Kvs.Count);
    }

    [Fact]
    public void Keys_only_drops_values_and_count_only_drops_records()
    {
        var kv = RangeFixture();
        var keysOnly = kv.Range(new RangeRequest { Key = B("a"), RangeEnd = B("b"), KeysOnly = true });
        Assert.Equal("a,ab,abc", Keys(keysOnly));
        Assert.All(keysOnly.Kvs, x => Assert.True(x.Value.IsEmpty));
        Assert.All(keysOnly.Kvs, x => Assert.Equal(1, x.Version));

        var countOnly = kv.Range(new RangeRequest { Key = B("a"), RangeEnd = B("b"), CountOnly = true, Limit = 1 });
        Assert.Empty(countOnly.Kvs);
        Assert.Equal(3, countOnly.Count);
        Assert.False(countOnly.More);
    }

    [Fact]
    public void Sort_orders_and_targets_as_etcd()
    {
        var kv = new MemoryKv();
        kv.Put("a", "3"); // rev 2
        kv.Put("b", "1"); // rev 3
        kv.Put("c", "2"); // rev 4
        kv.Put("a", "4"); // rev 5, a at version 2
        var all = new RangeRequest { Key = B("a"), RangeEnd = B("z") };

        Assert.Equal("c,b,a", Keys(kv.Range(new RangeRequest(all) { SortOrder = SO.Descend })));
        Assert.Equal("a,b,c", Keys(kv.Range(new RangeRequest(all) { SortOrder = SO.Ascend })));
        // A target other than KEY with no order sorts ascending.
        Assert.Equal("b,c,a", Keys(kv.Range(new RangeRequest(all) { SortTarget = ST.Value })));
        Assert.Equal("b,c,a", Keys(kv.Range(new RangeRequest(all) { SortTarget = ST.Mod })));
        Assert.Equal("a,b,c", Keys(kv.Range(new RangeRequest(all) { SortTarget = ST.Create })));
        Assert.Equal("a,b,c", Keys(kv.Range(new RangeRequest(all) { SortTarget = ST.Version, SortOrder = SO.Descend })));
        // Sorting happens before the limit: the newest modification first.
        var newest = kv.Range(new RangeRequest(all) { SortTarget = ST.Mod, SortOrder = SO.Descend, Limit = 1 });
        Assert.Equal("a", Keys(newest));
        Assert.True(newest.More);
        Assert.Equal(3, newest.Count);
    }

    [Fact]
    public void Revision_filters_prune_records_but_not_the_count()
    {
        var kv = new MemoryKv();
        kv.Put("a", "1"); // 2
        kv.Put("b", "1"); // 3
        kv.Put("c", "1"); // 4
        var all = new RangeRequest { Key = B("a"), RangeEnd = B("z") };
        var r = kv.Range(new RangeRequest(all) { MinModRevision = 3 });
        Assert.Equal("b,c", Keys(r));
        Assert.Equal(3, r.Count);
        Assert.Equal("a,b", Keys(kv.Range(new RangeRequest(all) { MaxCreateRevision = 3 })));
        Assert.Equal("b", Keys(kv.Range(new RangeRequest(all) { MinCreateRevision = 3, MaxModRevision = 3 })));
    }

    [Fact]
    public void Prev_kv_returns_the_records_before_the_write()
    {
        var kv = new MemoryKv();
        Assert.Null(kv.Put(Put("a", "1", prevKv: true)).PrevKv);
        var second = kv.Put(Put("a", "2", prevKv: true));
        Assert.Equal(("1", 1L), (S(second.PrevKv.Value), second.PrevKv.Version));
        Assert.Null(kv.Put(Put("a", "3")).PrevKv);

        kv.Put("ab", "x");
        var del = kv.Delete(Del("a", "b", prevKv: true));
        Assert.Equal(2, del.Deleted);
        Assert.Equal("a,ab", string.Join(",", del.PrevKvs.Select(p => S(p.Key))));
        Assert.Equal("3", S(del.PrevKvs[0].Value));
    }

    [Fact]
    public void Ignore_value_keeps_the_value_and_needs_the_key()
    {
        var kv = new MemoryKv();
        var missing = kv.Fails(Command(new PutRequest { Key = B("a"), IgnoreValue = true }));
        EtcdAssert.Error(StatusCode.InvalidArgument, "etcdserver: key not found", missing);

        kv.Put("a", "keep");
        kv.Put(new PutRequest { Key = B("a"), IgnoreValue = true });
        var a = kv.Get("a")!;
        Assert.Equal(("keep", 2L), (S(a.Value), a.Version));

        EtcdAssert.Error(StatusCode.InvalidArgument, "etcdserver: value is provided",
            () => KvApplier.ValidatePut(new PutRequest { Key = B("a"), Value = B("x"), IgnoreValue = true }));
        EtcdAssert.Error(StatusCode.InvalidArgument, "etcdserver: lease is provided",
            () => KvApplier.ValidatePut(new PutRequest { Key = B("a"), Lease = 5, IgnoreLease = true }));
    }

    [Fact]
    public void Unknown_leases_are_refused_as_etcd_does()
    {
        var kv = new MemoryKv();
        var error = kv.Fails(Command(new PutRequest { Key = B("a"), Value = B("1"), Lease = 42 }));
        EtcdAssert.Error(StatusCode.NotFound, "etcdserver: requested lease not found", error);
    }

    [Fact]
    public void Empty_keys_are_refused_everywhere()
    {
        const string msg = "etcdserver: key is not provided";
        EtcdAssert.Error(StatusCode.InvalidArgument, msg, () => KvApplier.ValidateRange(new RangeRequest()));
        EtcdAssert.Error(StatusCode.InvalidArgument, msg, () => KvApplier.ValidatePut(new PutRequest { Value = B("v") }));
        EtcdAssert.Error(StatusCode.InvalidArgument, msg, () => KvApplier.ValidateDeleteRange(new DeleteRangeRequest()));
        EtcdAssert.Error(StatusCode.InvalidArgument, msg,
            () => KvApplier.ValidateTxn(Txn([new Compare { Target = CT.Version }], [])));
        EtcdAssert.Error(StatusCode.InvalidArgument, msg,
            () => KvApplier.ValidateTxn(Txn([], [Op(new PutRequest { Value = B("v") })])));
        EtcdAssert.Error(StatusCode.InvalidArgument, msg, () => KvApplier.Range(new MemoryKvState(), new RangeRequest()));
        EtcdAssert.Error(StatusCode.InvalidArgument, msg, new MemoryKv().Fails(Command(new PutRequest { Value = B("v") })));
    }

    /// <summary>Fixture for compares: "k" = "v" at version 2, created at 2 and modified at 3; "k2" = "w" at 4.</summary>
    private static MemoryKv CompareFixture()
    {
        var kv = new MemoryKv();
        kv.Put("k", "u");
        kv.Put("k", "v");
        kv.Put("k2", "w");
        return kv;
    }

    public static TheoryData<string, string, CT, CR, object, string?, bool> CompareCases => new()
    {
        { "value equal", "k", CT.Value, CR.Equal, "v", null, true },
        { "value not equal", "k", CT.Value, CR.NotEqual, "v", null, false },
        { "value greater (bytewise)", "k", CT.Value, CR.Greater, "u", null, true },
        { "value less", "k", CT.Value, CR.Less, "w", null, true },
        { "value on a missing key is always false", "nope", CT.Value, CR.NotEqual, "x", null, false },
        { "version equal", "k", CT.Version, CR.Equal, 2, null, true },
        { "version greater", "k", CT.Version, CR.Greater, 1, null, true },
        { "missing key has version 0 (create-if-absent)", "nope", CT.Version, CR.Equal, 0, null, true },
        { "missing key has create revision 0", "nope", CT.Create, CR.Equal, 0, null, true },
        { "create equal", "k", CT.Create, CR.Equal, 2, null, true },
        { "create less", "k", CT.Create, CR.Less, 2, null, false },
        { "mod equal", "k", CT.Mod, CR.Equal, 3, null, true },
        { "mod not equal", "k", CT.Mod, CR.NotEqual, 3, null, false },
        { "mod less", "k", CT.Mod, CR.Less, 4, null, true },
        { "lease equal 0", "k", CT.Lease, CR.Equal, 0, null, true },
        { "range: every key holds", "k", CT.Version, CR.Greater, 0, "l", true },
        { "range: one key fails", "k", CT.Mod, CR.Less, 4, "l", false },
        { "range: \\0 end covers the rest", "k", CT.Value, CR.Greater, "a", "\0", true },
        { "empty range compares as a missing key", "x", CT.Version, CR.Equal, 0, "y", true },
        { "empty range and value compare is false", "x", CT.Value, CR.Equal, "", "y", false },
    };

    [Theory]
    [MemberData(nameof(CompareCases))]
    public void Compare_semantics(string name, string key, CT target, CR result, object operand, string? rangeEnd, bool holds)
    {
        var kv = CompareFixture();
        var txn = kv.Txn(Txn([Cmp(key, target, result, operand, rangeEnd)], []));
        Assert.True(holds == txn.Succeeded, name);
        Assert.Equal(holds, KvApplier.CompareHolds(kv.State, Cmp(key, target, result, operand, rangeEnd)));
    }

    [Fact]
    public void Txn_runs_the_chosen_branch_in_one_revision_and_reads_its_own_writes()
    {
        var kv = new MemoryKv();
        kv.Put("a", "1"); // rev 2
        var t = kv.Txn(Txn(
            [Cmp("a", CT.Value, CR.Equal, "1")],
            [Op(Put("a", "2")), Op(Put("b", "x")), Op(Get("a")), Op(Del("c"))],
            [Op(Put("z", "no"))]));
        Assert.True(t.Succeeded);
        Assert.Equal(3, t.Header.Revision);
        Assert.Equal(3, kv.State.Revision);
        Assert.Equal(4, t.Responses.Count);
        Assert.Equal(3, t.Responses[0].ResponsePut.Header.Revision);
        var read = t.Responses[2].ResponseRange;
        Assert.Equal(("2", 3L, 2L), (S(read.Kvs[0].Value), read.Kvs[0].ModRevision, read.Kvs[0].Version));
        Assert.Equal(0, t.Responses[3].ResponseDeleteRange.Deleted);
        Assert.Equal(3, kv.Get("b")!.CreateRevision);
        Assert.Null(kv.Get("z"));

        var f = kv.Txn(Txn([Cmp("a", CT.Value, CR.Equal, "1")], [Op(Put("y", "no"))], [Op(Put("z", "yes"))]));
        Assert.False(f.Succeeded);
        Assert.Equal("yes", S(kv.Get("z")!.Value));
        Assert.Null(kv.Get("y"));
        Assert.Equal(4, kv.State.Revision);
    }

    [Fact]
    public void Read_only_txn_keeps_the_revision()
    {
        var kv = new MemoryKv();
        kv.Put("a", "1");
        var t = kv.Txn(Txn([], [Op(Get("a"))]));
        Assert.True(t.Succeeded);
        Assert.Equal(2, t.Header.Revision);
        Assert.Equal(2, kv.State.Revision);
    }

    [Fact]
    public void Nested_txn_decides_its_branch_on_the_state_before_the_outer_txn()
    {
        var kv = new MemoryKv();
        kv.Put("k", "old");
        var inner = Txn([Cmp("k", CT.Value, CR.Equal, "new")], [Op(Put("seen", "new"))], [Op(Put("seen", "old"))]);
        var t = kv.Txn(Txn([], [Op(Put("k", "new")), Op(inner)]));
        Assert.True(t.Succeeded);
        Assert.False(t.Responses[1].ResponseTxn.Succeeded);
        Assert.Equal("old", S(kv.Get("seen")!.Value));
        Assert.Equal(3, kv.State.Revision);
        Assert.Equal(3, t.Responses[1].ResponseTxn.Header.Revision);
    }

    public static TheoryData<string, TxnRequest, bool> DuplicateCases => new()
    {
        { "two puts of one key", Txn([], [Op(Put("a", "1")), Op(Put("a", "2"))]), true },
        { "put and delete of one key", Txn([], [Op(Del("a")), Op(Put("a", "2"))]), true },
        { "put inside a deleted range", Txn([], [Op(Del("a", "c")), Op(Put("b", "2"))]), true },
        { "put next to a deleted range", Txn([], [Op(Del("a", "c")), Op(Put("c", "2"))]), false },
        { "two deletes may overlap", Txn([], [Op(Del("a", "c")), Op(Del("b"))]), false },
        { "success and failure branches are separate", Txn([], [Op(Put("a", "1"))], [Op(Put("a", "2"))]), false },
        { "nested then/else may put the same key", Txn([], [Op(Txn([], [Op(Put("a", "1"))], [Op(Put("a", "2"))]))]), false },
        { "nested put and outer put", Txn([], [Op(Txn([], [Op(Put("a", "1"))])), Op(Put("a", "2"))]), true },
        { "nested put under an outer delete", Txn([], [Op(Del("a")), Op(Txn([], [Op(Put("a", "1"))]))]), true },
        { "two nested txns putting one key", Txn([], [Op(Txn([], [Op(Put("a", "1"))])), Op(Txn([], [Op(Put("a", "2"))]))]), true },
        { "put and read of one key", Txn([], [Op(Put("a", "1")), Op(Get("a"))]), false },
    };

    [Theory]
    [MemberData(nameof(DuplicateCases))]
    public void Txn_refuses_keys_written_twice(string name, TxnRequest txn, bool refused)
    {
        var e = Record.Exception(() => KvApplier.ValidateTxn(txn));
        if (!refused)
        {
            Assert.True(e is null, $"{name}: unexpected {e?.Message}");
            return;
        }
        var etcd = Assert.IsType<EtcdException>(e);
        Assert.Equal(StatusCode.InvalidArgument, etcd.Code);
        Assert.Equal("etcdserver: duplicate key given in txn request", etcd.Message);
        // The same check guards the applier: a refused txn changes nothing.
        var kv = new MemoryKv();
        EtcdAssert.Error(StatusCode.InvalidArgument, "etcdserver: duplicate key given in txn request", kv.Fails(Command(txn)));
    }

    [Fact]
    public void Txn_op_count_and_empty_ops_are_checked()
    {
        var puts = Enumerable.Range(0, 129).Select(i => Op(Put("k" + i, "v"))).ToList();
        EtcdAssert.Error(StatusCode.InvalidArgument, "etcdserver: too many operations in txn request",
            () => KvApplier.ValidateTxn(Txn([], puts)));
        KvApplier.ValidateTxn(Txn([], puts.Take(128)));
        EtcdAssert.Error(StatusCode.InvalidArgument, "etcdserver: key not found",
            () => KvApplier.ValidateTxn(Txn([], [new RequestOp()])));
    }

    [Fact]
    public void A_failing_op_fails_the_whole_txn_without_changes()
    {
        var kv = new MemoryKv();
        kv.Put("a", "1");
        var error = kv.Fails(Command(Txn([], [Op(Put("b", "1")), Op(new PutRequest { Key = B("missing"), IgnoreValue = true })])));
        EtcdAssert.Error(StatusCode.InvalidArgument, "etcdserver: key not found", error);
        Assert.Null(kv.Get("b"));
        Assert.Equal(2, kv.State.Revision);
    }

    [Fact]
    public void Compaction_and_read_revisions_follow_etcd()
    {
        var kv = new MemoryKv();
        kv.Put("a", "1"); // 2
        kv.Put("a", "2"); // 3
        kv.Put("a", "3"); // 4

        EtcdAssert.Error(StatusCode.OutOfRange, "etcdserver: mvcc: required revision is a future revision",
            kv.Fails(Command(new CompactionRequest { Revision = 5 })));
        var ok = kv.Apply(Command(new CompactionRequest { Revision = 3 }));
        Assert.Equal(4, ok.Compact.Header.Revision);
        Assert.Equal(3, kv.State.CompactRevision);
        Assert.Equal(4, kv.State.Revision);
        EtcdAssert.Error(StatusCode.OutOfRange, "etcdserver: mvcc: required revision has been compacted",
            kv.Fails(Command(new CompactionRequest { Revision = 3 })));

        EtcdAssert.Error(StatusCode.OutOfRange, "etcdserver: mvcc: required revision has been compacted",
            () => kv.Range(new RangeRequest(Get("a")) { Revision = 2 }));
        EtcdAssert.Error(StatusCode.OutOfRange, "etcdserver: mvcc: required revision is a future revision",
            () => kv.Range(new RangeRequest(Get("a")) { Revision = 9 }));
        Assert.Equal("3", S(kv.Range(new RangeRequest(Get("a")) { Revision = 4 }).Kvs[0].Value));
    }

    [Fact]
    public void Writes_touch_only_the_ranges_they_name()
    {
        var command = Command(Txn([Cmp("c", CT.Version, CR.Equal, 0, "d")], [Op(Put("a", "1"))], [Op(Txn([], [Op(Del("x", "y"))]))]));
        var ranges = KvApplier.KeysTouched(command).Select(r => (S(ByteString.CopyFrom(r.Start)), r.End is null ? null : S(ByteString.CopyFrom(r.End)))).ToList();
        Assert.Equal(new List<(string, string?)> { ("c", "d"), ("a", null), ("x", "y") }, ranges);
    }

    [Fact]
    public void Compaction_policy_snapshots_every_n_and_keeps_m_entries()
    {
        var policy = new LogCompactionPolicy(SnapshotEvery: 100, KeepEntries: 30);
        Assert.True(policy.Decide(99, 0).IsNone);
        Assert.Equal(new LogCompactionDecision(100, 70), policy.Decide(100, 0));
        Assert.True(policy.Decide(199, 100).IsNone);
        Assert.Equal(new LogCompactionDecision(250, 220), policy.Decide(250, 100));
        Assert.Equal(new LogCompactionDecision(20, 0), new LogCompactionPolicy(10, 30).Decide(20, 0));
        Assert.Throws<ArgumentException>(() => new LogCompactionPolicy(0, 1).Validate());
    }
}
