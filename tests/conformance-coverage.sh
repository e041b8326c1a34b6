#!/usr/bin/env bash
# Line and branch coverage of the core's algorithm (src/Raft.Spec) reached by the conformance
# suite alone (tests/Raft.Conformance.Tests: the state graphs of tlaplus/graph replayed):
#
#   tests/conformance-coverage.sh [--filter EXPR]
#
# Runs the suite with coverlet (`--collect:"XPlat Code Coverage"`, cobertura XML) and prints,
# per algorithm file, covered/total lines and branches (branches as coverlet counts them in the
# compiled IL, so F# pattern matches contribute branches of their own). Builds into
# $COVERAGE_ARTIFACTS (default /tmp/raftverified-coverage).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
art="${COVERAGE_ARTIFACTS:-/tmp/raftverified-coverage}"
results="$art/results"
rm -rf "$results"

args=(test tests/Raft.Conformance.Tests -c Release --artifacts-path "$art" --nologo
      --collect:"XPlat Code Coverage" --results-directory "$results")
if [[ "${1:-}" == "--filter" ]]; then args+=(--filter "$2"); fi
dotnet build tests/Raft.Conformance.Tests -c Release --artifacts-path "$art" -nologo -v q -clp:ErrorsOnly
dotnet "${args[@]}" --no-build -- \
  DataCollectionRunSettings.DataCollectors.DataCollector.Configuration.Include="[Raft.Spec]*" \
  DataCollectionRunSettings.DataCollectors.DataCollector.Configuration.Format=cobertura >"$art/test.log" 2>&1 \
  || { tail -n 20 "$art/test.log"; echo "conformance-coverage.sh: the suite failed (see $art/test.log)" >&2; }

xml="$(find "$results" -name coverage.cobertura.xml | head -n 1)"
[[ -n "$xml" ]] || { echo "conformance-coverage.sh: no coverage report under $results" >&2; exit 1; }

python3 - "$xml" <<'EOF'
import re, sys
import xml.etree.ElementTree as ET

ALGORITHM = ["Raft.fs", "Actions.fs", "Step.fs", "RaftLog.fs", "Progress.fs", "Tracker.fs",
             "Quorum.fs", "ConfChange.fs", "ReadOnly.fs"]
files = {}
for cls in ET.parse(sys.argv[1]).getroot().iter("class"):
    name = cls.get("filename").replace("\\", "/").split("/")[-1]
    lines = files.setdefault(name, {})
    for line in cls.iter("line"):
        n = int(line.get("number"))
        hits = int(line.get("hits"))
        covered, total = 0, 0
        if line.get("branch") == "True":
            m = re.search(r"\((\d+)/(\d+)\)", line.get("condition-coverage", ""))
            if m:
                covered, total = int(m.group(1)), int(m.group(2))
        h, c, t = lines.get(n, (0, 0, 0))
        lines[n] = (max(h, hits), max(c, covered), max(t, total))

def rate(a, b):
    return "%5.1f%%" % (100.0 * a / b) if b else "    -"

print("| file | lines covered | line rate | branches covered | branch rate |")
print("|---|---|---|---|---|")
tl = tc = tb = tbc = 0
for name in ALGORITHM:
    lines = files.get(name, {})
    total = len(lines)
    covered = sum(1 for h, _, _ in lines.values() if h > 0)
    btotal = sum(t for _, _, t in lines.values())
    bcov = sum(c for _, c, _ in lines.values())
    tl += total; tc += covered; tb += btotal; tbc += bcov
    print("| %s | %d/%d | %s | %d/%d | %s |" % (name, covered, total, rate(covered, total), bcov, btotal, rate(bcov, btotal)))
print("| all of them | %d/%d | %s | %d/%d | %s |" % (tc, tl, rate(tc, tl), tbc, tb, rate(tbc, tb)))
EOF
echo "report: $xml"
