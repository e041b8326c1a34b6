using System.Globalization;
using System.Text;
using Google.Protobuf;
using Raft.Kv.Etcd.Mvccpb;
using Raft.Kv.Etcd.Serverpb;
using Raft.Transport.Grpc.Wire;

namespace Raft.Kv.Cli;

/// <summary>
/// The client commands (put, get, del, txn, compact, status, member, move-leader): etcd's v3 API
/// spoken to any endpoint, raftv's or etcd's, with etcdctl's flags and output formats.
/// </summary>
internal static class ClientCommands
{
    public const string GlobalUsage =
        "global flags: [--endpoints HOST:PORT,...] (default 127.0.0.1:2379; http:// or https:// may be given) [-w|--write-out simple|json|table]\n"
        + "  [--cacert CA.pem] [--cert CERT.pem --key KEY.pem] [--command-timeout 5s] [--dial-timeout 2s]";

    /// <summary>Global flags that take a value; they may also come before the command (raftv --endpoints=... get k).</summary>
    public static readonly string[] GlobalOptions = ["--endpoints", "--cacert", "--cert", "--key", "-w", "--write-out", "--command-timeout", "--dial-timeout"];

    public const string PutUsage = "raftv put KEY [VALUE] [--prev-kv] [--ignore-value]   (VALUE from stdin when not given)\n  " + GlobalUsage;
    public const string GetUsage = "raftv get KEY [RANGE_END] [--prefix] [--from-key] [--limit N] [--keys-only] [--count-only] [--print-value-only]\n"
        + "            [--consistency l|s] [--rev N] [--sort-by KEY|VERSION|CREATE|MODIFY|VALUE] [--order ASCEND|DESCEND]\n  " + GlobalUsage;
    public const string DelUsage = "raftv del KEY [RANGE_END] [--prefix] [--from-key] [--prev-kv]\n  " + GlobalUsage;
    public const string TxnUsage = "raftv txn [--compare 'CMP']... [--success 'OP']... [--failure 'OP']...\n"
        + "  Without flags the transaction is read from stdin as etcdctl txn reads it: compares, a blank line, the operations on\n"
        + "  success, a blank line, the operations on failure. CMP: value(\"k\") = \"v\" | version(\"k\") > \"0\" | create(\"k\") < \"5\" |\n"
        + "  mod(\"k\") != \"3\" | lease(\"k\") = \"0\"; OP: put K V | get K [END] [--prefix] | del K [END] [--prefix]\n  " + GlobalUsage;
    public const string CompactUsage = "raftv compact REVISION [--physical]\n  " + GlobalUsage;
    public const string StatusUsage = "raftv status [--cluster]   (also: raftv endpoint status) one row per endpoint, as 'etcdctl endpoint status -w table';\n"
        + "  --cluster: every member's client URL, from the member list\n  " + GlobalUsage;
    public const string MemberUsage = "raftv member list\n  raftv member add NAME --peer-urls URL[,URL] [--learner]\n  raftv member remove ID\n"
        + "  raftv member promote ID\n  raftv member update ID --peer-urls URL[,URL]\n  IDs in hexadecimal, as member list prints them\n  " + GlobalUsage;
    public const string MoveLeaderUsage = "raftv move-leader ID   (asks the current leader, found among --endpoints)\n  " + GlobalUsage;

    private static GrpcMethod<TReq, TResp> M<TReq, TResp>(string service, string name, MessageParser<TReq> req, MessageParser<TResp> resp)
        where TReq : IMessage<TReq> where TResp : IMessage<TResp> =>
        GrpcMethod.Protobuf(GrpcMethodType.Unary, "etcdserverpb." + service, name, req, resp);

    private static readonly GrpcMethod<RangeRequest, RangeResponse> RangeCall = M("KV", "Range", RangeRequest.Parser, RangeResponse.Parser);
    private static readonly GrpcMethod<PutRequest, PutResponse> PutCall = M("KV", "Put", PutRequest.Parser, PutResponse.Parser);
    private static readonly GrpcMethod<DeleteRangeRequest, DeleteRangeResponse> DeleteCall = M("KV", "DeleteRange", DeleteRangeRequest.Parser, DeleteRangeResponse.Parser);
    private static readonly GrpcMethod<TxnRequest, TxnResponse> TxnCall = M("KV", "Txn", TxnRequest.Parser, TxnResponse.Parser);
    private static readonly GrpcMethod<CompactionRequest, CompactionResponse> CompactCall = M("KV", "Compact", CompactionRequest.Parser, CompactionResponse.Parser);
    private static readonly GrpcMethod<StatusRequest, StatusResponse> StatusCall = M("Maintenance", "Status", StatusRequest.Parser, StatusResponse.Parser);
    private static readonly GrpcMethod<MoveLeaderRequest, MoveLeaderResponse> MoveLeaderCall = M("Maintenance", "MoveLeader", MoveLeaderRequest.Parser, MoveLeaderResponse.Parser);
    private static readonly GrpcMethod<MemberListRequest, MemberListResponse> MemberListCall = M("Cluster", "MemberList", MemberListRequest.Parser, MemberListResponse.Parser);
    private static readonly GrpcMethod<MemberAddRequest, MemberAddResponse> MemberAddCall = M("Cluster", "MemberAdd", MemberAddRequest.Parser, MemberAddResponse.Parser);
    private static readonly GrpcMethod<MemberRemoveRequest, MemberRemoveResponse> MemberRemoveCall = M("Cluster", "MemberRemove", MemberRemoveRequest.Parser, MemberRemoveResponse.Parser);
    private static readonly GrpcMethod<MemberPromoteRequest, MemberPromoteResponse> MemberPromoteCall = M("Cluster", "MemberPromote", MemberPromoteRequest.Parser, MemberPromoteResponse.Parser);
    private static readonly GrpcMethod<MemberUpdateRequest, MemberUpdateResponse> MemberUpdateCall = M("Cluster", "MemberUpdate", MemberUpdateRequest.Parser, MemberUpdateResponse.Parser);

    // ---- global flags and the connection ---------------------------------------------------

    /// <summary>The endpoints and how to reach them: each given endpoint (as printed) and its URL.</summary>
    private sealed class Connection(IReadOnlyList<(string Shown, Uri Url)> endpoints, GrpcTlsFiles? tls, string format, TimeSpan commandTimeout, TimeSpan dialTimeout)
    {
        public IReadOnlyList<(string Shown, Uri Url)> Endpoints { get; } = endpoints;
        public string Format { get; } = format;

        /// <summary>The same settings for other endpoints (etcdctl's --cluster: every member's client URL).</summary>
        public Connection WithEndpoints(IEnumerable<string> urls) =>
            new([.. urls.Select(u => (u, new Uri(u)))], tls, Format, commandTimeout, dialTimeout);

        public GrpcClient Client(Uri url) => new(new GrpcClientOptions { Address = url, Tls = url.Scheme == "https" ? tls : null, ConnectTimeout = dialTimeout });

        public GrpcCallOptions Call(CancellationToken ct) => new(Timeout: commandTimeout, CancellationToken: ct);

        /// <summary>
        /// One call, to the first endpoint that takes it: an endpoint that cannot be reached (or has no
        /// leader) passes the call to the next, as etcd's client balancer does; any other answer is final.
        /// </summary>
        public async Task<TResp> CallAsync<TReq, TResp>(GrpcMethod<TReq, TResp> method, TReq request, CancellationToken ct)
        {
            GrpcCallException? last = null;
            foreach (var (_, url) in Endpoints)
            {
                using var client = Client(url);
                try
                {
                    return await client.UnaryAsync(method, request, Call(ct));
                }
                catch (GrpcCallException e) when (e.StatusCode is StatusCode.Unavailable or StatusCode.DeadlineExceeded && Endpoints.Count > 1)
                {
                    last = e;
                }
            }
            throw last!;
        }
    }

    private static Connection Connect(CommandArgs args, string defaultFormat = "simple", params string[] formats)
    {
        var endpointsText = args.Option("--endpoints") ?? "127.0.0.1:2379";
        var cacert = args.Option("--cacert");
        var cert = args.Option("--cert");
        var key = args.Option("--key");
        var format = args.Option("-w", "--write-out") ?? defaultFormat;
        var commandTimeout = Duration(args.Option("--command-timeout") ?? "5s", "--command-timeout");
        var dialTimeout = Duration(args.Option("--dial-timeout") ?? "2s", "--dial-timeout");
        var allowed = formats.Length == 0 ? ["simple", "json"] : formats;
        if (!allowed.Contains(format))
            throw new CommandArgsException($"{format} is not a supported output format here ({string.Join(", ", allowed)})");
        if ((cert is null) != (key is null)) throw new CommandArgsException("--cert and --key go together: give both");
        GrpcTlsFiles? tls = null;
        if (cert is not null)
        {
            tls = new GrpcTlsFiles(cert, key!, cacert);
            try
            {
                tls.Validate();
            }
            catch (ArgumentException e)
            {
                throw new CommandArgsException(e.Message);
            }
        }
        else if (cacert is not null)
        {
            throw new CommandArgsException("--cacert needs --cert and --key: raftv's client presents a certificate on every TLS connection");
        }
        var endpoints = new List<(string, Uri)>();
        foreach (var e in endpointsText.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var text = e.Contains("://", StringComparison.Ordinal) ? e : (tls is null ? "http://" : "https://") + e;
            if (!Uri.TryCreate(text, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https") || uri.AbsolutePath != "/")
                throw new CommandArgsException($"--endpoints: '{e}' is not HOST:PORT or an http(s):// URL");
            if (uri.Scheme == "https" && tls is null) throw new CommandArgsException($"--endpoints: '{e}' is https but no --cert/--key are given");
            endpoints.Add((e, uri));
        }
        if (endpoints.Count == 0) throw new CommandArgsException("--endpoints is empty");
        return new Connection(endpoints, tls, format, commandTimeout, dialTimeout);
    }

    internal static TimeSpan Duration(string text, string what)
    {
        var units = new (string Suffix, double Ms)[] { ("ms", 1), ("s", 1000), ("m", 60_000) };
        foreach (var (suffix, ms) in units)
            if (text.EndsWith(suffix, StringComparison.Ordinal) && double.TryParse(text[..^suffix.Length], NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && v > 0)
                return TimeSpan.FromMilliseconds(v * ms);
        throw new CommandArgsException($"{what} must be a duration such as 500ms, 5s or 1m, not '{text}'");
    }

    /// <summary>Runs a client command; etcd's errors are printed as etcdctl prints them ("Error: ...", status 1).</summary>
    private static async Task<int> Guarded(TextWriter stderr, Func<Task<int>> body)
    {
        try
        {
            return await body();
        }
        catch (GrpcCallException e)
        {
            stderr.WriteLine($"Error: {Describe(e)}");
            return 1;
        }
    }

    private static string Describe(GrpcCallException e) => e.StatusCode switch
    {
        StatusCode.Unavailable when e.InnerException is HttpRequestException or System.Net.Sockets.SocketException or IOException =>
            $"cannot reach the endpoint: {e.GetBaseException().Message}",
        StatusCode.DeadlineExceeded => "context deadline exceeded (no answer within --command-timeout)",
        _ => e.StatusMessage,
    };

    // ---- keys --------------------------------------------------------------------------------

    /// <summary>etcd's prefix end: the key with its last byte below 0xff incremented and what follows dropped ("\0" when there is none).</summary>
    internal static ByteString PrefixEnd(ByteString key)
    {
        var bytes = key.ToByteArray();
        for (var i = bytes.Length - 1; i >= 0; i--)
        {
            if (bytes[i] < 0xff)
            {
                bytes[i]++;
                return ByteString.CopyFrom(bytes, 0, i + 1);
            }
        }
        return ByteString.CopyFrom(0);
    }

    /// <summary>KEY [RANGE_END] with --prefix or --from-key, as etcdctl reads them.</summary>
    internal static (ByteString Key, ByteString End) KeyRange(CommandArgs args, string what)
    {
        var prefix = args.Flag("--prefix");
        var fromKey = args.Flag("--from-key");
        if (prefix && fromKey) throw new CommandArgsException("--prefix and --from-key cannot be given together");
        var key = args.OptionalPositional();
        if (key is null && !fromKey && !prefix) throw new CommandArgsException($"missing {what}");
        var end = args.OptionalPositional();
        if (end is not null && (prefix || fromKey)) throw new CommandArgsException("a range end cannot be given with --prefix or --from-key");
        var k = ByteString.CopyFromUtf8(key ?? "");
        if (prefix) return k.IsEmpty ? (ByteString.CopyFrom(0), ByteString.CopyFrom(0)) : (k, PrefixEnd(k));
        if (fromKey) return (k.IsEmpty ? ByteString.CopyFrom(0) : k, ByteString.CopyFrom(0));
        return (k, end is null ? ByteString.Empty : ByteString.CopyFromUtf8(end));
    }

    internal static RangeRequest RangeFrom(CommandArgs args, string what)
    {
        var r = new RangeRequest();
        if (args.LongOption("--limit") is { } limit) r.Limit = limit;
        if (args.LongOption("--rev") is { } rev) r.Revision = rev;
        r.KeysOnly = args.Flag("--keys-only");
        r.CountOnly = args.Flag("--count-only");
        var consistency = args.Option("--consistency") ?? "l";
        r.Serializable = consistency switch
        {
            "l" => false,
            "s" => true,
            _ => throw new CommandArgsException($"--consistency must be l (linearizable) or s (serializable), not '{consistency}'"),
        };
        if (args.Option("--sort-by") is { } sortBy)
        {
            r.SortTarget = sortBy.ToUpperInvariant() switch
            {
                "KEY" => RangeRequest.Types.SortTarget.Key,
                "VERSION" => RangeRequest.Types.SortTarget.Version,
                "CREATE" => RangeRequest.Types.SortTarget.Create,
                "MODIFY" => RangeRequest.Types.SortTarget.Mod,
                "VALUE" => RangeRequest.Types.SortTarget.Value,
                _ => throw new CommandArgsException($"--sort-by must be KEY, VERSION, CREATE, MODIFY or VALUE, not '{sortBy}'"),
            };
            r.SortOrder = RangeRequest.Types.SortOrder.Ascend;
        }
        if (args.Option("--order") is { } order)
        {
            r.SortOrder = order.ToUpperInvariant() switch
            {
                "ASCEND" => RangeRequest.Types.SortOrder.Ascend,
                "DESCEND" => RangeRequest.Types.SortOrder.Descend,
                _ => throw new CommandArgsException($"--order must be ASCEND or DESCEND, not '{order}'"),
            };
        }
        var (key, end) = KeyRange(args, what);
        r.Key = key;
        r.RangeEnd = end;
        return r;
    }

    private static void PrintKv(StringBuilder o, KeyValue kv, bool valueOnly)
    {
        if (!valueOnly) o.Append(kv.Key.ToStringUtf8()).Append('\n');
        o.Append(kv.Value.ToStringUtf8()).Append('\n');
    }

    // ---- KV commands ---------------------------------------------------------------------------

    public static Task<int> Put(CommandArgs args, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var connection = Connect(args);
        var prevKv = args.Flag("--prev-kv");
        var ignoreValue = args.Flag("--ignore-value");
        var key = args.Positional("KEY");
        var value = ignoreValue ? null : args.OptionalPositional();
        args.EnsureNoneLeft();
        if (!ignoreValue && value is null) value = Console.In.ReadToEnd();
        var request = new PutRequest { Key = ByteString.CopyFromUtf8(key), Value = ByteString.CopyFromUtf8(value ?? ""), PrevKv = prevKv, IgnoreValue = ignoreValue };
        return Guarded(stderr, async () =>
        {
            var r = await connection.CallAsync(PutCall, request, ct);
            if (connection.Format == "json")
            {
                stdout.WriteLine(EtcdOutput.Json(r));
                return 0;
            }
            var o = new StringBuilder("OK\n");
            if (r.PrevKv is { } prev) PrintKv(o, prev, false);
            stdout.Write(o.ToString());
            return 0;
        });
    }

    public static Task<int> Get(CommandArgs args, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var connection = Connect(args);
        var valueOnly = args.Flag("--print-value-only");
        var request = RangeFrom(args, "KEY");
        args.EnsureNoneLeft();
        return Guarded(stderr, async () =>
        {
            var r = await connection.CallAsync(RangeCall, request, ct);
            if (connection.Format == "json")
            {
                stdout.WriteLine(EtcdOutput.Json(r));
                return 0;
            }
            var o = new StringBuilder();
            // etcdctl 3.5 allows --count-only with -w fields only; the simple format prints the count.
            if (request.CountOnly) o.Append(r.Count).Append('\n');
            foreach (var kv in r.Kvs) PrintKv(o, kv, valueOnly);
            stdout.Write(o.ToString());
            return 0;
        });
    }

    public static Task<int> Del(CommandArgs args, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var connection = Connect(args);
        var prevKv = args.Flag("--prev-kv");
        var (key, end) = KeyRange(args, "KEY");
        args.EnsureNoneLeft();
        var request = new DeleteRangeRequest { Key = key, RangeEnd = end, PrevKv = prevKv };
        return Guarded(stderr, async () =>
        {
            var r = await connection.CallAsync(DeleteCall, request, ct);
            if (connection.Format == "json")
            {
                stdout.WriteLine(EtcdOutput.Json(r));
                return 0;
            }
            var o = new StringBuilder().Append(r.Deleted).Append('\n');
            foreach (var kv in r.PrevKvs) PrintKv(o, kv, false);
            stdout.Write(o.ToString());
            return 0;
        });
    }

    public static Task<int> Txn(CommandArgs args, TextWriter stdout, TextWriter stderr, CancellationToken ct) =>
        TxnWith(args, Console.In, stdout, stderr, ct);

    internal static Task<int> TxnWith(CommandArgs args, TextReader input, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var connection = Connect(args);
        args.Flag("-i");
        args.Flag("--interactive");
        var compares = args.Options("--compare");
        var success = args.Options("--success");
        var failure = args.Options("--failure");
        args.EnsureNoneLeft();
        var request = compares.Count + success.Count + failure.Count > 0
            ? TxnText.Build(compares, success, failure)
            : TxnText.Parse(input);
        return Guarded(stderr, async () =>
        {
            var r = await connection.CallAsync(TxnCall, request, ct);
            if (connection.Format == "json")
            {
                stdout.WriteLine(EtcdOutput.Json(r));
                return 0;
            }
            var o = new StringBuilder(r.Succeeded ? "SUCCESS\n" : "FAILURE\n");
            foreach (var op in r.Responses) PrintOp(o, op);
            stdout.Write(o.ToString());
            return 0;
        });
    }

    private static void PrintOp(StringBuilder o, ResponseOp op)
    {
        o.Append('\n');
        switch (op.ResponseCase)
        {
            case ResponseOp.ResponseOneofCase.ResponsePut:
                o.Append("OK\n");
                if (op.ResponsePut.PrevKv is { } prev) PrintKv(o, prev, false);
                break;
            case ResponseOp.ResponseOneofCase.ResponseRange:
                foreach (var kv in op.ResponseRange.Kvs) PrintKv(o, kv, false);
                break;
            case ResponseOp.ResponseOneofCase.ResponseDeleteRange:
                o.Append(op.ResponseDeleteRange.Deleted).Append('\n');
                foreach (var kv in op.ResponseDeleteRange.PrevKvs) PrintKv(o, kv, false);
                break;
            case ResponseOp.ResponseOneofCase.ResponseTxn:
                o.Append(op.ResponseTxn.Succeeded ? "SUCCESS\n" : "FAILURE\n");
                foreach (var inner in op.ResponseTxn.Responses) PrintOp(o, inner);
                break;
        }
    }

    public static Task<int> Compact(CommandArgs args, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var connection = Connect(args);
        var physical = args.Flag("--physical");
        var text = args.Positional("REVISION");
        args.EnsureNoneLeft();
        if (!long.TryParse(text, out var revision) || revision < 1) throw new CommandArgsException($"REVISION must be a positive integer, not '{text}'");
        return Guarded(stderr, async () =>
        {
            await connection.CallAsync(CompactCall, new CompactionRequest { Revision = revision, Physical = physical }, ct);
            stdout.WriteLine($"compacted revision {revision}");
            return 0;
        });
    }

    // ---- status ------------------------------------------------------------------------------

    public static Task<int> Endpoint(CommandArgs args, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        args.Verb("endpoint command", "status");
        return Status(args, stdout, stderr, ct, defaultFormat: "simple");
    }

    public static Task<int> Status(CommandArgs args, TextWriter stdout, TextWriter stderr, CancellationToken ct) =>
        Status(args, stdout, stderr, ct, defaultFormat: "table");

    private static async Task<int> Status(CommandArgs args, TextWriter stdout, TextWriter stderr, CancellationToken ct, string defaultFormat)
    {
        var connection = Connect(args, defaultFormat, "simple", "json", "table");
        var cluster = args.Flag("--cluster");
        args.EnsureNoneLeft();
        if (cluster)
        {
            // As etcdctl's --cluster: every member's client URLs, from the member list.
            try
            {
                var list = await connection.CallAsync(MemberListCall, new MemberListRequest(), ct);
                connection = connection.WithEndpoints(list.Members.SelectMany(m => m.ClientURLs).Distinct());
            }
            catch (GrpcCallException e)
            {
                stderr.WriteLine($"Error: {Describe(e)}");
                return 1;
            }
        }
        var answers = await Task.WhenAll(connection.Endpoints.Select(async e =>
        {
            using var client = connection.Client(e.Url);
            try
            {
                return (e.Shown, Status: await client.UnaryAsync(StatusCall, new StatusRequest(), connection.Call(ct)), Error: (string?)null);
            }
            catch (GrpcCallException x)
            {
                return (e.Shown, Status: (StatusResponse?)null, Error: Describe(x));
            }
        }));
        foreach (var failed in answers.Where(a => a.Error is not null))
            stderr.WriteLine($"Failed to get the status of endpoint {failed.Shown} ({failed.Error})");
        var ok = answers.Where(a => a.Status is not null).ToList();
        switch (connection.Format)
        {
            case "json":
                stdout.WriteLine("[" + string.Join(",", ok.Select(a => $"{{\"Endpoint\":{EtcdOutput.JsonString(a.Shown)},\"Status\":{EtcdOutput.Json(a.Status!)}}}")) + "]");
                break;
            case "table":
                stdout.Write(EtcdOutput.Table(
                    ["ENDPOINT", "ID", "VERSION", "DB SIZE", "IS LEADER", "IS LEARNER", "RAFT TERM", "RAFT INDEX", "RAFT APPLIED INDEX", "ERRORS"],
                    [.. ok.Select(a => StatusRow(a.Shown, a.Status!))]));
                break;
            default:
                foreach (var a in ok) stdout.WriteLine(string.Join(", ", StatusRow(a.Shown, a.Status!)));
                break;
        }
        return answers.Any(a => a.Error is not null) ? 1 : 0;
    }

    private static string[] StatusRow(string endpoint, StatusResponse s) =>
    [
        endpoint, $"{s.Header?.MemberId ?? 0:x}", s.Version, EtcdOutput.Bytes(s.DbSize), Bool(s.Header?.MemberId == s.Leader), Bool(s.IsLearner),
        s.RaftTerm.ToString(CultureInfo.InvariantCulture), s.RaftIndex.ToString(CultureInfo.InvariantCulture),
        s.RaftAppliedIndex.ToString(CultureInfo.InvariantCulture), string.Join(", ", s.Errors),
    ];

    private static string Bool(bool b) => b ? "true" : "false";

    // ---- membership --------------------------------------------------------------------------

    internal static ulong ParseHexId(string text, string what)
    {
        var digits = text.StartsWith("0x", StringComparison.OrdinalIgnoreCase) ? text[2..] : text;
        return ulong.TryParse(digits, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var id)
            ? id
            : throw new CommandArgsException($"{what} '{text}' is not a member id (hexadecimal, as member list prints it)");
    }

    public static Task<int> Member(CommandArgs args, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var verb = args.Verb("member command", "list", "add", "remove", "promote", "update");
        return verb switch
        {
            "list" => MemberList(args, stdout, stderr, ct),
            "add" => MemberAdd(args, stdout, stderr, ct),
            "remove" => MemberChange(args, stdout, stderr, ct, "removed from", id => MemberRemoveCall, id => new MemberRemoveRequest { ID = id }),
            "promote" => MemberChange(args, stdout, stderr, ct, "promoted in", id => MemberPromoteCall, id => new MemberPromoteRequest { ID = id }),
            "update" => MemberUpdate(args, stdout, stderr, ct),
            _ => throw new CommandArgsException($"unknown member command '{verb}' (list, add, remove, promote, update)"),
        };
    }

    private static Task<int> MemberList(CommandArgs args, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var connection = Connect(args, "simple", "simple", "json", "table");
        var consistency = args.Option("--consistency") ?? "l";
        if (consistency is not ("l" or "s")) throw new CommandArgsException($"--consistency must be l or s, not '{consistency}'");
        args.EnsureNoneLeft();
        return Guarded(stderr, async () =>
        {
            var r = await connection.CallAsync(MemberListCall, new MemberListRequest { Linearizable = consistency == "l" }, ct);
            switch (connection.Format)
            {
                case "json":
                    stdout.WriteLine(EtcdOutput.Json(r));
                    break;
                case "table":
                    stdout.Write(EtcdOutput.Table(["ID", "STATUS", "NAME", "PEER ADDRS", "CLIENT ADDRS", "IS LEARNER"], [.. r.Members.Select(MemberRow)]));
                    break;
                default:
                    foreach (var m in r.Members) stdout.WriteLine(string.Join(", ", MemberRow(m)));
                    break;
            }
            return 0;
        });
    }

    private static string[] MemberRow(Member m) =>
    [
        $"{m.ID:x}", m.Name.Length == 0 ? "unstarted" : "started", m.Name, string.Join(",", m.PeerURLs), string.Join(",", m.ClientURLs), Bool(m.IsLearner),
    ];

    private static List<string> PeerUrls(CommandArgs args)
    {
        var text = args.Option("--peer-urls") ?? throw new CommandArgsException("--peer-urls URL[,URL] is required");
        var urls = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList();
        if (urls.Count == 0) throw new CommandArgsException("--peer-urls is empty");
        return urls;
    }

    private static Task<int> MemberAdd(CommandArgs args, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var connection = Connect(args);
        var urls = PeerUrls(args);
        var learner = args.Flag("--learner");
        var name = args.Positional("NAME of the new member");
        args.EnsureNoneLeft();
        return Guarded(stderr, async () =>
        {
            var r = await connection.CallAsync(MemberAddCall, new MemberAddRequest { PeerURLs = { urls }, IsLearner = learner }, ct);
            if (connection.Format == "json")
            {
                stdout.WriteLine(EtcdOutput.Json(r));
                return 0;
            }
            var id = r.Member.ID;
            var cluster = string.Join(",", r.Members.SelectMany(m => m.PeerURLs.Select(u => $"{(m.ID == id ? name : m.Name)}={u}")));
            var o = new StringBuilder();
            o.Append($"Member {id,16:x} added to cluster {r.Header?.ClusterId ?? 0,16:x}\n\n");
            foreach (var prefix in new[] { "ETCD", "RAFTV" })
            {
                o.Append($"{prefix}_NAME=\"{name}\"\n");
                o.Append($"{prefix}_INITIAL_CLUSTER=\"{cluster}\"\n");
                o.Append($"{prefix}_INITIAL_ADVERTISE_PEER_URLS=\"{string.Join(",", urls)}\"\n");
                o.Append($"{prefix}_INITIAL_CLUSTER_STATE=\"existing\"\n");
                if (prefix == "ETCD") o.Append('\n');
            }
            stdout.Write(o.ToString());
            return 0;
        });
    }

    private static Task<int> MemberChange<TReq, TResp>(CommandArgs args, TextWriter stdout, TextWriter stderr, CancellationToken ct, string done,
        Func<ulong, GrpcMethod<TReq, TResp>> method, Func<ulong, TReq> request) where TResp : IMessage<TResp>
    {
        var connection = Connect(args);
        var id = ParseHexId(args.Positional("member ID"), "member ID");
        args.EnsureNoneLeft();
        return Guarded(stderr, async () =>
        {
            var r = await connection.CallAsync(method(id), request(id), ct);
            if (connection.Format == "json")
            {
                stdout.WriteLine(EtcdOutput.Json(r));
                return 0;
            }
            var header = (ResponseHeader?)r.Descriptor.FindFieldByName("header").Accessor.GetValue(r);
            stdout.WriteLine($"Member {id,16:x} {done} cluster {header?.ClusterId ?? 0,16:x}");
            return 0;
        });
    }

    private static Task<int> MemberUpdate(CommandArgs args, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var urls = PeerUrls(args);
        return MemberChange(args, stdout, stderr, ct, "updated in", _ => MemberUpdateCall, id => new MemberUpdateRequest { ID = id, PeerURLs = { urls } });
    }

    public static Task<int> MoveLeader(CommandArgs args, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var connection = Connect(args);
        var target = ParseHexId(args.Positional("ID of the new leader"), "ID");
        args.EnsureNoneLeft();
        return Guarded(stderr, async () =>
        {
            // Only the leader can hand leadership over: find it among the endpoints, as etcdctl does.
            (Uri Url, ulong Leader)? leader = null;
            GrpcCallException? last = null;
            foreach (var (_, url) in connection.Endpoints)
            {
                using var client = connection.Client(url);
                try
                {
                    var s = await client.UnaryAsync(StatusCall, new StatusRequest(), connection.Call(ct));
                    if (s.Header?.MemberId == s.Leader && s.Leader != 0) { leader = (url, s.Leader); break; }
                }
                catch (GrpcCallException e)
                {
                    last = e;
                }
            }
            if (leader is null)
            {
                stderr.WriteLine(last is null
                    ? "Error: no leader endpoint given via --endpoints (give every member's endpoint)"
                    : $"Error: no leader endpoint given via --endpoints (last error: {Describe(last)})");
                return 1;
            }
            using (var client = connection.Client(leader.Value.Url))
            {
                var r = await client.UnaryAsync(MoveLeaderCall, new MoveLeaderRequest { TargetID = target }, connection.Call(ct));
                if (connection.Format == "json")
                {
                    stdout.WriteLine(EtcdOutput.Json(r));
                    return 0;
                }
            }
            stdout.WriteLine($"Leadership transferred from {leader.Value.Leader:x} to {target:x}");
            return 0;
        });
    }
}
