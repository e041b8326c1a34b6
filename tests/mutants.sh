#!/usr/bin/env bash
# Seeded bugs in the core (src/Raft.Spec, the `#if MUTANT_*` blocks) against the conformance
# suites: each must be caught.
#
#   tests/mutants.sh [--spec-tests] [--interaction] [NAME...]
#
# Builds each mutant (-p:RaftMutant=NAME defines MUTANT_NAME_IN_CAPS) in its own artifacts
# folder, runs tests/Raft.Conformance.Tests on it (the state graphs of tlaplus/graph replayed),
# with --spec-tests also tests/Raft.Spec.Tests and with --interaction also tests/interaction.sh
# --all, and prints a table: mutant, caught, by which tests, time. The default build defines no
# mutant. Exit status: 0 when every mutant was caught, 1 otherwise.
# Environment: MUTANT_ARTIFACTS (default /tmp/raftverified-mutants) holds the builds.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# Every seeded bug: its name, and what it breaks.
declare -A BUGS=(
  [CommitOldTerm]="maybeCommit commits the quorum index whatever its term (figure 8)"
  [VoteRespBeforePersist]="a granted MsgVoteResp is sent before the vote is durable"
  [RejectHintOffByOne]="the leader backs off to the rejection hint instead of one past it"
  [LearnerInQuorum]="learners' acknowledgements count towards the commit quorum"
  [JointQuorumOneHalf]="a joint configuration commits on its incoming half alone"
  [LeaseReadWithoutCheckQuorum]="ReadIndex answered from the leader's lease without CheckQuorum"
  [HeartbeatFullCommit]="a heartbeat carries the commit index, not min(match, commit)"
  [VoteIgnoresLog]="votes granted without the candidate's log being up to date"
  [LeaseIgnored]="a vote request deposes a leader heard from within the election timeout"
  [PendingConfIgnored]="a second conf change is accepted before the first is applied"
)
ORDER=(CommitOldTerm VoteRespBeforePersist RejectHintOffByOne LearnerInQuorum JointQuorumOneHalf
       LeaseReadWithoutCheckQuorum HeartbeatFullCommit VoteIgnoresLog LeaseIgnored PendingConfIgnored)

spec_tests=0; interaction=0; names=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --spec-tests) spec_tests=1 ;;
    --interaction) interaction=1 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "mutants.sh: unknown option $1" >&2; exit 2 ;;
    *) [[ -n "${BUGS[$1]:-}" ]] || { echo "mutants.sh: unknown mutant $1 (known: ${ORDER[*]})" >&2; exit 2; }
       names+=("$1") ;;
  esac
  shift
done
[[ ${#names[@]} -gt 0 ]] || names=("${ORDER[@]}")

base="${MUTANT_ARTIFACTS:-/tmp/raftverified-mutants}"
mkdir -p "$base"

# The names of the failed tests of a TRX report, shortened to "Class.method(args)".
failed_tests() {
  grep -o '<UnitTestResult [^>]*outcome="Failed"[^>]*' "$1" 2>/dev/null \
    | grep -o 'testName="[^"]*"' | sed 's/^testName="//; s/"$//; s/^Raft\.[A-Za-z.]*+//; s/&quot;/"/g' | sort -u
}

# Runs one test project on the mutant's build; prints the failed tests (or a crash).
run_suite() {  # run_suite NAME PROJECT ARTIFACTS
  local name="$1" proj="$2" art="$3"
  local results="$art/results-$(basename "$proj" .fsproj)"
  rm -rf "$results"
  RaftMutant="$name" dotnet test "$proj" -c Release --artifacts-path "$art" --no-build --nologo \
    --results-directory "$results" --logger "trx;LogFileName=r.trx" >"$results.log" 2>&1
  local status=$?
  local failed; failed="$(failed_tests "$results/r.trx")"
  if [[ -n "$failed" ]]; then echo "$failed"
  elif [[ $status -ne 0 ]]; then echo "$(basename "$proj" .fsproj): test host exited with $status"
  fi
}

rows=(); survivors=0
for name in "${names[@]}"; do
  art="$base/$name"
  t0=$SECONDS
  echo "== $name: ${BUGS[$name]}" >&2
  # The environment variable is seen by MSBuild as the property (scripts that build on their
  # own, like interaction.sh, pick it up too).
  if ! RaftMutant="$name" dotnet build tests/Raft.Conformance.Tests -c Release --artifacts-path "$art" \
        -nologo -v q -clp:ErrorsOnly >"$art.build.log" 2>&1; then
    echo "   build failed (see $art.build.log)" >&2
    rows+=("$name|BUILD FAILED|-|$((SECONDS - t0))s"); survivors=$((survivors + 1)); continue
  fi
  by="$(run_suite "$name" tests/Raft.Conformance.Tests/Raft.Conformance.Tests.fsproj "$art")"
  if [[ $spec_tests -eq 1 ]]; then
    RaftMutant="$name" dotnet build tests/Raft.Spec.Tests -c Release --artifacts-path "$art" -nologo -v q -clp:ErrorsOnly \
      >>"$art.build.log" 2>&1 || by="$by"$'\n'"Raft.Spec.Tests: build failed"
    by="$by"$'\n'"$(run_suite "$name" tests/Raft.Spec.Tests/Raft.Spec.Tests.fsproj "$art")"
  fi
  if [[ $interaction -eq 1 ]]; then
    out="$(RaftMutant="$name" RAFTV_ARTIFACTS="$art/interaction" tests/interaction.sh --all 2>&1)"
    fails="$(grep -c '^FAIL' <<<"$out")"
    [[ "$fails" -gt 0 ]] && by="$by"$'\n'"interaction.sh: $fails files"
  fi
  by="$(grep -v '^$' <<<"$by" | paste -sd ';' - | sed 's/;/; /g')"
  secs=$((SECONDS - t0))
  if [[ -n "$by" ]]; then rows+=("$name|yes|$by|${secs}s"); echo "   caught in ${secs}s" >&2
  else rows+=("$name|NO|-|${secs}s"); survivors=$((survivors + 1)); echo "   SURVIVED (${secs}s)" >&2
  fi
done

echo
echo "| mutant | seeded bug | caught | by | time |"
echo "|---|---|---|---|---|"
for row in "${rows[@]}"; do
  IFS='|' read -r name caught by secs <<<"$row"
  echo "| $name | ${BUGS[$name]} | $caught | $by | $secs |"
done
echo
if [[ $survivors -eq 0 ]]; then echo "mutants.sh: all ${#names[@]} mutants caught"; exit 0; fi
echo "mutants.sh: $survivors of ${#names[@]} mutants not caught"; exit 1
