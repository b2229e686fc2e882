#!/usr/bin/env bash
# Set everything up, lint, and run the whole test suite (slow/e2e tests included).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
ruff check common client server simulations tests
# mypy's incremental cache lives beside the dependency venv ($CACHE, from setup.sh), not in the checkout: a clean
# clone rechecks only what changed (mypy compares each file's hash), about 2 s instead of 40.
MYPY_CACHE_DIR="$CACHE/mypy" mypy
# pyproject's addopts skip the slow (end-to-end) tests in a bare `pytest`; this command runs them too, on three
# pytest-xdist workers: the deployment tests spend much of their time waiting on processes and heartbeats.
pytest -q -m "slow or not slow" -n "${FEDUNLEARN_TEST_WORKERS:-3}" --dist loadgroup "$@"
