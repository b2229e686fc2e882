#!/usr/bin/env bash
# Set everything up on a fresh machine; safe to run again (it only reinstalls
# when pyproject.toml changed). Source-able: exports the Flower environment.
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
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv

STAMP=.venv/.fedunlearn-installed
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    # pip (not uv): on machines with local torch wheels pip finds them, uv would download GBs.
    .venv/bin/python -m pip install -q -e ".[test]"
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
