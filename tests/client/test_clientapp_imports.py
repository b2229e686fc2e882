"""A SuperNode starts a fresh ClientApp process for every message, so what the ClientApp imports is paid on
every message: it must not load what nodes never use (torchvision for the mlp and cnn, scikit-learn,
scipy.stats). A behaviour check in a fresh interpreter, not a timing one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOT_NEEDED = ("torchvision", "sklearn", "scipy.stats")
PROBE = f"""
import sys
import fedunlearn.client.app
from fedunlearn.common.models import ModelSpec, build_model
build_model(ModelSpec("cnn", in_channels=1, image_size=28, num_classes=10))
print(" ".join(sorted(name for name in {NOT_NEEDED!r} if name in sys.modules)))
"""


def test_the_clientapp_and_a_cnn_load_no_torchvision_sklearn_or_scipy_stats() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [], done.stdout
