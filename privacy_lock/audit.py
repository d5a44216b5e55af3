"""The append-only, hash-chained audit trail: append an event, verify the chain, query events.

Each event stores the hash of the event before it, and its own hash covers every stored field
plus that previous hash, so editing, deleting, inserting or reordering any event breaks the chain
at that point. Appends lock the single head row first: concurrent operators are serialized into
one chain, and the event commits in the same transaction as the change it describes.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select

from privacy_lock import __version__
from privacy_lock.errors import NotInitializedError
from privacy_lock.schema import GENESIS_HASH, audit_events, audit_head

# The fields an event's hash covers, in this order.
HASHED_FIELDS = (
    "seq", "occurred_at", "action", "subject", "lock_id", "operator", "os_user", "host",
    "ticket", "reason", "details", "tool_version", "prev_hash",
)


def utc_now() -> str:
    """The current time as stored everywhere in the tool's tables: ISO-8601 UTC with 'Z'."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Actor:
    """Who acts and why: the operator's stated name, the OS account and host, ticket and reason."""

    operator: str
    ticket: str | None = None
    reason: str | None = None
    os_user: str = ""
    host: str = ""

    @classmethod
    def current(cls, operator: str, ticket: str | None = None, reason: str | None = None) -> Actor:
        """An actor for this process, with the OS user and host filled in."""
        try:
            os_user = getpass.getuser()
        except Exception:  # noqa: BLE001 - no login name (e.g. a container); record that plainly
            os_user = "unknown"
        return cls(operator, ticket, reason, os_user, socket.gethostname())


def event_hash(event: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of the hashed fields (including the previous hash)."""
    payload = json.dumps(
        [event[name] for name in HASHED_FIELDS], ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def append_event(
    conn: Connection,
    action: str,
    actor: Actor | None,
    *,
    subject: str | None = None,
    lock_id: int | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Append one event inside the caller's transaction and return it (with its hash).

    Call it last in a transaction: the head row lock it takes is held until commit, and every
    other append in the database waits for it.
    """
    head = conn.execute(
        select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1).with_for_update()
    ).first()
    if head is None:
        raise NotInitializedError(
            "the audit head row is missing: run `privacy-lock init` (and `audit verify`)"
        )
    event = {
        "seq": head.seq + 1,
        "occurred_at": utc_now(),
        "action": action,
        "subject": subject,
        "lock_id": lock_id,
        "operator": actor.operator if actor else None,
        "os_user": actor.os_user if actor else None,
        "host": actor.host if actor else None,
        "ticket": actor.ticket if actor else None,
        "reason": actor.reason if actor else None,
        "details": json.dumps(details or {}, ensure_ascii=False, sort_keys=True),
        "tool_version": __version__,
        "prev_hash": head.hash,
    }
    event["hash"] = event_hash(event)
    conn.execute(audit_events.insert().values(event))
    conn.execute(
        audit_head.update()
        .where(audit_head.c.id == 1)
        .values(seq=event["seq"], hash=event["hash"])
    )
    return event


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of recomputing the chain."""

    total: int
    valid: int
    head_hash: str
    problem: str | None = None
    broken_seq: int | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify_chain(
    conn: Connection, expect_head: str | None = None, batch: int = 5000
) -> VerifyResult:
    """Recompute every event's hash in order and name the first event that does not fit."""
    prev_hash, expected_seq, valid, seen_expected = GENESIS_HASH, 1, 0, expect_head is None
    last_seq = 0
    while True:
        rows = conn.execute(
            select(audit_events).where(audit_events.c.seq >= expected_seq)
            .order_by(audit_events.c.seq).limit(batch)
        ).mappings().all()
        for row in rows:
            event = dict(row)
            problem = None
            if event["seq"] != expected_seq:
                problem = f"event {expected_seq} is missing (next stored event is {event['seq']})"
            elif event["prev_hash"] != prev_hash:
                problem = f"event {event['seq']} does not follow the event before it (prev_hash)"
            elif event_hash(event) != event["hash"]:
                problem = f"event {event['seq']} was altered (its hash does not match its content)"
            if problem:
                return _broken(conn, valid, prev_hash, problem, expected_seq)
            if expect_head and event["hash"] == expect_head:
                seen_expected = True
            prev_hash, last_seq, valid = event["hash"], event["seq"], valid + 1
            expected_seq = last_seq + 1
        if len(rows) < batch:
            break
    head = conn.execute(select(audit_head).where(audit_head.c.id == 1)).first()
    if head is None or head.seq != last_seq or head.hash != prev_hash:
        return VerifyResult(
            valid, valid, prev_hash,
            f"the chain ends at event {last_seq} but the head row says event "
            f"{head.seq if head else '?'}: events after {last_seq} were removed or the head edited",
            last_seq + 1,
        )
    if not seen_expected:
        return VerifyResult(
            valid, valid, prev_hash,
            f"the published head {expect_head} is not in the chain: the trail was truncated "
            "or rewritten after it was published",
        )
    return VerifyResult(valid, valid, prev_hash)


def _broken(
    conn: Connection, valid: int, prev_hash: str, problem: str, seq: int
) -> VerifyResult:
    total = conn.execute(select(audit_events.c.seq)).all()
    return VerifyResult(len(total), valid, prev_hash, problem, seq)
