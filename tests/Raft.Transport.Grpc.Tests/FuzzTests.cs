using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using Google.Protobuf;
using Raft.Transport.Grpc.Peers;
using Raft.Transport.Grpc.Tests.Interop;
using Raft.Transport.Grpc.Wire;
using Xunit.Abstractions;
using Pb = Raft.Transport.Grpc.Protos;

namespace Raft.Transport.Grpc.Tests;

/// <summary>
/// Hostile input for the gRPC server: a bounded number of calls, from a fixed seed, carrying
/// random and mutated frames and protobuf payloads (bit flips, truncations, wrong and huge
/// lengths, random bytes, frames of the wrong message type, compressed and invalid flags,
/// foreign clusters) to RaftPeer and Echo on one server. Each call is judged against an
/// independent reading of the bytes sent: a malformed call must end with a non-OK grpc-status
/// and a message, the sink must receive exactly the messages of the well-formed, own-cluster
/// batches before the first bad frame (so nothing from a malformed or foreign batch), and a
/// well-formed call must succeed after every hostile one. A failure names the seed; set
/// RAFTV_FUZZ_SEED to replay it.
/// </summary>
public sealed class FuzzTests(ITestOutputHelper output) : IAsyncLifetime
{
    private const int DefaultSeed = 20250611;
    private const int Iterations = 4000;
    private const int MaxMessageBytes = 16 * 1024;
    private const ulong Cluster = 0xC1;
    private const ulong NodeId = 1;
    private static readonly ulong[] Members = [2, 3];

    private enum Target { EchoUnary, EchoClientStream, EchoBidi, PeerStream, PeerSnapshot, PeerProbe }

    private enum Mutation
    {
        Valid, RandomBytes, BitFlips, Truncated, WrongLength, HugeLength, FrameFlag, WrongMessageType,
        RandomPayload, ForeignCluster, NonMemberOrStray, ValidPrefixThenBad, DeepNesting, ManyFrames,
    }

    private readonly RecordingSink _sink = new(Members);
    private GrpcServer _server = null!;
    private GrpcClient _client = null!;
    private HttpClient _raw = null!;

    public async Task InitializeAsync()
    {
        var peer = new RaftPeerService(Cluster, NodeId, _sink);
        var registry = new EchoService().Register(peer.Register(new GrpcServiceRegistry()));
        _server = await GrpcServer.StartAsync(new GrpcServerOptions { MaxReceiveMessageSize = MaxMessageBytes }, registry);
        _client = new GrpcClient(new GrpcClientOptions { Address = _server.Address });
        _raw = new HttpClient(new SocketsHttpHandler())
        {
            BaseAddress = _server.Address,
            DefaultRequestVersion = HttpVersion.Version20,
            DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Timeout = TimeSpan.FromSeconds(20),
        };
    }

    public async Task DisposeAsync()
    {
        _raw?.Dispose();
        _client?.Dispose();
        if (_server is not null) await _server.DisposeAsync();
    }

    [Fact]
    public async Task Hostile_frames_and_payloads_get_errors_reach_no_sink_and_leave_the_server_serving()
    {
        var seed = int.TryParse(Environment.GetEnvironmentVariable("RAFTV_FUZZ_SEED"), CultureInfo.InvariantCulture, out var s) ? s : DefaultSeed;
        var clock = Stopwatch.StartNew();
        var badCalls = 0;
        var delivered = 0;
        var byMutation = new Dictionary<Mutation, (int Calls, TimeSpan Time)>();
        for (var i = 0; i < Iterations; i++)
        {
            // One generator per iteration: a failing iteration replays alone from (seed, i).
            var rng = new Random(unchecked(seed * 1_000_003 + i));
            var target = (Target)rng.Next(Enum.GetValues<Target>().Length);
            var mutation = (Mutation)rng.Next(Enum.GetValues<Mutation>().Length);
            var started = clock.Elapsed;
            var (body, expected) = MakeCall(rng, target, mutation);
            try
            {
                var outcome = await CallAsync(target, body);
                Judge(target, expected, outcome);
                await AssertStillServingAsync(i);
            }
            catch (Exception e)
            {
                throw new Xunit.Sdk.XunitException(
                    $"fuzz seed {seed} (replay: RAFTV_FUZZ_SEED={seed}), iteration {i}: {mutation} call to {target} with " +
                    $"{body.Length} bytes [{Convert.ToHexString(body.AsSpan(0, Math.Min(body.Length, 96)))}{(body.Length > 96 ? "..." : "")}]: {e.Message}", e);
            }
            if (expected.Bad) badCalls++;
            delivered += expected.Delivered.Count;
            var (calls, time) = byMutation.GetValueOrDefault(mutation);
            byMutation[mutation] = (calls + 1, time + (clock.Elapsed - started));
        }
        output.WriteLine($"fuzz seed {seed}: {Iterations} hostile calls ({badCalls} malformed, {delivered} messages rightly delivered) " +
                         $"in {clock.Elapsed.TotalSeconds:F1} s; by mutation: {string.Join(", ", byMutation.OrderBy(p => p.Key).Select(p => $"{p.Key} {p.Value.Calls} ({p.Value.Time.TotalSeconds:F1} s)"))}");
        Assert.True(badCalls > Iterations / 2, $"only {badCalls} of {Iterations} calls were malformed: the generator lost its teeth");
    }

    // ---- what is sent ----

    /// <summary>What a correct server must do with a call, read from its bytes independently of the server.</summary>
    private sealed record Expectation(bool Bad, string Why, IReadOnlyList<Spec.Message> Delivered, IReadOnlyList<uint?> Acks, bool SnapshotMayArrive);

    private static (byte[] Body, Expectation Expected) MakeCall(Random rng, Target target, Mutation mutation)
    {
        // Requests that are well-formed but ask the test Echo service for long delays or huge
        // replies are that service's business, not hostile framing: draw again.
        for (var attempt = 0; attempt < 50; attempt++)
        {
            var body = Mutate(rng, target, mutation);
            if (Expect(target, body) is { } expected) return (body, expected);
        }
        var plain = Frames(ValidMessages(rng, target, 1));
        return (plain, Expect(target, plain)!);
    }

    private static byte[] Frames(IEnumerable<byte[]> messages) => messages.SelectMany(m => GrpcFrame.Encode(m)).ToArray();

    private static byte[] RandomBytes(Random rng, int max)
    {
        var bytes = new byte[rng.Next(max + 1)];
        rng.NextBytes(bytes);
        return bytes;
    }

    private static byte[] Mutate(Random rng, Target target, Mutation mutation)
    {
        var valid = ValidMessages(rng, target, rng.Next(1, 4));
        switch (mutation)
        {
            case Mutation.Valid:
                return Frames(IsUnary(target) ? valid.Take(1) : valid);
            case Mutation.RandomBytes:
                return RandomBytes(rng, 80);
            case Mutation.BitFlips:
            {
                var body = Frames(valid);
                for (var n = rng.Next(1, 9); n > 0; n--)
                {
                    var bit = rng.Next(body.Length * 8);
                    body[bit / 8] ^= (byte)(1 << (bit % 8));
                }
                return body;
            }
            case Mutation.Truncated:
            {
                var body = Frames(valid);
                return body[..rng.Next(body.Length)];
            }
            case Mutation.WrongLength:
            {
                var body = Frames(valid.Take(1));
                var actual = body.Length - GrpcFrame.HeaderSize;
                uint wrong;
                do wrong = (uint)rng.Next(0, actual + 21); while (wrong == actual);
                BinaryPrimitives.WriteUInt32BigEndian(body.AsSpan(1), wrong);
                return [.. body, .. Frames(valid.Skip(1))];
            }
            case Mutation.HugeLength:
            {
                uint[] lengths = [MaxMessageBytes + 1, (uint)rng.Next(MaxMessageBytes + 1, int.MaxValue), int.MaxValue, uint.MaxValue];
                var header = new byte[GrpcFrame.HeaderSize];
                BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(1), lengths[rng.Next(lengths.Length)]);
                return [.. Frames(valid.Take(rng.Next(valid.Count))), .. header, .. RandomBytes(rng, 64)];
            }
            case Mutation.FrameFlag:
            {
                var body = Frames(valid);
                // Flag 1 claims compression (none negotiated); anything above 1 is no flag at all.
                body[0] = rng.Next(2) == 0 ? (byte)1 : (byte)rng.Next(2, 256);
                return body;
            }
            case Mutation.WrongMessageType:
                return Frames(ForeignMessages(rng, target));
            case Mutation.RandomPayload:
                return Frames(Enumerable.Range(0, rng.Next(1, 3)).Select(_ => RandomBytes(rng, 200)));
            case Mutation.ForeignCluster:
                return Frames(ValidMessages(rng, target, rng.Next(1, 4), cluster: (ulong)rng.NextInt64() | 0x100));
            case Mutation.NonMemberOrStray:
                return Frames(ValidMessages(rng, target, rng.Next(1, 4), stray: true));
            case Mutation.ValidPrefixThenBad:
            {
                var bad = RandomBytes(rng, 100);
                byte[] last = rng.Next(3) switch
                {
                    0 => [.. GrpcFrame.Encode(bad)],
                    1 => [(byte)rng.Next(1, 256), .. GrpcFrame.Encode(bad)[1..]],
                    _ => GrpcFrame.Encode(bad)[..^Math.Max(1, bad.Length / 2)],
                };
                return [.. Frames(valid), .. last];
            }
            case Mutation.DeepNesting:
            {
                // Message.responses nests Messages: past protobuf's recursion limit the parse
                // must fail cleanly, below it the mapping must not overflow the stack.
                var sender = Members[rng.Next(Members.Length)];
                var inner = Message(rng, sender, NodeId);
                inner.Type = (Pb.MessageType)rng.Next(0, 24);
                for (var depth = rng.Next(6) == 0 ? rng.Next(101, 110) : rng.Next(5, 30); depth > 0; depth--)
                {
                    var outer = Message(rng, sender, NodeId);
                    outer.Type = (Pb.MessageType)rng.Next(0, 24);
                    outer.Responses.Add(inner);
                    inner = outer;
                }
                var batch = new Pb.MessageBatch { ClusterId = Cluster, SenderId = sender, Messages = { inner } };
                return Frames([batch.ToByteArray()]);
            }
            case Mutation.ManyFrames:
                // Hundreds of tiny (often empty) messages in one call.
                return Frames(Enumerable.Range(0, rng.Next(50, 200)).Select(_ => RandomBytes(rng, 3)));
            default:
                throw new ArgumentOutOfRangeException(nameof(mutation));
        }
    }

    private static bool IsUnary(Target t) => t is Target.EchoUnary or Target.PeerProbe;

    private static List<byte[]> ValidMessages(Random rng, Target target, int count, ulong cluster = Cluster, bool stray = false) =>
        Enumerable.Range(0, count).Select(k => target switch
        {
            Target.EchoUnary or Target.EchoClientStream or Target.EchoBidi =>
                new EchoRequest { Text = $"fuzz{rng.Next(1000)}", Padding = ByteString.CopyFrom(RandomBytes(rng, 32)) }.ToByteArray(),
            Target.PeerStream => Batch(rng, cluster, stray).ToByteArray(),
            Target.PeerSnapshot => SnapshotChunk(rng, cluster, stray, first: k == 0).ToByteArray(),
            Target.PeerProbe => new Pb.ProbeRequest { ClusterId = cluster }.ToByteArray(),
            _ => throw new ArgumentOutOfRangeException(nameof(target)),
        }).ToList();

    private static Pb.MessageBatch Batch(Random rng, ulong cluster, bool stray)
    {
        var sender = Members[rng.Next(Members.Length)];
        var batch = new Pb.MessageBatch { ClusterId = cluster, SenderId = sender };
        for (var n = rng.Next(1, 4); n > 0; n--) batch.Messages.Add(Message(rng, sender, NodeId));
        if (stray)
        {
            // A non-member sender, or one message not addressed from the sender to this node.
            if (rng.Next(2) == 0) batch.SenderId = 100 + (ulong)rng.Next(100);
            else batch.Messages[rng.Next(batch.Messages.Count)].To = NodeId + 1 + (ulong)rng.Next(5);
        }
        return batch;
    }

    private static Pb.Message Message(Random rng, ulong from, ulong to)
    {
        var m = new Pb.Message
        {
            // Mostly message types Raft knows, sometimes a number it does not (to be refused, not delivered).
            Type = (Pb.MessageType)(rng.Next(10) == 0 ? rng.Next(24, 40) : rng.Next(0, 24)),
            From = from, To = to, Term = (ulong)rng.Next(5), Index = (ulong)rng.Next(100), LogTerm = (ulong)rng.Next(5),
            Commit = (ulong)rng.Next(100),
        };
        for (var e = rng.Next(3); e > 0; e--)
            m.Entries.Add(new Pb.Entry { Term = 1, Index = (ulong)rng.Next(100), Type = (Pb.EntryType)rng.Next(3), Data = ByteString.CopyFrom(RandomBytes(rng, 16)) });
        return m;
    }

    private static Pb.SnapshotChunk SnapshotChunk(Random rng, ulong cluster, bool stray, bool first)
    {
        var sender = stray ? 100UL : Members[rng.Next(Members.Length)];
        var data = RandomBytes(rng, 64);
        var chunk = new Pb.SnapshotChunk { ClusterId = cluster, SenderId = sender, TotalSize = (ulong)data.Length, Data = ByteString.CopyFrom(data) };
        if (first)
        {
            var message = Message(rng, sender, NodeId);
            message.Type = Pb.MessageType.MsgSnap;
            message.Snapshot = new Pb.Snapshot { Metadata = new Pb.SnapshotMetadata { Index = 10, Term = 1, ConfState = new Pb.ConfState { Voters = { 1, 2, 3 } } } };
            chunk.Message = message;
        }
        return chunk;
    }

    /// <summary>Well-formed messages of another method's types.</summary>
    private static List<byte[]> ForeignMessages(Random rng, Target target)
    {
        IMessage[] peerish =
        [
            Batch(rng, Cluster, stray: false), SnapshotChunk(rng, Cluster, false, first: true),
            new Pb.Ack { Accepted = (uint)rng.Next(10), RefusedReason = "x" }, new Pb.ProbeResponse { ClusterId = Cluster, NodeId = 9 },
            new Pb.SnapshotResult { Accepted = true, Error = "e" },
        ];
        IMessage[] echoish =
        [
            new EchoRequest { Text = "wrong type", StatusMessage = "m" }, new EchoReply { Text = "r", Index = 3 },
            new Pb.ProbeRequest { ClusterId = Cluster }, new Pb.Ack { RefusedReason = "not a batch" }, Batch(rng, Cluster, false),
        ];
        var pool = target is Target.EchoUnary or Target.EchoClientStream or Target.EchoBidi ? peerish : echoish;
        return Enumerable.Range(0, rng.Next(1, 3)).Select(_ => pool[rng.Next(pool.Length)].ToByteArray()).ToList();
    }

    // ---- what must happen ----

    /// <summary>The frames of a body as gRPC reads them, and why reading stopped early (null: clean end).</summary>
    private static (List<byte[]> Frames, string? Error) ReadFrames(byte[] body)
    {
        var frames = new List<byte[]>();
        var at = 0;
        while (at < body.Length)
        {
            if (body.Length - at < GrpcFrame.HeaderSize) return (frames, "stream ends inside a frame header");
            if (body[at] != 0) return (frames, $"frame flag {body[at]}");
            var length = BinaryPrimitives.ReadUInt32BigEndian(body.AsSpan(at + 1));
            if (length > MaxMessageBytes) return (frames, $"frame of {length} bytes over the limit");
            if (body.Length - at - GrpcFrame.HeaderSize < length) return (frames, "stream ends inside a message");
            frames.Add(body[(at + GrpcFrame.HeaderSize)..(at + GrpcFrame.HeaderSize + (int)length)]);
            at += GrpcFrame.HeaderSize + (int)length;
        }
        return (frames, null);
    }

    private static bool TryParse<T>(MessageParser<T> parser, byte[] bytes, out T message) where T : IMessage<T>
    {
        try
        {
            message = parser.ParseFrom(bytes);
            return true;
        }
        catch (InvalidProtocolBufferException)
        {
            message = default!;
            return false;
        }
    }

    /// <summary>The expectation for a body, or null when it is a well-formed Echo request with extreme parameters.</summary>
    private static Expectation? Expect(Target target, byte[] body)
    {
        var (frames, frameError) = ReadFrames(body);
        var delivered = new List<Spec.Message>();
        var acks = new List<uint?>();
        string? error = frameError;
        var snapshotMayArrive = false;
        switch (target)
        {
            case Target.EchoUnary or Target.EchoClientStream or Target.EchoBidi:
                foreach (var f in frames)
                {
                    if (!TryParse(EchoRequest.Parser, f, out var request)) { error ??= "unparsable EchoRequest"; break; }
                    if (request.DelayMs > 0 || request.ReplyPadding > 1024 || request.Count != 0) return null;
                }
                break;
            case Target.PeerProbe:
                foreach (var f in frames)
                {
                    if (!TryParse(Pb.ProbeRequest.Parser, f, out var probe)) { error ??= "unparsable ProbeRequest"; break; }
                    if (probe.ClusterId != Cluster) error ??= "probe of another cluster";
                }
                break;
            case Target.PeerStream:
                foreach (var f in frames)
                {
                    if (!TryParse(Pb.MessageBatch.Parser, f, out var batch)) { error ??= "unparsable MessageBatch"; break; }
                    var accepted = batch.ClusterId == Cluster && Members.Contains(batch.SenderId)
                                   && batch.Messages.All(m => m.To == NodeId && m.From == batch.SenderId);
                    var messages = new List<Spec.Message>();
                    try
                    {
                        if (accepted) messages.AddRange(batch.Messages.Select(RaftWireMapping.FromWire));
                    }
                    catch (RaftWireFormatException)
                    {
                        accepted = false;
                    }
                    acks.Add(accepted ? (uint)messages.Count : null);
                    if (accepted) delivered.AddRange(messages);
                }
                break;
            case Target.PeerSnapshot:
                Pb.SnapshotChunk? first = null;
                foreach (var f in frames)
                {
                    if (!TryParse(Pb.SnapshotChunk.Parser, f, out var chunk)) { error ??= "unparsable SnapshotChunk"; break; }
                    first ??= chunk;
                }
                // Whether the server takes a snapshot is its own judgement, but never from another cluster or a malformed call.
                snapshotMayArrive = error is null && first is { ClusterId: Cluster } && Members.Contains(first.SenderId);
                break;
        }
        if (IsUnary(target) && error is null && frames.Count != 1) error = $"{frames.Count} messages for a unary method";
        return new Expectation(error is not null, error ?? "", delivered, acks, snapshotMayArrive);
    }

    private sealed record Outcome(HttpStatusCode Http, StatusCode? Status, string Message, byte[] ResponseBody);

    private async Task<Outcome> CallAsync(Target target, byte[] body)
    {
        var method = target switch
        {
            Target.EchoUnary => EchoMethods.Unary.FullName,
            Target.EchoClientStream => EchoMethods.ClientStream.FullName,
            Target.EchoBidi => EchoMethods.Bidi.FullName,
            Target.PeerStream => RaftPeerMethods.Stream.FullName,
            Target.PeerSnapshot => RaftPeerMethods.SendSnapshot.FullName,
            Target.PeerProbe => RaftPeerMethods.Probe.FullName,
            _ => throw new ArgumentOutOfRangeException(nameof(target)),
        };
        var content = new ByteArrayContent(body);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/grpc");
        using var request = new HttpRequestMessage(HttpMethod.Post, method)
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = content,
        };
        request.Headers.TryAddWithoutValidation("te", "trailers");
        using var response = await _raw.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        var responseBody = await response.Content.ReadAsByteArrayAsync();
        string? Header(string name) =>
            response.Headers.TryGetValues(name, out var values) || response.TrailingHeaders.TryGetValues(name, out values) ? values.First() : null;
        return new Outcome(response.StatusCode, GrpcStatusHeaders.ParseStatus(Header(GrpcStatusHeaders.Status)),
            GrpcStatusHeaders.DecodeMessage(Header(GrpcStatusHeaders.Message) ?? ""), responseBody);
    }

    private void Judge(Target target, Expectation expected, Outcome outcome)
    {
        Assert.Equal(HttpStatusCode.OK, outcome.Http);
        Assert.True(outcome.Status is not null, "the call ended without a grpc-status");
        if (target == Target.PeerSnapshot)
        {
            // A snapshot call ends OK only when the snapshot was taken; a refusal (another cluster,
            // a chunk out of place, a malformed call) is a non-OK status that says why.
            if (outcome.Status == StatusCode.OK)
            {
                Assert.False(expected.Bad, $"a malformed snapshot call ({expected.Why}) ended with OK");
                var (frames, _) = ReadFrames(outcome.ResponseBody);
                Assert.True(Pb.SnapshotResult.Parser.ParseFrom(Assert.Single(frames)).Accepted, "a snapshot call ended OK without taking the snapshot");
            }
            else Assert.False(string.IsNullOrWhiteSpace(outcome.Message), $"status {outcome.Status} of a refused snapshot call has no reason");
        }
        else if (expected.Bad)
        {
            Assert.True(outcome.Status != StatusCode.OK, $"a malformed call ({expected.Why}) ended with OK");
            Assert.False(string.IsNullOrWhiteSpace(outcome.Message), $"status {outcome.Status} for a malformed call ({expected.Why}) has no message");
        }
        else if (target is Target.PeerStream)
        {
            // Well-formed message streams end OK: refusals travel in Acks, not as errors.
            Assert.True(outcome.Status == StatusCode.OK, $"a well-formed call ended with {outcome.Status}: {outcome.Message}");
        }

        var received = Drain(_sink.Messages);
        Assert.Equal(expected.Delivered.Count, received.Count);
        for (var k = 0; k < received.Count; k++) Assert.Equal(expected.Delivered[k], received[k].Message);

        if (target == Target.PeerStream)
        {
            var (frames, frameError) = ReadFrames(outcome.ResponseBody);
            Assert.Null(frameError);
            var acks = frames.Select(f => Pb.Ack.Parser.ParseFrom(f)).ToList();
            Assert.Equal(expected.Acks.Count, acks.Count);
            for (var k = 0; k < acks.Count; k++)
            {
                if (expected.Acks[k] is { } n)
                {
                    Assert.Equal(n, acks[k].Accepted);
                    Assert.Equal("", acks[k].RefusedReason);
                }
                else
                {
                    Assert.Equal(0u, acks[k].Accepted);
                    Assert.NotEqual("", acks[k].RefusedReason);
                }
            }
        }

        var snapshots = Drain(_sink.Snapshots);
        if (!expected.SnapshotMayArrive) Assert.Empty(snapshots);
    }

    private static List<(ulong From, Spec.Message Message)> Drain(System.Collections.Concurrent.ConcurrentQueue<(ulong From, Spec.Message Message)> queue)
    {
        var items = new List<(ulong, Spec.Message)>();
        while (queue.TryDequeue(out var item)) items.Add(item);
        return items;
    }

    private async Task AssertStillServingAsync(int iteration)
    {
        var text = $"still serving {iteration}";
        Assert.Equal(text, (await _client.UnaryAsync(EchoMethods.Unary, new EchoRequest { Text = text })).Text);
        Assert.Equal(NodeId, (await _client.UnaryAsync(RaftPeerMethods.Probe, new Pb.ProbeRequest { ClusterId = Cluster })).NodeId);
    }
}
