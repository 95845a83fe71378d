#!/usr/bin/env bash
# Prune memory and time on a synthetic repository of BLOBS tiny blobs (default 5 million).
#
# Builds the repository with `crates/repo/examples/synth_repo.rs` (two snapshots: "old" uses
# blobs [0, 60 %), "new" uses [40 %, 100 %)), forgets "old" and prunes, each step under GNU
# time. Reports wall time, peak RSS and peak RSS per indexed blob. Results go to
# bench/results/<UTC>-prune-synthetic/.
set -euo pipefail

BLOBS=${BLOBS:-5000000}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="$here/results/$stamp-prune-synthetic"
work=$(mktemp -d "${TMPDIR:-/tmp}/lifeboat-synth.XXXXXX")
trap '[ "${KEEP:-0}" = 1 ] || rm -rf "$work"' EXIT
mkdir -p "$out"

echo "building release binaries" >&2
(cd "$root" && cargo build --release -q -p lifeboat-cli -p lifeboat-repo --example synth_repo)
target=$(cd "$root" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
lifeboat="$target/release/lifeboat"
synth="$target/release/examples/synth_repo"

export LIFEBOAT_PASSWORD=bench LIFEBOAT_REPOSITORY="$work/repo"
timed() { # name cmd...
    local name=$1; shift
    sync
    /usr/bin/time -o "$out/$name.time" -f '%e %U %S %M' "$@" >"$out/$name.log" 2>&1 || {
        echo "step $name failed:" >&2; cat "$out/$name.log" >&2; exit 1; }
}

echo "generating $BLOBS blobs" >&2
timed generate "$synth" "$work/repo" "$BLOBS" bench
old=$(grep -E '^[0-9a-f]{64}$' "$out/generate.log" | head -1)
size_before=$(du -sb "$work/repo" | cut -f1)
timed forget "$lifeboat" forget "$old"
timed prune-dry-run "$lifeboat" prune --dry-run
timed prune "$lifeboat" prune
size_after=$(du -sb "$work/repo" | cut -f1)
timed check "$lifeboat" check

{
    echo "# Synthetic prune: $BLOBS blobs ($(uptime | sed 's/.*load/load/'))"
    echo
    echo "| step | wall s | user s | peak RSS MiB | RSS bytes / blob |"
    echo "|---|---:|---:|---:|---:|"
    for s in generate forget prune-dry-run prune check; do
        read -r wall user _sys rss < "$out/$s.time"
        echo "| $s | $wall | $user | $((rss / 1024)) | $((rss * 1024 / BLOBS)) |"
    done
    echo
    echo "Repository $((size_before / 1048576)) MiB before, $((size_after / 1048576)) MiB after prune."
    echo
    echo '```'
    cat "$out/prune.log"
    echo '```'
} | tee "$out/summary.md"
