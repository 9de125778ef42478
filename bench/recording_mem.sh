#!/usr/bin/env bash
# bench/recording_mem.sh: memory of a recorded call. Runs the same frame-tagged echo load (see
# bench/README.md) against a fresh relay with RECORDING=off, then with RECORDING=on, and prints
# each run's RSS above idle per call and the difference (the budget is 64 KiB per call).
# Environment: BENCH_CALLS (200), BENCH_SECONDS (20), BENCH_WARMUP (3), BENCH_RAMP (3),
# BENCH_OUT and RELAY_BIN as for bench/run.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CALLS="${BENCH_CALLS:-200}"
MEASURE_SECONDS="${BENCH_SECONDS:-20}"
WARMUP="${BENCH_WARMUP:-3}"
RAMP="${BENCH_RAMP:-3}"

trap cleanup EXIT
trap 'exit 130' INT TERM
build
raise_fd_limit
start_fake

for mode in off on; do
  wait_quiet
  export RECORDING="$mode" RECORDING_DIR="$OUT/recordings-$mode"
  start_relay
  unset RECORDING RECORDING_DIR
  log "load: $CALLS calls, RECORDING=$mode, ${MEASURE_SECONDS} s measured"
  "$BIN" load "ws://127.0.0.1:$RELAY_PORT/media-stream" --calls "$CALLS" \
    --seconds "$MEASURE_SECONDS" --warmup "$WARMUP" --ramp "$RAMP" \
    --pid "$RELAY_PID" --stand-in-pid "$FAKE_PID" --json \
    >"$OUT/load-$mode.json" 2>"$OUT/load-$mode.log" ||
    { log "load failed with RECORDING=$mode:"; tail -n 20 "$OUT/load-$mode.log" >&2; exit 1; }
  stop_relay
done

python3 - "$OUT" "$CALLS" <<'PY'
import json, os, sys
out, calls = sys.argv[1], sys.argv[2]
kib = {}
print("| RECORDING | calls | memory KiB per call | relay CPU ms per call-second | failed calls |")
print("|---|---:|---:|---:|---:|")
for mode in ("off", "on"):
    r = json.load(open(f"{out}/load-{mode}.json"))
    relay = r.get("relay") or {}
    kib[mode] = relay.get("memory_kib_per_call", float("nan"))
    print(f"| {mode} | {calls} | {kib[mode]:.1f} | {relay.get('cpu_ms_per_call_second', float('nan')):.3f} "
          f"| {r['calls_failed'] + r['calls_dropped']} |")
wavs = [f for f in os.listdir(f"{out}/recordings-on") if f.endswith(".wav")] if os.path.isdir(f"{out}/recordings-on") else []
print()
print(f"recorded call: {kib['on'] - kib['off']:+.1f} KiB per call above an unrecorded one (budget 64 KiB); {len(wavs)} WAVs written")
PY
if [[ "$KEEP_OUT" == 1 ]]; then log "JSON reports and logs in $OUT"; fi
