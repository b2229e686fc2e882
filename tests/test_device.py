"""Device names: cpu always works, auto falls back, an absent accelerator is a clear ConfigError."""

from __future__ import annotations

import pytest
import torch

from fedunlearn.common.device import DEVICE_NAMES, resolve_device
from fedunlearn.common.errors import ConfigError


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return backend is not None and backend.is_available()


def test_cpu() -> None:
    assert resolve_device("cpu") == torch.device("cpu")


def test_auto_prefers_cuda_then_mps_then_cpu() -> None:
    device = resolve_device("auto")
    if torch.cuda.is_available():
        assert device.type == "cuda"
    elif _mps_available():
        assert device.type == "mps"
    else:
        assert device == torch.device("cpu")
    torch.zeros(1, device=device)  # and it is usable


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cuda") as excinfo:
        resolve_device("cuda")
    assert "cpu" in str(excinfo.value)  # says what to use instead


@pytest.mark.skipif(not torch.cuda.is_available(), reason="this machine has no CUDA")
def test_cuda_with_a_gpu() -> None:
    assert resolve_device("cuda").type == "cuda"


@pytest.mark.skipif(_mps_available(), reason="this machine has MPS")
def test_mps_without_mps_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="mps"):
        resolve_device("mps")


@pytest.mark.parametrize("name", ["tpu", "CPU", ""])
def test_unknown_name_is_a_config_error_listing_the_valid_ones(name: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        resolve_device(name)
    for valid in DEVICE_NAMES:
        assert valid in str(excinfo.value)
