"""Shared helpers for the reader tests: build a lake with the real CLI."""
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"


def cli_binary() -> pathlib.Path:
    """The kinesis-lake binary: $KL_BIN, else the debug build `make test` made."""
    path = pathlib.Path(os.environ.get("KL_BIN", ROOT / "target" / "debug" / "kinesis-lake"))
    if not path.exists():
        pytest.fail(f"{path} does not exist: build it with `cargo build` (make test does)")
    return path


def ingest(lake: pathlib.Path, *inputs: pathlib.Path) -> None:
    subprocess.run(
        [str(cli_binary()), "ingest", "--lake", str(lake), "--json", *map(str, inputs)],
        check=True, capture_output=True,
    )


@pytest.fixture(scope="session")
def fixture_lake(tmp_path_factory) -> pathlib.Path:
    """A lake from the small fixtures: hostile names, null subtypes, mixed types."""
    lake = tmp_path_factory.mktemp("fixture") / "lake"
    ingest(lake, FIXTURES / "events.ndjson", FIXTURES / "kinesis")
    return lake


@pytest.fixture(scope="session")
def demo_lake(tmp_path_factory) -> pathlib.Path:
    """A lake from the 20,000-event demo file, in several batches (several files per partition)."""
    lake = tmp_path_factory.mktemp("demo") / "lake"
    subprocess.run(
        [str(cli_binary()), "ingest", "--lake", str(lake), "--batch-records", "5000", "--json",
         str(FIXTURES / "demo-events.ndjson.gz")],
        check=True, capture_output=True,
    )
    return lake
