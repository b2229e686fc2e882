"""``fedunlearn node`` through ``main()``: init, forget, requests, reject, serve; bad input exits 2, writes nothing.

The old top-level spellings (``fedunlearn forget`` ...) still work for one release and warn on stderr."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest

from fedunlearn.common.nodes import NodeDirectory
from fedunlearn.simulations.cli import main


def _main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["fedunlearn", *args])
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def node_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "node"
    code, out, err = _main(monkeypatch, capsys, "node", "init", "--dataset", "digits", "--partition", "1/4",
                           "--node-dir", str(path))
    assert code == 0, err
    assert "node 1/4 of digits" in out
    return path


def _ledger(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], node_dir: Path) -> list[dict]:
    code, out, err = _main(monkeypatch, capsys, "node", "requests", "--node-dir", str(node_dir), "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert isinstance(rows, list)
    return rows


def test_forget_prints_the_request_id_and_requests_lists_it(
    node_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = NodeDirectory.open(node_dir).train().ids[:3].tolist()
    code, out, err = _main(monkeypatch, capsys, "node", "forget", "--node-dir", str(node_dir),
                           "--ids", ",".join(map(str, ids)), "--reason", "DSAR 1")
    assert code == 0, err
    [row] = _ledger(monkeypatch, capsys, node_dir)
    assert row["request_id"] == out.strip()
    assert (row["kind"], row["num_samples"], row["status"]) == ("ids", 3, "pending")
    assert "sample_ids" not in row


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ids", "999999"], "not training samples of this node"),
        (["--ids", "1,x"], "comma-separated integers"),
        (["--class", "42"], "class must be in 0..9"),
        (["--ids", "1", "--all"], "exactly one"),
        ([], "exactly one"),
    ],
)
def test_bad_requests_exit_2_and_record_nothing(
    node_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str],
    message: str,
) -> None:
    code, _, err = _main(monkeypatch, capsys, "node", "forget", "--node-dir", str(node_dir), *args, "--reason", "r")
    assert code == 2
    assert message in " ".join(err.split())
    assert "Traceback" not in err
    assert _ledger(monkeypatch, capsys, node_dir) == []


def test_a_duplicate_request_is_refused(
    node_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    forget_all = ("node", "forget", "--node-dir", str(node_dir), "--all", "--reason")
    assert _main(monkeypatch, capsys, *forget_all, "leaving")[0] == 0
    code, _, err = _main(monkeypatch, capsys, *forget_all, "again")
    assert code == 2 and "already under a request" in " ".join(err.split())
    assert len(_ledger(monkeypatch, capsys, node_dir)) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--partition", "4/4"], "partition must be in 0..3"),
        (["--partition", "two"], "I/N"),
        (["--partition", "0/4", "--partitioner", "zipf"], "zipf"),
        (["--partition", "0/4", "--dataset", "imagenet"], "imagenet"),
    ],
)
def test_node_init_rejects_bad_input_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str],
    message: str,
) -> None:
    path = tmp_path / "node"
    base = ["node", "init", "--node-dir", str(path)]
    if "--dataset" not in args:
        base += ["--dataset", "digits"]
    code, _, err = _main(monkeypatch, capsys, *base, *args)
    assert code == 2 and message in " ".join(err.split())
    assert not (path / "node.json").exists()


def test_node_init_refuses_to_overwrite_a_node(
    node_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (node_dir / "node.json").read_text()
    code, _, err = _main(monkeypatch, capsys, "node", "init", "--dataset", "digits", "--partition", "0/4",
                         "--node-dir", str(node_dir))
    assert code == 2 and "already holds a node" in err
    assert (node_dir / "node.json").read_text() == before


def test_node_serve_refuses_to_run_without_tls_or_token(
    node_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FEDUNLEARN_REQUEST_TOKEN", raising=False)
    code, _, err = _main(monkeypatch, capsys, "node", "serve", "--node-dir", str(node_dir), "--port", "0")
    assert code == 2 and "--insecure" in " ".join(err.split())


def test_simulate_rejects_a_malformed_scenario(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text('[scenario]\nname = "x"\n[federation]\nrounds = 0\n')
    code, _, err = _main(monkeypatch, capsys, "simulate", str(scenario), "--out", str(tmp_path / "run"))
    assert code == 2 and "[federation].rounds must be >= 1" in err
    assert not (tmp_path / "run").exists()


def test_reject_releases_the_samples_and_cannot_be_repeated(
    node_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    node = NodeDirectory.open(node_dir)
    ids = node.train().ids[:2].tolist()
    request_id = node.submit(ids=ids, reason="r").request_id
    assert len(node.retain()) == len(node.train()) - 2
    code, _, err = _main(monkeypatch, capsys, "node", "reject", "--node-dir", str(node_dir), "--request-id", request_id,
                           "--reason", "legal hold")
    assert code == 0, err
    [row] = _ledger(monkeypatch, capsys, node_dir)
    assert (row["status"], row["rejection"]) == ("rejected", "legal hold")
    assert len(NodeDirectory.open(node_dir).retain()) == len(node.train())  # back in training
    code, _, err = _main(monkeypatch, capsys, "node", "reject", "--node-dir", str(node_dir), "--request-id", request_id,
                         "--reason", "again")
    assert code == 2 and "not pending" in err


def test_requests_says_why_the_server_left_a_request_pending(
    node_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    node = NodeDirectory.open(node_dir)
    request_id = node.submit(ids=node.train().ids[:2].tolist(), reason="r").request_id
    node.ledger.defer([request_id], "after round 3 the leakage gate did not pass")
    [row] = _ledger(monkeypatch, capsys, node_dir)
    assert (row["status"], row["deferral"]) == ("pending", "after round 3 the leakage gate did not pass")
    code, out, err = _main(monkeypatch, capsys, "node", "requests", "--node-dir", str(node_dir))
    assert code == 0 and "after round 3 the leakage gate did not pass" in out, err


# --- untrusted text and serve's defaults ------------------------------------------------------------------


def test_requests_shows_reasons_as_plain_text(
    node_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # one line per row, so each reason is found whole
    reasons = ["[/x] closes nothing", "\x1b[31mred\x1b[0m", "[link=http://evil.example]click[/link]"]
    ids = NodeDirectory.open(node_dir).train().ids.tolist()
    for i, reason in enumerate(reasons):
        code, _, err = _main(monkeypatch, capsys, "node", "forget", "--node-dir", str(node_dir), "--ids", str(ids[i]),
                             "--reason", reason)
        assert code == 0, err
    for _ in range(2):  # a bad reason once broke every later listing
        code, out, err = _main(monkeypatch, capsys, "node", "requests", "--node-dir", str(node_dir))
        assert code == 0 and "Traceback" not in err, err
        assert "[/x] closes nothing" in out and "[link=http://evil.example]click[/link]" in out
        assert "\\x1b[31mred\\x1b[0m" in out and "\x1b" not in out


@pytest.mark.parametrize(("reason", "message"), [
    ("x" * 1001, "1001 characters, more than 1000"),
    ("erase \udcff", "not valid UTF-8"),  # how Python hands over an undecodable argv byte
])
def test_forget_refuses_a_bad_reason_cleanly(
    node_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], reason: str,
    message: str,
) -> None:
    code, _, err = _main(monkeypatch, capsys, "node", "forget", "--node-dir", str(node_dir), "--all",
                         "--reason", reason)
    assert code == 2 and message in " ".join(err.split()) and "Traceback" not in err
    assert _ledger(monkeypatch, capsys, node_dir) == []


def test_node_serve_needs_a_token_even_in_plaintext(
    node_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FEDUNLEARN_REQUEST_TOKEN", raising=False)
    code, _, err = _main(monkeypatch, capsys, "node", "serve", "--node-dir", str(node_dir), "--port", "0",
                         "--insecure")
    assert code == 2 and "--allow-unauthenticated" in " ".join(err.split())


class _StopAtOnce(threading.Event):
    def wait(self, timeout: float | None = None) -> bool:
        return True


def test_node_serve_binds_loopback_and_warns_without_a_token(
    node_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FEDUNLEARN_REQUEST_TOKEN", raising=False)
    monkeypatch.setattr("fedunlearn.client.cli.threading.Event", _StopAtOnce)
    code, out, err = _main(monkeypatch, capsys, "node", "serve", "--node-dir", str(node_dir), "--port", "0",
                           "--insecure", "--allow-unauthenticated")
    assert code == 0, err
    assert "on 127.0.0.1:" in out
    assert "WARNING" in err and "anyone who reaches 127.0.0.1" in err


def test_requests_and_reject_refuse_a_folder_that_is_not_a_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for args in (["requests"], ["reject", "--request-id", "x", "--reason", "r"]):
        code, _, err = _main(monkeypatch, capsys, "node", *args, "--node-dir", str(tmp_path))
        assert code == 2 and "not a node directory" in err and "fedunlearn node init" in err
    assert list(tmp_path.iterdir()) == []  # no stray ledger.sqlite


# --- the old spellings, kept for one release ------------------------------------------------------------------


def _deprecated(err: str, old: str, new: str) -> bool:
    """One line on stderr that names the new spelling."""
    return (len(err.splitlines()) == 1 and f"`fedunlearn {old}` is deprecated" in err
            and f"use `fedunlearn {new}`" in err)


def test_old_forget_still_files_a_request_and_warns(
    node_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _main(monkeypatch, capsys, "forget", "--node-dir", str(node_dir), "--all", "--reason", "r")
    assert code == 0 and _deprecated(err, "forget", "node forget")
    assert [row["request_id"] for row in _ledger(monkeypatch, capsys, node_dir)] == [out.strip()]  # stdout: the id


def test_old_requests_still_lists_and_warns(
    node_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    request_id = NodeDirectory.open(node_dir).submit(everything=True, reason="r").request_id
    code, out, err = _main(monkeypatch, capsys, "requests", "--node-dir", str(node_dir), "--json")
    assert code == 0 and _deprecated(err, "requests", "node requests")
    assert [row["request_id"] for row in json.loads(out)] == [request_id]


def test_old_reject_still_rejects_and_warns(
    node_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    request_id = NodeDirectory.open(node_dir).submit(everything=True, reason="r").request_id
    code, out, err = _main(monkeypatch, capsys, "reject", "--node-dir", str(node_dir), "--request-id", request_id,
                           "--reason", "legal hold")
    assert code == 0 and out.strip() == f"{request_id} rejected" and _deprecated(err, "reject", "node reject")
    assert [row["status"] for row in _ledger(monkeypatch, capsys, node_dir)] == ["rejected"]
