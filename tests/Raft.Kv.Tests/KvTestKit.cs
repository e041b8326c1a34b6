using Google.Protobuf;
using Raft.Kv.Etcd.Mvccpb;
using Raft.Kv.Etcd.Serverpb;
using Raft.Kv.Protocol;
using Raft.Kv.State;
using Raft.Transport.Grpc.Wire;

namespace Raft.Kv.Tests;

/// <summary>Builders for etcd requests and a state machine in memory driven through the pure applier.</summary>
internal static class Kv
{
    public static ByteString B(string s) => ByteString.CopyFromUtf8(s);
    public static ByteString Bytes(params byte[] b) => ByteString.CopyFrom(b);
    public static string S(ByteString b) => b.ToStringUtf8();

    public static PutRequest Put(string key, string value, bool prevKv = false) => new() { Key = B(key), Value = B(value), PrevKv = prevKv };
    public static DeleteRangeRequest Del(string key, string? end = null, bool prevKv = false) =>
        new() { Key = B(key), RangeEnd = end is null ? ByteString.Empty : B(end), PrevKv = prevKv };
    public static RangeRequest Get(string key, string? end = null) => new() { Key = B(key), RangeEnd = end is null ? ByteString.Empty : B(end) };

    public static RequestOp Op(PutRequest p) => new() { RequestPut = p };
    public static RequestOp Op(DeleteRangeRequest d) => new() { RequestDeleteRange = d };
    public static RequestOp Op(RangeRequest r) => new() { RequestRange = r };
    public static RequestOp Op(TxnRequest t) => new() { RequestTxn = t };

    public static Compare Cmp(string key, Compare.Types.CompareTarget target, Compare.Types.CompareResult result, object operand, string? rangeEnd = null)
    {
        var c = new Compare { Key = B(key), Target = target, Result = result, RangeEnd = rangeEnd is null ? ByteString.Empty : B(rangeEnd) };
        switch (target)
        {
            case Compare.Types.CompareTarget.Value: c.Value = B((string)operand); break;
            case Compare.Types.CompareTarget.Version: c.Version = Convert.ToInt64(operand); break;
            case Compare.Types.CompareTarget.Create: c.CreateRevision = Convert.ToInt64(operand); break;
            case Compare.Types.CompareTarget.Mod: c.ModRevision = Convert.ToInt64(operand); break;
            case Compare.Types.CompareTarget.Lease: c.Lease = Convert.ToInt64(operand); break;
        }
        return c;
    }

    public static TxnRequest Txn(IEnumerable<Compare> compare, IEnumerable<RequestOp> success, IEnumerable<RequestOp>? failure = null)
    {
        var t = new TxnRequest();
        t.Compare.AddRange(compare);
        t.Success.AddRange(success);
        if (failure is not null) t.Failure.AddRange(failure);
        return t;
    }

    public static KvCommand Command(PutRequest p, string? id = null, long at = 0) => new() { Put = p, RequestId = Id(id), ProposedAtUnixMs = at };
    public static KvCommand Command(DeleteRangeRequest d, string? id = null, long at = 0) => new() { DeleteRange = d, RequestId = Id(id), ProposedAtUnixMs = at };
    public static KvCommand Command(TxnRequest t, string? id = null, long at = 0) => new() { Txn = t, RequestId = Id(id), ProposedAtUnixMs = at };
    public static KvCommand Command(CompactionRequest c) => new() { Compact = c };
    private static ByteString Id(string? id) => id is null ? ByteString.Empty : B(id);

    public static string Keys(RangeResponse r) => string.Join(",", r.Kvs.Select(kv => Printable(kv.Key)));

    public static string Printable(ByteString b) =>
        string.Concat(b.Select(x => x is >= 0x20 and < 0x7f ? ((char)x).ToString() : $"\\x{x:x2}"));
}

/// <summary>A state machine in memory: the pure applier over <see cref="MemoryKvState"/>.</summary>
internal sealed class MemoryKv
{
    public MemoryKvState State { get; } = new();

    public KvResult Apply(KvCommand command)
    {
        var (changes, result) = KvApplier.Apply(State, command);
        State.Apply(changes);
        return result;
    }

    public PutResponse Put(PutRequest p) => Ok(Apply(Kv.Command(p))).Put;
    public PutResponse Put(string key, string value) => Put(Kv.Put(key, value));
    public DeleteRangeResponse Delete(DeleteRangeRequest d) => Ok(Apply(Kv.Command(d))).DeleteRange;
    public TxnResponse Txn(TxnRequest t) => Ok(Apply(Kv.Command(t))).Txn;
    public RangeResponse Range(RangeRequest r) => KvApplier.Range(State, r);
    public KeyValue? Get(string key) => Range(Kv.Get(key)).Kvs.SingleOrDefault();

    /// <summary>The error of a command that fails at apply time; asserts nothing changed.</summary>
    public KvError Fails(KvCommand command)
    {
        var before = State.Revision;
        var (changes, result) = KvApplier.Apply(State, command);
        Assert.True(result.ResultCase == KvResult.ResultOneofCase.Error, $"expected an error, got {result}");
        Assert.True(changes.IsEmpty);
        Assert.Equal(before, changes.Revision);
        return result.Error;
    }

    private static KvResult Ok(KvResult r)
    {
        Assert.True(r.ResultCase != KvResult.ResultOneofCase.Error, $"unexpected error {r.Error}");
        return r;
    }
}

internal static class EtcdAssert
{
    public static void Error(StatusCode code, string message, Action action)
    {
        var e = Assert.Throws<EtcdException>(action);
        Assert.Equal(code, e.Code);
        Assert.Equal(message, e.Message);
    }

    public static void Error(StatusCode code, string message, KvError error)
    {
        Assert.Equal((int)code, error.Code);
        Assert.Equal(message, error.Message);
    }
}
