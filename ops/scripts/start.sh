#!/usr/bin/env bash
# Starts a working postbus broker for development: builds it, and with no --database-url
# starts a private PostgreSQL under .postbus/ (installing PostgreSQL first if it is missing and
# we are root). Extra arguments go to postbusd (see `postbusd --help`).
set -euo pipefail
cd "$(dirname "$0")/../.."
. ops/scripts/lib.sh
ensure_rust
ensure_pg
cargo build --release --bins -q
export PATH="$PWD/target/release:$PATH"
exec postbusd --dev-token "$@"
