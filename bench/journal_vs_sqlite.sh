#!/usr/bin/env bash
# Journal vs SQLite, side by side in one run on one disk (release build of
# crates/journal/examples/journal_bench.rs): durable appends/s and p50/p99 latency of 256-byte
# records with 1, 16 and 256 appenders (SQLite: WAL, synchronous=FULL, one transaction per
# commit group), replay and verify throughput of a ~1 GiB journal, recovery to a mid timestamp.
# Results: bench/results/<UTC>-journal/{results.md,raw.json,df.txt,env.txt}.
#
# Env: SECONDS_PER_POINT (default 4), REPEAT (alternating runs per point, median reported;
# default 3), RECOVERY_GIB (default 1), BENCH_DIR (default a temp dir
# under /work if it exists, else $TMPDIR or /tmp; it must be a real disk, not tmpfs).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="$here/results/$stamp-journal"
base=${BENCH_DIR:-$([ -d /work ] && echo /work || echo "${TMPDIR:-/tmp}")}
work=$(mktemp -d "$base/lifeboat-journal-bench.XXXXXX")
trap '[ "${KEEP:-0}" = 1 ] || rm -rf "$work"' EXIT
mkdir -p "$out"

fstype=$(df --output=fstype "$work" | tail -1 | tr -d ' ')
if [ "$fstype" = tmpfs ] || [ "$fstype" = ramfs ]; then
    echo "$work is on $fstype: fsync is free there, the numbers would be meaningless" >&2
    exit 1
fi
df -hT "$work" > "$out/df.txt"
{ uname -a; nproc; uptime; } > "$out/env.txt"

echo "building the benchmark (release)" >&2
(cd "$root" && cargo build --release -q -p lifeboat-journal --example journal_bench)
target=$(cd "$root" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

echo "running in $work ($fstype); results in $out" >&2
"$target/release/examples/journal_bench" --dir "$work" --out "$out" \
    --seconds "${SECONDS_PER_POINT:-4}" --repeat "${REPEAT:-3}" --recovery-gib "${RECOVERY_GIB:-1}" 2> "$out/log.txt"
cat "$out/results.md"
