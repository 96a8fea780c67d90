#!/usr/bin/env bash
# Build steep_repl and install it into a PostgreSQL tree.
#
#   scripts/install-extension.sh [--pg 18|15] [--release]
#
# PostgreSQL 18 is the tree scripts/setup.sh installed under $STEEP_HOME; 15 is Debian's.
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
cargo pgrx install --pg-config "$pg_config" --no-default-features --features "pg$major" "${profile[@]}"
# The server runs as an unprivileged user: it must read what root installed.
chmod a+r "$("$pg_config" --pkglibdir)/steep_repl.so" "$("$pg_config" --sharedir)"/extension/steep_repl*
