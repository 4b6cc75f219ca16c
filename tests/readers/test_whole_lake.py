"""Whole-lake reads of a lake whose fields drift in type from batch to batch:
DuckDB (union_by_name), pyarrow (one unified schema, no type promotion) and
Apache Spark (mergeSchema, the engine of Glue jobs) read every file of every
event type without error, with every value in its place."""
import json
import os
import pathlib
import shutil

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from conftest import CASE_COLUMNS, CASE_EVENTS, DRIFT_EVENTS, demo_events


def parquet_files(lake: pathlib.Path):
    return sorted(p for p in lake.rglob("*.parquet") if not any(part.startswith(("_", ".")) for part in p.relative_to(lake).parts))


def expected_rows():
    return {e["event_uuid"]: e for e in DRIFT_EVENTS}


def test_every_file_agrees_on_every_column_type(drift_lake):
    files = parquet_files(drift_lake)
    assert len(files) >= 6, "one file per batch and partition"
    types = {}
    for f in files:
        for field in pq.read_schema(f):
            assert types.setdefault(field.name, field.type) == field.type, f"{field.name} differs in {f}"
    # the first type committed for `amount` stays; other kinds went to variants
    assert types["amount"] == pa.int64()
    assert types["amount__v_double"] == pa.float64()
    assert types["amount__v_string"] == pa.string()
    assert types["amount__v_json"] == pa.string()


def test_pyarrow_unifies_the_whole_lake_without_promotion(drift_lake):
    part = ds.HivePartitioning.discover(infer_dictionary=False)
    first = ds.dataset(drift_lake, format="parquet", partitioning=part)
    # the default "none" promotion: raises if any two files disagree
    schema = pa.unify_schemas([f.physical_schema for f in first.get_fragments()] + [first.partitioning.schema])
    rows = ds.dataset(drift_lake, format="parquet", partitioning=part, schema=schema).to_table().to_pylist()
    got = {r["event_uuid"]: r for r in rows}
    assert set(got) == set(expected_rows())
    assert got["d1"]["amount"] == 5 and got["d3"]["amount__v_double"] == 1.5
    assert got["d4"]["amount__v_string"] == "12.50"
    assert json.loads(got["d6"]["amount__v_json"]) == {"value": 3}
    assert got["d7"]["amount__v_json"] == "123456789012345678901234567890"


def test_duckdb_reads_the_whole_lake(drift_lake):
    glob = str(drift_lake / "**" / "*.parquet")
    rel = duckdb.sql(f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true, union_by_name = true)")
    rows = {r["event_uuid"]: r for r in rel.to_arrow_table().to_pylist()}
    assert set(rows) == set(expected_rows())
    assert rows["d2"]["ok"] is True and rows["d3"]["ok__v_string"] == "yes"
    assert rows["d5"]["items"] == 3 and rows["d6"]["items__v_double"] == 4.5
    assert rows["d7"]["event_subtype"] is None
    assert rows["d8"]["note"] == "late field"


@pytest.fixture(scope="module")
def spark():
    if shutil.which("java") is None:
        pytest.fail("Java is needed for Spark (Java 17 is on the project's machines)")
    from pyspark.sql import SparkSession
    os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)
    session = (
        SparkSession.builder.master("local[1]")
        .appName("kinesis-lake-readers")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    yield session
    session.stop()


def test_spark_reads_the_whole_lake_with_merge_schema(spark, drift_lake):
    df = spark.read.option("mergeSchema", "true").parquet(str(drift_lake))
    rows = {r["event_uuid"]: r.asDict() for r in df.collect()}
    assert set(rows) == set(expected_rows())
    assert dict(df.dtypes)["amount"] == "bigint"
    assert rows["d1"]["amount"] == 5 and rows["d3"]["amount__v_double"] == 1.5
    assert rows["d4"]["amount__v_string"] == "12.50"
    # Hive partitions decoded, the default partition as NULL
    assert rows["d5"]["event_type"] == "cart" and rows["d5"]["event_subtype"] == "updated"
    assert rows["d7"]["event_subtype"] is None
    assert str(rows["d8"]["event_date"]) == "2024-03-19"


def test_spark_reads_escaped_partitions(spark, fixture_lake):
    df = spark.read.option("mergeSchema", "true").parquet(str(fixture_lake))
    subtypes = {r["event_uuid"]: r["event_subtype"] for r in df.select("event_uuid", "event_subtype").collect()}
    assert subtypes["00000000-0000-4000-8000-000000000006"] == "watch/../../etc?x=1#frag"
    assert subtypes["00000000-0000-4000-8000-000000000005"] is None


def test_the_demo_lake_mixes_codecs_and_spark_reads_every_value(spark, demo_lake):
    """With `auto` the codec is chosen per column chunk by size (zstd from 2 KiB,
    snappy below): files that mix codecs read in Spark like any other."""
    mixed = 0
    for f in parquet_files(demo_lake):
        md = pq.ParquetFile(f).metadata
        codecs = {md.row_group(g).column(c).compression
                  for g in range(md.num_row_groups) for c in range(md.num_columns)}
        mixed += {"ZSTD", "SNAPPY"} <= codecs
    assert mixed > 0, "no file of the demo lake mixes zstd and snappy chunks"
    expected = demo_events()
    df = spark.read.option("mergeSchema", "true").parquet(str(demo_lake))
    rows = {r["event_uuid"]: r for r in df.select("event_uuid", "user_id", "amount").collect()}
    assert set(rows) == set(expected)
    for uuid, e in expected.items():
        assert rows[uuid]["user_id"] == e["user_id"], uuid
        assert rows[uuid]["amount"] == e["amount"], uuid


def test_dictionary_encoded_columns_read_in_every_engine(spark, demo_lake):
    """Columns of few distinct values (`country`: 5, `event_name` within a
    partition) are written as a dictionary page and indices (PLAIN_DICTIONARY,
    parquet-mr's v1 encoding), nulls included: Spark, DuckDB and pyarrow read
    every value of them across the whole lake."""
    dictionary_chunks = {"country": 0, "event_name": 0}
    for f in parquet_files(demo_lake):
        md = pq.ParquetFile(f).metadata
        for g in range(md.num_row_groups):
            for c in range(md.num_columns):
                col = md.row_group(g).column(c)
                if col.path_in_schema in dictionary_chunks and col.has_dictionary_page:
                    assert "PLAIN_DICTIONARY" in col.encodings, (f, col.encodings)
                    dictionary_chunks[col.path_in_schema] += 1
    assert all(dictionary_chunks.values()), dictionary_chunks
    expected = {u: (e["event_name"], e.get("country")) for u, e in demo_events().items()}

    df = spark.read.option("mergeSchema", "true").parquet(str(demo_lake))
    got = {r["event_uuid"]: (r["event_name"], r["country"])
           for r in df.select("event_uuid", "event_name", "country").collect()}
    assert got == expected

    glob = str(demo_lake / "**" / "*.parquet")
    rel = duckdb.sql(f"SELECT event_uuid, event_name, country FROM read_parquet('{glob}', "
                     "hive_partitioning = true, union_by_name = true)")
    assert {u: (n, c) for u, n, c in rel.fetchall()} == expected

    part = ds.HivePartitioning.discover(infer_dictionary=False)
    first = ds.dataset(demo_lake, format="parquet", partitioning=part)
    schema = pa.unify_schemas([f.physical_schema for f in first.get_fragments()] + [first.partitioning.schema])
    table = ds.dataset(demo_lake, format="parquet", partitioning=part, schema=schema).to_table(
        columns=["event_uuid", "event_name", "country"])
    assert {r["event_uuid"]: (r["event_name"], r["country"]) for r in table.to_pylist()} == expected


def case_fields(event):
    return {k: v for k, v in event.items() if k not in ("event_uuid", "event_name", "created_at")}


def test_names_that_differ_only_in_case_read_in_every_engine(spark, case_lake):
    """`userId`, `userid` and `USERID` (and `Event_Type` beside the partition column
    `event_type`) are one name to Spark, Glue, Athena and DuckDB: each field gets a
    column no other column matches in any case, so the whole lake reads everywhere,
    each value under its own column."""
    expected = {e["event_uuid"]: e for e in CASE_EVENTS}
    names = {n for f in parquet_files(case_lake) for n in pq.read_schema(f).names}
    lowered = [n.lower() for n in names] + ["event_type", "event_subtype", "event_date"]
    assert len(set(lowered)) == len(lowered), sorted(names)

    # Spark, case-insensitive as Glue jobs run it by default
    assert spark.conf.get("spark.sql.caseSensitive") == "false"
    df = spark.read.option("mergeSchema", "true").parquet(str(case_lake))
    rows = {r["event_uuid"]: r.asDict() for r in df.collect()}
    assert set(rows) == set(expected)
    for uuid, e in expected.items():
        assert rows[uuid]["event_type"] == e["event_name"].split(":")[0], uuid
        for field, value in case_fields(e).items():
            assert rows[uuid][CASE_COLUMNS[field]] == value, (uuid, field)

    # DuckDB: no column renamed on the way in
    glob = str(case_lake / "**" / "*.parquet")
    rel = duckdb.sql(f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true, union_by_name = true)")
    assert set(CASE_COLUMNS.values()) <= set(rel.columns), rel.columns
    rows = {r["event_uuid"]: r for r in rel.to_arrow_table().to_pylist()}
    for uuid, e in expected.items():
        assert rows[uuid]["event_type"] == e["event_name"].split(":")[0], uuid
        for field, value in case_fields(e).items():
            assert rows[uuid][CASE_COLUMNS[field]] == value, (uuid, field)

    # pyarrow: the whole lake as one dataset, its files' schemas unified
    part = ds.HivePartitioning.discover(infer_dictionary=False)
    first = ds.dataset(case_lake, format="parquet", partitioning=part)
    schema = pa.unify_schemas([f.physical_schema for f in first.get_fragments()] + [first.partitioning.schema])
    table = ds.dataset(case_lake, format="parquet", partitioning=part, schema=schema).to_table()
    rows = {r["event_uuid"]: r for r in table.to_pylist()}
    for uuid, e in expected.items():
        for field, value in case_fields(e).items():
            assert rows[uuid][CASE_COLUMNS[field]] == value, (uuid, field)
