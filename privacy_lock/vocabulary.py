"""One vocabulary: every state and status the tool stores or prints, and the stored time format.

The values are what the tool's tables hold and what tables, CSV and JSON show; changing one is a
schema change (a lock's snapshots pending revert have said ``locked`` since the first release).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

Mode = Literal["apply", "revert"]

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # ISO-8601 UTC with microseconds and 'Z', sortable as text


def utc_now() -> str:
    """The current time as stored everywhere in the tool's tables (:data:`TIME_FORMAT`)."""
    return datetime.now(UTC).strftime(TIME_FORMAT)


class LockState(StrEnum):
    """``privacy_lock_locks.state``."""

    ACTIVE = "active"
    REVERTED = "reverted"


class SnapshotState(StrEnum):
    """``privacy_lock_snapshots.state``: pending revert, or what the revert made of the item."""

    PENDING = "locked"  # hidden under the lock, original stored, not reverted yet
    RESTORED = "restored"  # set back to the stored original
    CONFLICT = "conflict"  # changed by someone since the lock: left as it is
    GONE = "gone"  # deleted, or no longer the lock's user's


RESOLVED = (SnapshotState.RESTORED, SnapshotState.CONFLICT, SnapshotState.GONE)


class RequestState(StrEnum):
    """``privacy_lock_revert_requests.state`` (the two-person revert)."""

    PENDING = "pending"  # filed, waiting for a second operator
    APPROVED = "approved"  # approved; the revert runs (or was interrupted: approve again)
    DONE = "done"  # the revert ran to its end
    REJECTED = "rejected"  # cancelled by `reject` while pending; never approved or run


OPEN_REQUEST_STATES = (RequestState.PENDING, RequestState.APPROVED)


class Status(StrEnum):
    """What a command did (or in a dry run would do) for one request: the ``status`` column."""

    LOCKED = "locked"  # apply opened a lock
    EXTENDED = "extended"  # apply added items to the user's active lock
    ALREADY_LOCKED = "already-locked"  # apply found nothing new to hide under the active lock
    WOULD_LOCK = "would-lock"
    WOULD_EXTEND = "would-extend"
    REVERTED = "reverted"  # revert closed the lock
    WOULD_REVERT = "would-revert"
    NOT_LOCKED = "not-locked"  # revert named a user or lock with no active lock
    PENDING_APPROVAL = "pending-approval"  # revert filed a request for a second operator
    ALREADY_REQUESTED = "already-requested"  # a request for that lock was open already
    FAILED = "failed"  # the request failed (see its error); the others went on
    INTERRUPTED = "interrupted"  # Ctrl-C stopped it between two chunks; re-run to finish
    NOT_STARTED = "not-started"  # Ctrl-C stopped the run before it


UNFINISHED = (Status.FAILED, Status.INTERRUPTED, Status.NOT_STARTED)
