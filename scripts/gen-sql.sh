#!/usr/bin/env bash
# Regenerate the current version's install script in embedded_sql/ from the extension source,
# or (--check) fail when the embedded copy has drifted from what `cargo pgrx schema` generates.
#
#   scripts/gen-sql.sh [--check]
#
# Only the newest version is generated: released versions' scripts are frozen history.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=scripts/env.sh
. "$here/env.sh"

check=0
[ "${1:-}" = "--check" ] && check=1
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/ext/Cargo.toml" | head -n1)"
target="$root/embedded_sql/steep_repl--$version.sql"
generated="$(mktemp)"
trap 'rm -f "$generated"' EXIT
(cd "$root/ext" && cargo pgrx schema pg18 --no-default-features -o "$generated" >/dev/null 2>&1) \
  || (cd "$root/ext" && cargo pgrx schema pg18 --no-default-features -o "$generated")
if [ "$check" = 1 ]; then
  if ! diff -u "$target" "$generated"; then
    steep_die "embedded_sql/steep_repl--$version.sql differs from the extension source: run scripts/gen-sql.sh and commit the result"
  fi
  steep_log "embedded_sql/steep_repl--$version.sql is current"
else
  cp "$generated" "$target"
  steep_log "wrote $target"
fi
