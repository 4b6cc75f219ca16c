"""KPL-aggregated records, built by AWS's own aggregation library
(`aws_kinesis_agg`, the Python port of the KPL's format), through the real CLI
into a folder lake, read back with pyarrow.

Checked: a document of 250 events aggregated by the library lands 250 of 250;
plain records in the same batch stay as they are; a gzip-compressed user record
inside an aggregate is read like any other; a broken aggregate (MD5, cut short)
is dead-lettered whole with its original bytes and a reason naming the check;
a bad user record is dead-lettered with its shard, sequence and sub-sequence
number; ingesting the same document again writes nothing.

    .tools/venv/bin/pytest -q tests/kpl
"""

import base64
import gzip
import json
import os
import pathlib
import subprocess

import pyarrow.dataset as ds
import pytest
from aws_kinesis_agg.aggregator import RecordAggregator

ROOT = pathlib.Path(__file__).resolve().parents[2]
T0 = 1710670530  # 2024-03-17T10:15:30Z
SHARD = "shardId-000000000003"
ARN = "arn:aws:kinesis:eu-west-1:123456789012:stream/events"


def cli_binary():
    path = pathlib.Path(os.environ.get("KL_BIN", ROOT / "target" / "debug" / "kinesis-lake"))
    if not path.is_absolute():
        path = ROOT / path
    if not path.exists():
        pytest.fail(f"{path} does not exist: build it with `cargo build --bin kinesis-lake`")
    return path


def event(i, **extra):
    e = {"event_uuid": f"kpl-{i:04d}", "event_name": "lesson:started",
         "created_at": T0 + i, "n": i}
    e.update(extra)
    return json.dumps(e, separators=(",", ":")).encode()


def aggregates(payloads):
    """The library's aggregates of the payloads, as (partition key, bytes)."""
    agg = RecordAggregator()
    out = []
    for i, data in enumerate(payloads):
        full = agg.add_user_record(f"pk-{i % 5}", data)
        if full is not None:
            pk, _, body = full.get_contents()
            out.append((pk, body))
    if agg.get_num_user_records():
        pk, _, body = agg.clear_and_get().get_contents()
        out.append((pk, body))
    return out


def document(records):
    """A Lambda Kinesis event document of (sequence number, partition key, bytes)."""
    return {"Records": [{
        "eventID": f"{SHARD}:{seq}",
        "eventSourceARN": ARN,
        "eventSource": "aws:kinesis",
        "kinesis": {"data": base64.b64encode(data).decode(), "sequenceNumber": seq,
                    "partitionKey": pk, "approximateArrivalTimestamp": T0 + 0.5,
                    "kinesisSchemaVersion": "1.0"},
    } for seq, pk, data in records]}


def seq(n):
    return f"4959{n:052d}"


def ingest(lake, doc_path):
    out = subprocess.run([cli_binary(), "ingest", "--json", "--window", "0",
                          "--lake", lake, doc_path],
                         capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items()
                              if k not in ("CREATED_AT_UNIT", "PUBLISH_WINDOW_SECONDS")})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def lake_uuids(lake):
    files = sorted(pathlib.Path(lake).rglob("*.parquet"))
    if not files:
        return []
    table = ds.dataset([str(f) for f in files], format="parquet").to_table(columns=["event_uuid"])
    return sorted(table.column("event_uuid").to_pylist())


def dead_letters(lake):
    out = []
    for f in sorted(pathlib.Path(lake, "_errors").rglob("*.ndjson")):
        out += [json.loads(line) for line in f.read_text().splitlines()]
    return out


def test_250_aggregated_events_land_250_and_once(tmp_path):
    payloads = [event(i) for i in range(250)]
    aggs = aggregates(payloads)
    assert len(aggs) >= 1 and all(b[:4] == b"\xf3\x89\x9a\xc2" for _, b in aggs)
    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps(document([(seq(i), pk, b) for i, (pk, b) in enumerate(aggs)])))
    lake = str(tmp_path / "lake")
    s = ingest(lake, doc)
    assert (s["records"], s["written"], s["rejected"], s["failed"]) == (250, 250, 0, 0), s
    assert lake_uuids(lake) == sorted(f"kpl-{i:04d}" for i in range(250))
    again = ingest(lake, doc)
    assert (again["written"], again["duplicates"]) == (0, 250), again
    assert len(lake_uuids(lake)) == 250


def test_plain_gzip_and_bad_records_beside_aggregates(tmp_path):
    good = [event(i) for i in range(3)]
    inner_gzip = gzip.compress(event(3), mtime=0)
    bad_user = b"{not json"
    (_, agg), = aggregates(good + [inner_gzip, bad_user])
    (_, broken), = aggregates([event(10), event(11)])
    broken = broken[:-1] + bytes([broken[-1] ^ 0xFF])  # the MD5 trailer
    (_, cut), = aggregates([event(12)])
    cut = cut[:-20]  # cut short: no longer its MD5
    plain = event(20)
    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps(document([
        (seq(1), "p", plain), (seq(2), "a", agg), (seq(3), "b", broken), (seq(4), "c", cut)])))
    lake = str(tmp_path / "lake")
    s = ingest(lake, doc)
    # plain 1 + 5 user records + 2 whole aggregates dead-lettered
    assert (s["records"], s["written"], s["rejected"]) == (8, 5, 3), s
    assert lake_uuids(lake) == ["kpl-0000", "kpl-0001", "kpl-0002", "kpl-0003", "kpl-0020"]
    letters = {(d["origin"]["sequence_number"], d["origin"].get("sub_sequence_number")): d
               for d in dead_letters(lake)}
    assert set(letters) == {(seq(2), 4), (seq(3), None), (seq(4), None)}, letters
    user = letters[(seq(2), 4)]
    assert user["reason_code"] == "invalid_json"
    assert base64.b64decode(user["data_base64"]) == bad_user
    assert user["origin"]["shard_id"] == SHARD
    whole = letters[(seq(3), None)]
    assert whole["reason_code"] == "bad_aggregate"
    assert "MD5" in whole["reason"]
    assert base64.b64decode(whole["data_base64"]) == broken
    assert letters[(seq(4), None)]["reason_code"] == "bad_aggregate"
    assert base64.b64decode(letters[(seq(4), None)]["data_base64"]) == cut
    again = ingest(lake, doc)
    assert (again["written"], again["dead_letter_files"]) == (0, 0), again
    assert len(dead_letters(lake)) == 3


def test_explicit_hash_keys_and_many_partition_keys(tmp_path):
    agg = RecordAggregator()
    for i in range(40):
        agg.add_user_record(f"key-{i}", event(100 + i),
                            explicit_hash_key=str(i * 1000) if i % 3 == 0 else None)
    pk, _, body = agg.clear_and_get().get_contents()
    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps(document([(seq(1), pk, body)])))
    lake = str(tmp_path / "lake")
    s = ingest(lake, doc)
    assert (s["records"], s["written"]) == (40, 40), s
