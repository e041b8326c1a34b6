#!/usr/bin/env bash
# Validates implementation traces against Raft.tla with TLC (TraceRaft.tla):
#
#   tlaplus/validate-trace.sh FILE.ndjson...
#
# Each FILE is ndjson in etcd's TracingEvent schema (raftv simulate --trace, Raft.Host's
# NdjsonTraceFile), optionally with an options line saying how the run started, e.g.
#   {"tag":"raftv-trace","boot":"snapshot","bootIndex":1,"bootTerm":1,"voters":["1","2","3"],
#    "prevote":false,"checkquorum":false}
# ("boot":"entries" for etcd's Bootstrap as Raft.Host's Node.Start does it, "asyncwrites":true
# for nodes with storage threads; see TraceRaft.tla; without one: the simulator's bootstrap,
# PreVote and CheckQuorum off).
# The files are validated in as few TLC runs as their PreVote/CheckQuorum settings allow
# (one JVM checks every trace of a setting at once). Prints one line per file, ACCEPTED or
# REJECTED (with the first line no behaviour of Raft.tla produces), then a summary.
# Exit status: 0 every file accepted; 1 some file rejected, or TLC failed; 2 usage; 3 TLC
# is not available (from tlc.sh).
# Environment: TRACE_TIMEOUT (seconds per TLC run, default 900), TLC_HEAP (default 3g here),
# TLC_STACK (default 256m here: long traces recurse deeply, see README-trace.md),
# TRACE_KEEP=1 keeps TLC's inputs and outputs (their folder is printed).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

[[ $# -ge 1 ]] || { echo "usage: tlaplus/validate-trace.sh FILE.ndjson..." >&2; exit 2; }
for f in "$@"; do [[ -f "$f" ]] || { echo "validate-trace: no file $f" >&2; exit 2; }; done

work="$(mktemp -d "${TMPDIR:-/tmp}/raftverified-trace.XXXXXX")"
if [[ -n "${TRACE_KEEP:-}" ]]; then echo "validate-trace: TLC's files are in $work"
else trap 'rm -rf "$work"' EXIT; fi

# The PreVote and CheckQuorum settings of a file, from its options line ("false false" without one).
setting() {
  local opts; opts="$(grep -m 1 '"tag":"raftv-trace"' "$1" || true)"
  local pv=false cq=false
  [[ "$opts" == *'"prevote":true'* ]] && pv=true
  [[ "$opts" == *'"checkquorum":true'* ]] && cq=true
  echo "$pv $cq"
}

accepted=0; rejected=0; errors=0

# run_group PREVOTE CHECKQUORUM FILE...: one TLC run over the files; prints a verdict per file.
run_group() {
  local pv="$1" cq="$2"; shift 2
  local files=("$@") list="" ids k
  for f in "${files[@]}"; do
    local abs; abs="$(cd "$(dirname "$f")" && pwd)/$(basename "$f")"
    list+="${list:+, }\"$abs\""
  done
  # Every node id the traces name: the quoted decimal strings other than "0" (no node).
  ids="$(cat "${files[@]}" | grep -o '"[0-9][0-9]*"' | grep -v '^"0"$' | sort -u | paste -sd, -)"
  local g; g="$(mktemp -d "$work/group.XXXXXX")"
  echo "[$list]" >"$g/traces.json"
  sed -e "s|@TRACE_LIST@|$g/traces.json|" -e "s|@SERVER@|{$ids}|g" \
      -e "s|@PREVOTE@|${pv^^}|" -e "s|@CHECKQUORUM@|${cq^^}|" "$here/TraceRaft.cfg" >"$g/TraceRaft.cfg"
  local out="$g/tlc.out" rc
  # Breadth-first with one worker: the registers recording the furthest lines are per worker.
  (cd "$here" && TLC_WORKERS=1 TLC_HEAP="${TLC_HEAP:-3g}" TLC_STACK="${TLC_STACK:-256m}" TLC_METADIR="$g/meta" \
     timeout "${TRACE_TIMEOUT:-900}" ./tlc.sh -noGenerateSpecTE -config "$g/TraceRaft.cfg" TraceRaft.tla) >"$out" 2>&1
  rc=$?
  [[ $rc -eq 3 ]] && { tail -n 1 "$out"; exit 3; }
  if [[ $rc -ne 0 ]] || ! grep -q "No error has been found" "$out"; then
    if [[ ${#files[@]} -gt 1 && $rc -ne 124 ]]; then
      # One trace can stop the whole run (an evaluation error): judge them one by one.
      for f in "${files[@]}"; do run_group "$pv" "$cq" "$f"; done
      return
    fi
    local why="TLC failed (exit $rc)"; [[ $rc -eq 124 ]] && why="TLC timed out after ${TRACE_TIMEOUT:-900}s"
    for f in "${files[@]}"; do echo "ERROR: $f: $why"; errors=$((errors + 1)); done
    grep -v "^Progress\|^Starting\|^Implied\|^Computing\|line reached" "$out" | tail -n 30
    return
  fi
  for k in "${!files[@]}"; do
    local n=$((k + 1)) f="${files[$k]}"
    local lines; lines="$(grep -c '"event"' "$f" || true)"
    if grep -q "^<<\"accepted\", $n>>\$" "$out"; then
      echo "ACCEPTED: $f: all $lines events are a behaviour of Raft.tla"
      accepted=$((accepted + 1))
    else
      local reached
      reached="$(grep -o "^<<\"line reached\", $n, [0-9]*>>" "$out" | tail -n 1 | grep -o '[0-9]*>>$' | tr -d '>')"
      echo "REJECTED: $f: no behaviour of Raft.tla produces line ${reached:-1} of $lines:"
      grep '"event"' "$f" | sed -n "${reached:-1}p" | cut -c1-400
      rejected=$((rejected + 1))
    fi
  done
}

declare -A groups=()
for f in "$@"; do
  key="$(setting "$f")"
  groups["$key"]+="$f"$'\n'
done
for key in "${!groups[@]}"; do
  mapfile -t members < <(printf '%s' "${groups[$key]}")
  run_group $key "${members[@]}"
done

echo "validate-trace: $accepted accepted, $rejected rejected, $errors errors"
[[ $rejected -eq 0 && $errors -eq 0 ]]
