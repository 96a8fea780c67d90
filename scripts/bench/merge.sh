#!/usr/bin/env bash
# Merge overlap analysis on two sandboxes that both hold pgbench (scale N), the second with 0.1%
# of the accounts updated (every 1000th key), 0.05% deleted on the first and 0.05% inserted on the
# second; against the floor (each node hashing its rows, no transfer), streaming every (key, hash)
# pair from both nodes, and reladiff. Prints a Markdown section.
set -euo pipefail
steep="${STEEP_BENCH_STEEP:?run through scripts/bench.sh}"
scale="${BENCH_MERGE_SCALE:-100}"
a_name=bench-merge-a
b_name=bench-merge-b

log() { printf 'bench: %s\n' "$*" >&2; }
for n in "$a_name" "$b_name"; do
  "$steep" local down "$n" --keep-data -q >/dev/null 2>&1 || true
  "$steep" local up "$n" -q >/dev/null
done
a="$("$steep" local status "$a_name" --json | jq -r .connection)"
b="$("$steep" local status "$b_name" --json | jq -r .connection)"
bin="$(dirname "$("$steep" local status "$a_name" --json | jq -r .pg_config)")"
psql_on() { local c="$1"; shift; "$bin/psql" -X -q -v ON_ERROR_STOP=1 "$c" "$@"; }
"$steep" init -q -c "$a" >/dev/null

# The dataset, made once per scale.
for side in a b; do
  conn="${!side}"
  have="$(psql_on "$conn" -Atc "SELECT coalesce((SELECT scale FROM bench_merge_meta), 0)" 2>/dev/null || echo 0)"
  if [ "$have" != "$scale" ]; then
    log "dataset on $side: pgbench -i -s $scale"
    psql_on "$conn" -c "DROP TABLE IF EXISTS bench_merge_meta" >/dev/null
    "$bin/pgbench" -i -q -s "$scale" "$conn" >/dev/null 2>&1
    if [ "$side" = a ]; then
      psql_on "$conn" -c "DELETE FROM pgbench_accounts WHERE aid % 2000 = 1" >/dev/null
    else
      psql_on "$conn" -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 1000 = 0" \
        -c "INSERT INTO pgbench_accounts (aid, bid, abalance, filler)
            SELECT $scale * 100000 + g, 1, 0, '' FROM generate_series(1, $scale * 50) g" >/dev/null
    fi
    psql_on "$conn" -c "VACUUM ANALYZE" -c "CREATE TABLE bench_merge_meta AS SELECT $scale AS scale" >/dev/null
  fi
done
table_bytes="$(psql_on "$a" -Atc "SELECT pg_relation_size('pgbench_accounts')")"

# measure COMMAND...: "seconds max_rss_kib rchar" of the command; its stdout goes to $MEASURE_OUT
# when set. (rchar misses socket reads made with recv: bytes are counted by relays below.)
measure() {
  python3 - "$@" <<'PY'
import os, resource, subprocess, sys, time
t0 = time.monotonic()
out = os.environ.get("MEASURE_OUT")
p = subprocess.Popen(sys.argv[1:], stdout=open(out, "wb") if out else subprocess.DEVNULL,
                     stderr=subprocess.PIPE)
rchar = 0
while p.poll() is None:
    try:
        for line in open(f"/proc/{p.pid}/io"):
            if line.startswith("rchar:"):
                rchar = max(rchar, int(line.split()[1]))
    except OSError:
        pass
    time.sleep(0.05)
err = p.stderr.read().decode()
if p.returncode not in (0, 3):
    sys.stderr.write(err); sys.exit(p.returncode)
print(f"{time.monotonic() - t0:.2f} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss} {rchar}")
PY
}
both() { # both SQL: run on both nodes at once, seconds
  local t0 t1
  t0=$(date +%s.%N)
  psql_on "$a" -Atc "$1" >/dev/null & local p=$!
  psql_on "$b" -Atc "$1" >/dev/null
  wait "$p"
  t1=$(date +%s.%N)
  printf '%.2f' "$(echo "$t1 - $t0" | bc -l)"
}

log "floor: sum(hashtextextended(t::text, 0)) on both nodes at once"
floor=$(both "SELECT sum(hashtextextended(t::text, 0)) FROM pgbench_accounts t")
count=$(both "SELECT count(*) FROM pgbench_accounts")

log "streaming every (key, hash) pair from both nodes"
stream_one() { psql_on "$1" -c "COPY (SELECT aid, hashtextextended(t::text, 0) FROM pgbench_accounts t) TO STDOUT" | wc -c; }
t0=$(date +%s.%N)
stream_one "$a" > "/tmp/steep-bench-stream-a.$$" & p=$!
stream_one "$b" > "/tmp/steep-bench-stream-b.$$"
wait "$p"
stream_s=$(printf '%.2f' "$(echo "$(date +%s.%N) - $t0" | bc -l)")
stream_bytes=$(( $(cat "/tmp/steep-bench-stream-a.$$") + $(cat "/tmp/steep-bench-stream-b.$$") ))
rm -f /tmp/steep-bench-stream-[ab].$$

log "steep merge analyze --client"
read -r client_s client_rss _ < <(MEASURE_OUT="/tmp/steep-bench-merge.$$.json" \
  measure "$steep" merge analyze --client -t pgbench_accounts -c "$a" --peer "$b" --json)
counts=$(jq -r '.tables[0] | "\(.match) match, \(.conflict) conflict, \(.local_only) local only, \(.remote_only) remote only; buckets \(.cost.buckets), differing \(.cost.buckets_differing), pairs \(.cost.pairs_local) + \(.cost.pairs_remote)"' "/tmp/steep-bench-merge.$$.json")
rm -f "/tmp/steep-bench-merge.$$.json"
log "steep merge analyze --direct"
read -r direct_s _ _ < <(measure "$steep" merge analyze --direct -t pgbench_accounts -c "$a" --peer "$b" -q)

# Bytes the comparer reads, protocol included: again through relays that count what each server
# sends (client mode reads from both nodes; a direct-mode job on the first reads from the peer).
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port_of() { sed -E 's/.*:([0-9]+)\/.*/\1/' <<< "$1"; }
relay() { # relay CONN COUNT_FILE: starts a counting relay, prints the relayed connection
  local p; p=$(free_port)
  # (its output must not hold the command substitution that called relay open)
  python3 "$(dirname "$0")/count_proxy.py" "$p" "$(port_of "$1")" "$2" >/dev/null 2>&1 &
  echo "$!" >> "/tmp/steep-bench-relays.$$"
  sleep 0.3
  sed -E "s/:[0-9]+\//:$p\//" <<< "$1"
}
stop_relays() { xargs -r kill < "/tmp/steep-bench-relays.$$"; sleep 0.5; rm -f "/tmp/steep-bench-relays.$$"; }
log "bytes read, client mode"
ra=$(relay "$a" "/tmp/steep-bench-bytes-a.$$"); rb=$(relay "$b" "/tmp/steep-bench-bytes-b.$$")
"$steep" merge analyze --client -t pgbench_accounts -c "$ra" --peer "$rb" -q >/dev/null
stop_relays
client_bytes=$(( $(cat "/tmp/steep-bench-bytes-a.$$") + $(cat "/tmp/steep-bench-bytes-b.$$") ))
log "bytes read, direct mode (from the peer)"
rb=$(relay "$b" "/tmp/steep-bench-bytes-b.$$")
"$steep" merge analyze --direct -t pgbench_accounts -c "$a" --peer "$rb" -q >/dev/null
stop_relays
direct_bytes=$(cat "/tmp/steep-bench-bytes-b.$$")
rm -f /tmp/steep-bench-bytes-[ab].$$

# reladiff, in a virtualenv of its own.
venv="${STEEP_HOME:-$HOME/.steep}/bench-venv"
if [ ! -x "$venv/bin/reladiff" ]; then
  log "installing reladiff[postgresql]==0.6.0 into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'reladiff[postgresql]==0.6.0'
fi
log "reladiff"
read -r rel_s rel_rss _ < <(MEASURE_OUT="/tmp/steep-bench-reladiff.$$" measure "$venv/bin/reladiff" \
  "$a" pgbench_accounts "$b" pgbench_accounts -k aid -c bid -c abalance -c filler --stats)
rel_stats="$(tr '\n' ' ' < "/tmp/steep-bench-reladiff.$$")"
rm -f "/tmp/steep-bench-reladiff.$$"

# The merge itself, on copies of the table (the dataset stays as it is for the next run):
# prefer-local against the analysis of the same copies, and against copying the differing rows
# by hand with COPY (SELECT ... WHERE aid IN ...) given the keys.
copy_table() { # copy_table NAME: a fresh copy of pgbench_accounts on both nodes
  both "DROP TABLE IF EXISTS $1; CREATE TABLE $1 (LIKE pgbench_accounts INCLUDING ALL);
        INSERT INTO $1 SELECT * FROM pgbench_accounts" >/dev/null
  both "VACUUM ANALYZE $1" >/dev/null
}
log "merge: copies of the table on both nodes"
copy_table bench_merge_run
log "merge: the analysis of the copies"
read -r m_analyze_s _ _ < <(measure "$steep" merge analyze --client -t bench_merge_run -c "$a" --peer "$b" -q)
log "merge: steep merge run --strategy prefer-local"
read -r m_run_s m_run_rss _ < <(MEASURE_OUT="/tmp/steep-bench-run.$$.json" \
  measure "$steep" merge run -t bench_merge_run --strategy prefer-local -c "$a" --peer "$b" --json)
m_written=$(jq -r '.tables[0] | "\(.local_inserted) inserted and \(.local_updated) updated on the first, \(.remote_inserted) inserted and \(.remote_updated) updated on the second"' "/tmp/steep-bench-run.$$.json")
rm -f "/tmp/steep-bench-run.$$.json"
log "merge: by hand, given the keys"
copy_table bench_merge_run
"$steep" merge analyze --client -t bench_merge_run -c "$a" --peer "$b" --keys --json -q > "/tmp/steep-bench-keys.$$.json" || true
keys_of() { jq -r ".tables[0].keys.$1 | map(ltrimstr(\"(\") | rtrimstr(\")\")) | join(\",\")" "/tmp/steep-bench-keys.$$.json"; }
to_b="$(keys_of local_only),$(keys_of conflict)"; to_a="$(keys_of remote_only)"
rm -f "/tmp/steep-bench-keys.$$.json"
by_hand() { # by_hand FROM TO KEYS
  "$bin/psql" -X -q "$1" -c "COPY (SELECT * FROM bench_merge_run WHERE aid IN (${3#,})) TO STDOUT" \
    | "$bin/psql" -X -q -v ON_ERROR_STOP=1 "$2" \
        -c "CREATE TEMP TABLE s (LIKE bench_merge_run)" -c "COPY s FROM STDIN" \
        -c "INSERT INTO bench_merge_run SELECT * FROM s ON CONFLICT (aid) DO UPDATE
              SET bid = EXCLUDED.bid, abalance = EXCLUDED.abalance, filler = EXCLUDED.filler" >/dev/null
}
t0=$(date +%s.%N)
by_hand "$a" "$b" "$to_b" & p=$!
by_hand "$b" "$a" ",$to_a"
wait "$p"
m_hand_s=$(printf '%.2f' "$(echo "$(date +%s.%N) - $t0" | bc -l)")

# 100 000 conflicts decided in a decisions file: every 100th account changed on the second node.
log "merge: 100 000 conflicts from a decisions file"
copy_table bench_merge_dec
psql_on "$b" -c "UPDATE bench_merge_dec SET abalance = abalance + 7 WHERE aid % 100 = 0 AND aid <= 10000000" >/dev/null
read -r d_out_s _ _ < <(measure "$steep" merge analyze --client -t bench_merge_dec -c "$a" --peer "$b" \
  --decisions-out "/tmp/steep-bench-dec.$$.json" -q)
jq '.conflicts |= map(.decision = "keep_remote")' "/tmp/steep-bench-dec.$$.json" > "/tmp/steep-bench-dec2.$$.json"
d_conflicts=$(jq '.conflicts | length' "/tmp/steep-bench-dec2.$$.json")
d_file_mib=$(( $(stat -c %s "/tmp/steep-bench-dec2.$$.json") / 1048576 ))
read -r d_run_s d_run_rss _ < <(measure "$steep" merge run -t bench_merge_dec --strategy ask \
  --decisions "/tmp/steep-bench-dec2.$$.json" -c "$a" --peer "$b" -q)
rm -f /tmp/steep-bench-dec*.$$.json
both "DROP TABLE IF EXISTS bench_merge_run; DROP TABLE IF EXISTS bench_merge_dec" >/dev/null

mib() { printf '%.1f' "$(echo "$1 / 1048576" | bc -l)"; }
ratio() { printf '%.2f' "$(echo "$1 / $2" | bc -l)"; }
pct() { printf '%.2f' "$(echo "100 * $1 / $2" | bc -l)"; }
cat <<MD
## Merge overlap analysis

\`scripts/bench.sh --only merge\` (BENCH_MERGE_SCALE=$scale), $(date -u +%Y-%m-%d), PostgreSQL
$("$bin/postgres" --version | awk '{print $3}'). Two sandboxes on this machine, pgbench scale $scale on
both (\`pgbench_accounts\`: $(mib "$table_bytes") MiB); the second with every 1000th account updated,
every 2000th deleted on the first, and $((scale * 50)) accounts inserted on the second.
Steep: $counts.

| what | seconds | vs floor | bytes read by the comparer | RSS MiB |
|---|---|---|---|---|
| floor: \`sum(hashtextextended(t::text, 0))\` on both nodes at once | $floor | 1.00 | 0 | |
| \`count(*)\` on both | $count | $(ratio "$count" "$floor") | | |
| every (key, hash) pair streamed from both (COPY, not compared) | $stream_s | $(ratio "$stream_s" "$floor") | $(mib "$stream_bytes") MiB | |
| **steep merge analyze --client** | $client_s | **$(ratio "$client_s" "$floor")** | $(mib "$client_bytes") MiB from both ($(pct "$client_bytes" "$table_bytes") % of the table) | $(( client_rss / 1024 )) |
| steep merge analyze --direct (a job on the first node) | $direct_s | $(ratio "$direct_s" "$floor") | $(mib "$direct_bytes") MiB from the peer ($(pct "$direct_bytes" "$table_bytes") %) | |
| reladiff 0.6.0 (\`-k aid -c bid -c abalance -c filler\`) | $rel_s | $(ratio "$rel_s" "$floor") | | $(( rel_rss / 1024 )) |

reladiff's own summary: $rel_stats

### The merge (part 2)

On copies of the same table (same differences): $m_written.

| what | seconds | vs the analysis | RSS MiB |
|---|---|---|---|
| steep merge analyze --client (the copies) | $m_analyze_s | 1.00 | |
| **steep merge run --strategy prefer-local** | $m_run_s | **$(ratio "$m_run_s" "$m_analyze_s")** | $(( m_run_rss / 1024 )) |
| by hand, keys known: \`COPY (SELECT * ... WHERE aid IN (...))\` each way, staged and upserted | $m_hand_s | $(ratio "$m_hand_s" "$m_analyze_s") | |

Decisions file: $d_conflicts conflicts (every 100th account changed on the second node), written
by \`merge analyze --decisions-out\` in $d_out_s s ($d_file_mib MiB), every decision set to keep_remote
with jq, applied by \`merge run --decisions\` in **$d_run_s s** (goal: under 30 s; RSS $(( d_run_rss / 1024 )) MiB).
MD
for n in "$a_name" "$b_name"; do "$steep" local down "$n" --keep-data -q >/dev/null 2>&1 || true; done
