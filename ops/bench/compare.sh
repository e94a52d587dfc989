#!/usr/bin/env bash
# Side-by-side comparison on this machine, in one run, with one load tool (`postbus bench`):
# postbus (release build, private PostgreSQL with fsync on), RabbitMQ (Debian's package, STOMP
# plugin, durable queues, persistent messages), ActiveMQ Classic (Debian's package, STOMP
# transport, KahaDB), and the raw PostgreSQL limit for the same insert-then-delete cycle
# (pgbench). Installs and starts what it needs (as root), runs everything on 127.0.0.1, stops
# what it started, and prints one table (also written as JSON lines to $OUT).
#
# Usage: ops/bench/compare.sh [seconds per run, default 15] [brokers, default "postbus rabbitmq activemq pg"]
#
# CPU-s/10k is the CPU time (user + system) of the broker's processes, plus PostgreSQL's for
# postbus, per 10,000 messages received, read from /proc before and after each run. For postbus
# it includes a VACUUM after each run (the dead rows a run leaves are part of its cost; vacuuming
# then also keeps them from slowing the next workload).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-15}"
brokers="${2:-postbus rabbitmq activemq pg}"
OUT="${OUT:-/tmp/postbus-compare.jsonl}"
: >"$OUT"
# RabbitMQ's STOMP plugin listens on its default port.
RABBIT_PORT=61613
AMQ_PORT=61633

. ops/scripts/lib.sh
ensure_rust
ensure_pg
cargo build --release --bins -q
bench=target/release/postbus

# CPU ticks (user + system) of the given pids and their threads.
ticks() {
  local t=0 p
  for p in "$@"; do
    # utime + stime, and cutime + cstime: backends that exited (a VACUUM's) count too.
    [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat")))
  done
  echo "$t"
}
hz=$(getconf CLK_TCK)

# Runs every workload against one broker: $1 label, $2 target, $3 "pids command", then extra
# bench flags (login, ...).
workloads() {
  local name="$1" target="$2" pids_cmd="$3"
  shift 3
  local spec label before after
  while IFS='|' read -r label spec; do
    [ -n "$label" ] || continue
    before=$(ticks $($pids_cmd))
    # shellcheck disable=SC2086
    if ! line=$($bench bench --target "$target" --duration "$secs" --json --label "$label" $spec "$@" 2>/dev/null); then
      line=$(echo "${line:-{\}}" | tail -1)
    fi
    # A broker that leaves work behind (postbus: dead rows for VACUUM) does it now, counted in
    # this workload's CPU and kept out of the next one's figures.
    [ -z "${SETTLE:-}" ] || $SETTLE
    after=$(ticks $($pids_cmd))
    line=$(echo "$line" | tail -1)
    [ -n "$line" ] || line='{}'
    python3 - "$name" "$label" "$((after - before))" "$hz" "$line" >>"$OUT" <<'PY'
import json, sys
name, label, ticks, hz, line = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
try:
    r = json.loads(line)
except ValueError:
    r = {}
received = r.get("received", 0) or 0
cpu = ticks / hz
print(json.dumps({
    "broker": name, "workload": label,
    "msgs_per_sec": r.get("msgs_per_sec"),
    "p50_ms": (r.get("latency_ms") or {}).get("p50"),
    "p99_ms": (r.get("latency_ms") or {}).get("p99"),
    "p999_ms": (r.get("latency_ms") or {}).get("p999"),
    "cpu_s_per_10k": round(cpu / received * 10000, 3) if received else None,
    "lost": r.get("lost"), "duplicates": r.get("duplicates"),
    "group_order_violations": r.get("group_order_violations"),
    "errors": r.get("errors"),
}))
PY
    tail -1 "$OUT"
  done <<'EOF'
a|-p 1 -c 1 --receipt-every 1
b|-p 4 -c 4 --receipt-every 100
b'|-p 4 -c 4 --receipt-every 1
c|-p 16 -c 16 --receipt-every 100
c'|-p 16 -c 16 --receipt-every 1
d|-p 4 -c 4 --tx-size 10
e|-p 4 -c 4 --groups 10 --receipt-every 100
f1000|-p 1 -c 1 --rate 1000 --receipt-every 10
f5000|-p 1 -c 1 --rate 5000 --receipt-every 100
EOF
}

run_postbus() {
  local dir port=61799 broker
  dir=$(mktemp -d /tmp/postbus-compare.XXXXXX)
  chmod 0711 "$dir"
  target/release/postbusd --allow-anonymous --data-dir "$dir" --stomp-listen "127.0.0.1:$port" --http-listen "" \
    >"$dir/postbusd.out" 2>"$dir/postbusd.log" &
  broker=$!
  for _ in $(seq 300); do grep -q "postbus is ready" "$dir/postbusd.out" 2>/dev/null && break; sleep 0.1; done
  PB_DIR="$dir" PB_PID=$broker
  pids_postbus() { echo "$PB_PID" $(pgrep -f -- "-D $PB_DIR/pg" || true) $(pgrep -P "$(pgrep -f -- "-D $PB_DIR/pg" | head -1)" 2>/dev/null || true); }
  local pgport
  pgport=$(cat "$dir/pg/postbus.port")
  PB_VACUUM="psql -q -h 127.0.0.1 -p $pgport -U postgres postbus -c VACUUM"
  SETTLE="$PB_VACUUM" workloads postbus "127.0.0.1:$port" pids_postbus
  kill "$broker"; wait "$broker" 2>/dev/null || true
  rm -rf "$dir"
}

run_rabbitmq() {
  if ! command -v rabbitmq-server >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
  fi
  local started=0
  if ! rabbitmqctl status >/dev/null 2>&1; then
    rabbitmq-server -detached; started=1
    for _ in $(seq 60); do rabbitmqctl status >/dev/null 2>&1 && break; sleep 1; done
  fi
  local had_plugin=1
  rabbitmq-plugins list -e 2>/dev/null | grep -q rabbitmq_stomp || had_plugin=0
  rabbitmq-plugins enable rabbitmq_stomp >/dev/null
  for _ in $(seq 60); do (exec 3<>/dev/tcp/127.0.0.1/$RABBIT_PORT) 2>/dev/null && break; sleep 1; done
  pids_rabbit() { pgrep -f beam.smp || true; }
  workloads rabbitmq "127.0.0.1:$RABBIT_PORT" pids_rabbit --login guest --passcode guest --vhost /
  [ "$had_plugin" = 1 ] || rabbitmq-plugins disable rabbitmq_stomp >/dev/null || true
  [ "$started" = 0 ] || rabbitmqctl stop >/dev/null || true
}

run_activemq() {
  if [ ! -x /usr/bin/activemq ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq activemq >/dev/null
  fi
  # An instance of our own in Debian's layout: the stock configuration (KahaDB, journal disk
  # syncs on) plus a STOMP transport on our port.
  local inst=postbus-bench
  local conf=/etc/activemq/instances-available/$inst
  rm -rf "$conf" && mkdir -p "$conf"
  cp /etc/activemq/instances-available/main/* "$conf/"
  python3 - "$conf/activemq.xml" "$AMQ_PORT" <<'PY'
import sys
path, port = sys.argv[1], sys.argv[2]
x = open(path).read()
stomp = f'<transportConnector name="stomp" uri="stomp://127.0.0.1:{port}"/>'
x = x.replace("<transportConnectors>", "<transportConnectors>\n            " + stomp, 1)
open(path, "w").write(x)
PY
  ln -sfn "../instances-available/$inst" "/etc/activemq/instances-enabled/$inst"
  rm -rf "/var/lib/activemq/$inst" && mkdir -p "/var/lib/activemq/$inst" && chown -R activemq "/var/lib/activemq/$inst"
  /etc/init.d/activemq start >/dev/null 2>&1 || true
  for _ in $(seq 120); do (exec 3<>/dev/tcp/127.0.0.1/$AMQ_PORT) 2>/dev/null && break; sleep 1; done
  pids_amq() { pgrep -u activemq java || true; }
  workloads activemq "127.0.0.1:$AMQ_PORT" pids_amq
  /etc/init.d/activemq stop >/dev/null 2>&1 || true
  rm -f "/etc/activemq/instances-enabled/$inst"
  rm -rf "$conf" "/var/lib/activemq/$inst"
}

# The raw PostgreSQL limit: what postbus does per message when consumers keep up, done
# directly in SQL by 4 clients in batches of 100 1 KiB rows: insert 100 (RETURNING the ids),
# commit; delete exactly those ids, commit. Same cluster settings as postbus's dev mode.
run_pg() {
  local dir port
  dir=$(mktemp -d /tmp/pg-compare.XXXXXX)
  chmod 0711 "$dir"
  target/release/postbusd --allow-anonymous --data-dir "$dir" --stomp-listen "127.0.0.1:61798" --http-listen "" \
    >"$dir/postbusd.out" 2>"$dir/postbusd.log" &
  local broker=$!
  for _ in $(seq 300); do grep -q "postbus is ready" "$dir/postbusd.out" 2>/dev/null && break; sleep 0.1; done
  port=$(cat "$dir/pg/postbus.port")
  kill "$broker"; wait "$broker" 2>/dev/null || true
  # postbusd stopped its cluster on exit: start it again on its own.
  runuser -u postgres -- "$(pg_config --bindir)/pg_ctl" -D "$dir/pg" -o "-p $port -k $dir/pg" -l "$dir/pg/compare.log" -w start >/dev/null
  psql -q -h 127.0.0.1 -p "$port" -U postgres postgres -c "CREATE TABLE IF NOT EXISTS bench_q (id bigserial PRIMARY KEY, body bytea NOT NULL)"
  cat >"$dir/cycle.sql" <<'SQL'
WITH i AS (INSERT INTO bench_q (body) SELECT convert_to(repeat('x', 1024), 'UTF8') FROM generate_series(1, 100) RETURNING id) SELECT quote_literal(array_agg(id)::text) AS ids FROM i \gset
DELETE FROM bench_q WHERE id = ANY(:ids::bigint[]);
SQL
  local before after out tps
  pids_pg() { pgrep -f -- "-D $dir/pg" || true; pgrep -u postgres -f "postgres: .*bench|postgres: postgres postgres" || true; }
  before=$(ticks $(pids_pg))
  out=$(pgbench -n -h 127.0.0.1 -p "$port" -U postgres -c 4 -j 2 -T "$secs" -f "$dir/cycle.sql" postgres 2>&1)
  after=$(ticks $(pids_pg))
  tps=$(echo "$out" | awk '/^tps = / {print $3; exit}')
  python3 - "$tps" "$((after - before))" "$hz" "$secs" >>"$OUT" <<'PY'
import json, sys
tps, ticks, hz, secs = float(sys.argv[1] or 0), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
msgs = tps * 100
# CPU is not reported: pgbench's backends exit before their time can be read reliably.
print(json.dumps({"broker": "pg-raw", "workload": "b", "msgs_per_sec": msgs}))
PY
  tail -1 "$OUT"
  runuser -u postgres -- "$(pg_config --bindir)/pg_ctl" -D "$dir/pg" -m fast -w stop >/dev/null || true
  rm -rf "$dir"
}

echo "comparison at $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), ${secs}s per run"
for b in $brokers; do
  case "$b" in
    postbus) run_postbus ;;
    rabbitmq) run_rabbitmq ;;
    activemq) run_activemq ;;
    pg) run_pg ;;
    *) echo "unknown broker $b (postbus, rabbitmq, activemq, pg)" >&2; exit 2 ;;
  esac
done

python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
brokers = []
for r in rows:
    if r["broker"] not in brokers:
        brokers.append(r["broker"])
workloads = []
for r in rows:
    if r["workload"] not in workloads:
        workloads.append(r["workload"])
def cell(r):
    if not r or r.get("msgs_per_sec") is None:
        return "-"
    s = f'{r["msgs_per_sec"]:,.0f}'
    if r.get("p99_ms") is not None:
        s += f' (p99 {r["p99_ms"]:.1f} ms)'
    if r.get("cpu_s_per_10k") is not None:
        s += f' {r["cpu_s_per_10k"]:.2f} CPU-s/10k'
    bad = [k for k in ("lost", "duplicates", "group_order_violations") if r.get(k)]
    if bad:
        s += " " + ",".join(f"{k}={r[k]}" for k in bad)
    return s
print()
print("| workload | " + " | ".join(brokers) + " |")
print("|---|" + "---|" * len(brokers))
for w in workloads:
    cells = []
    for b in brokers:
        r = next((x for x in rows if x["broker"] == b and x["workload"] == w), None)
        cells.append(cell(r))
    print(f"| {w} | " + " | ".join(cells) + " |")
PY
