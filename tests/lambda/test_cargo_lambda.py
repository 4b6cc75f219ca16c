"""The Lambda function under `cargo lambda watch`, invoked with `cargo lambda
invoke --data-file fixtures/kinesis/small-batch.json`, against the local S3
and DynamoDB servers: the partial batch response is empty, the events land in
the bucket once (also when the batch is invoked again), and every invocation
prints its Embedded Metric Format line.

Run inside the test environment (it sets the endpoints):
    python3 scripts/testenv.py run -- .tools/venv/bin/pytest -q tests/lambda
"""

import collections
import contextlib
import importlib.util
import io
import json
import os
import pathlib
import signal
import socket
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET

import pyarrow.parquet as pq
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CARGO_LAMBDA = ROOT / ".tools" / "venv" / "bin" / "cargo-lambda"
FIXTURE = ROOT / "fixtures" / "kinesis" / "small-batch.json"
FUNCTION = "kinesis-lake-lambda"
PREFIX = "lake"

_spec = importlib.util.spec_from_file_location("testenv", ROOT / "scripts" / "testenv.py")
testenv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(testenv)

SMALL_BATCH_UUIDS = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(1, 9)]
SMALL_BATCH_REJECTS = 11


def env(name):
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run inside the test servers, "
                    f"python3 scripts/testenv.py run -- .tools/venv/bin/pytest -q tests/lambda")
    return value


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def s3_keys(endpoint, bucket):
    keys, token = [], None
    while True:
        query = {"list-type": "2"}
        if token:
            query["continuation-token"] = token
        status, _, body = testenv.aws_request("GET", endpoint, "s3", path=f"/{bucket}", query=query)
        assert status == 200, f"listing {bucket}: HTTP {status}: {body[:300]!r}"
        root = ET.fromstring(body)
        ns = root.tag.split("}")[0] + "}" if root.tag.startswith("{") else ""
        keys += [c.find(f"{ns}Key").text for c in root.findall(f"{ns}Contents")]
        token = root.findtext(f"{ns}NextContinuationToken")
        if root.findtext(f"{ns}IsTruncated") != "true" or not token:
            return sorted(keys)


def s3_get(endpoint, bucket, key):
    status, _, body = testenv.aws_request("GET", endpoint, "s3", path=f"/{bucket}/{key}")
    assert status == 200, f"get {key}: HTTP {status}"
    return body


def processes_with_env(marker):
    """Pids of our processes whose environment holds `marker` (LAKE_BUCKET=<unique name>)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker.encode() in f.read().split(b"\0"):
                    found.append(int(pid))
        except OSError:
            pass
    return found


@contextlib.contextmanager
def watching(tmp_path, name, extra_env, tag):
    """`cargo lambda watch` on a free loopback port, the function configured for
    the bucket and table `name` (created by the function: KL_CREATE_RESOURCES=1),
    with `extra_env` on top (None: the variable is not set)."""
    if not CARGO_LAMBDA.exists():
        pytest.fail(f"{CARGO_LAMBDA} is missing: run bash scripts/setup-tools.sh")
    s3, ddb = env("KL_TEST_S3_ENDPOINT"), env("KL_TEST_DYNAMODB_ENDPOINT")
    port = free_port()
    function_env = {
        "LAKE_BUCKET": name,
        "LAKE_PREFIX": PREFIX,
        "DEDUP_TABLE": name,
        "KL_CREATE_RESOURCES": "1",
        "AWS_ENDPOINT_URL_S3": s3,
        "AWS_ENDPOINT_URL_DYNAMODB": ddb,
        "AWS_ACCESS_KEY_ID": env("AWS_ACCESS_KEY_ID"),
        "AWS_SECRET_ACCESS_KEY": env("AWS_SECRET_ACCESS_KEY"),
        "AWS_REGION": env("AWS_REGION"),
        "RUST_LOG": "info",
        "KL_TEST_WATCHER": tag,
        **extra_env,
    }
    # a value of None removes the variable (the publisher has no dedup table)
    function_env = {k: v for k, v in function_env.items() if v is not None}
    cmd = [str(CARGO_LAMBDA), "lambda", "watch", "--invoke-address", "127.0.0.1",
           "--invoke-port", str(port), "--ignore-changes", "--bin", FUNCTION]
    for k, v in function_env.items():
        cmd += ["--env-var", f"{k}={v}"]
    log_path = tmp_path / f"watch-{tag}.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)

    def tail():
        return log_path.read_text(errors="replace")[-4000:]

    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"cargo lambda watch exited with {proc.returncode}:\n{tail()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"cargo lambda watch did not listen on {port} in 120 s:\n{tail()}")
                time.sleep(0.1)
        yield {"port": port, "bucket": name, "s3": s3, "log": log_path, "tail": tail}
    finally:
        # the watcher, cargo and the function run in the watcher's session
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
        # a function process outside the group would outlive the test: end it
        marker = f"KL_TEST_WATCHER={tag}"
        end = time.monotonic() + 10
        while processes_with_env(marker) and time.monotonic() < end:
            time.sleep(0.1)
        leftovers = processes_with_env(marker)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        log.close()
        assert not leftovers, f"function processes outlived the watcher: {leftovers}"


@pytest.fixture
def watcher(tmp_path):
    """The consumer writing each batch's files at once (no publication window)."""
    name = f"kl-lambda-{uuid.uuid4().hex[:12]}"
    with watching(tmp_path, name, {"PUBLISH_WINDOW_SECONDS": "0"}, f"direct-{name}") as w:
        yield w


def invoke(port, data=None):
    source = ["--data-ascii", data] if data is not None else ["--data-file", str(FIXTURE)]
    r = subprocess.run(
        [str(CARGO_LAMBDA), "lambda", "invoke", FUNCTION, "--invoke-address", "127.0.0.1",
         "--invoke-port", str(port), *source, "--output-format", "json"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert r.returncode == 0, f"cargo lambda invoke failed:\n{r.stdout}\n{r.stderr}"
    return json.loads(r.stdout)


def lake_rows(w):
    rows = collections.Counter()
    for key in s3_keys(w["s3"], w["bucket"]):
        if key.endswith(".parquet"):
            assert key.startswith(f"{PREFIX}/event_type="), key
            table = pq.read_table(io.BytesIO(s3_get(w["s3"], w["bucket"], key)))
            rows.update(table.column("event_uuid").to_pylist())
    return rows


def emf_lines(log_path):
    out = []
    for line in log_path.read_text(errors="replace").splitlines():
        line = line.strip()
        if line.startswith("{") and '"_aws"' in line:
            out.append(json.loads(line))
    return out


def test_cargo_lambda_invoke_lands_the_fixture_once(watcher):
    first = invoke(watcher["port"])
    assert first == {"batchItemFailures": []}, f"{first}\n{watcher['tail']()}"
    rows = lake_rows(watcher)
    assert rows == {u: 1 for u in SMALL_BATCH_UUIDS}, rows
    errors = [k for k in s3_keys(watcher["s3"], watcher["bucket"]) if k.startswith(f"{PREFIX}/_errors/")]
    lines = [l for k in errors for l in s3_get(watcher["s3"], watcher["bucket"], k).splitlines()]
    assert len(lines) == SMALL_BATCH_REJECTS

    keys = s3_keys(watcher["s3"], watcher["bucket"])
    second = invoke(watcher["port"])
    assert second == {"batchItemFailures": []}, second
    assert s3_keys(watcher["s3"], watcher["bucket"]) == keys, "the same batch again writes nothing"

    metrics = emf_lines(watcher["log"])
    assert len(metrics) == 2, watcher["tail"]()
    for m in metrics:
        cw = m["_aws"]["CloudWatchMetrics"][0]
        assert cw["Namespace"] == "KinesisLake"
        assert cw["Dimensions"] == [["FunctionName"]]
        assert m["FunctionName"] == FUNCTION
        assert m["Records"] == 20 and m["Failed"] == 0
    assert (metrics[0]["Written"], metrics[0]["Rejected"]) == (8, SMALL_BATCH_REJECTS)
    assert (metrics[1]["Written"], metrics[1]["Duplicates"], metrics[1]["Files"]) == (0, 9, 0)


def test_the_consumer_stages_and_the_publisher_function_publishes_once(tmp_path):
    """The default: the consumer stages each batch (one object, no Parquet yet);
    the same binary as the publisher (LAKE_FUNCTION=publish, no dedup table)
    publishes it into one file per partition; a re-delivered batch adds nothing."""
    name = f"kl-lambda-{uuid.uuid4().hex[:12]}"
    publisher_env = {"LAKE_FUNCTION": "publish", "DEDUP_TABLE": None, "PUBLISH_WINDOW_SECONDS": "60"}
    with watching(tmp_path, name, {"PUBLISH_WINDOW_SECONDS": "60"}, f"consumer-{name}") as consumer, \
            watching(tmp_path, name, publisher_env, f"publisher-{name}") as publisher:
        first = invoke(consumer["port"])
        assert first == {"batchItemFailures": []}, f"{first}\n{consumer['tail']()}"
        keys = s3_keys(consumer["s3"], name)
        staged = [k for k in keys if k.startswith(f"{PREFIX}/_staging/window=") and k.endswith(".kls")]
        assert len(staged) == 1, keys
        assert not [k for k in keys if k.endswith(".parquet")], "nothing visible before publication"

        # a scheduled run publishes closed windows only; ask for the open one too
        done = invoke(publisher["port"], json.dumps({"publish_open_windows": True}))
        assert done["events"] == len(SMALL_BATCH_UUIDS), f"{done}\n{publisher['tail']()}"
        assert lake_rows(consumer) == {u: 1 for u in SMALL_BATCH_UUIDS}
        files = [k for k in s3_keys(consumer["s3"], name) if k.endswith(".parquet")]
        assert all("/part-" in k and "-g0000-" in k for k in files), files

        again = invoke(consumer["port"])
        assert again == {"batchItemFailures": []}, again
        invoke(publisher["port"], json.dumps({"publish_open_windows": True}))
        assert lake_rows(consumer) == {u: 1 for u in SMALL_BATCH_UUIDS}

        published = [m for m in emf_lines(publisher["log"]) if "PublishedEvents" in m]
        assert [m["PublishedEvents"] for m in published] == [len(SMALL_BATCH_UUIDS), 0], published
        assert all(m["PublishErrors"] == 0 for m in published)
        staged_metrics = [m for m in emf_lines(consumer["log"]) if "StagingObjects" in m]
        assert [m["StagingObjects"] for m in staged_metrics] == [1, 0]


def test_window_dedup_needs_no_dedup_table_and_lands_a_retried_batch_once(tmp_path):
    """DEDUP_MODE=window: no DEDUP_TABLE, and DynamoDB unreachable (nothing
    listens at its endpoint) — the consumer never asks it. The same batch
    again stages nothing; the publisher publishes every event once."""
    name = f"kl-lambda-{uuid.uuid4().hex[:12]}"
    nobody = f"http://127.0.0.1:{free_port()}"
    consumer_env = {"PUBLISH_WINDOW_SECONDS": "60", "DEDUP_MODE": "window", "DEDUP_TABLE": None,
                    "AWS_ENDPOINT_URL_DYNAMODB": nobody}
    publisher_env = {"LAKE_FUNCTION": "publish", "DEDUP_TABLE": None, "PUBLISH_WINDOW_SECONDS": "60",
                     "AWS_ENDPOINT_URL_DYNAMODB": nobody}
    with watching(tmp_path, name, consumer_env, f"window-{name}") as consumer, \
            watching(tmp_path, name, publisher_env, f"window-publisher-{name}") as publisher:
        for _ in range(2):
            answer = invoke(consumer["port"])
            assert answer == {"batchItemFailures": []}, f"{answer}\n{consumer['tail']()}"
        staged = [k for k in s3_keys(consumer["s3"], name) if k.endswith(".kls")]
        assert len(staged) == 1, staged
        done = invoke(publisher["port"], json.dumps({"publish_open_windows": True}))
        assert done["events"] == len(SMALL_BATCH_UUIDS), f"{done}\n{publisher['tail']()}"
        assert lake_rows(consumer) == {u: 1 for u in SMALL_BATCH_UUIDS}
        metrics = [m for m in emf_lines(consumer["log"]) if "StagingObjects" in m]
        assert [(m["StagingObjects"], m["Duplicates"]) for m in metrics] == [(1, 1), (0, 9)], metrics


def test_the_publisher_function_commits_each_window_to_the_lakes_iceberg_table(tmp_path):
    """TABLE_FORMAT=iceberg without a REST catalog: the table's catalog is in
    the lake's bucket (`_iceberg/metadata/`, each version created only if
    absent); pyiceberg reads every event once; a run with nothing new adds
    no snapshot."""
    from pyiceberg.table import StaticTable

    name = f"kl-lambda-{uuid.uuid4().hex[:12]}"
    publisher_env = {"LAKE_FUNCTION": "publish", "DEDUP_TABLE": None, "PUBLISH_WINDOW_SECONDS": "60",
                     "TABLE_FORMAT": "iceberg"}
    with watching(tmp_path, name, {"PUBLISH_WINDOW_SECONDS": "60"}, f"ice-consumer-{name}") as consumer, \
            watching(tmp_path, name, publisher_env, f"ice-publisher-{name}") as publisher:
        assert invoke(consumer["port"]) == {"batchItemFailures": []}, consumer["tail"]()
        for _ in range(2):
            done = invoke(publisher["port"], json.dumps({"publish_open_windows": True}))
            assert "events" in done, f"{done}\n{publisher['tail']()}"
        versions = sorted(k for k in s3_keys(consumer["s3"], name)
                          if k.startswith(f"{PREFIX}/_iceberg/metadata/v") and k.endswith(".metadata.json"))
        # v1 created, v2 the one snapshot: the second run committed nothing
        assert [k.rsplit("/", 1)[1] for k in versions] == ["v1.metadata.json", "v2.metadata.json"]
        table = StaticTable.from_metadata(
            f"s3://{name}/{versions[-1]}",
            properties={"s3.endpoint": consumer["s3"], "s3.access-key-id": env("AWS_ACCESS_KEY_ID"),
                        "s3.secret-access-key": env("AWS_SECRET_ACCESS_KEY"), "s3.region": env("AWS_REGION"),
                        "s3.path-style-access": "true"})
        uuids = table.scan().to_arrow().column("event_uuid").to_pylist()
        assert sorted(uuids) == sorted(SMALL_BATCH_UUIDS)
        assert len(table.snapshots()) == 1
