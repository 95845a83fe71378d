#!/usr/bin/env bash
# Prune benchmark: lifeboat vs restic on a long snapshot history.
#
# Generates the shared dataset, then N rounds of (mutate with --round R ->
# lifeboat backup -> restic backup), so both repositories hold N snapshots of
# the same tree states. Forgets every other snapshot (oldest first, the latest
# is always kept; the same rounds for both tools), then runs `prune` with
# default settings (--max-unused 5% for both). forget and prune each run under
# GNU time; the repository size is measured before forget, after forget and
# after prune. Then `check --read-data` and a restore of the latest snapshot
# (diff -r against the source) must pass for both tools. Prints markdown tables
# (absolute numbers and lifeboat/restic ratios against targets) and writes TSV
# + MD + logs to bench/results/<UTC timestamp>-prune/.
#
# Env knobs (see bench/README.md):
#   LIFEBOAT_BIN  lifeboat binary (default target/release/lifeboat; built if missing)
#   SCALE         dataset size multiplier passed to gen_dataset.py --scale (default 1.0)
#   N             number of mutate+backup rounds = snapshots per tool (default 50)
#   KEEP=1        keep the temporary work dir (repos, dataset copy, caches)
set -euo pipefail

ROOT=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
GEN="$ROOT/../shared/bench/gen_dataset.py"
LIFEBOAT_BIN=${LIFEBOAT_BIN:-$ROOT/target/release/lifeboat}
SCALE=${SCALE:-1.0}
N=${N:-50}
KEEP=${KEEP:-0}
TOOL_LIST=(lifeboat restic)

# Targets for lifeboat/restic: prune wall and peak RSS at most 0.5x restic's,
# and at least as much space reclaimed.
TARGET_WALL=0.5 TARGET_RSS=0.5 TARGET_RECLAIMED=1.0

# The password is a benchmark constant, not a secret.
export LIFEBOAT_PASSWORD=bench RESTIC_PASSWORD=bench

loadavg() { cut -d' ' -f1 /proc/loadavg; }

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- setup ----

check_tools() {
    [[ $N =~ ^[0-9]+$ && $N -ge 2 ]] || die "N=$N: need an integer >= 2 (number of snapshots)"
    command -v restic >/dev/null || die "restic not installed (apt-get install -y restic)"
    [[ -x /usr/bin/time ]] || die "GNU time missing (apt-get install -y time)"
    command -v python3 >/dev/null || die "python3 missing (needed by gen_dataset.py and to parse --json output)"
    ensure_lifeboat
    # Fail now rather than after N rounds of backups.
    "$LIFEBOAT_BIN" forget --help >/dev/null 2>&1 ||
        die "$LIFEBOAT_BIN has no 'forget' command (needs lifeboat forget ID...)"
    "$LIFEBOAT_BIN" prune --help >/dev/null 2>&1 || die "$LIFEBOAT_BIN has no 'prune' command"
}

ensure_lifeboat() {
    [[ -x $LIFEBOAT_BIN ]] && return
    [[ $LIFEBOAT_BIN == "$ROOT/target/release/lifeboat" ]] || die "LIFEBOAT_BIN=$LIFEBOAT_BIN is not executable"
    log "building lifeboat (release)"
    (cd "$ROOT" && cargo build --release --bin lifeboat) >&2
    [[ -x $LIFEBOAT_BIN ]] || die "build did not produce $LIFEBOAT_BIN"
}

make_dirs() {
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/lifeboat-prune-bench.XXXXXX")
    trap cleanup EXIT
    SRC="$TMP/data"
    RESULTS="$ROOT/bench/results/$(date -u +%Y%m%dT%H%M%SZ)-prune"
    LOGS="$RESULTS/logs"
    TSV="$RESULTS/results.tsv"
    BACKUP_TSV="$RESULTS/backups.tsv"
    mkdir -p "$LOGS/backup" "$TMP/tmp" "$TMP/cache" "$TMP/bin"
    # Keep every cache and temp file of both tools inside the work dir.
    export TMPDIR="$TMP/tmp" XDG_CACHE_HOME="$TMP/cache/xdg"
    # Run a private copy: a rebuild during a long run must not swap the binary.
    cp "$LIFEBOAT_BIN" "$TMP/bin/lifeboat"
    LB="$TMP/bin/lifeboat"
    printf 'step\ttool\twall_s\tuser_s\tsys_s\tmaxrss_kib\trepo_bytes\n' >"$TSV"
    printf 'round\ttool\twall_s\tuser_s\tsys_s\tmaxrss_kib\trepo_bytes\n' >"$BACKUP_TSV"
    log "work dir $TMP, results $RESULTS"
}

cleanup() {
    if [[ $KEEP == 1 ]]; then
        log "kept work dir $TMP"
    else
        rm -rf "$TMP"
    fi
}

# Generate the base dataset once per (generator sha256, scale) under
# bench/work/dataset-base/, then copy it: --mutate modifies the tree in place.
# Same cache as backup_vs_restic.sh.
prepare_dataset() {
    [[ -f $GEN ]] || die "dataset generator not found: $GEN"
    local key base
    python3 "$GEN" --help | grep -q -- '--round' || die "$GEN has no --mutate --round"
    key="$(sha256sum "$GEN" | cut -c1-16)-scale$SCALE"
    base="$ROOT/bench/work/dataset-base/$key"
    if [[ -f $base/.complete ]]; then
        log "using cached dataset $base"
    else
        log "generating dataset into $base"
        rm -rf "$base" "$base.partial"
        python3 "$GEN" "$base.partial/data" --scale "$SCALE" >&2
        touch "$base.partial/.complete"
        mv "$base.partial" "$base"
    fi
    cp -a "$base/data" "$SRC"
    DATASET_BYTES=$(du -sb "$SRC" | cut -f1)
}

# ---------------------------------------------------------- tool adapters ----

repo() { echo "$TMP/repo-$1"; }
repo_bytes() { du -sb "$(repo "$1")" | cut -f1; }

# tool_cmd TOOL ACTION [ARGS...]: set CMD (argv) for one tool action.
#   forget ARGS = snapshot ids; restore ARGS = empty target dir.
# Restores land under TARGET/<absolute source path> for both tools.
tool_cmd() {
    local tool=$1 action=$2 r
    shift 2
    r=$(repo "$tool")
    case $tool in
        lifeboat)
            local g=("$LB" -r "$r")
            case $action in
                init) CMD=("${g[@]}" init) ;;
                backup) CMD=("${g[@]}" backup "$SRC") ;;
                snapshots) CMD=("${g[@]}" --json snapshots) ;;
                open) CMD=("${g[@]}" snapshots) ;;
                forget) CMD=("${g[@]}" forget "$@") ;;
                prune) CMD=("${g[@]}" prune --max-unused 5%) ;;
                check) CMD=("${g[@]}" check --read-data) ;;
                restore) CMD=("${g[@]}" restore latest --target "$1") ;;
            esac ;;
        restic)
            local g=(restic -r "$r" --cache-dir "$TMP/cache/restic")
            case $action in
                init) CMD=("${g[@]}" init --repository-version 2) ;;
                backup) CMD=("${g[@]}" backup --compression auto "$SRC") ;;
                snapshots) CMD=("${g[@]}" snapshots --json) ;;
                open) CMD=("${g[@]}" snapshots) ;;
                forget) CMD=("${g[@]}" forget "$@") ;;
                prune) CMD=("${g[@]}" prune --max-unused 5%) ;;
                check) CMD=("${g[@]}" check --read-data) ;;
                restore) CMD=("${g[@]}" restore latest --target "$1") ;;
            esac ;;
    esac
}

# run_timed TSVFILE KEY TOOL LOGFILE: run CMD under GNU time, append a row
# (KEY, TOOL, wall, user, sys, maxrss KiB, repo bytes after) to TSVFILE.
run_timed() {
    local tsv=$1 key=$2 tool=$3 logf=$4
    local tfile="$TMP/time.$key.$tool" wall user sys rss
    sync # do not bill the previous step's writeback to this one
    if ! /usr/bin/time -f '%e %U %S %M' -o "$tfile" env -C "$TMP" "${CMD[@]}" >"$logf" 2>&1; then
        tail -n 30 "$logf" >&2
        die "$tool $key failed (log: $logf)"
    fi
    read -r wall user sys rss < <(tail -n 1 "$tfile")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$key" "$tool" "$wall" "$user" "$sys" "$rss" "$(repo_bytes "$tool")" >>"$tsv"
}

# run_step STEP TOOL: a timed step of the main table.
run_step() {
    log "$1: $2"
    run_timed "$TSV" "$1" "$2" "$LOGS/$1-$2.log"
}

# record_size STEP TOOL: a size-only row (no command run).
record_size() {
    printf '%s\t%s\t0\t0\t0\t0\t%s\n' "$1" "$2" "$(repo_bytes "$2")" >>"$TSV"
}

# ----------------------------------------------------------------- steps ----

step_init() {
    local tool
    for tool in "${TOOL_LIST[@]}"; do
        tool_cmd "$tool" init
        env -C "$TMP" "${CMD[@]}" >"$LOGS/init-$tool.log" 2>&1 || die "$tool init failed (log: $LOGS/init-$tool.log)"
    done
}

# N rounds: mutate, then back up the same tree state with both tools.
step_history() {
    local round tool t0
    t0=$(date +%s)
    for ((round = 1; round <= N; round++)); do
        python3 "$GEN" "$SRC" --mutate --round "$round" >"$LOGS/backup/mutate-$round.log" 2>&1 ||
            die "gen_dataset.py --mutate --round $round failed (log: $LOGS/backup/mutate-$round.log)"
        for tool in "${TOOL_LIST[@]}"; do
            tool_cmd "$tool" backup
            run_timed "$BACKUP_TSV" "$round" "$tool" "$LOGS/backup/$round-$tool.log"
        done
        log "round $round/$N backed up ($(($(date +%s) - t0)) s so far, load $(loadavg))"
    done
    DATASET_FINAL_BYTES=$(du -sb "$SRC" | cut -f1)
}

# snapshot_ids TOOL WHEN: print the tool's snapshot ids, oldest first.
snapshot_ids() {
    local tool=$1
    local out="$LOGS/snapshots-$2-$tool.json"
    tool_cmd "$tool" snapshots
    env -C "$TMP" "${CMD[@]}" >"$out" 2>"$out.err" || {
        cat "$out.err" >&2
        die "$tool snapshots --json failed"
    }
    rm -f "$out.err"
    python3 -c '
import datetime, json, re, sys
def when(s):
    # RFC 3339 with up to 9 fractional digits (Go trims trailing zeros).
    m = re.fullmatch(r"(.{19})(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", s["time"])
    base, frac, tz = m.groups()
    t = datetime.datetime.fromisoformat(base + ("+00:00" if tz == "Z" else tz))
    return (t.timestamp(), int((frac or "0").ljust(9, "0")[:9]))
snaps = json.load(open(sys.argv[1])) or []
for s in sorted(snaps, key=when):
    print(s["id"])
' "$out" || die "cannot parse $out"
}

# Forget every other snapshot, oldest first (rounds 1, 3, 5, ...), never the
# latest: the same rounds for both tools, since round R is the R-th snapshot.
step_forget() {
    local tool ids i
    FORGET_ROUNDS=()
    for ((i = 1; i < N; i += 2)); do FORGET_ROUNDS+=("$i"); done
    printf 'round\ttool\tsnapshot\tforgotten\n' >"$LOGS/snapshots.tsv"
    for tool in "${TOOL_LIST[@]}"; do
        mapfile -t ids < <(snapshot_ids "$tool" before-forget)
        [[ ${#ids[@]} -eq $N ]] || die "$tool has ${#ids[@]} snapshots, expected $N"
        local forget=()
        for ((i = 1; i <= N; i++)); do
            local f=no
            if ((i % 2 == 1 && i < N)); then
                f=yes
                forget+=("${ids[i - 1]}")
            fi
            printf '%s\t%s\t%s\t%s\n' "$i" "$tool" "${ids[i - 1]}" "$f" >>"$LOGS/snapshots.tsv"
        done
        record_size before-forget "$tool"
        tool_cmd "$tool" forget "${forget[@]}"
        run_step forget "$tool"
    done
}

# Baseline: the fixed cost of opening the repository (key derivation, reading
# the snapshot list), so prune's own share of wall time and RSS is visible.
step_open() {
    local tool
    for tool in "${TOOL_LIST[@]}"; do
        tool_cmd "$tool" open
        run_step open "$tool"
    done
}

step_prune() {
    local tool
    PRUNE_LOAD=$(loadavg)
    for tool in "${TOOL_LIST[@]}"; do
        tool_cmd "$tool" prune
        run_step prune "$tool"
    done
}

# After forget + prune each tool must list exactly the kept snapshots.
verify_snapshots() {
    local tool want=$((N - ${#FORGET_ROUNDS[@]})) ids
    for tool in "${TOOL_LIST[@]}"; do
        mapfile -t ids < <(snapshot_ids "$tool" after-prune)
        [[ ${#ids[@]} -eq $want ]] || die "$tool lists ${#ids[@]} snapshots after forget+prune, expected $want"
        local expect
        expect=$(awk -F'\t' -v t="$tool" '$2 == t && $4 == "no" {print $3}' "$LOGS/snapshots.tsv")
        [[ $(printf '%s\n' "${ids[@]}") == "$expect" ]] || die "$tool kept other snapshots than expected (see $LOGS/snapshots.tsv)"
    done
    log "snapshots: both tools kept the expected $want snapshots"
}

step_check() {
    local tool
    for tool in "${TOOL_LIST[@]}"; do
        tool_cmd "$tool" check
        run_step check "$tool"
    done
}

step_restore() {
    local tool dest difflog
    for tool in "${TOOL_LIST[@]}"; do
        dest="$TMP/restore-$tool"
        mkdir "$dest"
        tool_cmd "$tool" restore "$dest"
        run_step restore "$tool"
        difflog="$LOGS/restore-$tool.diff"
        if ! diff -r "$SRC" "$dest$SRC" >"$difflog" 2>&1; then
            head -n 20 "$difflog" >&2
            die "$tool restore of the latest snapshot DIFFERS from the source (full diff: $difflog)"
        fi
        rm -f "$difflog"
        log "restore: $tool verified identical (diff -r)"
        rm -rf "$dest"
    done
}

# ---------------------------------------------------------------- report ----

report() {
    local commit=$SOURCE_COMMIT
    [[ -z $SOURCE_DIRTY ]] || commit+=" + uncommitted changes in $SOURCE_DIRTY"
    cat <<EOF
# Prune benchmark $(basename "$RESULTS")

- machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, $(uname -sr)
- load average (1 min) at start / before prune / end: $LOAD_START / $PRUNE_LOAD / $(loadavg) (timings are only comparable on an idle machine)
- dataset: gen_dataset.py --scale $SCALE, $(mib "$DATASET_BYTES") MiB generated, $(mib "$DATASET_FINAL_BYTES") MiB after $N mutation rounds
- history: $N snapshots per tool (round R = R-th snapshot); forgot ${#FORGET_ROUNDS[@]} (rounds 1, 3, 5, ..., oldest first, latest kept)
- lifeboat: $("$LB" --version 2>/dev/null || echo unknown) ($LIFEBOAT_BIN, source HEAD $commit), \`prune --max-unused 5%\`
- restic: $(restic version) (repo v2, \`backup --compression auto\`, \`prune --max-unused 5%\`, cache in the work dir)

## Backups ($N rounds, not the timed step)

EOF
    echo "| tool | total wall s | total CPU s | max peak RSS MiB | repo MiB after round $N |"
    echo "|---|---:|---:|---:|---:|"
    awk -F'\t' 'NR > 1 {
        if (!($2 in w)) order[++n] = $2
        w[$2] += $3; c[$2] += $4 + $5; if ($6 > r[$2]) r[$2] = $6; repo[$2] = $7
    } END {
        for (i = 1; i <= n; i++) { t = order[i]
            printf "| %s | %.1f | %.1f | %.1f | %.1f |\n", t, w[t], c[t], r[t] / 1024, repo[t] / 1048576 }
    }' "$BACKUP_TSV"
    cat <<EOF

## Absolute numbers

CPU = user + sys. Repo = \`du -sb\` of the repository after the step
(\`before-forget\` is the size after the last backup). \`open\` = \`snapshots\`
before forget: the fixed cost of opening the repository (key derivation, snapshot
list), a floor under every other step's wall time and peak RSS.

| step | tool | wall s | CPU s | peak RSS MiB | repo MiB |
|---|---|---:|---:|---:|---:|
EOF
    awk -F'\t' 'NR > 1 {
        if ($1 == "before-forget") printf "| %s | %s | | | | %.1f |\n", $1, $2, $7 / 1048576
        else printf "| %s | %s | %.2f | %.2f | %.1f | %.1f |\n", $1, $2, $3, $4 + $5, $6 / 1024, $7 / 1048576
    }' "$TSV"
    cat <<EOF

## lifeboat / restic

Reclaimed = repository size before the step(s) minus after prune.
forget+prune = both commands in sequence (what \`restic forget --prune\` does):
wall and CPU are summed, peak RSS is the larger of the two.
Targets: prune wall <= $TARGET_WALL, peak RSS <= $TARGET_RSS, reclaimed >= $TARGET_RECLAIMED
(ratios of lifeboat to restic).

| metric | lifeboat | restic | lifeboat / restic | target |
|---|---:|---:|---:|---|
EOF
    awk -F'\t' -v tw="$TARGET_WALL" -v tr="$TARGET_RSS" -v tg="$TARGET_RECLAIMED" '
        function row(name, a, b, op, t,    r, verdict) {
            r = (b == 0) ? "n/a" : sprintf("%.2f", a / b)
            verdict = ""
            if (op != "" && r != "n/a") {
                ok = (op == "<=") ? (r + 0 <= t + 0) : (r + 0 >= t + 0)
                if (ok) { pass++; verdict = "PASS (" op " " t ")" } else { fail++; verdict = "**FAIL** (" op " " t ")" }
            }
            printf "| %s | %s | %s | %s | %s |\n", name, fmt(a), fmt(b), r, verdict
        }
        function fmt(x) { return sprintf("%.2f", x) }
        NR > 1 { wall[$1, $2] = $3; cpu[$1, $2] = $4 + $5; rss[$1, $2] = $6 / 1024; repo[$1, $2] = $7 / 1048576 }
        END {
            L = "lifeboat"; R = "restic"
            row("prune wall s", wall["prune", L], wall["prune", R], "<=", tw)
            row("prune CPU s", cpu["prune", L], cpu["prune", R])
            row("prune peak RSS MiB", rss["prune", L], rss["prune", R], "<=", tr)
            row("prune reclaimed MiB", repo["forget", L] - repo["prune", L], repo["forget", R] - repo["prune", R], ">=", tg)
            row("forget wall s", wall["forget", L], wall["forget", R])
            fl = wall["forget", L] + wall["prune", L]; fr = wall["forget", R] + wall["prune", R]
            row("forget+prune wall s", fl, fr, "<=", tw)
            row("forget+prune CPU s", cpu["forget", L] + cpu["prune", L], cpu["forget", R] + cpu["prune", R])
            ml = rss["forget", L] > rss["prune", L] ? rss["forget", L] : rss["prune", L]
            mr = rss["forget", R] > rss["prune", R] ? rss["forget", R] : rss["prune", R]
            row("forget+prune peak RSS MiB", ml, mr, "<=", tr)
            row("forget+prune reclaimed MiB", repo["before-forget", L] - repo["prune", L], repo["before-forget", R] - repo["prune", R], ">=", tg)
            row("open (snapshots) wall s", wall["open", L], wall["open", R])
            row("open (snapshots) peak RSS MiB", rss["open", L], rss["open", R])
            row("repo MiB before forget", repo["before-forget", L], repo["before-forget", R])
            row("repo MiB after prune", repo["prune", L], repo["prune", R])
            printf "\nTargets: %d PASS, %d FAIL\n", pass, fail
        }' "$TSV"
    cat <<EOF

Correctness: \`check --read-data\` passed for both, the latest snapshot restored
by both is identical to the source (\`diff -r\`), and both list exactly the
$((N - ${#FORGET_ROUNDS[@]})) kept snapshots.

### lifeboat prune output

\`\`\`
$(cat "$LOGS/prune-lifeboat.log")
\`\`\`

### restic prune output

\`\`\`
$(cat "$LOGS/prune-restic.log")
\`\`\`
EOF
}

mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }

# ------------------------------------------------------------------ main ----

main() {
    check_tools
    LOAD_START=$(loadavg)
    if awk -v l="$LOAD_START" 'BEGIN {exit !(l > 1.0)}'; then
        log "warning: load average $LOAD_START: other work is running, timings will be noisy"
    fi
    make_dirs
    uptime >"$LOGS/uptime-start.txt"
    # The binary is not necessarily built from this tree, but record its state.
    SOURCE_COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    SOURCE_DIRTY=$(git -C "$ROOT" status --porcelain -- crates 2>/dev/null | awk '{print $2}' | paste -sd' ' -)
    prepare_dataset
    step_init
    step_history
    step_open
    step_forget
    uptime >"$LOGS/uptime-before-prune.txt"
    step_prune
    verify_snapshots
    step_check
    step_restore
    uptime >"$LOGS/uptime-end.txt"
    report | tee "$RESULTS/results.md"
    log "results written to $RESULTS"
}

main "$@"
