"""What a report may claim: forgetting only where the same gate failed the do-nothing original."""

from __future__ import annotations

from fedunlearn.common.audit.gate import GateConfig, GateResult, leakage_gate
from fedunlearn.common.audit.local import AttackFigures, LocalAudit
from fedunlearn.server.evidence import evidence


def _gate(auc: float, test_drop: float = 0.0) -> GateResult:
    audit = LocalAudit(200, 200, 90.0, 90.0, {a: AttackFigures(auc, 3.0) for a in ("loss", "lira", "rmia")})
    return leakage_gate({"partition 0": audit}, test_drop, GateConfig(), looks=6)


def test_no_audit_means_no_claim() -> None:
    assert "nothing was judged" in evidence(None, None, None)
    assert "power is unknown" in evidence(_gate(0.5), None, None)


def test_a_pass_beside_a_passing_original_claims_nothing() -> None:
    text = evidence(_gate(0.5), _gate(0.52), _gate(0.5))
    assert "not detectable even before unlearning" in text and "claims nothing" in text
    assert "forgot" not in text.replace("forget", "")
    assert "200 forget samples against 200 unseen non-members" in text and "lira AUC 0.520" in text


def test_a_pass_beside_a_failing_original_says_what_was_detected() -> None:
    text = evidence(_gate(0.5), _gate(0.8), _gate(0.51))
    assert text.startswith("The gate detects the forget set in the original model")
    assert "retrained without the forget set passes" in text


def test_a_failing_unlearned_model_still_leaks_or_lost_utility() -> None:
    text = evidence(_gate(0.75), _gate(0.8), _gate(0.5, test_drop=3.0))
    assert text.startswith("The unlearned model still leaks")
    assert "retrained without the forget set fails (test accuracy dropped" in text
    utility = evidence(_gate(0.5, test_drop=9.0), _gate(0.8), _gate(0.5))
    assert utility.startswith("The unlearned model fails the gate (test accuracy dropped 9.00")
