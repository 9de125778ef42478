#!/usr/bin/env bash
# bench/run.sh: the capacity benchmark. Frame-tagged echo load (see bench/README.md) against a
# release relay and the echo-frames stand-in on this machine, at several call counts; prints a
# Markdown table. Environment: BENCH_CALLS ("100 250 500 1000"), BENCH_SECONDS (20), BENCH_WARMUP
# (3), BENCH_RAMP (3), BENCH_WORKERS (2) and BENCH_THREADS (1) for the generator, BENCH_QUIET_WAIT
# (300 s), BENCH_OUT (keep logs and JSON reports there), RELAY_BIN (use this binary, skip the build),
# BENCH_TARGET (relay, or reference: Twilio's Node.js sample in bench/reference/), BENCH_API
# (realtime, or live: the relay on GPT-Live, the stand-in echoing at /v1/live/sessions).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CALLS_LIST="${BENCH_CALLS:-100 250 500 1000}"
MEASURE_SECONDS="${BENCH_SECONDS:-20}"
WARMUP="${BENCH_WARMUP:-3}"
RAMP="${BENCH_RAMP:-3}"
WORKERS="${BENCH_WORKERS:-2}"
THREADS="${BENCH_THREADS:-1}"

trap cleanup EXIT
trap 'exit 130' INT TERM
build
prepare_target
raise_fd_limit
start_fake

for calls in $CALLS_LIST; do
  wait_quiet
  start_relay
  log "load: $calls calls, ${MEASURE_SECONDS} s measured (+${WARMUP} s warm-up, ${RAMP} s ramp)"
  "$BIN" load "ws://127.0.0.1:$RELAY_PORT/media-stream" --calls "$calls" \
    --seconds "$MEASURE_SECONDS" --warmup "$WARMUP" --ramp "$RAMP" --workers "$WORKERS" \
    --threads "$THREADS" --pid "$RELAY_PID" --stand-in-pid "$FAKE_PID" --json \
    >"$OUT/load-$calls.json" 2>"$OUT/load-$calls.log" ||
    { log "load failed at $calls calls:"; tail -n 20 "$OUT/load-$calls.log" >&2; exit 1; }
  stop_relay
done

python3 - "$OUT" $CALLS_LIST <<'PY'
import json, sys
out, levels = sys.argv[1], sys.argv[2:]
print("| calls | p50 ms | p99 ms | p99.9 ms | max ms | lost | late ticks | relay CPU ms per call-second | of which kernel | memory KiB per call | failed calls | delivered % | machine busy % | generator CPU ms per call-second | stand-in CPU ms per call-second |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
notes = []
for n in levels:
    r = json.load(open(f"{out}/load-{n}.json"))
    rtt, relay, window = r["rtt"], r.get("relay") or {}, r.get("window") or {}
    dash = lambda d, k, f: (f.format(d[k]) if k in d else "–")
    delivered = (f"{100 * window['delivered_call_seconds'] / window['call_seconds']:.0f}"
                 if window.get("call_seconds") and "delivered_call_seconds" in window else "–")
    print(f"| {n} | {rtt['p50_ms']:.3f} | {rtt['p99_ms']:.3f} | {rtt['p999_ms']:.3f} | {rtt['max_ms']:.3f} "
          f"| {r['frames_lost']} of {r['frames_sent']} | {r['late_ticks']} of {r['ticks']} "
          f"| {dash(relay, 'cpu_ms_per_call_second', '{:.3f}')} | {dash(relay, 'kernel_ms_per_call_second', '{:.3f}')} | {dash(relay, 'memory_kib_per_call', '{:.1f}')} "
          f"| {r['calls_failed'] + r['calls_dropped']} | {delivered} | {dash(window, 'machine_busy_percent', '{:.0f}')} "
          f"| {dash(window, 'generator_cpu_ms_per_call_second', '{:.3f}')} "
          f"| {dash(window, 'stand_in_cpu_ms_per_call_second', '{:.3f}')} |")
    notes += [f"{n} calls: {x}" for x in r["errors"] + r["notes"]]
if notes:
    print()
for note in notes:
    print(f"- {note}")
PY
if [[ "$KEEP_OUT" == 1 ]]; then log "JSON reports and logs in $OUT"; fi
