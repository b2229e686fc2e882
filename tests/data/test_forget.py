"""Forget-set selectors: parsing, what each selects, seeding, and every bad input caught before training."""

from __future__ import annotations

import pytest
import torch

from fedunlearn.common.data.forget import ForgetSpec, parse_forget_spec, select_forget_ids
from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.errors import ConfigError, DataError


def _train(labels: list[int]) -> LabeledData:
    """Ids are not positions (1000, 1003, 1006, ...), so a selector that confuses the two fails."""
    n = len(labels)
    return LabeledData(torch.zeros(n, 1, 2, 2), torch.tensor(labels), 1000 + 3 * torch.arange(n))


TRAIN = _train([0, 1, 2, 3] * 25)  # 100 samples, 4 classes


# --- parsing ---------------------------------------------------------------------------------------------


def test_parse_random() -> None:
    spec = parse_forget_spec("random:0.1")
    assert (spec.kind, spec.fraction, spec.granularity, spec.forgotten_classes) == (
        "random",
        0.1,
        "sample",
        (),
    )


def test_parse_class() -> None:
    spec = parse_forget_spec(" class:3 ")
    assert (spec.kind, spec.class_id, spec.granularity, spec.forgotten_classes) == ("class", 3, "class", (3,))


def test_parse_ids_keeps_order_and_tolerates_spaces() -> None:
    spec = parse_forget_spec("ids:17, 3 ,99")
    assert (spec.kind, spec.ids, spec.granularity, spec.forgotten_classes) == (
        "ids",
        (17, 3, 99),
        "sample",
        (),
    )


@pytest.mark.parametrize("text", ["random:0.25", "class:0", "ids:5,1,9"])
def test_canonical_text_parses_back(text: str) -> None:
    assert str(parse_forget_spec(text)) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("random:0", r"random:0\.0 needs a fraction strictly between 0 and 1; e\.g\. random:0\.1"),
        ("random:1", r"random:1\.0 needs a fraction strictly between 0 and 1"),
        ("random:-0.2", r"random:-0\.2 needs a fraction"),
        ("random:nan", r"random:nan needs a fraction"),
        ("random:abc", r"'random:abc' has a malformed value 'abc'; write random:<fraction>"),
        ("random:", r"'random:' is malformed; write random:<fraction>"),
        ("random", r"'random' is malformed"),
        ("class:-1", r"class:-1 needs a class index >= 0"),
        ("class:1.5", r"malformed value '1\.5'"),
        ("class:x", r"malformed value 'x'"),
        ("ids:", r"'ids:' is malformed"),
        ("ids:3,,4", r"malformed value '3,,4'"),
        ("ids:3,x", r"malformed value '3,x'"),
        ("ids:-3,4", r"must be sample ids >= 0, got \[-3\]"),
        ("ids:3,4,3", r"list \[3\] more than once; list each id once"),
        ("samples:3", r"'samples:3' is malformed; write random:<fraction> .*class:<k> .*ids:<id>"),
        ("", r"'' is malformed"),
    ],
)
def test_parse_rejects_bad_text_with_the_value_and_the_fix(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_forget_spec(text)


def test_specs_built_directly_are_validated_too() -> None:
    with pytest.raises(ConfigError, match="takes exactly one value"):
        ForgetSpec("random", fraction=0.1, class_id=2)
    with pytest.raises(ConfigError, match="takes exactly one value, got none"):
        ForgetSpec("ids")
    with pytest.raises(ConfigError, match="unknown forget selector kind 'client'"):
        ForgetSpec("client", ids=(1,))  # type: ignore[arg-type]


# --- selection -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fraction", "expected"), [(0.1, 10), (0.25, 25), (0.5, 50), (0.013, 1)])
def test_random_selects_the_rounded_share_of_training_ids(fraction: float, expected: int) -> None:
    chosen = select_forget_ids(ForgetSpec("random", fraction=fraction), TRAIN, num_classes=4, seed=0)
    assert len(chosen) == expected and chosen.dtype == torch.int64
    assert torch.equal(chosen, torch.sort(chosen).values) and len(torch.unique(chosen)) == expected
    assert bool(torch.isin(chosen, TRAIN.ids).all())


def test_random_is_seeded() -> None:
    spec = parse_forget_spec("random:0.2")
    first, again, other = (select_forget_ids(spec, TRAIN, num_classes=4, seed=s) for s in (3, 3, 4))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_class_selects_every_training_sample_of_that_class() -> None:
    chosen = select_forget_ids(parse_forget_spec("class:2"), TRAIN, num_classes=4, seed=0)
    assert torch.equal(chosen, TRAIN.ids[TRAIN.y == 2])
    assert len(chosen) == 25


def test_ids_are_returned_sorted() -> None:
    chosen = select_forget_ids(parse_forget_spec("ids:1009,1000,1297"), TRAIN, num_classes=4, seed=0)
    assert chosen.tolist() == [1000, 1009, 1297]


@pytest.mark.parametrize(
    ("text", "train", "error", "message"),
    [
        ("class:4", TRAIN, ConfigError, r"class:4 is out of range: the dataset has 4 classes \(0\.\.3\)"),
        (
            "class:3",
            _train([0, 1, 2] * 5),
            DataError,
            r"class:3 matches no training sample; classes present: 0, 1, 2",
        ),
        ("class:0", _train([0] * 5), DataError, r"selects all 5 training samples, leaving nothing to retain"),
        (
            "random:0.004",
            TRAIN,
            DataError,
            r"selects no sample of the 100 training samples; .*at least 0\.01",
        ),
        ("random:0.996", TRAIN, DataError, r"random:0\.996 selects all 100 training samples"),
        ("ids:1000,5,7", TRAIN, DataError, r"2 of the 3 forget ids are not in this training set: 5, 7;"),
        ("ids:1,2,3,4,5,6,7", TRAIN, DataError, r"1, 2, 3, 4, 5 \(and 2 more\)"),
        ("ids:1000,1003", _train([0, 1]), DataError, r"selects all 2 training samples"),
        ("random:0.5", _train([]), DataError, r"training set is empty"),
    ],
)
def test_bad_selections_fail_before_training(
    text: str, train: LabeledData, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        select_forget_ids(parse_forget_spec(text), train, num_classes=4, seed=0)
