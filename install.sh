#!/usr/bin/env bash
# One command on a fresh machine: install the toolchain and PostgreSQL 18 (scripts/setup.sh),
# build the `steep` binary and the steep_repl extension, install both, then run `steep demo`.
#
#   ./install.sh [--bin-dir DIR] [--pg 15] [--no-demo] [--yes]
#
# --bin-dir  where to put `steep` (default: /usr/local/bin as root, else ~/.local/bin)
# --pg 15    also install PostgreSQL 15 from Debian and steep_repl into it
# --no-demo  skip `steep demo` at the end
# --yes      accepted for scripts; nothing here asks questions
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/env.sh
. "$here/scripts/env.sh"

if [ "$(id -u)" = 0 ]; then bin_dir=/usr/local/bin; else bin_dir="$HOME/.local/bin"; fi
demo=1
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) shift; bin_dir="${1:?--bin-dir needs a directory}" ;;
    --bin-dir=*) bin_dir="${1#--bin-dir=}" ;;
    --pg) shift; [ "${1:-}" = 15 ] || steep_die "--pg takes 15 (18 is always installed)"; extra+=(15) ;;
    --no-demo) demo=0 ;;
    --yes|-y) ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) steep_die "unknown option '$1' (see --help)" ;;
  esac
  shift
done

setup_args=()
[ ${#extra[@]} -gt 0 ] && setup_args+=(--pg 15)
"$here/scripts/setup.sh" "${setup_args[@]}"

steep_log "building steep (release)"
(cd "$here" && cargo build --release --locked --bin steep)
mkdir -p "$bin_dir"
# Remove, then copy: a running `steep` keeps its old inode and is not disturbed.
rm -f "$bin_dir/steep"
cp "$here/target/release/steep" "$bin_dir/steep"
steep_log "installed $bin_dir/steep"

for major in 18 "${extra[@]}"; do
  "$here/scripts/install-extension.sh" --pg "$major" --release
done

case ":$PATH:" in
  *":$bin_dir:"*) ;;
  *) steep_log "note: $bin_dir is not on PATH; add it, or run $bin_dir/steep" ;;
esac

if [ "$demo" = 1 ]; then
  steep_log "running steep demo"
  "$bin_dir/steep" demo
fi
