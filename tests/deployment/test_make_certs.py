"""scripts/make-certs.sh: P-256 keys that stay private whatever the umask; --key-owner hands the server key over."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "make-certs.sh"


def _make_certs(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", 'umask 022 && exec bash "$0" "$@"', str(SCRIPT), "--out", str(out), *args],
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs") / "deploy" / "certs"
    done = _make_certs(out)
    assert done.returncode == 0, done.stderr
    return out


def test_keys_are_0600_and_certificates_0644_under_umask_022(certs: Path) -> None:
    modes = {p.name: p.stat().st_mode & 0o777 for p in certs.iterdir()}
    assert modes == {"ca.key": 0o600, "server.key": 0o600, "ca.crt": 0o644, "server.crt": 0o644}
    assert certs.stat().st_mode & 0o777 == 0o700


def test_both_keys_are_ecdsa_p256(certs: Path) -> None:
    for key in ("ca.key", "server.key"):
        text = subprocess.run(["openssl", "pkey", "-in", str(certs / key), "-noout", "-text"],
                              capture_output=True, text=True, check=True).stdout
        assert "NIST CURVE: P-256" in text, f"{key}:\n{text}"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_key_owner_hands_the_server_key_to_the_container_user(tmp_path: Path) -> None:
    done = _make_certs(tmp_path / "certs", "--key-owner", "49999:49999")
    assert done.returncode == 0, done.stderr
    key = (tmp_path / "certs" / "server.key").stat()
    assert (key.st_uid, key.st_gid, key.st_mode & 0o777) == (49999, 49999, 0o600)
    assert (tmp_path / "certs" / "ca.key").stat().st_uid == os.geteuid()


def test_a_malformed_key_owner_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    done = _make_certs(tmp_path / "certs", "--key-owner", "app; rm -rf /")
    assert done.returncode == 2 and "numeric UID" in done.stderr
    assert not (tmp_path / "certs").exists()


def test_the_token_file_is_git_ignored() -> None:
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    done = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", ".env"], check=False)
    assert done.returncode == 0, ".env (FEDUNLEARN_REQUEST_TOKEN for docker compose) must be git-ignored"
