#!/usr/bin/env bash
# bench/profile.sh: where the relay spends its CPU under the frame-tagged echo load. Starts the
# stand-in and a release relay, runs `load` at PROFILE_CALLS (100) calls and samples the relay with
# `perf record` (cpu-clock, PROFILE_SECONDS = 10 s, after a 5 s warm-up), then prints the hottest
# functions (self time) and, with call graphs, the hottest inclusive paths; then counts the relay's
# syscalls and context switches per call-second (`perf stat` on tracepoints, 3 s). Needs `perf`
# (Debian: apt-get install linux-perf). Same environment as run.sh (RELAY_BIN, BENCH_OUT).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CALLS="${PROFILE_CALLS:-100}"
PROFILE_SECONDS="${PROFILE_SECONDS:-10}"
# dwarf unwinding: the release profile has line tables but no frame pointers.
CALL_GRAPH="${PROFILE_CALL_GRAPH:-dwarf,16384}"

trap cleanup EXIT
trap 'exit 130' INT TERM
command -v perf >/dev/null || { log "perf not found (apt-get install linux-perf)"; exit 1; }
build
prepare_target
raise_fd_limit
start_fake
wait_quiet
start_relay
"$BIN" load "ws://127.0.0.1:$RELAY_PORT/media-stream" --calls "$CALLS" \
  --seconds "$((PROFILE_SECONDS + 10))" --warmup 3 --ramp 1 --pid "$RELAY_PID" --stand-in-pid "$FAKE_PID" \
  >"$OUT/profile-load.txt" &
LOAD_PID=$!
sleep 5
log "perf record -p $RELAY_PID for ${PROFILE_SECONDS} s ($CALLS calls)"
perf record -e cpu-clock -F 999 --call-graph "$CALL_GRAPH" -p "$RELAY_PID" \
  -o "$OUT/perf.data" -- sleep "$PROFILE_SECONDS" 2>"$OUT/perf-record.log"
# Syscalls and context switches per call-second: the kernel's share is set by how many there are.
SYSCALL_SECONDS=3
log "perf stat -p $RELAY_PID for ${SYSCALL_SECONDS} s (syscalls)"
perf stat -x, -e 'syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex,sched:sched_switch' \
  -p "$RELAY_PID" -- sleep "$SYSCALL_SECONDS" 2>"$OUT/perf-stat.csv" ||
  log "perf stat failed (tracepoints need root or perf_event_paranoid ≤ -1); see $OUT/perf-stat.csv"
wait "$LOAD_PID" || true
cat "$OUT/profile-load.txt"
echo
echo "## Relay syscalls per call-second ($CALLS calls, ${SYSCALL_SECONDS} s)"
awk -F, -v calls="$CALLS" -v secs="$SYSCALL_SECONDS" \
  '$3 ~ /^(syscalls|sched):/ && $1 ~ /^[0-9]+$/ { sub(/^(syscalls:sys_enter_|sched:)/, "", $3); printf "%-12s %8.1f\n", $3, $1 / (calls * secs) }' \
  "$OUT/perf-stat.csv"
echo
echo "## Self time by function (top 40)"
perf report -i "$OUT/perf.data" --no-children --sort symbol --stdio -g none --percent-limit 0.5 \
  2>/dev/null | grep -v '^#' | grep -v '^$' | head -40
echo
echo "## Inclusive time by function (top 40)"
perf report -i "$OUT/perf.data" --children --sort symbol --stdio -g none --percent-limit 2 \
  2>/dev/null | grep -v '^#' | grep -v '^$' | head -40
if [[ "$KEEP_OUT" == 1 ]]; then log "perf data in $OUT/perf.data"; fi
