"""End to end with a real Kinesis stream: kinesalite -> Lambda event documents ->
the real CLI -> the real S3 (SeaweedFS) + DynamoDB (DynamoDB Local) lake.

A 2-shard stream gets ~200 generated events (several event types, some records
gzip-compressed, a few invalid records, and producer re-sends of the same
event_uuid under another partition key, so that they land on the OTHER shard).
Each shard is read back with GetShardIterator (TRIM_HORIZON) + GetRecords and
cut into Lambda Kinesis event documents exactly as Lambda delivers them
(at most 50 records per batch), which `kinesis-lake ingest --lake s3://...
--dedup-table ...` then ingests. Checked: the summary accounts for every record;
every valid event_uuid is in the lake exactly once, in its partition folder;
every invalid record is dead-lettered once with its shard and sequence number;
running the same command again writes nothing; delivering the same records
again in another batch split (Lambda retries with bisection and checkpoint
resumes, one CLI run per batch) writes nothing either.

Run inside the test servers (with kinesalite):
    python3 scripts/testenv.py run --with-kinesis -- .tools/venv/bin/pytest -q tests/stream
"""

import base64
import collections
import datetime
import decimal
import gzip
import hashlib
import importlib.util
import io
import json
import os
import pathlib
import random
import subprocess
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET

import pyarrow.parquet as pq
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PREFIX = "lake"
BATCH = 50  # Lambda's batch size for this test (BatchSize: 50)
T0 = 1710670530  # 2024-03-17T10:15:30Z
MIDNIGHT = 1710720000  # 2024-03-18T00:00:00Z
RUN_HINT = ("python3 scripts/testenv.py run --with-kinesis -- "
            ".tools/venv/bin/pytest -q tests/stream")

_spec = importlib.util.spec_from_file_location("testenv", ROOT / "scripts" / "testenv.py")
testenv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(testenv)


def env(name):
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run inside the test servers, with kinesalite: {RUN_HINT}")
    return value


def cli_binary():
    path = pathlib.Path(os.environ.get("KL_BIN", ROOT / "target" / "debug" / "kinesis-lake"))
    if not path.is_absolute():
        path = ROOT / path
    if not path.exists():
        pytest.fail(f"{path} does not exist: build it with `cargo build --bin kinesis-lake`")
    return path


# --------------------------------------------------------------------------- AWS calls


def kinesis(endpoint, op, payload):
    status, out = testenv.json_api(endpoint, "kinesis", f"Kinesis_20131202.{op}", payload,
                                   content_type="application/x-amz-json-1.1", timeout=30)
    assert status == 200, f"Kinesis {op}: HTTP {status}: {str(out)[:500]}"
    return out


def dynamodb(endpoint, op, payload):
    status, out = testenv.json_api(endpoint, "dynamodb", f"DynamoDB_20120810.{op}", payload,
                                   timeout=30)
    assert status == 200, f"DynamoDB {op}: HTTP {status}: {str(out)[:500]}"
    return out


def wait_for(what, check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.05)


def s3_keys(endpoint, bucket):
    keys, token = [], None
    while True:
        query = {"list-type": "2"}
        if token:
            query["continuation-token"] = token
        status, _, body = testenv.aws_request("GET", endpoint, "s3", path=f"/{bucket}",
                                              query=query, timeout=30)
        assert status == 200, f"listing {bucket}: HTTP {status}: {body[:300]!r}"
        root = ET.fromstring(body)
        ns = root.tag.split("}")[0] + "}" if root.tag.startswith("{") else ""
        keys += [c.find(f"{ns}Key").text for c in root.findall(f"{ns}Contents")]
        token = root.findtext(f"{ns}NextContinuationToken")
        if root.findtext(f"{ns}IsTruncated") != "true" or not token:
            return sorted(keys)


def s3_get(endpoint, bucket, key):
    status, _, body = testenv.aws_request("GET", endpoint, "s3", path=f"/{bucket}/{key}", timeout=30)
    assert status == 200, f"get {key}: HTTP {status}: {body[:300]!r}"
    return body


# --------------------------------------------------------------------------- the events


def gz(data):
    return gzip.compress(data, mtime=0)


def expected_partition(event):
    """(event_type, event_subtype or None, event_date) as the README defines them,
    computed from the JSON text of created_at (no float rounding)."""
    parts = event["event_name"].split(":")
    subtype = parts[1] if len(parts) > 1 and parts[1] else None
    seconds = decimal.Decimal(event["_created_at_text"]).to_integral_value(decimal.ROUND_FLOOR)
    day = (datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
           + datetime.timedelta(seconds=int(seconds))).date().isoformat()
    return parts[0], subtype, day


TYPES = ["account:created", "account:deleted", "lesson:started", "lesson:completed",
         "payment:order:completed", "payment:refund", "video:watch", "search", "quiz:"]

INVALID = [  # (data, reason_code)
    (b"this is not json", "invalid_json"),
    (gz(b'{"event_uuid": "inv-0", "event_name": "a:b", "created_at": '), "invalid_json"),
    (b"[1, 2, 3]", "not_an_object"),
    (json.dumps({"event_name": "a:b", "created_at": T0}).encode(), "missing_field"),
    (json.dumps({"event_uuid": "", "event_name": "a:b", "created_at": T0}).encode(), "empty_event_uuid"),
    (json.dumps({"event_uuid": "inv-1", "event_name": ":b", "created_at": T0}).encode(), "empty_event_type"),
    (json.dumps({"event_uuid": "inv-2", "event_name": "a:b", "created_at": str(T0)}).encode(), "wrong_type"),
    (gz(json.dumps({"event_uuid": "inv-3", "event_name": "a:b", "created_at": T0 * 1000}).encode()),
     "created_at_not_seconds"),
    (json.dumps({"event_uuid": "inv-4", "event_name": "a:b", "created_at": -10**12}).encode(),
     "created_at_out_of_range"),
    (b"\x1f\x8b\x08\x00garbage", "bad_gzip"),
]


def generate(rnd, shard_of, n_valid=176, n_cross=12, n_same=2):
    """The records to put, in put order: dicts with data, pk, kind and expectations."""
    valid = []
    for k in range(n_valid):
        name = TYPES[k % len(TYPES)]
        if k == 0:
            created = f"{MIDNIGHT - 1}.999"  # last millisecond of 2024-03-17
        elif k == 1:
            created = str(MIDNIGHT)  # first second of 2024-03-18
        elif k == 2:
            created = "-0.5"  # 1969-12-31T23:59:59.500Z
        elif k % 3 == 0:
            created = str(T0 + k * 3607)
        else:
            created = f"{T0 + k * 3607}.{rnd.randint(1, 999):03d}"
        event_uuid = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
        text = (f'{{"event_uuid": "{event_uuid}", "event_name": "{name}", "created_at": {created}, '
                f'"user_id": {rnd.randint(1, 10**6)}, "amount": {rnd.randint(100, 50000) / 100}, '
                f'"country": "{rnd.choice(["DE", "FR", "US", "BR", "IN"])}", '
                f'"is_mobile": {json.dumps(rnd.random() < 0.5)}, '
                f'"context": {{"session": {rnd.getrandbits(32)}, "page": "/p/{rnd.randint(1, 50)}"}}}}')
        event = json.loads(text)
        event["_created_at_text"] = created
        compressed = rnd.random() < 0.25
        data = gz(text.encode()) if compressed else text.encode()
        valid.append({"kind": "valid", "uuid": event_uuid, "event": event, "text": text,
                      "gzip": compressed, "data": data, "pk": f"user-{rnd.randint(1, 60)}"})

    records = list(valid)
    # an invalid record that names a valid event's uuid must not disturb that event
    clash = json.dumps({"event_uuid": valid[5]["uuid"], "event_name": "a:b",
                        "created_at": str(T0)}).encode()
    invalid = INVALID + [(clash, "wrong_type")]
    for data, code in invalid:
        records.insert(rnd.randrange(len(records) + 1),
                       {"kind": "invalid", "code": code, "data": data,
                        "pk": f"user-{rnd.randint(1, 60)}"})
    # the same invalid record sent twice, on both shards: two dead letters
    inv = next(r for r in records if r["kind"] == "invalid" and r["code"] == "missing_field")
    records.insert(position(records, inv) + 1 + rnd.randrange(10),
                   dict(inv, pk=other_shard_key(shard_of, inv["pk"], "inv")))

    # producer re-sends: the same event (compressed the other way), later in time
    for j, orig in enumerate(rnd.sample(valid, n_cross + n_same)):
        cross = j < n_cross
        pk = other_shard_key(shard_of, orig["pk"], orig["uuid"]) if cross else orig["pk"]
        data = orig["text"].encode() if orig["gzip"] else gz(orig["text"].encode())
        resend = dict(orig, data=data, gzip=not orig["gzip"], pk=pk, resend=True, cross=cross)
        at = position(records, orig) + 1 + rnd.randrange(40)
        records.insert(min(at, len(records)), resend)
    return records


def position(records, rec):
    return next(i for i, r in enumerate(records) if r is rec)


def other_shard_key(shard_of, pk, salt):
    for i in range(1000):
        candidate = f"resend-{salt}-{i}"
        if shard_of(candidate) != shard_of(pk):
            return candidate
    raise AssertionError("no partition key for the other shard")


# --------------------------------------------------------------------------- Lambda documents


def lambda_record(rec, shard_id, stream_arn, region, account):
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": rec["PartitionKey"],
            "sequenceNumber": rec["SequenceNumber"],
            "data": rec["Data"],
            "approximateArrivalTimestamp": float(rec["ApproximateArrivalTimestamp"]),
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{rec['SequenceNumber']}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": f"arn:aws:iam::{account}:role/kinesis-lake-consumer",
        "awsRegion": region,
        "eventSourceARN": stream_arn,
    }


def write_documents(folder, batches):
    """batches: [(shard_id, [lambda records])]; one file per batch, in delivery order."""
    folder.mkdir(parents=True)
    paths = []
    for n, (shard_id, recs) in enumerate(batches):
        assert 1 <= len(recs) <= BATCH
        path = folder / f"batch-{n:03d}-{shard_id}.json"
        path.write_text(json.dumps({"Records": recs}, indent=1))
        paths.append(path)
    return paths


def retry_split(records):
    """The same shard's records delivered again as Lambda does on errors: each batch of
    50 bisected (BisectBatchOnFunctionError: halves, and the first half halved again),
    then a checkpoint resume (ReportBatchItemFailures) that restarts mid-batch."""
    out = []
    for start in range(0, len(records), BATCH):
        batch = records[start:start + BATCH]
        half = len(batch) // 2
        quarter = half // 2
        for piece in (batch[:quarter], batch[quarter:half], batch[half:]):
            if piece:
                out.append(piece)
    resume = min(20, len(records) - 1)
    out.append(records[resume:resume + BATCH])
    return out


# --------------------------------------------------------------------------- the fixture


def run_cli(bucket, table, *inputs):
    cmd = [str(cli_binary()), "ingest", "--lake", f"s3://{bucket}/{PREFIX}",
           "--dedup-table", table, "--json", "--no-progress", *map(str, inputs)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (f"{' '.join(cmd)} exited with {r.returncode}\n"
                               f"stdout: {r.stdout[-3000:]}\nstderr: {r.stderr[-3000:]}")
    lines = [l for l in r.stdout.splitlines() if l.strip()]
    assert len(lines) == 1, f"--json prints one line, got:\n{r.stdout}"
    return json.loads(lines[0])


@pytest.fixture(scope="module")
def stream_lake(tmp_path_factory):
    s3 = env("KL_TEST_S3_ENDPOINT")
    ddb = env("KL_TEST_DYNAMODB_ENDPOINT")
    kin = env("KL_TEST_KINESIS_ENDPOINT")
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ACCESS_KEY_ID",
                 "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        env(name)  # the CLI reads these
    region = os.environ["AWS_REGION"]
    cli_binary()
    name = f"kl-stream-{uuid.uuid4().hex[:12]}"
    tmp = tmp_path_factory.mktemp("stream")

    # the stream: 2 shards
    kinesis(kin, "CreateStream", {"StreamName": name, "ShardCount": 2})
    def active_stream():
        d = kinesis(kin, "DescribeStream", {"StreamName": name})["StreamDescription"]
        return d if d["StreamStatus"] == "ACTIVE" else None

    desc = wait_for("stream ACTIVE", active_stream)
    shards = desc["Shards"]
    assert len(shards) == 2, shards
    stream_arn = desc["StreamARN"]
    account = stream_arn.split(":")[4]

    def shard_of(pk):
        h = int(hashlib.md5(pk.encode()).hexdigest(), 16)
        (sid,) = [s["ShardId"] for s in shards
                  if int(s["HashKeyRange"]["StartingHashKey"]) <= h
                  <= int(s["HashKeyRange"]["EndingHashKey"])]
        return sid

    # the producer
    rnd = random.Random(20240317)
    records = generate(rnd, shard_of)
    put_at = 0
    while put_at < len(records):
        chunk = records[put_at:put_at + rnd.randint(5, 40)]
        out = kinesis(kin, "PutRecords", {"StreamName": name, "Records": [
            {"Data": base64.b64encode(r["data"]).decode(), "PartitionKey": r["pk"]} for r in chunk]})
        assert out.get("FailedRecordCount", 0) == 0, out
        for r, res in zip(chunk, out["Records"], strict=True):
            r["shard_id"], r["seq"] = res["ShardId"], res["SequenceNumber"]
            assert r["shard_id"] == shard_of(r["pk"]), (r["pk"], res)
        put_at += len(chunk)
    by_origin = {(r["shard_id"], r["seq"]): r for r in records}
    assert len(by_origin) == len(records)

    # the consumer side of the stream: every shard from TRIM_HORIZON
    read = {}
    for shard in shards:
        sid = shard["ShardId"]
        it = kinesis(kin, "GetShardIterator", {"StreamName": name, "ShardId": sid,
                                               "ShardIteratorType": "TRIM_HORIZON"})["ShardIterator"]
        got = []
        while it:
            out = kinesis(kin, "GetRecords", {"ShardIterator": it, "Limit": 37})
            got += out["Records"]
            if not out["Records"]:
                break
            it = out.get("NextShardIterator")
        read[sid] = got
    assert sum(map(len, read.values())) == len(records)
    for sid, got in read.items():
        seqs = [int(g["SequenceNumber"]) for g in got]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), f"{sid} out of order"
        for g in got:
            r = by_origin[(sid, g["SequenceNumber"])]
            assert base64.b64decode(g["Data"]) == r["data"]
            r["arrival"] = g["ApproximateArrivalTimestamp"]

    # the documents Lambda would deliver, in batches of at most 50 per shard
    lambda_recs = {sid: [lambda_record(g, sid, stream_arn, region, account) for g in got]
                   for sid, got in read.items()}
    first = write_documents(tmp / "first", [
        (sid, recs[i:i + BATCH]) for sid, recs in lambda_recs.items()
        for i in range(0, len(recs), BATCH)])
    # the retry delivery: another split, shards interleaved as parallel pollers would
    splits = {sid: retry_split(recs) for sid, recs in lambda_recs.items()}
    interleaved = []
    for n in range(max(map(len, splits.values()))):
        interleaved += [(sid, s[n]) for sid, s in splits.items() if n < len(s)]
    retry = write_documents(tmp / "retry", interleaved)

    # the lake's bucket and dedup table
    status, _, body = testenv.aws_request("PUT", s3, "s3", path=f"/{name}", timeout=30)
    assert status == 200, f"CreateBucket {name}: HTTP {status}: {body[:300]!r}"
    dynamodb(ddb, "CreateTable", {
        "TableName": name,
        "AttributeDefinitions": [{"AttributeName": "event_uuid", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "event_uuid", "KeyType": "HASH"}],
        "BillingMode": "PAY_PER_REQUEST",
    })
    wait_for("table ACTIVE", lambda: dynamodb(ddb, "DescribeTable", {"TableName": name})
             ["Table"]["TableStatus"] == "ACTIVE")

    summary = run_cli(name, name, tmp / "first")
    return {
        "s3": s3, "bucket": name, "table": name, "stream": name, "records": records,
        "first_dir": tmp / "first", "first_docs": first, "retry_docs": retry,
        "summary": summary, "keys_after_first": s3_keys(s3, name),
    }


def valid_uuids(records):
    return {r["uuid"] for r in records if r["kind"] == "valid"}


def expected_counts(records):
    n_valid = sum(r["kind"] == "valid" for r in records)
    n_invalid = sum(r["kind"] == "invalid" for r in records)
    return len(records), n_valid, n_invalid


def lake_objects(lake):
    """Every object of the bucket, sorted into data files, dead letters and schemas;
    anything that is none of these nor the staging and publication bookkeeping is
    `other`."""
    data, errors, schemas, other = [], [], [], []
    for key in s3_keys(lake["s3"], lake["bucket"]):
        if key.startswith(f"{PREFIX}/event_type=") and key.endswith(".parquet"):
            data.append(key)
        elif key.startswith(f"{PREFIX}/_errors/") and key.endswith(".ndjson"):
            errors.append(key)
        elif key.startswith(f"{PREFIX}/_schemas/") and key.endswith(".json"):
            schemas.append(key)
        elif (key.startswith((f"{PREFIX}/_staging/window=", f"{PREFIX}/_publish/"))
              or key == f"{PREFIX}/_common_metadata"):
            pass  # staged batches, the publisher's records, the schema summary
        else:
            other.append(key)
    return data, errors, schemas, other


def dead_letters(lake, error_keys):
    lines = []
    for key in error_keys:
        for line in s3_get(lake["s3"], lake["bucket"], key).splitlines():
            if line.strip():
                lines.append((key, json.loads(line)))
    return lines


# --------------------------------------------------------------------------- the tests


def test_the_stream_carries_every_kind_of_record(stream_lake):
    recs = stream_lake["records"]
    shards = {r["shard_id"] for r in recs}
    assert len(shards) == 2
    cross = [r for r in recs if r.get("resend") and r["cross"]]
    assert len(cross) >= 10
    for r in cross:
        orig = next(o for o in recs if o["kind"] == "valid" and o["uuid"] == r["uuid"]
                    and not o.get("resend"))
        assert r["shard_id"] != orig["shard_id"], "a cross-shard re-send landed on the same shard"
    assert sum(r["kind"] == "invalid" for r in recs) >= 10
    assert sum(bool(r.get("gzip")) for r in recs) >= 30
    assert 180 <= len(recs) <= 220


def test_summary_accounts_for_every_record(stream_lake):
    s, recs = stream_lake["summary"], stream_lake["records"]
    total, n_valid, n_invalid = expected_counts(recs)
    assert s["records"] == total, s
    assert s["records"] == s["written"] + s["duplicates"] + s["rejected"], s
    assert s["failed"] == 0, s
    assert s["written"] == len(valid_uuids(recs)), s
    assert s["duplicates"] == n_valid - len(valid_uuids(recs)), s
    assert s["rejected"] == n_invalid, s
    assert s["input_files"] == len(stream_lake["first_docs"]), s
    data, _, _, _ = lake_objects(stream_lake)
    # the batches are staged, then published before the CLI exits
    assert s["files"] == 0 and s["staging_objects"] >= 1, s
    assert s["published"]["files"] == len(data), s
    assert s["published"]["events"] == s["written"], s
    assert s["dead_letter_files"] >= 1, s


def test_every_valid_event_is_in_its_partition_exactly_once(stream_lake):
    recs = stream_lake["records"]
    events = {r["uuid"]: r["event"] for r in recs if r["kind"] == "valid"}
    data, errors, schemas, other = lake_objects(stream_lake)
    assert not other, f"unexpected objects in the bucket: {other}"
    assert schemas, "no schema version was committed"
    seen = collections.Counter()
    for key in data:
        folders = key.split("/")
        assert len(folders) == 5 and folders[4].startswith("part-"), key
        part = {}
        for folder in folders[1:4]:
            k, _, v = folder.partition("=")
            part[k] = urllib.parse.unquote(v)
        assert list(part) == ["event_type", "event_subtype", "event_date"], key
        table = pq.read_table(io.BytesIO(s3_get(stream_lake["s3"], stream_lake["bucket"], key)))
        assert table.num_rows > 0, key
        for col in ("event_type", "event_subtype", "event_date"):
            assert col not in table.column_names, f"{key} repeats the partition column {col}"
        for row in table.to_pylist():
            u = row["event_uuid"]
            seen[u] += 1
            assert u in events, f"{key} holds {u}, which was never a valid event"
            ev = events[u]
            etype, esub, eday = expected_partition(ev)
            assert (part["event_type"], part["event_subtype"], part["event_date"]) == (
                etype, esub if esub is not None else "__HIVE_DEFAULT_PARTITION__", eday), (
                f"{u} (event_name {ev['event_name']!r}, created_at {ev['_created_at_text']}) "
                f"is filed under {key}")
            assert row["event_name"] == ev["event_name"]
            assert row["created_at"] == float(ev["created_at"]), (u, row["created_at"])
            assert row["user_id"] == ev["user_id"]
            assert row["country"] == ev["country"]
            assert row["is_mobile"] == ev["is_mobile"]
    twice = {u: n for u, n in seen.items() if n > 1}
    assert not twice, f"events in the lake more than once: {twice}"
    missing = set(events) - set(seen)
    assert not missing, f"{len(missing)} valid events missing from the lake: {sorted(missing)[:5]}"


def test_created_datetime_matches_created_at(stream_lake):
    recs = stream_lake["records"]
    events = {r["uuid"]: r["event"] for r in recs if r["kind"] == "valid"}
    data, _, _, _ = lake_objects(stream_lake)
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    for key in data:
        table = pq.read_table(io.BytesIO(s3_get(stream_lake["s3"], stream_lake["bucket"], key)),
                              columns=["event_uuid", "created_datetime"])
        for row in table.to_pylist():
            text = events[row["event_uuid"]]["_created_at_text"]
            exact = decimal.Decimal(text)
            whole = exact.to_integral_value(decimal.ROUND_FLOOR)
            want = (epoch + datetime.timedelta(seconds=int(whole))).strftime("%Y-%m-%dT%H:%M:%S")
            got = row["created_datetime"]
            assert got.startswith(want) and got.endswith("Z"), (text, got)
            frac = got[len(want):-1]
            assert frac == "" or (frac[0] == "." and frac[1:].isdigit()), (text, got)
            assert decimal.Decimal("0" + (frac or ".0")) == exact - whole, (text, got)


def test_dead_letters_carry_the_kinesis_origin(stream_lake):
    recs = stream_lake["records"]
    invalid = {(r["shard_id"], r["seq"]): r for r in recs if r["kind"] == "invalid"}
    _, errors, _, _ = lake_objects(stream_lake)
    assert errors, "no dead-letter file"
    lines = dead_letters(stream_lake, errors)
    got = collections.Counter((l["origin"].get("shard_id"), l["origin"].get("sequence_number"))
                              for _, l in lines)
    assert {k: n for k, n in got.items() if n > 1} == {}, "a record dead-lettered twice"
    assert set(got) == set(invalid), (
        f"dead letters for non-rejected records: {set(got) - set(invalid)}; "
        f"rejected records without a dead letter: {set(invalid) - set(got)}")
    for key, line in lines:
        origin = line["origin"]
        r = invalid[(origin["shard_id"], origin["sequence_number"])]
        assert key.startswith(f"{PREFIX}/_errors/ingest_date={line['rejected_at'][:10]}/part-"), key
        assert origin["kind"] == "kinesis", line
        assert origin["stream"] == stream_lake["stream"], line
        assert base64.b64decode(line["data_base64"]) == r["data"], line
        assert line["reason_code"] == r["code"], (line, r["code"])
        assert line["reason"], line


def test_dead_letter_arrival_ms_is_the_kinesis_arrival_time(stream_lake):
    recs = stream_lake["records"]
    invalid = {(r["shard_id"], r["seq"]): r for r in recs if r["kind"] == "invalid"}
    _, errors, _, _ = lake_objects(stream_lake)
    wrong = []
    for _, line in dead_letters(stream_lake, errors):
        origin = line["origin"]
        r = invalid[(origin["shard_id"], origin["sequence_number"])]
        want = round(decimal.Decimal(repr(r["arrival"])) * 1000)
        if origin.get("arrival_ms") != want:
            wrong.append((repr(r["arrival"]), origin.get("arrival_ms"), want))
    assert not wrong, f"(approximateArrivalTimestamp, arrival_ms, expected): {wrong}"


def test_the_same_command_again_writes_nothing(stream_lake):
    before = s3_keys(stream_lake["s3"], stream_lake["bucket"])
    assert before == stream_lake["keys_after_first"]
    s = run_cli(stream_lake["bucket"], stream_lake["table"], stream_lake["first_dir"])
    total, n_valid, n_invalid = expected_counts(stream_lake["records"])
    assert s["records"] == total, s
    assert (s["written"], s["failed"], s["files"], s["dead_letter_files"]) == (0, 0, 0, 0), s
    assert s["duplicates"] == n_valid, s
    assert s["rejected"] == n_invalid, s
    assert s3_keys(stream_lake["s3"], stream_lake["bucket"]) == before, "the re-run wrote objects"


def test_lambda_retries_in_another_split_write_nothing(stream_lake):
    recs = stream_lake["records"]
    kind = {(r["shard_id"], r["seq"]): r["kind"] for r in recs}
    before = s3_keys(stream_lake["s3"], stream_lake["bucket"])
    _, errors, _, _ = lake_objects(stream_lake)
    letters = len(dead_letters(stream_lake, errors))
    delivered = collections.Counter()
    for doc in stream_lake["retry_docs"]:  # one CLI run per Lambda invocation
        batch = json.loads(doc.read_text())["Records"]
        assert len(batch) <= BATCH
        origins = [tuple(r["eventID"].split(":", 1)) for r in batch]
        n_invalid = sum(kind[o] == "invalid" for o in origins)
        delivered.update(origins)
        s = run_cli(stream_lake["bucket"], stream_lake["table"], doc)
        assert s["records"] == len(batch), (doc.name, s)
        assert (s["written"], s["failed"], s["files"], s["dead_letter_files"]) == (0, 0, 0, 0), (
            doc.name, s)
        assert s["rejected"] == n_invalid, (doc.name, s)
        assert s["duplicates"] == len(batch) - n_invalid, (doc.name, s)
    assert set(delivered) == set(kind), "the retry delivery covers every record"
    assert max(delivered.values()) == 2, "a checkpoint resume re-delivers records"
    assert s3_keys(stream_lake["s3"], stream_lake["bucket"]) == before, "a retry wrote objects"
    _, errors, _, _ = lake_objects(stream_lake)
    assert len(dead_letters(stream_lake, errors)) == letters


# --------------------------------------------------------------------------- KPL aggregates


def make_stream(kin, shards=1):
    name = f"kl-kpl-{uuid.uuid4().hex[:12]}"
    kinesis(kin, "CreateStream", {"StreamName": name, "ShardCount": shards})

    def active():
        d = kinesis(kin, "DescribeStream", {"StreamName": name})["StreamDescription"]
        return d if d["StreamStatus"] == "ACTIVE" else None

    return name, wait_for("stream ACTIVE", active)


def read_shard(kin, name, shard_id):
    it = kinesis(kin, "GetShardIterator", {"StreamName": name, "ShardId": shard_id,
                                           "ShardIteratorType": "TRIM_HORIZON"})["ShardIterator"]
    got = []
    while it:
        out = kinesis(kin, "GetRecords", {"ShardIterator": it, "Limit": 7})
        got += out["Records"]
        if not out["Records"]:
            break
        it = out.get("NextShardIterator")
    return got


def run_folder_cli(lake, *inputs):
    cmd = [str(cli_binary()), "ingest", "--lake", str(lake), "--window", "0", "--json",
           "--no-progress", *map(str, inputs)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{' '.join(cmd)}: {r.stderr[-3000:]}"
    return json.loads(r.stdout)


def test_kpl_aggregated_puts_land_once(tmp_path):
    """Aggregates built by AWS's aggregation library, put on a real stream beside plain
    records, read back with GetRecords into Lambda documents and ingested twice, in two
    batch splits: every user record once; a broken aggregate dead-lettered whole."""
    from aws_kinesis_agg.aggregator import RecordAggregator

    kin = env("KL_TEST_KINESIS_ENDPOINT")
    region = os.environ.get("AWS_REGION", "us-east-1")
    name, desc = make_stream(kin)
    shard_id = desc["Shards"][0]["ShardId"]
    arn = desc["StreamARN"]
    rnd = random.Random(7)
    expected = set()
    puts = []
    n = 0
    for group in range(6):
        agg = RecordAggregator()
        for _ in range(rnd.randint(20, 60)):
            text = json.dumps({"event_uuid": f"agg-{n}", "event_name": "video:watch",
                               "created_at": T0 + n}).encode()
            agg.add_user_record(f"pk-{n % 9}", gz(text) if n % 4 == 0 else text)
            expected.add(f"agg-{n}")
            n += 1
        pk, _, body = agg.clear_and_get().get_contents()
        puts.append((pk, body))
        plain = f"plain-{group}"
        puts.append(("p", json.dumps({"event_uuid": plain, "event_name": "video:watch",
                                      "created_at": T0}).encode()))
        expected.add(plain)
    agg = RecordAggregator()
    agg.add_user_record("x", b'{"event_uuid":"lost","event_name":"a","created_at":1}')
    _, _, broken = agg.clear_and_get().get_contents()
    broken = broken[:-1] + bytes([broken[-1] ^ 1])
    puts.append(("x", broken))
    for pk, data in puts:
        kinesis(kin, "PutRecord", {"StreamName": name, "PartitionKey": pk,
                                   "Data": base64.b64encode(data).decode()})
    got = read_shard(kin, name, shard_id)
    assert len(got) == len(puts)
    recs = [lambda_record(g, shard_id, arn, region, arn.split(":")[4]) for g in got]
    first = write_documents(tmp_path / "first", [(shard_id, recs[i:i + 5])
                                                 for i in range(0, len(recs), 5)])
    lake = tmp_path / "lake"
    s = run_folder_cli(lake, *first)
    assert (s["written"], s["rejected"], s["failed"]) == (len(expected), 1, 0), s
    files = list(lake.rglob("*.parquet"))
    uuids = sorted(u for f in files for u in pq.read_table(f).column("event_uuid").to_pylist())
    assert uuids == sorted(expected)
    # delivered again, split otherwise (a retry resends whole aggregates): nothing new
    again = write_documents(tmp_path / "again", [(shard_id, recs[i:i + 3])
                                                 for i in range(0, len(recs), 3)])
    s2 = run_folder_cli(lake, *again)
    assert (s2["written"], s2["duplicates"], s2["dead_letter_files"]) == (0, len(expected), 0), s2
    letters = [json.loads(l) for f in (lake / "_errors").rglob("*.ndjson")
               for l in f.read_text().splitlines()]
    assert [l["reason_code"] for l in letters] == ["bad_aggregate"]
    assert base64.b64decode(letters[0]["data_base64"]) == broken
    assert letters[0]["origin"]["sequence_number"] == got[-1]["SequenceNumber"]


# --------------------------------------------------------------------------- failed batches, metadata only


def sqs_failure_record(shard_id, arn, first, last, size):
    """The record Lambda sends an SQS (or SNS) on-failure destination for a Kinesis
    source: the batch's shard and sequence range, no payload."""
    return {
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": f"arn:aws:lambda:us-east-1:{arn.split(':')[4]}:function:kinesis-lake",
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 3,
        },
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST",
                            "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": "2024-03-17T10:16:00.000Z",
        "KinesisBatchInfo": {
            "shardId": shard_id,
            "startSequenceNumber": first,
            "endSequenceNumber": last,
            "approximateArrivalOfFirstRecord": "2024-03-17T10:15:30.000Z",
            "approximateArrivalOfLastRecord": "2024-03-17T10:15:31.000Z",
            "batchSize": size,
            "streamArn": arn,
        },
    }


def run_replay(lake, *failed, ok=True):
    cmd = [str(cli_binary()), "replay", "--lake", str(lake), "--window", "0", "--json"]
    for f in failed:
        cmd += ["--failed", str(f)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if not ok:
        assert r.returncode != 0, f"{' '.join(cmd)} succeeded: {r.stdout}"
        return r.stderr
    assert r.returncode == 0, f"{' '.join(cmd)}: {r.stderr[-3000:]}"
    return json.loads(r.stdout)


def test_a_metadata_only_failed_batch_is_read_back_from_the_stream_once(tmp_path):
    """An SQS-form failure record names a sequence range in the middle of a shard of
    plain records, KPL aggregates and one invalid record: `replay --failed` reads that
    range back with GetShardIterator AT_SEQUENCE_NUMBER + GetRecords (through the
    standard AWS_ENDPOINT_URL_KINESIS), lands exactly its events once, dead-letters its
    invalid record with the stream's origin, and a second replay adds nothing."""
    from aws_kinesis_agg.aggregator import RecordAggregator

    kin = env("KL_TEST_KINESIS_ENDPOINT")
    env("AWS_ENDPOINT_URL_KINESIS")  # the CLI reads it
    name, desc = make_stream(kin)
    shard_id = desc["Shards"][0]["ShardId"]
    arn = desc["StreamARN"]
    puts = []  # (partition key, data, event uuids)
    n = 0
    for i in range(14):
        if i % 4 == 2:
            agg = RecordAggregator()
            uuids = []
            for _ in range(5):
                text = json.dumps({"event_uuid": f"fb-{n}", "event_name": "video:watch",
                                   "created_at": T0 + n}).encode()
                agg.add_user_record(f"pk-{n}", gz(text) if n % 3 == 0 else text)
                uuids.append(f"fb-{n}")
                n += 1
            pk, _, body = agg.clear_and_get().get_contents()
            puts.append((pk, body, uuids))
        elif i == 7:
            puts.append(("bad", b"this is not json", []))
        else:
            puts.append((f"p-{i}", json.dumps({"event_uuid": f"fb-{n}", "event_name": "search",
                                                "created_at": T0 + n}).encode(), [f"fb-{n}"]))
            n += 1
    seqs = []
    for pk, data, _ in puts:
        out = kinesis(kin, "PutRecord", {"StreamName": name, "PartitionKey": pk,
                                         "Data": base64.b64encode(data).decode()})
        seqs.append(out["SequenceNumber"])
    lo, hi = 3, 11  # the failed batch: puts 3..11, two aggregates and the invalid one inside
    expected = sorted(u for _, _, uuids in puts[lo:hi + 1] for u in uuids)
    record = tmp_path / "failed-batch.json"
    record.write_text(json.dumps(sqs_failure_record(shard_id, arn, seqs[lo], seqs[hi],
                                                    hi - lo + 1)))
    lake = tmp_path / "lake"
    s = run_replay(lake, record)
    c = s["failed_batches"]
    assert (c["written"], c["rejected"], c["failed"]) == (len(expected), 1, 0), s
    files = list(lake.rglob("*.parquet"))
    uuids = sorted(u for f in files for u in pq.read_table(f).column("event_uuid").to_pylist())
    assert uuids == expected
    # the invalid record's dead letter carries the origin a Lambda batch gives it
    arrival = {g["SequenceNumber"]: g["ApproximateArrivalTimestamp"]
               for g in read_shard(kin, name, shard_id)}
    letters = [json.loads(l) for f in (lake / "_errors").rglob("*.ndjson")
               for l in f.read_text().splitlines()]
    assert len(letters) == 1, letters
    origin = letters[0]["origin"]
    assert (origin["kind"], origin["stream"], origin["shard_id"], origin["sequence_number"]) == (
        "kinesis", name, shard_id, seqs[7]), origin
    assert origin["arrival_ms"] == round(decimal.Decimal(repr(float(arrival[seqs[7]]))) * 1000)
    # replayed again: every event a duplicate, no second dead letter
    s2 = run_replay(lake, record)
    c2 = s2["failed_batches"]
    assert (c2["written"], c2["duplicates"], c2["dead_letter_files"]) == (0, len(expected), 0), s2
    assert sorted(u for f in lake.rglob("*.parquet")
                  for u in pq.read_table(f).column("event_uuid").to_pylist()) == expected


def test_an_expired_or_absent_failed_batch_says_so_and_writes_nothing(tmp_path):
    """Records cannot be aged past kinesalite's retention (24 hours at least) in a test,
    so the trimmed start is made the other way Kinesis shows it: a start sequence number
    below the shard's first record (the shard's own StartingSequenceNumber, which
    GetShardIterator accepts), so the first record given comes after the start. And a
    stream that does not exist (deleted, or another account or region)."""
    kin = env("KL_TEST_KINESIS_ENDPOINT")
    name, desc = make_stream(kin)
    shard = desc["Shards"][0]
    arn = desc["StreamARN"]
    out = kinesis(kin, "PutRecord", {"StreamName": name, "PartitionKey": "p", "Data": base64.b64encode(
        json.dumps({"event_uuid": "late", "event_name": "a:b", "created_at": T0}).encode()).decode()})
    before = shard["SequenceNumberRange"]["StartingSequenceNumber"]
    assert int(before) < int(out["SequenceNumber"])
    expired = tmp_path / "expired.json"
    expired.write_text(json.dumps(sqs_failure_record(shard["ShardId"], arn, before,
                                                     out["SequenceNumber"], 2)))
    lake = tmp_path / "lake"
    err = run_replay(lake, expired, ok=False)
    for part in (f"the records of shard {shard['ShardId']} from sequence {before} have expired "
                 f"from the stream {name} (retention 24 hours)",
                 "cannot be replayed from Kinesis", "s3://FAILED_BUCKET/KEY", str(expired)):
        assert part in err, f"{part!r} not in: {err}"
    missing = tmp_path / "missing.json"
    gone = arn.replace(f":stream/{name}", f":stream/{name}-deleted")
    missing.write_text(json.dumps(sqs_failure_record(shard["ShardId"], gone, before,
                                                     out["SequenceNumber"], 2)))
    err = run_replay(lake, missing, ok=False)
    assert f"shard {shard['ShardId']} of stream {name}-deleted was not found" in err, err
    assert "ResourceNotFoundException" in err, err
    assert not list(lake.rglob("*.parquet")) and not list(lake.rglob("*.ndjson"))
