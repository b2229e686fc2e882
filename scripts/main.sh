#!/usr/bin/env bash
# Set everything up and run the main job on the embedded default dataset (digits).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
fedunlearn bench --dataset digits --model cnn --forget class:3 \
    --methods retrain,remi,finetune,neggrad_plus,random_label,fisher,salun \
    --seeds 3 --device auto --out runs/bench-digits "$@"
