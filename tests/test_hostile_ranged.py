"""Hostile sites for a heavy user's ranged slices (issue #15's MariaDB changes: the revert
restores from originals read with the snapshots through one ``CASE``, the walk forces the
reflected (owner, id) index, rows named by key check the owner byte for byte).

How it could go wrong: an original that the ``CASE`` gives back changed (NULL, '', long text,
quotes, backslashes, emoji; integers at the 64-bit limits), an owner at the 64-bit limit that
the byte comparison misses, an index whose name needs quoting, a table with no (owner, id)
index, a look-alike owner whose items a slice touches, a conflict in the same slice.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.pool import NullPool

from privacy_lock.cli import cli
from sns import IDENTITY

TEXTS = [None, "", "x" * 3000, "it's \"q\" \\ back\\slash", "\U0001F600 emoji", "public",
         "friends ", "Public"]
BIG = 9223372036854775807
INTS = [None, -BIG - 1, BIG, 0, 1, -1, 7]

CONFIG = """[accounts]
table = "users"
id = "id"

[content.note]
table = "notes"
id = "id"
owner = "owner_id"
visibility = "vis"
private = {private}

[policy]
revert_requires_approval = false
"""


def _site(db_url, dialect, vis_type, owner_type, index):
    engine = create_engine(db_url, poolclass=NullPool)
    quote = "`" if dialect == "mysql" else '"'
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE users (id {owner_type} PRIMARY KEY)"))
        conn.execute(text(f"CREATE TABLE notes (id BIGINT PRIMARY KEY, owner_id {owner_type} "
                          f"NOT NULL, vis {vis_type})"))
        if index:
            name = index.replace(quote, quote * 2)
            conn.execute(text(f"CREATE INDEX {quote}{name}{quote} ON notes (owner_id, id)"
                              .replace("%", "%%")))
    return engine


def _config(tmp_path, private='"self"'):
    config = tmp_path / "privacy-lock.toml"
    config.write_text(CONFIG.format(private=private), encoding="utf-8")
    return config


def _notes(engine):
    """Every note's visibility, by id."""
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT id, vis FROM notes")).all())


def _run(config, db_url, *args, expect=0):
    result = CliRunner().invoke(cli, ["--config", str(config), "--database-url", db_url,
                                      *args], catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result


@pytest.mark.parametrize("index", ["ix \"odd\" name", "ix `odd`", "ix 100% %s", None],
                         ids=["spaced-name", "backtick-in-name", "percent-in-name", "no-index"])
@pytest.mark.parametrize("vis", ["text", "bigint"])
def test_ranged_revert_gives_back_every_original_exactly(db_url, dialect, tmp_path, vis, index):
    """A heavy owner at the 64-bit limit, with a look-alike neighbour (the owner one less),
    every awkward original, item ids at the limit, one item the site made visible meanwhile
    (a conflict in the middle of a slice): revert in slices of 3 gives back each original,
    the conflict stays, and the neighbour is never touched."""
    vis_type = {"text": "VARCHAR(4000)" if dialect != "sqlite" else "TEXT",
                "bigint": "BIGINT"}[vis]
    if dialect == "mysql" and vis == "text":
        vis_type = "VARCHAR(4000) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"
    engine = _site(db_url, dialect, vis_type, "BIGINT", index)
    owner, neighbour = BIG, BIG - 1
    values = TEXTS if vis == "text" else INTS
    private = '"self"' if vis == "text" else "-7"
    visible = list(values)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users (id) VALUES (:a), (:b)"),
                     [{"a": owner, "b": neighbour}][0])
        rows = [{"id": BIG - 100 + i, "o": owner, "v": v} for i, v in enumerate(visible * 2)]
        rows += [{"id": -BIG - 1 + i, "o": neighbour, "v": v} for i, v in enumerate(visible)]
        conn.execute(text("INSERT INTO notes (id, owner_id, vis) VALUES (:id, :o, :v)"), rows)
    config = _config(tmp_path, private)

    before = _notes(engine)
    _run(config, db_url, "init")
    hints: list[str] = []

    def hinted(_conn, _cursor, statement, *_args):
        hints.extend(part for part in statement.split("FROM")[1:2] if "FORCE INDEX" in part)

    event.listen(Engine, "before_cursor_execute", hinted)
    try:
        _run(config, db_url, "apply", str(owner), *IDENTITY, "--chunk-size", "3",
             "--chunk-time", "0")
    finally:
        event.remove(Engine, "before_cursor_execute", hinted)
    # MariaDB's walk forces the (owner, id) index when its name can be written in a hint
    if dialect == "mysql" and index == 'ix "odd" name':
        assert hints and all('FORCE INDEX (`ix "odd" name`)' in hint for hint in hints)
    else:
        assert not hints
    hidden = _notes(engine)
    private_value = "self" if vis == "text" else -7
    mine = {r["id"] for r in rows if r["o"] == owner}
    assert {i: v for i, v in hidden.items() if i in mine} == dict.fromkeys(mine, private_value)
    assert {i: v for i, v in hidden.items() if i not in mine} == {
        i: v for i, v in before.items() if i not in mine}
    conflict = BIG - 100 + 4
    changed = "site" if vis == "text" else 42
    with engine.begin() as conn:
        conn.execute(text("UPDATE notes SET vis = :v WHERE id = :i"),
                     {"v": changed, "i": conflict})
    _run(config, db_url, "revert", "--user", str(owner), *IDENTITY, "--chunk-size", "3",
         "--chunk-time", "0")
    after = _notes(engine)
    assert after == {**before, conflict: changed}
    assert "events valid" in _run(config, db_url, "audit", "verify").stdout
    engine.dispose()


LOOKALIKES = ["alice", "ALICE", "alice ", "Alice  "]


def test_lookalike_owners_in_ranged_slices_stay_apart(db_url, dialect, tmp_path):
    """Four owners equal under the owner column's case-insensitive, PAD SPACE collation
    (MariaDB utf8mb4_general_ci; SQLite NOCASE ignores case only), each heavier than a chunk,
    their items interleaved: applying and reverting one in slices of 2 changes its items only,
    and each revert gives back exactly what its apply hid."""
    owner_type = {"sqlite": "VARCHAR(36) COLLATE NOCASE", "postgresql": "VARCHAR(36)",
                  "mysql": "VARCHAR(36) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"}
    engine = create_engine(db_url, poolclass=NullPool)
    id_type = ("VARCHAR(36) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin"  # 'alice ' too
               if dialect == "mysql" else "VARCHAR(36)")
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE users (id {id_type} PRIMARY KEY)"))
        conn.execute(text(f"CREATE TABLE notes (id BIGINT PRIMARY KEY, owner_id "
                          f"{owner_type[dialect]} NOT NULL, vis VARCHAR(16))"))
        conn.execute(text("CREATE INDEX ix_notes_owner ON notes (owner_id, id)"))
        conn.execute(text("INSERT INTO users (id) VALUES (:id)"), [{"id": o} for o in LOOKALIKES])
        conn.execute(text("INSERT INTO notes (id, owner_id, vis) VALUES (:id, :o, :v)"),
                     [{"id": i, "o": LOOKALIKES[i % 4], "v": ("public", "friends")[i % 3 % 2]}
                      for i in range(40)])
    config = _config(tmp_path)

    before = _notes(engine)
    _run(config, db_url, "init")
    slices = ("--chunk-size", "2", "--chunk-time", "0")
    # MariaDB refuses to lock an id ending in a space (the tool's own tables pad): those two
    # stay neighbours whose items no slice may touch
    acted = [o for o in LOOKALIKES if dialect != "mysql" or o == o.rstrip()]
    for n, owner in enumerate(acted):
        _run(config, db_url, "apply", owner, *IDENTITY, *slices)
        assert _notes(engine) == {i: "self" if LOOKALIKES[i % 4] in acted[:n + 1] else v
                           for i, v in before.items()}, owner
    for n, owner in enumerate(acted):
        _run(config, db_url, "revert", "--user", owner, *IDENTITY, *slices)
        assert _notes(engine) == {i: "self" if LOOKALIKES[i % 4] in acted[n + 1:] else v
                           for i, v in before.items()}, owner
    assert "events valid" in _run(config, db_url, "audit", "verify").stdout
    engine.dispose()


@pytest.mark.parametrize("vis_type", [
    "ENUM('public','friends','self')", "CHAR(8) CHARACTER SET latin1",
    "TINYTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"])
def test_mariadb_ranged_revert_on_other_column_types(db_url, dialect, tmp_path, vis_type):
    """MariaDB's ranged revert writes each original back through one ``CASE`` of literals
    typed like the visibility column: an ENUM, a latin1 CHAR, a TINYTEXT."""
    if dialect != "mysql":
        pytest.skip("MariaDB column types")
    engine = _site(db_url, dialect, vis_type, "BIGINT", "ix_notes_owner")
    originals = [None, "public", "friends", "public"]
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users (id) VALUES (1), (2)"))
        conn.execute(text("INSERT INTO notes (id, owner_id, vis) VALUES (:id, :o, :v)"),
                     [{"id": i, "o": 1 + i // 4 % 2, "v": originals[i % 4]} for i in range(32)])
    config = _config(tmp_path)

    before = _notes(engine)
    _run(config, db_url, "init")
    slices = ("--chunk-size", "2", "--chunk-time", "0")
    _run(config, db_url, "apply", "1", *IDENTITY, *slices)
    assert _notes(engine) == {i: "self" if i // 4 % 2 == 0 else v for i, v in before.items()}
    out = _run(config, db_url, "revert", "--user", "1", *IDENTITY, *slices)
    assert _notes(engine) == before, out.output
    engine.dispose()


def test_a_set_visibility_column_is_refused_before_anything_changes(db_url, dialect, tmp_path):
    """A MySQL/MariaDB SET column holds several values at once and reads back as a Python set:
    a revert could never tell an item still owner-only, so every item would have been a
    conflict and stayed hidden (exit 0). The config is refused, exit 2, nothing changed."""
    if dialect != "mysql":
        pytest.skip("MariaDB column types")
    engine = _site(db_url, dialect, "SET('public','friends','self')", "BIGINT", "ix_notes_owner")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users (id) VALUES (1)"))
        conn.execute(text("INSERT INTO notes (id, owner_id, vis) VALUES (1, 1, 'public'), "
                          "(2, 1, 'public,friends')"))
    config = _config(tmp_path)

    before = _notes(engine)
    bare = tmp_path / "tables-only.toml"  # the tool's tables exist: apply is refused by the map
    bare.write_text("[policy]\nrevert_requires_approval = false\n", encoding="utf-8")
    _run(bare, db_url, "init")
    for args in (("init",), ("apply", "1", *IDENTITY)):
        out = _run(config, db_url, *args, expect=2).output
        assert "content.note.visibility: column notes.vis has type SET" in out, out
        assert "holds several values at once" in out and "Traceback" not in out
    assert _notes(engine) == before
    engine.dispose()
