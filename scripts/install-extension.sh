#!/usr/bin/env bash
# Build steep_repl, install it into a PostgreSQL tree, and keep a copy of the installed files as
# the package `steep init` installs from ($STEEP_HOME/packages/pg<major>: lib/ and extension/).
#
#   scripts/install-extension.sh [--pg 18|15] [--release]
#
# PostgreSQL 18 is the tree scripts/setup.sh installed under $STEEP_HOME; 15 is Debian's.
# Besides the script pgrx generates for the current version, every other install and upgrade
# script in embedded_sql/ is installed, so older installs can be upgraded in place.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/env.sh
. "$here/env.sh"

major=18
profile=()
while [ $# -gt 0 ]; do
  case "$1" in
    --pg) shift; major="${1:-}" ;;
    --pg=*) major="${1#--pg=}" ;;
    --release) profile=(--release) ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) steep_die "unknown option '$1' (see --help)" ;;
  esac
  shift
done
pg_config="$(steep_pg_config "$major")"
if [ ! -x "$pg_config" ]; then
  fix="scripts/setup.sh"; [ "$major" = 18 ] || fix="scripts/setup.sh --pg $major"
  steep_die "PostgreSQL $major is not installed ($pg_config): run $fix"
fi

steep_log "building and installing steep_repl into PostgreSQL $major ($pg_config)"
cd "$here/../ext"
# Built into a staging tree, then each file written beside its destination and renamed over it:
# a running server keeps the library it mapped (rewriting it in place crashed every server that
# had it loaded).
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
debug=(--debug); [ "${#profile[@]}" -gt 0 ] && debug=()
cargo pgrx package --pg-config "$pg_config" --no-default-features --features "pg$major" \
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
put "$stage$libdir/steep_repl.so" "$libdir"
for f in "$stage$extdir"/steep_repl*; do put "$f" "$extdir"; done
for f in "$here"/../embedded_sql/steep_repl--*.sql; do
  # The current version's script is the one pgrx just generated (gen-sql.sh --check keeps the
  # embedded copy identical).
  [ "$(basename "$f")" = "steep_repl--$version.sql" ] || put "$f" "$extdir"
done

pkg="$STEEP_HOME/packages/pg$major"
rm -rf "$pkg.tmp"
mkdir -p "$pkg.tmp/lib" "$pkg.tmp/extension"
cp "$libdir/steep_repl.so" "$pkg.tmp/lib/"
cp "$extdir"/steep_repl.control "$extdir"/steep_repl--*.sql "$pkg.tmp/extension/"
printf '{"extension":"steep_repl","version":"%s","pg_major":%s}\n' "$version" "$major" > "$pkg.tmp/package.json"
chmod -R a+rX "$pkg.tmp"
rm -rf "$pkg"
mv "$pkg.tmp" "$pkg"
steep_log "steep_repl $version installed into PostgreSQL $major; package for steep init: $pkg"
