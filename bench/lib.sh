#!/usr/bin/env bash
# bench/lib.sh: shared by bench/run.sh and bench/profile.sh (source it): build, free ports, start
# and stop the Realtime stand-in (echo-frames) and the relay, all on 127.0.0.1.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# RELAY_BIN: use this binary and skip `cargo build --release` (e.g. a build from another tree).
BIN="${RELAY_BIN:-$ROOT/target/release/twilio-realtime-relay}"
# Logs, load reports and the relay's transcripts; kept if BENCH_OUT is given, removed otherwise.
if [[ -n "${BENCH_OUT:-}" ]]; then
  OUT="$BENCH_OUT"
  mkdir -p "$OUT"
  KEEP_OUT=1
else
  OUT="$(mktemp -d)"
  KEEP_OUT=0
fi
FAKE_PID=""
RELAY_PID=""

log() { printf '[bench] %s\n' "$*" >&2; }

build() {
  if [[ -n "${RELAY_BIN:-}" ]]; then
    log "using RELAY_BIN=$BIN (no build)"
  else
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release)
  fi
  [[ -x "$BIN" ]] || { log "no binary at $BIN"; exit 1; }
}

# 1000 calls need ~3 descriptors each in the generator and 2 in the relay (Twilio + upstream).
raise_fd_limit() {
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
  log "open files limit: $(ulimit -n)"
}

# A free TCP port: bind 127.0.0.1:0, read the port the kernel chose, release it. The port could in
# theory be taken again before our server binds it; on a bench machine that does not happen.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Waits until something accepts TCP connections on 127.0.0.1:$1 (at most 10 s).
wait_for_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "nothing listening on port $1"
  return 1
}

start_fake() {
  FAKE_PORT="$(free_port)"
  "$BIN" fake-openai --mode echo-frames --addr "127.0.0.1:$FAKE_PORT" >"$OUT/fake-openai.log" 2>&1 &
  FAKE_PID=$!
  wait_for_port "$FAKE_PORT"
  log "stand-in (echo-frames) pid $FAKE_PID on 127.0.0.1:$FAKE_PORT"
}

# BENCH_TARGET=reference measures bench/reference/ (the per-frame path of Twilio's Node.js sample)
# instead of our relay, with the same load, stand-in and accounting. Needs node and npm.
TARGET="${BENCH_TARGET:-relay}"
REFERENCE_DIR="$ROOT/bench/reference"

# Installs the reference's pinned packages (package-lock.json) once.
prepare_target() {
  [[ "$TARGET" == reference ]] || return 0
  command -v node >/dev/null || { log "BENCH_TARGET=reference needs node (apt-get install nodejs)"; exit 1; }
  if [[ ! -d "$REFERENCE_DIR/node_modules" ]]; then
    log "npm ci in $REFERENCE_DIR"
    (cd "$REFERENCE_DIR" && npm ci --no-audit --no-fund >&2)
  fi
  log "target: the Node.js reference (node $(node --version))"
}

# Starts a fresh relay (so its idle RSS and peak RSS belong to one load level). It runs in $OUT, not
# in the tree, so no .env is read; no Twilio auth token, so no signature checks.
start_relay() {
  RELAY_PORT="$(free_port)"
  mkdir -p "$OUT/transcripts"
  (
    cd "$OUT" &&
      if [[ "$TARGET" == reference ]]; then
        HOST=127.0.0.1 PORT="$RELAY_PORT" OPENAI_API_KEY=sk-bench \
          OPENAI_REALTIME_URL="ws://127.0.0.1:$FAKE_PORT/v1/realtime" \
          exec node "$REFERENCE_DIR/index.mjs"
      else
        HOST=127.0.0.1 PORT="$RELAY_PORT" OPENAI_API_KEY=sk-bench \
          OPENAI_REALTIME_URL="ws://127.0.0.1:$FAKE_PORT/v1/realtime" \
          OPENAI_API="${BENCH_API:-realtime}" OPENAI_LIVE_URL="ws://127.0.0.1:$FAKE_PORT/v1/live/sessions" \
          TRANSCRIPT_DIR="$OUT/transcripts" MAX_CONCURRENT_CALLS=5000 RUST_LOG=warn \
          TWILIO_AUTH_TOKEN= TWILIO_VALIDATE_SIGNATURE=false \
          exec "$BIN" serve
      fi
  ) >>"$OUT/relay.log" 2>&1 &
  RELAY_PID=$!
  for _ in $(seq 1 100); do
    if curl -sf -o /dev/null "http://127.0.0.1:$RELAY_PORT/health"; then
      log "relay pid $RELAY_PID on 127.0.0.1:$RELAY_PORT"
      return 0
    fi
    kill -0 "$RELAY_PID" 2>/dev/null || break
    sleep 0.1
  done
  log "the relay did not become healthy; its log:"
  tail -n 20 "$OUT/relay.log" >&2
  return 1
}

# Stops process $1 (SIGTERM, then SIGKILL after 30 s) and reaps it.
stop_pid() {
  local pid="$1"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

stop_relay() {
  stop_pid "$RELAY_PID"
  RELAY_PID=""
}

cleanup() {
  stop_relay
  stop_pid "$FAKE_PID"
  FAKE_PID=""
  if [[ "$KEEP_OUT" == 0 ]]; then rm -rf "$OUT"; fi
}

# Share of both CPUs busy over the next $1 seconds, from /proc/stat (integer %).
machine_busy_percent() {
  local a b
  a=($(head -n 1 /proc/stat))
  sleep "$1"
  b=($(head -n 1 /proc/stat))
  local total=0 idle i
  for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
  idle=$((b[4] - a[4] + b[5] - a[5]))
  echo $(((total - idle) * 100 / (total > 0 ? total : 1)))
}

# The machine is shared (other builds, other benchmarks): wait up to BENCH_QUIET_WAIT seconds (300)
# for it to be under 10 % busy before measuring, so the relay does not compete with strangers.
wait_quiet() {
  local waited=0 limit="${BENCH_QUIET_WAIT:-300}" busy
  while busy="$(machine_busy_percent 2)"; ((busy > 10)); do
    if ((waited >= limit)); then
      log "machine still ${busy}% busy after ${limit} s: measuring anyway (see machine busy %)"
      return 0
    fi
    ((waited == 0)) && log "machine ${busy}% busy: waiting for it to be quiet"
    waited=$((waited + 2))
  done
}
