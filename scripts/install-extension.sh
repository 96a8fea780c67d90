#!/usr/bin/env bash
# Build steep_repl, install it into a PostgreSQL tree, and keep a copy of the installed files as
# the package `steep init` installs from ($STEEP_HOME/packages/pg<major>: lib/ and extension/).
#
#   scripts/install-extension.sh [--pg 18|17|16|15] [--release] [--test-tree | --pg-config PATH]
#
# PostgreSQL 18 is the tree scripts/setup.sh installed under $STEEP_HOME; 15 is Debian's; 16 and
# 17 are under $STEEP_HOME too. --test-tree installs into the test suite's copy instead,
# --pg-config into the tree of that pg_config (of the same major version).
# The build always uses the test suite's copy (the tree `cargo pgrx init` recorded, same headers),
# so switching between trees never rebuilds pgrx's bindings.
# Besides the script pgrx generates for the current version, every other install and upgrade
# script in embedded_sql/ is installed, so older installs can be upgraded in place.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/env.sh
. "$here/env.sh"

major=18
profile=()
test_tree=0
into=""
while [ $# -gt 0 ]; do
  case "$1" in
    --pg) shift; major="${1:-}" ;;
    --pg=*) major="${1#--pg=}" ;;
    --release) profile=(--release) ;;
    --test-tree) test_tree=1 ;;
    --pg-config) shift; into="${1:?--pg-config needs a path}" ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) steep_die "unknown option '$1' (see --help)" ;;
  esac
  shift
done
pg_config="$(steep_pg_config "$major")"
build_pg_config="$(steep_test_pg_config "$major")"
[ "$test_tree" = 1 ] && pg_config="$build_pg_config"
[ -n "$into" ] && pg_config="$into"
fix="scripts/setup.sh"; [ "$major" = 18 ] || fix="scripts/setup.sh --pg $major"
for p in "$pg_config" "$build_pg_config"; do
  [ -x "$p" ] || steep_die "PostgreSQL $major is not installed ($p): run $fix"
done
"$pg_config" --version | grep -q "^PostgreSQL $major[.]" \
  || steep_die "$pg_config is not PostgreSQL $major ($("$pg_config" --version)): pass --pg with its major version"

steep_log "building and installing steep_repl into PostgreSQL $major ($pg_config)"
cd "$here/../ext"
# Built into a staging tree, then each file written beside its destination and renamed over it:
# a running server keeps the library it mapped (rewriting it in place crashed every server that
# had it loaded).
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
debug=(--debug); [ "${#profile[@]}" -gt 0 ] && debug=()
cargo pgrx package --pg-config "$build_pg_config" --no-default-features --features "pg$major" \
  "${debug[@]}" --out-dir "$stage"
libdir="$("$pg_config" --pkglibdir)"
extdir="$("$pg_config" --sharedir)/extension"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
# The server runs as an unprivileged user: it must read what root installed.
put() { # put SOURCE DEST_DIR
  local dest="$2/$(basename "$1")"
  install -m 0644 "$1" "$dest.steep-new"
  mv -f "$dest.steep-new" "$dest"
}
mkdir -p "$libdir" "$extdir"
put "$stage$("$build_pg_config" --pkglibdir)/steep_repl.so" "$libdir"
for f in "$stage$("$build_pg_config" --sharedir)/extension"/steep_repl*; do put "$f" "$extdir"; done
for f in "$here"/../embedded_sql/steep_repl--*.sql; do
  # The current version's script is the one pgrx just generated (gen-sql.sh --check keeps the
  # embedded copy identical).
  [ "$(basename "$f")" = "steep_repl--$version.sql" ] || put "$f" "$extdir"
done

# The package `steep init` installs from is refreshed from the standard trees only (a tree named
# with --pg-config is someone's copy; tests install into copies while others read the package).
if [ -n "$into" ]; then
  steep_log "steep_repl $version installed into $("$pg_config" --pkglibdir)"
  exit 0
fi
# The test suite's build is the test suite's package: a user's `steep init` keeps installing what
# install.sh built.
pkg="$STEEP_HOME/packages/pg$major"
[ "$test_tree" = 1 ] && pkg="$STEEP_TEST_PG_ROOT/packages/pg$major"
rm -rf "$pkg.tmp"
mkdir -p "$pkg.tmp/lib" "$pkg.tmp/extension"
cp "$libdir/steep_repl.so" "$pkg.tmp/lib/"
cp "$extdir"/steep_repl.control "$extdir"/steep_repl--*.sql "$pkg.tmp/extension/"
printf '{"extension":"steep_repl","version":"%s","pg_major":%s}\n' "$version" "$major" > "$pkg.tmp/package.json"
chmod -R a+rX "$pkg.tmp"
rm -rf "$pkg"
mv "$pkg.tmp" "$pkg"
steep_log "steep_repl $version installed into PostgreSQL $major; package for steep init: $pkg"
