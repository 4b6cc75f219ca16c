#!/usr/bin/env bash
# Runs every test. Called by `make test` inside `scripts/testenv.py run`, which
# has started DynamoDB Local and SeaweedFS on loopback and exported their endpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== cargo tests (unit, CLI, real S3 + DynamoDB)"
cargo test --features integration
echo "== Python tests (readers on the whole lake, SAM template, harness)"
KL_BIN=target/debug/kinesis-lake .tools/venv/bin/pytest -q tests/readers tests/publish tests/template tests/harness tests/lambda tests/kpl tests/stream
