#!/usr/bin/env bash
# Runs every test: unit, property and integration tests against private PostgreSQL clusters
# (started and stopped by the tests themselves), the crash tests, and the stomp.py interop
# test. Installs what it needs first (PostgreSQL, openssl and promtool if missing and we are
# root; stomp.py into tests/.venv).
set -euo pipefail
cd "$(dirname "$0")/../.."
. ops/scripts/lib.sh
ensure_rust
ensure_pg

# stomp.py for the interop tests, in a venv of our own.
if [ ! -x tests/.venv/bin/python ] || ! tests/.venv/bin/python -c 'import stomp' 2>/dev/null; then
  if ! python3 -m venv tests/.venv 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip >/dev/null
      python3 -m venv tests/.venv
    else
      echo "python3 -m venv failed: install python3-venv" >&2
      exit 1
    fi
  fi
  tests/.venv/bin/pip install -q 'stomp.py>=8,<10'
fi
export POSTBUS_PYTHON="$PWD/tests/.venv/bin/python"

# The security tests make keys and certificates with openssl; the metrics tests check the
# alert rules and a live /metrics with promtool (Debian package prometheus); as root, the
# fault suite's network cut needs nft and ip, its clock jumps libfaketime, its full disk a loop
# mount (without root it says it skipped those scenarios).
need=()
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# The fault suite cuts the broker's database path with nft inside a network namespace.
if [ "$(id -u)" = 0 ]; then
  command -v nft >/dev/null 2>&1 || need+=(nftables)
  command -v ip >/dev/null 2>&1 || need+=(iproute2)
  # The clock-jump scenarios step postbusd's and PostgreSQL's clocks with libfaketime.
  ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || need+=(faketime)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing: ${need[*]} (openssl makes the TLS and JWT tests' keys; promtool, in package prometheus, checks the metrics): install them" >&2
    exit 1
  fi
fi

# The crash tests run the real binaries.
cargo build --bins -q
cargo test --workspace --no-fail-fast "$@"
