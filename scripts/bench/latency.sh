#!/usr/bin/env bash
# Job start latency and progress latency on a fresh sandbox; prints a Markdown section.
set -euo pipefail
steep="${STEEP_BENCH_STEEP:?run through scripts/bench.sh}"
name="bench-latency"
"$steep" local down "$name" >/dev/null 2>&1 || true
conn="$("$steep" local up "$name" -q)"
trap '"$steep" local down "$name" -q >/dev/null 2>&1 || true' EXIT
"$steep" init -q -c "$conn" >/dev/null
runs=30
cmd="steep ops selftest --seconds 2 --steps 40 --runs $runs --json"
out="$("$steep" ops selftest --seconds 2 --steps 40 --runs "$runs" --json -q -c "$conn")"
q() { jq -r "$1" <<<"$out"; }
cat <<MD
## Job start and progress latency

\`$cmd\` against a sandbox with steep_repl preloaded, $(date -u +%Y-%m-%d).
Start latency: from the commit of \`start_selftest()\` (its call returns) to the first event that
says the job runs. Progress latency: from the worker's NOTIFY (\`sent_at_ms\` in the payload) to the
CLI receiving it (the signal; the CLI then reads the progress under row security). Targets: p95 ≤ 100 ms and ≤ 200 ms.

| measure | samples | p50 | p95 | max |
|---|---|---|---|---|
| start latency (ms) | $(q .start_latency_ms.samples) | $(q .start_latency_ms.p50) | $(q .start_latency_ms.p95) | $(q .start_latency_ms.max) |
| progress latency (ms) | $(q .progress_latency_ms.samples) | $(q .progress_latency_ms.p50) | $(q .progress_latency_ms.p95) | $(q .progress_latency_ms.max) |

Jobs start on a latch the queuing transaction sets at commit (a statement trigger on
\`work_queue\` registers a commit callback), not on a poll; the database worker then starts a job
worker, which claims the job with \`FOR UPDATE SKIP LOCKED\`.
MD
