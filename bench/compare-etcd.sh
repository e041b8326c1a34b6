#!/usr/bin/env bash
# Runs the same etcd v3 workloads against a 3-member etcd and a 3-member RaftVerified on this
# machine, alternately, and prints medians (with min and max) over the repetitions, the ratios
# RaftVerified/etcd and the servers' CPU time per operation. Equal durability: every etcd member
# fsyncs its own WAL (etcd's defaults); every RaftVerified member has its own private PostgreSQL
# with fsync and synchronous_commit on. Also measures the floors: the disk's fdatasync latency and
# PostgreSQL's single-row commit rate.
#
#   bench/compare-etcd.sh [--quick] [--reps N] [--out DIR]
#
# Results: bench/results/<timestamp>.json and <timestamp>.png (latency and throughput plot).
# Everything runs on loopback under one temp dir; every process and the dir are removed on exit
# and on Ctrl-C.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/common.sh"

quick=""
reps=""
out="$ROOT/bench/results"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) quick=1; shift ;;
    --reps) reps="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) log "compare-etcd.sh: unknown argument '$1' (try --help)"; exit 2 ;;
  esac
done
# --quick means one repetition unless --reps says otherwise.
[[ -z "$reps" ]] && reps=$([[ -n "$quick" ]] && echo 1 || echo 3)
[[ "$reps" =~ ^[1-9][0-9]*$ ]] || { log "--reps must be a positive integer"; exit 2; }

# ---- tools ------------------------------------------------------------------------------------
command -v etcd >/dev/null || apt_install etcd-server
command -v etcdctl >/dev/null || apt_install etcd-client
command -v gnuplot >/dev/null || apt_install gnuplot-nox || log "gnuplot missing: no plot"
command -v jq >/dev/null || apt_install jq
ensure_postgres
require_dotnet
PG_BIN="${PG_BIN:-$(dirname "$(compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' | sort -V | tail -1)")}"

# Our own build output: others may be building the shared tree at the same time.
ART="${RAFTV_BENCH_ARTIFACTS:-/tmp/raftv-bench-build}"
DLL="${RAFTV_DLL:-$ART/bin/Raft.Kv/release/raftv.dll}"
if [[ -z "${RAFTV_DLL:-}" ]]; then
  log "building raftv into $ART ..."
  dotnet build "$ROOT/src/Raft.Kv/Raft.Kv.csproj" -c Release --artifacts-path "$ART" -nologo -v q -clp:ErrorsOnly >&2
fi
raftv() { dotnet "$DLL" "$@"; }

# ---- processes and cleanup ----------------------------------------------------------------------
TMP="$(mktemp -d /tmp/compare-etcd.XXXXXX)"
chmod 755 "$TMP" # the private PostgreSQL servers run as the postgres user and must enter it
PIDS=()
PGDATA_DIRS=()
cleaning=""
cleanup() {
  [[ -n "$cleaning" ]] && return; cleaning=1
  trap - INT TERM
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    # An exited child stays a zombie until waited for: look at its state, not just its existence.
    for _ in $(seq 100); do [[ "$(awk '{print $3}' /proc/$pid/stat 2>/dev/null)" =~ ^(Z|)$ ]] && break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  for d in "${PGDATA_DIRS[@]}"; do
    [[ -f "$d/postmaster.pid" ]] && as_postgres "$PG_BIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM
as_postgres() { if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# CPU ticks (user+system) of the given processes; a PostgreSQL postmaster counts with its live
# children and with the children it already reaped (cutime/cstime), so backends that came and went
# during a run are included.
cpu_ticks() {
  local total=0 pid f
  for pid in "$@"; do
    [[ -r /proc/$pid/stat ]] || continue
    f=$(sed 's/^.*) //' "/proc/$pid/stat")  # fields after the command name; utime is the 12th
    read -r -a a <<<"$f"
    total=$((total + a[11] + a[12]))
  done
  echo "$total"
}
postmaster_tree() {
  local d pm
  for d in "$@"; do
    pm=$(head -1 "$d/postmaster.pid")
    echo "$pm"; ps -o pid= --ppid "$pm" || true
  done
}
cpu_ticks_pg() {
  # reaped children of each postmaster, then the live tree
  local total=0 d pm f
  for d in "$@"; do
    pm=$(head -1 "$d/postmaster.pid")
    f=$(sed 's/^.*) //' "/proc/$pm/stat"); read -r -a a <<<"$f"
    total=$((total + a[13] + a[14]))
  done
  echo $((total + $(cpu_ticks $(postmaster_tree "$@"))))
}
HZ=$(getconf CLK_TCK)

# ---- floors -----------------------------------------------------------------------------------
log "== floors"
fsync_us=$("$PG_BIN/pg_test_fsync" -s "$([[ -n $quick ]] && echo 1 || echo 3)" -f "$TMP/fsync-probe" 2>/dev/null \
  | awk '/^ *fdatasync / && /usecs\/op/ { for (i=1;i<=NF;i++) if ($i=="usecs/op") { print $(i-1); exit } }')
dd_count=$([[ -n $quick ]] && echo 300 || echo 1000)
dd_s=$(LC_ALL=C dd if=/dev/zero of="$TMP/dd-probe" bs=4k count=$dd_count oflag=dsync 2>&1 | awk '/copied/ { for (i=1;i<=NF;i++) if ($i ~ /^s,?$/) { print $(i-1); exit } }')
dd_us=$(awk -v s="$dd_s" -v n="$dd_count" 'BEGIN { printf "%.1f", s * 1e6 / n }')
rm -f "$TMP/dd-probe" "$TMP/fsync-probe"
log "fdatasync (pg_test_fsync, 8k writes): ${fsync_us:-?} us/op; dd 4k oflag=dsync: $dd_us us/write"

pg_start() { # dir -> connection string (run in $(...): the caller records the dir for cleanup first)
  raftv pg start --data "$1"
}

# PostgreSQL single-row commit rate, one client, synchronous_commit on (the durable default).
pg_probe_dir="$TMP/pg-probe"
PGDATA_DIRS+=("$pg_probe_dir")
probe_conn=$(pg_start "$pg_probe_dir")
probe_port=$(sed -n 4p "$pg_probe_dir/postmaster.pid")
psql_probe() { "$PG_BIN/psql" -h 127.0.0.1 -p "$probe_port" -U postgres -d raftverified -qAt "$@"; }
psql_probe -c "CREATE TABLE commit_probe (id bigserial PRIMARY KEY, v bytea)"
echo "INSERT INTO commit_probe (v) VALUES ('\\x00');" >"$TMP/probe.sql"
pg_tps=$("$PG_BIN/pgbench" -h 127.0.0.1 -p "$probe_port" -U postgres -n -c 1 -T "$([[ -n $quick ]] && echo 3 || echo 8)" -f "$TMP/probe.sql" raftverified 2>/dev/null \
  | awk '/^tps/ { print $3; exit }')
as_postgres "$PG_BIN/pg_ctl" -D "$pg_probe_dir" -m immediate -w stop >/dev/null
log "PostgreSQL single-row commits, 1 client: ${pg_tps:-?} tx/s"
: "$probe_conn"

# ---- etcd cluster -------------------------------------------------------------------------------
log "== starting a 3-member etcd ($(etcd --version | head -1))"
ETCD_PIDS=(); ETCD_EPS=()
cluster=""; declare -a E_CLIENT E_PEER
for i in 1 2 3; do E_CLIENT[$i]=$(free_port); E_PEER[$i]=$(free_port); cluster+="${cluster:+,}e$i=http://127.0.0.1:${E_PEER[$i]}"; done
for i in 1 2 3; do
  etcd --name "e$i" --data-dir "$TMP/etcd$i" \
    --listen-client-urls "http://127.0.0.1:${E_CLIENT[$i]}" --advertise-client-urls "http://127.0.0.1:${E_CLIENT[$i]}" \
    --listen-peer-urls "http://127.0.0.1:${E_PEER[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${E_PEER[$i]}" \
    --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "bench-$$" \
    --quota-backend-bytes $((8 * 1024 * 1024 * 1024)) --log-level error >"$TMP/etcd$i.log" 2>&1 &
  ETCD_PIDS+=($!); PIDS+=($!)
  ETCD_EPS+=("127.0.0.1:${E_CLIENT[$i]}")
done

# ---- RaftVerified cluster -----------------------------------------------------------------------
log "== starting a 3-member RaftVerified, each member on its own durable PostgreSQL"
RV_PIDS=(); RV_EPS=(); RV_PG=(); members=()
declare -a R_CLIENT R_PEER R_CONN
for i in 1 2 3; do
  PGDATA_DIRS+=("$TMP/pg$i"); RV_PG+=("$TMP/pg$i")
  R_CONN[$i]=$(pg_start "$TMP/pg$i")
  R_CLIENT[$i]=$(free_port); R_PEER[$i]=$(free_port)
  members+=(--member "$i,http://127.0.0.1:${R_PEER[$i]},http://127.0.0.1:${R_CLIENT[$i]}")
done
for i in 1 2 3; do
  dotnet "$DLL" serve --id "$i" --pg "${R_CONN[$i]}" "${members[@]}" >"$TMP/raftv$i.log" 2>&1 &
  RV_PIDS+=($!); PIDS+=($!)
  RV_EPS+=("127.0.0.1:${R_CLIENT[$i]}")
done

wait_ready() { # name endpoints...
  local name=$1; shift
  for _ in $(seq 120); do
    if etcdctl --endpoints="$(IFS=,; echo "$*")" --command-timeout=3s put bench/ready x >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  log "$name did not become ready; its logs:"; tail -n 20 "$TMP"/"$name"*.log >&2; exit 1
}
# Endpoints with the leader first.
leader_first() {
  local eps; eps=$(IFS=,; echo "$*")
  local status; status=$(etcdctl --endpoints="$eps" endpoint status -w json 2>/dev/null) || { echo "$eps"; return; }
  local leader; leader=$(jq -r '[.[] | select(.Status.header.member_id == .Status.leader) | .Endpoint][0] // empty' <<<"$status")
  if [[ -z "$leader" ]]; then echo "$eps"; return; fi
  echo "$leader$(for e in "$@"; do [[ "$e" == "$leader" ]] || printf ',%s' "$e"; done)"
}
wait_ready etcd "${ETCD_EPS[@]}"
wait_ready raftv "${RV_EPS[@]}"
log "etcd at $(leader_first "${ETCD_EPS[@]}"); RaftVerified at $(leader_first "${RV_EPS[@]}") (leaders first)"

# ---- workloads ----------------------------------------------------------------------------------
KEYS=1000
VAL=256
scale() { if [[ -n $quick ]]; then echo $(( $1 / 4 )); else echo "$1"; fi; }
# name kind consistency clients total
WORKLOADS=(
  "put-c1 put - 1 $(scale 400)"
  "put-c16 put - 16 $(scale 2000)"
  "put-c64 put - 64 $(scale 4000)"
  "range-l-c1 range l 1 $(scale 1000)"
  "range-l-c16 range l 16 $(scale 4000)"
  "range-l-c64 range l 64 $(scale 6000)"
  "range-s-c1 range s 1 $(scale 1500)"
  "range-s-c16 range s 16 $(scale 6000)"
  "range-s-c64 range s 64 $(scale 8000)"
)
mkdir -p "$TMP/runs"
cpu_of() { # system -> ticks of its servers
  if [[ $1 == etcd ]]; then cpu_ticks "${ETCD_PIDS[@]}"; else echo $(( $(cpu_ticks "${RV_PIDS[@]}") + $(cpu_ticks_pg "${RV_PG[@]}") )); fi
}
run_one() { # system workload rep
  local sys=$1 name=$2 kind=$3 cons=$4 clients=$5 total=$6 rep=$7 eps conns args
  if [[ $sys == etcd ]]; then eps=$(leader_first "${ETCD_EPS[@]}"); else eps=$(leader_first "${RV_EPS[@]}"); fi
  # Writes go to the leader; reads are spread over all members (leader first).
  if [[ $kind == put ]]; then eps=${eps%%,*}; conns=$(( clients < 4 ? clients : 4 )); else conns=$(( clients < 3 ? clients : 3 )); fi
  args=(bench "$kind" --endpoints "$eps" --clients "$clients" --conns "$conns" --total "$total" --val-size $VAL --key-space $KEYS --seed "$rep" --timeout 20)
  [[ $kind == range ]] && args+=(--consistency "$cons")
  local before after file="$TMP/runs/$sys.$name.$rep.json"
  before=$(cpu_of "$sys")
  if ! raftv "${args[@]}" --json "$file" >"$TMP/runs/$sys.$name.$rep.txt" 2>&1; then
    log "  $sys $name rep $rep had failures:"; sed -n '1,12p' "$TMP/runs/$sys.$name.$rep.txt" >&2
  fi
  after=$(cpu_of "$sys")
  [[ -f "$file" ]] || { echo '{}' >"$file"; }
  jq --argjson cpu "$(awk -v t=$((after - before)) -v hz="$HZ" 'BEGIN { print t / hz }')" --arg sys "$sys" --arg name "$name" --argjson rep "$rep" \
    '. + {system: $sys, workload: $name, rep: $rep, serverCpuSeconds: $cpu}' "$file" >"$file.tmp" && mv "$file.tmp" "$file"
  log "  $(printf '%-5s %-12s rep %d: %8.1f ops/s  p50 %7.3f ms  p99 %8.3f ms  cpu %.2f s' "$sys" "$name" "$rep" \
    "$(jq -r '.requestsPerSecond // 0' "$file")" "$(jq -r '.latencyMs.p50 // 0' "$file")" "$(jq -r '.latencyMs.p99 // 0' "$file")" \
    "$(jq -r '.serverCpuSeconds' "$file")")"
}

log "== preloading $KEYS keys"
for sys in etcd raftv; do
  if [[ $sys == etcd ]]; then eps=$(leader_first "${ETCD_EPS[@]}"); else eps=$(leader_first "${RV_EPS[@]}"); fi
  raftv bench put --endpoints "${eps%%,*}" --clients 32 --conns 4 --total $((KEYS * 3)) --val-size $VAL --key-space $KEYS --seed 99 \
    >"$TMP/preload-$sys.txt" 2>&1 || { log "preloading $sys failed:"; cat "$TMP/preload-$sys.txt" >&2; tail -n 20 "$TMP/$sys"*.log >&2; exit 1; }
done

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date +%s)
for rep in $(seq "$reps"); do
  log "== repetition $rep of $reps"
  for w in "${WORKLOADS[@]}"; do
    read -r name kind cons clients total <<<"$w"
    # Alternate which system goes first, so a drift in the machine's load hits both alike.
    if (( rep % 2 == 1 )); then order=(etcd raftv); else order=(raftv etcd); fi
    for sys in "${order[@]}"; do run_one "$sys" "$name" "$kind" "$cons" "$clients" "$total" "$rep"; done
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- report -------------------------------------------------------------------------------------
stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
json="$out/$stamp.json"
jq -s --arg stamp "$stamp" --arg fsync "${fsync_us:-null}" --arg dd "$dd_us" --arg pgtps "${pg_tps:-null}" \
  --arg etcdv "$(etcd --version | head -1)" --arg raftv "$(raftv version)" --arg cpus "$(nproc)" \
  --arg lb "$load_before" --arg la "$load_after" --arg secs "$(( $(date +%s) - started ))" --arg quick "${quick:-}" '
  def med: sort | if length == 0 then null elif length % 2 == 1 then .[length/2|floor] else (.[length/2-1] + .[length/2]) / 2 end;
  def stat(f): [.[] | f | select(. != null)] | {median: med, min: min, max: max};
  {
    timestamp: $stamp, quick: ($quick != ""), etcd: $etcdv, raftv: $raftv,
    machine: { cpus: ($cpus|tonumber), loadavgBefore: $lb, loadavgAfter: $la, note: "shared machine: other builds and tests ran at the same time" },
    floors: { fdatasyncMicros: ($fsync|tonumber? // null), ddDsync4kMicros: ($dd|tonumber? // null), postgresSingleRowCommitsPerSecond: ($pgtps|tonumber? // null) },
    benchSeconds: ($secs|tonumber),
    summary: (group_by(.workload + "/" + .system) | map({
      workload: .[0].workload, system: .[0].system, reps: length,
      opsPerSecond: stat(.requestsPerSecond), p50Ms: stat(.latencyMs.p50), p90Ms: stat(.latencyMs.p90),
      p99Ms: stat(.latencyMs.p99), maxMs: stat(.latencyMs.max),
      cpuMsPerOp: stat(if (.succeeded // 0) > 0 then .serverCpuSeconds * 1000 / .succeeded else null end),
      failed: ([.[].failed // 0] | add)
    })),
    runs: .
  }' "$TMP"/runs/*.json >"$json"

order_of() { local i=0; for w in "${WORKLOADS[@]}"; do [[ ${w%% *} == "$1" ]] && { echo $i; return; }; i=$((i+1)); done; }
{
  echo "RaftVerified vs etcd, 3 members each on loopback, $VAL-byte values, $KEYS keys, $reps repetition(s); medians [min-max]"
  echo "machine: $(nproc) CPUs, SHARED and loaded (load average before: $load_before, after: $load_after)"
  echo "floors: fdatasync ${fsync_us:-?} us/op (pg_test_fsync), dd 4k dsync $dd_us us/write, PostgreSQL 1-client commits ${pg_tps:-?}/s"
  printf '%-12s %-6s %26s %26s %26s %14s\n' workload system "ops/s" "p50 ms" "p99 ms" "cpu ms/op"
  jq -r '.summary[] | [.workload, .system,
      "\(.opsPerSecond.median|floor) [\(.opsPerSecond.min|floor)-\(.opsPerSecond.max|floor)]",
      "\(.p50Ms.median*1000|round/1000) [\(.p50Ms.min*1000|round/1000)-\(.p50Ms.max*1000|round/1000)]",
      "\(.p99Ms.median*1000|round/1000) [\(.p99Ms.min*1000|round/1000)-\(.p99Ms.max*1000|round/1000)]",
      "\((.cpuMsPerOp.median // 0)*1000|round/1000)", .failed] | @tsv' "$json" \
    | while IFS=$'\t' read -r w s ops p50 p99 cpu failed; do
        printf '%s\t%-12s %-6s %26s %26s %26s %14s%s\n' "$(order_of "$w")" "$w" "$s" "$ops" "$p50" "$p99" "$cpu" \
          "$([[ $failed != 0 ]] && echo "  ($failed failed)")"
      done | sort -t$'\t' -k1,1n -k2 | cut -f2-
  echo
  echo "ratios RaftVerified/etcd (medians): throughput, p50, p99, cpu per op"
  jq -r '.summary | group_by(.workload)[] | select(length == 2) | (map(select(.system == "etcd"))[0]) as $e | (map(select(.system == "raftv"))[0]) as $r
      | [$e.workload,
         ($r.opsPerSecond.median / $e.opsPerSecond.median),
         ($r.p50Ms.median / $e.p50Ms.median), ($r.p99Ms.median / $e.p99Ms.median),
         (if ($e.cpuMsPerOp.median // 0) > 0 then $r.cpuMsPerOp.median / $e.cpuMsPerOp.median else null end)]
      | @tsv' "$json" \
    | while IFS=$'\t' read -r w a b c d; do
        printf '%s\t%-12s x%-8.2f p50 x%-8.2f p99 x%-8.2f cpu x%s\n' "$(order_of "$w")" "$w" "$a" "$b" "$c" "$( [[ -n $d ]] && printf '%.2f' "$d" || echo '?')"
      done | sort -n | cut -f2-
} | tee "$out/$stamp.txt"

# ---- plot ---------------------------------------------------------------------------------------
if command -v gnuplot >/dev/null; then
  for w in "${WORKLOADS[@]}"; do
    n=${w%% *}
    jq -r --arg w "$n" '[.summary[] | select(.workload == $w)] | (map(select(.system=="etcd"))[0]) as $e | (map(select(.system=="raftv"))[0]) as $r
      | [$w, $e.opsPerSecond.median, $r.opsPerSecond.median, $e.p50Ms.median, $r.p50Ms.median, $e.p99Ms.median, $r.p99Ms.median] | @tsv' "$json"
  done >"$TMP/plot.tsv"
  gnuplot <<EOF
set terminal pngcairo size 1200,800 font ",10"
set output "$out/$stamp.png"
set datafile separator "\t"
set multiplot layout 2,1 title "RaftVerified vs etcd (3 members, loopback, shared loaded $(nproc)-CPU machine) - medians of $reps rep(s)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set xtics rotate by -20
set grid ytics
set key top left
set ylabel "requests/s"
set title "throughput"
plot "$TMP/plot.tsv" using 2:xtic(1) title "etcd" lc rgb "#4e79a7", '' using 3 title "RaftVerified" lc rgb "#e15759"
set logscale y
set ylabel "latency ms (log)"
set title "latency: p50 (solid) and p99 (light)"
plot "$TMP/plot.tsv" using 4:xtic(1) title "etcd p50" lc rgb "#4e79a7", '' using 5 title "RaftVerified p50" lc rgb "#e15759", \
     '' using 6 title "etcd p99" lc rgb "#a0cbe8", '' using 7 title "RaftVerified p99" lc rgb "#ff9d9a"
unset multiplot
EOF
  log "plot: $out/$stamp.png"
fi
log "results: $json"
