"""ReMI: forget samples come to look like non-members, the task survives, and it does not overshoot.

Every check runs ReMI with its current default hyper-parameters (which are being tuned), so
these are statements about behaviour, never about particular default values.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch.nn import functional as F

from fedunlearn.common.audit.roc import roc_auc
from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.errors import ConfigError, UnknownNameError
from fedunlearn.common.models import Classifier
from fedunlearn.common.training import accuracy, predict_logits
from fedunlearn.common.unlearning.base import UnlearningResult, UnlearningTask, parse_params, run_method
from fedunlearn.common.unlearning.leakage import LEAKAGE, membership_statistic
from fedunlearn.common.unlearning.remi import RemiParams, TracePoint, _Objective, _Workspace
from fedunlearn.common.unlearning.stopping import AuditSets, StoppingRule, local_audit

CPU = torch.device("cpu")


def _weights(model: Classifier) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _audit(model: Classifier, task: UnlearningTask) -> TracePoint:
    """The local audit ReMI stops on, over the task's whole forget and reference sets."""
    sets = AuditSets(task.forget, task.reference, task.retain, task.utility_set)
    return local_audit(model, sets, 0)


@pytest.fixture(scope="module")
def remi_on_class(class_task: UnlearningTask) -> UnlearningResult:
    return run_method("remi", class_task)


@pytest.fixture(scope="module")
def remi_on_samples(memorised_sample_task: UnlearningTask) -> UnlearningResult:
    return run_method("remi", memorised_sample_task)


def test_class_forgetting_moves_the_class_to_the_reference(
    class_task: UnlearningTask, remi_on_class: UnlearningResult
) -> None:
    task = class_task
    before = _audit(task.original, task)
    after = _audit(remi_on_class.model, task)
    # the original recognises the class and tells its samples from the reference perfectly
    assert before.forget_accuracy > 95.0 and before.forget_auc > 0.95
    assert after.forget_accuracy < 20.0
    assert abs(after.forget_auc - 0.5) < 0.15
    assert abs(after.forget_accuracy - after.reference_accuracy) < abs(
        before.forget_accuracy - before.reference_accuracy
    )
    assert accuracy(remi_on_class.model, task.retain, device=CPU) >= 90.0


def test_a_gap_within_audit_noise_is_not_chased(
    memorised_sample_task: UnlearningTask, remi_on_samples: UnlearningResult
) -> None:
    """60 forget samples vs ~400 non-members: a 3-point accuracy gap is within two standard
    errors, so ReMI must not move the model (chasing noise is how overshoot starts)."""
    task = memorised_sample_task
    before = _audit(task.original, task)
    assert before.forget_accuracy - before.reference_accuracy >= 3.0  # members do stand out a bit
    assert remi_on_samples.stop_reason == "already indistinguishable"
    assert remi_on_samples.steps == 0
    assert _same_weights(_weights(task.original), _weights(remi_on_samples.model))


def test_stopping_tolerances_follow_the_audit_noise() -> None:
    params = RemiParams()
    point = TracePoint(0, 100.0, 90.0, 100.0, 90.0, 0.6)

    def rule(n_forget: int, n_reference: int) -> StoppingRule:
        data = lambda n: LabeledData(torch.zeros(n, 1), torch.zeros(n, dtype=torch.long), torch.arange(n))  # noqa: E731
        sets = AuditSets(data(n_forget), data(n_reference), data(1000), data(1000))
        return StoppingRule(params, point, sets)

    small, large = rule(60, 400), rule(1000, 1000)
    # two standard errors of a difference of two 90% accuracies
    assert large.accuracy_band(point) == pytest.approx(200 * (0.09 * (2 / 1000)) ** 0.5)
    assert small.accuracy_band(point) > large.accuracy_band(point) > params.accuracy_band
    assert small.auc_tolerance > large.auc_tolerance >= params.auc_tolerance
    # the configured tolerance is a floor
    assert rule(10**6, 10**6).auc_tolerance == params.auc_tolerance
    # noise_z scales the noise floor (a federation's clients stop tighter than the default 2 SE)
    sets = AuditSets(*(LabeledData(torch.zeros(n, 1), torch.zeros(n, dtype=torch.long), torch.arange(n))
                       for n in (60, 400, 1000, 1000)))
    tight = StoppingRule(RemiParams(noise_z=0.5), point, sets)
    assert tight.accuracy_band(point) == pytest.approx(max(params.accuracy_band, small.accuracy_band(point) / 4))
    assert tight.auc_tolerance == pytest.approx(max(params.auc_tolerance, (small.auc_tolerance) / 4))


def test_an_audit_scores_a_reference_that_is_also_the_utility_set_once(monkeypatch: pytest.MonkeyPatch) -> None:
    data = lambda n: LabeledData(torch.randn(n, 4), torch.randint(0, 3, (n,)), torch.arange(n))  # noqa: E731
    forget, reference, retain, other = data(30), data(2500), data(50), data(1500)
    shared = AuditSets.drawn(forget, reference, retain, reference, torch.Generator().manual_seed(0), None)
    own = AuditSets.drawn(forget, reference, retain, other, torch.Generator().manual_seed(0), None)
    # sample forgetting: the utility set is the reference, so both get the same capped sample
    assert shared.utility is shared.reference and len(shared.reference) == 1000
    assert own.utility is not own.reference and len(own.utility) == 1000
    scored: list[int] = []
    monkeypatch.setattr("fedunlearn.common.unlearning.stopping.predict_logits",
                        lambda model, x, device: scored.append(len(x)) or model(x).detach())
    model = Classifier(torch.nn.Identity(), torch.nn.Identity(), torch.nn.Linear(4, 3))
    point = local_audit(model, shared, 0)
    assert sorted(scored) == [30, 50, 1000]
    assert point.utility_accuracy == point.reference_accuracy
    scored.clear()
    local_audit(model, own, 0)
    assert sorted(scored) == [30, 50, 1000, 1000]


def test_already_indistinguishable_samples_are_not_pushed_past_the_reference(
    sample_task: UnlearningTask,
) -> None:
    """On the large digits split a random forget set already resembles the hold-out."""
    result = run_method("remi", sample_task)
    after = _audit(result.model, sample_task)
    assert after.forget_accuracy > after.reference_accuracy - 10.0
    assert after.forget_auc > 0.4
    assert accuracy(result.model, sample_task.retain, device=CPU) >= 90.0


@pytest.mark.parametrize("which", ["remi_on_class", "remi_on_samples"])
def test_trace_and_stop_reason_describe_the_run(which: str, request: pytest.FixtureRequest) -> None:
    result: UnlearningResult = request.getfixturevalue(which)
    assert isinstance(result.stop_reason, str) and result.stop_reason
    assert len(result.trace) >= 1
    steps = [point.step for point in result.trace]
    assert steps == sorted(steps) and steps[-1] <= result.steps
    for point in result.trace:
        assert 0.0 <= point.forget_accuracy <= 100.0
        assert 0.0 <= point.reference_accuracy <= 100.0
        assert 0.0 <= point.forget_auc <= 1.0
    assert result.params == dataclasses.asdict(parse_params("remi", {}))


def test_patience_stops_a_run_that_no_longer_improves(class_task: UnlearningTask) -> None:
    """A target tighter than anything reachable: without patience ReMI spends its whole budget;
    with it, it returns the best point after a few audits without a new best."""
    unreachable = {"noise_z": 0.0, "auc_tolerance": 0.001, "accuracy_band": 0.01, "max_steps": 200,
                   "check_every": 10}
    budget = run_method("remi", class_task, parse_params("remi", unreachable))
    patient = run_method("remi", class_task, parse_params("remi", {**unreachable, "patience": 2}))
    assert budget.steps == 200 and budget.stop_reason.startswith("budget")
    assert patient.stop_reason.startswith("stalled") and patient.steps < 200
    best_step = int(patient.stop_reason.rsplit(" ", 1)[-1])
    assert patient.steps - best_step >= 2 * 10  # it waited two audits past its best point
    best = next(point for point in patient.trace if point.step == best_step)
    assert _audit(patient.model, class_task).forget_accuracy == pytest.approx(best.forget_accuracy, abs=1.0)


def test_same_seed_same_model(
    memorised_sample_task: UnlearningTask, remi_on_samples: UnlearningResult
) -> None:
    again = run_method("remi", memorised_sample_task)
    assert _same_weights(_weights(remi_on_samples.model), _weights(again.model))
    assert again.steps == remi_on_samples.steps
    assert again.stop_reason == remi_on_samples.stop_reason
    assert again.trace == remi_on_samples.trace


def test_original_is_untouched(class_task: UnlearningTask, remi_on_class: UnlearningResult) -> None:
    before = _weights(class_task.original)
    run_method("remi", class_task, parse_params("remi", {"max_steps": 20, "check_every": 10}))
    assert _same_weights(before, _weights(class_task.original))
    assert not _same_weights(before, _weights(remi_on_class.model))


@pytest.mark.parametrize("approximator", LEAKAGE.names())
def test_every_approximator_runs(approximator: str, class_task: UnlearningTask) -> None:
    params = parse_params("remi", {"approximator": approximator, "max_steps": 20, "check_every": 10})
    result = run_method("remi", class_task, params)
    assert result.params["approximator"] == approximator
    assert 0 < result.steps <= 20
    assert not _same_weights(_weights(class_task.original), _weights(result.model))
    after = _audit(result.model, class_task)
    assert after.forget_accuracy < 100.0  # already moving off the forgotten class


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"lambda_kl": -1}, "lambda_kl"),
        ({"lambda_kl": "-1"}, "lambda_kl"),
        ({"lambda_mia": "nan"}, "lambda_mia"),
        ({"auc_tolerance": 0.7}, "auc_tolerance"),
        ({"auc_tolerance": 0}, "auc_tolerance"),
        ({"noise_z": -1}, "noise_z"),
        ({"patience": -1}, "patience"),
        ({"max_steps": 0}, "max_steps"),
        ({"check_every": "0"}, "check_every"),
        ({"lr": 0}, "lr"),
        ({"accuracy_band": 100}, "accuracy_band"),
    ],
)
def test_bad_hyper_parameters_are_config_errors(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field) as excinfo:
        parse_params("remi", overrides)
    assert "remi" in str(excinfo.value)


def test_unknown_approximator_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as excinfo:
        parse_params("remi", {"approximator": "nope"})
    message = str(excinfo.value)
    assert "nope" in message
    for name in LEAKAGE.names():
        assert name in message


def test_unknown_approximator_in_the_dataclass_is_an_unknown_name_error() -> None:
    with pytest.raises(UnknownNameError):
        RemiParams(approximator="nope")


def test_string_overrides_are_typed() -> None:
    params = parse_params("remi", {"lambda_kl": "0.25", "max_steps": "7", "approximator": "loss-stats"})
    assert params.lambda_kl == 0.25 and isinstance(params.lambda_kl, float)
    assert params.max_steps == 7 and isinstance(params.max_steps, int)
    assert params.approximator == "loss-stats"


def test_the_returned_model_is_fully_trainable_and_only_the_top_moved(
    class_task: UnlearningTask, remi_on_class: UnlearningResult
) -> None:
    """scope "top" freezes the stem while it works; the caller gets a normal model back."""
    model = remi_on_class.model
    assert all(p.requires_grad for p in model.parameters())
    before, after = _weights(class_task.original), _weights(model)
    stem = [k for k in before if k.startswith("stem.")]
    top = [k for k in before if not k.startswith("stem.")]
    assert stem and all(torch.equal(before[k], after[k]) for k in stem)
    assert any(not torch.equal(before[k], after[k]) for k in top)


def test_the_local_audit_measures_membership_against_the_references_expectation(
    memorised_sample_task: UnlearningTask,
) -> None:
    """With expected confidences, a sample counts as remembered by its excess over them, not by its raw score."""
    task = memorised_sample_task
    model = task.original
    cpu = torch.device("cpu")
    raw = {name: membership_statistic(predict_logits(model, data.x, device=cpu), data.y)
           for name, data in (("forget", task.forget), ("reference", task.reference))}
    # an expectation that explains every forget sample's score away, and none of the references'
    expected = {int(i): float(v) for i, v in zip(task.forget.ids.tolist(), raw["forget"].tolist(), strict=True)}
    sets = AuditSets(task.forget, task.reference, task.retain, task.utility_set, expected=expected)
    point = local_audit(model, sets, 0)
    assert point.forget_auc == pytest.approx(
        roc_auc(torch.zeros(len(task.forget)).numpy(), raw["reference"].double().numpy()))
    assert _audit(model, task).forget_auc == pytest.approx(
        roc_auc(raw["forget"].double().numpy(), raw["reference"].double().numpy()))
    calibrated = run_method("remi", dataclasses.replace(task, expected_confidence=expected),
                            RemiParams(max_steps=20, check_every=10))
    assert calibrated.trace[0].forget_auc == pytest.approx(point.forget_auc, abs=1e-6)



def test_the_anchor_term_holds_unseen_outputs_where_they_were(memorised_sample_task: UnlearningTask) -> None:
    """On a memorised model the retain loss is ~0 and holds nothing in place: pushed for a fixed
    budget, ReMI loses accuracy on non-members (what test accuracy is made of); the anchor holds it."""
    task = memorised_sample_task
    pushed = RemiParams(noise_z=0.0, auc_tolerance=0.01, lr=2e-3, max_steps=60, check_every=20)
    lost = {}
    for weight in (0.0, 10.0):
        trace = run_method("remi", task, dataclasses.replace(pushed, lambda_anchor=weight)).trace
        assert trace[-1].step == 60  # the setting forces ReMI to the end of its budget
        lost[weight] = trace[0].reference_accuracy - trace[-1].reference_accuracy
    assert lost[0.0] >= 2.0
    assert lost[10.0] < lost[0.0] / 2


def test_the_anchor_term_is_the_mean_squared_logit_change_of_every_batch_but_the_forget_batch(
    memorised_sample_task: UnlearningTask,
) -> None:
    """Known answer: with only the anchor on, the loss is lambda_anchor times the mean squared distance of the
    retain and reference rows' logits from the targets; the forget batch's logits are free to move."""
    task = memorised_sample_task
    model = task.original.eval()
    retain, forget, reference = (data.subset(torch.arange(4)) for data in (task.retain, task.forget, task.reference))
    only_anchor = RemiParams(lambda_mia=0.0, lambda_kl=0.0, lambda_anchor=2.0)
    objective = _Objective(LEAKAGE.get("shadow")(10, 0), only_anchor, CPU, per_example=False)
    logits = {name: predict_logits(model, data.x, device=CPU) for name, data in
              (("retain", retain), ("reference", reference))}
    moved = torch.cat([logits["retain"] + 0.5, logits["reference"] - 1.0])  # squared change 0.25 and 1
    cross_entropy = float(F.cross_entropy(logits["retain"], retain.y))
    loss = float(objective.loss(model, (retain, forget, reference), (torch.zeros(4), torch.zeros(4)), moved).detach())
    assert loss == pytest.approx(cross_entropy + 2.0 * (0.25 + 1.0) / 2, rel=1e-4)
    unmoved = torch.cat(list(logits.values()))
    assert float(objective.loss(model, (forget, reference), (torch.zeros(4), torch.zeros(4)),
                                unmoved[4:]).detach()) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("scope", ["top", "all"])
def test_the_anchor_targets_are_the_original_logits_of_the_retain_and_reference_samples(
    memorised_sample_task: UnlearningTask, scope: str,
) -> None:
    """Computed once before the first step, on the network ReMI updates (the top on stem features, or the
    whole model), in the row order the batches draw from; none without the anchor."""
    task = memorised_sample_task
    model = copy.deepcopy(task.original)
    params = RemiParams(scope=scope, lambda_anchor=1.0)
    work = _Workspace.build(model, task, params, torch.Generator().manual_seed(0))
    assert work.anchor is not None
    for targets, drawn_from, data in zip(work.anchor, (work.retain, work.reference), (task.retain, task.reference),
                                         strict=True):
        assert drawn_from.ids.equal(data.ids)
        assert torch.allclose(targets, predict_logits(task.original, data.x, device=CPU), atol=1e-5)
    batches, anchor = work.draw(params, torch.Generator().manual_seed(1))
    assert [len(b) for b in batches] == [params.batch_size, params.forget_batch_size, params.forget_batch_size]
    assert anchor is not None and anchor.shape == (params.batch_size + params.forget_batch_size, 10)
    # each target row belongs to the sample drawn in that row (the network has not stepped yet)
    drawn = torch.cat([predict_logits(work.net, batch.x, device=CPU) for batch in (batches[0], batches[2])])
    assert torch.allclose(anchor, drawn, atol=1e-5)
    assert _Workspace.build(model, task, RemiParams(scope=scope), torch.Generator().manual_seed(0)).anchor is None


def test_the_anchor_weight_must_not_be_negative() -> None:
    with pytest.raises(ConfigError, match="lambda_anchor"):
        RemiParams(lambda_anchor=-1.0)



def test_the_target_term_charges_only_the_excess_over_each_samples_expectation(
    memorised_sample_task: UnlearningTask,
) -> None:
    """Known answer: with only the target term on, the loss is the mean Huber of each forget sample's
    statistic above what references expect of it; a sample already below its expectation costs nothing,
    and without expectations the term is off."""
    task = memorised_sample_task
    model = task.original
    forget, reference = task.forget.subset(torch.arange(4)), task.reference.subset(torch.arange(4))
    score = membership_statistic(predict_logits(model, forget.x, device=CPU), forget.y)
    expected = torch.stack([score[0] - 3.0, score[1] - 0.5, score[2] + 2.0, score[3]])
    only_target = RemiParams(lambda_mia=0.0, lambda_kl=0.0, lambda_target=2.0)

    def loss(per_example: bool) -> float:
        objective = _Objective(LEAKAGE.get("shadow")(10, 0), only_target, CPU, per_example)
        return float(objective.loss(model.eval(), (forget, reference), (expected, torch.zeros(4)), None))

    huber = [2.5, 0.125, 0.0, 0.0]  # excess 3 -> 3 - 1/2; excess 1/2 -> (1/2)^2 / 2; none -> 0
    assert loss(True) == pytest.approx(2.0 * sum(huber) / 4, rel=1e-3)
    assert loss(False) == 0.0
