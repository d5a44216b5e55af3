"""Output at scale (issue 16): one renderer for every command that prints rows.

--format table|csv|json|ndjson|ids|count and --fields on apply, revert, status, locks,
requests; --output named by its extension; a long run printed as a summary with the full
table in the result file; tables that fit the terminal, Japanese text included. Every check
compares what was printed with what the database holds.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from wcwidth import wcswidth

from helpers import add_users
from privacy_lock.render import Listing, View, fitted_table, outcome_summary
from sns import IDENTITY, build_sns


@pytest.fixture
def sns(db_url, tmp_path):
    return build_sns(db_url, tmp_path)


def db_locks(sns) -> dict[str, int]:
    """user -> lock id, as the database holds them."""
    return {row["subject"]: row["lock_id"] for row in sns.lock_rows()}


def test_every_format_lists_what_the_database_holds(sns):
    u0, u1, u2 = (str(u) for u in sns.users)
    ids = sns.run("apply", u0, u1, *IDENTITY, "--format", "ids", "-q").stdout.split()
    locks = db_locks(sns)
    assert ids == [str(locks[u0]), str(locks[u1])]
    # ndjson: one object a line, the same objects json prints
    lines = sns.run("locks", "--format", "ndjson").stdout.splitlines()
    assert [json.loads(line) for line in lines] == json.loads(
        sns.run("locks", "--format", "json").stdout)
    assert {r["user"]: r["lock_id"] for r in map(json.loads, lines)} == locks
    assert sns.run("locks", "--format", "count").stdout.strip() == "2"
    assert sns.run("locks", "--format", "ids").stdout.split() == [str(locks[u0]),
                                                                   str(locks[u1])]
    # --fields: these columns, in this order, in every format
    out = sns.run("locks", "--fields", "user,lock_id", "--format", "csv").stdout
    assert out.splitlines()[0] == "user,lock_id"
    assert {r["user"]: int(r["lock_id"]) for r in csv.DictReader(io.StringIO(out))} == locks
    rows = json.loads(sns.run("locks", "--fields", "lock_id,items", "--format", "json").stdout)
    snaps = sns.snapshot_rows()
    assert rows == [{"lock_id": locks[u], "items": sum(s["lock_id"] == locks[u] for s in snaps)}
                    for u in (u0, u1)]
    table = sns.run("locks", "--fields", "user,items").stdout.splitlines()
    assert table[0].split() == ["user", "items"]
    # status counts users, a user with two kinds once
    assert sns.run("status", u0, u2, "--format", "count").stdout.strip() == "2"
    assert sns.run("status", u0, u2, "--format", "ids").stdout.split() == [u0, u2]
    revert = sns.run("revert", "--user", u1, *IDENTITY, "--format", "ndjson", "-q").stdout
    assert [json.loads(line)["lock_id"] for line in revert.splitlines()] == [locks[u1]]
    assert {r["lock_id"]: r["state"] for r in sns.lock_rows()}[locks[u1]] == "reverted"


def test_status_items_in_csv_is_one_table_a_reader_can_load(sns):
    """Two tables with different headers in one CSV stream: a CSV reader took the item rows
    as kind rows. Now one table, told apart by the row column."""
    user = str(sns.users[0])
    sns.apply(user, extra=("-q",))
    out = sns.run("status", user, "--items", "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {r["row"] for r in rows} == {"kind", "item"}
    kinds = [r for r in rows if r["row"] == "kind"]
    items = [r for r in rows if r["row"] == "item"]
    snaps = sns.snapshot_rows()
    assert sorted(r["item"] for r in items) == sorted(str(s["item_id"]) for s in snaps)
    assert all(r["item_state"] == "locked" and r["lock"] == str(snaps[0]["lock_id"])
               for r in items)
    assert {r["kind"]: int(r["snapshots"]) for r in kinds} == {
        kind: sum(s["kind"] == kind for s in snaps) for kind in ("diary", "photo")}
    # the same one table in ndjson; json keeps its nested shape
    lines = sns.run("status", user, "--items", "--format", "ndjson").stdout.splitlines()
    assert json.loads(lines[0])["user"] == user and len(json.loads(lines[0])["items"]) == len(
        snaps)
    by_fields = sns.run("status", user, "--items", "--fields", "row,item,original",
                        "--format", "ndjson").stdout.splitlines()
    assert sum(json.loads(line)["row"] == "item" for line in by_fields) == len(snaps)


def test_a_mistyped_field_or_an_unknown_output_name_changes_nothing(sns, tmp_path):
    """A careless colleague: --fields usr, or --output result.txt (which silently got CSV).
    Both are refused while the options are read, before anything changes (exit 2)."""
    user = str(sns.users[0])
    before, events = sns.everything(), sns.audit_count()
    bad = sns.run("apply", user, *IDENTITY, "--fields", "usr,status", expect=2)
    assert "unknown field 'usr' for apply" in bad.stderr and "user, lock" in bad.stderr
    bad = sns.run("apply", user, *IDENTITY, "--fields", "user,user", expect=2)
    assert "names a field twice" in bad.stderr
    bad = sns.run("apply", user, *IDENTITY, "--output", str(tmp_path / "result.txt"),
                  expect=2)
    assert "cannot tell the format of result.txt" in bad.stderr and "NAME.tsv" in bad.stderr
    assert "Traceback" not in bad.output and len(bad.stderr.strip().splitlines()) == 1
    assert sns.everything() == before and sns.lock_rows() == []
    assert sns.audit_count() == events and not (tmp_path / "result.txt").exists()
    bad = sns.run("audit", "report", "--format", "csv", "--output", str(tmp_path / "a.json"),
                  expect=2)
    assert "--format csv but --output a.json names json" in bad.stderr
    # .tsv and .ndjson are written in their own format
    sns.run("apply", user, *IDENTITY, "--output", str(tmp_path / "r.tsv"), "-q")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "r.tsv").read_text("utf-8")),
                               delimiter="\t"))
    assert {(r["user"], int(r["lock"])) for r in rows} == set(db_locks(sns).items())
    sns.run("apply", user, *IDENTITY, "--output", str(tmp_path / "r.ndjson"), "-q")
    again = [json.loads(line) for line in
             (tmp_path / "r.ndjson").read_text("utf-8").splitlines()]
    assert [(r["user"], r["lock_id"], r["status"]) for r in again] == [
        (user, db_locks(sns)[user], "already-locked")]
    report = tmp_path / "trail"
    sns.run("audit", "report", "--output", str(report.with_suffix(".ndjson")))
    assert len(report.with_suffix(".ndjson").read_text("utf-8").splitlines()) == \
        sns.audit_count()


def test_a_long_run_prints_a_summary_and_the_full_table_goes_to_output(sns, tmp_path):
    """63 users used to print 127 table lines; now one screen, the full table in --output."""
    users = [str(u) for u in [*sns.users, *add_users(sns, 60)]]
    out = tmp_path / "result.csv"
    result = sns.run("apply", *users, *IDENTITY, "--output", str(out), "-q")
    printed = result.stdout.splitlines()
    assert len(printed) < 20
    assert printed[0] == "63 requests: 63 locked"
    assert f"(126 result rows not shown: the full table is in {out})" in printed
    summary = {tuple(line.split()[:2]): line.split()[2:] for line in printed
               if line.split()[:1] == ["locked"]}
    assert set(summary) == {("locked", "diary"), ("locked", "photo")}
    rows = list(csv.DictReader(io.StringIO(out.read_text("utf-8"))))
    assert len(rows) == 126
    assert {r["user"]: int(r["lock"]) for r in rows} == db_locks(sns)
    # the summary's sums are the database's: requests, changed per kind
    snaps = sns.snapshot_rows()
    for (_, kind), (requests, changed, _private) in summary.items():
        assert int(requests) == 63
        assert int(changed) == sum(s["kind"] == kind for s in snaps)
    # without --output the summary says how to get the rows: the run's own events
    again = sns.run("apply", *users, *IDENTITY, "-q").stdout
    assert "63 requests: 63 already-locked" in again
    assert "audit report --action apply --since" in again
    # csv and json are never summarized: they are for programs
    as_csv = sns.run("apply", *users, *IDENTITY, "-q", "--format", "csv").stdout
    assert len(as_csv.splitlines()) == 127


def test_the_summary_lists_the_first_failures_and_counts_the_rest():
    rows = [{"line": n + 2, "user": str(n), "lock": None, "status": "failed", "kind": "-",
             "changed": 0, "already_private": 0, "error": f"boom {n}"} for n in range(25)]
    rows += [{"line": 40, "user": "40", "lock": 7, "status": "locked", "kind": "diary",
              "changed": 4, "already_private": 1}]
    text = outcome_summary(rows, "the full table is in r.csv")
    assert text.splitlines()[0] == "26 requests: 25 failed, 1 locked"
    assert "errors (25):" in text and "boom 0" in text and "boom 19" in text
    assert "boom 20" not in text and "... and 5 more" in text


def test_tables_fit_the_terminal_and_japanese_text_lines_up(sns):
    user = str(sns.users[0])
    reason = "ログインできなくなったため、日記と写真を非公開にしてほしいとのご依頼（電話）" * 3
    sns.run("apply", user, "--operator", "佐藤", "--ticket", "T-7", "--reason", reason, "-q")
    result = sns.run("locks")
    lines = result.stdout.splitlines()
    assert max(wcswidth(line) for line in lines) <= 120
    assert "--wide shows every column" in result.stderr
    wide = sns.run("locks", "--wide").stdout
    assert reason in wide and max(wcswidth(line) for line in wide.splitlines()) > 120
    # columns after a Japanese cell start at the same terminal column on every line
    table = sns.run("locks", "--fields", "reason,operator,lock_id", "--wide").stdout
    header, rule, row = table.splitlines()
    assert wcswidth(row[:row.index("佐藤")]) == header.index("operator")
    assert wcswidth(row) <= len(rule)


def test_a_cut_cell_keeps_its_escapes_and_the_width():
    rows = [{"id": 1, "text": "a\x1b[2J" + "x" * 200, "note": "日本語" * 40}]
    text, notes = fitted_table(Listing(rows, ["id", "text", "note"], cut=("text", "note")),
                               ["id", "text", "note"], 80)
    assert "\x1b" not in text and "a\\x1b[2J" in text
    assert max(wcswidth(line) for line in text.splitlines()) <= 80
    assert notes and "shortened text, note" in notes[0]
    full, none = fitted_table(Listing(rows, ["id", "text", "note"], cut=("text",)),
                              ["id", "text", "note"], 80, wide=True)
    assert "x" * 200 in full and none == []
    assert View().fmt == "table"


def test_the_summary_says_where_the_full_table_is_for_each_kind_of_run():
    from privacy_lock.cli import full_table_hint

    assert full_table_hint(Path("r.csv"), "apply", "T0", False) == "the full table is in r.csv"
    assert "--output FILE" in full_table_hint(None, "apply", "T0", True)  # a dry run repeats
    real = full_table_hint(None, "apply", "2026-12-01T00:00:00.000000Z", False)
    assert real.endswith("privacy-lock audit report --action apply --since "
                         "2026-12-01T00:00:00.000000Z --format csv")
    # approve has no --output: its hint names only the trail
    assert "--output" not in full_table_hint(None, "revert", "T0", False, has_output=False)
