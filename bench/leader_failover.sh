#!/usr/bin/env bash
# Kill-the-leader benchmark: three lifeboat-coord-node processes per coordination store
# (embedded, PostgreSQL, etcd) with the library's default timing (lease 10 s, renew 2 s);
# SIGKILL the leader KILLS times and SIGTERM it RESIGNS times per store; the stores run
# concurrently (separate stores, mostly idle processes). ~6 min at the defaults.
#
# Env: LIFEBOAT_TEST_PG / LIFEBOAT_TEST_ETCD (skipped when unset; `source .ci/services.sh`
# starts both), KILLS (30), RESIGNS (10), HOOK (promote hook, default `true`),
# CARGO_TARGET_DIR. Results: bench/results/<UTC timestamp>-failover/{README.md,*.json}.
set -euo pipefail
cd "$(dirname "$0")/.."
KILLS=${KILLS:-30}
RESIGNS=${RESIGNS:-10}
HOOK=${HOOK:-true}
TARGET=${CARGO_TARGET_DIR:-target}

cargo build --release -p lifeboat-coord-node
BENCH="$TARGET/release/lifeboat-failover-bench"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT="bench/results/$STAMP-failover"
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

run() { # label backend [extra...]
  local label=$1 backend=$2
  shift 2
  echo "== $label: $KILLS kills, $RESIGNS resigns (log: $OUT/$label.log)"
  "$BENCH" --label "$label" --backend "$backend" --kills "$KILLS" --resigns "$RESIGNS" \
    --hook "$HOOK" --out "$WORK/$label" "$@" >"$OUT/$label.log" 2>&1
  cp "$WORK/$label/$label.json" "$OUT/"
  cp "$WORK/$label/$label.md" "$OUT/$label.row"
}

pids=()
run embedded "embedded:$WORK/embedded-store" & pids+=($!)
if [ -n "${LIFEBOAT_TEST_PG:-}" ]; then
  run postgres "postgres:$LIFEBOAT_TEST_PG" --observe & pids+=($!)
else
  echo "== postgres: skipped (LIFEBOAT_TEST_PG unset)"
fi
if [ -n "${LIFEBOAT_TEST_ETCD:-}" ]; then
  run etcd "etcd:$LIFEBOAT_TEST_ETCD" --observe & pids+=($!)
else
  echo "== etcd: skipped (LIFEBOAT_TEST_ETCD unset)"
fi
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done

{
  echo "# Leader failover benchmark, $STAMP"
  echo
  echo "Commit $(git rev-parse --short HEAD), $(nproc) cores, $(uname -sr). Three"
  echo "\`lifeboat-coord-node\` processes per store, library defaults (lease 10 s, renew 2 s,"
  echo "retry 500 ms, margin 1.5 s), promote hook \`$HOOK\`; $KILLS SIGKILLs and $RESIGNS SIGTERMs"
  echo "of the leader per store, stores run concurrently. Times in ms, p50 / p99."
  echo
  echo "* detect: kill → first survivor event showing the old term gone (\`observed\` holder"
  echo "  change from the store, or \`acquired\`);"
  echo "* new leader: kill → a survivor holds a higher token; + hook: → its promote hook exited;"
  echo "* hand-over: SIGTERM → a survivor holds a higher token;"
  echo "* ops: lease-call latency measured inside the nodes (\`TimedBackend\`)."
  echo
  echo "Targets: unannounced loss p50 ≤ 11 000, p99 ≤ 12 000; hand-over ≤ 100; embedded"
  echo "detection ≤ 1 000; lease ops p99 ≤ 20."
  echo
  echo "| store | kills | detect | new leader | new leader + hook | hand-over | try_acquire op | renew op | resign op |"
  echo "|---|---|---|---|---|---|---|---|---|"
  cat "$OUT"/*.row 2>/dev/null || true
} >"$OUT/README.md"
rm -f "$OUT"/*.row
cat "$OUT/README.md"
exit $status
