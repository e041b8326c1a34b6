using Google.Protobuf;
using Raft.Kv.Etcd.Mvccpb;
using Raft.Kv.Etcd.Serverpb;
using Raft.Kv.Protocol;

namespace Raft.Kv.State;

/// <summary>The outcome of applying one command: what to write, and what to answer.</summary>
public sealed record KvApplyResult(KvChanges Changes, KvResult Result);

/// <summary>
/// etcd's key-value semantics as pure functions of (state view, request): the revision model,
/// Range with its range_end conventions, limit, sort and filters, Put, DeleteRange, Txn with
/// compares and nested transactions, Compact, and etcd's request checks and errors. Nothing here
/// touches a database or a clock, so every replica given the same view and command decides the same.
/// </summary>
public static class KvApplier
{
    /// <summary>etcd's default --max-txn-ops.</summary>
    public const int DefaultMaxTxnOps = 128;

    // ---- Request checks: those etcd's gRPC layer makes before a request reaches raft. ----

    public static void ValidateRange(RangeRequest r)
    {
        if (r.Key.IsEmpty) throw EtcdErrors.EmptyKey();
        if (!Enum.IsDefined(r.SortOrder) || !Enum.IsDefined(r.SortTarget)) throw EtcdErrors.InvalidSortOption();
    }

    public static void ValidatePut(PutRequest r)
    {
        if (r.Key.IsEmpty) throw EtcdErrors.EmptyKey();
        if (r.IgnoreValue && !r.Value.IsEmpty) throw EtcdErrors.ValueProvided();
        if (r.IgnoreLease && r.Lease != 0) throw EtcdErrors.LeaseProvided();
    }

    public static void ValidateDeleteRange(DeleteRangeRequest r)
    {
        if (r.Key.IsEmpty) throw EtcdErrors.EmptyKey();
    }

    /// <summary>Operation count, empty keys and empty ops (recursively), then etcd's check that no key is written twice.</summary>
    public static void ValidateTxn(TxnRequest r, int maxTxnOps = DefaultMaxTxnOps)
    {
        CheckTxnShape(r, maxTxnOps);
        CheckIntervals(r.Success);
        CheckIntervals(r.Failure);
    }

    private static void CheckTxnShape(TxnRequest r, int maxTxnOps)
    {
        var ops = Math.Max(r.Compare.Count, Math.Max(r.Success.Count, r.Failure.Count));
        if (ops > maxTxnOps) throw EtcdErrors.TooManyOps();
        foreach (var c in r.Compare)
        {
            if (c.Key.IsEmpty) throw EtcdErrors.EmptyKey();
            // Refused before raft, so a compare no replica can evaluate never reaches the log.
            if (!Enum.IsDefined(c.Target)) throw EtcdErrors.InvalidCompare($"unknown target {(int)c.Target}");
            if (!Enum.IsDefined(c.Result)) throw EtcdErrors.InvalidCompare($"unknown result {(int)c.Result}");
        }
        // As etcd: a nested transaction's budget is what this level leaves.
        foreach (var op in r.Success.Concat(r.Failure)) CheckRequestOp(op, maxTxnOps - ops);
    }

    private static void CheckRequestOp(RequestOp op, int maxTxnOps)
    {
        switch (op.RequestCase)
        {
            case RequestOp.RequestOneofCase.RequestRange: ValidateRange(op.RequestRange); break;
            case RequestOp.RequestOneofCase.RequestPut: ValidatePut(op.RequestPut); break;
            case RequestOp.RequestOneofCase.RequestDeleteRange: ValidateDeleteRange(op.RequestDeleteRange); break;
            case RequestOp.RequestOneofCase.RequestTxn: CheckTxnShape(op.RequestTxn, maxTxnOps); break;
            // etcd answers an empty op with "key not found".
            default: throw EtcdErrors.KeyNotFound();
        }
    }

    /// <summary>
    /// etcd's checkIntervals: within one branch list, a key may be put once and not both put and
    /// deleted; a nested transaction's two branches may put the same key, being exclusive. The order of
    /// the checks (this level's deletes, then each nested transaction, then this level's puts) and the
    /// literal treatment of a "\0" delete end are etcd's, kept so the same requests are refused.
    /// </summary>
    private static (HashSet<byte[]> Puts, List<(byte[] Start, byte[]? End)> Deletes) CheckIntervals(IEnumerable<RequestOp> reqs)
    {
        var list = reqs as IList<RequestOp> ?? reqs.ToList();
        var dels = new List<(byte[] Start, byte[]? End)>();
        foreach (var op in list)
        {
            if (op.RequestCase != RequestOp.RequestOneofCase.RequestDeleteRange) continue;
            var d = op.RequestDeleteRange;
            dels.Add((d.Key.ToByteArray(), d.RangeEnd.IsEmpty ? null : d.RangeEnd.ToByteArray()));
        }

        var puts = new HashSet<byte[]>(KeyComparer.Instance);
        foreach (var op in list)
        {
            if (op.RequestCase != RequestOp.RequestOneofCase.RequestTxn) continue;
            var (putsThen, delsThen) = CheckIntervals(op.RequestTxn.Success);
            var (putsElse, delsElse) = CheckIntervals(op.RequestTxn.Failure);
            foreach (var k in putsThen)
            {
                if (puts.Contains(k) || Intersects(dels, k)) throw EtcdErrors.DuplicateKey();
                puts.Add(k);
            }
            foreach (var k in putsElse)
            {
                if (puts.Contains(k) && !putsThen.Contains(k)) throw EtcdErrors.DuplicateKey();
                if (Intersects(dels, k)) throw EtcdErrors.DuplicateKey();
                puts.Add(k);
            }
            dels.AddRange(delsThen);
            dels.AddRange(delsElse);
        }

        foreach (var op in list)
        {
            if (op.RequestCase != RequestOp.RequestOneofCase.RequestPut) continue;
            var k = op.RequestPut.Key.ToByteArray();
            if (puts.Contains(k) || Intersects(dels, k)) throw EtcdErrors.DuplicateKey();
            puts.Add(k);
        }
        return (puts, dels);
    }

    private static bool Intersects(List<(byte[] Start, byte[]? End)> dels, byte[] key)
    {
        foreach (var (start, end) in dels)
        {
            if (end is null)
            {
                if (KeyComparer.Instance.Equals(start, key)) return true;
            }
            else if (KeyComparer.Instance.Compare(start, key) <= 0 && KeyComparer.Instance.Compare(key, end) < 0)
            {
                return true;
            }
        }
        return false;
    }

    // ---- Reads ----

    /// <summary>A Range served from <paramref name="view"/> (top level, or inside a transaction).</summary>
    public static RangeResponse Range(IKvView view, RangeRequest r)
    {
        ValidateRange(r);
        var source = ReadView(view, r.Revision);
        var range = KeyRange.FromEtcd(r.Key, r.RangeEnd);
        var all = range.IsEmpty ? [] : source.Scan(range).ToList();
        var response = new RangeResponse { Header = new ResponseHeader { Revision = view.Revision }, Count = all.Count };
        if (r.CountOnly) return response;

        IEnumerable<KeyValue> kvs = all;
        if (r.MinModRevision > 0) kvs = kvs.Where(kv => kv.ModRevision >= r.MinModRevision);
        if (r.MaxModRevision > 0) kvs = kvs.Where(kv => kv.ModRevision <= r.MaxModRevision);
        if (r.MinCreateRevision > 0) kvs = kvs.Where(kv => kv.CreateRevision >= r.MinCreateRevision);
        if (r.MaxCreateRevision > 0) kvs = kvs.Where(kv => kv.CreateRevision <= r.MaxCreateRevision);

        // etcd: a sort target other than KEY sorts ascending unless told otherwise; KEY ascending is the scan order.
        var order = r.SortOrder;
        if (order == RangeRequest.Types.SortOrder.None && r.SortTarget != RangeRequest.Types.SortTarget.Key)
            order = RangeRequest.Types.SortOrder.Ascend;
        if (order != RangeRequest.Types.SortOrder.None)
        {
            // Stable sorts over key order: ties stay in ascending key order.
            kvs = (r.SortTarget, order) switch
            {
                (RangeRequest.Types.SortTarget.Key, RangeRequest.Types.SortOrder.Ascend) => kvs,
                (RangeRequest.Types.SortTarget.Key, _) => kvs.Reverse(),
                (RangeRequest.Types.SortTarget.Version, RangeRequest.Types.SortOrder.Ascend) => kvs.OrderBy(kv => kv.Version),
                (RangeRequest.Types.SortTarget.Version, _) => kvs.OrderByDescending(kv => kv.Version),
                (RangeRequest.Types.SortTarget.Create, RangeRequest.Types.SortOrder.Ascend) => kvs.OrderBy(kv => kv.CreateRevision),
                (RangeRequest.Types.SortTarget.Create, _) => kvs.OrderByDescending(kv => kv.CreateRevision),
                (RangeRequest.Types.SortTarget.Mod, RangeRequest.Types.SortOrder.Ascend) => kvs.OrderBy(kv => kv.ModRevision),
                (RangeRequest.Types.SortTarget.Mod, _) => kvs.OrderByDescending(kv => kv.ModRevision),
                (RangeRequest.Types.SortTarget.Value, RangeRequest.Types.SortOrder.Ascend) => kvs.OrderBy(kv => kv.Value.ToByteArray(), KeyComparer.Instance),
                (RangeRequest.Types.SortTarget.Value, _) => kvs.OrderByDescending(kv => kv.Value.ToByteArray(), KeyComparer.Instance),
                _ => throw new EtcdException(Transport.Grpc.Wire.StatusCode.InvalidArgument, $"raftv: unknown sort target {r.SortTarget}"),
            };
        }

        var list = kvs.ToList();
        if (r.Limit > 0 && list.Count > r.Limit)
        {
            list.RemoveRange((int)r.Limit, list.Count - (int)r.Limit);
            response.More = true;
        }
        foreach (var kv in list)
        {
            if (r.KeysOnly)
            {
                var copy = kv.Clone();
                copy.Value = ByteString.Empty;
                response.Kvs.Add(copy);
            }
            else
            {
                response.Kvs.Add(kv.Clone());
            }
        }
        return response;
    }

    /// <summary>
    /// The view a read at <paramref name="revision"/> sees (0: the current one), with etcd's errors: a
    /// revision after the current one is in the future; one before the compaction point was
    /// compacted (the compaction point itself is still readable).
    /// </summary>
    private static IKvView ReadView(IKvView view, long revision)
    {
        if (revision <= 0 || revision == view.Revision) return view;
        if (revision > view.Revision) throw EtcdErrors.FutureRevision();
        if (revision < view.CompactRevision) throw EtcdErrors.Compacted();
        return view.AtRevision(revision) ?? throw EtcdErrors.HistoryNotKept(revision, view.Revision);
    }

    /// <summary>Whether a read at <paramref name="revision"/> of <paramref name="view"/> can be served (as <see cref="ReadView"/> decides).</summary>
    public static void CheckReadRevision(IKvView view, long revision) => ReadView(view, revision);

    // ---- Writes ----

    /// <summary>
    /// Applies one command to <paramref name="view"/>. etcd errors decided here (a missing key for
    /// ignore_value, an unknown lease, a compacted revision...) become an error result with no changes:
    /// the entry is still applied, as in etcd, so every replica answers the same.
    /// </summary>
    public static KvApplyResult Apply(IKvView view, KvCommand command, int maxTxnOps = DefaultMaxTxnOps)
    {
        var exec = new Execution(view);
        try
        {
            var result = command.RequestCase switch
            {
                KvCommand.RequestOneofCase.Put => new KvResult { Put = ApplyPut(exec, command.Put) },
                KvCommand.RequestOneofCase.DeleteRange => new KvResult { DeleteRange = ApplyDelete(exec, command.DeleteRange) },
                KvCommand.RequestOneofCase.Txn => new KvResult { Txn = ApplyTxn(exec, command.Txn, maxTxnOps) },
                KvCommand.RequestOneofCase.Compact => new KvResult { Compact = ApplyCompact(exec, command.Compact) },
                _ => throw new EtcdException(Transport.Grpc.Wire.StatusCode.InvalidArgument, "raftv: empty key-value command"),
            };
            exec.Changes.Revision = exec.Revision;
            return new KvApplyResult(exec.Changes, result);
        }
        catch (EtcdException e)
        {
            return new KvApplyResult(new KvChanges(view.Revision, view.CompactRevision),
                new KvResult { Error = new KvError { Code = (int)e.Code, Message = e.Message } });
        }
    }

    private static PutResponse ApplyPut(Execution exec, PutRequest r)
    {
        ValidatePut(r);
        CheckPut(exec.Current, r);
        return exec.Put(r);
    }

    private static DeleteRangeResponse ApplyDelete(Execution exec, DeleteRangeRequest r)
    {
        ValidateDeleteRange(r);
        return exec.Delete(r);
    }

    private static CompactionResponse ApplyCompact(Execution exec, CompactionRequest r)
    {
        if (r.Revision > exec.Base.Revision) throw EtcdErrors.FutureRevision();
        if (r.Revision <= exec.Base.CompactRevision) throw EtcdErrors.Compacted();
        exec.Changes.CompactRevision = r.Revision;
        return new CompactionResponse { Header = new ResponseHeader { Revision = exec.Base.Revision } };
    }

    private static TxnResponse ApplyTxn(Execution exec, TxnRequest r, int maxTxnOps)
    {
        ValidateTxn(r, maxTxnOps);
        // As etcd: every branch decision, nested ones included, is taken against the state before the
        // transaction, and the chosen operations are checked before any of them runs.
        var path = new List<bool>();
        ChoosePath(exec.Base, r, path);
        var cursor = 0;
        CheckPath(exec.Base, r, path, ref cursor);
        cursor = 0;
        var response = ExecuteTxn(exec, r, path, ref cursor);
        FixWriteHeaders(response, exec.Revision);
        return response;
    }

    private static void ChoosePath(IKvView view, TxnRequest r, List<bool> path)
    {
        var succeeded = r.Compare.All(c => CompareHolds(view, c));
        path.Add(succeeded);
        foreach (var op in succeeded ? r.Success : r.Failure)
            if (op.RequestCase == RequestOp.RequestOneofCase.RequestTxn) ChoosePath(view, op.RequestTxn, path);
    }

    private static void CheckPath(IKvView view, TxnRequest r, List<bool> path, ref int cursor)
    {
        var succeeded = path[cursor++];
        foreach (var op in succeeded ? r.Success : r.Failure)
        {
            switch (op.RequestCase)
            {
                case RequestOp.RequestOneofCase.RequestRange:
                    CheckReadRevision(view, op.RequestRange.Revision);
                    break;
                case RequestOp.RequestOneofCase.RequestPut:
                    CheckPut(view, op.RequestPut);
                    break;
                case RequestOp.RequestOneofCase.RequestTxn:
                    CheckPath(view, op.RequestTxn, path, ref cursor);
                    break;
            }
        }
    }

    private static void CheckPut(IKvView view, PutRequest r)
    {
        if ((r.IgnoreValue || r.IgnoreLease) && view.Get(r.Key.ToByteArray()) is null) throw EtcdErrors.KeyNotFound();
        // raftv grants no leases, so every lease id is unknown.
        if (r.Lease != 0) throw EtcdErrors.LeaseNotFound();
    }

    private static TxnResponse ExecuteTxn(Execution exec, TxnRequest r, List<bool> path, ref int cursor)
    {
        var succeeded = path[cursor++];
        var response = new TxnResponse { Succeeded = succeeded };
        foreach (var op in succeeded ? r.Success : r.Failure)
        {
            response.Responses.Add(op.RequestCase switch
            {
                RequestOp.RequestOneofCase.RequestRange => new ResponseOp { ResponseRange = Range(exec.Current, op.RequestRange) },
                RequestOp.RequestOneofCase.RequestPut => new ResponseOp { ResponsePut = exec.Put(op.RequestPut) },
                RequestOp.RequestOneofCase.RequestDeleteRange => new ResponseOp { ResponseDeleteRange = exec.Delete(op.RequestDeleteRange) },
                RequestOp.RequestOneofCase.RequestTxn => new ResponseOp { ResponseTxn = ExecuteTxn(exec, op.RequestTxn, path, ref cursor) },
                _ => throw EtcdErrors.KeyNotFound(),
            });
        }
        return response;
    }

    /// <summary>Write responses and the transaction itself carry the revision the transaction ends at.</summary>
    private static void FixWriteHeaders(TxnResponse txn, long revision)
    {
        txn.Header = new ResponseHeader { Revision = revision };
        foreach (var op in txn.Responses)
        {
            switch (op.ResponseCase)
            {
                case ResponseOp.ResponseOneofCase.ResponsePut: op.ResponsePut.Header.Revision = revision; break;
                case ResponseOp.ResponseOneofCase.ResponseDeleteRange: op.ResponseDeleteRange.Header.Revision = revision; break;
                case ResponseOp.ResponseOneofCase.ResponseTxn: FixWriteHeaders(op.ResponseTxn, revision); break;
            }
        }
    }

    /// <summary>
    /// etcd's compare: every key of the range must satisfy it; a missing key (or an empty range)
    /// compares as a record of zeros, except that a VALUE compare on no key is false.
    /// </summary>
    public static bool CompareHolds(IKvView view, Compare c)
    {
        var range = KeyRange.FromEtcd(c.Key, c.RangeEnd);
        var kvs = range.IsEmpty ? [] : view.Scan(range).ToList();
        if (kvs.Count == 0)
            return c.Target != Compare.Types.CompareTarget.Value && CompareOne(c, new KeyValue());
        return kvs.All(kv => CompareOne(c, kv));
    }

    private static bool CompareOne(Compare c, KeyValue kv)
    {
        var order = c.Target switch
        {
            Compare.Types.CompareTarget.Version => kv.Version.CompareTo(c.Version),
            Compare.Types.CompareTarget.Create => kv.CreateRevision.CompareTo(c.CreateRevision),
            Compare.Types.CompareTarget.Mod => kv.ModRevision.CompareTo(c.ModRevision),
            Compare.Types.CompareTarget.Value => kv.Value.Span.SequenceCompareTo(c.Value.Span),
            Compare.Types.CompareTarget.Lease => kv.Lease.CompareTo(c.Lease),
            _ => throw new EtcdException(Transport.Grpc.Wire.StatusCode.InvalidArgument, $"raftv: unknown compare target {c.Target}"),
        };
        return c.Result switch
        {
            Compare.Types.CompareResult.Equal => order == 0,
            Compare.Types.CompareResult.NotEqual => order != 0,
            Compare.Types.CompareResult.Greater => order > 0,
            Compare.Types.CompareResult.Less => order < 0,
            _ => throw new EtcdException(Transport.Grpc.Wire.StatusCode.InvalidArgument, $"raftv: unknown compare result {c.Result}"),
        };
    }

    // ---- What a command touches ----

    /// <summary>
    /// Every key range the command can read or write, whatever branches its transactions take:
    /// a store loads these (and only these) into a working copy before applying the command.
    /// </summary>
    public static IReadOnlyList<KeyRange> KeysTouched(KvCommand command)
    {
        var ranges = new List<KeyRange>();
        switch (command.RequestCase)
        {
            case KvCommand.RequestOneofCase.Put: ranges.Add(new KeyRange(command.Put.Key.ToByteArray(), null)); break;
            case KvCommand.RequestOneofCase.DeleteRange: ranges.Add(KeyRange.FromEtcd(command.DeleteRange.Key, command.DeleteRange.RangeEnd)); break;
            case KvCommand.RequestOneofCase.Txn: AddTxnRanges(command.Txn, ranges); break;
        }
        return ranges;
    }

    private static void AddTxnRanges(TxnRequest r, List<KeyRange> ranges)
    {
        foreach (var c in r.Compare) ranges.Add(KeyRange.FromEtcd(c.Key, c.RangeEnd));
        foreach (var op in r.Success.Concat(r.Failure))
        {
            switch (op.RequestCase)
            {
                case RequestOp.RequestOneofCase.RequestRange: ranges.Add(KeyRange.FromEtcd(op.RequestRange.Key, op.RequestRange.RangeEnd)); break;
                case RequestOp.RequestOneofCase.RequestPut: ranges.Add(new KeyRange(op.RequestPut.Key.ToByteArray(), null)); break;
                case RequestOp.RequestOneofCase.RequestDeleteRange: ranges.Add(KeyRange.FromEtcd(op.RequestDeleteRange.Key, op.RequestDeleteRange.RangeEnd)); break;
                case RequestOp.RequestOneofCase.RequestTxn: AddTxnRanges(op.RequestTxn, ranges); break;
            }
        }
    }

    /// <summary>
    /// The ranges the command's transactions read at a past revision (range operations with a
    /// revision): a store loads the keys' versions as of those revisions too.
    /// </summary>
    public static IReadOnlyList<(KeyRange Range, long Revision)> PastReads(KvCommand command)
    {
        var reads = new List<(KeyRange, long)>();
        if (command.RequestCase == KvCommand.RequestOneofCase.Txn) AddPastReads(command.Txn, reads);
        return reads;
    }

    private static void AddPastReads(TxnRequest r, List<(KeyRange, long)> reads)
    {
        foreach (var op in r.Success.Concat(r.Failure))
        {
            if (op.RequestCase == RequestOp.RequestOneofCase.RequestRange && op.RequestRange.Revision > 0)
                reads.Add((KeyRange.FromEtcd(op.RequestRange.Key, op.RequestRange.RangeEnd), op.RequestRange.Revision));
            else if (op.RequestCase == RequestOp.RequestOneofCase.RequestTxn)
                AddPastReads(op.RequestTxn, reads);
        }
    }

    /// <summary>One command's writes over the base view; reads through it see the writes so far.</summary>
    private sealed class Execution(IKvView view)
    {
        public IKvView Base { get; } = view;
        public KvChanges Changes { get; } = new(view.Revision, view.CompactRevision);
        public IKvView Current => _current ??= new WorkingView(this);
        private WorkingView? _current;

        /// <summary>All writes of one command share one revision, one past the base's.</summary>
        public long WriteRevision => Base.Revision + 1;
        public long Revision => Changes.IsEmpty ? Base.Revision : WriteRevision;

        public PutResponse Put(PutRequest r)
        {
            var key = r.Key.ToByteArray();
            var previous = Current.Get(key);
            var kv = new KeyValue
            {
                Key = r.Key,
                Value = r.IgnoreValue && previous is not null ? previous.Value : r.Value,
                CreateRevision = previous?.CreateRevision ?? WriteRevision,
                ModRevision = WriteRevision,
                Version = (previous?.Version ?? 0) + 1,
                Lease = 0,
            };
            Changes.Put(kv);
            var response = new PutResponse { Header = new ResponseHeader { Revision = WriteRevision } };
            if (r.PrevKv && previous is not null) response.PrevKv = previous.Clone();
            return response;
        }

        public DeleteRangeResponse Delete(DeleteRangeRequest r)
        {
            var range = KeyRange.FromEtcd(r.Key, r.RangeEnd);
            var victims = range.IsEmpty ? [] : Current.Scan(range).ToList();
            foreach (var kv in victims) Changes.Delete(kv.Key.ToByteArray());
            var response = new DeleteRangeResponse { Header = new ResponseHeader { Revision = Revision }, Deleted = victims.Count };
            if (r.PrevKv) response.PrevKvs.AddRange(victims.Select(kv => kv.Clone()));
            return response;
        }
    }

    private sealed class WorkingView(Execution exec) : IKvView
    {
        public long Revision => exec.Revision;
        public long CompactRevision => exec.Base.CompactRevision;

        // Past revisions are before this command's writes: the base's history answers them.
        public IKvView? AtRevision(long revision) => revision == Revision ? this : exec.Base.AtRevision(revision);

        public IEnumerable<KeyValue> Scan(KeyRange range)
        {
            if (range.IsSingleKey)
            {
                if (exec.Changes.TryGetWrite(range.Start, out var written))
                {
                    if (written is not null) yield return written;
                    yield break;
                }
                foreach (var kv in exec.Base.Scan(range)) yield return kv;
                yield break;
            }
            var merged = new SortedDictionary<byte[], KeyValue>(KeyComparer.Instance);
            foreach (var kv in exec.Base.Scan(range)) merged[kv.Key.ToByteArray()] = kv;
            foreach (var (key, kv) in exec.Changes.Writes)
            {
                if (!range.Contains(key)) continue;
                if (kv is null) merged.Remove(key);
                else merged[key] = kv;
            }
            foreach (var kv in merged.Values) yield return kv;
        }
    }
}
