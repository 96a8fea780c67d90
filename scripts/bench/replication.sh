#!/usr/bin/env bash
# Replication init, one way, on two sandboxes: pgbench (scale BENCH_REPL_SCALE, default 50) on the
# first, writing throughout (-c 2, -R BENCH_REPL_RATE tps, default 200), the second holding the
# empty tables. From start until the subscriber has caught up: `steep replication init --from
# snapshot --one-way` against PostgreSQL's own table sync (CREATE PUBLICATION + CREATE
# SUBSCRIPTION ... WITH (copy_data = true)). Caught up: every table synchronized and the slot
# confirmed the publisher's WAL position read at that moment. Then the merge case on
# pgbench_accounts alone (pgbench_history has no key): `--from merge` without writers against
# `steep merge run` of the same copies. Prints a Markdown section.
set -euo pipefail
steep="${STEEP_BENCH_STEEP:?run through scripts/bench.sh}"
scale="${BENCH_REPL_SCALE:-50}"
rate="${BENCH_REPL_RATE:-200}"
a_name=bench-repl-a
b_name=bench-repl-b

log() { printf 'bench: %s\n' "$*" >&2; }
for n in "$a_name" "$b_name"; do
  "$steep" local down "$n" -q >/dev/null 2>&1 || true
  "$steep" local up "$n" -q >/dev/null
done
a="$("$steep" local status "$a_name" --json | jq -r .connection)"
b="$("$steep" local status "$b_name" --json | jq -r .connection)"
bin="$(dirname "$("$steep" local status "$a_name" --json | jq -r .pg_config)")"
psql_on() { local c="$1"; shift; "$bin/psql" -X -q -v ON_ERROR_STOP=1 "$c" "$@"; }
"$steep" init -q -c "$a" >/dev/null
"$steep" init -q -c "$b" >/dev/null

log "dataset on the first: pgbench -i -s $scale"
"$bin/pgbench" -i -q -s "$scale" "$a" >/dev/null 2>&1
psql_on "$a" -c "ALTER TABLE pgbench_history REPLICA IDENTITY FULL" -c "VACUUM ANALYZE" >/dev/null
accounts_bytes="$(psql_on "$a" -Atc "SELECT pg_size_pretty(pg_total_relation_size('pgbench_accounts'))")"
schema="/tmp/steep-bench-repl-schema.$$.sql"
"$bin/pg_dump" -s -t 'pgbench_*' "$a" > "$schema"

fresh_b() { # the second sandbox: the tables, empty
  psql_on "$b" -c "DROP TABLE IF EXISTS pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history" >/dev/null
  psql_on "$b" -f "$schema" >/dev/null
}
now() { date +%s.%N; }
since() { printf '%.2f' "$(echo "$(now) - $1" | bc -l)"; }
# caught_up SLOT_LIKE: wait until the slot confirmed the first node's WAL position of now.
caught_up() {
  local lsn; lsn="$(psql_on "$a" -Atc "SELECT pg_current_wal_lsn()")"
  until [ "$(psql_on "$a" -Atc "SELECT coalesce(bool_and(confirmed_flush_lsn >= '$lsn'), false)
                                  FROM pg_replication_slots WHERE slot_name LIKE '$1'")" = t ]; do
    sleep 0.1
  done
}
writer() { "$bin/pgbench" -n -c 2 -T 100000 -R "$rate" "$a" >/dev/null 2>&1 & echo $!; }
history() { psql_on "$1" -Atc "SELECT count(*) || ' ' || coalesce(sum(delta), 0) FROM pgbench_history"; }
settle() { # stop the writer, wait for replication, and compare
  kill "$1"; wait "$1" 2>/dev/null || true
  caught_up "$2"
  local ha hb; ha="$(history "$a")"; hb="$(history "$b")"
  [ "$ha" = "$hb" ] || { log "history differs: $ha vs $hb"; exit 1; }
  echo "$ha"
}

log "PostgreSQL's table sync while pgbench writes"
fresh_b
psql_on "$a" -c "CREATE PUBLICATION bench_pub FOR TABLE pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history" >/dev/null
w=$(writer); sleep 2
t0=$(now)
psql_on "$b" -c "CREATE SUBSCRIPTION bench_sub CONNECTION '$a' PUBLICATION bench_pub WITH (copy_data = true)" >/dev/null
until [ "$(psql_on "$b" -Atc "SELECT count(*) FILTER (WHERE srsubstate <> 'r') = 0 AND count(*) = 4 FROM pg_subscription_rel")" = t ]; do
  sleep 0.2
done
caught_up 'bench_sub'
builtin_s=$(since "$t0")
builtin_hist=$(settle "$w" 'bench_sub')
psql_on "$b" -c "DROP SUBSCRIPTION bench_sub" >/dev/null
psql_on "$a" -c "DROP PUBLICATION bench_pub" >/dev/null

log "steep replication init --from snapshot --one-way while pgbench writes"
fresh_b
w=$(writer); sleep 2
t0=$(now)
"$steep" replication init -q -c "$a" --peer "$b" --from snapshot --one-way --name bench >/dev/null
caught_up 'steep\_bench\_%'
steep_s=$(since "$t0")
steep_hist=$(settle "$w" 'steep\_bench\_%')
"$steep" replication drop -q -c "$a" --peer "$b" --name bench >/dev/null

log "the merge case: pgbench_accounts alone, 0.2% differing, no writers"
for c in "$a" "$b"; do
  psql_on "$c" -c "DROP TABLE IF EXISTS pgbench_branches, pgbench_tellers, pgbench_history" >/dev/null
done
# The second holds the first's accounts (the snapshot init above copied them): make 0.2 % differ.
psql_on "$b" -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 1000 = 0" \
  -c "DELETE FROM pgbench_accounts WHERE aid % 1000 = 1" -c "VACUUM ANALYZE" >/dev/null
t0=$(now)
"$steep" replication init -q -c "$a" --peer "$b" --from merge --strategy prefer-local --name benchm >/dev/null
merge_init_s=$(since "$t0")
"$steep" replication drop -q -c "$a" --peer "$b" --name benchm >/dev/null
psql_on "$b" -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 1000 = 0" \
  -c "DELETE FROM pgbench_accounts WHERE aid % 1000 = 1" >/dev/null
t0=$(now)
"$steep" merge run -q -c "$a" --peer "$b" --strategy prefer-local >/dev/null
merge_run_s=$(since "$t0")
rm -f "$schema"
for n in "$a_name" "$b_name"; do "$steep" local down "$n" -q >/dev/null 2>&1 || true; done

ratio() { printf '%.2f' "$(echo "$1 / $2" | bc -l)"; }
cat <<MD
## Replication init

\`scripts/bench.sh --only replication\` (BENCH_REPL_SCALE=$scale), $(date -u +%F), PostgreSQL
$(psql_on "$b" -Atc "SHOW server_version" 2>/dev/null || echo 18). Two sandboxes on this machine; pgbench scale $scale on the first
(\`pgbench_accounts\` $accounts_bytes with its index), \`pgbench -c 2 -R $rate\` writing to it from 2 s before
until after each run; the second holds the empty tables. One way, from start until the subscriber
has caught up (every table synchronized, the slot past the publisher's WAL position of that
moment). Afterwards, with the writer stopped and replication caught up, pgbench_history's row
count and sum(delta) agree on both nodes (built-in: $builtin_hist; steep: $steep_hist).

| what | seconds | vs built-in |
|---|---|---|
| PostgreSQL's table sync: CREATE SUBSCRIPTION ... WITH (copy_data = true) | $builtin_s | 1.00 |
| **steep replication init --from snapshot --one-way** | $steep_s | **$(ratio "$steep_s" "$builtin_s")** |

The merge case (\`--from merge\` needs keys, so \`pgbench_accounts\` alone; 0.1 % of the rows
changed and 0.1 % missing on the second node, no writers; both ways):

| what | seconds | vs merge run |
|---|---|---|
| steep merge run --strategy prefer-local (the same differences) | $merge_run_s | 1.00 |
| **steep replication init --from merge --strategy prefer-local** | $merge_init_s | **$(ratio "$merge_init_s" "$merge_run_s")** |

Where the time goes (measured by hand on the same sandboxes, no writer): loading
\`pgbench_accounts\` into B's indexed table is the floor both share — \`\copy\` of the rows with
psql took 7.1 s one after the other and 6.3 s three at once; PostgreSQL's table sync took 7.2 s
from CREATE SUBSCRIPTION to every table ready; steep 7.7 s with one connection, 6.7 s with two
(0.93x) and 7.7 s with four (two cores: a third reader or writer only contends). The first
version wrote a snapshot to files and applied it (1.20x); the copy now streams A's rows straight
into B's tables, and two connections are the default. The goal (at most 0.8x) is not met on this
two-core machine: what is left above the floor is slot creation, the subscription and the marker
check (about 0.5 s).
MD
