#!/usr/bin/env bash
# Trace validation with TLC (TraceRaft.tla): implementation traces must be behaviours of
# Raft.tla, corrupted ones must not.
#
#   tlaplus/check-traces.sh [--size N] [--steps K] [--no-simulate] [--host-sweep N [--host-steps K]]
#
#   1. tests/Raft.Spec.Tests/traces/sim-seed1.ndjson (a committed simulator trace): accepted.
#   2. its corruptions (term jump, commit past the log, a vote for two candidates; written
#      by TraceCorruption in tests/Raft.Spec.Tests/TraceValidationTests.fs): rejected.
#   3. tests/Raft.Host.Tests/traces/*.ndjson (in-process clusters of Raft.Host Nodes,
#      written by HostTraceTests): accepted; and a corruption of each, made here (the first
#      Ready of a follower that has entries it has not committed claims them committed, as if
#      it had heard of a commit its leader never made): rejected at that line.
#   4. N fresh simulator traces of K steps each (tlaplus/trace-suite.fsx: seeded runs that
#      cycle through PreVote/CheckQuorum on and off, every fault kind, 3 and 5 voters, conf
#      changes, snapshots, transfers): accepted; together they must cover every fault kind,
#      elections, joint and simple conf changes, learners, snapshots, transfers and restarts.
#
#   5. With --host-sweep N (not in ./test.sh): HostTraceTests' random-fault run for seeds
#      1..N, K steps each (--host-steps, default 30): message loss, restarts, transfers,
#      compactions, reads; the settings and synchronous/asynchronous storage writes cycle
#      with the seed. Every trace accepted. The
#      test project is built with --artifacts-path $HOST_SWEEP_ARTIFACTS (default
#      ${TMPDIR:-/tmp}/raftv-host-sweep) so as not to disturb other builds.
#
# Every trace goes to one validate-trace.sh call (one TLC run per PreVote/CheckQuorum
# setting). Exit status: 0 all as expected, 1 otherwise, 3 TLC not available.
# Environment: TRACE_SUITE_SIZE / TRACE_STEPS (defaults of --size 200 / --steps 250),
# TRACE_KEEP_FAILED (where generated traces with an unexpected verdict are copied; default
# ${TMPDIR:-/tmp}/raftv-failed-traces),
# RAFTV_BIN (the folder of the built Raft.Spec.dll and Raft.Host.dll; default: the one
# ./raftv builds), TRACE_TIMEOUT (see validate-trace.sh).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
size="${TRACE_SUITE_SIZE:-200}"; steps="${TRACE_STEPS:-250}"; simulate=1; host_sweep=0; host_steps=30
usage() { echo "usage: tlaplus/check-traces.sh [--size N] [--steps K] [--no-simulate] [--host-sweep N [--host-steps K]]" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --size) size="${2:-}"; shift 2 ;;
    --steps) steps="${2:-}"; shift 2 ;;
    --no-simulate) simulate=0; shift ;;
    --host-sweep) host_sweep="${2:-}"; shift 2 ;;
    --host-steps) host_steps="${2:-}"; shift 2 ;;
    *) usage ;;
  esac
done
[[ "$size" =~ ^[0-9]+$ && "$steps" =~ ^[1-9][0-9]*$ && "$host_sweep" =~ ^[0-9]+$ && "$host_steps" =~ ^[1-9][0-9]*$ ]] || usage

start=$SECONDS
work="$(mktemp -d "${TMPDIR:-/tmp}/raftverified-traces.XXXXXX")"
trap 'rm -rf "$work"' EXIT
failures=0

spec_fixtures="$root/tests/Raft.Spec.Tests/traces"
accept=("$spec_fixtures/sim-seed1.ndjson")
reject=()
for c in term-jump commit-past-log double-vote; do reject+=("$spec_fixtures/sim-seed1.$c.ndjson"); done
for f in "$root"/tests/Raft.Host.Tests/traces/*.ndjson; do [[ -f "$f" ]] && accept+=("$f"); done

# corrupt_commit_ahead IN OUT: OUT is IN with the first Ready of a follower whose log holds
# entries past its commit index claiming them committed; prints that line's event number.
corrupt_commit_ahead() {
  awk -v out="$2" '
    /"event"/ { n++ }
    !done && /"name":"Ready"/ && match($0, /"commit":[0-9]+},"role":"StateFollower","log":[0-9]+/) {
      s = substr($0, RSTART, RLENGTH)
      c = s; sub(/^"commit":/, "", c); sub(/}.*/, "", c)
      g = s; sub(/.*"log":/, "", g)
      if (c + 0 < g + 0) {
        t = s; sub(/"commit":[0-9]+/, "\"commit\":" g, t)
        $0 = substr($0, 1, RSTART - 1) t substr($0, RSTART + RLENGTH)
        done = 1; print n > "/dev/stderr"
      }
    }
    { print > out }
    END { if (!done) exit 1 }' "$1" 2>"$2.line"
}
declare -A reject_line=()
mkdir -p "$work/host-corrupt"
for f in "${accept[@]}"; do
  [[ "$f" == */Raft.Host.Tests/traces/* ]] || continue
  c="$work/host-corrupt/$(basename "$f" .ndjson).commit-ahead.ndjson"
  if corrupt_commit_ahead "$f" "$c"; then
    reject+=("$c"); reject_line["$c"]="$(cat "$c.line")"
  else
    echo "  UNEXPECTED: $f has no follower Ready with uncommitted entries to corrupt"
    failures=$((failures + 1))
  fi
done

if [[ $host_sweep -gt 0 ]]; then
  sweep="$work/host-sweep"; t0=$SECONDS
  if ! RAFTV_HOST_TRACE_SEEDS="$host_sweep" RAFTV_HOST_TRACE_STEPS="$host_steps" RAFTV_HOST_TRACE_DIR="$sweep" \
       dotnet test "$root/tests/Raft.Host.Tests" -c Release --artifacts-path "${HOST_SWEEP_ARTIFACTS:-${TMPDIR:-/tmp}/raftv-host-sweep}" \
         --filter "FullyQualifiedName~HostTraceTests.Random" >"$work/host-sweep.txt" 2>&1; then
    echo "check-traces.sh: the host runs failed:"; grep -E "Failed|Error Message|seed [0-9]+" "$work/host-sweep.txt" | head -n 20
    failures=$((failures + 1))
  fi
  n="$(ls "$sweep"/*.ndjson 2>/dev/null | wc -l)"
  echo "ran $n host clusters (seeds 1..$host_sweep, $host_steps steps) in $((SECONDS - t0))s"
  for f in "$sweep"/*.ndjson; do [[ -f "$f" ]] && accept+=("$f"); done
fi

if [[ $simulate -eq 1 && $size -gt 0 ]]; then
  bin="${RAFTV_BIN:-}"
  if [[ -z "$bin" ]]; then
    # ./raftv builds the solution's CLI when it is missing or older than the sources.
    "$root/raftv" version >/dev/null || { echo "check-traces.sh: building raftv failed"; exit 1; }
    bin="$root/src/Raft.Kv/bin/Release/net10.0"
  fi
  [[ -f "$bin/Raft.Spec.dll" && -f "$bin/Raft.Host.dll" ]] || { echo "check-traces.sh: no Raft.Spec.dll and Raft.Host.dll in $bin"; exit 1; }
  gen="$work/gen"; mkdir -p "$gen"
  cp "$here/trace-suite.fsx" "$gen/"; ln -s "$bin" "$gen/lib"
  t0=$SECONDS
  if ! dotnet fsi --quiet "$gen/trace-suite.fsx" "$work/suite" "$size" "$steps" >"$work/suite.txt" 2>&1; then
    echo "check-traces.sh: generating the simulator traces failed:"; tail -n 20 "$work/suite.txt"; exit 1
  fi
  echo "generated $size simulator traces of $steps steps in $((SECONDS - t0))s"
  totals="$(grep '^totals:' "$work/suite.txt")"
  echo "  coverage, $totals"
  # Each kind of behaviour the suite is meant to exercise must occur at least once.
  for feature in elections commits confchanges joint learners snapshots transfers restarts \
                 drop duplicate delay partition reorder; do
    n="$(grep -o " $feature=[0-9]*" <<<" ${totals#totals: }" | cut -d= -f2)"
    if [[ -z "$n" || "$n" -eq 0 ]]; then
      echo "  UNEXPECTED: no trace of the suite has $feature (raise --size or --steps)"
      failures=$((failures + 1))
    fi
  done
  for f in "$work"/suite/*.ndjson; do accept+=("$f"); done
fi

t0=$SECONDS
out="$("$here/validate-trace.sh" "${accept[@]}" "${reject[@]}")"; rc=$?
[[ $rc -eq 3 ]] && { echo "$out" | tail -n 1; exit 3; }
declare -A verdict=()
while IFS= read -r line; do
  case "$line" in
    ACCEPTED:*|REJECTED:*|ERROR:*)
      f="${line#*: }"; f="${f%%: *}"; verdict["$f"]="${line%%:*}" ;;
  esac
done <<<"$out"
# Traces made here vanish with $work: the unexpected ones are kept in $keep.
keep="${TRACE_KEEP_FAILED:-${TMPDIR:-/tmp}/raftv-failed-traces}"
check() {  # check WANT FILE
  local got="${verdict[$2]:-NONE}"
  if [[ "$got" != "$1" ]]; then
    echo "  UNEXPECTED: $2: $got, expected $1"
    grep -F -A 1 "$2" <<<"$out" | head -n 2 | cut -c1-300
    if [[ "$2" == "$work"/* ]]; then
      mkdir -p "$keep" && cp "$2" "$keep/" && echo "  kept as $keep/$(basename "$2")"
    fi
    failures=$((failures + 1))
  fi
}
for f in "${accept[@]}"; do check ACCEPTED "$f"; done
for f in "${reject[@]}"; do check REJECTED "$f"; done
# A corruption made here must be rejected at the corrupted line, not before.
for f in "${!reject_line[@]}"; do
  if ! grep -qF "REJECTED: $f: no behaviour of Raft.tla produces line ${reject_line[$f]} of" <<<"$out"; then
    echo "  UNEXPECTED: $f: not rejected at its corrupted line ${reject_line[$f]}"
    failures=$((failures + 1))
  fi
done
for f in "${reject[@]}"; do grep -F "REJECTED: $f" <<<"$out" | cut -c1-200; done
echo "validated ${#accept[@]} traces expected to be accepted and ${#reject[@]} corrupted ones in $((SECONDS - t0))s"

if [[ $failures -eq 0 ]]; then echo "check-traces.sh: PASSED in $((SECONDS - start))s"; exit 0; fi
echo "check-traces.sh: $failures FAILED"
exit 1
