#!/usr/bin/env bash
# A/B: runs the same workloads, with the same bench tool (this checkout's), against the
# postbusd of two builds, alternating A, B, A, B, each on a fresh private PostgreSQL.
# Usage: ops/bench/ab.sh DIR_A DIR_B [seconds]   (DIR_*: a target/release directory)
# Build the other side with e.g.:
#   git worktree add /tmp/old <commit> && (cd /tmp/old && CARGO_TARGET_DIR=/tmp/old/target cargo build --release --bins)
set -euo pipefail
cd "$(dirname "$0")/../.."
a=$1; b=$2; secs=${3:-8}
cargo build --release --bins -q
one() {
  local bin=$1 label=$2
  local dir; dir=$(mktemp -d /tmp/postbus-ab.XXXXXX); chmod 0711 "$dir"
  local port=61795
  "$bin/postbusd" --allow-anonymous --data-dir "$dir" --stomp-listen "127.0.0.1:$port" --http-listen "" >"$dir/out" 2>"$dir/log" &
  local broker=$!
  for _ in $(seq 100); do grep -q "postbus is ready" "$dir/out" 2>/dev/null && break; sleep 0.1; done
  local pgport; pgport=$(cat "$dir/pg/postbus.port")
  for w in "b:-p 4 -c 4 --receipt-every 100" "b':-p 4 -c 4 --receipt-every 1" "c':-p 16 -c 16 --receipt-every 1" "a:-p 1 -c 1 --receipt-every 1"; do
    psql -q -h 127.0.0.1 -p "$pgport" -U postgres postbus -c "VACUUM postbus.messages" >/dev/null
    target/release/postbus --passcode unused bench --target "127.0.0.1:$port" --duration "$secs" ${w#*:} --label "$label ${w%%:*}" || true
  done
  kill $broker; wait $broker 2>/dev/null || true
  rm -rf "$dir"
}
one "$a" A; one "$b" B; one "$a" A2; one "$b" B2
