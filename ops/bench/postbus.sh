#!/usr/bin/env bash
# Runs the standard workloads of docs/benchmarks.md against a fresh postbus (release build, a
# private PostgreSQL with fsync on) and prints one line per workload. Each workload runs on its
# own queue, with a VACUUM of the queue table between runs so one run's dead rows do not slow
# the next. Usage: ops/bench/postbus.sh [seconds per run, default 15]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-15}"
. ops/bench/lib.sh
run() {
  vacuum
  target/release/postbus bench --target "127.0.0.1:$port" --duration "$secs" "$@" || true
}
echo "postbus $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), ${secs}s per run"
run -p 1 -c 1 --receipt-every 1 --label "a: 1P/1C, receipt every send"
run -p 4 -c 4 --receipt-every 100 --label "b: 4P/4C, receipt every 100th"
run -p 4 -c 4 --receipt-every 1 --label "b': 4P/4C, receipt every send"
run -p 16 -c 16 --receipt-every 100 --label "c: 16P/16C, window 100"
run -p 16 -c 16 --receipt-every 1 --label "c': 16P/16C, receipt every send"
run -p 4 -c 4 --tx-size 10 --label "d: 4P/4C, transactions of 10"
run -p 4 -c 4 --groups 10 --receipt-every 100 --label "e: 4P/4C, 10 groups"
run -p 1 -c 1 --rate 1000 --receipt-every 10 --label "f: 1P/1C at 1000 msgs/s"
run -p 1 -c 1 --rate 5000 --receipt-every 100 --label "f: 1P/1C at 5000 msgs/s"
