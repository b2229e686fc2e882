#!/usr/bin/env bash
# Set everything up on a fresh machine; safe to run again (it only reinstalls when pyproject.toml or
# this script changed). Source-able: exports the Flower environment.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# Debian ships the real Fashion-MNIST; install it where apt is at hand (root, Debian/Ubuntu).
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
        || echo "warning: could not install dataset-fashion-mnist; only digits works offline" >&2
fi

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "error: fedunlearn needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
    exit 1
fi
# The dependencies (about 6 GB: CUDA torch wheels) are installed once per machine and pyproject.toml into a cache
# venv under $CACHE, and each checkout's .venv is a hard-linked copy of it (seconds, not minutes; like uv's cache,
# which we cannot use: it ignores the local torch wheels). Only the project itself is installed into .venv.
WANT="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)-$("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
CACHE="${FEDUNLEARN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fedunlearn}"
DEPS="$CACHE/venv-$WANT"
STAMP=.venv/.fedunlearn-installed

repoint() {  # venv scripts name their venv by absolute path; sed -i writes new files, so no hard link is changed
    { grep -rlIF "$2" "$1/bin" "$1/pyvenv.cfg" || true; } | xargs -r sed -i "s#$2#$3#g"
}

build_dependency_venv() {  # under a temporary name, renamed when complete: a cut-off build is never used
    local building="$DEPS.building.$$"
    "$PYTHON" -m venv "$building"
    "$building/bin/python" -m pip install -q --upgrade pip
    # pip (not uv): on machines with local torch wheels pip finds them, uv would download GBs.
    "$building/bin/python" -m pip install -q -e ".[test]"
    "$building/bin/python" -m pip uninstall -q -y fedunlearn
    repoint "$building" "$building" "$DEPS"
    mv -T "$building" "$DEPS" 2>/dev/null || rm -rf "$building"  # another setup finished first: use its
    # older caches go; the checkouts made from them keep their own links to the files
    find "$CACHE" -maxdepth 1 -name 'venv-*' ! -name "venv-$WANT" ! -name '*.building.*' -exec rm -rf {} +
}

if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    mkdir -p "$CACHE"
    [ -x "$DEPS/bin/python" ] || build_dependency_venv
    rm -rf .venv
    cp -al "$DEPS" .venv 2>/dev/null || { rm -rf .venv; cp -a "$DEPS" .venv; }  # another file system: copy
    repoint .venv "$DEPS" "$ROOT/.venv"
    .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
    echo "$WANT" > "$STAMP"
fi

# The editable install maps fedunlearn.common etc. onto the checkout through an import hook, which
# mypy, IDEs and a bare PYTHONPATH cannot run: this link tree shows them the same namespace.
mkdir -p .namespace/fedunlearn
for package in common client server simulations; do
    ln -sfn "../../$package" ".namespace/fedunlearn/$package"
done

# Flower must not reinstall dependencies per run, phone home, or write outside the project.
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
export FLWR_DISABLE_UPDATE_CHECK=1
export FLWR_TELEMETRY_ENABLED=0
export FLWR_HOME="$ROOT/.flwr"
export PATH="$ROOT/.venv/bin:$PATH"
