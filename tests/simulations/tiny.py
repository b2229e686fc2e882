"""A scenario small enough for end-to-end tests (Ray, flwr run): three digits clients, four rounds,
sample requests after round 2, when the model has learned enough for the gate to mean something. No baselines:
these checks concern the runtimes, and the baselines run on real ClientApps in tests/server (``tiny_run``)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tiny_scenario(name: str, requesting_partitions: tuple[int, ...]) -> str:
    requests = "".join(f'[[requests]]\nround = 2\npartition = {p}\nforget = "random:0.1"\n'
                       for p in requesting_partitions)
    return f"""
[scenario]
name = "{name}"
seed = 1
[data]
dataset = "digits"
partitioner = "iid"
train_size = 900
[federation]
clients = 3
rounds = 4
local_epochs = 1
device = "cpu"
[unlearning]
max_rounds = 2
[unlearning.params]
max_steps = 40
[baselines]
federated_retrain = false
federated_finetune_rounds = 0
[audit]
reference_models = 4
{requests}"""
