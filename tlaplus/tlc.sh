#!/usr/bin/env bash
# Runs TLC, the TLA+ model checker: tlaplus/tlc.sh [TLC arguments...]
#
# Finds tla2tools.jar, in order:
#   1. $TLA2TOOLS_JAR
#   2. ~/.cache/raftverified/tla2tools.jar
#   3. the official release, downloaded into that cache and checked against a pinned SHA-256.
# When none works it prints one line saying how to provide TLC and exits with status 3,
# which ./test.sh reports as "TLC not available" (never as passed).
#
# Environment: TLC_WORKERS (default: the machine's cores), TLC_HEAP (default 6g),
#              TLC_STACK (default 16m; long traces in TraceRaft.tla need more, e.g. 256m),
#              TLC_METADIR (default: a fresh folder under ${TMPDIR:-/tmp}, removed afterwards).
set -euo pipefail

readonly TLC_UNAVAILABLE=3
readonly RELEASE_URL="https://github.com/tlaplus/tlaplus/releases/download/v1.7.4/tla2tools.jar"
readonly RELEASE_SHA256="936a262061c914694dfd669a543be24573c45d5aa0ff20a8b96b23d01e050e88"
readonly CACHE_JAR="${XDG_CACHE_HOME:-$HOME/.cache}/raftverified/tla2tools.jar"

unavailable() {
  echo "TLC not available: $1. Set TLA2TOOLS_JAR to a tla2tools.jar, or place one at $CACHE_JAR." >&2
  exit "$TLC_UNAVAILABLE"
}

find_jar() {
  if [[ -n "${TLA2TOOLS_JAR:-}" ]]; then
    [[ -f "$TLA2TOOLS_JAR" ]] || unavailable "TLA2TOOLS_JAR=$TLA2TOOLS_JAR is not a file"
    echo "$TLA2TOOLS_JAR"; return
  fi
  if [[ -f "$CACHE_JAR" ]]; then echo "$CACHE_JAR"; return; fi

  command -v curl >/dev/null || unavailable "no jar found and curl is missing to download $RELEASE_URL"
  mkdir -p "$(dirname "$CACHE_JAR")"
  local tmp; tmp="$(mktemp "$CACHE_JAR.XXXXXX")"
  if ! curl -fsSL --connect-timeout 10 --max-time 120 -o "$tmp" "$RELEASE_URL" 2>/dev/null; then
    rm -f "$tmp"; unavailable "no jar found and $RELEASE_URL could not be downloaded"
  fi
  local got; got="$(sha256sum "$tmp" | cut -d' ' -f1)"
  if [[ "$got" != "$RELEASE_SHA256" ]]; then
    rm -f "$tmp"; unavailable "the downloaded jar has SHA-256 $got, expected $RELEASE_SHA256"
  fi
  mv "$tmp" "$CACHE_JAR"
  echo "$CACHE_JAR"
}

command -v java >/dev/null || unavailable "java is not installed (apt-get install default-jre-headless)"
jar="$(find_jar)"

workers="${TLC_WORKERS:-$(nproc)}"
metadir="${TLC_METADIR:-}"
if [[ -z "$metadir" ]]; then
  metadir="$(mktemp -d "${TMPDIR:-/tmp}/raftverified-tlc.XXXXXX")"
  trap 'rm -rf "$metadir"' EXIT
fi

# ParallelGC is what TLC's authors recommend for throughput; the heap stays bounded for 24 GiB machines.
java -XX:+UseParallelGC -Xss"${TLC_STACK:-16m}" -Xmx"${TLC_HEAP:-6g}" \
  -cp "$jar" tlc2.TLC -workers "$workers" -metadir "$metadir" "$@"
