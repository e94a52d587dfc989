#!/usr/bin/env bash
# A selective consumer on a deep queue (docs/benchmarks.md): fills one queue with about
# DEPTH persistent 1 KiB messages of which one in 1,000 carries pick:yes, then times a consumer
# with the selector "pick = 'yes'" draining those, then an unselective consumer on the same
# queue. Usage: ops/bench/selector.sh [DEPTH, default 200000]
set -euo pipefail
cd "$(dirname "$0")/../.."
depth="${1:-200000}"
. ops/bench/lib.sh
bench() { target/release/postbus bench --target "127.0.0.1:$port" --destination /queue/deep "$@"; }
echo "postbus $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), depth ${depth}"
filled=0
while [ "$filled" -lt "$depth" ]; do
  n=$(bench --fill-only -p 4 --receipt-every 100 --match-every 1000 --duration 5 --json |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["confirmed"])')
  filled=$((filled + n))
  echo "filled $filled"
done
vacuum
matches=$(psql -At -h 127.0.0.1 -p "$pgport" -U postgres postbus \
  -c "SELECT count(*) FROM postbus.messages WHERE properties->>'pick' = 'yes'")
echo "queue depth $filled, matching $matches"
bench --drain "$matches" -c 1 --selector "pick = 'yes'" --label "selective consumer, 0.1% match"
bench --drain 50000 -c 1 --label "unselective consumer on the same queue"
