"""Model files: a round trip keeps the weights' hash, and every damaged or replaced file is a ModelError."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from fedunlearn.common.checkpoint import load_checkpoint, save_checkpoint, state_sha256
from fedunlearn.common.errors import ModelError
from fedunlearn.common.models import ModelSpec, build_model
from fedunlearn.common.nodes.storage import sha256_file

SPEC = ModelSpec(name="mlp", in_channels=1, image_size=8, num_classes=10)


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, str, dict[str, torch.Tensor]]:
    state = build_model(SPEC, seed=1).state_dict()
    path = tmp_path / "models" / "global.pt"
    digest = save_checkpoint(path, state, SPEC, meta={"round": 12, "note": "after unlearning"})
    return path, digest, state


def test_round_trip_keeps_the_weights_and_their_hash(saved: tuple[Path, str, dict[str, torch.Tensor]]) -> None:
    path, digest, state = saved
    assert digest == sha256_file(path)
    model, meta = load_checkpoint(path, expected_sha256=digest)
    loaded = model.state_dict()
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    assert meta["model_sha256"] == state_sha256(state) == state_sha256(loaded)
    assert meta["spec"] == SPEC
    assert (meta["round"], meta["note"]) == (12, "after unlearning")
    x = torch.randn(3, 1, 8, 8)
    original = build_model(SPEC, seed=1).eval()
    assert torch.allclose(model.eval()(x), original(x))
    assert not list(path.parent.glob(".*.tmp"))  # the atomic write left no temporary file


def test_load_without_an_expected_hash(saved: tuple[Path, str, dict[str, torch.Tensor]]) -> None:
    path, _, state = saved
    _, meta = load_checkpoint(path)
    assert meta["model_sha256"] == state_sha256(state)


def test_state_hash_depends_on_the_weights_not_the_key_order() -> None:
    state = build_model(SPEC, seed=1).state_dict()
    reference = state_sha256(state)
    assert state_sha256(dict(reversed(list(state.items())))) == reference
    assert state_sha256({k: v.clone() for k, v in state.items()}) == reference
    changed = {k: v.clone() for k, v in state.items()}
    key = next(iter(changed))
    changed[key].view(-1)[0] += 1e-3
    assert state_sha256(changed) != reference
    assert state_sha256(build_model(SPEC, seed=2).state_dict()) != reference
    # the same bytes under another dtype or shape are another model
    first = {"w": torch.zeros(2, 3)}
    assert state_sha256(first) != state_sha256({"w": torch.zeros(3, 2)})
    assert state_sha256(first) != state_sha256({"w": torch.zeros(2, 3, dtype=torch.int32)})
    assert state_sha256(first) != state_sha256({"v": torch.zeros(2, 3)})


def test_a_wrong_expected_hash_is_refused(saved: tuple[Path, str, dict[str, torch.Tensor]]) -> None:
    path, digest, _ = saved
    with pytest.raises(ModelError, match="does not match its recorded sha256"):
        load_checkpoint(path, expected_sha256="0" * 64)
    other = path.with_name("other.pt")
    save_checkpoint(other, build_model(SPEC, seed=2).state_dict(), SPEC)
    os.replace(other, path)  # a different (valid) model put in its place
    with pytest.raises(ModelError, match="does not match its recorded sha256"):
        load_checkpoint(path, expected_sha256=digest)


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "empty"])
def test_a_damaged_file_is_a_model_error(saved: tuple[Path, str, dict[str, torch.Tensor]], damage: str) -> None:
    path, _, _ = saved
    payload = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(payload[: len(payload) // 2])
    elif damage == "random bytes":
        path.write_bytes(torch.randint(0, 256, (len(payload),), generator=torch.Generator().manual_seed(0))
                         .to(torch.uint8).numpy().tobytes())
    else:
        path.write_bytes(b"")
    with pytest.raises(ModelError, match="cannot be loaded"):
        load_checkpoint(path)


def test_weights_that_do_not_match_their_recorded_hash_are_refused(tmp_path: Path) -> None:
    state = build_model(SPEC, seed=1).state_dict()
    path = tmp_path / "m.pt"
    torch.save({"spec": SPEC.to_dict(), "state": state, "model_sha256": "f" * 64, "meta": {}}, path)
    with pytest.raises(ModelError, match="weights do not match their recorded hash"):
        load_checkpoint(path)


def test_a_file_for_another_architecture_is_a_model_error(tmp_path: Path) -> None:
    state = build_model(SPEC, seed=1).state_dict()
    path = tmp_path / "m.pt"
    save_checkpoint(path, state, ModelSpec(name="cnn", in_channels=1, image_size=8, num_classes=10))
    with pytest.raises(ModelError, match="cannot be loaded"):
        load_checkpoint(path)


def test_a_missing_file_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere.pt")
    (tmp_path / "a-directory.pt").mkdir()
    with pytest.raises(ModelError, match="does not exist"):
        load_checkpoint(tmp_path / "a-directory.pt")
