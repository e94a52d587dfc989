#!/usr/bin/env bash
# Fuzzes every target of fuzz/ (cargo-fuzz, libFuzzer) for SECONDS each (default 60) against its
# committed corpus and regressions, and fails if any target crashes, leaks, times out or
# allocates past the limits below. New corpus entries and crash inputs go to a scratch directory
# ($POSTBUS_FUZZ_DIR, else a fresh one under /tmp), never into the repository.
#
#   ops/scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Needs a nightly toolchain (installs cargo-fuzz if missing). Without one it says that fuzzing
# is skipped and exits 0: the stable tests (`cargo test`, tests/fuzz_corpus.rs of
# postbus-stomp, postbus-selector and postbus-auth) replay every committed corpus and
# regression file through the same checks. With POSTBUS_BUILD_LOCK set, each cargo command
# runs under `flock $POSTBUS_BUILD_LOCK` (the fuzzing itself does not). docs/reliability.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ops/scripts/lib.sh
ensure_rust

ALL=(stomp_decode stomp_sequence selector_parse selector_eval policy_load jwt_verify)
secs=${1:-60}
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${ALL[@]}")
case $secs in '' | *[!0-9]*) echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2 ;; esac
for t in "${targets[@]}"; do
  [[ " ${ALL[*]} " == *" $t "* ]] || { echo "unknown fuzz target $t (${ALL[*]})" >&2; exit 2; }
done

cargo_() {
  if [ -n "${POSTBUS_BUILD_LOCK:-}" ]; then flock "$POSTBUS_BUILD_LOCK" cargo "$@"; else cargo "$@"; fi
}

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain (rustup toolchain install nightly): FUZZING IS SKIPPED."
  echo "fuzz: the committed corpora and regressions under fuzz/ are replayed through the same"
  echo "fuzz: checks by the stable tests (tests/fuzz_corpus.rs of postbus-stomp, -selector, -auth)."
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo_ install cargo-fuzz --locked
fi

work=${POSTBUS_FUZZ_DIR:-$(mktemp -d /tmp/postbus-fuzz.XXXXXX)}
mkdir -p "$work"
start=$(date +%s)
echo "fuzz: building ${#targets[@]} targets (nightly, AddressSanitizer, debug assertions)"
if [ ${#targets[@]} -eq ${#ALL[@]} ]; then
  (cd fuzz && cargo_ +nightly fuzz build)
else
  for t in "${targets[@]}"; do (cd fuzz && cargo_ +nightly fuzz build "$t"); done
fi
built=$(date +%s)
host=$(rustc +nightly -vV | sed -n 's/^host: //p')
bin=fuzz/target/$host/release

declare -A dict=([stomp_decode]=stomp [stomp_sequence]=stomp [selector_parse]=selector
  [selector_eval]=selector [policy_load]=policy [jwt_verify]=jwt)
stat() { sed -n "s/^stat::$1: *//p" "$2" | tail -n 1; }
failed=()
rows=()
for t in "${targets[@]}"; do
  mkdir -p "$work/$t/corpus" "$work/$t/artifacts"
  inputs=("$work/$t/corpus" "fuzz/corpus/$t")
  [ -d "fuzz/regressions/$t" ] && inputs+=("fuzz/regressions/$t")
  log=$work/$t/log
  echo "fuzz: $t for ${secs}s"
  # One input may take at most 10 s and one allocation 128 MiB (the largest the checks need
  # is the codec's 4 MiB frame); the process stays within 2 GiB.
  if "$bin/$t" "${inputs[@]}" -dict="fuzz/dict/${dict[$t]}.dict" -max_total_time="$secs" \
    -max_len=4096 -timeout=10 -malloc_limit_mb=128 -rss_limit_mb=2048 \
    -artifact_prefix="$work/$t/artifacts/" -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result=FAILED
    failed+=("$t")
  fi
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  rows+=("$(printf '%-15s %10s %8s %6s %7s %6s  %s' "$t" "$(stat number_of_executed_units "$log")" \
    "$(stat average_exec_per_sec "$log")" "${cov:-?}" "${ft:-?}" "$(ls "$work/$t/corpus" | wc -l)" "$result")")
  if [ "$result" = FAILED ]; then
    grep -E -A1 'panicked at' "$log" | head -n 2 | sed 's/^/fuzz:   /' || true
    grep -E 'ERROR: libFuzzer|SUMMARY|Test unit written' "$log" | head -n 4 | sed 's/^/fuzz:   /' || true
  fi
done
done_at=$(date +%s)

printf '\n%-15s %10s %8s %6s %7s %6s  %s\n' target execs execs/s cov ft new result
printf '%s\n' "${rows[@]}"
echo "fuzz: build $((built - start)) s, fuzzing $((done_at - built)) s; logs, new corpus entries and crashes in $work"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}. Reproduce with fuzz/target/$host/release/<target> <file>;" \
    "fix it, then add the input to fuzz/regressions/<target>/ (the stable tests replay it)." >&2
  exit 1
fi
