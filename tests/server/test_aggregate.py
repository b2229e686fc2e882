"""Checking client updates and combining them: FedAvg and the unlearning round's train-and-forget update."""

from __future__ import annotations

import pytest
import torch

from fedunlearn.server.aggregate import (
    clip_to_median,
    clip_update,
    fedavg,
    rejection_reason,
    train_and_forget_update,
    update_norm,
    with_unlearning_steps,
)


def _state(weight: float, bias: float, steps: int = 0) -> dict[str, torch.Tensor]:
    return {
        "layer.weight": torch.full((2, 3), weight),
        "layer.bias": torch.full((2,), bias),
        "bn.num_batches_tracked": torch.tensor(steps, dtype=torch.int64),
    }


def _random_state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(4, 5, generator=g), "b": torch.randn(5, generator=g),
            "count": torch.tensor(seed, dtype=torch.int64)}


# --- fedavg ----------------------------------------------------------------------------------------------


def test_fedavg_weights_by_examples() -> None:
    merged = fedavg([(_state(1.0, 10.0), 10), (_state(4.0, 40.0), 30), (_state(-2.0, 0.0), 60)])
    expected_w = (1.0 * 10 + 4.0 * 30 - 2.0 * 60) / 100
    assert torch.allclose(merged["layer.weight"], torch.full((2, 3), expected_w))
    assert torch.allclose(merged["layer.bias"], torch.full((2,), (100 + 1200) / 100))
    assert merged["layer.weight"].dtype == torch.float32


def test_fedavg_equal_weights_is_the_mean_and_one_update_is_itself() -> None:
    states = [_random_state(s) for s in range(3)]
    merged = fedavg([(s, 7) for s in states])
    assert torch.allclose(merged["w"], torch.stack([s["w"] for s in states]).mean(0), atol=1e-6)
    alone = fedavg([(states[1], 3)])
    assert torch.equal(alone["w"], states[1]["w"]) and torch.equal(alone["b"], states[1]["b"])


def test_fedavg_copies_integer_buffers_from_the_first_update() -> None:
    first = _state(0.0, 0.0, steps=5)
    merged = fedavg([(first, 1), (_state(1.0, 1.0, steps=99), 1)])
    assert merged["bn.num_batches_tracked"].dtype == torch.int64
    assert int(merged["bn.num_batches_tracked"]) == 5
    first["bn.num_batches_tracked"] += 1  # a copy, not the caller's tensor
    assert int(merged["bn.num_batches_tracked"]) == 5


def test_fedavg_does_not_touch_its_inputs() -> None:
    a, b = _random_state(0), _random_state(1)
    copies = [{k: v.clone() for k, v in s.items()} for s in (a, b)]
    fedavg([(a, 1), (b, 2)])
    for state, copy in zip((a, b), copies, strict=True):
        assert all(torch.equal(state[k], copy[k]) for k in state)


@pytest.mark.parametrize("updates", [[], [(_state(1.0, 1.0), 0)], [(_state(1.0, 1.0), 2), (_state(1.0, 1.0), -2)]])
def test_fedavg_refuses_nothing_to_average(updates: list[tuple[dict[str, torch.Tensor], float]]) -> None:
    with pytest.raises(ValueError, match="fedavg needs"):
        fedavg(updates)


# --- rejection_reason ------------------------------------------------------------------------------------


REFERENCE = _state(0.0, 0.0)


def test_a_valid_update_has_no_rejection_reason() -> None:
    assert rejection_reason(_state(3.0, -1.0, steps=7), REFERENCE) is None


def test_missing_and_extra_keys_are_rejected() -> None:
    missing = {k: v for k, v in _state(1.0, 1.0).items() if k != "layer.bias"}
    reason = rejection_reason(missing, REFERENCE)
    assert reason is not None and "missing ['layer.bias']" in reason and "unexpected []" in reason
    extra = {**_state(1.0, 1.0), "head.weight": torch.zeros(1)}
    reason = rejection_reason(extra, REFERENCE)
    assert reason is not None and "unexpected ['head.weight']" in reason and "missing []" in reason


def test_a_wrong_shape_is_rejected() -> None:
    update = {**_state(1.0, 1.0), "layer.weight": torch.zeros(3, 2)}
    assert rejection_reason(update, REFERENCE) == "array layer.weight has shape (3, 2), expected (2, 3)"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_rejected(bad: float) -> None:
    update = _state(1.0, 1.0)
    update["layer.weight"][1, 2] = bad
    assert rejection_reason(update, REFERENCE) == "array layer.weight holds NaN or Inf"


# --- train_and_forget_update -----------------------------------------------------------------------------


def _mean_delta(group: list[tuple[dict[str, torch.Tensor], float]], current: dict[str, torch.Tensor],
                key: str) -> torch.Tensor:
    total = sum(w for _, w in group)
    return sum(((s[key] - current[key]) * (w / total) for s, w in group), torch.zeros_like(current[key]))


def test_the_unlearning_step_is_added_in_full_on_top_of_fedavg_training() -> None:
    current = _random_state(10)
    trained = [(_random_state(13), 100), (_random_state(14), 300), (_random_state(15), 100)]
    unlearned = [(_random_state(11), 20), (_random_state(12), 60)]
    merged = train_and_forget_update(current, trained, unlearned)
    for key in ("w", "b"):
        # FedAvg of the training (example-weighted), then the forget-size-weighted mean unlearning step,
        # not scaled down by the requesters' share of the examples
        expected = fedavg(trained)[key] + _mean_delta(unlearned, current, key)
        assert torch.allclose(merged[key], expected, atol=1e-5), key
    assert torch.equal(merged["count"], trained[0][0]["count"])


def test_the_steps_go_on_a_given_merge_which_is_left_as_it_was() -> None:
    """The step guard measures the FedAvg alone and with the steps: one merge serves both."""
    current, merged = _random_state(20), _random_state(21)
    before = {k: v.clone() for k, v in merged.items()}
    unlearned = [(_random_state(22), 1), (_random_state(23), 1)]
    summed = with_unlearning_steps(current, merged, unlearned, combine="sum")
    assert all(torch.equal(merged[k], before[k]) for k in merged)
    expected = merged["w"] + sum(s["w"] - current["w"] for s, _ in unlearned)
    assert torch.allclose(summed["w"], expected, atol=1e-6)
    assert torch.equal(summed["count"], merged["count"])


def test_without_unlearning_it_is_fedavg_and_without_training_the_step_lands_on_the_current_model() -> None:
    current = _random_state(0)
    trained = [(_random_state(1), 5), (_random_state(2), 15)]
    plain = train_and_forget_update(current, trained, [])
    assert all(torch.allclose(plain[k].float(), fedavg(trained)[k].float(), atol=1e-6) for k in current)
    unlearned = [(_random_state(3), 4)]
    leaving = train_and_forget_update(current, [], unlearned)  # a leaving client alone: no retain data anywhere
    assert torch.allclose(leaving["w"], unlearned[0][0]["w"], atol=1e-6)
    assert torch.equal(leaving["count"], current["count"])  # integer buffers stay the current model's
    unchanged = train_and_forget_update(current, [], [])
    assert all(torch.equal(unchanged[k], current[k]) for k in current)
    unchanged["w"] += 1  # a copy
    assert not torch.equal(unchanged["w"], current["w"])


def test_an_unlearning_update_that_returns_the_current_model_changes_nothing() -> None:
    current = _random_state(3)
    trained = [(_random_state(4), 10)]
    merged = train_and_forget_update(current, trained, [({k: v.clone() for k, v in current.items()}, 7)])
    assert torch.allclose(merged["w"], fedavg(trained)["w"], atol=1e-6)


# --- bounding an unlearning update ------------------------------------------------------------------------


def test_an_update_within_the_bound_is_untouched_and_a_larger_one_is_scaled_to_it() -> None:
    current = {"w": torch.zeros(4), "steps": torch.tensor(3)}
    small = {"w": torch.tensor([0.3, 0.4, 0.0, 0.0]), "steps": torch.tensor(5)}
    kept, scale = clip_update(current, small, bound=1.0)
    assert scale == 1.0 and torch.equal(kept["w"], small["w"])
    huge = {"w": torch.tensor([300.0, 400.0, 0.0, 0.0]), "steps": torch.tensor(5)}
    clipped, scale = clip_update(current, huge, bound=1.0)
    assert scale == pytest.approx(1 / 500)
    assert update_norm(current, clipped) == pytest.approx(1.0)
    assert torch.equal(clipped["steps"], huge["steps"])  # integer buffers are not scaled


def test_disjoint_forget_sets_get_their_steps_in_full_and_a_shared_class_its_mean() -> None:
    current = {"w": torch.zeros(2)}
    first, second = ({"w": torch.tensor([1.0, 0.0])}, 10.0), ({"w": torch.tensor([0.0, 3.0])}, 30.0)
    summed = train_and_forget_update(current, [], [first, second], combine="sum")
    assert torch.allclose(summed["w"], torch.tensor([1.0, 3.0]))
    averaged = train_and_forget_update(current, [], [first, second], combine="mean")
    assert torch.allclose(averaged["w"], torch.tensor([0.25, 2.25]))


# --- bounding training updates by the round's median ------------------------------------------------------


def _moved(norm: float) -> tuple[dict[str, torch.Tensor], float]:
    return {"w": torch.tensor([norm, 0.0])}, 10.0


def test_a_training_update_far_above_the_median_is_clipped_to_a_multiple_of_it() -> None:
    current = {"w": torch.zeros(2)}
    kept, scales = clip_to_median(current, [_moved(1.0), _moved(2.0), _moved(1000.0)], factor=3.0)
    assert scales[:2] == [1.0, 1.0] and scales[2] == pytest.approx(6.0 / 1000.0)  # the median is 2
    assert update_norm(current, kept[2][0]) == pytest.approx(6.0) and [w for _, w in kept] == [10.0] * 3


def test_with_two_clients_the_larger_one_cannot_lift_the_bound_with_its_own_norm() -> None:
    current = {"w": torch.zeros(2)}
    kept, scales = clip_to_median(current, [_moved(1.0), _moved(1000.0)], factor=3.0)
    assert scales[0] == 1.0 and update_norm(current, kept[1][0]) == pytest.approx(3.0)  # the lower median: 1


def test_factor_zero_leaves_every_update_as_it_came() -> None:
    current = {"w": torch.zeros(2)}
    kept, scales = clip_to_median(current, [_moved(1.0), _moved(1000.0)], factor=0.0)
    assert scales == [1.0, 1.0] and update_norm(current, kept[1][0]) == pytest.approx(1000.0)
