"""The ``fedunlearn`` command: typer's CliRunner for the commands, ``main()`` for the exit codes."""

from __future__ import annotations

import json
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedunlearn.common.data.datasets import DATASETS
from fedunlearn.common.device import resolve_device
from fedunlearn.common.errors import ConfigError
from fedunlearn.common.models import MODELS
from fedunlearn.common.unlearning import METHODS
from fedunlearn.common.unlearning.remi import RemiParams
from fedunlearn.simulations.cli import app, main
from fedunlearn.simulations.registry_cli import registry_names

runner = CliRunner()


def test_list_json_names_every_registry() -> None:
    result = runner.invoke(app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert listed == registry_names()
    assert listed["datasets"] == DATASETS.names()
    assert listed["models"] == MODELS.names()
    assert listed["methods"] == METHODS.names()
    assert {"digits", "mnist", "cifar10"} <= set(listed["datasets"])
    assert {"mlp", "cnn"} <= set(listed["models"])
    assert {"retrain", "remi"} <= set(listed["methods"])


def test_list_as_a_table() -> None:
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    for family in ("datasets", "models", "methods"):
        assert family in result.stdout
    assert "remi" in result.stdout


def test_no_arguments_shows_help() -> None:
    result = runner.invoke(app, [])
    assert "bench" in result.output and "list" in result.output


def test_bench_json_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, [
        "bench", "--dataset", "digits", "--model", "mlp", "--forget", "class:1",
        "--methods", "retrain,finetune", "--epochs", "2", "--out", str(out), "--json",
    ])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert set(printed["methods"]) == {"original", "retrain", "finetune"}
    assert printed["forget"] == "class:1"
    assert printed["device"] == str(resolve_device("auto"))
    assert printed["methods"]["retrain"]["avg_gap"] == 0.0
    assert json.loads((out / "bench.json").read_text()) == printed
    for name in ("bench.md", "roc.png", "metrics.png", "config.json"):
        assert (out / name).is_file(), name
    # the runner's stderr is no terminal, as a log or a remote GPU job's is not: each step is a line there
    steps = [line for line in result.stderr.splitlines() if line.startswith("[")]
    counted = [line.split("] ", 1)[1].split(" ", 1) for line in steps]
    assert [count for count, _ in counted] == [f"{k}/{len(steps)}" for k in range(1, len(steps) + 1)]
    assert counted[0][1] == "seed 0: training original"


def test_bench_table_run_with_a_method_param(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, [
        "bench", "--dataset", "digits", "--model", "mlp", "--forget", "random:0.1", "--methods", "finetune",
        "--param", "finetune.epochs=1", "--variant", "finetune-lr=finetune:lr=0.01", "--epochs", "1",
        "--device", "cpu", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    assert "finetune" in result.stdout and "retrain" in result.stdout
    assert "bench.json" in "".join(result.stdout.split())  # rich may fold a long path
    saved = json.loads((out / "bench.json").read_text())
    assert saved["methods"]["finetune"]["params"]["epochs"] == 1
    variant = saved["methods"]["finetune-lr"]
    assert variant["variant_of"] == "finetune" and variant["overrides"] == {"lr": 0.01}
    assert variant["params"]["epochs"] == 1  # finetune's --param carries over to its variant


def test_project_errors_surface_as_config_errors_under_the_runner(tmp_path: Path) -> None:
    """Inside the app a bad input is a ConfigError; main() is what turns it into exit code 2."""
    out = tmp_path / "run"
    result = runner.invoke(app, ["bench", "--dataset", "nope", "--out", str(out)])
    assert isinstance(result.exception, ConfigError)
    assert not out.exists()


# --- main(): exit code 2 and one clean line -------------------------------------------------------

BAD_INPUTS = [
    (["--dataset", "nope"], DATASETS.names()),
    (["--methods", "retrain,nope"], METHODS.names()),
    (["--forget", "random:2"], ["random:0.1"]),
    (["--param", "remi.nope=1"], ["remi.nope", *(f.name for f in fields(RemiParams))]),
    (["--param", "garbage"], ["METHOD.KEY=VALUE"]),
    (["--reference-models", "1"], ["--reference-models", ">= 2"]),
    (["--ulira-shadows", "2"], ["--ulira-shadows", ">= 4"]),
    (["--forget", "class:1", "--ulira-shadows", "4"], ["random:<fraction>"]),
    (["--variant", "remi:lambda_mia=0"], ["NAME=METHOD:KEY=VALUE", "remi-no-mi=remi:lambda_mia=0"]),
    (["--variant", "finetune=remi:lambda_mia=0"], ["'finetune'", "taken"]),
    (["--variant", "remi-no-mi=remi:lambda_mi=0"], ["--variant remi-no-mi", "remi.lambda_mi", "lambda_mia"]),
]
BAD_IDS = ["dataset", "method", "forget", "param-key", "param-form", "references", "shadows", "ulira-class",
           "variant-form", "variant-name", "variant-key"]


def _run_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str],
              out: Path) -> tuple[int | str | None, str, str]:
    monkeypatch.setattr(sys, "argv", ["fedunlearn", "bench", *args, "--epochs", "1", "--out", str(out)])
    monkeypatch.setenv("COLUMNS", "80")  # an ordinary terminal's width
    with pytest.raises(SystemExit) as excinfo:
        main()
    captured = capsys.readouterr()
    return excinfo.value.code, captured.out, captured.err


@pytest.mark.parametrize(("args", "valid"), BAD_INPUTS, ids=BAD_IDS)
def test_bad_input_exits_2_naming_the_valid_options(
    args: list[str], valid: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "run"
    code, stdout, stderr = _run_main(monkeypatch, capsys, args, out)
    assert code == 2
    assert stderr.lstrip().startswith("error:")
    text = " ".join(stderr.split())  # immune to line wrapping
    for option in valid:
        assert option in text, option
    assert "Traceback" not in stderr + stdout
    assert not out.exists()


@pytest.mark.parametrize(("args", "valid"), BAD_INPUTS, ids=BAD_IDS)
def test_bad_input_message_is_one_line(
    args: list[str], valid: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """cli.py promises a one-line message: greppable, and a log keeps it whole."""
    _, _, stderr = _run_main(monkeypatch, capsys, args, tmp_path / "run")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr


def test_usage_errors_keep_clicks_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code, stdout, stderr = _run_main(monkeypatch, capsys, ["--seeds", "many"], out)
    assert code == 2
    assert "--seeds" in stderr
    assert "Traceback" not in stderr + stdout
    assert not out.exists()


def test_bench_records_its_command_line_and_runs_ulira(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    args = ["bench", "--dataset", "digits", "--model", "mlp", "--methods", "retrain", "--epochs", "1",
            "--reference-models", "2", "--ulira-shadows", "4", "--device", "cpu", "--out", str(out), "--json"]
    monkeypatch.setattr(sys, "argv", ["/somewhere/bin/fedunlearn", *args])
    main()
    printed = json.loads(capsys.readouterr().out)
    assert printed["command"] == " ".join(["fedunlearn", *args])
    assert printed["references"]["models"] == 2
    assert printed["ulira"]["shadows"] == 4
    for method in ("original", "retrain"):
        assert 0.0 <= printed["methods"][method]["ulira"]["accuracy"] <= 1.0
        assert set(printed["methods"][method]["attacks"]) >= {"loss", "lira", "rmia"}
    assert "U-LiRA accuracy" in (out / "bench.md").read_text()


def test_main_succeeds_quietly(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["fedunlearn", "list", "--json"])
    main()  # no SystemExit on success
    assert json.loads(capsys.readouterr().out) == registry_names()
