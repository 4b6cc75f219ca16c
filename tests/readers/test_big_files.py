"""Filtered reads on payload columns of the publisher's biggest files, in DuckDB
and pyarrow: both skip row groups by their min / max statistics, so a wrong
statistic would silently drop rows. The values rise with the event number, so
each row group covers its own range and the filters below skip whole row groups.
"""
import json
import subprocess

import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from conftest import clear_of_window_end, cli_binary

EVENTS = 150_000  # two row groups of the one file: 131,072 rows, then the rest


def event(i):
    e = {
        "event_uuid": f"f-{i:07d}",
        "event_name": "big:filter",
        "created_at": 1710670530,
        "seq": i,
        "score": i / 4 + 0.5,
        "label": f"l-{i:07d}",
        "early": i < 131_072,
    }
    if i % 4 == 0:
        e["sometimes"] = -i
    return e


@pytest.fixture(scope="module")
def big_lake(tmp_path_factory):
    work = tmp_path_factory.mktemp("big")
    src = work / "big.ndjson"
    with open(src, "w") as f:
        for i in range(EVENTS):
            f.write(json.dumps(event(i)) + "\n")
    lake = work / "lake"
    clear_of_window_end()  # one window: one file
    out = subprocess.run(
        [str(cli_binary()), "ingest", "--lake", str(lake), "--batch-records", "40000", "--json", str(src)],
        check=True, capture_output=True, text=True,
    )
    summary = json.loads(out.stdout)
    assert summary["staging_objects"] == 4 and summary["published"]["files"] == 1, summary
    return lake


def the_file(lake):
    files = list(lake.glob("event_type=big/**/*.parquet"))
    assert len(files) == 1, files
    return files[0]


def test_the_published_file_has_several_row_groups_each_with_its_own_range(big_lake):
    meta = pq.ParquetFile(the_file(big_lake)).metadata
    assert meta.num_rows == EVENTS and meta.num_row_groups == 2
    seq = [meta.row_group(g).column(meta.schema.names.index("seq")).statistics for g in range(2)]
    assert (seq[0].min, seq[0].max) == (0, 131_071)
    assert (seq[1].min, seq[1].max) == (131_072, EVENTS - 1)


FILTERS = [
    # (DuckDB condition, pyarrow expression, Python predicate)
    ("seq >= 140000", ds.field("seq") >= 140_000, lambda e: e["seq"] >= 140_000),
    ("seq < 1000", ds.field("seq") < 1000, lambda e: e["seq"] < 1000),
    ("score > 37000.5", ds.field("score") > 37_000.5, lambda e: e["score"] > 37_000.5),
    ("label >= 'l-0131070'", ds.field("label") >= "l-0131070", lambda e: e["label"] >= "l-0131070"),
    ("NOT early", ~ds.field("early"), lambda e: not e["early"]),
    ("sometimes < -149000", ds.field("sometimes") < -149_000,
     lambda e: "sometimes" in e and e["sometimes"] < -149_000),
    ("sometimes IS NULL AND seq > 149990", ds.field("sometimes").is_null() & (ds.field("seq") > 149_990),
     lambda e: "sometimes" not in e and e["seq"] > 149_990),
]


@pytest.mark.parametrize("sql,expr,pred", FILTERS, ids=[f[0] for f in FILTERS])
def test_duckdb_and_pyarrow_filter_on_payload_columns_without_losing_rows(big_lake, sql, expr, pred):
    expected = sorted(e["event_uuid"] for e in map(event, range(EVENTS)) if pred(e))
    assert expected, sql
    got = duckdb.sql(
        f"SELECT event_uuid FROM read_parquet('{big_lake}/**/*.parquet', hive_partitioning = true, "
        f"union_by_name = true) WHERE {sql} ORDER BY event_uuid"
    ).fetchall()
    assert [r[0] for r in got] == expected, f"DuckDB: {sql}"
    schema = pq.read_schema(big_lake / "_common_metadata")
    table = ds.dataset(big_lake, format="parquet", partitioning="hive", schema=schema).to_table(
        columns=["event_uuid"], filter=expr)
    assert sorted(table.column("event_uuid").to_pylist()) == expected, f"pyarrow: {sql}"
