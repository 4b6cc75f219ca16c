"""The whole lake, not one file, reads with the tools our users use: DuckDB and
pyarrow, with Hive partitions decoded back to the original strings, NULL for
the default partition, and every event exactly once."""
import json

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

from conftest import demo_events


def duck(lake, sql_tail):
    glob = str(lake / "**" / "*.parquet")
    return duckdb.sql(
        f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true, union_by_name = true) {sql_tail}"
    )


def test_duckdb_reads_every_demo_event_once_with_its_values(demo_lake):
    expected = demo_events()
    rows = duck(demo_lake, "").to_arrow_table().to_pylist()
    assert len(rows) == len(expected)
    got = {r["event_uuid"]: r for r in rows}
    assert set(got) == set(expected)
    for uuid, e in list(expected.items())[:500]:
        r = got[uuid]
        parts = e["event_name"].split(":")
        assert r["event_type"] == parts[0]
        assert r["event_subtype"] == (parts[1] if len(parts) > 1 else None)
        assert r["user_id"] == e["user_id"]
        assert r["amount"] == e["amount"]
        assert r["is_mobile"] == e["is_mobile"]
        assert json.loads(r["context"]) == e["context"]
        assert r["created_at"] == e["created_at"]


def test_duckdb_partition_columns_are_typed_and_pruned(demo_lake):
    rel = duck(demo_lake, "LIMIT 0")
    types = dict(zip(rel.columns, map(str, rel.types)))
    assert types["event_date"] == "DATE"
    assert types["event_type"] == types["event_subtype"] == "VARCHAR"
    assert types["created_at"] == "DOUBLE" and types["user_id"] == "BIGINT"
    n = duck(demo_lake, "WHERE event_type = 'payment' AND event_date = DATE '2024-03-18'").aggregate("count(*)").fetchall()[0][0]
    expected = sum(1 for e in demo_events().values()
                   if e["event_name"].startswith("payment") and 1710720000 <= e["created_at"] < 1710806400)
    assert n == expected and n > 0


def test_duckdb_decodes_escaped_and_null_partitions(fixture_lake):
    rows = duck(fixture_lake, "ORDER BY event_uuid").to_arrow_table().to_pylist()
    by_uuid = {r["event_uuid"]: r for r in rows}
    assert by_uuid["00000000-0000-4000-8000-000000000006"]["event_subtype"] == "watch/../../etc?x=1#frag"
    assert by_uuid["00000000-0000-4000-8000-000000000005"]["event_subtype"] is None
    assert by_uuid["00000000-0000-4000-8000-000000000007"]["event_type"] == "quiz"
    assert len(rows) == len(by_uuid) == 9


def test_pyarrow_dataset_reads_the_whole_lake_with_hive_partitions(demo_lake):
    part = ds.HivePartitioning.discover(infer_dictionary=False)
    first = ds.dataset(demo_lake, format="parquet", partitioning=part)
    schema = pa.unify_schemas([f.physical_schema for f in first.get_fragments()] + [first.partitioning.schema])
    dataset = ds.dataset(demo_lake, format="parquet", partitioning=part, schema=schema)
    table = dataset.to_table()
    expected = demo_events()
    assert table.num_rows == len(expected)
    assert sorted(table.column("event_uuid").to_pylist()) == sorted(expected)
    # Hive partition columns come back; the dedup store and dead letters are ignored
    names = set(dataset.schema.names)
    assert {"event_type", "event_subtype", "event_date"} <= names
    subtypes = set(table.column("event_subtype").to_pylist())
    assert None in subtypes and "order" in subtypes


def test_pyarrow_decodes_escaped_partition_values(fixture_lake):
    part = ds.HivePartitioning.discover(infer_dictionary=False, segment_encoding="uri")
    dataset = ds.dataset(fixture_lake, format="parquet", partitioning=part)
    table = dataset.to_table(columns=["event_uuid", "event_type", "event_subtype"])
    by_uuid = {r["event_uuid"]: r for r in table.to_pylist()}
    assert by_uuid["00000000-0000-4000-8000-000000000006"]["event_subtype"] == "watch/../../etc?x=1#frag"
    assert by_uuid["00000000-0000-4000-8000-000000000005"]["event_subtype"] is None
