using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Microsoft.FSharp.Core;
using Raft.Kv.Cli;
using Raft.Spec;
using Raft.Transport.Grpc;
using Raft.Transport.Grpc.Peers;
using Raft.Transport.Grpc.Wire;
using Pb = Raft.Transport.Grpc.Protos;

namespace Raft.Kv.Bench;

/// <summary>Settings of 'raftv bench transport'.</summary>
internal sealed record TransportBenchmarkOptions
{
    /// <summary>How long each case is measured (after a short warm-up).</summary>
    public TimeSpan Duration { get; init; } = TimeSpan.FromSeconds(3);

    /// <summary>Bytes of payload per message: the raw TCP frame, and the data of the one entry of each MsgApp.</summary>
    public int PayloadBytes { get; init; } = 256;

    public void Validate()
    {
        if (Duration < TimeSpan.FromSeconds(1)) throw new ArgumentException($"the duration must be at least 1 s, not {Duration}");
        // A MsgApp of one entry must stay well under the 4 MiB gRPC message limit.
        if (PayloadBytes is < 1 or > 1024 * 1024) throw new ArgumentException($"the payload must be 1 to 1048576 bytes, not {PayloadBytes}");
    }
}

/// <summary>One measured case: messages per second and, for ping-pong, round-trip percentiles.</summary>
internal sealed record TransportBenchmarkResult(string Case, double MessagesPerSecond, TimeSpan? P50, TimeSpan? P99, long Dropped = 0);

/// <summary>
/// 'raftv bench transport': the Raft transport (our gRPC over Kestrel and HttpClient) on
/// loopback against raw TCP measured in the same run, so that a loaded machine moves both
/// sides alike and the ratio stays meaningful (issue 9).
/// </summary>
internal static class TransportBenchmark
{
    public const string Usage = "raftv bench transport [--seconds N] [--size BYTES]";

    private const ulong Cluster = 0xBE7C;
    private const ulong Leader = 1;
    private const ulong Follower = 2;

    // Messages the pipelined sender keeps in flight: below RaftTransport's queue capacity so
    // that it never drops (a drop would measure the drop path, not the stream).
    private const int PipelineWindow = 4096;

    public static async Task<int> RunCommand(CommandArgs args, TextWriter stdout, CancellationToken ct)
    {
        TransportBenchmarkOptions options;
        try
        {
            options = new TransportBenchmarkOptions
            {
                Duration = TimeSpan.FromSeconds(args.IntOption("--seconds") ?? 3),
                PayloadBytes = args.IntOption("--size") ?? 256,
            };
            args.EnsureNoneLeft();
            options.Validate();
        }
        catch (ArgumentException e)
        {
            throw new CommandArgsException(e.Message);
        }
        stdout.WriteLine($"transport on loopback: {options.PayloadBytes}-byte payloads, {options.Duration.TotalSeconds:0.#} s per case, " +
                         $"{Environment.ProcessorCount} cores, load {LoadAverage()}");
        var results = await RunAsync(options, ct);
        Print(results, stdout);
        return 0;
    }

    public static async Task<IReadOnlyList<TransportBenchmarkResult>> RunAsync(TransportBenchmarkOptions options, CancellationToken ct)
    {
        options.Validate();
        return
        [
            await TcpPingPongAsync(options, ct),
            await TcpStreamAsync(options, ct),
            await GrpcPingPongAsync(options, ct),
            await GrpcTransportStreamAsync(options, ct),
        ];
    }

    private static void Print(IReadOnlyList<TransportBenchmarkResult> results, TextWriter stdout)
    {
        var tcpPingPong = results[0].MessagesPerSecond;
        var tcpStream = results[1].MessagesPerSecond;
        stdout.WriteLine($"{"case",-36} {"msgs/s",12} {"p50 µs",9} {"p99 µs",9}  vs raw TCP");
        foreach (var r in results)
        {
            var baseline = r.P50 is null ? tcpStream : tcpPingPong;
            // The p50 ratio too: on a loaded machine a few stalls move msgs/s of ping-pong a lot, the median little.
            var ratio = ReferenceEquals(r, results[0]) || ReferenceEquals(r, results[1]) ? "1"
                : $"{r.MessagesPerSecond / baseline:0.00}" + (r.P50 is { } p50 && results[0].P50 is { } tcpP50 ? $" (p50 {p50 / tcpP50:0.0}x)" : "");
            stdout.WriteLine(($"{r.Case,-36} {r.MessagesPerSecond,12:N0} {Micros(r.P50),9} {Micros(r.P99),9}  {ratio,-11}" +
                             (r.Dropped > 0 ? $"  ({r.Dropped} dropped)" : "")).TrimEnd());
        }
        stdout.WriteLine("ping-pong rows: one message, then wait for its reply (msgs/s = round trips/s); stream rows: pipelined, counted at the receiver.");
    }

    private static string Micros(TimeSpan? t) => t is { } v ? $"{v.TotalMicroseconds:0}" : "-";

    private static string LoadAverage()
    {
        try
        {
            return string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3));
        }
        catch (IOException)
        {
            return "unknown";
        }
    }

    private static TimeSpan WarmUp(TransportBenchmarkOptions options) => TimeSpan.FromTicks(Math.Min(options.Duration.Ticks / 4, TimeSpan.TicksPerSecond / 2));

    // ---- raw TCP ----

    private static async Task<(Socket Client, Socket Server)> ConnectLoopbackAsync(CancellationToken ct)
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        var accept = listener.AcceptAsync(ct).AsTask();
        await client.ConnectAsync(listener.LocalEndPoint!, ct);
        var server = await accept;
        server.NoDelay = true;
        return (client, server);
    }

    private static async Task<TransportBenchmarkResult> TcpPingPongAsync(TransportBenchmarkOptions options, CancellationToken ct)
    {
        var (client, server) = await ConnectLoopbackAsync(ct);
        using var _ = client;
        using var __ = server;
        await using var clientStream = new NetworkStream(client, ownsSocket: false);
        await using var serverStream = new NetworkStream(server, ownsSocket: false);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var echo = Task.Run(async () =>
        {
            var buffer = new byte[options.PayloadBytes];
            try
            {
                while (true)
                {
                    await serverStream.ReadExactlyAsync(buffer, stop.Token);
                    await serverStream.WriteAsync(buffer, stop.Token);
                }
            }
            catch (Exception e) when (e is OperationCanceledException or EndOfStreamException or IOException) { }
        }, CancellationToken.None);

        var request = new byte[options.PayloadBytes];
        var reply = new byte[options.PayloadBytes];
        var result = await MeasureRoundTripsAsync("raw TCP ping-pong", options, async token =>
        {
            await clientStream.WriteAsync(request, token);
            await clientStream.ReadExactlyAsync(reply, token);
        }, ct);
        await stop.CancelAsync();
        client.Shutdown(SocketShutdown.Both);
        await echo;
        return result;
    }

    private static async Task<TransportBenchmarkResult> TcpStreamAsync(TransportBenchmarkOptions options, CancellationToken ct)
    {
        var (client, server) = await ConnectLoopbackAsync(ct);
        using var _ = client;
        using var __ = server;
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        long received = 0;
        var reader = Task.Run(async () =>
        {
            var buffer = new byte[64 * 1024];
            try
            {
                int n;
                while ((n = await server.ReceiveAsync(buffer, SocketFlags.None, stop.Token)) > 0)
                    Interlocked.Add(ref received, n);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException) { }
        }, CancellationToken.None);
        // Each message is written on its own, the way a sender hands messages over one by one;
        // the buffer coalesces them into large writes as a pipelined stream does (the ceiling of
        // what any framing over this connection could reach).
        var writer = Task.Run(async () =>
        {
            var message = new byte[options.PayloadBytes];
            await using var network = new NetworkStream(client, ownsSocket: false);
            await using var buffered = new BufferedStream(network, 64 * 1024);
            try
            {
                while (!stop.IsCancellationRequested) await buffered.WriteAsync(message, stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or IOException) { }
        }, CancellationToken.None);

        var result = await MeasureReceiverAsync("raw TCP one-way stream", options, () => Interlocked.Read(ref received) / options.PayloadBytes, ct);
        await stop.CancelAsync();
        await writer;
        client.Shutdown(SocketShutdown.Both);
        await reader;
        return result;
    }

    // ---- our gRPC ----

    private sealed class CountingSink : IRaftMessageSink
    {
        private long _delivered;

        /// <summary>Released once per delivered message: the pipelined sender's window.</summary>
        public SemaphoreSlim Window { get; } = new(PipelineWindow);

        public long Delivered => Interlocked.Read(ref _delivered);

        public bool IsMember(ulong nodeId) => nodeId is Leader or Follower;

        public ValueTask DeliverAsync(ulong from, IReadOnlyList<Message> messages, CancellationToken cancellationToken)
        {
            Interlocked.Add(ref _delivered, messages.Count);
            Window.Release(messages.Count);
            return ValueTask.CompletedTask;
        }

        public ValueTask DeliverSnapshotAsync(ulong from, Message message, CancellationToken cancellationToken) =>
            throw new InvalidOperationException("the transport benchmark sends no snapshots");
    }

    private static async Task<(GrpcServer Server, CountingSink Sink)> StartFollowerAsync(CancellationToken ct)
    {
        var sink = new CountingSink();
        var service = new RaftPeerService(Cluster, Follower, sink);
        var server = await GrpcServer.StartAsync(new GrpcServerOptions(), service.Register(new GrpcServiceRegistry()), cancellationToken: ct);
        return (server, sink);
    }

    private static Message MsgApp(ulong index, byte[] data) =>
        new(MessageType.MsgApp, Follower, Leader, 1, 1, index, [EntryModule.create(1UL, index + 1, data)], index, 0,
            FSharpOption<Snapshot>.None, false, 0, [], []);

    private static async Task<TransportBenchmarkResult> GrpcPingPongAsync(TransportBenchmarkOptions options, CancellationToken ct)
    {
        var (server, _) = await StartFollowerAsync(ct);
        await using var __ = server;
        using var client = new GrpcClient(new GrpcClientOptions { Address = server.Address });
        await using var call = client.StartDuplexStreaming(RaftPeerMethods.Stream, new GrpcCallOptions(CancellationToken: ct));
        var data = new byte[options.PayloadBytes];
        ulong index = 0;
        var result = await MeasureRoundTripsAsync("gRPC ping-pong (MessageBatch -> Ack)", options, async token =>
        {
            // Encoded per round as RaftTransport does, so the round includes the mapping to the wire.
            var batch = new Pb.MessageBatch { ClusterId = Cluster, SenderId = Leader };
            batch.Messages.Add(RaftWireMapping.ToWire(MsgApp(index++, data)));
            await call.WriteAsync(batch, token);
            var (received, ack) = await call.ReadNextAsync(token);
            if (!received || ack!.Accepted != 1)
                throw new InvalidOperationException($"the follower did not accept the batch: {ack?.RefusedReason ?? "stream ended"}");
        }, ct);
        await call.CompleteRequestAsync();
        return result;
    }

    private static async Task<TransportBenchmarkResult> GrpcTransportStreamAsync(TransportBenchmarkOptions options, CancellationToken ct)
    {
        var (server, sink) = await StartFollowerAsync(ct);
        await using var _ = server;
        long unreachable = 0;
        var transport = new RaftTransport(
            new RaftTransportOptions { ClusterId = Cluster, NodeId = Leader, QueueCapacity = 2 * PipelineWindow },
            _ => Interlocked.Increment(ref unreachable), (_, _) => { });
        await using var __ = transport;
        transport.AddPeer(Follower, new GrpcClientOptions { Address = server.Address });
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var data = new byte[options.PayloadBytes];
        var sender = Task.Run(async () =>
        {
            try
            {
                for (ulong index = 0; ; index++)
                {
                    await sink.Window.WaitAsync(stop.Token);
                    transport.Send(MsgApp(index, data));
                }
            }
            catch (OperationCanceledException) { }
        }, CancellationToken.None);

        var result = await MeasureReceiverAsync("gRPC RaftTransport MsgApp stream", options, () => sink.Delivered, ct);
        await stop.CancelAsync();
        await sender;
        return result with { Dropped = transport.DroppedMessages };
    }

    // ---- measuring ----

    private static async Task<TransportBenchmarkResult> MeasureRoundTripsAsync(string name, TransportBenchmarkOptions options,
        Func<CancellationToken, Task> roundTrip, CancellationToken ct)
    {
        var warmUp = Stopwatch.StartNew();
        while (warmUp.Elapsed < WarmUp(options)) await roundTrip(ct);

        var latencies = new List<long>(1 << 16);
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < options.Duration)
        {
            var start = Stopwatch.GetTimestamp();
            await roundTrip(ct);
            latencies.Add(Stopwatch.GetTimestamp() - start);
        }
        var seconds = clock.Elapsed.TotalSeconds;
        latencies.Sort();
        return new TransportBenchmarkResult(name, latencies.Count / seconds, Percentile(latencies, 0.50), Percentile(latencies, 0.99));
    }

    private static async Task<TransportBenchmarkResult> MeasureReceiverAsync(string name, TransportBenchmarkOptions options,
        Func<long> receivedMessages, CancellationToken ct)
    {
        await Task.Delay(WarmUp(options), ct);
        var before = receivedMessages();
        var clock = Stopwatch.StartNew();
        await Task.Delay(options.Duration, ct);
        var after = receivedMessages();
        var seconds = clock.Elapsed.TotalSeconds;
        if (after == before) throw new InvalidOperationException($"{name}: nothing arrived in {seconds:0.0} s");
        return new TransportBenchmarkResult(name, (after - before) / seconds, null, null);
    }

    private static TimeSpan Percentile(List<long> sortedTimestamps, double q)
    {
        var i = Math.Clamp((int)Math.Ceiling(q * sortedTimestamps.Count) - 1, 0, sortedTimestamps.Count - 1);
        return TimeSpan.FromSeconds((double)sortedTimestamps[i] / Stopwatch.Frequency);
    }
}
