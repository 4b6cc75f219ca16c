"""Whole-lake reads that return every column and every row, in each reader our
users use, with the call the README shows: on a lake whose schema evolved from
batch to batch (the first file has only some of the lake's columns, which is
all a reader that takes the first file's schema sees).

The lake keeps its whole schema in `_common_metadata` (a Parquet file with no
rows: the summary-file convention of pyarrow and Spark), rewritten whenever a
schema version is committed. DuckDB unifies the files' schemas by name.
Folders starting with `_` (`_errors`, `_schemas`, `_state`, `_staging`,
`_publish`) are never read as data."""
import json
import os
import pathlib
import shutil
import subprocess

import duckdb
import pandas as pd
import polars as pl
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from conftest import DRIFT_EVENTS, cli_binary, ingest_one_by_one

# an event whose subtype is literally the null marker: its own folder, and the
# string back in DuckDB and Spark
MARKER = "__HIVE_DEFAULT_PARTITION__"
MARKER_EVENT = {"event_uuid": "m1", "event_name": f"cart:{MARKER}", "created_at": 1710633600, "items": 9}
EVENTS = {e["event_uuid"]: e for e in DRIFT_EVENTS + [MARKER_EVENT]}


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> pathlib.Path:
    work = tmp_path_factory.mktemp("evolved")
    lake = work / "lake"
    ingest_one_by_one(lake, EVENTS.values(), work)
    # what the staging area and publish records will put beside the data
    for junk in ["_staging/event_type=cart/obj-1", "_publish/rec-1.json"]:
        (lake / junk).parent.mkdir(parents=True, exist_ok=True)
        (lake / junk).write_bytes(b"not parquet")
    return lake


def data_files(lake):
    return sorted(p for p in lake.rglob("*.parquet")
                  if not any(part.startswith(("_", ".")) for part in p.relative_to(lake).parts))


def every_column(lake):
    names = {n for f in data_files(lake) for n in pq.read_schema(f).names}
    return names | {"event_type", "event_subtype", "event_date"}


def check(rows, columns, lake):
    """Every row once, every column of the lake, every value in its place."""
    columns = set(columns)
    expected = every_column(lake)
    first = set(pq.read_schema(data_files(lake)[0]).names)
    assert len(expected - first) >= 5, "the lake's schema evolved after its first file"
    # payload_json: in the summary for lakes written with --payload-json
    assert expected <= columns <= expected | {"payload_json"}, sorted(columns ^ expected)
    got = {r["event_uuid"]: r for r in rows}
    assert len(rows) == len(got) == len(EVENTS)
    assert got["d1"]["amount"] == 5 and got["d3"]["amount__v_double"] == 1.5
    assert got["d3"]["ok__v_string"] == "yes" and got["d2"]["ok"] is True
    assert got["d4"]["amount__v_string"] == "12.50"
    assert json.loads(got["d6"]["amount__v_json"]) == {"value": 3}
    assert got["d6"]["items__v_double"] == 4.5 and got["d8"]["note"] == "late field"
    assert got["d5"]["event_type"] == "cart" and got["d5"]["event_subtype"] == "updated"
    assert got["d7"]["event_subtype"] is None
    assert str(got["d8"]["event_date"])[:10] == "2024-03-19"
    return got


def test_the_summary_file_holds_every_column_and_the_newest_version(lake):
    schema = pq.read_schema(lake / "_common_metadata")
    assert set(schema.names) == every_column(lake) | {"payload_json"}
    assert pq.ParquetFile(lake / "_common_metadata").metadata.num_rows == 0
    versions = sorted(int(p.stem[1:]) for p in (lake / "_schemas").glob("v*.json"))
    assert schema.metadata[b"kinesis_lake.schema_version"] == str(versions[-1]).encode()


def test_duckdb(lake):
    rel = duckdb.sql(f"SELECT * FROM read_parquet('{lake}/**/*.parquet', "
                     "hive_partitioning = true, union_by_name = true)")
    got = check(rel.to_arrow_table().to_pylist(), rel.columns, lake)
    assert got["m1"]["event_subtype"] == MARKER


def test_pyarrow(lake):
    schema = pq.read_schema(lake / "_common_metadata")
    table = ds.dataset(lake, format="parquet", partitioning="hive", schema=schema).to_table()
    got = check(table.to_pylist(), table.column_names, lake)
    # pyarrow compares a partition value with the null marker after decoding
    # it: the marker subtype reads as null there (its event_name keeps it)
    assert got["m1"]["event_subtype"] is None and got["m1"]["event_name"] == f"cart:{MARKER}"


def test_pyarrow_without_the_schema_loses_columns(lake):
    """What the README used to show: the first file's schema, silently."""
    table = ds.dataset(lake, format="parquet", partitioning="hive").to_table()
    assert set(table.column_names) < every_column(lake)


def test_polars(lake):
    df = pl.scan_parquet(f"{lake}/**/*.parquet", hive_partitioning=True,
                         schema=pl.read_parquet_schema(lake / "_common_metadata"),
                         missing_columns="insert").collect()
    check(df.to_dicts(), df.columns, lake)


def test_pandas(lake):
    df = pd.read_parquet(lake, schema=pq.read_schema(lake / "_common_metadata"))
    rows = [{k: (None if not isinstance(v, (list, dict)) and pd.isna(v) else v) for k, v in r.items()}
            for r in df.to_dict("records")]
    check(rows, df.columns, lake)


@pytest.fixture(scope="module")
def spark():
    if shutil.which("java") is None:
        pytest.fail("Java is needed for Spark (Java 17 is on the project's machines)")
    from pyspark.sql import SparkSession
    os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)
    session = (
        SparkSession.builder.master("local[1]")
        .appName("kinesis-lake-lake-schema")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    yield session
    session.stop()


@pytest.mark.parametrize("merge", ["false", "true"])
def test_spark(spark, lake, merge):
    # without mergeSchema Spark takes the schema from _common_metadata
    df = spark.read.option("mergeSchema", merge).parquet(str(lake))
    got = check([r.asDict() for r in df.collect()], df.columns, lake)
    assert got["m1"]["event_subtype"] == MARKER
