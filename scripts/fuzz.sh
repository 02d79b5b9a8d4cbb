#!/usr/bin/env bash
# Bounded fuzzing of the hostile-input targets in fuzz/ (cargo-fuzz + libFuzzer): builds every
# target once, runs each for SECONDS (default 30), prints each run's exec/s, and exits non-zero if
# any target crashed (a panic, a failed assertion, a sanitizer report, a timeout or OOM), printing
# the artifact that reproduces it. Installs cargo-fuzz if it is missing.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     e.g. scripts/fuzz.sh 600 jwt_structured
#
# Runs on the stable toolchain: cargo-fuzz needs -Z flags, which RUSTC_BOOTSTRAP=1 allows. The
# address sanitizer works there; ONLYCHAT_FUZZ_SANITIZER=none turns it off (faster, fewer checks).
# Inputs that found new coverage accumulate in fuzz/corpus/TARGET (not committed), next to the
# checked-in seeds in fuzz/seeds/TARGET; crashes go to fuzz/artifacts/TARGET; logs to
# fuzz/target/fuzz-logs. Reproduce a crash with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-...
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=${1:-30}
[[ $# -gt 0 ]] && shift
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds < 1)); then
  echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
  exit 2
fi
export RUSTC_BOOTSTRAP=1
sanitizer=${ONLYCHAT_FUZZ_SANITIZER:-address}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

targets=("$@")
if ((${#targets[@]} == 0)); then
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

start=$SECONDS
# One build for all targets (debug assertions and overflow checks on, as cargo fuzz run uses).
cargo fuzz build --fuzz-dir fuzz --sanitizer "$sanitizer"
echo "fuzz.sh: built ${#targets[@]} targets in $((SECONDS - start))s; fuzzing each for ${seconds}s"

logs=fuzz/target/fuzz-logs
mkdir -p "$logs"
failed=()
for target in "${targets[@]}"; do
  corpus=fuzz/corpus/$target
  mkdir -p "$corpus" "fuzz/artifacts/$target"
  inputs=("$corpus")
  [[ -d fuzz/seeds/$target ]] && inputs+=("fuzz/seeds/$target")
  args=(-max_total_time="$seconds" -timeout=10 -print_final_stats=1)
  case $target in
    client_frame) args+=(-dict=fuzz/dicts/client_frame.dict) ;;
    jwt_verify) args+=(-dict=fuzz/dicts/jwt.dict) ;;
  esac
  log=$logs/$target.log
  status=0
  cargo fuzz run --fuzz-dir fuzz --sanitizer "$sanitizer" "$target" "${inputs[@]}" -- "${args[@]}" \
    >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  if ((status == 0)); then
    echo "fuzz.sh: $target: ok, ${runs:-?} runs, ${rate:-?} exec/s, corpus $(find "$corpus" -type f | wc -l) inputs"
  else
    failed+=("$target")
    echo "fuzz.sh: $target: FAILED (exit $status) after ${runs:-?} runs; log: $log" >&2
    {
      grep -A2 "panicked at" "$log" | head -n 6
      grep -E "^==[0-9]+==ERROR|^SUMMARY|Test unit written to|ALARM|out-of-memory" "$log"
    } >&2 || tail -n 40 "$log" >&2
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    if [[ -n $artifact ]]; then
      echo "fuzz.sh: $target: crash input: $artifact" >&2
      echo "fuzz.sh: reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz $target $artifact" >&2
    fi
  fi
done

echo "fuzz.sh: done in $((SECONDS - start))s"
if ((${#failed[@]} > 0)); then
  echo "fuzz.sh: crashes found in: ${failed[*]}" >&2
  exit 1
fi
