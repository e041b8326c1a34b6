#!/usr/bin/env bash
# Runs TLC on every seeded bug in tlaplus/mutants/*.cfg:  tlaplus/check-mutants.sh [NAME...]
#
# Each mutants/NAME.cfg sets Mutant = "NAME" (see MUTANTS in Raft.tla) and small,
# steered bounds; its second line names the invariant expected to catch it.  The
# script passes only if TLC reports an invariant (or property) violation for EVERY
# mutant; it prints which one caught each.  Exit status: 0 all caught, 1 some mutant
# survived or TLC failed otherwise, 3 TLC not available (from tlc.sh).
# Environment: MUTANT_TIMEOUT seconds per mutant (default 420), TLC_WORKERS, TLC_HEAP.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

if [[ $# -gt 0 ]]; then names=("$@")
else names=(); for f in mutants/*.cfg; do names+=("$(basename "$f" .cfg)"); done; fi

caught=0; survived=0; total_start=$SECONDS
for name in "${names[@]}"; do
  cfg="mutants/$name.cfg"
  [[ -f "$cfg" ]] || { echo "mutant $name: no $cfg"; survived=$((survived + 1)); continue; }
  expected="$(sed -n "2s/.*Expected to violate: *//p" "$cfg" | cut -d" " -f1)"
  out="$(mktemp "${TMPDIR:-/tmp}/raftverified-mutant.XXXXXX")"
  start=$SECONDS
  timeout "${MUTANT_TIMEOUT:-420}" ./tlc.sh -noGenerateSpecTE -cleanup -config "$cfg" MCRaft.tla >"$out" 2>&1
  rc=$?
  secs=$((SECONDS - start))
  if [[ $rc -eq 3 ]]; then tail -n 1 "$out"; rm -f "$out"; exit 3; fi
  which="$(grep -oE '(Invariant|Action property|Temporal property) [A-Za-z]+ is violated' "$out" | head -n 1 \
           | sed -E 's/^(Invariant|Action property|Temporal property) ([A-Za-z]+) is violated/\2/')"
  if [[ -z "$which" ]] && grep -q "Temporal properties were violated" "$out"; then which="(a temporal property)"; fi
  states="$(grep -E 'distinct states found' "$out" | grep -v Progress | tail -n 1)"
  depth="$(grep -oE '^State [0-9]+:' "$out" | tail -n 1 | tr -dc 0-9)"
  if [[ -n "$which" ]]; then
    caught=$((caught + 1))
    note=""; [[ "$which" != "$expected" ]] && note=" (expected $expected)"
    echo "mutant $name: CAUGHT by $which$note, counterexample of ${depth:-?} states, ${secs}s; $states"
  else
    survived=$((survived + 1))
    if [[ $rc -eq 124 ]]; then why="timed out after ${secs}s"; else why="TLC exit $rc, no violation"; fi
    echo "mutant $name: SURVIVED ($why)"
    grep -E "^Error|Exception" "$out" | head -n 5
  fi
  rm -f "$out"
done
echo "mutants: $caught caught, $survived survived, $((SECONDS - total_start))s"
[[ $survived -eq 0 ]]
