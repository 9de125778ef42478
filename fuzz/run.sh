#!/usr/bin/env bash
# Build and run every cargo-fuzz target for ${FUZZ_SECONDS:-60} s each; exit non-zero on a crash.
#
# Works on a stable toolchain: RUSTC_BOOTSTRAP=1 lets stable rustc accept the -Z flags
# (sanitizer, coverage passes) that cargo-fuzz passes. Seeds from fuzz/seeds/<target>/ are copied
# into the working corpus fuzz/corpus/<target>/ (gitignored); crashes land in
# fuzz/artifacts/<target>/ and each run's log in fuzz/target/<target>.log. Reproduce a crash with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run --release --debug-assertions <target> <crash file>`.
#
#   bash fuzz/run.sh                     # all targets, 60 s each
#   FUZZ_SECONDS=600 bash fuzz/run.sh signature
set -euo pipefail

cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(twilio_message realtime_event signature)
fi
export RUSTC_BOOTSTRAP=1
# Debug assertions on: integer overflow and slice bugs panic instead of wrapping silently.
flags=(--release --debug-assertions)

# With FUZZ_TOOLING_OPTIONAL=1 (CI), failing to install or build the fuzzer skips fuzzing with a
# warning instead of failing: only a crash found by fuzzing is an error there.
skip_or_fail() {
  if [ "${FUZZ_TOOLING_OPTIONAL:-0}" = 1 ]; then
    echo "WARNING: $1; fuzzing skipped" >&2
    exit 0
  fi
  echo "$1" >&2
  exit 1
}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz from crates.io"
  cargo install cargo-fuzz --locked || skip_or_fail "could not install cargo-fuzz"
fi

echo "building fuzz targets"
cargo fuzz build "${flags[@]}" || skip_or_fail "could not build the fuzz targets"
# Run the binaries just built rather than `cargo fuzz run`, which rebuilds first: in a tree that
# is being edited that would cost minutes per target and fuzz a different snapshot each time.
host="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="fuzz/target/$host/release"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_odr_violation=0}"

failed=()
for target in "${targets[@]}"; do
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus" "fuzz/target"
  cp -n fuzz/seeds/"$target"/* "$corpus"/ 2>/dev/null || true
  log="fuzz/target/$target.log"
  echo "fuzzing $target for ${seconds}s (log: $log)"
  mkdir -p "fuzz/artifacts/$target"
  if "$bin_dir/$target" -artifact_prefix="fuzz/artifacts/$target/" -max_total_time="$seconds" \
    -print_final_stats=1 "$corpus" >"$log" 2>&1; then
    # libFuzzer's last status line: runs, coverage (cov), features (ft), corpus size, exec/s.
    grep -E '^#[0-9]+\s+DONE' "$log" | tail -n 1 || tail -n 3 "$log"
  else
    echo "CRASH or error in $target; last lines of $log:" >&2
    tail -n 40 "$log" >&2
    failed+=("$target")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]} (inputs in fuzz/artifacts/<target>/)" >&2
  exit 1
fi
echo "all fuzz targets ran ${seconds}s without a crash"
