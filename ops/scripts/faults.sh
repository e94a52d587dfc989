#!/usr/bin/env bash
# The full fault suite (docs/reliability.md): every scenario of tests/tests/faults.rs with
# 30 s of load either side of its fault, 10 broker kills, a 20 s pause of a broker, 15 s of a
# PostgreSQL backend, a 60 s cut of the database path, a full disk, clock steps, and 100,000
# messages queued behind a consumer that never acks followed by 5,000 connections at once,
# then the results table of them all. Each scenario starts its own
# PostgreSQL cluster and postbusd on 127.0.0.1. The CI subset is the same tests with short
# defaults, run by ops/scripts/test.sh.
#
#   ops/scripts/faults.sh            # the full suite (about 15 minutes)
#   FAULT_LOAD_S=10 ops/scripts/faults.sh   # shorter load either side
set -euo pipefail
cd "$(dirname "$0")/../.."
. ops/scripts/lib.sh
ensure_rust
ensure_pg

results="$(mktemp)"
trap 'rm -f "$results"' EXIT
export FAULT_RESULTS="$results"
export FAULT_LOAD_S="${FAULT_LOAD_S:-30}"
export FAULT_KILLS="${FAULT_KILLS:-10}"
export FAULT_PAUSE_S="${FAULT_PAUSE_S:-20}"
export FAULT_STOP_S="${FAULT_STOP_S:-15}"
export FAULT_CUT_S="${FAULT_CUT_S:-60}"
export FAULT_BACKLOG="${FAULT_BACKLOG:-100000}"
export FAULT_STORM="${FAULT_STORM:-5000}"

cargo build --bins -q
status=0
cargo test -q -p postbus-tests --test faults -- --test-threads 1 || status=$?

echo
echo "## Fault suite, $(date -u +%Y-%m-%d), $(nproc) cores, load ${FAULT_LOAD_S} s either side"
echo
echo "| scenario | sent ok | COMMITs in doubt (committed) | unknown | recovered | delivered | lost | unexpected | duplicated | redelivered after ack | group order | producer order | p99 before / during / after (ms) | recovery (s) | connections | pass |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
sort "$results"
exit "$status"
