using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Threading.Channels;

namespace Raft.Kv.Torture;

/// <summary>
/// A TCP proxy on loopback for one directed peer link (member From dials member To through it):
/// it passes bytes through, or injects a fault. Drop resets every connection and refuses new ones;
/// blackhole reads and discards bytes both ways, keeping connections open; delay holds every chunk
/// back for a while (order kept). Healing a drop or blackhole resets the connections it touched, as
/// their byte streams are no longer whole.
/// </summary>
public sealed class LinkProxy : IAsyncDisposable
{
    private readonly TcpListener _listener;
    private readonly IPEndPoint _target;
    private readonly CancellationTokenSource _stop = new();
    private readonly HashSet<Connection> _connections = [];
    private readonly object _gate = new();
    private Task _accepting = Task.CompletedTask;
    private LinkFault? _fault;
    private TimeSpan _delay;

    public LinkProxy(int from, int to, IPEndPoint target)
    {
        From = from;
        To = to;
        _target = target;
        _listener = new TcpListener(IPAddress.Loopback, 0);
    }

    public int From { get; }
    public int To { get; }
    public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;
    public string Url => $"http://127.0.0.1:{Port}";

    public void Start()
    {
        _listener.Start();
        _accepting = Task.Run(AcceptAsync);
    }

    /// <summary>Starts a fault on this link; null heals it.</summary>
    public void Set(LinkFault? fault, TimeSpan delay = default)
    {
        List<Connection> reset = [];
        lock (_gate)
        {
            var previous = _fault;
            _fault = fault;
            _delay = delay;
            if (fault == LinkFault.Drop || (fault is null && previous is LinkFault.Blackhole or LinkFault.Drop))
                reset.AddRange(_connections);
        }
        foreach (var c in reset) c.Reset();
    }

    private (LinkFault? Fault, TimeSpan Delay) Current()
    {
        lock (_gate) return (_fault, _delay);
    }

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptSocketAsync(_stop.Token);
            }
            catch (Exception) when (_stop.IsCancellationRequested)
            {
                return;
            }
            catch (SocketException)
            {
                continue;
            }
            _ = Task.Run(() => ServeAsync(client));
        }
    }

    private async Task ServeAsync(Socket client)
    {
        if (Current().Fault == LinkFault.Drop)
        {
            Connection.ResetSocket(client);
            return;
        }
        var server = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        client.NoDelay = true;
        try
        {
            using var connect = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
            connect.CancelAfter(TimeSpan.FromSeconds(2));
            await server.ConnectAsync(_target, connect.Token);
        }
        catch (Exception)
        {
            // The member behind the link is down: the dialler sees its connection reset, as it would.
            Connection.ResetSocket(client);
            server.Dispose();
            return;
        }
        var connection = new Connection(this, client, server);
        lock (_gate)
        {
            if (_fault == LinkFault.Drop)
            {
                connection.Reset();
                return;
            }
            _connections.Add(connection);
        }
        await connection.RunAsync(_stop.Token);
        lock (_gate) _connections.Remove(connection);
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        try { await _accepting; } catch (Exception) { }
        List<Connection> all;
        lock (_gate) all = [.. _connections];
        foreach (var c in all) c.Reset();
        _stop.Dispose();
    }

    private sealed class Connection(LinkProxy owner, Socket client, Socket server)
    {
        private readonly CancellationTokenSource _reset = new();
        private int _closed;

        public static void ResetSocket(Socket socket)
        {
            try
            {
                socket.LingerState = new LingerOption(true, 0); // close with RST, as a lost connection looks
                socket.Close();
            }
            catch (Exception)
            {
                // Already closed.
            }
        }

        public void Reset()
        {
            if (Interlocked.Exchange(ref _closed, 1) != 0) return;
            try { _reset.Cancel(); } catch (ObjectDisposedException) { }
            ResetSocket(client);
            ResetSocket(server);
        }

        public async Task RunAsync(CancellationToken stop)
        {
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(stop, _reset.Token);
            await Task.WhenAll(PumpAsync(client, server, linked.Token), PumpAsync(server, client, linked.Token));
            Reset();
        }

        /// <summary>Reads from one side and writes to the other through a queue of (due time, bytes), so a delay does not limit throughput.</summary>
        private async Task PumpAsync(Socket from, Socket to, CancellationToken ct)
        {
            var queue = Channel.CreateUnbounded<(long Due, byte[] Bytes)>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
            var writer = Task.Run(async () =>
            {
                try
                {
                    await foreach (var (due, bytes) in queue.Reader.ReadAllAsync(ct))
                    {
                        var wait = Stopwatch.GetElapsedTime(0, due) - Stopwatch.GetElapsedTime(0, Stopwatch.GetTimestamp());
                        if (wait > TimeSpan.Zero) await Task.Delay(wait, ct);
                        await to.SendAsync(bytes, SocketFlags.None, ct);
                    }
                }
                catch (Exception)
                {
                    Reset();
                }
            }, CancellationToken.None);
            var buffer = new byte[64 * 1024];
            try
            {
                while (true)
                {
                    var n = await from.ReceiveAsync(buffer, SocketFlags.None, ct);
                    if (n == 0) break;
                    var (fault, delay) = owner.Current();
                    if (fault == LinkFault.Blackhole) continue;
                    if (fault == LinkFault.Drop) break;
                    var due = Stopwatch.GetTimestamp() + (fault == LinkFault.Delay ? (long)(delay.TotalSeconds * Stopwatch.Frequency) : 0);
                    queue.Writer.TryWrite((due, buffer[..n]));
                }
            }
            catch (Exception)
            {
                // Reset, closed, or the proxy stops.
            }
            queue.Writer.TryComplete();
            try { await writer; } catch (Exception) { }
            Reset();
        }
    }
}
