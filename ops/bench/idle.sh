#!/usr/bin/env bash
# Memory per idle connection and per queue with a consumer (docs/benchmarks.md, "Scale"):
# opens N idle STOMP connections, then subscribes one connection to N queues, reading the
# broker's RSS and its CPU use while everything is idle. Usage: ops/bench/idle.sh [N, default 1000]
set -euo pipefail
cd "$(dirname "$0")/../.."
n="${1:-1000}"
. ops/bench/lib.sh
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$broker/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$broker/stat"; }
echo "idle at $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), N=$n"
base=$(rss_kb)
python3 - "$port" "$n" "$broker" <<'PY'
import socket, sys, time
port, n, broker = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def rss():
    for line in open(f"/proc/{broker}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
def ticks():
    f = open(f"/proc/{broker}/stat").read().split()
    return int(f[13]) + int(f[14])
def connect():
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"CONNECT\naccept-version:1.2\nhost:localhost\nheart-beat:0,0\n\n\x00")
    data = b""
    while b"\x00" not in data:
        data += s.recv(4096)
    assert data.startswith(b"CONNECTED"), data[:200]
    return s
before = rss()
conns = [connect() for _ in range(n)]
time.sleep(2)
after = rss()
print(f"{n} idle connections: RSS {before} -> {after} kB, {(after - before) * 1024 / n:.0f} bytes per connection")
for c in conns:
    c.close()
time.sleep(2)
s = connect()
before = rss()
for i in range(n):
    s.sendall(f"SUBSCRIBE\nid=s{i}\ndestination:/queue/idle.q{i}\nack:client-individual\nreceipt:r{i}\n\n\x00".replace("id=", "id:").encode())
got = 0
data = b""
while got < n:
    data += s.recv(65536)
    got = data.count(b"RECEIPT")
time.sleep(2)
after = rss()
t0 = ticks(); time.sleep(10); t1 = ticks()
print(f"{n} queues with one idle consumer each: RSS {before} -> {after} kB, {(after - before) * 1024 / n:.0f} bytes per queue; broker CPU while idle {(t1 - t0) / 100 / 10 * 100:.1f}% of a core")
s.close()
PY
