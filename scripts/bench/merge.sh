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
MD
for n in "$a_name" "$b_name"; do "$steep" local down "$n" --keep-data -q >/dev/null 2>&1 || true; done
