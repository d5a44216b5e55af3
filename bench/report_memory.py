"""Peak memory and size of `audit report` on a long trail (issue 16, docs/BENCHMARKS.md).

    python -m bench.report_memory --events 200000 [--dir /tmp/report-bench] [--old-src DIR]

Builds a SQLite trail of N valid, hash-chained events (``viewed`` events, appended through
the tool's own ``append_events`` in batches, so ``audit verify`` holds), then runs each
report format in a fresh process and prints its peak RSS (the child's ``ru_maxrss``), wall
time and output size as a Markdown table. ``--old-src`` runs the same commands with another
checkout's ``privacy_lock`` package first on ``sys.path`` (e.g. ``git archive`` of the
release before), for a before/after table. No number here is asserted by a test.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from privacy_lock.audit import Actor, EventSpec, append_events
from privacy_lock.schema import create_tool_tables

CASES = [
    ("csv export", ["--format", "csv", "--output", "{dir}/trail.csv"]),
    ("json export", ["--format", "json", "--output", "{dir}/trail.json"]),
    ("ndjson export", ["--format", "ndjson", "--output", "{dir}/trail.ndjson"]),
    ("html (first 1,000 events)", ["--format", "html", "--output", "{dir}/report.html"]),
    ("--summary --format html", ["--summary", "--format", "html", "--output",
                                 "{dir}/summary.html"]),
    ("table (first 50 events)", ["--format", "table"]),
]
# What the release before streamed exports understood (no ndjson, html of every event).
OLD_CASES = {"csv export", "json export", "html (first 1,000 events)",
             "--summary --format html"}

# Runs the CLI inside the measured process and reports that process's own peak RSS (a
# wrapper's RUSAGE_CHILDREN came back as ~64 MB for every run, a 449 MB one included).
MEASURE = """
import resource, runpy, sys, time
sys.argv = ["privacy-lock", *sys.argv[1:]]
started, code = time.monotonic(), 0
try:
    runpy.run_module("privacy_lock", run_name="__main__")
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else 1
took = time.monotonic() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(code, peak, round(took, 2), file=sys.stderr)
"""


def build_trail(path: Path, events: int, batch: int = 5000) -> str:
    """A SQLite database with the tool's tables and ``events`` chained events."""
    url = f"sqlite:///{path}"
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        create_tool_tables(conn)
    actor = Actor("bench", "T-1", "a long trail", "bench", "localhost")
    with engine.connect() as conn:
        for start in range(0, events, batch):
            with conn.begin():
                append_events(conn, [
                    EventSpec("viewed", actor, str(1000 + n % 5000), None, {"command": "status"})
                    for n in range(start, min(start + batch, events))])
    engine.dispose()
    return url


def measure(url: str, args: list[str], old_src: Path | None) -> tuple[int, int, float]:
    """(exit code, peak RSS in KiB, seconds) of one `audit report` in a fresh process."""
    env = dict(os.environ)
    if old_src is not None:
        env["PYTHONPATH"] = str(old_src)
    command = [sys.executable, "-c", MEASURE, "--database-url", url, "audit", "report", *args]
    # Run outside any checkout: `python -c` puts the working directory first on sys.path,
    # ahead of PYTHONPATH, and a checkout's privacy_lock would shadow --old-src.
    out = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env=env, check=True, cwd=Path(url.removeprefix("sqlite:///")).parent)
    code, peak, took = out.stderr.splitlines()[-1].split()
    return int(code), int(peak), float(took)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/privacy-lock-report-bench"))
    parser.add_argument("--old-src", type=Path,
                        help="a directory holding another version's privacy_lock package")
    options = parser.parse_args()
    options.dir.mkdir(parents=True, exist_ok=True)
    db = options.dir / f"trail-{options.events}.db"
    started = time.monotonic()
    if db.exists():  # built by an earlier run (the trail is the same every time)
        url = f"sqlite:///{db}"
    else:
        url = build_trail(db, options.events)
    print(f"trail: {options.events:,} events in {db} ({db.stat().st_size / 1e6:.0f} MB, "
          f"ready in {time.monotonic() - started:.0f} s)\n")
    print("| report | version | exit | peak RSS | time | output |")
    print("|---|---|---|---|---|---|")
    versions = [("this", None)] + ([("before", options.old_src)] if options.old_src else [])
    for name, args in CASES:
        for version, src in versions:
            if src is not None and name not in OLD_CASES:
                continue
            argv = [a.format(dir=options.dir) for a in args]
            out_path = Path(argv[-1]) if "--output" in argv else None
            if out_path is not None:
                out_path.unlink(missing_ok=True)
            code, peak, took = measure(url, argv, src)
            size = (f"{out_path.stat().st_size / 1e6:.1f} MB"
                    if out_path is not None and out_path.exists() else "(stdout)")
            print(f"| {name} | {version} | {code} | {peak / 1024:.0f} MB | {took:.1f} s "
                  f"| {size} |")


if __name__ == "__main__":
    main()
