"""The Iceberg table over the lake (`--table-format iceberg`), read by Iceberg
readers: pyiceberg (a static table from the lake's own catalog, and the table
in SeaweedFS's Iceberg REST catalog) and DuckDB's iceberg extension. Each
reads every event exactly once, the same events the Hive-style folders hold;
the statistics each data file entry carries are those of the file's values;
a publisher run again after a commit does not append the window twice.

DuckDB's iceberg extension ships on PyPI for DuckDB 1.4.4 only: it runs in a
subprocess with `.tools/duckdb-iceberg` (scripts/setup-tools.sh) on its path.
The REST test needs SeaweedFS started by `scripts/testenv.py run`
(KL_TEST_ICEBERG_REST); `make test` runs it so.
"""
import datetime
import gzip
import json
import os
import pathlib
import subprocess
import sys
import time

import duckdb
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pyiceberg.table import StaticTable

from conftest import (CASE_COLUMNS, CASE_EVENTS, DRIFT_EVENTS, FIXTURES, ROOT, clear_of_window_end,
                      cli_binary, demo_events)

DUCKDB_ICEBERG = ROOT / ".tools" / "duckdb-iceberg"


def run(*args, env=None, check=True):
    r = subprocess.run([str(cli_binary()), *map(str, args)], capture_output=True, text=True,
                       timeout=600, env=env)
    if check:
        assert r.returncode == 0, f"{args}: {r.stderr}"
    return r


def ingest_iceberg(lake, *inputs):
    run("ingest", "--lake", lake, "--table-format", "iceberg", "--json", *inputs)


def static_table(lake: pathlib.Path) -> StaticTable:
    """The table as the lake's catalog holds it now: its latest metadata file."""
    folder = lake / "_iceberg" / "metadata"
    latest = max(folder.glob("v*.metadata.json"), key=lambda p: int(p.name[1:].split(".")[0]))
    return StaticTable.from_metadata(str(latest))


def hive_uuids(lake: pathlib.Path):
    """Every event_uuid a Hive-style reader sees in the lake's folders."""
    con = duckdb.connect()
    return [r[0] for r in con.execute(
        "SELECT event_uuid FROM read_parquet(?, hive_partitioning = true, union_by_name = true)",
        [f"{lake}/event_type=*/**/*.parquet"]).fetchall()]


@pytest.fixture(scope="session")
def iceberg_lake(tmp_path_factory) -> pathlib.Path:
    """The demo events in one run, then the drift events one run each (each
    run a generation of its own: a snapshot each, the schema growing run by
    run), all committed to the lake's own Iceberg catalog."""
    work = tmp_path_factory.mktemp("iceberg")
    lake = work / "lake"
    clear_of_window_end()
    ingest_iceberg(lake, FIXTURES / "demo-events.ndjson.gz")
    for i, e in enumerate(DRIFT_EVENTS):
        src = work / f"drift-{i}.ndjson"
        src.write_text(json.dumps(e) + "\n")
        ingest_iceberg(lake, src)
    return lake


def expected_uuids():
    return set(demo_events()) | {e["event_uuid"] for e in DRIFT_EVENTS}


def test_pyiceberg_reads_every_event_once(iceberg_lake):
    table = static_table(iceberg_lake)
    rows = table.scan().to_arrow()
    uuids = rows.column("event_uuid").to_pylist()
    assert len(uuids) == len(set(uuids)), "an event read twice"
    assert set(uuids) == expected_uuids()
    assert sorted(uuids) == sorted(hive_uuids(iceberg_lake))
    # partition columns come from the partition values (the files do not hold them)
    by_uuid = {r["event_uuid"]: r for r in rows.select(
        ["event_uuid", "event_type", "event_subtype", "event_date"]).to_pylist()}
    d7 = by_uuid["d7"]
    assert (d7["event_type"], d7["event_subtype"]) == ("cart", None)
    assert d7["event_date"] == datetime.date(2024, 3, 17)


def test_the_schema_grew_with_stable_field_ids(iceberg_lake):
    table = static_table(iceberg_lake)
    schemas = table.schemas()
    assert len(schemas) > 1, "the drift runs added columns"
    ids = {}
    for schema in schemas.values():
        for f in schema.fields:
            assert ids.setdefault(f.name, f.field_id) == f.field_id, f"{f.name} changed id"
    current = {f.name for f in table.schema().fields}
    assert {"note", "amount__v_json", "items"} <= current
    note = table.scan(row_filter="event_uuid == 'd8'", selected_fields=("note",)).to_arrow()
    assert note.column("note").to_pylist() == ["late field"]


def test_one_snapshot_per_generation_with_its_window(iceberg_lake):
    table = static_table(iceberg_lake)
    snaps = table.snapshots()
    keys = [(s.summary["kinesis-lake.window"], s.summary["kinesis-lake.generation"]) for s in snaps]
    assert len(keys) == len(set(keys)) == 1 + len(DRIFT_EVENTS)
    done = sorted(p for p in (iceberg_lake / "_publish").glob("window=*/g*.done.json"))
    assert len(done) == len(keys)


def test_a_publisher_that_died_after_committing_does_not_append_again(tmp_path):
    """The done record is written after the commit. The state a publisher
    leaves when it dies between the two (plan, files, snapshot, staging
    objects; no done record) is rebuilt here from a finished run; the next
    run carries the plan out again and finds the window's snapshot."""
    lake = tmp_path / "lake"
    src = tmp_path / "events.ndjson"
    src.write_text("".join(json.dumps(e) + "\n" for e in DRIFT_EVENTS[:4]))
    clear_of_window_end()
    run("ingest", "--lake", lake, "--table-format", "iceberg", "--no-publish", "--json", src)
    staged = {p: p.read_bytes() for p in (lake / "_staging").rglob("*") if p.is_file()}
    run("publish", "--lake", lake, "--table-format", "iceberg", "--json")
    (done,) = (lake / "_publish").glob("window=*/g*.done.json")
    assert len(static_table(lake).snapshots()) == 1
    # the publisher "died" after its commit: staging objects back, no done record
    done.unlink()
    for p, body in staged.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(body)
    run("publish", "--lake", lake, "--table-format", "iceberg", "--json")
    assert done.exists(), "the re-run finished the publication"
    table = static_table(lake)
    assert len(table.snapshots()) == 1, "the window was appended twice"
    uuids = table.scan().to_arrow().column("event_uuid").to_pylist()
    assert sorted(uuids) == sorted(e["event_uuid"] for e in DRIFT_EVENTS[:4])


def test_a_lake_with_a_table_is_not_published_without_it(tmp_path):
    """A run without --table-format iceberg (a replay, a forgotten flag) would
    leave its windows out of the table: it stages, refuses to publish, and
    the next run with the table's settings publishes and commits them."""
    lake = tmp_path / "lake"
    first, second = tmp_path / "a.ndjson", tmp_path / "b.ndjson"
    first.write_text(json.dumps(DRIFT_EVENTS[0]) + "\n")
    second.write_text(json.dumps(DRIFT_EVENTS[1]) + "\n")
    ingest_iceberg(lake, first)
    r = run("ingest", "--lake", lake, "--json", second, check=False)
    assert r.returncode != 0 and "keeps an Iceberg table" in r.stderr, r.stderr
    assert sorted(hive_uuids(lake)) == ["d1"], "nothing published without the table"
    run("publish", "--lake", lake, "--table-format", "iceberg", "--json")
    uuids = static_table(lake).scan().to_arrow().column("event_uuid").to_pylist()
    assert sorted(uuids) == sorted(hive_uuids(lake)) == ["d1", "d2"]


def test_names_that_differ_only_in_case_read_back_under_their_columns(tmp_path):
    """The lake gives `Country` and `country` columns of their own (`country_`):
    through the table each value reads back under its column."""
    lake = tmp_path / "lake"
    src = tmp_path / "case.ndjson"
    src.write_text("".join(json.dumps(e) + "\n" for e in CASE_EVENTS))
    ingest_iceberg(lake, src)
    rows = {r["event_uuid"]: r for r in static_table(lake).scan().to_arrow().to_pylist()}
    assert sorted(rows) == sorted(e["event_uuid"] for e in CASE_EVENTS)
    for e in CASE_EVENTS:
        for field, column in CASE_COLUMNS.items():
            if field in e:
                assert rows[e["event_uuid"]][column] in (e[field], str(e[field])), (field, column)


def test_each_files_statistics_are_those_of_its_values(iceberg_lake):
    """Wrong bounds make engines skip files silently: every column of every
    data file, of every type, against the file's own values."""
    table = static_table(iceberg_lake)
    files = table.inspect.files().to_pylist()
    assert len(files) > 100
    kinds_seen = set()
    for entry in files:
        path = entry["file_path"].removeprefix("file://")
        data = pq.read_table(path)
        assert entry["record_count"] == data.num_rows
        assert entry["file_size_in_bytes"] == os.path.getsize(path)
        metrics = entry["readable_metrics"]
        for name in data.column_names:
            col = data.column(name)
            m = metrics[name]
            assert m["value_count"] == len(col), (path, name)
            assert m["null_value_count"] == col.null_count, (path, name)
            present = col.drop_null()
            if len(present) == 0:
                assert m["lower_bound"] is None and m["upper_bound"] is None
                continue
            kinds_seen.add(str(col.type))
            if m["lower_bound"] is None:
                # left out (long strings): allowed, never wrong
                assert str(col.type) == "string", (path, name)
                continue
            lo, hi = pc.min(present).as_py(), pc.max(present).as_py()
            assert (m["lower_bound"], m["upper_bound"]) == (lo, hi), (path, name)
    assert {"string", "int64", "double", "bool"} <= kinds_seen


def test_duckdb_reads_the_table_with_its_iceberg_extension(iceberg_lake):
    if not (DUCKDB_ICEBERG / "duckdb_ext").is_dir():
        pytest.fail(f"{DUCKDB_ICEBERG} is missing: run bash scripts/setup-tools.sh")
    script = """
import json, sys, duckdb
lake, ext = sys.argv[1], sys.argv[2]
con = duckdb.connect(config={"extension_directory": ext, "autoinstall_known_extensions": False})
con.execute("LOAD iceberg")
t = f"iceberg_scan('{lake}/_iceberg')"
rows = con.execute(f"SELECT event_uuid FROM {t}").fetchall()
amount = con.execute(f"SELECT count(*) FROM {t} WHERE event_type = 'payment' AND amount > 6").fetchone()[0]
print(json.dumps({"version": duckdb.__version__, "uuids": [r[0] for r in rows], "amount_over_6": amount}))
"""
    r = subprocess.run(
        [sys.executable, "-c", script, str(iceberg_lake), str(DUCKDB_ICEBERG / "duckdb_ext" / "extensions")],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(DUCKDB_ICEBERG)})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["version"] == "1.4.4"
    assert len(out["uuids"]) == len(set(out["uuids"]))
    assert set(out["uuids"]) == expected_uuids()
    # the same filtered read through the folders (payload column, pruned partitions)
    con = duckdb.connect()
    hive = con.execute(
        "SELECT count(*) FROM read_parquet(?, hive_partitioning = true, union_by_name = true) "
        "WHERE event_type = 'payment' AND amount > 6",
        [f"{iceberg_lake}/event_type=*/**/*.parquet"]).fetchone()[0]
    assert out["amount_over_6"] == hive > 0


# ------------------------------------------------------------------ REST catalog

def rest_env():
    if "KL_TEST_ICEBERG_REST" not in os.environ:
        pytest.skip("needs SeaweedFS's Iceberg REST catalog: run under scripts/testenv.py (make test)")
    return os.environ


def rest_args(sigv4=False):
    """The catalog's flags: OAuth client credentials, or SigV4 signing with
    the AWS SDK's credentials as AWS's endpoints take (SeaweedFS takes both)."""
    env = rest_env()
    auth = (["--iceberg-sigv4-service", "s3tables"] if sigv4 else
            ["--iceberg-credential", f"{env['AWS_ACCESS_KEY_ID']}:{env['AWS_SECRET_ACCESS_KEY']}"])
    return ["--table-format", "iceberg",
            "--iceberg-rest-uri", env["KL_TEST_ICEBERG_REST"],
            "--iceberg-warehouse", env["KL_TEST_ICEBERG_WAREHOUSE"],
            *auth, "--iceberg-namespace", "kl_test", "--iceberg-table", "events"]


def rest_catalog():
    from pyiceberg.catalog.rest import RestCatalog
    env = rest_env()
    key, secret = env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    return RestCatalog(
        "seaweedfs", uri=env["KL_TEST_ICEBERG_REST"], warehouse=env["KL_TEST_ICEBERG_WAREHOUSE"],
        credential=f"{key}:{secret}", **{"oauth2-server-uri": env["KL_TEST_ICEBERG_REST"] + "/v1/oauth/tokens"},
        **{"s3.endpoint": env["KL_TEST_S3_ENDPOINT"], "s3.access-key-id": key,
           "s3.secret-access-key": secret, "s3.region": env.get("AWS_REGION", "us-east-1"),
           "s3.path-style-access": "true"})


def wait_for_table_bucket():
    """SeaweedFS creates its table bucket just after it starts serving."""
    for _ in range(100):
        try:
            rest_catalog().list_namespaces()
            return
        except Exception:  # noqa: BLE001 - not ready yet
            time.sleep(0.2)
    pytest.fail("SeaweedFS's Iceberg catalog never served its table bucket")


def test_rest_catalog_two_publishers_commit_each_window_once(tmp_path):
    """An s3:// lake (the table bucket is SeaweedFS's, as S3 Tables': the
    catalog chooses the table's location and the data files go there), two
    publishers at once (one authenticated with OAuth, one signing with
    SigV4), then a third run: one snapshot per window, every event once,
    through pyiceberg's REST client."""
    env = rest_env()
    wait_for_table_bucket()
    import pyarrow.fs as pafs
    s3 = pafs.S3FileSystem(endpoint_override=env["KL_TEST_S3_ENDPOINT"], scheme="http",
                           access_key=env["AWS_ACCESS_KEY_ID"], secret_key=env["AWS_SECRET_ACCESS_KEY"],
                           region=env.get("AWS_REGION", "us-east-1"), allow_bucket_creation=True)
    s3.create_dir("iceberg-lake")
    lake = "s3://iceberg-lake/rest"
    src = tmp_path / "events.ndjson"
    with gzip.open(FIXTURES / "demo-events.ndjson.gz", "rt") as f:
        lines = f.readlines()[:3000]
    src.write_text("".join(lines))
    expected = {json.loads(l)["event_uuid"] for l in lines}
    window = ["--window", "60"]
    run("ingest", "--lake", lake, "--dedup", "window", *window, "--no-publish", "--json", src)
    # the window closes (an s3:// lake publishes closed windows only)
    time.sleep(60 - time.time() % 60 + 1)
    publish = [str(cli_binary()), "publish", "--lake", lake, *window, "--grace-seconds", "0", "--json"]
    # one racer with OAuth client credentials, the other signing with SigV4.
    # The second starts once the first has created the table: SeaweedFS
    # answers 200 to both of two concurrent creates of one table (measured;
    # AWS's catalogs answer 409 to one, which the publisher handles by
    # loading the winner's), so racing creations would test the server. The
    # two still race their commits: each plans on the table before either
    # has committed (the first is encoding its files meanwhile).
    def start(sigv4):
        return subprocess.Popen(publish + rest_args(sigv4), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    racers = [start(False)]
    for _ in range(300):
        if rest_catalog().table_exists("kl_test.events") or racers[0].poll() is not None:
            break
        time.sleep(0.05)
    racers.append(start(True))
    for p in racers:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    run(*publish[1:], *rest_args())
    table = rest_catalog().load_table("kl_test.events")
    windows = [s.summary["kinesis-lake.window"] for s in table.snapshots()]
    assert len(windows) == len(set(windows)) >= 1
    uuids = table.scan().to_arrow().column("event_uuid").to_pylist()
    assert len(uuids) == len(set(uuids)), "an event read twice"
    assert set(uuids) == expected
    # the catalog chose the location: the data files are in its bucket
    assert table.location().startswith(env["KL_TEST_ICEBERG_WAREHOUSE"])
    paths = table.inspect.files().column("file_path").to_pylist()
    assert paths and all(p.startswith(table.location() + "/data/event_type=") for p in paths)
