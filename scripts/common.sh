# Shared by ./raftv and ./test.sh: installing what is missing and building.
# Sourced, not run. Expects ROOT to be the repository root.

log() { printf '%s\n' "$*" >&2; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi
}

apt_updated=""
apt_install() {
  command -v apt-get >/dev/null || { log "apt-get is not available: install $* by hand."; return 1; }
  if [[ -z "$apt_updated" ]]; then
    as_root apt-get update -qq >/dev/null 2>&1 || true
    apt_updated=1
  fi
  log "installing $* (apt)"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# The .NET SDK is not in Debian's archive: it must already be on the machine.
require_dotnet() {
  command -v dotnet >/dev/null && return 0
  log "the .NET SDK 10 is required (https://dot.net): dotnet is not on PATH."
  exit 1
}

# PostgreSQL server binaries (initdb, pg_ctl) for the private servers of tests and ./raftv up.
ensure_postgres() {
  compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null && return 0
  [[ -n "${PG_BIN:-}" && -x "$PG_BIN/pg_ctl" ]] && return 0
  apt_install postgresql || { log "PostgreSQL is required: apt-get install postgresql"; exit 1; }
  # Debian's package starts a cluster of its own; the project runs private servers instead.
  as_root service postgresql stop >/dev/null 2>&1 || true
}

# Java runs TLC; without it the TLC checks are reported as unavailable, not failed.
ensure_java() {
  command -v java >/dev/null && return 0
  apt_install default-jre-headless || log "java could not be installed: TLC checks will be unavailable."
}

# etcd's own client (etcdctl) proves wire compatibility in the key-value tests.
ensure_etcdctl() {
  command -v etcdctl >/dev/null && return 0
  apt_install etcd-client || { log "etcdctl is required by the key-value tests: apt-get install etcd-client"; exit 1; }
}

# etcd's server: the client-command tests compare raftv's output with etcdctl's on a real etcd too
# (that one test says loudly that it skipped when etcd is missing).
ensure_etcd_server() {
  command -v etcd >/dev/null && return 0
  apt_install etcd-server || { log "etcd-server could not be installed: the comparison with a real etcd will be skipped."; return 0; }
  # Debian's package starts a member on 2379; tests start their own etcd and 'raftv up' wants that port.
  as_root service etcd stop >/dev/null 2>&1 || true
}

# Node.js and npm run the gRPC interoperability peer (@grpc/grpc-js).
ensure_node() {
  command -v node >/dev/null && command -v npm >/dev/null && return 0
  apt_install nodejs npm || { log "Node.js and npm are required by the gRPC interop tests: apt-get install nodejs npm"; exit 1; }
}

# Builds the solution in Release; output is shown only when the build fails.
build_solution() {
  local out; out="$(mktemp)"
  if ! dotnet build "$ROOT/RaftVerified.sln" -c Release -nologo -v q -clp:ErrorsOnly >"$out" 2>&1; then
    cat "$out" >&2; rm -f "$out"
    log "build failed"; return 1
  fi
  rm -f "$out"
}
