#!/usr/bin/env python3
"""End-to-end benchmark of kinesis-lake against two peers, the Python one
(orjson + pyarrow) and DuckDB, and a check that all produce the same lake.
Run by scripts/bench.sh (`make bench`).

  bench_compare.py run --ours BIN --bench-bin BIN --peer PEER_PY
                       [--peer-duckdb PEER_DUCKDB_PY] --kinesis DIR
                       --ndjson FILE --work DIR [--runs N] [--json OUT]
  bench_compare.py compare OURS_LAKE PEER_LAKE

Our `ingest` stages every batch and publishes the staged windows before it
exits (the default, `--window 300`); `ingest --window 0` writes each batch's
files directly, as before: both run in the same rounds. The DuckDB peer keeps
no dead letters and no state across runs (no dedup store, nothing to resume):
it is a lower bound on the work.

`run` times every variant N times, interleaved round by round so that the
machine's drift hits all of them alike, and quotes medians: wall time of the
whole process (start-up, imports and the final fsync included) and its peak
RSS (from the kernel's rusage of that one child, via wait4). Then it compares
the last run's lakes.

`compare` reads two lakes and checks that they hold the same events:
the same set of event_uuid (each once), the same rows per partition folder,
and equal values of the common columns and of every payload field. It compares
meaning, not bytes: the peer names a null subtype folder `None` where we write
Hive's `__HIVE_DEFAULT_PARTITION__`; it stores `created_at` as int64 where we
store a double; it stores JSON objects and arrays as Parquet structs and lists
where we keep them as JSON text. DuckDB stores event_uuid as a UUID, writes
a null subtype folder as `NULL`, and types payload fields whose kind varies
across event types as its JSON type (JSON text): read back as str, None and
parsed JSON. Our staged lake names its files `part-<window>-g0000-0000.parquet`,
the direct one `part-<uuid>.parquet`: names are not compared, rows are. Such
physical differences are listed, and every value is compared after reading
both sides back into Python values.
"""
import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time

HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
COMMON = ("event_uuid", "event_name", "created_at", "created_datetime")


def die(msg):
    print(f"bench_compare: error: {msg}", file=sys.stderr)
    sys.exit(1)


# ------------------------------------------------------------------ running


def run_once(cmd, log_path, env=None):
    """Runs cmd; returns (wall seconds, peak RSS in KiB, stdout text)."""
    with open(log_path, "w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env, text=True)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        with open(log_path) as f:
            tail = f.read()[-2000:]
        die(f"{' '.join(map(str, cmd))} failed with exit code {proc.returncode}:\n{out[-2000:]}\n{tail}")
    return wall, usage.ru_maxrss, out  # ru_maxrss is in KiB on Linux


def fresh(path):
    shutil.rmtree(path, ignore_errors=True)
    return path


def count_files(lake):
    n = 0
    for _, _, files in os.walk(lake):
        n += sum(1 for f in files if f.endswith(".parquet"))
    return n


def cmd_run(a):
    for p, what in ((a.ours, "--ours"), (a.bench_bin, "--bench-bin"), (a.peer, "--peer"),
                    (a.peer_duckdb, "--peer-duckdb")):
        if p and not os.path.exists(p):
            die(f"{what} {p} does not exist")
    os.makedirs(a.work, exist_ok=True)
    n_events = a.events
    W = lambda *p: os.path.join(a.work, *p)  # noqa: E731

    ingest = lambda *extra: (lambda lake, src: [  # noqa: E731
        a.ours, "ingest", "--json", "--no-progress", *extra, "--lake", lake, src])
    variants = [
        # (name, input kind, lake dir, command builder)
        ("ours: ingest (staged, redb)", "kinesis", W("lake-ours-kin"), ingest()),
        ("ours: ingest --window 0", "kinesis", W("lake-direct-kin"), ingest("--window", "0")),
        ("ours: in-memory dedup", "kinesis", W("lake-mem-kin"),
         lambda lake, src: [a.bench_bin, "ingest", "--lake", lake, src]),
        ("ours: ingest --batch-mib 2", "kinesis", W("lake-ours-kin-small"),
         ingest("--batch-mib", "2")),
        ("peer: pyarrow", "kinesis", W("lake-peer-kin"),
         lambda lake, src: [a.python, a.peer, "--out", lake, src]),
        ("peer: duckdb", "kinesis", W("lake-duck-kin"),
         lambda lake, src: [a.python, a.peer_duckdb, "--out", lake, src]),
        ("ours: ingest (staged, redb)", "ndjson", W("lake-ours-nd"), ingest()),
        ("ours: ingest --window 0", "ndjson", W("lake-direct-nd"), ingest("--window", "0")),
        ("ours: in-memory dedup", "ndjson", W("lake-mem-nd"),
         lambda lake, src: [a.bench_bin, "ingest", "--lake", lake, src]),
        ("peer: pyarrow", "ndjson", W("lake-peer-nd"),
         lambda lake, src: [a.python, a.peer, "--out", lake, src]),
        ("peer: duckdb", "ndjson", W("lake-duck-nd"),
         lambda lake, src: [a.python, a.peer_duckdb, "--out", lake, src]),
    ]
    if not a.peer_duckdb:
        variants = [v for v in variants if v[0] != "peer: duckdb"]
    source = {"kinesis": a.kinesis, "ndjson": a.ndjson}
    times = {i: [] for i in range(len(variants))}
    rss = {i: [] for i in range(len(variants))}
    outs = {}
    started = time.time()
    # Every run writes into a folder never used before, and no lake is deleted
    # until all rounds are done: deleting a lake's hundreds of files just before
    # a run made that run's file creation cost up to three times the kernel time
    # (ext4 skips recently freed inodes when it allocates new ones), a cost of the
    # benchmark, not of the job. The last round's lakes are the ones compared.
    def lake_of(lake, r):
        return f"{lake}.round{r + 1}"

    # Before each run, the previous run's unwritten file data goes to disk
    # (sync, not timed): an fsync on ext4 commits the file system's journal with
    # everything pending in it, so the run right after the peer's thousands of
    # unsynced files paid for them (ours syncs every file it writes; the peer
    # syncs none).
    # Every other round runs the variants in reverse order: a run right after
    # the peer's took 1.25-1.4 s where the next one took 0.9-1.0 s (more kernel
    # time zeroing fresh pages), so no variant should always come after it.
    for r in range(a.runs):
        order = list(range(len(variants)))
        if r % 2:
            order.reverse()
        for i in order:
            name, kind, lake, build = variants[i]
            lake = fresh(lake_of(lake, r))
            os.sync()
            wall, kib, out = run_once(build(lake, source[kind]), W(f"log-{i}-{r}.txt"))
            times[i].append(wall)
            rss[i].append(kib)
            outs[i] = out
            print(f"  round {r + 1}/{a.runs}  {name:<29} {kind:<8} {wall:7.2f} s  "
                  f"{n_events / wall:9.0f} events/s  peak RSS {kib / 1024:7.1f} MiB", flush=True)
    elapsed = time.time() - started
    # keep only the last round's lakes
    for _, _, lake, _ in variants:
        for r in range(a.runs - 1):
            shutil.rmtree(lake_of(lake, r), ignore_errors=True)
    variants = [(name, kind, lake_of(lake, a.runs - 1), build)
                for name, kind, lake, build in variants]

    results = []
    for i, (name, kind, lake, _) in enumerate(variants):
        med = statistics.median(times[i])
        results.append({
            "variant": name, "input": kind, "runs": times[i], "median_s": med,
            "events_per_s": n_events / med, "peak_rss_mib": max(rss[i]) / 1024,
            "parquet_files": count_files(lake), "lake": lake,
        })
    peer = {r["input"]: r for r in results if r["variant"] == "peer: pyarrow"}
    duck = {r["input"]: r for r in results if r["variant"] == "peer: duckdb"}
    print()
    print(f"{n_events} events; {a.runs} runs per variant, interleaved, in {elapsed:.0f} s; medians")
    print(f"{'variant':<30}{'input':<9}{'median s':>9}{'events/s':>11}{'x pyarrow':>10}"
          f"{'x duckdb':>9}{'peak RSS MiB':>14}{'files':>7}")
    for r in results:
        r["ratio_vs_peer"] = r["events_per_s"] / peer[r["input"]]["events_per_s"]
        d = duck.get(r["input"])
        r["ratio_vs_duckdb"] = r["events_per_s"] / d["events_per_s"] if d else None
        dx = f"{r['ratio_vs_duckdb']:>8.1f}x" if d else f"{'-':>9}"
        print(f"{r['variant']:<30}{r['input']:<9}{r['median_s']:>9.2f}{r['events_per_s']:>11.0f}"
              f"{r['ratio_vs_peer']:>9.1f}x{dx}{r['peak_rss_mib']:>14.1f}{r['parquet_files']:>7}")

    # the contents: ours against each peer, and our variants against each other
    checks = []
    last = lambda name: lake_of(W(name), a.runs - 1)  # noqa: E731
    pairs = [
        ("kinesis: ours (staged) vs pyarrow peer", last("lake-ours-kin"), last("lake-peer-kin")),
        ("ndjson: ours (staged) vs pyarrow peer", last("lake-ours-nd"), last("lake-peer-nd")),
        ("kinesis: ours --window 0 vs ours (staged)", last("lake-direct-kin"),
         last("lake-ours-kin")),
        ("ndjson: ours --window 0 vs ours (staged)", last("lake-direct-nd"),
         last("lake-ours-nd")),
        ("kinesis: ours --batch-mib 2 vs ours", last("lake-ours-kin-small"),
         last("lake-ours-kin")),
        ("kinesis: in-memory dedup vs redb", last("lake-mem-kin"), last("lake-ours-kin")),
    ]
    if a.peer_duckdb:
        pairs += [
            ("kinesis: ours (staged) vs duckdb peer", last("lake-ours-kin"),
             last("lake-duck-kin")),
            ("ndjson: ours (staged) vs duckdb peer", last("lake-ours-nd"), last("lake-duck-nd")),
        ]
    for ours_name, lake_a, lake_b in pairs:
        print(f"\n== lake contents, {ours_name}")
        problems = compare(lake_a, lake_b)
        checks.append({"check": ours_name, "problems": problems})
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump({"events": n_events, "runs": a.runs, "results": results, "checks": checks}, f,
                      indent=1)
    bad = [c for c in checks if c["problems"]]
    if bad:
        print("\nlake contents DIFFER: " + "; ".join(c["check"] for c in bad))
        return 2
    print("\nlake contents: identical in meaning in every comparison")
    return 0


# ------------------------------------------------------------------ reading lakes


def partition_of(rel_dir):
    """(event_type, event_subtype or None, event_date) of a Hive folder path."""
    from urllib.parse import unquote
    parts = dict(p.split("=", 1) for p in rel_dir.split(os.sep) if "=" in p)
    sub = parts.get("event_subtype")
    # ours: Hive's null partition; the pyarrow peer: str(None); DuckDB: NULL
    if sub in (HIVE_NULL, "None", "NULL"):
        sub = None
    elif sub is not None:
        sub = unquote(sub)
    return (unquote(parts.get("event_type", "")), sub, parts.get("event_date"))


_LAKES = {}


def read_lake(root):
    """{event_uuid: (partition, row dict)}, per-partition counts, column types,
    repeated uuids. Read once per lake (several checks share one)."""
    root = os.path.abspath(root)
    if root not in _LAKES:
        _LAKES[root] = _read_lake(root)
    return _LAKES[root]


def _read_lake(root):
    import uuid

    import pyarrow.parquet as pq
    rows, counts, types, repeats = {}, {}, {}, []
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if not x.startswith(("_", "."))]
        for f in sorted(files):
            if not f.endswith(".parquet"):
                continue
            part = partition_of(os.path.relpath(d, root))
            t = pq.read_table(os.path.join(d, f))
            json_cols = set()
            for field in t.schema:
                types.setdefault(field.name, set()).add(str(field.type))
                if str(field.type) == "extension<arrow.json>":
                    json_cols.add(field.name)
            for row in t.to_pylist():
                # DuckDB's UUID and JSON types, read back as Python values
                for k, v in row.items():
                    if isinstance(v, uuid.UUID):
                        row[k] = str(v)
                    elif k in json_cols and isinstance(v, str):
                        row[k] = json.loads(v)
                u = row.get("event_uuid")
                if u in rows:
                    repeats.append(u)
                rows[u] = (part, row)
                counts[part] = counts.get(part, 0) + 1
    return rows, counts, types, repeats


def base_field(name):
    """Our variant columns (`x__v_int`) hold values of field x."""
    if "__v_" in name:
        return name.rsplit("__v_", 1)[0]
    return name


def normalise(value, peer_value):
    """Our value read back in the peer's terms: JSON text where the peer has a
    struct or list, as Python values."""
    if isinstance(value, str) and isinstance(peer_value, (dict, list)):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def equal(x, y):
    if isinstance(x, bool) or isinstance(y, bool):
        return x is y or x == y and type(x) is type(y)
    if isinstance(x, (int, float)) and isinstance(y, (int, float)):
        return x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
    if isinstance(x, dict) and isinstance(y, dict):
        keys = {k for k, v in x.items() if v is not None} | {k for k, v in y.items() if v is not None}
        return all(equal(x.get(k), y.get(k)) for k in keys)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(equal(p, q) for p, q in zip(x, y))
    return x == y


def payload(row):
    """The row's fields other than the common ones, nulls dropped, variant
    columns folded into their field."""
    out = {}
    for k, v in row.items():
        if k in COMMON or v is None:
            continue
        out[base_field(k)] = v
    return out


def compare(lake_a, lake_b, show=5):
    """Compares lake A (ours) with lake B; prints and returns the problems."""
    a_rows, a_counts, a_types, a_rep = read_lake(lake_a)
    b_rows, b_counts, b_types, b_rep = read_lake(lake_b)
    problems = []

    def report(kind, n, examples):
        problems.append({"kind": kind, "count": n, "examples": examples[:show]})
        print(f"  DIFFERENCE {kind}: {n}")
        for e in examples[:show]:
            print(f"    {e}")

    print(f"  A {lake_a}: {len(a_rows)} events in {len(a_counts)} partitions")
    print(f"  B {lake_b}: {len(b_rows)} events in {len(b_counts)} partitions")
    for name, rep in (("A", a_rep), ("B", b_rep)):
        if rep:
            report(f"event_uuid more than once in {name}", len(rep), rep)
    only_a = sorted(set(a_rows) - set(b_rows))
    only_b = sorted(set(b_rows) - set(a_rows))
    if only_a:
        report("event_uuid only in A", len(only_a), only_a)
    if only_b:
        report("event_uuid only in B", len(only_b), only_b)
    count_diff = [(p, a_counts.get(p), b_counts.get(p))
                  for p in sorted(set(a_counts) | set(b_counts), key=str)
                  if a_counts.get(p) != b_counts.get(p)]
    if count_diff:
        report("rows per partition folder", len(count_diff),
               [f"{p}: A {x} rows, B {y} rows" for p, x, y in count_diff])
    else:
        print(f"  rows per partition folder: equal in all {len(a_counts)} folders")

    wrong_part, common_diff, payload_diff = [], {}, {}
    for u in sorted(set(a_rows) & set(b_rows)):
        (pa_, ra), (pb_, rb) = a_rows[u], b_rows[u]
        if pa_ != pb_:
            wrong_part.append(f"{u}: A {pa_}, B {pb_}")
        for c in COMMON:
            if not equal(ra.get(c), rb.get(c)):
                common_diff.setdefault(c, []).append(f"{u}: A {ra.get(c)!r}, B {rb.get(c)!r}")
        pa, pb = payload(ra), payload(rb)
        for k in sorted(set(pa) | set(pb)):
            va, vb = pa.get(k), pb.get(k)
            if not equal(normalise(va, vb), vb):
                payload_diff.setdefault(k, []).append(f"{u}: A {va!r:.120}, B {vb!r:.120}")
    if wrong_part:
        report("partition of an event", len(wrong_part), wrong_part)
    for c, ex in common_diff.items():
        report(f"column {c}", len(ex), ex)
    for k, ex in sorted(payload_diff.items()):
        report(f"payload field {k}", len(ex), ex)
    n_common = len(set(a_rows) & set(b_rows))
    if not (wrong_part or common_diff or payload_diff):
        print(f"  values: equal for all {n_common} common events (common columns and payload fields)")

    # physical differences, for the record (equal in meaning, checked above)
    variants_a = sorted(c for c in a_types if "__v_" in c and c not in b_types)
    drifting_b = sorted(c for c, t in b_types.items() if len(t) > 1)
    nested_b = sorted(c for c, t in b_types.items()
                      if any(x.startswith(("struct", "list")) for x in t) and a_types.get(c) == {"string"})
    json_b = sorted(c for c, t in b_types.items() if t == {"extension<arrow.json>"})
    other = sorted(c for c in set(a_types) & set(b_types)
                   if len(a_types[c]) == 1 and len(b_types[c]) == 1 and a_types[c] != b_types[c]
                   and c not in nested_b and c not in json_b)
    print("  storage differences (values were compared as read back, so these are not mismatches):")
    if variant_note := len(variants_a):
        print(f"    {variant_note} variant columns only in A (one lake-wide type per field; values of "
              f"another kind kept beside it), e.g. {variants_a[0]}")
    if drifting_b:
        print(f"    {len(drifting_b)} columns whose type changes from file to file in B (inferred per "
              f"file), e.g. {drifting_b[0]}: {', '.join(sorted(b_types[drifting_b[0]]))[:100]}")
    if nested_b:
        print(f"    {len(nested_b)} columns with JSON objects/arrays: JSON text in A, struct/list in B, "
              f"e.g. {nested_b[0]}")
    if json_b:
        print(f"    {len(json_b)} columns of DuckDB's JSON type in B (JSON text; its reader found "
              f"values of more than one kind under that name across the input), e.g. {json_b[0]}")
    for c in other:
        print(f"    {c}: {', '.join(a_types[c])} in A, {', '.join(b_types[c])} in B")
    return problems


def cmd_compare(a):
    return 2 if compare(a.a, a.b) else 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--ours", required=True, help="target/release/kinesis-lake")
    r.add_argument("--bench-bin", required=True, help="the pipeline bench binary")
    r.add_argument("--peer", required=True, help="peer_pyarrow.py")
    r.add_argument("--peer-duckdb", help="peer_duckdb.py (left out when not given)")
    r.add_argument("--python", default=sys.executable, help="Python with orjson + pyarrow")
    r.add_argument("--kinesis", required=True, help="folder of Kinesis event documents")
    r.add_argument("--ndjson", required=True, help="the same events, one NDJSON file")
    r.add_argument("--events", type=int, default=100_000)
    r.add_argument("--work", required=True, help="folder for the lakes and logs")
    r.add_argument("--runs", type=int, default=3)
    r.add_argument("--json", help="write the results here")
    c = sub.add_parser("compare")
    c.add_argument("a", help="our lake")
    c.add_argument("b", help="the other lake")
    a = p.parse_args()
    sys.exit(cmd_run(a) if a.cmd == "run" else cmd_compare(a))


if __name__ == "__main__":
    main()
