namespace Raft.Kv.Cli;

/// <summary>Arguments of a command are wrong; the message says which.</summary>
public sealed class CommandArgsException(string message) : Exception(message);

/// <summary>
/// The arguments of one command: options are taken as they are read, and whatever is left
/// at the end is an error, so a mistyped option is never silently ignored. "--" ends the
/// options: what follows is positional even when it starts with '-' (a key such as "-x").
/// </summary>
public sealed class CommandArgs
{
    private readonly List<string> _rest;
    private readonly List<string> _afterDashes;

    public CommandArgs(IEnumerable<string> args)
    {
        var all = args.ToList();
        var dashes = all.IndexOf("--");
        _rest = dashes < 0 ? all : all[..dashes];
        _afterDashes = dashes < 0 ? [] : all[(dashes + 1)..];
    }

    /// <summary>The value of <paramref name="name"/> ("--name VALUE" or "--name=VALUE"), or null when absent.</summary>
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

    /// <summary>The first of several spellings of one option (e.g. "-w" and "--write-out").</summary>
    public string? Option(string name, string alias) => Option(name) ?? Option(alias);

    /// <summary>Every value of an option that may be repeated, in order.</summary>
    public IReadOnlyList<string> Options(string name)
    {
        var values = new List<string>();
        while (Option(name) is { } v) values.Add(v);
        return values;
    }

    public int? IntOption(string name)
    {
        var text = Option(name);
        if (text is null) return null;
        return int.TryParse(text, out var v) && v >= 0
            ? v
            : throw new CommandArgsException($"{name} must be a non-negative integer, not '{text}'");
    }

    public long? LongOption(string name)
    {
        var text = Option(name);
        if (text is null) return null;
        return long.TryParse(text, out var v) && v >= 0
            ? v
            : throw new CommandArgsException($"{name} must be a non-negative integer, not '{text}'");
    }

    public bool Flag(string name) => _rest.Remove(name);

    /// <summary>A boolean flag as etcd spells them: "--x" or "--x=true" is true, "--x=false" false; null when absent.</summary>
    public bool? BoolFlag(string name)
    {
        if (_rest.Remove(name)) return true;
        var i = _rest.FindIndex(a => a.StartsWith(name + "=", StringComparison.Ordinal));
        if (i < 0) return null;
        var text = _rest[i][(name.Length + 1)..];
        _rest.RemoveAt(i);
        return ParseBool(text, name);
    }

    public static bool ParseBool(string text, string what) => text.ToLowerInvariant() switch
    {
        "true" or "1" or "yes" => true,
        "false" or "0" or "no" => false,
        _ => throw new CommandArgsException($"{what} must be true or false, not '{text}'"),
    };

    /// <summary>Takes the first argument that is one of <paramref name="verbs"/> (wherever it stands among options and their values).</summary>
    public string Verb(string what, params string[] verbs)
    {
        var i = _rest.FindIndex(verbs.Contains);
        if (i < 0)
        {
            var other = _rest.FirstOrDefault(a => !a.StartsWith('-'));
            throw new CommandArgsException(other is null ? $"missing {what} ({string.Join(", ", verbs)})" : $"unknown {what} '{other}' ({string.Join(", ", verbs)})");
        }
        var verb = _rest[i];
        _rest.RemoveAt(i);
        return verb;
    }

    public string Positional(string what) => OptionalPositional() ?? throw new CommandArgsException($"missing {what}");

    /// <summary>The next positional argument, or null when none is left.</summary>
    public string? OptionalPositional()
    {
        var i = _rest.FindIndex(a => !a.StartsWith('-') || a == "-");
        if (i >= 0)
        {
            var value = _rest[i];
            _rest.RemoveAt(i);
            return value;
        }
        if (_afterDashes.Count == 0) return null;
        var next = _afterDashes[0];
        _afterDashes.RemoveAt(0);
        return next;
    }

    public void EnsureNoneLeft()
    {
        if (_rest.Count > 0) throw new CommandArgsException($"unexpected argument '{_rest[0]}'");
        if (_afterDashes.Count > 0) throw new CommandArgsException($"unexpected argument '{_afterDashes[0]}'");
    }
}
