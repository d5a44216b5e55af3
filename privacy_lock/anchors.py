"""What holds the trail down from outside the database: the audit key and published checkpoints.

The hash chain (audit.py) shows the trail is consistent, but anyone who can write the tables can
recompute it. Two anchors that database access alone cannot reach:

- **The key** (``[audit] key_file``, ``PRIVACY_LOCK_AUDIT_KEY_FILE``, ``--audit-key-file``): a
  file of at least :data:`MIN_KEY_BYTES` bytes kept off the database server. Every appended event
  stores ``mac`` = ``KEYID:HMAC-SHA256(key, "privacy-lock audit event v1:" + hash)``. The event's
  hash already covers all its fields and the previous hash, so the MAC covers the whole chain up
  to it; ``KEYID`` (16 hex digits derived from the key, never the key) names which key wrote it,
  so a rotated key is recognisable.
- **Checkpoints** (``audit checkpoint``): one line per published head, kept by auditors outside
  the database (a WORM store, the review's minutes)::

      privacy-lock checkpoint v1 seq=11 hash=… time=… taken=… [keyed_from=N] [key=KEYID mac=…]

  ``keyed_from`` is the first event that carried a MAC when the line was taken, so stripping
  every MAC later (to pass the trail off as written before the key) is caught; with a key the
  line ends with its own MAC, so a forged or edited line is caught too.

:class:`TrailChecks` applies both (and "time never goes backwards") to each event as
``audit.verify_chain`` walks the chain. See docs/AUDIT.md, "Threat model".
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from privacy_lock.errors import OutputError, UsageError
from privacy_lock.schema import audit_events, audit_head
from privacy_lock.vocabulary import TIME_FORMAT

MIN_KEY_BYTES = 32
KEY_ENV = "PRIVACY_LOCK_AUDIT_KEY_FILE"
# The connection execution option the key travels in, from ``service.Target.connect`` to every
# append and verify on that connection (so the engine and approvals need not pass it along).
KEY_OPTION = "privacy_lock_audit_key"
CHECKPOINT_PREFIX = "privacy-lock checkpoint v1"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")


# --- the key ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditKey:
    """The audit key: its id may be printed, its bytes never (not even in a repr)."""

    key_id: str
    secret: bytes = field(repr=False)

    def mac(self, message: str) -> str:
        return hmac.new(self.secret, message.encode("utf-8"), hashlib.sha256).hexdigest()

    def event_mac(self, event_hash: str) -> str:
        """The ``mac`` column of the event whose hash is ``event_hash``."""
        return f"{self.key_id}:{self.mac(f'privacy-lock audit event v1:{event_hash}')}"


def load_key(path: str | Path) -> AuditKey:
    """Read the key file: a usage error (exit 2, nothing changed) naming the file when it is
    missing, unreadable, empty or shorter than :data:`MIN_KEY_BYTES` bytes. Trailing line breaks
    are not part of the key (``openssl rand -hex 32 > key`` and a copy without the newline are
    the same key), so a key is best text: random bytes end in a CR or LF about one time in 128,
    and a 32-byte binary key that does is one byte short (the tool used to suggest one)."""
    where = f"audit key file {path}"
    file = Path(path)
    try:  # a name too long for the system, or with a NUL, raises rather than "does not exist"
        if not file.exists():
            raise UsageError(f"{where} does not exist")
        if not file.is_file():
            raise UsageError(f"{where} is not a file")
        secret = file.read_bytes().rstrip(b"\r\n")
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {where}: {getattr(exc, 'strerror', None) or exc}") \
            from None
    if not secret:
        raise UsageError(f"{where} is empty")
    if len(secret) < MIN_KEY_BYTES:
        raise UsageError(
            f"{where} holds {len(secret)} bytes; an audit key needs at least {MIN_KEY_BYTES} "
            "(make one with `python3 -c 'import secrets; print(secrets.token_hex(32))' > "
            f"{path}`)")
    key_id = hmac.new(secret, b"privacy-lock audit key id", hashlib.sha256).hexdigest()[:16]
    return AuditKey(key_id, secret)


def key_of(conn: Connection) -> AuditKey | None:
    """The audit key this connection's commands append and verify with (None: unkeyed)."""
    key = conn.get_execution_options().get(KEY_OPTION)
    return key if isinstance(key, AuditKey) else None


def mac_key_id(mac: str | None) -> str | None:
    """The key id a stored ``mac`` names (None when there is no MAC)."""
    if mac is None:
        return None
    return mac.split(":", 1)[0]


# --- checkpoints -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """One published head: event ``seq`` had ``hash`` (and its time) when the line was taken."""

    seq: int
    hash: str
    time: str
    taken: str
    keyed_from: int | None = None
    key_id: str | None = None
    mac: str | None = None
    line_no: int = 0
    text: str = ""  # the line as read (its MAC covers everything before " mac=")

    @property
    def where(self) -> str:
        return f"checkpoint line {self.line_no} (event {self.seq}, taken {self.taken})"


def checkpoint_line(seq: int, hash_: str, time: str | None, taken: str,
                    keyed_from: int | None, key: AuditKey | None) -> str:
    """The line ``audit checkpoint`` prints, keyed (with its own MAC) when ``key`` is given."""
    line = f"{CHECKPOINT_PREFIX} seq={seq} hash={hash_} time={time or '-'} taken={taken}"
    if keyed_from is not None:
        line += f" keyed_from={keyed_from}"
    if key is not None:
        line += f" key={key.key_id}"
        line += f" mac={key.mac(_line_message(line))}"
    return line


def _line_message(unsigned: str) -> str:
    return f"privacy-lock checkpoint MAC v1:{unsigned}"


def read_checkpoints(path: Path) -> list[Checkpoint]:
    """Every checkpoint in ``path`` (blank lines and ``#`` comments skipped); a usage error
    naming the line for anything that is not a checkpoint line, before the trail is read."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"checkpoint file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read checkpoint file {path}: "
                         f"{getattr(exc, 'strerror', None) or exc}") from None
    found = []
    for line_no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        found.append(parse_checkpoint(line, f"{path}:{line_no}", line_no))
    if not found:
        raise UsageError(f"checkpoint file {path} holds no checkpoint line")
    return found


def parse_checkpoint(line: str, where: str, line_no: int = 0) -> Checkpoint:
    """One checkpoint line, checked field by field (a usage error naming ``where``)."""
    if not line.startswith(CHECKPOINT_PREFIX + " "):
        raise UsageError(f"{where}: not a checkpoint line (it must start with "
                         f"{CHECKPOINT_PREFIX!r}, as `audit checkpoint` prints)")
    fields: dict[str, str] = {}
    for word in line[len(CHECKPOINT_PREFIX):].split():
        name, sep, value = word.partition("=")
        if not sep or name in fields:
            raise UsageError(f"{where}: malformed checkpoint field {word!r}")
        fields[name] = value
    allowed = {"seq", "hash", "time", "taken", "keyed_from", "key", "mac"}
    unknown = sorted(set(fields) - allowed)
    missing = [n for n in ("seq", "hash", "time", "taken") if n not in fields]
    if unknown or missing:
        what = f"unknown field {unknown[0]!r}" if unknown else f"missing field {missing[0]!r}"
        raise UsageError(f"{where}: {what} in checkpoint line")
    if ("key" in fields) != ("mac" in fields):
        raise UsageError(f"{where}: a keyed checkpoint line has both key= and mac=")
    seq, keyed_from = _count(fields["seq"], where), None
    if "keyed_from" in fields:
        keyed_from = _count(fields["keyed_from"], where)
    if not _HEX64.match(fields["hash"]) or ("mac" in fields and not _HEX64.match(fields["mac"])):
        raise UsageError(f"{where}: hash= and mac= are 64 lowercase hex digits")
    if "key" in fields and not _KEY_ID.match(fields["key"]):
        raise UsageError(f"{where}: key= is a 16-hex-digit key id")
    return Checkpoint(seq, fields["hash"], fields["time"], fields["taken"], keyed_from,
                      fields.get("key"), fields.get("mac"), line_no, line)


def _count(value: str, where: str) -> int:
    if not value.isdigit():
        raise UsageError(f"{where}: {value!r} is not an event number")
    return int(value)


def append_line(path: Path, line: str) -> None:
    """Append one line to ``path`` (created if missing) with a single ``write`` on an O_APPEND
    descriptor, then fsync: a crash leaves the line whole or absent, concurrent appends do not
    interleave, and a file the OS keeps append-only (``chattr +a``) still takes it."""
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size and _last_byte(path) != b"\n":
                data = b"\n" + data  # a file edited by hand without a final newline
            if os.write(fd, data) != len(data):
                raise OSError("short write")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise OutputError(f"cannot append to {path}: {exc.strerror or exc}") from None


def _last_byte(path: Path) -> bytes:
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1)


# --- checking the trail against them ----------------------------------------------------------


@dataclass
class TrailChecks:
    """The checks beyond the hash chain, applied to each event in order as verify walks it:
    time never goes backwards; with a key, every MAC; the checkpoints. Each ``check`` returns
    (kind, problem) for the first thing that does not hold, else None."""

    key: AuditKey | None = None
    checkpoints: Sequence[Checkpoint] = ()
    keyed: int = 0  # events with a MAC (valid under the key, when there is one)
    unkeyed: int = 0  # events without a MAC before the first keyed one
    other_key: int = 0  # with a key: events under another key id before this key's first
    first_keyed: int | None = None
    key_ids: set[str] = field(default_factory=set)
    checkpoints_held: int = 0
    notes: list[str] = field(default_factory=list)
    _by_seq: dict[int, list[Checkpoint]] = field(default_factory=dict)
    _last_time: datetime | None = None
    _own_key_seen: bool = False

    def __post_init__(self) -> None:
        for checkpoint in self.checkpoints:
            self._by_seq.setdefault(checkpoint.seq, []).append(checkpoint)
        self._keyed_from = {c.keyed_from: c for c in reversed(self.checkpoints)
                            if c.keyed_from is not None}
        for checkpoint in self.checkpoints:
            if checkpoint.key_id is None:
                continue
            if self.key is None:
                self._note("keyed checkpoint lines were checked against the trail; their own "
                           "MACs need the key")
            elif checkpoint.key_id != self.key.key_id:
                self._note(f"checkpoint line {checkpoint.line_no} was keyed with another key "
                           f"(id {checkpoint.key_id}): its MAC was not checked")

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def check(self, event: dict[str, Any]) -> tuple[str, str] | None:
        """The first problem of an event whose hash and place in the chain are intact."""
        return self._time(event) or self._mac(event) or self._checkpoints(event)

    def _time(self, event: dict[str, Any]) -> tuple[str, str] | None:
        seq = event["seq"]
        try:
            when = datetime.strptime(event["occurred_at"], TIME_FORMAT)
        except (TypeError, ValueError):
            return "backdated", (f"event {seq}'s time {event['occurred_at']!r} is not a stored "
                                 "UTC time: it was not written by privacy-lock")
        if self._last_time is not None and when < self._last_time:
            return "backdated", (
                f"event {seq} is dated {event['occurred_at']}, before event {seq - 1}: time "
                "went backwards (an event backdated and appended by hand)")
        self._last_time = when
        return None

    def _mac(self, event: dict[str, Any]) -> tuple[str, str] | None:
        seq, mac = event["seq"], event.get("mac")
        if mac is None:
            if self.first_keyed is not None:
                return "unkeyed", (
                    f"event {seq} has no MAC but follows keyed events (from event "
                    f"{self.first_keyed}): written or rewritten by someone without the key")
            self.unkeyed += 1
            return None
        if self.first_keyed is None:
            self.first_keyed = seq
        key_id = mac_key_id(mac) or ""
        self.key_ids.add(key_id)
        if self.key is None:
            self.keyed += 1
            return None
        if key_id != self.key.key_id:
            if self._own_key_seen:
                return "forged", (
                    f"event {seq} carries a MAC under another key (id {key_id}) after events "
                    f"under this key ({self.key.key_id}): written by someone without the key")
            self.other_key += 1
            return None
        if not hmac.compare_digest(mac, self.key.event_mac(event["hash"])):
            return "forged", (
                f"event {seq}'s MAC does not match: the event was written or rewritten without "
                "the key (e.g. re-hashed with the tool's own hash function)")
        self._own_key_seen = True
        self.keyed += 1
        return None

    def _checkpoints(self, event: dict[str, Any]) -> tuple[str, str] | None:
        seq = event["seq"]
        marking = self._keyed_from.get(seq)
        if marking is not None and event.get("mac") is None:
            return "unkeyed", (
                f"event {seq} has no MAC, but {marking.where} saw the trail keyed from it: "
                "the MACs were stripped and the trail rewritten")
        for checkpoint in self._by_seq.get(seq, ()):
            if event["hash"] != checkpoint.hash:
                return "checkpoint", (
                    f"{checkpoint.where} does not hold: event {seq} no longer has hash "
                    f"{checkpoint.hash}: the trail was rewritten since (or another history "
                    "restored)")
            problem = self._line_mac(checkpoint)
            if problem:
                return "checkpoint", problem
            self.checkpoints_held += 1
        return None

    def _line_mac(self, checkpoint: Checkpoint) -> str | None:
        if self.key is None or checkpoint.key_id != self.key.key_id or checkpoint.mac is None:
            return None
        unsigned = checkpoint.text[:checkpoint.text.rindex(" mac=")]
        if not hmac.compare_digest(checkpoint.mac, self.key.mac(_line_message(unsigned))):
            return (f"{checkpoint.where}: its MAC does not match: the line was forged or "
                    "edited")
        return None

    def finish(self, last_seq: int) -> tuple[str, str] | None:
        """After the walk: a checkpoint beyond the chain's end means events were removed from
        the end (a truncated trail, or an older backup restored)."""
        beyond = [c for c in self.checkpoints if c.seq > last_seq]
        if beyond:
            first = min(beyond, key=lambda c: c.line_no)
            return "truncated", (
                f"{first.where} is beyond the trail, which ends at event {last_seq}: events "
                "were removed from the end (truncated, or an older backup restored)")
        if self.key is not None and self.keyed == 0 and self.unkeyed and not self.other_key:
            self._note(f"no event carries a MAC under this key (id {self.key.key_id}): the "
                       "trail is unkeyed (written before the key was introduced, or every MAC "
                       "was stripped: a checkpoint taken since the key tells)")
        return None


def require_key_if_keyed(conn: Connection) -> None:
    """A usage error when the trail is keyed (its head event carries a MAC) and this connection
    has no key: an unkeyed append would break the chain for good."""
    if key_of(conn) is not None:
        return
    head = select(audit_head.c.seq).where(audit_head.c.id == 1).scalar_subquery()
    mac = conn.execute(select(audit_events.c.mac).where(audit_events.c.seq == head)).scalar()
    if mac is not None:
        raise UsageError(UNKEYED_APPEND)


UNKEYED_APPEND = (
    "the audit trail is keyed (its last event carries a MAC): set the audit key ([audit] "
    f"key_file, {KEY_ENV} or --audit-key-file); an unkeyed event would break the chain")
