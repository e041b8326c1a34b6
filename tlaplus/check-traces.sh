#!/usr/bin/env bash
# Trace validation with TLC (TraceRaft.tla): implementation traces must be behaviours of
# Raft.tla, corrupted ones must not.   tlaplus/check-traces.sh [--no-simulate]
#
#   1. tests/Raft.Spec.Tests/traces/sim-seed1.ndjson (a committed simulator trace): accepted.
#   2. its corruptions (term jump, commit past the log, a vote for two candidates; written
#      by TraceCorruption in tests/Raft.Spec.Tests/TraceValidationTests.fs): rejected.
#   3. fresh traces of ./raftv simulate for seeds 1..3 (3 nodes, network and disk faults,
#      PreVote and CheckQuorum off: see tlaplus/README-trace.md): accepted.
#
# Exit status: 0 all as expected, 1 otherwise, 3 TLC not available (nothing was judged).
# Environment: TRACE_SEEDS (default "1 2 3"), TRACE_STEPS (default 300), TRACE_TIMEOUT.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
fixtures="$root/tests/Raft.Spec.Tests/traces"
simulate=1
[[ "${1:-}" == "--no-simulate" ]] && simulate=0

failures=0
# expect accepted|rejected FILE [validate-trace options]
expect() {
  local want="$1" file="$2"; shift 2
  local out rc
  out="$("$here/validate-trace.sh" "$file" "$@")"; rc=$?
  [[ $rc -eq 3 ]] && { echo "$out"; exit 3; }
  echo "$out" | head -n 1 | cut -c1-200
  local ok=0
  case $want in
    accepted) [[ $rc -eq 0 ]] && ok=1 ;;
    rejected) [[ $rc -eq 1 ]] && echo "$out" | grep -q '^REJECTED' && ok=1 ;;
  esac
  if [[ $ok -eq 0 ]]; then
    echo "  UNEXPECTED: expected $want"; echo "$out" | tail -n +2 | head -n 5
    failures=$((failures + 1))
  fi
}

expect accepted "$fixtures/sim-seed1.ndjson"
for c in term-jump commit-past-log double-vote; do
  expect rejected "$fixtures/sim-seed1.$c.ndjson"
done

if [[ $simulate -eq 1 ]]; then
  work="$(mktemp -d "${TMPDIR:-/tmp}/raftverified-traces.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  for seed in ${TRACE_SEEDS:-1 2 3}; do
    f="$work/sim-seed$seed.ndjson"
    if ! "$root/raftv" simulate --nodes 3 --seed "$seed" --steps "${TRACE_STEPS:-300}" \
         --faults drop,duplicate,reorder,delay,partition,slowdisk --prevote false --checkquorum false \
         --trace "$f" >"$work/sim.out" 2>&1; then
      echo "raftv simulate --seed $seed failed:"; tail -n 5 "$work/sim.out"; failures=$((failures + 1)); continue
    fi
    expect accepted "$f"
  done
fi

[[ $failures -eq 0 ]] && { echo "check-traces.sh: PASSED"; exit 0; }
echo "check-traces.sh: $failures FAILED"
exit 1
