using System.Collections.Concurrent;
using System.Threading.Channels;
using Raft.Spec;

namespace Raft.Host.Tests.Cluster;

/// <summary>
/// Messages between the nodes of a test cluster: one channel per node, and links that can be
/// cut (messages over a cut link, or to a stopped node, are lost as on a real network).
/// </summary>
public sealed class InMemoryNetwork
{
    private readonly ConcurrentDictionary<ulong, Channel<Message>> _inboxes = new();
    private readonly ConcurrentDictionary<(ulong, ulong), bool> _cut = new();
    private readonly ConcurrentDictionary<ulong, bool> _isolated = new();

    public ChannelReader<Message> Attach(ulong id)
    {
        var inbox = Channel.CreateUnbounded<Message>(new UnboundedChannelOptions { SingleReader = true });
        _inboxes[id] = inbox;
        return inbox.Reader;
    }

    public void Detach(ulong id)
    {
        if (_inboxes.TryRemove(id, out var inbox)) inbox.Writer.TryComplete();
    }

    /// <summary>Cuts every link of a node (both directions).</summary>
    public void Isolate(ulong id) => _isolated[id] = true;

    public void Heal(ulong id) => _isolated.TryRemove(id, out _);

    public void Cut(ulong a, ulong b)
    {
        _cut[(a, b)] = true;
        _cut[(b, a)] = true;
    }

    public bool CanReach(ulong from, ulong to) =>
        !_isolated.ContainsKey(from) && !_isolated.ContainsKey(to) && !_cut.ContainsKey((from, to));

    /// <summary>When set, a message for which it returns true is lost (random loss in fault tests).</summary>
    public Func<Message, bool>? Drop { get; set; }

    /// <summary>Whether the message was handed to the recipient's inbox.</summary>
    public bool Send(Message message)
    {
        if (!CanReach(message.From, message.To)) return false;
        if (Drop is { } drop && drop(message)) return false;
        return _inboxes.TryGetValue(message.To, out var inbox) && inbox.Writer.TryWrite(message);
    }
}
