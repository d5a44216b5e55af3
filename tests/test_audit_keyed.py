"""The keyed chain and checkpoints (anchors.py): every tampering of docs/AUDIT.md's threat-model
table, done with SQL as someone with database access would, and what plain verify, a key and
checkpoints each detect; time never going backwards; `init` upgrading an older database; bad key
files refused before anything runs.

On PostgreSQL the append-only triggers refuse UPDATE/DELETE of the trail even to the owner, so
``tamper`` disables them for the attack (what a superuser or the tables' owner can do); appending
a backdated event passes the triggers as they are, and is done with them on.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from sqlalchemy import delete, insert, text, update

from helpers import head_of, restore_trail, tamper, trail_rows
from privacy_lock.anchors import load_key, parse_checkpoint
from privacy_lock.audit import event_hash
from privacy_lock.errors import UsageError
from privacy_lock.schema import audit_events, audit_head, locks, metadata, snapshots
from sns import build_sns

IDENTITY = ("--reason", "test", "-q")


def make_key(path: Path) -> Path:
    """A key as the docs make one: 64 hex digits and a newline (random bytes ended in a line
    break about one time in 128, which the tool strips: a 31-byte key, refused in CI once)."""
    path.write_text(secrets.token_hex(32) + "\n", encoding="ascii")
    return path


class Trail:
    """A small SNS with a trail: apply, apply, checkpoint (the "backup" is taken here), revert,
    checkpoint. Keyed when ``key`` is given (the checkpoints then are too)."""

    def __init__(self, db_url: str, tmp_path: Path, key: Path | None) -> None:
        tmp_path.mkdir(exist_ok=True)
        self.sns = build_sns(db_url, tmp_path)
        self.key = key
        self.checkpoints = tmp_path / "checkpoints.txt"
        u0, u1 = (str(u) for u in self.sns.users[:2])
        self.run("apply", u0, "--operator", "alice", "--ticket", "T-1", *IDENTITY)
        self.run("apply", u1, "--operator", "bob", "--ticket", "T-2", *IDENTITY)
        self.backup = trail_rows(self.sns), head_of(self.sns)
        self.backup_tables = tool_rows(self.sns)
        self.run("audit", "checkpoint", "--output", str(self.checkpoints))
        self.run("revert", "--user", u0, "--operator", "carol", "--ticket", "T-3", *IDENTITY)
        self.run("audit", "checkpoint", "--output", str(self.checkpoints))
        self.saved, self.head = trail_rows(self.sns), head_of(self.sns)
        self.tables = tool_rows(self.sns)
        # the first event this test's commands wrote (init may write events of its own)
        self.first = next(e["seq"] for e in self.saved if e["action"] == "lock")

    def run(self, *args: str, expect: int | None = 0, key: bool = True):
        keyed = ("--audit-key-file", str(self.key)) if self.key and key else ()
        return self.sns.run(*keyed, *args, expect=expect)

    def verify(self, *extra: str, key: bool = True):
        result = self.run("audit", "verify", *extra, expect=None, key=key)
        assert result.exit_code in (0, 1), result.output
        assert "Traceback" not in result.output
        if result.exit_code:
            assert "BROKEN" in result.stderr
        return result


def tool_rows(sns) -> tuple[list[dict], list[dict]]:
    """The lock and snapshot rows: what a backup holds beside the trail, and what verify checks
    against the trail's events (their states against its revert and restore events)."""
    return sns.lock_rows(), sns.snapshot_rows()


def tables_back(rows: tuple[list[dict], list[dict]]) -> list:
    """Statements that put the lock and snapshot tables back as ``rows`` holds them."""
    lock_rows, snapshot_rows = rows
    return [delete(snapshots), delete(locks), insert(locks).values(lock_rows),
            insert(snapshots).values(snapshot_rows)]


def rehashed(saved: list[dict], first: int, change: dict, strip: bool = False) -> list[dict]:
    """Events ``first``.. re-hashed with the tool's own hash function after ``change`` to event
    ``first``: a consistent chain only the key (or a checkpoint) can tell from the real one."""
    out, prev = [], saved[first - 2]["hash"] if first > 1 else "0" * 64
    for event in saved[first - 1:]:
        event = {**event, "prev_hash": prev, **(change if event["seq"] == first else {})}
        event["hash"] = prev = event_hash(event)
        if strip:
            event["mac"] = None
        out.append(event)
    return out


def forged(after: dict, seq: int, **fields) -> dict:
    event = {**after, "seq": seq, "action": "revert-approved", "operator": "mallory",
             "reason": "forged", "prev_hash": after["hash"], "mac": None, **fields}
    event["hash"] = event_hash(event)
    return event


def attacks(trail: Trail):
    """(name, how) per row of the table; ``how(sns)`` tampers with the trail."""
    saved, n, c = trail.saved, len(trail.saved), audit_events.c
    k = trail.first + 1  # an event in the middle of the chain

    def statements(*sql):
        return lambda sns: tamper(sns, *sql)

    def backdated_append(sns):
        # allowed by the PostgreSQL triggers: an INSERT, and the head moved forward onto it
        event = forged(saved[-1], n + 1, occurred_at="2020-01-01T00:00:00.000000Z")
        with sns.engine.begin() as conn:
            conn.execute(insert(audit_events).values(event))
            conn.execute(update(audit_head).values(seq=n + 1, hash=event["hash"]))

    def rewrite(move_head: bool, strip: bool = False):
        new = rehashed(saved, trail.first, {"operator": "mallory"}, strip)
        sql = [delete(audit_events).where(c.seq >= trail.first),
               insert(audit_events).values(new)]
        if strip:
            sql.append(update(audit_events).values(mac=None))
        if move_head:
            sql.append(update(audit_head).values(hash=new[-1]["hash"]))
        return statements(*sql)

    old, old_head = trail.backup
    shifted = [update(audit_events).where(c.seq >= k).values(seq=c.seq + 100_000),
               update(audit_events).where(c.seq >= 100_000).values(seq=c.seq - 100_000 + 1)]
    yield "edit an event", statements(
        update(audit_events).where(c.seq == k).values(reason="edited"))
    yield "delete an event", statements(delete(audit_events).where(c.seq == k))
    yield "insert an event mid-chain", statements(
        *shifted, insert(audit_events).values(forged(saved[k - 2], k)),
        update(audit_head).values(seq=n + 1))
    yield "append a backdated event", backdated_append
    # the last event is the revert: its tracks hidden, the lock is put back as before it
    yield "truncate the tail", statements(
        delete(audit_events).where(c.seq == n),
        update(audit_head).values(seq=n - 1, hash=saved[n - 2]["hash"]),
        *tables_back(trail.backup_tables))
    yield "rewrite the whole chain with the tool's hash", rewrite(move_head=False)
    yield "rewrite it and move the head", rewrite(move_head=True)
    yield "rewrite it, move the head and strip every MAC", rewrite(move_head=True, strip=True)
    yield "restore an old backup", statements(
        delete(audit_events), insert(audit_events).values(old),
        update(audit_head).values(seq=old_head[0], hash=old_head[1]),
        *tables_back(trail.backup_tables))


# row -> detected by (plain verify, with a key, with checkpoints): docs/AUDIT.md's table
EXPECTED = {
    "edit an event": (True, True, True),
    "delete an event": (True, True, True),
    "insert an event mid-chain": (True, True, True),
    "append a backdated event": (True, True, True),
    "truncate the tail": (False, False, True),
    "rewrite the whole chain with the tool's hash": (True, True, True),
    "rewrite it and move the head": (False, True, True),
    "rewrite it, move the head and strip every MAC": (False, False, True),
    "restore an old backup": (False, False, True),
}
# what the key or a checkpoint names where the plain chain says nothing
WORDS = {
    ("append a backdated event", 0): "time went backwards",
    ("rewrite it and move the head", 1): "MAC does not match",
    ("rewrite it and move the head", 2): "does not hold",
    ("truncate the tail", 2): "beyond the trail",
    ("restore an old backup", 2): "beyond the trail",
}


def test_every_tampering_in_the_threat_model_table(db_url, tmp_path):
    """Each row on an unkeyed trail (plain verify; verify --checkpoints) and on a keyed one
    (verify with the key; with the key and keyed checkpoints, which catch every row)."""
    key = make_key(tmp_path / "audit.key")
    seen, trail = {}, None
    for keyed in (False, True):
        if trail is not None:  # the same database emptied, for a trail keyed from the start
            metadata.drop_all(trail.sns.engine)
        trail = Trail(db_url, tmp_path / ("keyed" if keyed else "plain"), key if keyed else None)
        assert trail.verify().exit_code == 0
        for name, how in attacks(trail):
            how(trail.sns)
            checked = trail.verify("--checkpoints", str(trail.checkpoints))
            if keyed:
                results = {1: trail.verify()}
                assert checked.exit_code == 1, (name, checked.output)  # key + checkpoints
                without = trail.verify(key=False)  # hashes only, and it says so
                if not without.exit_code and "strip" not in name:
                    assert "checking them needs the key" in without.stdout, name
            else:
                results = {0: trail.verify(), 2: checked}
            for column, result in results.items():
                seen[name, column] = bool(result.exit_code)
                words = WORDS.get((name, column))
                if words and result.exit_code:
                    assert words in result.stderr, (name, column, result.stderr)
            restore_trail(trail.sns, trail.saved, trail.head)
            tamper(trail.sns, *tables_back(trail.tables))
            assert trail.verify().exit_code == 0, name
    table = {name: tuple(seen[name, col] for col in range(3)) for name in EXPECTED}
    assert table == EXPECTED


def test_docs_table_lists_every_row():
    text_ = (Path(__file__).resolve().parent.parent / "docs" / "AUDIT.md").read_text("utf-8")
    for name in EXPECTED:
        assert f"| {name.lower()} |" in text_.lower(), name


def test_keyed_appends_verify_and_the_unkeyed_ones_before_them_are_counted(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path)
    key = make_key(tmp_path / "audit.key")
    u0, u1, u2 = (str(u) for u in sns.users)
    sns.run("apply", u0, "--operator", "alice", "--ticket", "T-1", *IDENTITY)
    unkeyed = sns.audit_count()
    sns.run("--audit-key-file", str(key), "apply", u1, "--operator", "bob", "--ticket", "T-2",
            *IDENTITY)
    trail = trail_rows(sns)
    assert all(e["mac"] is None for e in trail[:unkeyed])
    assert all(e["mac"] and len(e["mac"]) == 81 for e in trail[unkeyed:])
    out = sns.run("--audit-key-file", str(key), "audit", "verify").stdout
    assert f"MACs: {len(trail) - unkeyed} event(s) keyed and valid" in out
    assert f"{unkeyed} unkeyed event(s) before them (written before the key" in out
    out = sns.run("audit", "verify").stdout  # without the key
    assert "checked hashes only" in out and "needs the key" in out
    # an operator without the key is refused before anything changes: the chain would break
    before = sns.items_of(sns.users[2])
    result = sns.run("apply", u2, "--operator", "carol", "--ticket", "T-3", *IDENTITY, expect=2)
    assert "the audit trail is keyed" in result.stderr
    assert sns.items_of(sns.users[2]) == before and sns.audit_count() == len(trail)
    # an unkeyed event appended by hand after keyed ones is a break, with or without the key
    tamper(sns, insert(audit_events).values(forged(trail[-1], len(trail) + 1, mac=None)),
           update(audit_head).values(seq=len(trail) + 1,
                                     hash=forged(trail[-1], len(trail) + 1)["hash"]))
    for args in (("--audit-key-file", str(key)), ()):
        result = sns.run(*args, "audit", "verify", expect=1)
        assert f"event {len(trail) + 1} has no MAC but follows keyed events" in result.stderr


def test_stripping_every_mac_passes_the_key_but_not_a_keyed_checkpoint(db_url, tmp_path):
    key = make_key(tmp_path / "audit.key")
    trail = Trail(db_url, tmp_path / "t", key=key)
    last_checkpoint = trail.checkpoints.read_text().splitlines()[-1]
    assert f"keyed_from={trail.first}" in last_checkpoint and " mac=" in last_checkpoint
    n = len(trail.saved)
    # strip every MAC and rewrite only what follows the last checkpoint (a forged event)
    event = forged(trail.saved[-1], n + 1, occurred_at=trail.saved[-1]["occurred_at"])
    tamper(trail.sns, update(audit_events).values(mac=None),
           insert(audit_events).values(event),
           update(audit_head).values(seq=n + 1, hash=event["hash"]))
    result = trail.verify()
    assert result.exit_code == 0 and "no event carries a MAC under this key" in result.stdout
    result = trail.verify("--checkpoints", str(trail.checkpoints))
    assert "the MACs were stripped" in result.stderr and result.exit_code == 1


def test_checkpoint_lines_are_whole_and_checked(tmp_path):
    key = make_key(tmp_path / "audit.key")
    trail = Trail(f"sqlite:///{tmp_path / 'test.db'}", tmp_path, key=key)
    lines = trail.checkpoints.read_text().splitlines()
    assert len(lines) == 2 and all(line.startswith("privacy-lock checkpoint v1 seq=")
                                   for line in lines)
    printed = trail.run("audit", "checkpoint").stdout.strip()
    assert printed.split(" taken=")[0] == lines[1].split(" taken=")[0]
    out = trail.verify("--checkpoints", str(trail.checkpoints)).stdout
    assert "checkpoints: 2 in" in out
    # a keyed line edited by hand (its hash left alone) fails on its own MAC
    forged_file = tmp_path / "edited.txt"
    forged_file.write_text(lines[1].replace(" taken=2", " taken=1") + "\n")
    result = trail.verify("--checkpoints", str(forged_file))
    assert "checkpoint line 1" in result.stderr and "forged or edited" in result.stderr
    # without the key, the same line is checked against the trail, and the note says so
    result = trail.verify("--checkpoints", str(forged_file), key=False)
    assert result.exit_code == 0 and "need the key" in result.stdout
    # a file that is not one, or not there: exit 2 naming the line, before the trail is read
    bad = tmp_path / "bad.txt"
    bad.write_text("# kept by the auditors\n\n" + lines[0] + "\nseq=3 hash=abc\n")
    result = trail.run("audit", "verify", "--checkpoints", str(bad), expect=2)
    assert f"{bad}:4: not a checkpoint line" in result.stderr
    result = trail.run("audit", "verify", "--checkpoints", str(tmp_path / "no.txt"), expect=2)
    assert "does not exist" in result.stderr
    # a broken trail gets no checkpoint
    tamper(trail.sns, update(audit_events).where(audit_events.c.seq == trail.first)
           .values(reason="edited"))
    result = trail.run("audit", "checkpoint", "--output", str(trail.checkpoints), expect=1)
    assert "BROKEN" in result.stderr
    assert trail.checkpoints.read_text().splitlines() == lines


def test_time_never_goes_backwards_between_operators(db_url, tmp_path, monkeypatch):
    """An operator whose clock runs ahead appends first; the next one's events are never
    dated before it (appends take the time under the head lock, clamped to the head event)."""
    sns = build_sns(db_url, tmp_path)
    ahead = "2999-01-01T00:00:00.000000Z"
    monkeypatch.setattr("privacy_lock.audit.utc_now", lambda: ahead)
    sns.run("apply", str(sns.users[0]), "--operator", "alice", "--ticket", "T-1", *IDENTITY)
    monkeypatch.undo()
    sns.run("apply", str(sns.users[1]), "--operator", "bob", "--ticket", "T-2", *IDENTITY)
    trail = trail_rows(sns)
    assert trail[-1]["occurred_at"] == ahead and trail[-1]["operator"] == "bob"
    assert sns.run("audit", "verify").exit_code == 0


def test_init_adds_the_mac_column_to_an_older_database(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path)
    sns.run("apply", str(sns.users[0]), "--operator", "alice", "--ticket", "T-1", *IDENTITY)
    with sns.engine.begin() as conn:
        conn.execute(text("ALTER TABLE privacy_lock_audit DROP COLUMN mac"))
    key = make_key(tmp_path / "audit.key")
    keyed = ("--audit-key-file", str(key))
    result = sns.run(*keyed, "apply", str(sns.users[1]), "--operator", "bob", "--ticket",
                     "T-2", *IDENTITY, expect=1)
    assert "lacks the column(s) mac" in result.stderr and "privacy-lock init" in result.stderr
    assert "privacy_lock_audit.mac" in sns.run("init").stdout
    sns.run(*keyed, "apply", str(sns.users[1]), "--operator", "bob", "--ticket", "T-2",
            *IDENTITY)
    out = sns.run(*keyed, "audit", "verify").stdout
    assert "event(s) keyed and valid" in out and "unkeyed event(s) before them" in out


def test_bad_key_files_are_refused_before_anything_changes(tmp_path, monkeypatch):
    sns = build_sns(f"sqlite:///{tmp_path / 'test.db'}", tmp_path)
    user = str(sns.users[0])
    before, events_before = sns.items_of(sns.users[0]), sns.audit_count()
    secret = b"s3cr3t-audit-key-material"
    (tmp_path / "short.key").write_bytes(secret)
    (tmp_path / "empty.key").write_bytes(b"\n")
    (tmp_path / "dir.key").mkdir()
    cases = {
        "missing.key": "does not exist",
        "dir.key": "is not a file",
        "empty.key": "is empty",
        "short.key": f"holds {len(secret)} bytes; an audit key needs at least 32",
        # 32 random bytes that end in a line break: the break is not part of the key
        "binary.key": "holds 31 bytes; an audit key needs at least 32 (make one with "
                      "`python3 -c 'import secrets; print(secrets.token_hex(32))' > ",
    }
    (tmp_path / "binary.key").write_bytes(
        os.urandom(31).replace(b"\n", b"x").replace(b"\r", b"x") + b"\n")
    if os.geteuid() != 0:  # root reads a file whatever its mode
        (tmp_path / "locked.key").write_bytes(os.urandom(32))
        (tmp_path / "locked.key").chmod(0)
        cases["locked.key"] = "cannot read audit key file"
    for name, words in cases.items():
        path = str(tmp_path / name)
        for command in (("apply", user, "--operator", "a", "--ticket", "T", *IDENTITY),
                        ("audit", "verify"), ("audit", "checkpoint")):
            result = sns.run("--audit-key-file", path, *command, expect=2)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and path in lines[0] and words in lines[0], lines
            assert secret.decode() not in result.output
    assert sns.items_of(sns.users[0]) == before and sns.audit_count() == events_before
    # option > environment > config ([audit] key_file, relative to the config file)
    good = make_key(tmp_path / "good.key")
    sns.config_path.write_text(sns.config_path.read_text() + '\n[audit]\nkey_file = "short.key"\n')
    assert "holds" in sns.run("audit", "verify", expect=2).stderr
    monkeypatch.setenv("PRIVACY_LOCK_AUDIT_KEY_FILE", str(good))
    sns.run("apply", user, "--operator", "a", "--ticket", "T", *IDENTITY)
    assert "keyed and valid" in sns.run("audit", "verify").stdout
    assert "holds" in sns.run("--audit-key-file", str(tmp_path / "short.key"), "audit",
                              "verify", expect=2).stderr
    assert trail_rows(sns)[-1]["mac"].startswith(load_key(good).key_id + ":")


@pytest.mark.parametrize("line, words", [
    ("privacy-lock checkpoint v1 seq=x hash=" + "0" * 64 + " time=- taken=-", "not an event"),
    ("privacy-lock checkpoint v1 seq=1 hash=abc time=- taken=-", "64 lowercase hex"),
    ("privacy-lock checkpoint v1 seq=1 hash=" + "0" * 64 + " time=-", "missing field 'taken'"),
    ("privacy-lock checkpoint v1 seq=1 hash=" + "0" * 64 + " time=- taken=- key=0123456789abcdef",
     "both key= and mac="),
])
def test_malformed_checkpoint_lines_are_named(line, words):
    with pytest.raises(UsageError, match=words):
        parse_checkpoint(line, "cp.txt:1")
