#!/usr/bin/env bash
# The whole test suite: setup (idempotent), lint, the embedded-SQL drift check, then for each
# PostgreSQL version the extension's #[pg_test]s, the CLI unit tests and the integration tests
# against real clusters. Everything runs on the test suite's own copies of the PostgreSQL trees
# (scripts/setup.sh makes them): a user's sandboxes keep running while the suite rebuilds.
#
#   scripts/test.sh [--pg all|18|17|16|15] [--skip-lint] [-- <cargo test filter>]
#
# Default: --pg all (PostgreSQL 18, 15, 16, 17). On 16 and 17 the integration tests are the
# version-sensitive subset ($subset_16_17: install and upgrade, a snapshot round trip in both
# modes, the parity test, bidirectional replication, which needs 16+). STEEP_TEST_PG has the same meaning as --pg.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=scripts/env.sh
. "$here/env.sh"

pg="${STEEP_TEST_PG:-all}"
lint=1
filter=()
while [ $# -gt 0 ]; do
  case "$1" in
    --pg) shift; pg="${1:-}" ;;
    --pg=*) pg="${1#--pg=}" ;;
    --skip-lint) lint=0 ;;
    --) shift; filter=("$@"); break ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) steep_die "unknown option '$1' (see --help)" ;;
  esac
  shift
done
case "$pg" in
  all) majors=(18 15 16 17) ;;
  18|17|16|15) majors=("$pg") ;;
  *) steep_die "--pg takes all, 18, 17, 16 or 15" ;;
esac
subset_16_17=(lifecycle:: snapshot::round_trip_in_client_mode snapshot::direct_and_client_modes
  parity:: replication::bidirectional replication::from_empty)

step() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
started=$SECONDS

step "setup"
setup_args=(--quiet)
for major in "${majors[@]}"; do setup_args+=(--pg "$major"); done
"$here/setup.sh" "${setup_args[@]}"

cd "$root"
if [ "$lint" = 1 ]; then
  step "lint: cargo fmt --check, clippy -D warnings (CLI and extension)"
  cargo fmt --all --check
  cargo clippy --all-targets --locked -- -D warnings
  (cd ext && cargo clippy --all-targets --locked --no-default-features --features "pg18 pg_test" -- -D warnings)
fi

# pgrx runs its test cluster as an unprivileged user when we are root.
pgrx_env=()
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$STEEP_HOME/pgrx-test"
  chown "$STEEP_RUN_AS": "$STEEP_HOME/pgrx-test"
  pgrx_env=(CARGO_PGRX_TEST_RUNAS="$STEEP_RUN_AS")
fi

for major in "${majors[@]}"; do
  pg_config="$(steep_test_pg_config "$major")"

  step "PostgreSQL $major: extension tests (cargo pgrx test pg$major)"
  (cd ext && env "${pgrx_env[@]}" CARGO_PGRX_TEST_PGDATA="$STEEP_HOME/pgrx-test/data-$major" \
    cargo pgrx test "pg$major" --no-default-features)

  # pgrx test installed its pg_test build; the CLI tests need the real one.
  step "PostgreSQL $major: install steep_repl"
  "$here/install-extension.sh" --pg "$major" --test-tree

  if [ "$major" = 18 ]; then
    step "embedded SQL matches what cargo pgrx schema generates"
    "$here/gen-sql.sh" --check
  fi

  step "PostgreSQL $major: CLI unit and integration tests"
  tests=("${filter[@]}")
  if [ "$major" = 16 ] || [ "$major" = 17 ]; then
    [ ${#tests[@]} -gt 0 ] || tests=("${subset_16_17[@]}")
    # The unit tests do not depend on the server version.
    STEEP_TEST_PG_CONFIG="$pg_config" cargo test --locked --test integration -- "${tests[@]}"
  else
    STEEP_TEST_PG_CONFIG="$pg_config" cargo test --locked -- "${tests[@]}"
  fi
done

step "all tests passed on PostgreSQL ${majors[*]} in $((SECONDS - started)) s"
