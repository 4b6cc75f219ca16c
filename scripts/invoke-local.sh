#!/usr/bin/env bash
# Runs the Lambda function locally (`cargo lambda watch`) against the local S3
# and DynamoDB servers that `scripts/testenv.py run` started, invokes it with a
# Kinesis event file (`cargo lambda invoke --data-file`), prints the partial
# batch response and the staging object that landed; then runs the same binary
# as the publisher (LAKE_FUNCTION=publish, a second watcher), asks it to
# publish the open window too, prints what it published and the lake's
# objects, then stops both watchers.
# Usage (what `make invoke` runs):
#   python3 scripts/testenv.py run -- bash scripts/invoke-local.sh fixtures/kinesis/small-batch.json
set -euo pipefail
cd "$(dirname "$0")/.."
data_file="${1:?usage: invoke-local.sh KINESIS_EVENT_FILE}"
: "${KL_TEST_S3_ENDPOINT:?run inside: python3 scripts/testenv.py run -- bash scripts/invoke-local.sh FILE}"
cargo_lambda=.tools/venv/bin/cargo-lambda
name="kl-invoke-$(date +%s)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
common=(--env-var "LAKE_BUCKET=$name" --env-var "LAKE_PREFIX=lake" --env-var "KL_CREATE_RESOURCES=1"
    --env-var "PUBLISH_WINDOW_SECONDS=60"
    --env-var "AWS_ENDPOINT_URL_S3=$AWS_ENDPOINT_URL_S3"
    --env-var "AWS_ENDPOINT_URL_DYNAMODB=$AWS_ENDPOINT_URL_DYNAMODB"
    --env-var "AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID" --env-var "AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY"
    --env-var "AWS_REGION=$AWS_REGION")
port=$(free_port)
pub_port=$(free_port)
log=$(mktemp)
pub_log=$(mktemp)
setsid "$cargo_lambda" lambda watch --invoke-address 127.0.0.1 --invoke-port "$port" --ignore-changes \
    --bin kinesis-lake-lambda "${common[@]}" --env-var "DEDUP_TABLE=$name" >"$log" 2>&1 &
watcher=$!
setsid "$cargo_lambda" lambda watch --invoke-address 127.0.0.1 --invoke-port "$pub_port" --ignore-changes \
    --bin kinesis-lake-lambda "${common[@]}" --env-var "LAKE_FUNCTION=publish" >"$pub_log" 2>&1 &
publisher=$!
stop() {
    kill -TERM -- "-$watcher" "-$publisher" 2>/dev/null || true
    wait "$watcher" "$publisher" 2>/dev/null || true
    rm -f "$log" "$pub_log"
}
trap stop EXIT
for p in "$port" "$pub_port"; do
    for _ in $(seq 1 1200); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $p), 0.5)" 2>/dev/null; then break; fi
        if ! kill -0 "$watcher" 2>/dev/null || ! kill -0 "$publisher" 2>/dev/null; then
            cat "$log" "$pub_log"; echo "cargo lambda watch exited" >&2; exit 1
        fi
        sleep 0.1
    done
done
echo "== cargo lambda invoke --data-file $data_file"
"$cargo_lambda" lambda invoke kinesis-lake-lambda --invoke-address 127.0.0.1 --invoke-port "$port" \
    --data-file "$data_file" --output-format json
echo
echo "== the function's log"
tail -n 20 "$log"
echo "== cargo lambda invoke (the publisher): publish the open window too"
"$cargo_lambda" lambda invoke kinesis-lake-lambda --invoke-address 127.0.0.1 --invoke-port "$pub_port" \
    --data-ascii '{"publish_open_windows": true}' --output-format json
echo
echo "== the publisher's log"
tail -n 5 "$pub_log"
echo "== objects in s3://$name/lake/"
.tools/venv/bin/python - "$name" <<'PY'
import importlib.util, os, sys, xml.etree.ElementTree as ET
spec = importlib.util.spec_from_file_location("testenv", "scripts/testenv.py")
testenv = importlib.util.module_from_spec(spec)
spec.loader.exec_module(testenv)
status, _, body = testenv.aws_request("GET", os.environ["KL_TEST_S3_ENDPOINT"], "s3", path=f"/{sys.argv[1]}",
                                      query={"list-type": "2", "prefix": "lake/"})
ns = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}
for key in ET.fromstring(body).findall(".//s3:Key", ns):
    print("  " + key.text)
PY
