#!/usr/bin/env bash
# Model-checks Raft.tla with TLC:  tlaplus/check.sh ci|deep
#
#   ci    MCRaft_ci.cfg: 3 servers, small bounds, symmetry (a few minutes on 2 cores)
#   deep  MCRaft_deep.cfg: larger bounds, for long runs (hours)
#
# Runs TLC through tlaplus/tlc.sh and prints TLC's state counts, the depth and the
# wall time.  Exit status: 0 when every invariant and property holds, 3 when TLC is
# not available (from tlc.sh), 1 on a violation or any other TLC failure.
# Environment: TLC_WORKERS, TLC_HEAP (see tlc.sh); CHECK_LOG=FILE keeps TLC's output.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

model="${1:-}"
case "$model" in
  ci|deep) ;;
  *) echo "usage: tlaplus/check.sh ci|deep" >&2; exit 2 ;;
esac
cfg="MCRaft_$model.cfg"

# MCRaft.tla's MCNext restates Raft.tla's Next with the bounds folded in: an action
# added to Next but not to MCNext would silently go unchecked.
actions() { awk -v from="$2" -v to="$3" '$0 ~ from {f=1; next} $0 ~ to {f=0} f' "$here/$1" \
              | grep -oE '[A-Z][A-Za-z]+\(' | tr -d '(' | sort -u; }
missing="$(comm -23 <(actions Raft.tla '^Next ==' '^Spec ==') <(actions MCRaft.tla '^MCNext ==' '^MCSpec =='))"
if [[ -n "$missing" ]]; then
  echo "check.sh: MCRaft.tla's MCNext lacks actions of Raft.tla's Next: $(echo $missing)"
  exit 1
fi

out="${CHECK_LOG:-$(mktemp "${TMPDIR:-/tmp}/raftverified-check.XXXXXX")}"
[[ -n "${CHECK_LOG:-}" ]] || trap 'rm -f "$out"' EXIT

echo "TLC: $cfg (MCRaft.tla)"
start=$SECONDS
# TLC resolves modules from the working directory; -noGenerateSpecTE keeps it from
# writing trace modules next to the spec.
(cd "$here" && ./tlc.sh -noGenerateSpecTE -cleanup -config "$cfg" MCRaft.tla) >"$out" 2>&1
rc=$?
elapsed=$((SECONDS - start))

if [[ $rc -eq 3 ]]; then
  tail -n 1 "$out"
  exit 3
fi

# TLC's summary lines.
grep -E "states generated|distinct states found|depth of the complete state graph|^Error:|is violated|Finished in" "$out" \
  | grep -v "^Progress" | tail -n 8
if grep -qE "is violated|^Error:" "$out"; then
  echo "--- counterexample / error (tail) ---"
  sed -n '/is violated\|^Error:/,$p' "$out" | tail -n 80
fi
echo "wall time: ${elapsed}s"

if [[ $rc -eq 0 ]] && grep -q "No error has been found" "$out"; then
  echo "check.sh $model: PASSED"
  exit 0
fi
echo "check.sh $model: FAILED (TLC exit $rc)"
exit 1
