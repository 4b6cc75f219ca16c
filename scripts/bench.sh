#!/usr/bin/env bash
# Benchmarks of kinesis-lake (`make bench`); the results and how to read them
# are in BENCHMARKS.md.
#
# In one go, on this machine, in the same few minutes:
#   1. input: ../shared/bench/gen_events.py, BENCH_EVENTS (100,000) events as a
#      folder of Lambda Kinesis event documents and as one NDJSON file;
#   2. the in-process pipeline on one ~6 MB Kinesis batch (benches/pipeline.rs,
#      one core, no I/O): events/s of the direct and the staged write paths,
#      MB/s, phases, parser speed, Parquet codecs, the staging object's codecs,
#      and the publisher (MB/s of staging in and of Parquet out per core); the
#      same publisher on all documents staged; then the phases of the CLI's
#      first NDJSON batch beside their limits (the parser alone, a hash-set
#      claim; `pipeline limits`) and orjson on the same lines;
#   3. peak memory of one 6 MB batch: the bench binary (`once`) under
#      /usr/bin/time -v, and the Lambda binary handed that batch as an event;
#   4. end to end, BENCH_RUNS (3) rounds, interleaved, medians: `kinesis-lake
#      ingest` (embedded redb dedup; stages and publishes), the same with
#      `--window 0` (direct writes) and with in-memory dedup, the Python peer
#      (../shared/bench/peer_pyarrow.py) and the DuckDB peer
#      (../shared/bench/peer_duckdb.py), on both inputs; events/s, the ratios
#      to both peers, peak RSS; then a check that the lakes are equal;
#   5. Lambda cold start (BENCH_STARTS starts, median) and binary size.
#
# Environment: BENCH_RUNS (3), BENCH_EVENTS (100000), BENCH_ITERS (15),
# BENCH_BIG=0 (skip the in-process run on all documents as one batch),
# BENCH_STARTS (10), BENCH_NO_BUILD=1 (use the binaries in target/release as
# they are), BENCH_E2E_ONLY=1 (only the input and the end-to-end rounds), BENCH_SETTLE (90: seconds to wait at most for the load average to
# fall after the build), BENCH_KEEP=1 (keep the temporary folder with inputs and lakes),
# BENCH_OUT (target/bench: logs and JSON results).
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd -- "$SCRIPT_DIR/.." && pwd)"
SHARED="$REPO/../shared/bench"
RUNS="${BENCH_RUNS:-3}"
EVENTS="${BENCH_EVENTS:-100000}"
ITERS="${BENCH_ITERS:-15}"
STARTS="${BENCH_STARTS:-10}"
OUT="${BENCH_OUT:-$REPO/target/bench}"
PY="$REPO/.tools/venv/bin/python"

log() { printf '\n[bench] %s\n' "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

for v in RUNS EVENTS ITERS STARTS; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "BENCH_$v must be a positive integer, got '${!v}'"
done

# ------------------------------------------------------------ prerequisites
[[ -d "$SHARED" ]] || die "shared benchmark material not found at $SHARED
  (expected ../shared/bench next to the repository, with gen_events.py, peer_pyarrow.py and peer_duckdb.py)"
for f in gen_events.py peer_pyarrow.py peer_duckdb.py; do
    [[ -f "$SHARED/$f" ]] || die "$SHARED/$f is missing"
done
SHARED="$(cd -- "$SHARED" && pwd)"
command -v cargo >/dev/null || die "cargo not found (install Rust: https://rustup.rs)"

if ! "$PY" -c 'import orjson, pyarrow, duckdb' 2>/dev/null; then
    log "Python tools missing: running scripts/setup-tools.sh"
    bash "$SCRIPT_DIR/setup-tools.sh"
fi
"$PY" -c 'import orjson, pyarrow, duckdb' 2>/dev/null \
    || die "$PY cannot import orjson, pyarrow and duckdb (see scripts/requirements-test.txt)"

TIME_BIN=/usr/bin/time
if [[ ! -x "$TIME_BIN" ]] && [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    log "installing GNU time (apt-get install time)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 \
             && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null 2>&1; } || true
fi
[[ -x "$TIME_BIN" ]] || TIME_BIN=""   # the Python runner's wait4 rusage is used instead

# ------------------------------------------------------------ build
cd "$REPO"
OURS="$REPO/target/release/kinesis-lake"
LAMBDA="$REPO/target/release/kinesis-lake-lambda"
if [[ "${BENCH_NO_BUILD:-0}" != 1 ]]; then
    log "cargo build --release --bins --bench pipeline (a no-op when up to date; ~15 min from scratch)"
    cargo build --release --bins --bench pipeline --message-format=json-render-diagnostics \
        >"${TMPDIR:-/tmp}/kl-bench-build.$$.json"
    BENCH_BIN="$("$PY" -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "pipeline" and m.get("executable"):
        print(m["executable"])' "${TMPDIR:-/tmp}/kl-bench-build.$$.json" | tail -n1)"
    rm -f "${TMPDIR:-/tmp}/kl-bench-build.$$.json"
else
    BENCH_BIN="$(ls -t "$REPO"/target/release/deps/pipeline-* 2>/dev/null | grep -v '\.d$' | head -n1 || true)"
fi
for b in "$OURS" "$LAMBDA" "$BENCH_BIN"; do
    [[ -n "$b" && -x "$b" ]] || die "binary ${b:-pipeline bench} not found; run without BENCH_NO_BUILD=1"
done

# ------------------------------------------------------------ input
TMP="$(mktemp -d "${TMPDIR:-/tmp}/kl-bench.XXXXXX")"
cleanup() {
    if [[ "${BENCH_KEEP:-0}" == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
mkdir -p "$OUT"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"

# The release build just ran on every core and the 1-minute load average
# remembers it: wait (up to BENCH_SETTLE seconds, default 90) for it to fall
# below half the cores, so that the first measurements do not start on a
# machine that only looks busy.
settle="${BENCH_SETTLE:-90}"
[[ "$settle" =~ ^[0-9]+$ ]] || die "BENCH_SETTLE must be a number of seconds, got '$settle'"
waited=0
read -r load1 _ < /proc/loadavg
while (( waited < settle )) && awk -v l="$load1" -v n="$(nproc)" 'BEGIN { exit !(l > n / 2) }'; do
    sleep 5
    waited=$((waited + 5))
    read -r load1 _ < /proc/loadavg
done
(( waited == 0 )) || log "waited ${waited}s for the load average to settle (now $load1)"
if awk -v l="$load1" -v n="$(nproc)" 'BEGIN { exit !(l > n / 2) }'; then
    log "WARNING: load average $load1 on $(nproc) cores: other work is running; numbers will be noisy"
fi
log "machine"
{
    echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "cpu:     $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "memory:  $(free -g | awk '/^Mem:/ {print $2 " GiB"}')"
    echo "kernel:  $(uname -r)"
    echo "rustc:   $(rustc --version)"
    echo "python:  $("$PY" -c 'import sys, orjson, pyarrow, duckdb; print(sys.version.split()[0], "orjson", orjson.__version__, "pyarrow", pyarrow.__version__, "duckdb", duckdb.__version__)')"
    echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
} | tee "$OUT/machine-$STAMP.txt"

log "generating $EVENTS events (Kinesis folder and NDJSON) with $SHARED/gen_events.py"
python3 "$SHARED/gen_events.py" --events "$EVENTS" --format kinesis --out "$TMP/kinesis"
python3 "$SHARED/gen_events.py" --events "$EVENTS" --format ndjson --out "$TMP/events.ndjson"
BATCH="$(ls "$TMP"/kinesis/*.json | head -n1)"
[[ -f "$BATCH" ]] || die "gen_events.py wrote no Kinesis batch"
echo "$(ls "$TMP/kinesis" | wc -l) Kinesis documents ($(du -sh "$TMP/kinesis" | cut -f1)), NDJSON $(du -sh "$TMP/events.ndjson" | cut -f1)"

E2E_ONLY="${BENCH_E2E_ONLY:-0}"
if [[ "$E2E_ONLY" != 1 ]]; then
# ------------------------------------------------------------ in-process pipeline
# One core: the process is pinned to one CPU (taskset), so run_batch's own
# encoding threads (one per usable core) come down to one.
ONE_CORE=()
if command -v taskset >/dev/null && taskset -c 0 true 2>/dev/null; then
    ONE_CORE=(taskset -c 0)
else
    log "taskset not available: the 'one core' numbers below use every core"
fi
log "in-process pipeline on one Kinesis batch ($(basename "$BATCH")), ONE core, no I/O"
"${ONE_CORE[@]}" "$BENCH_BIN" batch "$BATCH" --iters "$ITERS" | tee "$OUT/pipeline-1core-$STAMP.txt" | grep -v '^RESULT' 
if [[ $(nproc) -gt 1 ]]; then
    log "the same on all $(nproc) cores (run_batch encodes its files in parallel)"
    "$BENCH_BIN" batch "$BATCH" --iters "$ITERS" | grep -E '^(run_batch|  sum|the publisher|  [0-9]+ events/s)' \
        | tee "$OUT/pipeline-allcores-$STAMP.txt"
fi
if [[ "${BENCH_BIG:-1}" == 1 ]]; then
    log "in-process pipeline on all $(ls "$TMP"/kinesis/*.json | wc -l) documents as ONE batch (a CLI-sized batch: bigger files), one core"
    "${ONE_CORE[@]}" "$BENCH_BIN" batch "$TMP"/kinesis/*.json --iters 3 | tee "$OUT/pipeline-big-1core-$STAMP.txt" | grep -v '^RESULT' 
fi
log "the CLI's first NDJSON batch, phase by phase, beside their limits (pipeline limits), one core"
"${ONE_CORE[@]}" "$BENCH_BIN" limits "$TMP/events.ndjson" --iters 5 | tee "$OUT/limits-1core-$STAMP.txt" | grep -v '^RESULT'
# for scale: orjson into full Python objects, the same lines (the CLI's first
# 64 MiB batch), one core, median of 5
"${ONE_CORE[@]}" "$PY" - "$TMP/events.ndjson" <<'PYEOF' | tee -a "$OUT/limits-1core-$STAMP.txt"
import statistics, sys, time
import orjson
lines, size = [], 0
with open(sys.argv[1], "rb") as f:
    for line in f:
        line = line.rstrip(b"\r\n")
        if not line.strip():
            continue
        if size + len(line) > 64 << 20:
            break
        size += len(line)
        lines.append(line)
times = []
for _ in range(5):
    t = time.perf_counter()
    for line in lines:
        orjson.loads(line)
    times.append(time.perf_counter() - t)
m = statistics.median(times)
print(f"  orjson.loads, each line, into Python objects (one core)   {m * 1e3:8.1f} ms  {size / 1e6 / m:7.1f} MB/s of JSON")
PYEOF

# ------------------------------------------------------------ memory of one batch
log "peak memory of one 6 MB batch"
if [[ -n "$TIME_BIN" ]]; then
    "$TIME_BIN" -v -o "$TMP/time-once.txt" "$BENCH_BIN" once "$BATCH" | grep -v '^RESULT'
    echo "/usr/bin/time -v: $(grep 'Maximum resident set size' "$TMP/time-once.txt" | sed 's/^[[:space:]]*//')"
else
    "$BENCH_BIN" once "$BATCH" | grep -v '^RESULT'
fi
"$PY" "$SCRIPT_DIR/bench_lambda_init.py" --bin "$LAMBDA" --invoke "$BATCH" --json "$OUT/lambda-invoke-$STAMP.json"
fi  # BENCH_E2E_ONLY

# ------------------------------------------------------------ end to end vs the peer
log "end to end: ours vs the pyarrow and DuckDB peers, $RUNS rounds, interleaved"
set +e
"$PY" "$SCRIPT_DIR/bench_compare.py" run --ours "$OURS" --bench-bin "$BENCH_BIN" \
    --peer "$SHARED/peer_pyarrow.py" --peer-duckdb "$SHARED/peer_duckdb.py" --python "$PY" \
    --kinesis "$TMP/kinesis" --ndjson "$TMP/events.ndjson" --events "$EVENTS" \
    --work "$TMP/e2e" --runs "$RUNS" --json "$OUT/e2e-$STAMP.json" | tee "$OUT/e2e-$STAMP.txt"
compare_status=${PIPESTATUS[0]}
set -e
[[ $compare_status -eq 0 || $compare_status -eq 2 ]] || die "the end-to-end run failed (exit $compare_status)"

# ------------------------------------------------------------ Lambda
if [[ "$E2E_ONLY" != 1 ]]; then
log "Lambda cold start (process start -> first GET /runtime/invocation/next), $STARTS starts"
"$PY" "$SCRIPT_DIR/bench_lambda_init.py" --bin "$LAMBDA" --starts "$STARTS" \
    --json "$OUT/lambda-init-$STAMP.json" || die "the cold start could not be measured"
for b in "$LAMBDA" "$OURS"; do
    strip --strip-all -o "$TMP/stripped" "$b" 2>/dev/null || cp "$b" "$TMP/stripped"
    awk -v n="$(basename "$b")" -v a="$(stat -c %s "$b")" -v s="$(stat -c %s "$TMP/stripped")" \
        -v z="$(gzip -9 -c "$b" | wc -c)" \
        'BEGIN { printf "  %-22s %6.1f MB as built (strip = \"symbols\"), %6.1f MB with strip --strip-all, %5.1f MB gzip -9 (~ the deployment zip)\n", n, a / 1e6, s / 1e6, z / 1e6 }' 
done
fi  # BENCH_E2E_ONLY

log "done; logs and JSON results in $OUT (*-$STAMP.*)"
if [[ $compare_status -eq 2 ]]; then
    die "the lakes differ (see above): the benchmark numbers stand, the contents check failed"
fi
