"""The unlearning phase's round plan, with the rounds and the gate scripted: a candidate that failed on
utility alone is trained back (a repair round) and judged again; one whose forget set still stands out
is unlearned further; every round is a look the gate counted."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import pytest
import torch

import fedunlearn.server.unlearning_phase as phase
from fedunlearn.common import protocol as P
from fedunlearn.common.audit.gate import GateResult
from fedunlearn.common.models import ModelSpec
from fedunlearn.common.scenario import parse_scenario
from fedunlearn.server.federation import AuditRound, Federation, NodeStatus
from fedunlearn.server.messaging import Traffic

ORIGINAL = {"w": torch.zeros(3)}
PASSED = GateResult(passed=True, attack="rmia", forget_auc=0.5, ci=(0.45, 0.55), tolerance=0.09, forget_accuracy=90.0,
                    holdout_accuracy=90.0, test_drop=0.0, forget_size=40, holdout_size=60, looks=3, false_alarm=0.05)
UTILITY_ONLY = replace(PASSED, passed=False, test_drop=5.0, reasons=("test accuracy dropped 5.00 points",))
LEAKED = replace(PASSED, passed=False, forget_auc=0.7, leaked=True, reasons=("rmia attack AUC 0.700",))


class _Silent:
    """A messenger nothing is sent through: every round and the gate are scripted."""

    @contextmanager
    def metered(self) -> Iterator[Traffic]:
        yield Traffic()


@dataclass
class _Evaluator:
    """Test accuracy without a model."""

    def ta(self, state: Any, classes: Any = ()) -> float:
        return 85.0


def _run(monkeypatch: pytest.MonkeyPatch, verdicts: list[GateResult]) -> tuple[list[str], phase.PhaseRecord]:
    """Run a phase whose gate says ``verdicts`` in turn; returns the kinds of round run, in order."""
    scenario = parse_scenario({"scenario": {"name": "plan"}, "unlearning": {"max_rounds": 3}})
    fed = Federation(_Silent(), scenario, [100, 101])  # type: ignore[arg-type]
    ran: list[str] = []
    judged = iter(verdicts)

    def unlearn(fed: Any, plan: Any, state: Any, *args: Any) -> dict[str, torch.Tensor]:
        ran.append("unlearn")
        return {"w": state["w"] + 1}

    def train(state: Any, round_: int, nodes: Any) -> dict[str, torch.Tensor]:
        ran.append("repair")
        assert sorted(nodes) == [100, 101]  # every node with retain data trains, the requester too
        return {"w": state["w"] - 0.5}

    monkeypatch.setattr(phase, "_unlearning_round", unlearn)
    monkeypatch.setattr(fed, "train_round", train)
    monkeypatch.setattr(phase, "_judge", lambda *a, **k: phase._Judged(AuditRound({}, {}), next(judged), 85.0))
    monkeypatch.setattr(phase, "_control", lambda *a, **k: None)
    monkeypatch.setattr(phase, "_baselines", lambda *a, **k: None)
    monkeypatch.setattr(phase, "_commit", lambda *a, **k: None)
    monkeypatch.setattr(phase, "_defer", lambda *a, **k: None)
    statuses = {100: NodeStatus(100, 0, 500, 200, ("req-100",), ("sample",), 40, (40,), (P.NO_CLASS,)),
                101: NodeStatus(101, 1, 500, 200, (), (), 0, (), ())}
    record, _ = phase.run_unlearning_phase(fed, _Evaluator(), ModelSpec("mlp", 1, 8, 10),  # type: ignore[arg-type]
                                           ORIGINAL, statuses, plan=scenario.unlearning,
                                           baselines=scenario.baselines, after_round=5, start=ORIGINAL,
                                           recipe=scenario.federation.recipe())
    assert record.round_kinds == ran
    return ran, record


def test_a_utility_failure_is_repaired_and_judged_again(monkeypatch: pytest.MonkeyPatch) -> None:
    ran, record = _run(monkeypatch, [UTILITY_ONLY, PASSED])
    assert ran == ["unlearn", "repair"]
    assert record.passed and record.states["unlearned"]["w"].tolist() == [0.5] * 3


def test_a_forget_set_that_still_stands_out_is_unlearned_further(monkeypatch: pytest.MonkeyPatch) -> None:
    ran, record = _run(monkeypatch, [LEAKED, UTILITY_ONLY, LEAKED])
    assert ran == ["unlearn", "unlearn", "repair"]
    assert not record.passed and len(record.gate_history) == 3  # three looks, all of them judged
