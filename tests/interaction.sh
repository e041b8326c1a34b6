#!/usr/bin/env bash
# Runs etcd-raft interaction test files (datadriven format) through the F# harness.
#
#   tests/interaction.sh [--ignore-logs] [--diff] [--rewrite] [--all] FILE...
#
#   --ignore-logs  drop lines starting with INFO, DEBUG, WARN or ERROR (after indentation)
#                  from both expected and actual output before comparing
#   --diff         show the first differences of each failing file
#   --rewrite      print each file with the actual outputs in place of the expected ones
#   --all          every file under ../shared/etcd-raft-testdata/interaction and
#                  tests/interaction/scenarios
#
# Prints "PASS path" or "FAIL path" per file, then "N passed, N failed"; exits 0 only when
# every file passed. Builds the runner (Release) first when it is missing or older than its
# sources. RAFTV_ARTIFACTS=DIR builds into DIR (dotnet --artifacts-path) instead of bin/.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROJ="$ROOT/tests/interaction/Raft.Interaction.Runner/Raft.Interaction.Runner.fsproj"
SUITE="$ROOT/../shared/etcd-raft-testdata/interaction"
SCENARIOS="$ROOT/tests/interaction/scenarios"

args=()
for a in "$@"; do
  case "$a" in
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --all)
      # Expanded here so that the runner works from any build output location.
      if [[ ! -d "$SUITE" ]]; then echo "interaction.sh: no suite at $SUITE" >&2; exit 2; fi
      for f in "$SUITE"/*.txt "$SCENARIOS"/*.txt; do [[ -f "$f" ]] && args+=("$(cd "$(dirname "$f")" && pwd)/$(basename "$f")"); done ;;
    *) args+=("$a") ;;
  esac
done

build_args=(build "$PROJ" -c Release -nologo -v q -clp:ErrorsOnly)
if [[ -n "${RAFTV_ARTIFACTS:-}" ]]; then
  build_args+=(--artifacts-path "$RAFTV_ARTIFACTS")
  DLL="$RAFTV_ARTIFACTS/bin/Raft.Interaction.Runner/release/Raft.Interaction.Runner.dll"
else
  DLL="$ROOT/tests/interaction/Raft.Interaction.Runner/bin/Release/net10.0/Raft.Interaction.Runner.dll"
fi

# Rebuild only when a source is newer than what it compiles into: the core's sources than
# Raft.Spec.dll next to the runner (the runner itself is not recompiled when only the
# core's implementation changed), the harness and runner sources than the runner.
newer_than() {  # newer_than FILE PATH... : prints a source under PATHs newer than FILE
  find "${@:2}" \( -name '*.fs' -o -name '*.fsproj' -o -name '*.props' \) \
    -not -path '*/obj/*' -not -path '*/bin/*' -newer "$1" -print -quit 2>/dev/null
}
stale=1
SPEC_DLL="$(dirname "$DLL")/Raft.Spec.dll"
if [[ -f "$DLL" && -f "$SPEC_DLL" ]] \
   && [[ -z "$(newer_than "$SPEC_DLL" "$ROOT/src/Raft.Spec" "$ROOT/Directory.Build.props" "$ROOT/Directory.Packages.props")" ]] \
   && [[ -z "$(newer_than "$DLL" "$ROOT/tests/interaction/Raft.Interaction.Runner" \
                 "$ROOT/tests/Raft.Spec.Tests/DataDriven.fs" "$ROOT/tests/Raft.Spec.Tests/InteractionEnv.fs")" ]]; then
  stale=0
fi
if [[ $stale -eq 1 ]]; then
  out="$(mktemp "${TMPDIR:-/tmp}/interaction-build.XXXXXX")"
  if ! dotnet "${build_args[@]}" >"$out" 2>&1; then
    cat "$out" >&2; rm -f "$out"
    echo "interaction.sh: build failed" >&2
    echo "0 passed, 1 failed"
    exit 1
  fi
  rm -f "$out"
fi

exec dotnet "$DLL" "${args[@]}"
