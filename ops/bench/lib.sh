# Shared by ops/bench/*.sh: build, and start a fresh postbusd with a private PostgreSQL in a
# temp dir (stopped and removed on exit). Sourced; sets $port (STOMP) and $pgport.
. ops/scripts/lib.sh
ensure_rust
ensure_pg
cargo build --release --bins -q
dir=$(mktemp -d /tmp/postbus-bench.XXXXXX)
chmod 0711 "$dir"
port=61799
target/release/postbusd --allow-anonymous --data-dir "$dir" --stomp-listen "127.0.0.1:$port" --http-listen "" \
  >"$dir/postbusd.out" 2>"$dir/postbusd.log" &
broker=$!
trap 'kill $broker 2>/dev/null; wait $broker 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do grep -q "postbus is ready" "$dir/postbusd.out" 2>/dev/null && break; sleep 0.1; done
pgport=$(cat "$dir/pg/postbus.port")
vacuum() { psql -q -h 127.0.0.1 -p "$pgport" -U postgres postbus -c "VACUUM postbus.messages" >/dev/null; }
