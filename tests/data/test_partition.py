"""Partitioners: parsing, the disjoint/cover/non-empty contract, seeding, and the skew each one promises."""

from __future__ import annotations

import pytest
import torch

from fedunlearn.common.data.partition import (
    DIRICHLET_MAX_TRIES,
    PARTITIONERS,
    PartitionerSpec,
    dirichlet_minimum,
    parse_partitioner,
    partition,
)
from fedunlearn.common.errors import ConfigError, DataError, UnknownNameError

SPECS = ["iid", "class", "dirichlet:0.1", "dirichlet:1", "dirichlet:100"]


def _labels(n: int = 600, num_classes: int = 10, seed: int = 0) -> torch.Tensor:
    """Every class present, shuffled."""
    labels = torch.arange(n) % num_classes
    return labels[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]


def _label_skew(labels: torch.Tensor, parts: list[torch.Tensor], num_classes: int) -> float:
    """Mean total-variation distance between each part's label mix and the global one (0 = IID)."""
    overall = torch.bincount(labels, minlength=num_classes).double() / len(labels)
    mixes = [torch.bincount(labels[p], minlength=num_classes).double() / len(p) for p in parts]
    return float(torch.stack([0.5 * (mix - overall).abs().sum() for mix in mixes]).mean())


# --- parsing ---------------------------------------------------------------------------------------------


def test_registry_names() -> None:
    assert PARTITIONERS.names() == ["iid", "dirichlet", "class"]


@pytest.mark.parametrize(
    ("text", "name", "alpha"),
    [
        ("iid", "iid", None),
        (" class ", "class", None),
        ("dirichlet:0.5", "dirichlet", 0.5),
        ("dirichlet:2", "dirichlet", 2.0),
    ],
)
def test_parse_valid_specs(text: str, name: str, alpha: float | None) -> None:
    spec = parse_partitioner(text)
    assert spec == PartitionerSpec(name, alpha)
    assert parse_partitioner(str(spec)) == spec  # the canonical text parses back


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("foo", UnknownNameError, r"unknown partitioner 'foo'; use one of: iid, dirichlet:<alpha>.*, class"),
        ("", UnknownNameError, "use one of"),
        ("dirichlet", ConfigError, r"needs alpha; write it as dirichlet:<alpha>"),
        ("dirichlet:", ConfigError, r"alpha must be a number > 0, got ''"),
        ("dirichlet:abc", ConfigError, r"got 'abc' in 'dirichlet:abc'; e\.g\. dirichlet:0\.5"),
        ("dirichlet:-1", ConfigError, r"alpha must be a finite number > 0, got -1"),
        ("dirichlet:0", ConfigError, r"alpha must be a finite number > 0, got 0"),
        ("dirichlet:nan", ConfigError, r"got nan"),
        ("dirichlet:inf", ConfigError, r"got inf"),
        ("iid:3", ConfigError, r"iid takes no parameter, got 'iid:3'; write it as iid"),
        ("class:2", ConfigError, r"class takes no parameter"),
    ],
)
def test_parse_rejects_bad_specs_with_the_fix(text: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        parse_partitioner(text)


def test_specs_built_directly_are_validated_too() -> None:
    with pytest.raises(ConfigError, match="needs alpha"):
        PartitionerSpec("dirichlet")
    with pytest.raises(ConfigError, match="takes no parameter"):
        PartitionerSpec("iid", alpha=1.0)
    with pytest.raises(UnknownNameError):
        PartitionerSpec("shards")


# --- the contract every partitioner keeps ----------------------------------------------------------------


@pytest.mark.parametrize("text", SPECS)
@pytest.mark.parametrize("num_partitions", [1, 3, 10])
@pytest.mark.parametrize("seed", [0, 7])
def test_parts_are_disjoint_covering_non_empty_and_sorted(text: str, num_partitions: int, seed: int) -> None:
    labels = _labels()
    parts = partition(labels, num_partitions, parse_partitioner(text), seed=seed)
    assert len(parts) == num_partitions
    assert all(len(p) > 0 and p.dtype == torch.int64 for p in parts)
    assert all(torch.equal(p, torch.sort(p).values) for p in parts)
    assert torch.equal(torch.sort(torch.cat(parts)).values, torch.arange(len(labels)))


@pytest.mark.parametrize("text", SPECS)
def test_same_seed_same_parts(text: str) -> None:
    labels, spec = _labels(), parse_partitioner(text)
    first, again = (partition(labels, 5, spec, seed=11) for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


@pytest.mark.parametrize("text", ["iid", "dirichlet:0.5"])
def test_other_seed_other_parts(text: str) -> None:
    labels, spec = _labels(), parse_partitioner(text)
    first, other = partition(labels, 5, spec, seed=1), partition(labels, 5, spec, seed=2)
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("num_partitions", [0, -1, 601])
def test_num_partitions_must_fit_the_data(num_partitions: int) -> None:
    with pytest.raises(
        ConfigError, match=rf"between 1 and the number of samples \(600\), got {num_partitions}"
    ):
        partition(_labels(), num_partitions, parse_partitioner("iid"), seed=0)


def test_labels_must_be_one_dimensional() -> None:
    with pytest.raises(DataError, match="1-D"):
        partition(torch.zeros(4, 2, dtype=torch.int64), 2, parse_partitioner("iid"), seed=0)


# --- what each partitioner promises ------------------------------------------------------------------


def test_iid_sizes_differ_by_at_most_one_and_one_sample_per_part_works() -> None:
    sizes = [len(p) for p in partition(_labels(103), 10, parse_partitioner("iid"), seed=0)]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 103
    singles = partition(_labels(12), 12, parse_partitioner("iid"), seed=0)
    assert [len(p) for p in singles] == [1] * 12


def test_dirichlet_skew_grows_as_alpha_shrinks() -> None:
    labels, seeds = _labels(2000), range(3)

    def mean_skew(spec: PartitionerSpec) -> float:
        return sum(_label_skew(labels, partition(labels, 10, spec, seed=s), 10) for s in seeds) / len(seeds)

    skews = [mean_skew(PartitionerSpec("dirichlet", alpha)) for alpha in (100.0, 1.0, 0.3, 0.05)]
    assert skews == sorted(skews) and skews[0] < 0.1 * skews[-1]
    assert mean_skew(PartitionerSpec("iid")) < 0.2 * skews[-1]


def test_dirichlet_parts_reach_the_minimum_size() -> None:
    labels = _labels(1000)
    minimum = dirichlet_minimum(1000, 20)
    assert minimum == 10  # DIRICHLET_MIN_SIZE; not capped for this much data
    parts = partition(labels, 20, parse_partitioner("dirichlet:0.1"), seed=3)
    assert min(len(p) for p in parts) >= minimum


def test_impossible_dirichlet_gives_up_with_a_clear_error() -> None:
    labels = torch.tensor([0] * 10 + [1] * 10)  # alpha ~ 0: each class lands in ~1 part, 10 parts needed
    with pytest.raises(
        ConfigError, match=rf"in each of {DIRICHLET_MAX_TRIES} draws.*raise alpha or use fewer"
    ):
        partition(labels, 10, parse_partitioner("dirichlet:0.001"), seed=0)


def test_class_partitioner_deals_whole_classes_round_robin() -> None:
    labels = _labels(700, num_classes=7)
    parts = partition(labels, 3, parse_partitioner("class"), seed=5)
    classes = [set(labels[p].tolist()) for p in parts]
    assert sorted(len(c) for c in classes) == [2, 2, 3]
    assert set().union(*classes) == set(range(7)) and sum(len(c) for c in classes) == 7
    for part, owned in zip(parts, classes, strict=True):  # whole classes: every sample of an owned class
        assert len(part) == int(torch.isin(labels, torch.tensor(sorted(owned))).sum())


def test_class_partitioner_needs_at_least_one_class_per_part() -> None:
    with pytest.raises(
        ConfigError, match=r"<= the 4 classes present, got 5; use fewer partitions or dirichlet"
    ):
        partition(_labels(40, num_classes=4), 5, parse_partitioner("class"), seed=0)
