#!/usr/bin/env bash
# Scale behaviour (docs/benchmarks.md, "Scale"): broker RSS and (b) throughput with 0, 100k and
# 1M messages already queued on another queue, and the time from a broker restart to the first
# message delivered from a 1M-deep queue. Usage: ops/bench/scale.sh [seconds per (b) run, default 10]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-10}"
. ops/bench/lib.sh
psql_pb() { psql -qAt -h 127.0.0.1 -p "$pgport" -U postgres postbus -c "$1"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$broker/status"; }
# Fills queue `deep` to $1 messages directly in SQL (1 KiB bodies), in chunks of 100k.
fill_to() {
  local want=$1 have
  have=$(psql_pb "SELECT count(*) FROM postbus.messages m JOIN postbus.destinations d ON d.id = m.queue_id WHERE d.name = 'deep'")
  while [ "$have" -lt "$want" ]; do
    local n=$(( want - have < 100000 ? want - have : 100000 ))
    psql_pb "INSERT INTO postbus.messages (queue_id, sent_at, body) SELECT d.id, (extract(epoch from now()) * 1000)::bigint, convert_to(repeat('x', 1024), 'UTF8') FROM postbus.destinations d, generate_series(1, $n) WHERE d.kind = 'queue' AND d.name = 'deep'"
    have=$((have + n))
  done
  psql_pb "VACUUM ANALYZE postbus.messages"
}
echo "scale at $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
target/release/postbus queue create deep --database-url "postgresql://postgres@127.0.0.1:$pgport/postbus" >/dev/null
for depth in 0 100000 1000000; do
  fill_to "$depth"
  vacuum
  line=$(target/release/postbus bench --target "127.0.0.1:$port" --duration "$secs" -p 4 -c 4 --receipt-every 100 --label "b with $depth queued" | tail -1)
  echo "$depth queued: broker RSS $(rss_kb) kB; $line"
done

# Restart with the 1M-deep queue: time until the first message of it is delivered.
kill "$broker"; wait "$broker" 2>/dev/null || true
start=$(date +%s%N)
target/release/postbusd --allow-anonymous --data-dir "$dir" --stomp-listen "127.0.0.1:$port" --http-listen "" \
  >"$dir/postbusd.out" 2>"$dir/postbusd.log" &
broker=$!
for _ in $(seq 600); do grep -q "postbus is ready" "$dir/postbusd.out" 2>/dev/null && break; sleep 0.01; done
ready=$(date +%s%N)
target/release/postbus receive /queue/deep --stomp "127.0.0.1:$port" --count 1 >/dev/null
first=$(date +%s%N)
echo "restart with 1,000,000 queued: ready after $(( (ready - start) / 1000000 )) ms, first message delivered after $(( (first - start) / 1000000 )) ms (includes starting the private PostgreSQL); broker RSS $(rss_kb) kB"
