"""The forget-request ledger: what it records, what it refuses (recording nothing), and that it lasts."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import pytest

import fedunlearn.common.nodes.ledger as ledger_module
from fedunlearn.common.errors import DataError, RequestError
from fedunlearn.common.nodes.ledger import Ledger, RequestStatus

REASON = "GDPR art. 17 request #1"


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger.sqlite")


def _snapshot(ledger: Ledger) -> list[tuple[str, str, tuple[int, ...], object]]:
    """Everything that could change: ids, statuses, samples and receipts of every request."""
    return [(r.request_id, r.status.value, r.sample_ids, r.receipt) for r in ledger.list()]


# --- submit / get / list / pending ----------------------------------------------------------------------


def test_submit_records_a_pending_request_with_sorted_distinct_ids(ledger: Ledger) -> None:
    request = ledger.submit("ids", [9, 3, 3, 5], reason=f"  {REASON}  ")
    assert request.status is RequestStatus.PENDING
    assert request.sample_ids == (3, 5, 9)
    assert request.kind == "ids"
    assert request.reason == REASON  # stripped
    assert request.receipt is None and request.rejection is None
    assert ledger.get(request.request_id) == request
    assert ledger.held_ids() == {3, 5, 9}


def test_class_request_keeps_its_target_class(ledger: Ledger) -> None:
    request = ledger.submit("class", [1, 2], reason=REASON, target_class=4)
    assert (request.kind, request.target_class) == ("class", 4)
    assert request.summary()["num_samples"] == 2
    assert "sample_ids" not in request.summary()


def test_list_and_pending_in_submission_order_and_by_status(ledger: Ledger) -> None:
    a = ledger.submit("ids", [1], reason=REASON)
    b = ledger.submit("ids", [2], reason=REASON)
    c = ledger.submit("ids", [3], reason=REASON)
    assert [r.request_id for r in ledger.list()] == [a.request_id, b.request_id, c.request_id]
    ledger.commit({b.request_id: {"model": "m1"}})
    ledger.reject(c.request_id, "not our data")
    assert [r.request_id for r in ledger.pending()] == [a.request_id]
    assert [r.request_id for r in ledger.list(RequestStatus.COMMITTED)] == [b.request_id]
    assert [r.request_id for r in ledger.list(RequestStatus.REJECTED)] == [c.request_id]
    assert ledger.get(c.request_id).rejection == "not our data"
    assert ledger.held_ids() == {1, 2}  # a rejected request holds nothing


def test_get_unknown_request_fails(ledger: Ledger) -> None:
    with pytest.raises(RequestError, match="no request 'req-nope'"):
        ledger.get("req-nope")


# --- refused submissions record nothing ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ids", "reason", "message"),
    [([], REASON, "at least one sample"), ([1, 2], "", "needs a reason"), ([1, 2], "   \t", "needs a reason")],
)
def test_empty_request_or_blank_reason_is_refused(ledger: Ledger, ids: list[int], reason: str, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        ledger.submit("ids", ids, reason=reason)
    assert ledger.list() == []
    assert ledger.held_ids() == set()


@pytest.mark.parametrize("commit_first", [False, True], ids=["pending", "committed"])
@pytest.mark.parametrize("again", [[1, 2, 3], [3, 4]], ids=["duplicate", "overlap"])
def test_duplicate_or_overlapping_request_is_refused(ledger: Ledger, commit_first: bool, again: list[int]) -> None:
    first = ledger.submit("ids", [1, 2, 3], reason=REASON)
    if commit_first:
        ledger.commit({first.request_id: {"model": "m1"}})
    before = _snapshot(ledger)
    with pytest.raises(RequestError, match=f"already under request {first.request_id}"):
        ledger.submit("ids", again, reason=REASON)
    assert _snapshot(ledger) == before
    assert 4 not in ledger.held_ids()


def test_samples_of_a_rejected_request_can_be_requested_again(ledger: Ledger) -> None:
    first = ledger.submit("ids", [1, 2], reason=REASON)
    ledger.reject(first.request_id, "filed by mistake")
    again = ledger.submit("ids", [2, 3], reason=REASON)
    assert again.status is RequestStatus.PENDING
    assert ledger.held_ids() == {2, 3}


# --- commit / reject -------------------------------------------------------------------------------------


def test_commit_stores_the_receipt_and_moves_the_status(ledger: Ledger) -> None:
    a = ledger.submit("ids", [1], reason=REASON)
    b = ledger.submit("ids", [2], reason=REASON)
    ledger.commit({a.request_id: {"model_sha256": "ab" * 32, "round": 3}, b.request_id: {"model_sha256": "cd"}})
    committed_a, committed_b = ledger.get(a.request_id), ledger.get(b.request_id)
    assert committed_a.status is RequestStatus.COMMITTED
    assert committed_a.receipt == {"model_sha256": "ab" * 32, "round": 3}
    assert committed_b.receipt == {"model_sha256": "cd"}
    assert ledger.pending() == []
    assert ledger.held_ids() == {1, 2}  # committed samples stay held: never trained on again


@pytest.mark.parametrize("first", ["commit", "reject"])
def test_a_request_that_is_no_longer_pending_cannot_change(ledger: Ledger, first: str) -> None:
    request = ledger.submit("ids", [1], reason=REASON)
    if first == "commit":
        ledger.commit({request.request_id: {"model": "m1"}})
    else:
        ledger.reject(request.request_id, "no")
    before = _snapshot(ledger)
    with pytest.raises(RequestError, match="not pending"):
        ledger.commit({request.request_id: {"model": "m2"}})
    with pytest.raises(RequestError, match="not pending"):
        ledger.reject(request.request_id, "again")
    assert _snapshot(ledger) == before


def test_commit_or_reject_of_an_unknown_request_fails(ledger: Ledger) -> None:
    ledger.submit("ids", [1], reason=REASON)
    before = _snapshot(ledger)
    with pytest.raises(RequestError, match="no request 'req-unknown'"):
        ledger.commit({"req-unknown": {}})
    with pytest.raises(RequestError, match="no request 'req-unknown'"):
        ledger.reject("req-unknown", "no")
    assert _snapshot(ledger) == before


@pytest.mark.parametrize("bad", ["unknown", "committed"])
def test_a_multi_request_commit_is_atomic(ledger: Ledger, bad: str) -> None:
    a = ledger.submit("ids", [1], reason=REASON)
    b = ledger.submit("ids", [2], reason=REASON)
    c = ledger.submit("ids", [3], reason=REASON)
    if bad == "unknown":
        bad_id = "req-unknown"
    else:
        ledger.commit({c.request_id: {"model": "m0"}})
        bad_id = c.request_id
    before = _snapshot(ledger)
    # the good ones come first: they must be rolled back when the bad one fails
    with pytest.raises(RequestError):
        ledger.commit({a.request_id: {"model": "m1"}, b.request_id: {"model": "m1"}, bad_id: {"model": "m1"}})
    assert _snapshot(ledger) == before
    assert {a.request_id, b.request_id} <= {r.request_id for r in ledger.pending()}
    assert ledger.get(a.request_id).receipt is None


# --- durability ------------------------------------------------------------------------------------------


def test_statuses_and_receipts_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    first = Ledger(path)
    a = first.submit("ids", [1, 2], reason=REASON)
    b = first.submit("class", [3], reason=REASON, target_class=7)
    c = first.submit("all", [4], reason=REASON)
    first.commit({a.request_id: {"model": "m1"}})
    first.reject(b.request_id, "wrong node")
    reopened = Ledger(path)
    assert reopened.get(a.request_id).status is RequestStatus.COMMITTED
    assert reopened.get(a.request_id).receipt == {"model": "m1"}
    assert reopened.get(b.request_id).status is RequestStatus.REJECTED
    assert reopened.get(b.request_id).target_class == 7
    assert reopened.get(c.request_id).status is RequestStatus.PENDING
    assert reopened.held_ids() == {1, 2, 4}
    assert _snapshot(reopened) == _snapshot(first)


@pytest.mark.parametrize(
    "content", [b"this is not a database, just text\n" * 40, bytes(range(256)) * 16], ids=["text", "bytes"]
)
def test_a_corrupt_ledger_file_is_a_data_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "ledger.sqlite"
    path.write_bytes(content)
    with pytest.raises(DataError, match="not a usable ledger"):
        Ledger(path)


# --- pages and untrusted text ------------------------------------------------------------------------------


def test_list_pages_follow_submission_order(ledger: Ledger) -> None:
    filed = [ledger.submit("ids", [i], reason=REASON).request_id for i in range(7)]
    ledger.reject(filed[1], "legal hold")
    first = ledger.list(limit=3)
    second = ledger.list(after=first[-1].request_id, limit=3)
    rest = ledger.list(after=second[-1].request_id, limit=3)
    assert [r.request_id for r in first + second + rest] == filed
    assert len(rest) == 1 and ledger.list(after=filed[-1]) == []
    pending = ledger.list(RequestStatus.PENDING, after=filed[0], limit=2)
    assert [r.request_id for r in pending] == [filed[2], filed[3]]


def test_an_unknown_page_token_is_refused_and_clipped(ledger: Ledger) -> None:
    ledger.submit("ids", [1], reason=REASON)
    with pytest.raises(RequestError, match="names no request of this node") as err:
        ledger.list(after="req-" + "f" * 100_000, limit=10)
    assert len(str(err.value)) < 300


def test_errors_repeat_at_most_a_clipped_request_id(ledger: Ledger) -> None:
    long_id = "req-" + "x" * 1_000_000
    for call in (lambda: ledger.get(long_id), lambda: ledger.reject(long_id, "r"),
                 lambda: ledger.commit({long_id: {}})):
        with pytest.raises(RequestError, match="no request 'req-xxx") as err:
            call()
        assert len(str(err.value)) < 300 and "1000006 characters" in str(err.value)


def test_a_rejection_reason_is_bounded_like_a_request_reason(ledger: Ledger) -> None:
    request = ledger.submit("ids", [1], reason=REASON)
    for bad, message in (("r" * 1001, "more than 1000"), ("\udcff", "not valid UTF-8"), ("", "needs a reason")):
        with pytest.raises(RequestError, match=message):
            ledger.reject(request.request_id, bad)
    assert ledger.get(request.request_id).status is RequestStatus.PENDING


def test_a_row_with_invalid_utf8_still_lists(ledger: Ledger) -> None:
    request = ledger.submit("ids", [1], reason=REASON)
    with sqlite3.connect(ledger.path) as db:  # another tool wrote raw bytes into the TEXT column
        db.execute("UPDATE requests SET reason = CAST(x'6f6bff' AS TEXT) WHERE request_id = ?",
                   (request.request_id,))
    assert [r.reason for r in ledger.list()] == ["ok\ufffd"]


def test_the_ledger_file_is_created_private(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        Ledger(tmp_path / "fresh.sqlite").submit("ids", [1], reason=REASON)
    finally:
        os.umask(previous)
    assert (tmp_path / "fresh.sqlite").stat().st_mode & 0o777 == 0o600



def test_a_request_committed_late_is_not_skipped_by_a_pager(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """A submit that reads the clock and stalls, while a later submit lands and a List page passes it, must
    still be on the next page: the key a pager follows is given when the request is written, not before."""
    real_now = ledger_module._now
    stalled, go = threading.Event(), threading.Event()

    def clock() -> str:
        value = real_now()
        if threading.current_thread().name == "slow":
            stalled.set()
            go.wait(10)  # descheduled right after reading the clock
        return value

    def file(name: str, sample: int) -> threading.Thread:
        def run() -> None:
            filed[name] = ledger.submit("ids", [sample], reason=REASON).request_id
        return threading.Thread(target=run, name=name)

    monkeypatch.setattr(ledger_module, "_now", clock)
    filed = {"first": ledger.submit("ids", [1], reason=REASON).request_id}
    slow, fast = file("slow", 2), file("fast", 3)
    slow.start()
    assert stalled.wait(10)
    fast.start()
    fast.join(0.5)  # lands now if the slow one holds no lock yet; else it queues behind it
    seen = [r.request_id for r in ledger.list(limit=10)]
    go.set()
    for thread in (slow, fast):
        thread.join(10)
    seen += [r.request_id for r in ledger.list(after=seen[-1], limit=10)]
    assert sorted(seen) == sorted(filed.values())  # every request exactly once across the two pages


def test_a_deferral_is_noted_on_pending_requests_only_and_shown_in_the_summary(ledger: Ledger) -> None:
    pending = ledger.submit("ids", [1, 2], reason="erase me")
    settled = ledger.submit("ids", [3], reason="erase me too")
    ledger.commit({settled.request_id: {"model_sha256": "0"}})
    noted = ledger.defer([pending.request_id, settled.request_id, "req-unknown"], "the gate did not pass" + "!" * 2000)
    assert noted == [pending.request_id]
    kept = ledger.get(pending.request_id)
    assert kept.status is RequestStatus.PENDING and kept.summary()["deferral"].startswith("the gate did not pass")
    assert len(kept.deferral or "") == 1000 and ledger.get(settled.request_id).deferral is None


def test_a_ledger_made_before_deferrals_gains_the_column_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE requests (request_id TEXT PRIMARY KEY, kind TEXT NOT NULL, target_class INTEGER, "
            "reason TEXT NOT NULL, status TEXT NOT NULL, rejection TEXT, receipt TEXT, created_at TEXT NOT NULL, "
            "updated_at TEXT NOT NULL);"
            "CREATE TABLE request_samples (request_id TEXT NOT NULL, sample_id INTEGER NOT NULL, "
            "PRIMARY KEY (request_id, sample_id));"
            "INSERT INTO requests VALUES ('req-old', 'ids', NULL, 'old', 'pending', NULL, NULL, 't0', 't0');"
            "INSERT INTO request_samples VALUES ('req-old', 7);")
    ledger = Ledger(path)
    assert ledger.get("req-old").sample_ids == (7,) and ledger.get("req-old").deferral is None
    assert ledger.defer(["req-old"], "later") == ["req-old"] and ledger.get("req-old").deferral == "later"
    assert ledger.submit("ids", [8], reason="new").deferral is None
