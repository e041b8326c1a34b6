using System.Net;
using System.Net.Sockets;

namespace Raft.Host;

/// <summary>
/// Free TCP ports for servers started on this machine (tests, local clusters), taken below the
/// kernel's ephemeral range. A port from that range (what binding to port 0 gives) can be taken
/// by any outgoing connection once its server stops, so a member restarted on its old port may
/// find it in use; outgoing connections never take ports below the range.
/// </summary>
public static class FreePorts
{
    private const int Lowest = 10_000;
    // etcd's local-cluster ports, which 'raftv up' uses by default.
    private static readonly HashSet<int> Reserved = [12379, 12380, 22379, 22380];
    private static readonly (int Low, int High) Range = Window();
    private static int _cursor = StartingPoint();

    /// <summary>A port nothing listens on now, different from every port given before in this process.</summary>
    public static int Next(string host = "127.0.0.1")
    {
        var address = IPAddress.Parse(host);
        var size = Range.High - Range.Low;
        for (var attempt = 0; attempt < size; attempt++)
        {
            var port = Range.Low + (int)((uint)Interlocked.Increment(ref _cursor) % (uint)size);
            if (Reserved.Contains(port)) continue;
            try
            {
                using var listener = new TcpListener(address, port);
                listener.Start();
                return port;
            }
            catch (SocketException)
            {
            }
        }
        throw new InvalidOperationException($"no free TCP port on {host} between {Range.Low} and {Range.High}");
    }

    /// <summary>[low, high): below the ephemeral range (Linux: /proc/sys/net/ipv4/ip_local_port_range).</summary>
    private static (int, int) Window()
    {
        var ephemeralStart = 32768;
        try
        {
            var text = File.ReadAllText("/proc/sys/net/ipv4/ip_local_port_range").Split((char[])['\t', ' ', '\n'], StringSplitOptions.RemoveEmptyEntries);
            if (text.Length >= 1 && int.TryParse(text[0], out var start)) ephemeralStart = start;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
        return ephemeralStart - Lowest >= 1000 ? (Lowest, ephemeralStart) : (Lowest, 32768);
    }

    /// <summary>Processes start at different places, so two test processes rarely try the same ports.</summary>
    private static int StartingPoint() => (int)((uint)Environment.ProcessId * 7919u % 100_000u);
}
