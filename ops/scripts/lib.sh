# Shared by ops/scripts/*.sh: make sure PostgreSQL's server binaries and Rust are present.
# Sourced, not run.

have_pg() {
  [ -n "${POSTBUS_PG_BIN:-}" ] && [ -x "$POSTBUS_PG_BIN/initdb" ] && return 0
  command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ] && return 0
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

ensure_pg() {
  have_pg && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "PostgreSQL is not installed: installing it from the distribution's packages" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    # The package starts a system cluster; postbus does not use it.
  else
    echo "PostgreSQL's server binaries (initdb, pg_ctl) are missing." >&2
    echo "Install them, e.g. 'sudo apt-get install postgresql', or pass a database with --database-url." >&2
    exit 1
  fi
}

ensure_rust() {
  command -v cargo >/dev/null 2>&1 && return 0
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH" && return 0
  echo "cargo is missing: install Rust (https://rustup.rs), then run this again." >&2
  exit 1
}
