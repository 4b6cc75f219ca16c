"""The publisher killed (SIGKILL) at several points of a publication, the lake
read with DuckDB between kills: never a duplicate, never an event that was not
sent, and every event exactly once after a run that is not killed.

Runs the CLI on a folder lake: `ingest --no-publish` stages the events, then
`publish` is started and killed again and again, each time a little later.

Run: KL_BIN=target/debug/kinesis-lake .tools/venv/bin/pytest -q tests/publish
"""

import json
import os
import pathlib
import signal
import subprocess
import time

import duckdb
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("KL_BIN", ROOT / "target" / "debug" / "kinesis-lake"))
EVENTS = 30_000
TYPES = 60


def write_events(path):
    """EVENTS events over TYPES event types, 3 subtypes and 2 days: 360 partitions."""
    with open(path, "w") as f:
        for i in range(EVENTS):
            event = {
                "event_uuid": f"k-{i:06d}",
                "event_name": f"type{i % TYPES}:sub{(i // TYPES) % 3}",
                "created_at": 1710670530 + ((i // (TYPES * 3)) % 2) * 86400,
                "n": i,
                "note": "x" * (i % 50),
            }
            f.write(json.dumps(event) + "\n")
    return {f"k-{i:06d}" for i in range(EVENTS)}


def lake_uuids(lake):
    """Every event_uuid a Hive-style reader sees, with repeats."""
    files = list(lake.glob("event_type=*/**/*.parquet"))
    if not files:
        return []
    con = duckdb.connect()
    rows = con.execute(
        "SELECT event_uuid FROM read_parquet(?, hive_partitioning = true, union_by_name = true)",
        [f"{lake}/**/*.parquet"],
    ).fetchall()
    return [r[0] for r in rows]


def run(args, **kw):
    r = subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, f"{args}: {r.stderr}"
    return r


@pytest.fixture
def staged_lake(tmp_path):
    if not BIN.exists():
        pytest.fail(f"{BIN} is missing: cargo build first (make test does)")
    sent = write_events(tmp_path / "events.ndjson")
    lake = tmp_path / "lake"
    out = run(["ingest", "--lake", str(lake), "--no-publish", "--json", "--no-progress",
               "--batch-records", "3000", str(tmp_path / "events.ndjson")])
    summary = json.loads(out.stdout)
    assert summary["written"] == EVENTS and summary["staging_objects"] == 10, summary
    return lake, sent


def parquet_files(lake):
    return len(list(lake.glob("event_type=*/**/*.parquet")))


def test_a_publisher_killed_again_and_again_never_shows_a_duplicate(staged_lake):
    lake, sent = staged_lake
    assert lake_uuids(lake) == [], "nothing is visible before publication"
    partition_files = TYPES * 3 * 2
    visible = []
    # each run is killed as soon as it has put a few more partition files
    # than the last one left: kills at several points of the same publication
    for step in range(1, 8):
        before = parquet_files(lake)
        proc = subprocess.Popen([str(BIN), "publish", "--lake", str(lake), "--json"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while proc.poll() is None and parquet_files(lake) < before + 20 * step:
            assert time.monotonic() < deadline, "the publisher made no progress in 60 s"
            time.sleep(0.002)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        uuids = lake_uuids(lake)
        assert len(uuids) == len(set(uuids)), f"a duplicate after kill {step}"
        assert set(uuids) <= sent, f"an event that was never sent, after kill {step}"
        visible.append(len(uuids))
    partial = [n for n in visible if 0 < n < EVENTS]
    assert partial, f"no kill landed in the middle of the publication: {visible}"
    assert visible == sorted(visible), f"a kill lost published events: {visible}"

    run(["publish", "--lake", str(lake), "--json"])
    uuids = lake_uuids(lake)
    assert len(uuids) == len(set(uuids)) == EVENTS, visible
    assert set(uuids) == sent
    # a published folder lake keeps no staging objects, and nothing is left to publish
    assert not list((lake / "_staging").rglob("*.kls"))
    out = json.loads(run(["publish", "--lake", str(lake), "--json"]).stdout)
    assert out["events"] == 0
    # the whole window is one generation: one file per partition
    assert parquet_files(lake) == partition_files
