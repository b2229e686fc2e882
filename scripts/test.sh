#!/usr/bin/env bash
# Set everything up, lint, and run the whole test suite (slow/e2e tests included).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
ruff check common client server simulations tests
mypy
# pyproject's addopts skip the slow (end-to-end) tests in a bare `pytest`; this command runs them too.
pytest -q -m "slow or not slow" "$@"
