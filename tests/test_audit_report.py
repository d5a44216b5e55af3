"""`audit report` and `locks`: every filter, in every format, against hand-computed expectations;
time zones; the summary; csv/json that parse back to the same rows; the self-contained html page.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import available_timezones

import pytest

from privacy_lock import report
from privacy_lock.audit import event_hash
from sns import build_sns

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The story is read in Asia/Tokyo as well as UTC; without a time zone database (no system
# tzdata and no `tzdata` package) --tz can only say so.
pytestmark = pytest.mark.skipif(not available_timezones(),
                                reason="no time zone database here (pip install tzdata)")

# The story (UTC).  Tokyo is UTC+9, so T2 is already 1 November there.
T1 = "2026-10-31T14:30:00.000000Z"  # alice applies user 0  (Tokyo: Oct 31 23:30)
T2 = "2026-10-31T15:30:00.000000Z"  # bob applies user 1    (Tokyo: Nov 1 00:30)
T3 = "2026-11-01T10:00:00.000000Z"  # alice applies user 2  (Tokyo: Nov 1 19:00)
T4 = "2026-11-02T01:00:00.000000Z"  # carol reverts user 0  (Tokyo: Nov 2 10:00)
NOW = datetime(2026, 12, 15, tzinfo=UTC)
# Events: each apply of a user heavier than the chunk (--chunk-size 10: 18 visible items) writes
# lock, hide (diary), hide (photo), apply; the revert writes restore, restore, revert.
U0_APPLY, U1_APPLY, U2_APPLY, U0_REVERT = [1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15]


class Clock:
    def __init__(self, monkeypatch):
        self.now = T1
        monkeypatch.setattr("privacy_lock.audit.utc_now", lambda: self.now)
        monkeypatch.setattr("privacy_lock.engine.utc_now", lambda: self.now)
        monkeypatch.setattr("privacy_lock.dialects.utc_now", lambda: self.now)
        monkeypatch.setattr(report, "now_utc", lambda: NOW)


@pytest.fixture
def story(db_url, tmp_path, monkeypatch):
    sns = build_sns(db_url, tmp_path)
    clock = Clock(monkeypatch)
    u0, u1, u2 = (str(u) for u in sns.users)
    for at, args in (
        (T1, ("apply", u0, "--operator", "alice", "--ticket", "T-1")),
        (T2, ("apply", u1, "--operator", "bob", "--ticket", "T-2")),
        (T3, ("apply", u2, "--operator", "alice", "--ticket", "T-3")),
        (T4, ("revert", "--user", u0, "--operator", "carol", "--ticket", "T-9")),
    ):
        clock.now = at
        sns.run(*args, "--reason", "story", "--chunk-size", "10", "-q")
    assert sns.audit_count() == 15
    return sns


def seqs(sns, fmt: str, *filters: str) -> list[int]:
    """The event seqs a report shows, read back from its output in ``fmt``."""
    out = sns.run("audit", "report", *filters, "--format", fmt).stdout
    if fmt == "json":
        return [e["seq"] for e in json.loads(out)]
    if fmt == "csv":
        return [int(r["seq"]) for r in csv.DictReader(io.StringIO(out))]
    if fmt == "html":
        table = out.split('<table id="events">', 1)[1].split("</table>", 1)[0] \
            if '<table id="events">' in out else ""
        return [int(n) for n in re.findall(r'<tr><td class="num">(\d+)</td>', table)]
    lines = out.splitlines()
    return [] if lines == ["(none)"] else [int(line.split()[0]) for line in lines[2:]]


def test_every_filter_in_every_format_matches_hand_computed_events(story):
    lock_of_u1 = locking_id(story, story.users[1])
    cases = [
        ((), U0_APPLY + U1_APPLY + U2_APPLY + U0_REVERT),
        (("--since", "2026-11-01"), U2_APPLY + U0_REVERT),
        (("--since", "2026-11-01", "--tz", "Asia/Tokyo"), U1_APPLY + U2_APPLY + U0_REVERT),
        (("--until", "2026-10-31"), U0_APPLY + U1_APPLY),
        (("--until", "2026-10-31", "--tz", "Asia/Tokyo"), U0_APPLY),
        (("--since", "2026-10-31T15:30Z", "--until", "2026-11-01T19:00+09:00"),
         U1_APPLY + U2_APPLY),  # explicit instants, both ends inclusive
        (("--since", "2026-11-01T00:30", "--tz", "Asia/Tokyo"),
         U1_APPLY + U2_APPLY + U0_REVERT),  # a time without offset is in --tz
        (("--operator", "alice"), U0_APPLY + U2_APPLY),
        (("--user", str(story.users[0])), U0_APPLY + U0_REVERT),
        (("--action", "apply", "--action", "revert"), [4, 8, 12, 15]),
        (("--ticket", "T-9"), U0_REVERT),
        (("--lock", str(lock_of_u1)), U1_APPLY),
        (("--operator", "alice", "--since", "2026-11-01", "--tz", "Asia/Tokyo"), U2_APPLY),
        (("--operator", "nobody"), []),
    ]
    for filters, expected in cases:
        for fmt in ("table", "csv", "json", "html"):
            assert seqs(story, fmt, *filters) == expected, (filters, fmt)


def locking_id(sns, user) -> int:
    return next(lk["lock_id"] for lk in sns.lock_rows() if lk["subject"] == str(user))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_times_are_shown_in_the_zone_asked_for(story):
    rows = json.loads(story.run("audit", "report", "--format", "json", "--tz",
                                "Asia/Tokyo").stdout)
    assert rows[4]["time"] == "2026-11-01T00:30:00+09:00"
    assert rows[4]["occurred_at"] == T2  # the stored UTC value is kept beside it
    rows = json.loads(story.run("audit", "report", "--format", "json").stdout)
    assert rows[4]["time"] == "2026-10-31T15:30:00Z"
    bad = story.run("audit", "report", "--tz", "Mars/Olympus", expect=2)
    assert "unknown time zone 'Mars/Olympus'" in bad.stderr and "Traceback" not in bad.output
    bad = story.run("audit", "report", "--since", "yesterday", expect=2)
    assert "--since: not a date" in bad.stderr
    bad = story.run("audit", "report", "--since", "2026-11-02", "--until", "2026-11-01",
                    expect=2)
    assert "range is empty" in bad.stderr


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_csv_and_json_parse_back_to_the_same_rows_and_rehash(story):
    filters = ("--operator", "alice", "--tz", "Asia/Tokyo")
    as_csv = list(csv.DictReader(io.StringIO(story.run(
        "audit", "report", *filters, "--format", "csv").stdout)))
    as_json = json.loads(story.run("audit", "report", *filters, "--format", "json").stdout)
    assert len(as_csv) == len(as_json) == 8
    for text_row, row in zip(as_csv, as_json, strict=True):
        assert set(text_row) == set(row) == set(report.EVENT_COLUMNS)
        for key, value in row.items():
            if key == "details":
                assert json.loads(text_row[key]) == value
            else:
                assert text_row[key] == ("" if value is None else str(value)), key
        # the export carries every hashed field exactly: an auditor can re-check each event
        stored = {**row, "subject": row["user"], "lock_id": row["lock"],
                  "details": text_row["details"]}
        assert event_hash(stored) == row["hash"]


def test_summary_counts_per_action_operator_and_day_and_locks_by_age(story):
    out = story.run("audit", "report", "--summary", "--tz", "Asia/Tokyo", "--format",
                    "json").stdout
    summary = json.loads(out)
    counts = {(c["day"], c["action"], c["operator"]): c["events"] for c in summary["counts"]}
    assert counts == {
        ("2026-10-31", "lock", "alice"): 1, ("2026-10-31", "hide", "alice"): 2,
        ("2026-10-31", "apply", "alice"): 1,
        ("2026-11-01", "lock", "bob"): 1, ("2026-11-01", "hide", "bob"): 2,
        ("2026-11-01", "apply", "bob"): 1,
        ("2026-11-01", "lock", "alice"): 1, ("2026-11-01", "hide", "alice"): 2,
        ("2026-11-01", "apply", "alice"): 1,
        ("2026-11-02", "restore", "carol"): 2, ("2026-11-02", "revert", "carol"): 1,
    }
    # active: user 1 (since T2, 44 days before NOW) and user 2 (since T3, 43 days)
    ages = {a["age"]: (a["locks"], a["oldest_days"]) for a in summary["active_locks_by_age"]}
    assert ages["30-89 days"] == (2, 44) and ages["0-6 days"] == (0, None)
    assert summary["events"] == 15
    # the same filters narrow the summary, in csv as well
    out = story.run("audit", "report", "--summary", "--operator", "bob", "--format", "csv").stdout
    assert list(csv.DictReader(io.StringIO(out))) == [
        {"day": "2026-10-31", "action": "apply", "operator": "bob", "events": "1"},
        {"day": "2026-10-31", "action": "hide", "operator": "bob", "events": "2"},
        {"day": "2026-10-31", "action": "lock", "operator": "bob", "events": "1"},
    ]
    table = story.run("audit", "report", "--summary").stdout
    assert "active locks by age" in table and "30-89 days" in table


def test_locks_listing_has_age_ticket_operator_and_the_same_filters(story):
    def listed(*args: str) -> list[dict]:
        return json.loads(story.run("locks", *args, "--format", "json").stdout)

    u0, u1, u2 = (str(u) for u in story.users)
    assert [(r["user"], r["age_days"], r["ticket"], r["operator"]) for r in listed()] == [
        (u1, 44, "T-2", "bob"), (u2, 43, "T-3", "alice")]
    assert [r["user"] for r in listed("--state", "all", "--operator", "alice")] == [u0, u2]
    assert [r["user"] for r in listed("--state", "all", "--user", u0)] == [u0]
    assert [r["reverted_by"] for r in listed("--state", "reverted")] == ["carol"]
    assert [r["user"] for r in listed("--ticket", "T-3")] == [u2]
    assert [r["user"] for r in listed("--state", "all", "--since", "2026-11-01")] == [u2]
    assert [r["user"] for r in listed("--state", "all", "--since", "2026-11-01",
                                      "--tz", "Asia/Tokyo")] == [u1, u2]
    assert listed("--tz", "Asia/Tokyo")[0]["created_at"] == "2026-11-01T00:30:00+09:00"
    out = story.run("locks", "--state", "all", "--until", "2026-10-31", "--format", "csv").stdout
    assert [r["user"] for r in csv.DictReader(io.StringIO(out))] == [u0, u1]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_html_report_is_one_self_contained_page(story, tmp_path):
    path = tmp_path / "audit.html"
    result = story.run("audit", "report", "--format", "html", "--tz", "Asia/Tokyo",
                       "--output", str(path))
    assert result.stdout == "" and f"wrote {path}" in result.stderr
    page = path.read_text(encoding="utf-8")
    # nothing to fetch: no scripts, no links, no URLs at all; a CSP forbids loading anything
    fetches = (r"https?://|\b(?:src|href|action|srcset|xlink:href)\s*=|<script|<link|<img|"
               r"<iframe|<object|<embed|@import|url\(")
    assert not re.search(fetches, page, re.I)
    assert "default-src 'none'" in page
    # summary, chart (one bar group per day in Tokyo), events, verify result with the head
    assert '<div class="cards" id="summary">' in page
    days = re.findall(r'<g class="day" data-day="([0-9-]+)">', page)
    assert days == ["2026-10-31", "2026-11-01", "2026-11-02"]
    assert re.findall(r'<rect class="bar apply"[^>]*><title>([^<]+)</title>', page) == [
        "2026-10-31: 1 apply", "2026-11-01: 2 applies", "2026-11-02: 0 applies"]
    assert re.findall(r'<rect class="bar revert"[^>]*><title>([^<]+)</title>', page) == [
        "2026-10-31: 0 reverts", "2026-11-01: 0 reverts", "2026-11-02: 1 revert"]
    head = story.run("audit", "verify").stdout.splitlines()[1].split()[1]
    assert f'<span class="hash" id="head-hash">{head}</span>' in page
    assert "15/15 events valid" in page
    assert seqs(story, "html") == list(range(1, 16))
    # values are escaped, never markup
    story.run("apply", str(story.users[1]), "--operator", "<b>eve</b>", "--ticket", "T&1",
              "--reason", "x", "-q")
    page = story.run("audit", "report", "--format", "html").stdout
    assert "&lt;b&gt;eve&lt;/b&gt;" in page and "<b>eve</b>" not in page


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_offline_check_in_docs_audit_md_rechecks_a_json_export(story, tmp_path):
    doc = (Path(__file__).resolve().parent.parent / "docs" / "AUDIT.md").read_text("utf-8")
    script = doc.split("<!-- offline-check -->", 1)[1].split("```python\n", 1)[1]
    check = tmp_path / "check_trail.py"
    check.write_text(script.split("```", 1)[0], encoding="utf-8")
    export = tmp_path / "trail.json"
    story.run("audit", "report", "--format", "json", "--output", str(export))
    done = subprocess.run([sys.executable, str(check), str(export)], capture_output=True,
                          text=True, check=False)
    head = story.run("audit", "verify").stdout.splitlines()[1].split()[1]
    assert done.returncode == 0 and done.stdout.strip() == f"15 events valid; head {head}"
    events = json.loads(export.read_text(encoding="utf-8"))
    events[6]["reason"] = "edited"
    export.write_text(json.dumps(events), encoding="utf-8")
    done = subprocess.run([sys.executable, str(check), str(export)], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 1 and "event 7: its content does not match its hash" in done.stderr


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_html_report_renders_in_headless_chromium(story, tmp_path):
    if not shutil.which(CHROMIUM):
        pytest.skip(f"headless Chromium not installed ({CHROMIUM}): the html report was not "
                    "rendered in a browser")
    path = tmp_path / "audit.html"
    story.run("audit", "report", "--format", "html", "--output", str(path))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1280,2000",
                    path.as_uri()], capture_output=True, timeout=120, check=False)
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000  # a blank page is a few kB
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", path.as_uri()], capture_output=True,
                         text=True, timeout=120, check=False).stdout
    assert '<svg id="chart"' in dom and dom.count('class="bar apply"') == 3
    assert 'id="head-hash"' in dom and 'id="events"' in dom
