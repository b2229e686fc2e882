#!/usr/bin/env bash
# Set everything up and run the main job on the embedded default dataset (digits): a five-client
# federation on Flower's Simulation Runtime where two clients file forget requests mid-training.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
fedunlearn simulate simulations/digits-sample.toml --out runs/digits-sample "$@"
