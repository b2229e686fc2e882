"""Simulated annotation errors: a node whose samples partly carry the next class's label, tagged so that a
corrective request can name them and its audit compares them with hold-out samples mislabeled alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from flwr.app import ConfigRecord, RecordDict

from fedunlearn.client.handlers import _lent, _like
from fedunlearn.client.session import NodeSession
from fedunlearn.common import protocol as P
from fedunlearn.common.audit.exemplars import Exemplars, exemplars_record
from fedunlearn.common.data.datasets import load_dataset
from fedunlearn.common.errors import ConfigError, RequestError
from fedunlearn.common.nodes import MISLABELED, NodeLayout, materialise_node
from fedunlearn.common.scenario import parse_scenario
from fedunlearn.common.world import SimulatedWorld
from tests.messages import to_node


def test_a_mislabeled_node_flips_and_tags_a_share_of_both_parts(tmp_path: Path) -> None:
    bundle = load_dataset("digits")
    layout = NodeLayout(dataset="digits", partition=1, num_partitions=3, partitioner="iid", mislabeled=0.3)
    clean = materialise_node(tmp_path / "clean", bundle, NodeLayout(dataset="digits", partition=1, num_partitions=3,
                                                                    partitioner="iid"))
    node = materialise_node(tmp_path / "node", bundle, layout)
    wrong = node.tagged(MISLABELED)
    for part, reference in ((node.train(), clean.train()), (node.holdout(), clean.holdout())):
        assert torch.equal(part.ids, reference.ids)
        flipped = part.y != reference.y
        assert set(part.ids[flipped].tolist()) == wrong & set(part.ids.tolist())
        assert bool((part.y[flipped] == (reference.y[flipped] + 1) % 10).all())
        assert int(flipped.sum()) == round(0.3 * len(part))
    assert node.tags_of(sorted(wrong)[:5]) == [MISLABELED]
    assert node.tags_of([int(i) for i in node.train().ids if int(i) not in wrong][:5]) == []
    assert clean.tagged(MISLABELED) == set()


def test_a_tag_request_names_the_mislabeled_training_samples_and_compares_like_with_like(tmp_path: Path) -> None:
    scenario = parse_scenario({
        "scenario": {"name": "wrong"}, "data": {"partitioner": "iid", "mislabeled": {"1": 0.3}},
        "federation": {"clients": 3, "rounds": 3},
        "requests": [{"round": 1, "partition": 1, "forget": "tag:mislabeled"}],
    })
    world = SimulatedWorld(scenario, tmp_path / "nodes")
    world.materialise()
    [filed] = world.file_due(1)
    node = world.node(1)
    assert set(filed.forget_ids) == node.tagged(MISLABELED) & set(node.train().ids.tolist())
    forget = node.train().where_ids(torch.tensor(filed.forget_ids), keep=True)
    compared = _like(node, forget, node.holdout())
    assert 0 < len(compared) < len(node.holdout())
    assert set(compared.ids.tolist()) <= node.tagged(MISLABELED)
    others = node.train().where_ids(torch.tensor(filed.forget_ids), keep=False)
    assert _like(node, others.subset(torch.arange(3)), node.holdout()) is not None
    assert len(_like(node, others.subset(torch.arange(3)), node.holdout())) == len(node.holdout())
    # test images are like no mislabeled sample: a node refuses them for such an audit (a clean one keeps some)
    loan = to_node(RecordDict({P.EXEMPLARS: exemplars_record(Exemplars(node.holdout(), None))}), P.MSG_AUDIT)
    session = NodeSession(node, ConfigRecord())
    with pytest.raises(RequestError, match="tagged"):
        _lent(session, loan, (), forget)
    kept = _lent(session, loan, (), others.subset(torch.arange(30)))
    assert kept is not None and 0 < len(kept) <= len(node.holdout())


@pytest.mark.parametrize("mislabeled", [{"7": 0.3}, {"x": 0.3}, {"1": 1.0}, {"1": -0.1}])
def test_bad_mislabel_settings_are_refused(mislabeled: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match=r"\[data.mislabeled\]"):
        parse_scenario({"scenario": {"name": "bad"}, "data": {"mislabeled": mislabeled}, "federation": {"clients": 3}})
