"""Self-test of the integration-test harness (scripts/testenv.py).

Run inside the harness:
    python3 scripts/testenv.py run -- .tools/venv/bin/pytest -q tests/harness
Outside it (no KL_TEST_CTL in the environment) every test is skipped.
"""

import importlib.util
import json
import os
import shlex
import socket
import subprocess
import urllib.parse
import uuid

import pytest

pytestmark = pytest.mark.skipif(
    "KL_TEST_CTL" not in os.environ,
    reason="needs the servers: python3 scripts/testenv.py run -- pytest tests/harness",
)

_TESTENV = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "testenv.py")
_spec = importlib.util.spec_from_file_location("testenv", _TESTENV)
testenv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(testenv)

S3 = os.environ.get("KL_TEST_S3_ENDPOINT", "")
DDB = os.environ.get("KL_TEST_DYNAMODB_ENDPOINT", "")
KINESIS = os.environ.get("KL_TEST_KINESIS_ENDPOINT", "")


def ctl(*args):
    cmd = shlex.split(os.environ["KL_TEST_CTL"]) + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{cmd} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def s3(method, path, body=b"", headers=None, **kw):
    kw.setdefault("access_key", os.environ["AWS_ACCESS_KEY_ID"])
    kw.setdefault("secret_key", os.environ["AWS_SECRET_ACCESS_KEY"])
    kw.setdefault("region", os.environ["AWS_REGION"])
    return testenv.aws_request(method, S3, "s3", path=path, body=body, headers=headers, **kw)


def ddb(target, payload):
    return testenv.json_api(DDB, "dynamodb", f"DynamoDB_20120810.{target}", payload)


def port_of(endpoint):
    return urllib.parse.urlsplit(endpoint).port


def refuses_connections(endpoint):
    try:
        socket.create_connection(("127.0.0.1", port_of(endpoint)), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True


def new_bucket():
    name = f"kl-harness-{uuid.uuid4().hex[:10]}"
    status, _, body = s3("PUT", f"/{name}")
    assert status == 200, body
    return name


def test_env_vars():
    for var in (
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION",
        "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_DYNAMODB",
        "KL_TEST_S3_ENDPOINT", "KL_TEST_DYNAMODB_ENDPOINT", "KL_TEST_CTL", "KL_TEST_STATE",
    ):
        assert os.environ.get(var), f"{var} not set"
    assert os.environ["AWS_REGION"] == "us-east-1"
    assert os.environ["AWS_ENDPOINT_URL_S3"] == S3
    assert os.environ["AWS_ENDPOINT_URL_DYNAMODB"] == DDB
    for ep in (S3, DDB) + ((KINESIS,) if KINESIS else ()):
        u = urllib.parse.urlsplit(ep)
        assert (u.scheme, u.hostname) == ("http", "127.0.0.1") and u.port
    assert "AWS_SESSION_TOKEN" not in os.environ


def test_s3_roundtrip_and_conditional_put():
    b = new_bucket()
    assert s3("PUT", f"/{b}/dt=2024-01-01/a.parquet", b"hello")[0] == 200
    status, _, body = s3("GET", f"/{b}/dt=2024-01-01/a.parquet")
    assert (status, body) == (200, b"hello")
    # If-None-Match: * -> the first writer wins, the second gets 412.
    assert s3("PUT", f"/{b}/k", b"first", headers={"If-None-Match": "*"})[0] == 200
    assert s3("PUT", f"/{b}/k", b"second", headers={"If-None-Match": "*"})[0] == 412
    assert s3("GET", f"/{b}/k")[2] == b"first"
    status, _, body = s3("GET", f"/{b}", query={"list-type": "2", "prefix": "dt="})
    assert status == 200 and b"dt=2024-01-01/a.parquet" in body
    # Like AWS: no implicit bucket creation, and the credentials are enforced.
    assert s3("PUT", f"/kl-missing-{uuid.uuid4().hex[:8]}/x", b"1")[0] == 404
    assert s3("GET", f"/{b}/k", secret_key="wrong-secret")[0] == 403


def test_dynamodb_answers_and_conditional_put():
    status, out = ddb("ListTables", {})
    assert status == 200, out
    table = f"kl_harness_{uuid.uuid4().hex[:8]}"
    status, out = ddb("CreateTable", {
        "TableName": table,
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "BillingMode": "PAY_PER_REQUEST",
    })
    assert status == 200, out
    put = {"TableName": table, "Item": {"pk": {"S": "shard-1:seq-1"}},
           "ConditionExpression": "attribute_not_exists(pk)"}
    assert ddb("PutItem", put)[0] == 200
    status, out = ddb("PutItem", put)
    assert status == 400 and "ConditionalCheckFailed" in json.dumps(out)


@pytest.mark.skipif(not KINESIS, reason="run with --with-kinesis")
def test_kinesis_answers():
    status, out = testenv.json_api(KINESIS, "kinesis", "Kinesis_20131202.ListStreams", {},
                                   content_type="application/x-amz-json-1.1")
    assert status == 200, out


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_ctl_stop_start_s3_keeps_data(how):
    b = new_bucket()
    assert s3("PUT", f"/{b}/before", b"persisted")[0] == 200
    try:
        ctl(how, "s3")
        assert refuses_connections(S3)
        assert json.loads(ctl("status"))["s3"]["running"] is False
    finally:
        ctl("start", "s3")  # same ports, same data dir
    assert json.loads(ctl("status"))["s3"]["running"] is True
    assert s3("GET", f"/{b}/before")[2] == b"persisted"
    assert s3("PUT", f"/{b}/after", b"x")[0] == 200
    assert s3("PUT", f"/{new_bucket()}/y", b"y")[0] == 200


def test_ctl_restart_dynamodb():
    try:
        ctl("stop", "dynamodb")
        assert refuses_connections(DDB)
    finally:
        ctl("start", "dynamodb")
    assert ddb("ListTables", {})[0] == 200
