#!/usr/bin/env python3
"""Converts TLC's state-graph dump (-dump dot,actionlabels,constrained) into the compact
graph the conformance suite replays (tests/Raft.Conformance.Tests).

    dot2graph.py DOT OUT.jsonl.gz --model NAME --stamp FILE=SHA256 ... [--config K=V ...]

Output, gzip-compressed JSON lines (every line one JSON array; see docs/conformance.md):

    ["graph", {format, model, stamp: {file: sha256}, config: {...}, vars: [...], counts}]
    ["value", var, id, value]        distinct values of each variable, in a canonical order;
                                     for a variable that is a function of the servers, the
                                     distinct values of one server's component
    ["action", id, name, [args]]     distinct edge labels, arguments as values
    ["state", id, init, expanded, base, [[k, ids], ...]]
                                     per variable k (vars order) the value id, or for a
                                     function of the servers the list of its components'
                                     ids in server order; only the variables that differ
                                     from state base (a predecessor; -1 for none: all)
    ["edges", src, [[dst, action id], ...]]
                                     dst as the difference from the previous edge's dst
                                     (the first: from src), in increasing dst order

Values: numbers, strings (TLA+ strings and model values alike), booleans, records and
functions whose domain holds only strings as objects, other functions as
{"$fn": [[key, value], ...]}, sets and sequences as arrays (sets sorted). A state is
"expanded" when TLC explored its successors (it satisfies the model's constraint); the
others are successors beyond the constraint, present so that every spec step out of an
expanded state is in the graph. Ids are assigned in a canonical order, so the output
depends only on the graph, not on TLC's exploration order.
"""
import argparse
import gzip
import json
import re
import sys

# ---- TLA+ values as TLC prints them ---------------------------------------------------

TOKEN = re.compile(r'''
    \s*(?:
      (?P<num>-?\d+)
    | (?P<str>"(?:[^"\\]|\\.)*")
    | (?P<op><<|>>|\|->|:>|@@|[\[\]{}(),])
    | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
    )''', re.VERBOSE)


def tokenize(text):
    pos, out = 0, []
    text = text.rstrip()
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError("cannot read a value at: %r" % text[pos:pos + 60])
        pos = m.end()
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
    return out


class Fn:
    """A TLA+ function with a non-record printing: (k1 :> v1 @@ k2 :> v2)."""
    def __init__(self, pairs):
        self.pairs = pairs


class Parser:
    def __init__(self, tokens):
        self.t, self.i = tokens, 0

    def peek(self):
        return self.t[self.i] if self.i < len(self.t) else (None, None)

    def take(self, value=None):
        tok = self.peek()
        if tok[0] is None or (value is not None and tok[1] != value):
            raise ValueError("expected %r, found %r" % (value, tok))
        self.i += 1
        return tok

    def expr(self):
        """An atom, or a function written k :> v @@ k :> v ..."""
        first = self.atom()
        if self.peek()[1] != ':>':
            return first
        self.take(':>')
        pairs = [(first, self.atom())]
        while self.peek()[1] == '@@':
            self.take('@@')
            k = self.atom()
            self.take(':>')
            pairs.append((k, self.atom()))
        return Fn(pairs)

    def items(self, close):
        out = []
        if self.peek()[1] == close:
            self.take(close)
            return out
        while True:
            out.append(self.expr())
            if self.peek()[1] == ',':
                self.take(',')
                continue
            self.take(close)
            return out

    def atom(self):
        kind, tok = self.take()
        if kind == 'num':
            return int(tok)
        if kind == 'str':
            return json.loads(tok)
        if kind == 'id':
            if tok == 'TRUE':
                return True
            if tok == 'FALSE':
                return False
            return tok  # a model value (server, Nil, value)
        if tok == '{':
            return ('set', self.items('}'))
        if tok == '<<':
            return ('seq', self.items('>>'))
        if tok == '(':
            v = self.expr()
            self.take(')')
            return v
        if tok == '[':
            rec = {}
            if self.peek()[1] == ']':
                self.take(']')
                return rec
            while True:
                _, name = self.take()
                self.take('|->')
                rec[name] = self.expr()
                if self.peek()[1] == ',':
                    self.take(',')
                    continue
                self.take(']')
                return rec
        raise ValueError("unexpected token %r" % tok)


def canon(v):
    return json.dumps(v, sort_keys=True, separators=(',', ':'))


def to_json(v):
    """TLC's value as JSON (see the module comment)."""
    if isinstance(v, Fn):
        pairs = [(to_json(k), to_json(x)) for k, x in v.pairs]
        if all(isinstance(k, str) for k, _ in pairs):
            return {k: x for k, x in pairs}
        return {"$fn": sorted([[k, x] for k, x in pairs], key=lambda p: canon(p[0]))}
    if isinstance(v, tuple):
        kind, items = v
        items = [to_json(x) for x in items]
        return sorted(items, key=canon) if kind == 'set' else items
    if isinstance(v, dict):
        return {k: to_json(x) for k, x in v.items()}
    return v


def parse_value(text):
    p = Parser(tokenize(text))
    v = p.expr()
    if p.i != len(p.t):
        raise ValueError("trailing text after value: %r" % (p.t[p.i:p.i + 5],))
    return to_json(v)


VAR_LINE = re.compile(r'^/\\ (\w+) = ', re.MULTILINE)
_parsed = {}


def parse_state(label):
    """The variables of a node label ('/\\ name = value' blocks) as JSON values. States
    share most of their variables' texts: each distinct text is parsed once."""
    starts = list(VAR_LINE.finditer(label))
    state = {}
    for k, m in enumerate(starts):
        end = starts[k + 1].start() if k + 1 < len(starts) else len(label)
        text = label[m.end():end]
        v = _parsed.get(text)
        if v is None:
            v = parse_value(text)
            _parsed[text] = v
        state[m.group(1)] = v
    return state


def parse_action(label):
    """'Name(arg, ...)' or 'Name' -> (name, [args as JSON])."""
    paren = label.find('(')
    if paren < 0:
        return label.strip(), []
    name = label[:paren].strip()
    p = Parser(tokenize(label[paren:]))
    p.take('(')
    args = [to_json(a) for a in p.items(')')]
    return name, args


# ---- the dot file ----------------------------------------------------------------------

def unescape(s):
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == '\\' and i + 1 < len(s):
            n = s[i + 1]
            out.append('\n' if n == 'n' else n)
            i += 2
        else:
            out.append(c)
            i += 1
    return ''.join(out)


NODE = re.compile(r'^(-?\d+) \[label="((?:[^"\\]|\\.)*)"')
EDGE = re.compile(r'^(-?\d+) -> (-?\d+) \[label="((?:[^"\\]|\\.|\n)*?)",color=', re.DOTALL)


def read_dot(path):
    """Yields ('node', fp, label, initial) and ('edge', src, dst, label, constrained)."""
    pending = None
    with open(path, encoding='utf-8') as f:
        for line in f:
            if pending is not None:
                pending += line
                if not line.rstrip().endswith('];'):
                    continue
                line, pending = pending, None
            elif re.match(r'^-?\d+ -> ', line) and not line.rstrip().endswith('];'):
                pending = line
                continue
            m = EDGE.match(line)
            if m:
                text = unescape(m.group(3))
                # An edge into a state beyond the constraint carries the constraint's location.
                constrained = '\n' in text
                yield ('edge', int(m.group(1)), int(m.group(2)), text.split('\n')[0], constrained)
                continue
            m = NODE.match(line)
            if m:
                # TLC fills the initial states, and those beyond the constraint in yellow.
                rest = line[m.end():]
                yield ('node', int(m.group(1)), unescape(m.group(2)),
                       'style = filled' in rest and 'fillcolor' not in rest, 'fillcolor=lightyellow' in rest)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('dot')
    ap.add_argument('out')
    ap.add_argument('--model', required=True)
    ap.add_argument('--stamp', action='append', default=[], help='FILE=SHA256')
    ap.add_argument('--config', action='append', default=[], help='KEY=VALUE (TLA+ value)')
    a = ap.parse_args()

    config = {}
    for kv in a.config:
        k, v = kv.split('=', 1)
        config[k.strip()] = parse_value(v)
    servers = sorted(config.get('Server', []))
    if not servers:
        sys.exit("dot2graph: --config Server={...} is required")
    stamp = {}
    for kv in a.stamp:
        k, v = kv.split('=', 1)
        stamp[k] = v

    names = None            # variable names, sorted
    per_server = None       # which of them are functions of the servers
    interned = {}           # (var, canonical json) -> (temporary id, value)
    counters = {}
    states = {}             # fp -> tuple of temporary ids (tuples for per-server variables)
    edges = []              # (src fp, dst fp, label)
    beyond = set()          # fps of states beyond the constraint
    inits = set()

    def intern(var, v):
        c = canon(v)
        key = (var, c)
        got = interned.get(key)
        if got is None:
            got = (counters.get(var, 0), v)
            counters[var] = got[0] + 1
            interned[key] = got
        return got[0]

    for item in read_dot(a.dot):
        if item[0] == 'node':
            _, fp, label, initial, outside = item
            if initial:
                inits.add(fp)
            if outside:
                beyond.add(fp)
            if fp in states:
                continue
            st = parse_state(label)
            if names is None:
                names = sorted(st)
                per_server = {n for n in names
                              if isinstance(st[n], dict) and sorted(st[n].keys()) == servers}
            states[fp] = tuple(
                tuple(intern(n, st[n][srv]) for srv in servers) if n in per_server else intern(n, st[n])
                for n in names)
        else:
            _, src, dst, label, constrained = item
            edges.append((src, dst, label))
            if constrained:
                beyond.add(dst)
    if len(inits) != 1:
        sys.exit("dot2graph: expected one initial state in %s, found %d" % (a.dot, len(inits)))
    init_fp = next(iter(inits))
    missing = {fp for e in edges for fp in e[:2]} - states.keys()
    if missing:
        sys.exit("dot2graph: %d edge ends have no node (e.g. %d)" % (len(missing), next(iter(missing))))

    # Canonical ids: values sorted per variable, states sorted by their value ids.
    by_var = {n: [] for n in names}
    for (var, c), (tmp, v) in interned.items():
        by_var[var].append((c, tmp, v))
    remap, values = {}, {}
    for n in names:
        ordered = sorted(by_var[n])
        remap[n] = {tmp: k for k, (_, tmp, _) in enumerate(ordered)}
        values[n] = [v for _, _, v in ordered]

    def canonical(key):
        return tuple(tuple(remap[n][x] for x in k) if n in per_server else remap[n][k]
                     for n, k in zip(names, key))

    keys = {fp: canonical(k) for fp, k in states.items()}
    order = sorted(states, key=lambda fp: keys[fp])
    state_id = {fp: k for k, fp in enumerate(order)}

    actions = sorted({label for _, _, label in edges})
    action_id = {l: k for k, l in enumerate(actions)}
    out_edges = {}
    for src, dst, label in edges:
        out_edges.setdefault(state_id[src], set()).add((state_id[dst], action_id[label]))
    # Each state is stored as its differences from its parent in a breadth-first tree
    # from the initial state (so that the bases lead back to it, in few steps).
    base, frontier = {state_id[init_fp]: -1}, [state_id[init_fp]]
    while frontier:
        nxt = []
        for src in frontier:
            for dst, _ in sorted(out_edges.get(src, ())):
                if dst not in base:
                    base[dst] = src
                    nxt.append(dst)
        frontier = nxt
    if len(base) != len(states):
        sys.exit("dot2graph: %d states are not reachable from the initial state" % (len(states) - len(base)))
    # TLC explored a state if it has successors in the dump, or if no edge reached it beyond
    # the constraint (with a depth bound, an explored state may also be reached again, from
    # the last level, by an edge marked as beyond).
    expanded = {state_id[fp] for fp in states if fp not in beyond} | set(out_edges)
    n_edges = sum(len(v) for v in out_edges.values())
    header = {
        "format": 2,
        "model": a.model,
        "stamp": stamp,
        "config": config,
        "vars": names,
        "perServer": sorted(per_server),
        "servers": servers,
        "counts": {"states": len(states), "expanded": len(expanded), "edges": n_edges,
                   "actions": len(actions)},
    }
    with gzip.GzipFile(a.out, 'wb', compresslevel=9, mtime=0) as raw:
        def put(x):
            raw.write((json.dumps(x, separators=(',', ':'), sort_keys=True) + '\n').encode())
        put(["graph", header])
        for n in names:
            for k, v in enumerate(values[n]):
                put(["value", n, k, v])
        for l in actions:
            name, args = parse_action(l)
            put(["action", action_id[l], name, args])
        def plain(x):
            return list(x) if isinstance(x, tuple) else x
        for fp in order:
            sid = state_id[fp]
            b = base.get(sid, -1) if fp != init_fp else -1
            mine = keys[fp]
            if b < 0:
                diff = [[k, plain(x)] for k, x in enumerate(mine)]
            else:
                theirs = keys[order[b]]
                diff = [[k, plain(x)] for k, (x, y) in enumerate(zip(mine, theirs)) if x != y]
            put(["state", sid, fp == init_fp, sid in expanded, b, diff])
        for sid in sorted(out_edges):
            prev, row = sid, []
            for dst, act in sorted(out_edges[sid]):
                row.append([dst - prev, act])
                prev = dst
            put(["edges", sid, row])
    print("%s: %d states (%d expanded), %d edges, %d actions" %
          (a.model, len(states), len(expanded), n_edges, len(actions)))


if __name__ == '__main__':
    main()
