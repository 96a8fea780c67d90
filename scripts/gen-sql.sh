#!/usr/bin/env bash
# Regenerate the current version's install script in embedded_sql/ from the extension source,
# and the upgrade script from the previous version to it; or (--check) fail when the embedded
# copies have drifted from what `cargo pgrx schema` generates.
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
# The newest frozen install script older than the current version.
previous="$(cd "$root/embedded_sql" && ls steep_repl--*.sql | grep -v -- '--.*--' \
  | sed 's/^steep_repl--\(.*\)\.sql$/\1/' | grep -vx "$version" | sort -V | tail -n1)"
upgrade_generated="$(mktemp)"
trap 'rm -f "$generated" "$upgrade_generated"' EXIT
if [ -n "$previous" ]; then
  python3 "$here/sqlgen.py" upgrade "$root/embedded_sql/steep_repl--$previous.sql" "$generated" \
    "$previous" "$version" > "$upgrade_generated"
fi
upgrade_target="$root/embedded_sql/steep_repl--$previous--$version.sql"
if [ "$check" = 1 ]; then
  if ! python3 "$here/sqlgen.py" same "$target" "$generated"; then
    steep_die "embedded_sql/steep_repl--$version.sql differs from the extension source: run scripts/gen-sql.sh and commit the result"
  fi
  if [ -n "$previous" ] && ! python3 "$here/sqlgen.py" same-upgrade "$upgrade_target" "$upgrade_generated"; then
    diff -u "$upgrade_target" "$upgrade_generated" || true
    steep_die "$(basename "$upgrade_target") differs from what the install scripts imply: run scripts/gen-sql.sh and commit the result"
  fi
  steep_log "embedded_sql/steep_repl--$version.sql${previous:+ and steep_repl--$previous--$version.sql} are current"
else
  cp "$generated" "$target"
  steep_log "wrote $target"
  if [ -n "$previous" ]; then
    cp "$upgrade_generated" "$upgrade_target"
    steep_log "wrote $upgrade_target"
  fi
fi
