"""The benchmark runs end to end at a tiny size on every dialect, and every contender leaves
exactly the floor's end state (the visibility of every row, every snapshot, every lock).

Only correctness is asserted here, never speed: docs/BENCHMARKS.md has the timed runs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.contenders import Workload
from bench.data import BENCH, SPREAD, Dataset, Sizes, build, end_state
from bench.run import OPERATIONS, run_workload

TINY = Sizes(total_rows=600, heavy_items=150, batch_users=12, items_per_user=5, chunk_size=40,
             naive_sample=10_000)


@pytest.fixture
def dataset(db_url, tmp_path) -> Dataset:
    ds = build(db_url, tmp_path, TINY)
    yield ds
    ds.engine.dispose()


@pytest.fixture
def spread(db_url, tmp_path) -> Dataset:
    """Issue #15's dataset: string owners, integer codes with NULL, spread items."""
    ds = build(db_url, tmp_path, TINY, SPREAD)
    yield ds
    ds.engine.dispose()


def _every_contender_ends_in_the_floors_state(ds: Dataset, workload: Workload) -> None:
    for operation in OPERATIONS:
        row = run_workload(ds, workload, operation, with_naive=True, log=lambda _line: None)
        assert row.differences == {"api": None, "cli": None, "naive": None}, operation
        floor, api, cli = row.results["floor"], row.results["api"], row.results["cli"]
        assert floor.items > 0
        assert api.items == cli.items == floor.items
        # the naive tool ran in full (no sample) at this size, so its count is comparable too
        assert row.results["naive"].items == floor.items and not row.results["naive"].sampled
        assert 0 < api.max_chunk_items <= TINY.chunk_size
        assert api.transactions > 1 and api.longest_txn_ms > 0
        # the chunks are counted on both sides, and the site writer wrote during the CLI run
        assert api.chunks > 0 and cli.chunks > 0
        assert cli.startup_seconds > 0
        writes = cli.site_writes
        assert writes is not None and writes.count > 0
        assert 0 < writes.p99_ms <= writes.longest_ms


@pytest.mark.parametrize("workload", ["heavy", "batch"])
def test_every_contender_ends_in_the_floors_state(dataset, workload):
    _every_contender_ends_in_the_floors_state(dataset, _workload(workload, BENCH))


@pytest.mark.parametrize("workload", ["heavy", "batch"])
def test_every_contender_ends_in_the_floors_state_on_the_spread_data(spread, workload):
    _every_contender_ends_in_the_floors_state(spread, _workload(workload, SPREAD))


def _workload(name: str, shape) -> Workload:
    return Workload.heavy(shape) if name == "heavy" else Workload.batch(TINY.batch_users, shape)


def test_the_spread_data_is_laid_out_as_the_issue_says(spread):
    """String owners; the heavy user owns every k-th row; each batch user owns exactly its
    items, spread over the table; codes 0/1/9 and NULL; the site writer's column untouched."""
    from sqlalchemy import func, select

    [table] = spread.shape.content_tables.values()
    stride = TINY.total_rows // TINY.heavy_items
    heavy, batch = Workload.heavy(SPREAD), Workload.batch(TINY.batch_users, SPREAD)
    with spread.engine.connect() as conn:
        heavy_ids = conn.execute(select(table.c.id).where(heavy.owns(table.c.owner_id))
                                 .order_by(table.c.id)).scalars().all()
        assert heavy_ids == list(range(1, stride * TINY.heavy_items + 1, stride))
        per_user = conn.execute(
            select(table.c.owner_id, func.min(table.c.id), func.max(table.c.id))
            .where(table.c.owner_id.in_(batch.subjects)).group_by(table.c.owner_id)
            .having(func.count() == TINY.items_per_user)).all()
        assert len(per_user) == TINY.batch_users
        assert max(high - low for _owner, low, high in per_user) > TINY.total_rows // 4
        codes = set(conn.execute(select(table.c.scope).distinct()).scalars())
        assert codes == {0, 1, 9, None}
        assert conn.execute(select(func.max(table.c.touched))).scalar_one() == 0
    assert all(len(subject) == 36 for subject in batch.subjects + heavy.subjects)


def test_end_state_sees_a_single_changed_row(dataset):
    """The comparison is not vacuous: one row changed by hand is a difference."""
    from sqlalchemy import update

    from bench.data import KINDS, content_tables

    before = end_state(dataset)
    spec = KINDS[0]
    table = content_tables[spec.name]
    with dataset.engine.begin() as conn:
        conn.execute(update(table).where(table.c.id == 7).values({spec.visibility: "odd"}))
    difference = end_state(dataset).difference(before)
    assert difference is not None and "diary visibility differs on 1 rows" in difference


def test_the_site_writers_column_is_not_part_of_the_end_state(spread):
    """The site writer's ``touched`` leaves the end state as it was; a NULL code made 9 is a
    difference (NULL and 9 are told apart)."""
    from sqlalchemy import update

    [table] = spread.shape.content_tables.values()
    before = end_state(spread)
    with spread.engine.begin() as conn:
        conn.execute(update(table).values(touched=table.c.touched + 1))
    assert end_state(spread).difference(before) is None
    with spread.engine.begin() as conn:
        conn.execute(update(table).where(table.c.scope.is_(None), table.c.id < 50).values(scope=9))
    difference = end_state(spread).difference(before)
    assert difference is not None and "photo visibility differs" in difference


def test_repeated_runs_each_end_in_the_floors_state_and_the_fastest_counts(dataset):
    row = run_workload(dataset, Workload.heavy(), "apply", with_naive=False,
                       log=lambda _line: None, repeat=2)
    assert row.differences == {"floor": None, "api": None, "cli": None}
    for name, measured in row.results.items():
        runs = measured.extra["runs_seconds"]
        assert len(runs) == 2, name
        assert round(measured.seconds, 3) == min(runs), name
    turns = row.turn_ratios()
    assert len(turns) == 2 and all(t > 0 for t in turns)


def test_baseline_runs_the_revisions_cli_as_before_and_reports_the_ratio(tmp_path):
    """``--baseline HEAD`` at a tiny size on SQLite: the CLI of HEAD ran as ``before``, ended in
    the floor's state, and the report gives this tree's CLI ÷ before; the export is removed
    (on the spread dataset, chosen by --datasets)."""
    root = Path(__file__).resolve().parent.parent
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True).returncode:
        pytest.skip("not a git checkout")
    report_json, report_md = tmp_path / "bench.json", tmp_path / "bench.md"
    sizes = ["--total-rows", "600", "--heavy-items", "150", "--batch-users", "12",
             "--items-per-user", "5", "--chunk-size", "40"]
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--baseline", "HEAD", *sizes, "--workloads", "heavy",
         "--datasets", "spread",
         "--no-naive", "--output-json", str(report_json), "--output-markdown", str(report_md)],
        cwd=root, capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr

    raw = json.loads(report_json.read_text())
    assert raw["baseline"]["revision"] == "HEAD" and len(raw["baseline"]["commit"]) == 40
    [database] = raw["databases"]
    assert database["dataset"] == "spread"
    assert [r["operation"] for r in database["rows"]] == list(OPERATIONS)
    for row in database["rows"]:
        assert row["differences"] == {"api": None, "cli": None, "before": None}
        results = row["results"]
        assert results["before"]["items"] == results["cli"]["items"] == results["floor"]["items"]
        assert results["floor"]["items"] > 0

    lines = report_md.read_text().splitlines()
    header = next(line for line in lines if line.startswith("| workload"))
    column = [cell.strip() for cell in header.split("|")].index("**CLI ÷ before**")
    for operation in OPERATIONS:
        row_line = next(line for line in lines if line.startswith(f"| heavy {operation} |"))
        assert re.fullmatch(r"\*\*\d+\.\d\d×\*\*", row_line.split("|")[column].strip())
        assert any(re.search(rf"heavy {operation}: CLI \d+\.\d\d× before", line)
                   for line in lines)

    exported = re.search(r"exported to (\S+)", done.stderr)
    assert exported and not Path(exported.group(1)).exists()


def test_the_find_benchmark_runs_on_every_dialect(db_url, tmp_path):
    """`python -m bench.find` at a tiny size: its set-based build and its two-fragment
    searches find the account they look for (the timed run is in docs/BENCHMARKS.md)."""
    from bench import find as find_bench
    from privacy_lock import service
    from privacy_lock.service import Target

    find_bench.build(db_url, 300)
    config = tmp_path / "bench.toml"
    config.write_text(find_bench.CONFIG.format(url=db_url), encoding="utf-8")
    target = Target.load(str(config), db_url)
    try:
        service.init(target)
        _median, rss = find_bench.time_searches(target, 300, 3)  # asserts each is found
        assert rss > 0
    finally:
        target.dispose()
