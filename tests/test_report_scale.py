"""The audit report at scale (issue 16): a bounded html page with the first N events and the
command for the rest, --summary as the summary only, streamed exports, figures an auditor can
reconcile with `locks` and `status`, a broken chain marked and exiting 1, verify in JSON.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shlex

import pytest
from sqlalchemy import update

from helpers import add_users, tamper
from privacy_lock.schema import audit_events
from sns import IDENTITY, build_sns


@pytest.fixture
def sns(db_url, tmp_path):
    return build_sns(db_url, tmp_path)


def listed_seqs(page: str) -> list[int]:
    table = page.split('<table id="events">', 1)[1].split("</table>", 1)[0]
    return [int(n) for n in re.findall(r'<tr(?: [^>]*)?><td class="num">(\d+)</td>', table)]


def card(page: str, key: str) -> int:
    found = re.search(rf'<div class="card" id="card-{key}"[^>]*>[^<]*<b>([\d,]+)</b>', page)
    assert found, key
    return int(found.group(1).replace(",", ""))


def test_html_lists_the_first_events_and_the_command_that_lists_the_rest(sns, tmp_path):
    users = [*sns.users, *add_users(sns, 30)]
    sns.run("apply", *map(str, users), *IDENTITY, "-q")  # a lock and an apply event each
    total = sns.audit_count()
    assert total == 2 * len(users)
    page = sns.run("audit", "report", "--format", "html", "--limit", "10",
                   "--operator", "tester").stdout
    assert listed_seqs(page) == list(range(1, 11))
    assert f"Events (the first 10 of {total})" in page
    assert card(page, "events") == total  # the figures count every event, not the listed ones
    rest = re.search(r'id="events-rest">(\d+) more .*?They are: <code>([^<]+)</code>',
                     page)
    assert rest and int(rest.group(1)) == total - 10
    command = shlex.split(rest.group(2).replace("&#x27;", "'"))
    assert command[:3] == ["privacy-lock", "audit", "report"]
    assert command[3:7] == ["--operator", "tester", "--after", "10"]
    # the command, run, gives exactly the events the page left out
    args = command[3:command.index("--output")]
    rows = list(csv.DictReader(io.StringIO(sns.run("audit", "report", *args).stdout)))
    assert [int(r["seq"]) for r in rows] == list(range(11, total + 1))
    # the page's size follows --limit, not the trail: 10 events or 40, about the same page
    small = len(page)
    every = sns.run("audit", "report", "--format", "html", "--limit", "0").stdout
    assert listed_seqs(every) == list(range(1, total + 1))
    assert len(every) > small + 30 * 300
    # --summary --format html is the summary: no events at all
    summary = sns.run("audit", "report", "--summary", "--format", "html").stdout
    assert 'id="events"' not in summary and f"{total} events selected" in summary
    assert card(summary, "locks-opened") == len(users) and len(summary) < small
    # the terminal table stops at 50 by default and says how to get the rest
    table = sns.run("audit", "report").stdout.splitlines()
    assert [int(line.split()[0]) for line in table[2:52]] == list(range(1, 51))
    assert table[52].startswith(f"... {total - 50} more events: privacy-lock audit report "
                                "--after 50 --format csv")


def test_exports_stream_every_event_and_limit_after_cut_them_exactly(sns, tmp_path):
    sns.run("apply", *map(str, sns.users), *IDENTITY, "-q")
    total = sns.audit_count()
    as_json = json.loads(sns.run("audit", "report", "--format", "json").stdout)
    assert [e["seq"] for e in as_json] == list(range(1, total + 1))
    first = sns.run("audit", "report", "--format", "json", "--limit", "2")
    assert [e["seq"] for e in json.loads(first.stdout)] == [1, 2]
    assert "--after 2 --format json" in first.stderr
    rest = json.loads(sns.run("audit", "report", "--format", "json", "--after", "2").stdout)
    assert rest == as_json[2:]
    assert sns.run("audit", "report", "--format", "ids").stdout.split() == [
        str(n) for n in range(1, total + 1)]
    assert sns.run("audit", "report", "--format", "count", "--action", "lock").stdout.strip() \
        == str(len(sns.lock_rows()))
    out = tmp_path / "trail.csv"
    sns.run("audit", "report", "--output", str(out), "--fields", "seq,action,hash")
    rows = list(csv.DictReader(io.StringIO(out.read_text("utf-8"))))
    assert [list(r) for r in rows[:1]] == [["seq", "action", "hash"]]
    assert [r["hash"] for r in rows] == [e["hash"] for e in as_json]
    empty = sns.run("audit", "report", "--format", "json", "--operator", "nobody").stdout
    assert json.loads(empty) == []


def test_the_figures_reconcile_with_locks_and_status(sns):
    """8 apply events for 5 locks: the 'applies' card counted events. The figures count what
    `locks` and `status` show, whatever re-runs, slices, conflicts and deletions happened."""
    u0, u1, u2 = (str(u) for u in sns.users)
    small = ("--chunk-size", "4", "-q")  # each user is done in slices (hide/restore events)
    sns.run("apply", u0, *IDENTITY, *small)
    sns.run("apply", u0, *IDENTITY, *small)  # a re-run that changes nothing
    sns.run("apply", u1, *IDENTITY, "-q")
    sns.add_item("diary", sns.users[1], sns.public)
    sns.run("apply", u1, *IDENTITY, "-q")  # extends the lock by one item
    sns.run("apply", u2, *IDENTITY, "-q")
    snaps = [s for s in sns.snapshot_rows()]
    lock_u0 = {r["subject"]: r["lock_id"] for r in sns.lock_rows()}[u0]
    of_u0 = [s for s in snaps if s["lock_id"] == lock_u0]
    sns.set_vis(of_u0[0]["kind"], _item(sns, of_u0[0]), sns.friends)  # a conflict
    sns.delete(of_u0[1]["kind"], _item(sns, of_u0[1]))  # gone
    sns.run("revert", "--user", u0, *IDENTITY, *small)
    sns.run("revert", "--user", u2, *IDENTITY, "-q")

    summary = json.loads(sns.run("audit", "report", "--summary", "--format", "json").stdout)
    figures = summary["figures"]
    locks = json.loads(sns.run("locks", "--state", "all", "--format", "json").stdout)
    reverted = json.loads(sns.run("locks", "--state", "reverted", "--format", "json").stdout)
    status = json.loads(sns.run("status", u0, u1, u2, "--format", "json").stdout)
    kinds = [k for report in status for k in report["kinds"]]
    assert figures["locks_opened"] == len(locks) == 3
    assert figures["locks_closed"] == len(reverted) == 2
    assert figures["items_hidden"] == sum(lk["items"] for lk in locks) == len(sns.snapshot_rows())
    assert figures["items_restored"] == sum(k["restored"] for k in kinds)
    assert figures["conflicts"] == sum(k["conflicts"] for k in kinds) == 1
    assert figures["gone"] == sum(k["gone"] for k in kinds) == 1
    assert figures["apply_runs"] == 5 and figures["revert_runs"] == 2
    # the states the database holds, counted independently of the tool's own listings
    states = [s["state"] for s in sns.snapshot_rows()]
    assert figures["items_restored"] == states.count("restored")
    # the html cards show the same figures; the terminal summary too
    page = sns.run("audit", "report", "--format", "html").stdout
    for key, name in (("locks-opened", "locks_opened"), ("locks-closed", "locks_closed"),
                      ("items-hidden", "items_hidden"), ("items-restored", "items_restored"),
                      ("conflicts", "conflicts"), ("gone", "gone")):
        assert card(page, key) == figures[name], key
    assert 'id="card-applies"' not in page
    text = sns.run("audit", "report", "--summary").stdout
    assert f"locks opened {figures['locks_opened']}, locks closed 2" in text


def _item(sns, snap):
    """A snapshot's item id as the content table holds it."""
    return int(snap["item_id"]) if sns.id_style == "int" else snap["item_id"]


def test_a_broken_chain_is_marked_written_and_exits_1(sns, tmp_path):
    sns.run("apply", *map(str, sns.users), *IDENTITY, "-q")
    tamper(sns, update(audit_events).where(audit_events.c.seq == 3)
           .values(reason="edited by hand"))
    path = tmp_path / "report.html"
    result = sns.run("audit", "report", "--output", str(path), expect=1)
    assert "the audit chain is BROKEN" in result.stderr and f"wrote {path}" in result.stderr
    page = path.read_text("utf-8")
    marked = re.findall(r'<tr class="broken" id="broken-event"[^>]*><td class="num">(\d+)<',
                        page)
    assert marked == ["3"] and page.count('class="broken"') == 1
    assert "Event 3 is where the chain breaks (marked below)." in page
    # empty cells read "-" as in the terminal, never NULL
    assert '<td class="null">-</td>' in page and ">NULL<" not in page
    sns.run("audit", "report", "--format", "table", expect=1)
    for name in ("report.csv", "report.json", "report.ndjson"):  # the streamed exports too
        export = tmp_path / name
        result = sns.run("audit", "report", "--output", str(export), expect=1)
        assert "the audit chain is BROKEN" in result.stderr
        assert export.exists() and "edited by hand" in export.read_text("utf-8")
    result = sns.run("audit", "report", "--format", "count", expect=1)
    assert result.stdout.strip() == str(sns.audit_count())
    verify = sns.run("audit", "verify", "--format", "json", expect=1)
    result_json = json.loads(verify.stdout)
    assert result_json["ok"] is False and result_json["broken_seq"] == 3
    assert result_json["valid"] == 2 and result_json["total"] == sns.audit_count()


def test_verify_in_json_says_what_the_text_says(sns):
    sns.run("apply", str(sns.users[0]), *IDENTITY, "-q")
    text = sns.run("audit", "verify").stdout.splitlines()
    data = json.loads(sns.run("audit", "verify", "--format", "json").stdout)
    assert data["ok"] is True and text[0] == f"{data['valid']}/{data['total']} events valid"
    assert text[1].split()[1] == data["head_hash"] and data["seals"] > 0
