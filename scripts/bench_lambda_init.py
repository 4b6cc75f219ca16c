#!/usr/bin/env python3
"""Lambda cold start, measured locally: the time from starting the function's
binary until it first asks the Runtime API for an event
(`GET /2018-06-01/runtime/invocation/next`), i.e. Lambda's init phase.

A small standard-library HTTP server on a free loopback port plays the Runtime
API; in the S3 mode it also answers the two calls the function makes at start
(DynamoDB DescribeTable, S3 ListObjectsV2) the way AWS would, so init runs to
the end without the network. Real AWS adds those two round trips (a few ms
each inside a region) to the figure measured here.

  bench_lambda_init.py --bin target/release/kinesis-lake-lambda [--starts 10]
                       [--mode local|s3|both] [--json OUT]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NEXT = "/2018-06-01/runtime/invocation/next"

DESCRIBE_TABLE = {
    "Table": {
        "TableName": "dedup",
        "TableStatus": "ACTIVE",
        "KeySchema": [{"AttributeName": "event_uuid", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "event_uuid", "AttributeType": "S"}],
        "BillingModeSummary": {"BillingMode": "PAY_PER_REQUEST"},
    }
}
LIST_OBJECTS = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    "<Name>lake</Name><Prefix></Prefix><KeyCount>0</KeyCount><MaxKeys>1</MaxKeys>"
    "<IsTruncated>false</IsTruncated></ListBucketResult>"
)


class State:
    def __init__(self, event=None):
        self.next_at = None
        self.got_next = threading.Event()
        self.calls = []
        self.first_aws_at = None
        # invoke mode: the event served on the first `next`, and the answer
        self.event = event
        self.response = None
        self.answered = threading.Event()


def handler_for(state):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def reply(self, code, body, ctype):
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path.startswith(NEXT):
                state.calls.append("runtime next")
                if state.event is not None and state.next_at is None:
                    state.next_at = time.perf_counter()
                    state.got_next.set()
                    event, state.event = state.event, b""
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Lambda-Runtime-Aws-Request-Id", "bench-1")
                    self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 900_000))
                    self.send_header("Lambda-Runtime-Invoked-Function-Arn",
                                     "arn:aws:lambda:eu-central-1:123456789012:function:kinesis-lake-bench")
                    self.send_header("Content-Length", str(len(event)))
                    self.end_headers()
                    self.wfile.write(event)
                    return
                if state.next_at is None:
                    state.next_at = time.perf_counter()
                    state.got_next.set()
                # hold the request like Lambda does between invocations; the
                # process is killed meanwhile
                time.sleep(5)
                return
            if "list-type=2" in self.path:
                state.first_aws_at = state.first_aws_at or time.perf_counter()
                state.calls.append("s3 ListObjectsV2")
                return self.reply(200, LIST_OBJECTS, "application/xml")
            state.calls.append(f"GET {self.path}")
            self.reply(404, "{}", "application/json")

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            target = self.headers.get("X-Amz-Target", "")
            if target.endswith(".DescribeTable"):
                state.first_aws_at = state.first_aws_at or time.perf_counter()
                state.calls.append("dynamodb DescribeTable")
                return self.reply(200, json.dumps(DESCRIBE_TABLE), "application/x-amz-json-1.0")
            if self.path.endswith("/response") or self.path.endswith("/error"):
                state.calls.append("runtime " + self.path.rsplit("/", 1)[1])
                state.response = (self.path.rsplit("/", 1)[1], body)
                state.answered.set()
                return self.reply(202, "{}", "application/json")
            if "/runtime/init/error" in self.path:
                state.calls.append("runtime init/error")
                return self.reply(202, "{}", "application/json")
            state.calls.append(f"POST {self.path} {target}")
            self.reply(400, "{}", "application/json")

    return Handler


def start_once(binary, env, timeout=10.0):
    """Starts the binary once; seconds until its first `next`, its RSS then,
    the calls it made, and seconds until its first AWS call (None if none)."""
    state = State()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(state))
    server.daemon_threads = True
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(env)
    env["AWS_LAMBDA_RUNTIME_API"] = f"127.0.0.1:{port}"
    if env.get("AWS_ENDPOINT_URL_S3") == "STUB":
        env["AWS_ENDPOINT_URL_S3"] = f"http://127.0.0.1:{port}"
        env["AWS_ENDPOINT_URL_DYNAMODB"] = f"http://127.0.0.1:{port}"
    err = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        if not state.got_next.wait(timeout):
            proc.kill()
            proc.wait()
            err.seek(0)
            raise RuntimeError(
                f"{binary} did not ask for an event within {timeout} s "
                f"(exit code {proc.returncode}; calls {state.calls}):\n{err.read().decode()[-2000:]}")
        init = state.next_at - t0
        first_aws = state.first_aws_at - t0 if state.first_aws_at else None
        rss = None
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1])
        except OSError:
            pass
    finally:
        stop(proc, server, err)
    return init, rss, state.calls, first_aws


def stop(proc, server, err):
    """Kills the function if it still runs, then the stub Runtime API."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    server.shutdown()
    server.server_close()
    err.close()


def peak_rss_kib(pid):
    """VmHWM (peak RSS) of a live process, in KiB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def invoke_once(binary, env, event_path, timeout=120.0):
    """Starts the binary, hands it one event, waits for its answer; returns
    (seconds from event to answer, peak RSS KiB, the answer)."""
    with open(event_path, "rb") as f:
        state = State(event=f.read())
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(state))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(env)
    env["AWS_LAMBDA_RUNTIME_API"] = f"127.0.0.1:{server.server_address[1]}"
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        if not state.answered.wait(timeout):
            err.seek(0)
            raise RuntimeError(f"no answer within {timeout} s; calls {state.calls}:\n"
                               f"{err.read().decode()[-2000:]}")
        took = time.perf_counter() - state.next_at
        time.sleep(0.2)  # let it go back to `next`
        peak = peak_rss_kib(proc.pid)
    finally:
        stop(proc, server, err)
    return took, peak, state.response


def base_env():
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    keep.update({
        "AWS_LAMBDA_FUNCTION_NAME": "kinesis-lake-bench",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/kinesis-lake-bench",
        "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
        "AWS_REGION": "eu-central-1",
        "RUST_LOG": "info",
    })
    return keep


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True)
    p.add_argument("--starts", type=int, default=10)
    p.add_argument("--mode", choices=["local", "s3", "both"], default="both")
    p.add_argument("--invoke", metavar="EVENT_JSON",
                   help="instead: hand one Kinesis event document to the function (local mode) "
                        "and report its peak RSS")
    p.add_argument("--json")
    a = p.parse_args()
    if not os.access(a.bin, os.X_OK):
        print(f"bench_lambda_init: error: {a.bin} is not an executable; build it first", file=sys.stderr)
        sys.exit(1)
    if a.invoke:
        lake = tempfile.mkdtemp(prefix="kl-invoke-")
        try:
            env = base_env()
            env["LAKE_DIR"] = os.path.join(lake, "lake")
            took, peak, (kind, body) = invoke_once(a.bin, env, a.invoke)
        finally:
            shutil.rmtree(lake, ignore_errors=True)
        failures = json.loads(body or b"{}").get("batchItemFailures", []) if kind == "response" else None
        print(f"  one invocation of {os.path.basename(a.invoke)} ({os.path.getsize(a.invoke) / 1e6:.1f} MB), "
              f"local mode: {took * 1e3:.0f} ms from event to answer, peak RSS {peak / 1024:.1f} MiB, "
              f"answer: {kind}, {len(failures) if failures is not None else '?'} failed records")
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"ms": took * 1e3, "peak_rss_kib": peak, "answer": kind,
                           "failed_records": failures}, f, indent=1)
        sys.exit(0 if kind == "response" and not failures else 1)
    results = {}
    lake = tempfile.mkdtemp(prefix="kl-init-")
    try:
        modes = ["local", "s3"] if a.mode == "both" else [a.mode]
        for mode in modes:
            env = base_env()
            if mode == "local":
                env["LAKE_DIR"] = os.path.join(lake, "lake")
            else:
                env.update({
                    "LAKE_BUCKET": "lake", "DEDUP_TABLE": "dedup",
                    "AWS_ENDPOINT_URL_S3": "STUB",
                    "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                    "AWS_EC2_METADATA_DISABLED": "true",
                })
            try:
                start_once(a.bin, env)  # warm the page cache; not counted
            except RuntimeError as e:
                print(f"  {mode}: cannot measure: {e}", file=sys.stderr)
                results[mode] = {"error": str(e)}
                continue
            runs = [start_once(a.bin, env) for _ in range(a.starts)]
            inits = [r[0] * 1e3 for r in runs]
            rss = [r[1] for r in runs if r[1]]
            first_aws = [r[3] * 1e3 for r in runs if r[3] is not None]
            results[mode] = {
                "first_aws_call_median_ms": statistics.median(first_aws) if first_aws else None,
                "starts": a.starts, "median_ms": statistics.median(inits),
                "min_ms": min(inits), "max_ms": max(inits),
                "rss_at_ready_kib": statistics.median(rss) if rss else None,
                "calls": runs[-1][2],
            }
            r = results[mode]
            print(f"  {mode:<6} init (start -> first GET next): median {r['median_ms']:6.1f} ms "
                  f"(min {r['min_ms']:.1f}, max {r['max_ms']:.1f}, {a.starts} starts); "
                  f"RSS when ready {r['rss_at_ready_kib'] or 0:.0f} KiB; calls: {', '.join(r['calls'])}")
            if r["first_aws_call_median_ms"] is not None:
                print(f"         of which start -> first AWS call (SDK config and clients built): "
                      f"median {r['first_aws_call_median_ms']:.1f} ms; the rest is the two check calls")
    finally:
        shutil.rmtree(lake, ignore_errors=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    sys.exit(1 if any("error" in r for r in results.values()) else 0)


if __name__ == "__main__":
    main()
