#!/usr/bin/env bash
# Regenerates the stored state graphs that tests/Raft.Conformance.Tests replays:
#
#   tlaplus/graph/regenerate.sh [MODEL...]      every model in tlaplus/graph/models/ by default
#   tlaplus/graph/regenerate.sh --count MODEL   only count the model's states (no dump)
#
# For each models/NAME.cfg (a model of MCGraph.tla), TLC (found by tlaplus/tlc.sh) dumps the
# complete state graph with action labels, including the successors beyond the model's
# constraint; dot2graph.py turns it into tlaplus/graph/NAME.jsonl.gz, stamped with the
# SHA-256 of the spec files it came from (the conformance suite fails when they change).
# The dump is large (gigabytes for the bigger models): it goes to a temporary folder
# (TMPDIR), removed afterwards. Exit status: 0 done, 1 a failure, 3 TLC not available.
# Environment: TLC_WORKERS, TLC_HEAP (see tlc.sh); GRAPH_DOT_DIR=DIR keeps the dumps there,
# and with GRAPH_REUSE_DOT=1 converts an existing dump again instead of running TLC.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
spec="$(cd "$here/.." && pwd)"

count_only=0
if [[ "${1:-}" == "--count" ]]; then count_only=1; shift; fi
if [[ $# -gt 0 ]]; then models=("$@")
else models=(); for f in "$here"/models/*.cfg; do models+=("$(basename "$f" .cfg)"); done; fi

command -v python3 >/dev/null || { echo "regenerate.sh: python3 is needed to convert TLC's dump" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/raftverified-graph.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# TLC resolves modules from the working directory: the spec and the models side by side.
cp "$spec/Raft.tla" "$here/MCGraph.tla" "$work/"

# The constants the conformance suite needs, as they are set in a model file.
constant() {  # constant CFG NAME
  sed -n "s/^ *$2 *= *\(.*\)$/\1/p" "$1" | head -n 1
}

for model in "${models[@]}"; do
  cfg="$here/models/$model.cfg"
  [[ -f "$cfg" ]] || { echo "regenerate.sh: no model $cfg" >&2; exit 1; }
  cp "$cfg" "$work/$model.cfg"
  start=$SECONDS
  log="$work/$model.log"
  if [[ $count_only -eq 1 ]]; then
    set +e
    (cd "$work" && "$spec/tlc.sh" -noGenerateSpecTE -cleanup -config "$model.cfg" MCGraph.tla) >"$log" 2>&1
    rc=$?
    set -e
    [[ $rc -eq 3 ]] && { tail -n 1 "$log"; exit 3; }
    echo "$model: $(grep -E 'distinct states found|depth of the complete' "$log" | grep -v '^Progress' | tr '\n' ' ') ($((SECONDS - start)) s)"
    [[ $rc -eq 0 ]] || { grep -E "^Error|violated" "$log" | head -n 5; exit 1; }
    continue
  fi
  dot="${GRAPH_DOT_DIR:-$work}/$model.dot"
  # The stamps hash the copies TLC reads (taken once above), not the live files: an edit made
  # while TLC runs must make the graph stale, not fresh. A kept dump keeps its stamps beside it,
  # and is reused only while they still hold.
  stamps=(--stamp "Raft.tla=$(sha256sum "$work/Raft.tla" | cut -d' ' -f1)"
          --stamp "graph/MCGraph.tla=$(sha256sum "$work/MCGraph.tla" | cut -d' ' -f1)"
          --stamp "graph/models/$model.cfg=$(sha256sum "$work/$model.cfg" | cut -d' ' -f1)")
  if [[ "${GRAPH_REUSE_DOT:-0}" == 1 && -f "$dot" ]]; then
    if [[ "$(cat "$dot.stamp" 2>/dev/null)" != "${stamps[*]}" ]]; then
      echo "regenerate.sh: $dot was dumped from other spec files than the current ones (or has no $dot.stamp); run without GRAPH_REUSE_DOT" >&2
      exit 1
    fi
    echo "== $model: reusing $dot"
  else
    echo "== $model: TLC"
    set +e
    (cd "$work" && "$spec/tlc.sh" -noGenerateSpecTE -cleanup -config "$model.cfg" \
        -dump dot,actionlabels,constrained "$dot" MCGraph.tla) >"$log" 2>&1
    rc=$?
    set -e
    if [[ $rc -eq 3 ]]; then tail -n 1 "$log"; exit 3; fi
    if [[ $rc -ne 0 ]] || ! grep -q "No error has been found" "$log"; then
      echo "regenerate.sh: TLC failed on $model (exit $rc):" >&2
      grep -E "^Error|violated|rror" "$log" | head -n 20 >&2
      exit 1
    fi
    grep -E "distinct states found" "$log" | grep -v '^Progress' | sed 's/^/   /'
    echo "${stamps[*]}" >"$dot.stamp"
  fi
  echo "== $model: converting ($(du -h "$dot" | cut -f1) of dot)"
  configs=()
  for name in Server InitVoters InitLearners PreVoteEnabled CheckQuorumEnabled MaxAppendEntries Value GraphStart CCNodes; do
    value="$(constant "$cfg" "$name")"
    [[ -n "$value" ]] || { echo "regenerate.sh: $model sets no $name" >&2; exit 1; }
    configs+=(--config "$name=$value")
  done
  python3 "$here/dot2graph.py" "$dot" "$here/$model.jsonl.gz" --model "$model" "${stamps[@]}" "${configs[@]}"
  [[ -n "${GRAPH_DOT_DIR:-}" ]] || rm -f "$dot" "$dot.stamp"
  echo "   $(du -h "$here/$model.jsonl.gz" | cut -f1) in $((SECONDS - start)) s"
done
