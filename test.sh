#!/usr/bin/env bash
# Runs every test of RaftVerified and ends with one line: "N passed, N failed".
#
#   ./test.sh                 everything
#   ./test.sh --filter EXPR   only tests matching a dotnet test filter (TLC checks skipped)
#   ./test.sh --no-tlc        skip the TLC model checks
#
# Installs what is missing (PostgreSQL, Java through apt; NuGet restore; build), starts a
# private PostgreSQL for the tests (removed on exit, also on failure or Ctrl-C) and exports
# its connection string as RAFTV_TEST_PG. Exit status is non-zero when anything failed or
# when no test ran.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
source scripts/common.sh

filter=""; run_tlc=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --filter) filter="$2"; run_tlc=0; shift 2 ;;
    --no-tlc) run_tlc=0; shift ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) log "test.sh: unknown argument '$1' (see ./test.sh --help)"; exit 2 ;;
  esac
done

passed=0; failed=0
started=$SECONDS
results="$(mktemp -d "${TMPDIR:-/tmp}/raftverified-results.XXXXXX")"
pg_data=""

cleanup() {
  if [[ -n "$pg_data" ]]; then
    dotnet "$ROOT/src/Raft.Kv/bin/Release/net10.0/raftv.dll" pg stop --data "$pg_data" --destroy >/dev/null 2>&1 \
      || log "could not stop the test PostgreSQL in $pg_data"
    pg_data=""
  fi
  rm -rf "$results"
}
trap cleanup EXIT

# Children run in the background and are awaited: a signal interrupts `wait` at once, whereas a
# foreground `dotnet test` would hold the trap back until it chose to exit.
kill_tree() {
  local child
  for child in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$child"; done
  kill -TERM "$1" 2>/dev/null || true
}
on_signal() {
  log "interrupted: stopping the tests and the test PostgreSQL"
  local child
  for child in $(pgrep -P $$ 2>/dev/null); do kill_tree "$child"; done
  exit 130
}
trap on_signal INT TERM
run() { "$@" & wait $!; }

# 1. What the suite needs.
require_dotnet
ensure_postgres
ensure_etcdctl
ensure_etcd_server
ensure_node
[[ $run_tlc -eq 1 ]] && ensure_java

# 2. Restore and build once; every run below uses --no-build.
log "== build"
run build_solution || { echo "0 passed, 1 failed"; exit 1; }

# 3. A private PostgreSQL for the tests that need one.
pg_data="$(mktemp -d "${TMPDIR:-/tmp}/raftverified-test-pg.XXXXXX")"
rmdir "$pg_data"   # LocalPostgres creates it and gives it to the postgres user
if ! RAFTV_TEST_PG="$(dotnet "$ROOT/src/Raft.Kv/bin/Release/net10.0/raftv.dll" pg start --data "$pg_data" --database raftverified_test --no-sync)"; then
  log "could not start the test PostgreSQL"; echo "0 passed, 1 failed"; exit 1
fi
export RAFTV_TEST_PG
log "== test PostgreSQL: $RAFTV_TEST_PG"

# 4. Every test project. Counts come from each run's TRX report.
trx_count() {  # trx_count FILE passed|failed
  grep -o '<Counters [^>]*' "$1" | grep -o " $2=\"[0-9]*\"" | grep -o '[0-9]*' || echo 0
}

for proj in tests/*/*.csproj tests/*/*.fsproj; do
  [[ -f "$proj" ]] || continue
  name="$(basename "${proj%.*}")"
  log "== $name"
  t0=$SECONDS
  args=(test "$proj" -c Release --no-build --nologo --results-directory "$results/$name" --logger "trx;LogFileName=$name.trx" --logger "console;verbosity=minimal")
  [[ -n "$filter" ]] && args+=(--filter "$filter")
  run dotnet "${args[@]}"
  status=$?
  trx="$results/$name/$name.trx"
  if [[ -f "$trx" ]]; then
    p=$(trx_count "$trx" passed); f=$(trx_count "$trx" failed)
    passed=$((passed + p)); failed=$((failed + f))
    log "   $name: $p passed, $f failed in $((SECONDS - t0))s"
    # A crash after some tests passed still has to count as a failure.
    if [[ $status -ne 0 && $f -eq 0 ]]; then failed=$((failed + 1)); log "   $name: the test host exited with $status"; fi
  else
    log "   $name: no report (exit $status)"
    [[ $status -ne 0 ]] && failed=$((failed + 1))
  fi
done

# 5. Script suites that print their own "N passed, N failed" line.
run_counted() {
  local label="$1"; shift
  log "== $label"
  local out status t0=$SECONDS
  local log_file; log_file="$(mktemp -p "$results")"
  run "$@" > >(tee "$log_file" >&2) 2>&1; status=$?
  out="$(cat "$log_file")"
  local line; line="$(grep -E '^[0-9]+ passed, [0-9]+ failed' <<<"$out" | tail -1)"
  if [[ -n "$line" ]]; then
    local p f; read -r p _ f _ <<<"${line//,/}"
    passed=$((passed + p)); failed=$((failed + f))
    [[ $status -ne 0 && $f -eq 0 ]] && failed=$((failed + 1))
  elif [[ $status -eq 0 ]]; then passed=$((passed + 1))
  else failed=$((failed + 1))
  fi
  log "   $label: exit $status in $((SECONDS - t0))s"
}

[[ -x tests/interaction.sh && -z "$filter" ]] && run_counted "etcd interaction suite" tests/interaction.sh --all

# 6. TLC: the model and its mutants. "Not available" is reported, never counted as passed.
run_tlc_check() {
  local label="$1"; shift
  log "== $label"
  local t0=$SECONDS status
  run "$@"; status=$?
  case $status in
    0) passed=$((passed + 1)); log "   $label: passed in $((SECONDS - t0))s" ;;
    3) log "   $label: TLC not available: NOT RUN (see tlaplus/README.md to provide TLC)" ;;
    *) failed=$((failed + 1)); log "   $label: FAILED (exit $status)" ;;
  esac
}
if [[ $run_tlc -eq 1 ]]; then
  [[ -x tlaplus/check.sh ]] && run_tlc_check "TLC model check (ci)" tlaplus/check.sh ci
  [[ -x tlaplus/check-mutants.sh ]] && run_tlc_check "TLC mutants" tlaplus/check-mutants.sh
  [[ -x tlaplus/check-traces.sh ]] && run_tlc_check "TLC trace validation" tlaplus/check-traces.sh
fi

log "== done in $((SECONDS - started))s"
echo "$passed passed, $failed failed"
[[ $failed -eq 0 && $((passed + failed)) -gt 0 ]]
