"""Shared helpers for the reader tests: build a lake with the real CLI."""
import gzip
import json
import os
import pathlib
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"


def demo_events():
    """The demo input's distinct events (first copy wins), keyed by event_uuid."""
    events = {}
    with gzip.open(FIXTURES / "demo-events.ndjson.gz", "rt") as f:
        for line in f:
            e = json.loads(line)
            events.setdefault(e["event_uuid"], e)
    return events


def cli_binary() -> pathlib.Path:
    """The kinesis-lake binary: $KL_BIN, else the debug build `make test` made."""
    path = pathlib.Path(os.environ.get("KL_BIN", ROOT / "target" / "debug" / "kinesis-lake"))
    if not path.exists():
        pytest.fail(f"{path} does not exist: build it with `cargo build` (make test does)")
    return path


def clear_of_window_end(window_s: int = 300, margin_s: int = 60) -> None:
    """Waits, if need be, until the current publication window (the CLI's default
    length, aligned on the Unix epoch) has `margin_s` seconds left, so that a run
    expected to stage into one window does not straddle two: each window is
    published as files of its own."""
    left = window_s - time.time() % window_s
    if left < margin_s:
        time.sleep(left + 0.5)


def ingest(lake: pathlib.Path, *inputs: pathlib.Path) -> None:
    subprocess.run(
        [str(cli_binary()), "ingest", "--lake", str(lake), "--json", *map(str, inputs)],
        check=True, capture_output=True,
    )


def ingest_one_by_one(lake: pathlib.Path, events, work: pathlib.Path) -> None:
    """Each event ingested by a run of its own: each run stages its event and
    publishes it (a generation of the window of its own), so the lake schema
    evolves run by run and each run writes its own files."""
    for i, e in enumerate(events):
        src = work / f"event-{i:03}.ndjson"
        src.write_text(json.dumps(e) + "\n")
        ingest(lake, src)


@pytest.fixture(scope="session")
def fixture_lake(tmp_path_factory) -> pathlib.Path:
    """A lake from the small fixtures: hostile names, null subtypes, mixed types."""
    lake = tmp_path_factory.mktemp("fixture") / "lake"
    ingest(lake, FIXTURES / "events.ndjson", FIXTURES / "kinesis")
    return lake


@pytest.fixture(scope="session")
def demo_lake(tmp_path_factory) -> pathlib.Path:
    """A lake from the 20,000-event demo file, in several batches written at once
    (`--window 0`: several files per partition), with the `auto` codec: files
    that mix zstd and snappy chunks."""
    lake = tmp_path_factory.mktemp("demo") / "lake"
    subprocess.run(
        [str(cli_binary()), "ingest", "--lake", str(lake), "--batch-records", "5000",
         "--window", "0", "--compression", "auto", "--json",
         str(FIXTURES / "demo-events.ndjson.gz")],
        check=True, capture_output=True,
    )
    return lake


DRIFT_EVENTS = [
    # amount: an integer first, then doubles, a numeric string, an object, a huge integer
    {"event_uuid": "d1", "event_name": "payment:order", "created_at": 1710633600, "amount": 5, "tags": ["a"]},
    {"event_uuid": "d2", "event_name": "payment:order", "created_at": 1710633601, "amount": 7, "ok": True},
    {"event_uuid": "d3", "event_name": "payment:order", "created_at": 1710633602, "amount": 1.5, "ok": "yes"},
    {"event_uuid": "d4", "event_name": "payment:order", "created_at": 1710720000, "amount": "12.50"},
    {"event_uuid": "d5", "event_name": "cart:updated", "created_at": 1710633600, "amount": 2.25, "items": 3},
    {"event_uuid": "d6", "event_name": "cart:updated", "created_at": 1710633600, "amount": {"value": 3}, "items": 4.5},
    {"event_uuid": "d7", "event_name": "cart", "created_at": 1710633600, "amount": 123456789012345678901234567890},
    {"event_uuid": "d8", "event_name": "cart:updated", "created_at": 1710806400, "items": None, "note": "late field"},
]


@pytest.fixture(scope="session")
def drift_lake(tmp_path_factory) -> pathlib.Path:
    """A lake whose fields change type from run to run (one event per run, each
    published on its own): the case that breaks Spark and Athena on lakes whose
    files are typed one by one."""
    work = tmp_path_factory.mktemp("drift")
    lake = work / "lake"
    ingest_one_by_one(lake, DRIFT_EVENTS, work)
    return lake


CASE_EVENTS = [
    # field names that differ only in case, from one another and from the fixed and
    # partition columns: one name to Spark, Glue, Athena and DuckDB
    {"event_uuid": "k1", "event_name": "user:login", "created_at": 1710633600, "userId": "u1", "userid": "x1", "Country": "FR"},
    {"event_uuid": "k2", "event_name": "user:login", "created_at": 1710633601, "country": "DE", "Event_Type": "spoof", "EVENT_UUID": "not-the-key"},
    {"event_uuid": "k3", "event_name": "cart:add", "created_at": 1710633602, "USERID": 42, "Event_Date": "2020-01-01"},
]

# the column each field lands in: in one batch the first spelling in byte order keeps
# its name, a later one gets `_` until no column has its name in any case
CASE_COLUMNS = {
    "Country": "Country", "EVENT_UUID": "EVENT_UUID_", "Event_Date": "Event_Date_",
    "Event_Type": "Event_Type_", "USERID": "USERID", "country": "country_",
    "userId": "userId_", "userid": "userid__",
}


@pytest.fixture(scope="session")
def case_lake(tmp_path_factory) -> pathlib.Path:
    """A lake whose field names differ only in case (one batch)."""
    work = tmp_path_factory.mktemp("case")
    src = work / "case.ndjson"
    src.write_text("".join(json.dumps(e) + "\n" for e in CASE_EVENTS))
    lake = work / "lake"
    ingest(lake, src)
    return lake
