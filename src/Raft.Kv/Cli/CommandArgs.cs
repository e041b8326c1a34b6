namespace Raft.Kv.Cli;

/// <summary>Arguments of a command are wrong; the message says which.</summary>
public sealed class CommandArgsException(string message) : Exception(message);

/// <summary>
/// The arguments of one command: options are taken as they are read, and whatever is left
/// at the end is an error, so a mistyped option is never silently ignored.
/// </summary>
public sealed class CommandArgs(IEnumerable<string> args)
{
    private readonly List<string> _rest = [.. args];

    public string? Option(string name)
    {
        for (var i = 0; i < _rest.Count; i++)
        {
            if (_rest[i] == name)
            {
                if (i + 1 >= _rest.Count) throw new CommandArgsException($"{name} needs a value");
                var value = _rest[i + 1];
                _rest.RemoveRange(i, 2);
                return value;
            }
            if (_rest[i].StartsWith(name + "=", StringComparison.Ordinal))
            {
                var value = _rest[i][(name.Length + 1)..];
                _rest.RemoveAt(i);
                return value;
            }
        }
        return null;
    }

    public int? IntOption(string name)
    {
        var text = Option(name);
        if (text is null) return null;
        return int.TryParse(text, out var v) && v >= 0
            ? v
            : throw new CommandArgsException($"{name} must be a non-negative integer, not '{text}'");
    }

    public bool Flag(string name) => _rest.Remove(name);

    public string Positional(string what)
    {
        var i = _rest.FindIndex(a => !a.StartsWith('-'));
        if (i < 0) throw new CommandArgsException($"missing {what}");
        var value = _rest[i];
        _rest.RemoveAt(i);
        return value;
    }

    public void EnsureNoneLeft()
    {
        if (_rest.Count > 0) throw new CommandArgsException($"unexpected argument '{_rest[0]}'");
    }
}
