"""What every export is asked for (int8 mode, calibration) and the images it is checked and calibrated on."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.edge.inputs import EVAL_SAMPLES, PARITY_SAMPLES, package_inputs
from fedunlearn.common.edge.plan import CalibrationSource, ExportPlan, Int8Mode
from fedunlearn.common.errors import ConfigError
from fedunlearn.common.scenario import parse_scenario


def test_an_int8_mode_is_parsed_in_one_place_and_named_where_it_came_from() -> None:
    assert [Int8Mode.parse(text, "--int8") for text in ("static", "dynamic", "none")] == list(Int8Mode)
    with pytest.raises(ConfigError, match=r"--int8 must be static, dynamic or none, got 'int4'"):
        Int8Mode.parse("int4", "--int8")
    assert ExportPlan(int8="dynamic").int8 is Int8Mode.DYNAMIC  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="calibration must be >= 1"):
        ExportPlan(calibration=0)


def test_the_scenario_export_section_is_an_export_plan() -> None:
    head = {"scenario": {"name": "plan"}}
    assert parse_scenario({**head, "export": {"int8": "none", "calibration": 64}}).export == ExportPlan(
        Int8Mode.NONE, 64)
    with pytest.raises(ConfigError, match=r"\[export\]: int8 must be static, dynamic or none, got 'fp16'"):
        parse_scenario({**head, "export": {"int8": "fp16"}})


def _numbered(count: int, first: int = 0) -> LabeledData:
    """``count`` one-pixel images whose value is their id, so every set can be told apart."""
    ids = torch.arange(first, first + count)
    return LabeledData(ids.float().view(-1, 1, 1, 1), ids % 10, ids)


def _ids(images: Any) -> set[int]:
    return {int(v) for v in torch.as_tensor(images).flatten().tolist()}


def test_test_set_calibration_never_measures() -> None:
    test = _numbered(400)
    inputs = package_inputs(test, plan=ExportPlan(Int8Mode.DYNAMIC, calibration=100), seed=3,
                            calibrate_on=CalibrationSource.TEST_SET)
    assert inputs.calibration is not None and inputs.measured is not None and inputs.kind == "test-set"
    assert len(inputs.calibration) == 100 and len(inputs.measured) == 300
    assert _ids(inputs.calibration).isdisjoint(_ids(inputs.measured.ids))
    assert torch.equal(inputs.parity, inputs.measured.x[:PARITY_SAMPLES])
    assert np.array_equal(inputs.labels, inputs.measured.y.numpy())  # type: ignore[arg-type]
    half = package_inputs(test, plan=ExportPlan(calibration=10**6), seed=3, calibrate_on=CalibrationSource.TEST_SET)
    assert half.calibration is not None and len(half.calibration) == 200


def test_train_calibration_is_static_only_and_measures_on_test_images() -> None:
    test, train = _numbered(3000), _numbered(500, first=10_000)
    static = package_inputs(test, plan=ExportPlan(calibration=50), seed=0, calibrate_on=CalibrationSource.TRAIN,
                            train=train)
    assert static.calibration is not None and len(static.calibration) == 50
    assert _ids(static.calibration) <= _ids(train.ids)
    assert static.measured is not None and len(static.measured) == EVAL_SAMPLES
    dynamic = package_inputs(test, plan=ExportPlan(Int8Mode.DYNAMIC), seed=0, calibrate_on=CalibrationSource.TRAIN,
                             train=train)
    assert dynamic.calibration is None
    whole = package_inputs(test, plan=ExportPlan(), seed=0, calibrate_on=CalibrationSource.TRAIN, train=train,
                           measure=None)
    assert whole.measured is not None and _ids(whole.measured.ids) == _ids(test.ids)
