"""The forget-request ledger: one SQLite file per node, every change in a transaction.

A request is written (and the transaction committed, fsync'd by SQLite with
``synchronous=FULL``) before its id is returned, so an acknowledged request
survives any crash. Statuses only move ``pending -> committed`` or
``pending -> rejected``; the receipt of a commit is stored in the same
transaction that marks it committed, so a request is never committed without
its receipt, and never shown committed before that transaction lands.

Requests are listed, and paged, in the order their transactions wrote them (SQLite's
rowid, given at insert under the write lock): a request can never become visible
behind a page a caller has already been handed. ``created_at`` is read inside
the same transaction, so it agrees with that order, but it is only shown: two
writers in one millisecond share it.

The file is created 0600: SQLite gives its ``-wal`` and ``-shm`` files the
database's own mode, so the whole ledger stays private to the node's user.
"""

from __future__ import annotations

import builtins
import json
import os
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from fedunlearn.common.errors import DataError, RequestError
from fedunlearn.common.nodes.text import checked_reason, clip

__all__ = ["ForgetRequest", "Ledger", "RequestKind", "RequestStatus"]

RequestKind = Literal["ids", "class", "all"]
DEFERRAL_CHARS = 1000  # a deferral note is the server's text: kept as long as a reason may be

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id   TEXT PRIMARY KEY,
    kind         TEXT NOT NULL CHECK (kind IN ('ids', 'class', 'all')),
    target_class INTEGER,
    reason       TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'committed', 'rejected')),
    rejection    TEXT,
    receipt      TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    deferral     TEXT
);
CREATE TABLE IF NOT EXISTS request_samples (
    request_id TEXT NOT NULL REFERENCES requests (request_id),
    sample_id  INTEGER NOT NULL,
    PRIMARY KEY (request_id, sample_id)
);
CREATE INDEX IF NOT EXISTS request_samples_by_id ON request_samples (sample_id);
"""


class RequestStatus(StrEnum):
    PENDING = "pending"
    COMMITTED = "committed"
    REJECTED = "rejected"


@dataclass(frozen=True)
class ForgetRequest:
    """One request as the ledger holds it. ``sample_ids`` never leave the node."""

    request_id: str
    kind: RequestKind
    sample_ids: tuple[int, ...]
    target_class: int | None
    reason: str
    status: RequestStatus
    rejection: str | None
    receipt: Mapping[str, Any] | None
    created_at: str
    updated_at: str
    deferral: str | None = None  # why the server's last unlearning phase left it pending

    def summary(self) -> dict[str, Any]:
        """What may be shown or sent off the node: everything except the sample ids."""
        return {
            "request_id": self.request_id,
            "kind": self.kind,
            "num_samples": len(self.sample_ids),
            "target_class": self.target_class,
            "reason": self.reason,
            "status": self.status.value,
            "rejection": self.rejection,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "deferral": self.deferral,
        }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Ledger:
    """Durable queue of forget requests for one node (``ledger.sqlite``)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))  # before SQLite would make it 0644
            with self._connect() as db:
                db.executescript(_SCHEMA)
                if "deferral" not in {row[1] for row in db.execute("PRAGMA table_info(requests)")}:
                    db.execute("ALTER TABLE requests ADD COLUMN deferral TEXT")  # a ledger made before it
        except (OSError, sqlite3.DatabaseError) as err:
            raise DataError(f"{self.path} is not a usable ledger ({err}); restore it from a backup") from err

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        # a row written by another tool with invalid UTF-8 must not make every listing fail
        db.text_factory = lambda raw: raw.decode("utf-8", "replace")
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            yield db
        finally:
            db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT: writers queue up; an exception rolls everything back."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def submit(
        self, kind: RequestKind, sample_ids: Iterable[int], *, reason: str, target_class: int | None = None
    ) -> ForgetRequest:
        """Record a pending request; refuses an empty one, a bad reason, or one overlapping a live request."""
        ids = sorted({int(i) for i in sample_ids})
        if not ids:
            raise RequestError("a forget request needs at least one sample; nothing was recorded")
        reason = checked_reason(reason)
        request_id = f"req-{uuid.uuid4().hex[:16]}"
        with self._transaction() as db:
            now = _now()  # under the write lock: no later writer can have landed before this one
            taken = self._live_overlap(db, ids)
            if taken:
                owner, count = taken
                raise RequestError(
                    f"{count} of these samples are already under request {owner}; "
                    "a duplicate request was not recorded"
                )
            db.execute(
                "INSERT INTO requests (request_id, kind, target_class, reason, status, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                (request_id, kind, target_class, reason, now, now),
            )
            db.executemany(
                "INSERT INTO request_samples VALUES (?, ?)", ((request_id, i) for i in ids)
            )
        return self.get(request_id)

    @staticmethod
    def _live_overlap(db: sqlite3.Connection, ids: list[int]) -> tuple[str, int] | None:
        db.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (sample_id INTEGER PRIMARY KEY)")
        db.execute("DELETE FROM wanted")
        db.executemany("INSERT INTO wanted VALUES (?)", ((i,) for i in ids))
        row = db.execute(
            "SELECT r.request_id, COUNT(*) FROM request_samples s "
            "JOIN wanted w ON w.sample_id = s.sample_id "
            "JOIN requests r ON r.request_id = s.request_id "
            "WHERE r.status IN ('pending', 'committed') GROUP BY r.request_id LIMIT 1"
        ).fetchone()
        return (str(row[0]), int(row[1])) if row else None

    def get(self, request_id: str) -> ForgetRequest:
        with self._connect() as db:
            row = db.execute("SELECT * FROM requests WHERE request_id = ?", (request_id,)).fetchone()
            if row is None:
                raise RequestError(f"no request {clip(request_id)} on this node; `fedunlearn node requests` lists them")
            return self._request(db, row)

    def list(
        self, status: RequestStatus | None = None, *, after: str | None = None, limit: int | None = None,
    ) -> builtins.list[ForgetRequest]:
        """Requests in submission order, optionally of one status; a page of them with ``after``/``limit``.

        ``after`` is the id of the last request of the previous page: the page starts behind it in
        rowid order, which is commit order, so requests filed meanwhile neither repeat nor get skipped.
        (Rows are never deleted, so rowids only grow; a VACUUM may renumber them, but keeps their order.)
        """
        where: builtins.list[str] = []
        args: builtins.list[Any] = []
        if status is not None:
            where.append("status = ?")
            args.append(status.value)
        with self._connect() as db:
            if after is not None:
                if db.execute("SELECT 1 FROM requests WHERE request_id = ?", (after,)).fetchone() is None:
                    raise RequestError(f"page token {clip(after)} names no request of this node; "
                                       "list again from the first page")
                where.append("rowid > (SELECT rowid FROM requests WHERE request_id = ?)")
                args.append(after)
            query = "SELECT * FROM requests" + (" WHERE " + " AND ".join(where) if where else "")
            query += " ORDER BY rowid"
            if limit is not None:
                query += " LIMIT ?"
                args.append(limit)
            rows = db.execute(query, args).fetchall()
            return [self._request(db, row) for row in rows]

    def pending(self) -> builtins.list[ForgetRequest]:
        return self.list(RequestStatus.PENDING)

    def held_ids(self) -> set[int]:
        """Sample ids under a pending or committed request: never trained on again."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT s.sample_id FROM request_samples s JOIN requests r ON r.request_id = s.request_id "
                "WHERE r.status IN ('pending', 'committed')"
            ).fetchall()
        return {int(r[0]) for r in rows}

    def commit(self, receipts: Mapping[str, Mapping[str, Any]]) -> None:
        """Mark pending requests committed, each with its receipt, all in one transaction."""
        now = _now()
        with self._transaction() as db:
            for request_id, receipt in receipts.items():
                self._require_pending(db, request_id)
                db.execute(
                    "UPDATE requests SET status = 'committed', receipt = ?, updated_at = ? WHERE request_id = ?",
                    (json.dumps(dict(receipt), sort_keys=True), now, request_id),
                )

    def defer(self, request_ids: Iterable[str], why: str) -> builtins.list[str]:
        """Note on each named pending request why the server left it pending (settled ones are skipped);
        returns the ids noted. The note is the server's word, kept bounded."""
        noted = []
        with self._transaction() as db:
            for request_id in request_ids:
                row = db.execute("SELECT status FROM requests WHERE request_id = ?", (request_id,)).fetchone()
                if row is not None and row[0] == RequestStatus.PENDING:
                    db.execute("UPDATE requests SET deferral = ?, updated_at = ? WHERE request_id = ?",
                               (why[:DEFERRAL_CHARS], _now(), request_id))
                    noted.append(request_id)
        return noted

    def reject(self, request_id: str, reason: str) -> None:
        reason = checked_reason(reason, "a rejection")
        with self._transaction() as db:
            self._require_pending(db, request_id)
            db.execute(
                "UPDATE requests SET status = 'rejected', rejection = ?, updated_at = ? WHERE request_id = ?",
                (reason, _now(), request_id),
            )

    @staticmethod
    def _require_pending(db: sqlite3.Connection, request_id: str) -> None:
        row = db.execute("SELECT status FROM requests WHERE request_id = ?", (request_id,)).fetchone()
        if row is None:
            raise RequestError(f"no request {clip(request_id)} on this node")
        if row[0] != RequestStatus.PENDING:
            raise RequestError(f"request {request_id} is {row[0]}, not pending; it cannot change again")

    @staticmethod
    def _request(db: sqlite3.Connection, row: tuple[Any, ...]) -> ForgetRequest:
        (request_id, kind, target_class, reason, status, rejection, receipt, created, updated, deferral) = row
        ids = db.execute(
            "SELECT sample_id FROM request_samples WHERE request_id = ? ORDER BY sample_id", (request_id,)
        ).fetchall()
        return ForgetRequest(
            request_id=request_id, kind=kind, sample_ids=tuple(int(i[0]) for i in ids),
            target_class=target_class, reason=reason, status=RequestStatus(status), rejection=rejection,
            receipt=json.loads(receipt) if receipt else None, created_at=created, updated_at=updated,
            deferral=deferral,
        )
