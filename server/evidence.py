"""What a run's audits support, in plain words, judged beside its controls.

A passing gate alone proves nothing: a gate with no power passes everything.
The claim "the model forgot" stands only where the same gate, on the same
audits, failed the do-nothing original. Otherwise the report says the forget
set was not detectable even before unlearning, by which attacks and at what
size, and makes no claim.
"""

from __future__ import annotations

from fedunlearn.common.audit.gate import GateResult

__all__ = ["evidence"]


def _readings(gate: GateResult) -> str:
    deciding = {name: v for name, v in gate.attacks.items() if v.deciding}
    return ", ".join(f"{name} AUC {v.auc:.3f} (TPR {v.tpr_at_1pct_fpr:.1f}% at 1% FPR)"
                     for name, v in deciding.items()) or "no deciding attack"


def _size(gate: GateResult) -> str:
    return (f"{gate.forget_size} forget samples against {gate.holdout_size} unseen non-members, "
            f"false-alarm rate {gate.false_alarm:g} over {gate.looks} looks")


def _retrain(retrain: GateResult | None) -> str:
    if retrain is None:
        return ""
    verdict = "passes" if retrain.passed else f"fails ({'; '.join(retrain.reasons)})"
    return f" The model retrained without the forget set {verdict} the same gate."


def evidence(unlearned: GateResult | None, original: GateResult | None, retrain: GateResult | None) -> str:
    """One paragraph: what the gate's verdict on ``unlearned`` means, given the controls' verdicts."""
    if unlearned is None:
        return "No audit could be pooled, so nothing was judged, published or committed."
    if original is None:
        return ("The original model could not be audited, so the gate's power is unknown: "
                "no claim about forgetting is made." + _retrain(retrain))
    if original.passed:
        return (f"The forget set was not detectable even before unlearning: the original model passes the same gate "
                f"({_readings(original)}; {_size(original)}). These audits cannot tell a model that remembers it from "
                "one that does not, so the run claims nothing about forgetting." + _retrain(retrain))
    if unlearned.passed:
        return (f"The gate detects the forget set in the original model ({_readings(original)}) and not in the "
                f"unlearned model ({_readings(unlearned)}; {_size(unlearned)})." + _retrain(retrain))
    leaks = any(v.deciding and v.leaks for v in unlearned.attacks.values())
    verdict = "still leaks: it fails" if leaks else "fails"
    return (f"The unlearned model {verdict} the gate ({'; '.join(unlearned.reasons)}); the original fails it too "
            f"({_readings(original)})." + _retrain(retrain))
