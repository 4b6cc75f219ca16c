# kinesis-lake developer commands. `make help` lists them.
#
# The two set-up commands of the README:
#   make demo   the main job on the embedded default (folder lake + embedded dedup store)
#   make test   every test, against real servers this Makefile installs and starts itself

SHELL := /bin/bash
VENV  := .tools/venv
PY    := $(VENV)/bin/python
LAKE  ?= ./lake

.PHONY: help demo test lint build deploy invoke bench setup clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

demo: ## ingest the demo fixtures into ./lake (release build), again (nothing is added), and into ./lake-iceberg with an Iceberg table
	cargo run --release -- ingest --lake $(LAKE) fixtures/demo-events.ndjson.gz fixtures/events.ndjson fixtures/kinesis
	@echo "--- the same input again (exactly once: nothing new is written)"
	cargo run --release -- ingest --lake $(LAKE) fixtures/demo-events.ndjson.gz fixtures/events.ndjson fixtures/kinesis
	@echo "--- the same input into $(LAKE)-iceberg, also an Apache Iceberg table (its catalog in the lake: $(LAKE)-iceberg/_iceberg/)"
	cargo run --release -- ingest --lake $(LAKE)-iceberg --table-format iceberg fixtures/demo-events.ndjson.gz fixtures/events.ndjson fixtures/kinesis

setup: ## install the test tools into .tools/ (Python venv, DynamoDB Local, SeaweedFS, cargo-lambda, cfn-lint)
	bash scripts/setup-tools.sh

test: setup ## every test: unit, CLI, real S3 + DynamoDB, cargo lambda, readers, template
	python3 scripts/testenv.py run --with-kinesis -- bash scripts/test-all.sh

lint: setup ## cargo fmt --check, clippy with warnings as errors, cfn-lint
	cargo fmt --all -- --check
	cargo clippy --all-targets --features integration -- -D warnings
	$(VENV)/bin/cfn-lint template.yaml

build: setup ## the Lambda binary for AWS (arm64, release), with cargo-lambda
	$(VENV)/bin/cargo-lambda lambda build --release --arm64 --bin kinesis-lake-lambda

deploy: ## build and deploy the SAM stack (asks for parameters the first time)
	sam build --beta-features && sam deploy --guided

invoke: setup ## run the function locally on a fixture batch against local S3 + DynamoDB
	python3 scripts/testenv.py run -- bash scripts/invoke-local.sh fixtures/kinesis/small-batch.json

bench: setup ## benchmarks against the pyarrow and DuckDB peers (see BENCHMARKS.md)
	bash scripts/bench.sh

clean: ## remove the demo lake
	rm -rf $(LAKE)
