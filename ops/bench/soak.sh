#!/usr/bin/env bash
# Soak (docs/benchmarks.md, "Soak"): MINUTES back-to-back one-minute runs at a fixed offered load
# (default 12,000 msgs/s, about half of the (b) peak, 2 producers and 2 consumers, a receipt every
# 100th SEND), printing per minute the throughput, latency, table size, live and dead tuples and
# broker RSS, so growth over time shows. Autovacuum as configured by the schema.
# Usage: ops/bench/soak.sh [MINUTES, default 10] [RATE, default 12000]
set -euo pipefail
cd "$(dirname "$0")/../.."
minutes="${1:-10}"
rate="${2:-12000}"
. ops/bench/lib.sh
psql_pb() { psql -qAt -h 127.0.0.1 -p "$pgport" -U postgres postbus -c "$1"; }
echo "soak at $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), $minutes x 60 s at $rate msgs/s"
printf '%-6s %-10s %-9s %-9s %-10s %-12s %-10s %-10s %-8s\n' minute msgs/s p50_ms p99_ms p999_ms table_bytes live_tup dead_tup rss_kB
for m in $(seq "$minutes"); do
  line=$(target/release/postbus bench --target "127.0.0.1:$port" --destination /queue/soak --duration 60 \
    -p 2 -c 2 --rate "$rate" --receipt-every 100 --json | tail -1)
  stats=$(psql_pb "SELECT pg_total_relation_size('postbus.messages'), n_live_tup, n_dead_tup FROM pg_stat_user_tables WHERE relname = 'messages'")
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$broker/status")
  python3 - "$m" "$line" "$stats" "$rss" <<'PY'
import json, sys
m, line, stats, rss = sys.argv[1:5]
r = json.loads(line)
size, live, dead = stats.split("|")
lat = r["latency_ms"]
bad = "" if r["lost"] == 0 and r["duplicates"] == 0 else f' lost={r["lost"]} dup={r["duplicates"]}'
print(f'{m:<6} {r["msgs_per_sec"]:<10.0f} {lat["p50"]:<9.2f} {lat["p99"]:<9.2f} {lat["p999"]:<10.2f} {size:<12} {live:<10} {dead:<10} {rss:<8}{bad}')
PY
done
