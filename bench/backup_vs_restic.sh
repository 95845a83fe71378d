#!/usr/bin/env bash
# Side-by-side benchmark: lifeboat vs restic vs borg on the shared generated dataset.
#
# For each tool: b1 initial backup -> b2 no-change backup -> mutate dataset ->
# b3 backup -> full restore of the latest snapshot (verified with diff -r) ->
# full read-data check. Every step runs under GNU time; the repository size is
# measured after every step. Prints markdown tables (absolute numbers and
# lifeboat/restic ratios against targets) and writes TSV + MD + logs to
# bench/results/<UTC timestamp>/.
#
# Env knobs (see bench/README.md):
#   LIFEBOAT_BIN  lifeboat binary (default target/release/lifeboat; built if missing)
#   SCALE         dataset size multiplier passed to gen_dataset.py --scale (default 1.0)
#   TOOLS         tools to run, in order (default "lifeboat restic borg")
#   KEEP=1        keep the temporary work dir (repos, dataset copy, caches)
set -euo pipefail

ROOT=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
GEN="$ROOT/../shared/bench/gen_dataset.py"
LIFEBOAT_BIN=${LIFEBOAT_BIN:-$ROOT/target/release/lifeboat}
SCALE=${SCALE:-1.0}
TOOLS=${TOOLS:-"lifeboat restic borg"}
KEEP=${KEEP:-0}
read -r -a TOOL_LIST <<<"$TOOLS"

# Ratio targets for lifeboat/restic, as STEP:METRIC:MAX ("*" = every step).
TARGETS="b1-initial:wall:0.30 b1-initial:cpu:0.50 b2-nochange:wall:0.5 restore:wall:0.33 *:rss:1.0 *:repo:1.02"

# The password is a benchmark constant, not a secret.
export LIFEBOAT_PASSWORD=bench RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench

loadavg() { cut -d' ' -f1 /proc/loadavg; }

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- setup ----

check_tools() {
    local tool
    for tool in "${TOOL_LIST[@]}"; do
        case $tool in
            lifeboat) ensure_lifeboat ;;
            restic | borg) command -v "$tool" >/dev/null || die "$tool not installed (apt-get install -y restic borgbackup)" ;;
            *) die "unknown tool '$tool' in TOOLS (expected lifeboat, restic, borg)" ;;
        esac
    done
    [[ -x /usr/bin/time ]] || die "GNU time missing (apt-get install -y time)"
}

ensure_lifeboat() {
    [[ -x $LIFEBOAT_BIN ]] && return
    [[ $LIFEBOAT_BIN == "$ROOT/target/release/lifeboat" ]] || die "LIFEBOAT_BIN=$LIFEBOAT_BIN is not executable"
    log "building lifeboat (release)"
    (cd "$ROOT" && cargo build --release --bin lifeboat) >&2
    [[ -x $LIFEBOAT_BIN ]] || die "build did not produce $LIFEBOAT_BIN"
}

make_dirs() {
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/lifeboat-bench.XXXXXX")
    trap cleanup EXIT
    SRC="$TMP/data"
    RESULTS="$ROOT/bench/results/$(date -u +%Y%m%dT%H%M%SZ)"
    LOGS="$RESULTS/logs"
    TSV="$RESULTS/results.tsv"
    mkdir -p "$LOGS" "$TMP/tmp" "$TMP/cache"
    # Keep every cache and temp file of every tool inside the work dir.
    export TMPDIR="$TMP/tmp" XDG_CACHE_HOME="$TMP/cache/xdg"
    export BORG_BASE_DIR="$TMP/borg-base" BORG_CACHE_DIR="$TMP/cache/borg"
    printf 'step\ttool\twall_s\tuser_s\tsys_s\tmaxrss_kib\trepo_bytes\n' >"$TSV"
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
prepare_dataset() {
    [[ -f $GEN ]] || die "dataset generator not found: $GEN"
    local gen_args=() key base
    if python3 "$GEN" --help | grep -q -- '--scale'; then
        gen_args=(--scale "$SCALE")
    elif [[ $SCALE != 1.0 ]]; then
        log "warning: gen_dataset.py has no --scale, ignoring SCALE=$SCALE"
    fi
    key="$(sha256sum "$GEN" | cut -c1-16)-scale$SCALE"
    base="$ROOT/bench/work/dataset-base/$key"
    if [[ -f $base/.complete ]]; then
        log "using cached dataset $base"
    else
        log "generating dataset into $base"
        rm -rf "$base" "$base.partial"
        python3 "$GEN" "$base.partial/data" "${gen_args[@]}" >&2
        touch "$base.partial/.complete"
        mv "$base.partial" "$base"
    fi
    cp -a "$base/data" "$SRC"
    DATASET_BYTES=$(du -sb "$SRC" | cut -f1)
}

# ---------------------------------------------------------- tool adapters ----

repo() { echo "$TMP/repo-$1"; }

# tool_cmd TOOL ACTION [ARG]: set CMD (argv) and CWD for one tool action.
#   backup ARG = snapshot/archive name; restore ARG = empty target dir.
# Restores land under TARGET/<absolute source path> for every tool.
tool_cmd() {
    local tool=$1 action=$2 arg=${3:-} r
    r=$(repo "$tool")
    CWD=$TMP
    case $tool in
        lifeboat)
            case $action in
                init) CMD=("$LIFEBOAT_BIN" -r "$r" init) ;;
                backup) CMD=("$LIFEBOAT_BIN" -r "$r" backup "$SRC") ;;
                restore) CMD=("$LIFEBOAT_BIN" -r "$r" restore latest --target "$arg") ;;
                check) CMD=("$LIFEBOAT_BIN" -r "$r" check --read-data) ;;
            esac ;;
        restic)
            local g=(restic -r "$r" --cache-dir "$TMP/cache/restic")
            case $action in
                init) CMD=("${g[@]}" init --repository-version 2) ;;
                backup) CMD=("${g[@]}" backup --compression auto "$SRC") ;;
                restore) CMD=("${g[@]}" restore latest --target "$arg") ;;
                check) CMD=("${g[@]}" check --read-data) ;;
            esac ;;
        borg)
            case $action in
                init) CMD=(borg init --encryption repokey-blake2 "$r") ;;
                backup) CMD=(borg create --compression "zstd,3" "$r::$arg" "$SRC") ;;
                # borg stores paths without the leading "/" and extracts into cwd.
                restore) CMD=(borg extract "$r::$LAST_SNAPSHOT") CWD=$arg ;;
                check) CMD=(borg check --verify-data "$r") ;;
            esac ;;
    esac
}

# run_timed STEP TOOL: run CMD in CWD under GNU time, append a TSV row.
run_timed() {
    local step=$1 tool=$2
    local tfile="$TMP/time.$step.$tool" logf="$LOGS/$step-$tool.log"
    local wall user sys rss repo_bytes
    sync # do not bill the previous step's writeback to this one
    log "$step: $tool"
    if ! /usr/bin/time -f '%e %U %S %M' -o "$tfile" env -C "$CWD" "${CMD[@]}" >"$logf" 2>&1; then
        tail -n 30 "$logf" >&2
        die "$tool $step failed (log: $logf)"
    fi
    read -r wall user sys rss < <(tail -n 1 "$tfile")
    repo_bytes=$(du -sb "$(repo "$tool")" | cut -f1)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$step" "$tool" "$wall" "$user" "$sys" "$rss" "$repo_bytes" >>"$TSV"
}

# ----------------------------------------------------------------- steps ----

step_init() {
    local tool
    for tool in "${TOOL_LIST[@]}"; do
        tool_cmd "$tool" init
        env -C "$CWD" "${CMD[@]}" >"$LOGS/init-$tool.log" 2>&1 || die "$tool init failed (log: $LOGS/init-$tool.log)"
    done
}

step_backup() {
    local step=$1 tool
    LAST_SNAPSHOT=$step
    for tool in "${TOOL_LIST[@]}"; do
        tool_cmd "$tool" backup "$step"
        run_timed "$step" "$tool"
    done
}

step_mutate() {
    log "mutating dataset"
    python3 "$GEN" "$SRC" --mutate --round 1 >&2
}

step_restore() {
    local tool dest
    for tool in "${TOOL_LIST[@]}"; do
        dest="$TMP/restore-$tool"
        mkdir "$dest"
        tool_cmd "$tool" restore "$dest"
        run_timed restore "$tool"
        verify_restore "$tool" "$dest"
        rm -rf "$dest"
    done
}

verify_restore() {
    local tool=$1 dest=$2
    local difflog="$LOGS/restore-$tool.diff"
    if ! diff -r "$SRC" "$dest$SRC" >"$difflog" 2>&1; then
        head -n 20 "$difflog" >&2
        die "$tool restore DIFFERS from the source (full diff: $difflog)"
    fi
    rm -f "$difflog"
    log "restore: $tool verified identical (diff -r)"
}

step_check() {
    local tool
    for tool in "${TOOL_LIST[@]}"; do
        tool_cmd "$tool" check
        run_timed check "$tool"
    done
}

# ---------------------------------------------------------------- report ----

versions() {
    local tool
    for tool in "${TOOL_LIST[@]}"; do
        case $tool in
            lifeboat) echo "- lifeboat: $("$LIFEBOAT_BIN" --version 2>/dev/null || echo unknown) ($LIFEBOAT_BIN)" ;;
            restic) echo "- restic: $(restic version) (repo v2, --compression auto)" ;;
            borg) echo "- borg: $(borg --version) (repokey-blake2, zstd,3)" ;;
        esac
    done
}

report() {
    cat <<EOF
# Backup benchmark $(basename "$RESULTS")

- machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, $(uname -sr)
- load average (1 min) at start / end: $LOAD_START / $(loadavg) (timings are only comparable on an idle machine)
- dataset: gen_dataset.py --scale $SCALE, $(awk -v b="$DATASET_BYTES" 'BEGIN {printf "%.1f", b / 1048576}') MiB before mutation
$(versions)

## Absolute numbers

CPU = user + sys. Repo = \`du -sb\` of the repository after the step.

| step | tool | wall s | CPU s | peak RSS MiB | repo MiB |
|---|---|---:|---:|---:|---:|
EOF
    awk -F'\t' 'NR > 1 {
        printf "| %s | %s | %.2f | %.2f | %.1f | %.1f |\n", $1, $2, $3, $4 + $5, $6 / 1024, $7 / 1048576
    }' "$TSV"
    echo
    echo "## lifeboat / restic ratios"
    echo
    if [[ " ${TOOL_LIST[*]} " != *" lifeboat "* || " ${TOOL_LIST[*]} " != *" restic "* ]]; then
        echo "(skipped: needs both lifeboat and restic in TOOLS)"
        return
    fi
    echo "Lower is better. Targets: $TARGETS"
    echo
    echo "| step | wall | CPU | peak RSS | repo size |"
    echo "|---|---|---|---|---|"
    awk -F'\t' -v targets="$TARGETS" '
        function cell(step, m,    a, b, r, t, key) {
            a = v[step, "lifeboat", m]; b = v[step, "restic", m]
            if (b == 0) return "n/a"
            r = sprintf("%.2f", a / b)
            key = (step SUBSEP m) in tgt ? step SUBSEP m : "*" SUBSEP m
            if (!(key in tgt)) return r
            t = tgt[key]
            if (r + 0 <= t + 0) { pass++; return r " PASS (<= " t ")" }
            fail++; return r " **FAIL** (<= " t ")"
        }
        BEGIN {
            n = split(targets, ts, " ")
            for (i = 1; i <= n; i++) { split(ts[i], p, ":"); tgt[p[1], p[2]] = p[3] }
        }
        NR > 1 {
            if (!($1 in seen)) { seen[$1] = 1; order[++nsteps] = $1 }
            v[$1, $2, "wall"] = $3; v[$1, $2, "cpu"] = $4 + $5
            v[$1, $2, "rss"] = $6; v[$1, $2, "repo"] = $7
        }
        END {
            for (i = 1; i <= nsteps; i++) {
                s = order[i]
                printf "| %s | %s | %s | %s | %s |\n", s, cell(s, "wall"), cell(s, "cpu"), cell(s, "rss"), cell(s, "repo")
            }
            printf "\nTargets: %d PASS, %d FAIL\n", pass, fail
        }' "$TSV"
}

# ------------------------------------------------------------------ main ----

main() {
    check_tools
    LOAD_START=$(loadavg)
    if awk -v l="$LOAD_START" 'BEGIN {exit !(l > 1.0)}'; then
        log "warning: load average $LOAD_START: other work is running, timings will be noisy"
    fi
    make_dirs
    prepare_dataset
    step_init
    step_backup b1-initial
    step_backup b2-nochange
    step_mutate
    step_backup b3-mutated
    step_restore
    step_check
    report | tee "$RESULTS/results.md"
    log "results written to $RESULTS"
}

main "$@"
