#!/usr/bin/env bash
# Validates an implementation trace against Raft.tla with TLC (TraceRaft.tla):
#
#   tlaplus/validate-trace.sh FILE.ndjson [--prevote true|false] [--checkquorum true|false]
#                             [--boot-index N] [--boot-term T]
#
# FILE is ndjson in etcd's TracingEvent schema (raftv simulate --trace, Raft.Host's
# NdjsonTraceFile). The options describe the run: PreVote/CheckQuorum of its nodes and the
# snapshot the initial voters start from (the simulator's: index 1, term 1).
# Exit status: 0 the trace is a behaviour of the spec; 1 it is not (the furthest line reached
# is printed) or TLC failed; 2 usage; 3 TLC is not available (from tlc.sh).
# Environment: TRACE_TIMEOUT (seconds, default 600), TLC_HEAP (default 2g here).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() { echo "usage: tlaplus/validate-trace.sh FILE.ndjson [--prevote B] [--checkquorum B] [--boot-index N] [--boot-term T]" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
file="$1"; shift
[[ -f "$file" ]] || { echo "validate-trace: no file $file" >&2; exit 2; }
prevote=FALSE; checkquorum=FALSE; boot_index=1; boot_term=1
bool() { case "$1" in true|TRUE) echo TRUE ;; false|FALSE) echo FALSE ;; *) usage ;; esac; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --prevote) prevote="$(bool "${2:-}")"; shift 2 ;;
    --checkquorum) checkquorum="$(bool "${2:-}")"; shift 2 ;;
    --boot-index) boot_index="${2:-}"; shift 2 ;;
    --boot-term) boot_term="${2:-}"; shift 2 ;;
    *) usage ;;
  esac
done
[[ "$boot_index" =~ ^[0-9]+$ && "$boot_term" =~ ^[0-9]+$ ]] || usage

abs="$(cd "$(dirname "$file")" && pwd)/$(basename "$file")"
lines="$(grep -c '"event"' "$abs" || true)"
work="$(mktemp -d "${TMPDIR:-/tmp}/raftverified-trace.XXXXXX")"
trap 'rm -rf "$work"' EXIT
sed -e "s|@TRACE_FILE@|$abs|" -e "s|@BOOT_INDEX@|$boot_index|" -e "s|@BOOT_TERM@|$boot_term|" \
    -e "s|@PREVOTE@|$prevote|" -e "s|@CHECKQUORUM@|$checkquorum|" "$here/TraceRaft.cfg" >"$work/TraceRaft.cfg"

out="$work/tlc.out"
# Breadth-first with one worker: the register recording the furthest line is per worker.
(cd "$here" && TLC_WORKERS=1 TLC_HEAP="${TLC_HEAP:-2g}" TLC_METADIR="$work/meta" \
   timeout "${TRACE_TIMEOUT:-600}" ./tlc.sh -noGenerateSpecTE -config "$work/TraceRaft.cfg" TraceRaft.tla) >"$out" 2>&1
rc=$?
[[ $rc -eq 3 ]] && { tail -n 1 "$out"; exit 3; }
reached="$(grep -o '"trace line reached", [0-9]*' "$out" | tail -n 1 | grep -o '[0-9]*$')"
if grep -q "Invariant TraceNotFullyConsumed is violated" "$out"; then
  echo "ACCEPTED: $file: all $lines events are a behaviour of Raft.tla"
  exit 0
fi
if [[ $rc -eq 124 ]]; then
  echo "ERROR: $file: TLC timed out after ${TRACE_TIMEOUT:-600}s (furthest line ${reached:-?} of $lines)"
  exit 1
fi
if grep -q "No error has been found" "$out"; then
  echo "REJECTED: $file: no behaviour of Raft.tla produces line ${reached:-1} of $lines:"
  grep '"event"' "$abs" | sed -n "${reached:-1}p" | cut -c1-400
  exit 1
fi
echo "ERROR: $file: TLC failed (exit $rc); its output:"
grep -v "^Progress\|^Starting\|^Implied\|^Computing" "$out" | tail -n 40
exit 1
