"""The contenders: the floor, the naive tool, and privacy-lock through its API and its CLI
(and, with ``--baseline REV``, the CLI of another revision).

Each one does the same change to the same users: ``apply`` hides every visible item of each
user and keeps its original in a snapshot row under the user's lock; ``revert`` puts every
snapshotted item back and closes the lock. Each returns a Measurement.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    cast,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session, registry

from bench.data import (
    BENCH,
    FIRST_BATCH_USER,
    HEAVY_USER,
    SUBJECT,
    Dataset,
    KindSpec,
    Shape,
)
from bench.site import SiteWriter, SiteWrites, workload_items
from bench.worker import peak_rss_mb
from privacy_lock import service
from privacy_lock.audit import utc_now
from privacy_lock.pacing import MAX_CHUNK_SIZE, Pacer
from privacy_lock.schema import locks, snapshots

REPO_ROOT = Path(__file__).resolve().parent.parent
IDENTITY = ("--operator", "bench", "--ticket", "BENCH-1", "--reason", "benchmark")


@dataclass(frozen=True)
class Workload:
    """A set of users the same change is made to: the heavy user, or the batch."""

    name: str
    subjects: tuple[str, ...]
    shape: Shape = BENCH

    @classmethod
    def heavy(cls, shape: Shape = BENCH) -> Workload:
        return cls("heavy", (shape.subject(HEAVY_USER),), shape)

    @classmethod
    def batch(cls, users: int, shape: Shape = BENCH) -> Workload:
        return cls("batch", tuple(shape.subject(FIRST_BATCH_USER + i) for i in range(users)),
                   shape)

    # The batch is a join with the batch table, not IN (SELECT ...): MariaDB runs an UPDATE's
    # IN-subquery once per row of the table (seconds); a join it plans from the small side.

    def owns(self, owner_col: Any) -> Any:
        """SQL: the owner column names one of this workload's users."""
        if self.name == "heavy":
            return owner_col == self.shape.owner_value(self.subjects[0])
        return owner_col == self.shape.batch_table.c.user_id

    def locked_by_us(self, subject_col: Any) -> Any:
        """SQL: a lock's (active) subject is one of this workload's users."""
        if self.name == "heavy":
            return subject_col == self.subjects[0]
        return subject_col == self.shape.as_subject(self.shape.batch_table.c.user_id)


@dataclass
class Measurement:
    """What one contender did and what it cost."""

    seconds: float
    items: int
    peak_rss_mb: float | None = None
    longest_txn_ms: float | None = None  # any transaction, read-only validation included
    longest_writing_txn_ms: float | None = None  # one that changed rows or held row locks
    transactions: int | None = None
    writing_transactions: int | None = None
    max_chunk_items: int | None = None
    chunks: int | None = None  # chunk transactions the run committed
    site_writes: SiteWrites | None = None  # the site writer's, during a CLI run
    # A CLI's `python -m privacy_lock --version` just before (interpreter start and imports):
    # issue #15's targets are for the whole CLI process with its start-up subtracted.
    startup_seconds: float | None = None
    sampled: bool = False  # items/seconds come from a sample; the rate is what extrapolates
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Items per second."""
        return self.items / self.seconds if self.seconds > 0 else float("inf")

    @property
    def net_rate(self) -> float | None:
        """Items per second with the start-up subtracted (a CLI run); None without one, or
        when the start-up measured took as long as the run (noise at tiny sizes)."""
        if self.startup_seconds is None or self.seconds <= self.startup_seconds:
            return None
        return self.items / (self.seconds - self.startup_seconds)


# --- the floor: one hand-written set-based transaction -----------------------------------------


def floor_apply(ds: Dataset, wl: Workload, by_lock: bool = False) -> Measurement:
    """Open the locks, snapshot every visible item and hide it: one transaction, no chunks.

    ``by_lock`` writes the snapshots in (lock, item) order, as the tool's own apply lays them
    out, for the state a revert starts from; in content order (the fastest insert, the one
    timed) a user's few snapshots lie on as many pages, and a revert of 100 users touches
    about 850 snapshot pages instead of 20. The sort would cost the timed apply up to 60%."""
    now = utc_now()
    items = 0
    with ds.engine.connect() as conn:
        started = time.perf_counter()
        with conn.begin():
            shape, users = ds.shape, ds.shape.users_table
            user = shape.as_subject(users.c.id)
            conn.execute(insert(locks).from_select(
                ["subject", "active_subject", "state", "operator", "ticket", "reason",
                 "created_at", "updated_at"],
                select(user, user, literal("active"), literal("floor"), literal("BENCH-1"),
                       literal("benchmark"), literal(now), literal(now))
                .where(wl.owns(users.c.id)),
            ))
            for spec in shape.kinds:
                table = shape.content_tables[spec.name]
                owner = table.c[spec.owner]
                conn.execute(insert(snapshots).from_select(
                    ["lock_id", "kind", "item_id", spec.original_column, "state",
                     "snapshotted_at"],
                    select(locks.c.lock_id, literal(spec.name), cast(table.c.id, SUBJECT),
                           table.c[spec.visibility], literal("locked"), literal(now))
                    .select_from(table.join(locks,
                                            locks.c.active_subject == shape.as_subject(owner)))
                    .where(wl.owns(owner), shape.visible(spec))
                    .order_by(*((locks.c.lock_id, table.c.id) if by_lock else ())),
                ))
                items += conn.execute(
                    update(table).where(wl.owns(owner), shape.visible(spec))
                    .values({spec.visibility: spec.private})
                ).rowcount
        return Measurement(time.perf_counter() - started, items, transactions=1)


def tool_apply_untimed(ds: Dataset, wl: Workload) -> None:
    """The tool's own apply of the workload, untimed: the state every revert contender starts
    from. A revert checks the seals the apply wrote in the audit trail (seal.py) and refuses a
    lock no event opened, so the floor's bare INSERT ... SELECT cannot stand in for it; the
    tool's apply lays snapshots out in (lock, item) order as the floor's by_lock did."""
    target = service.Target.load(str(ds.config_path), ds.url)
    try:
        result = service.apply(target, users=list(wl.subjects),
                               identity=service.Identity("bench", "BENCH-1", "benchmark"),
                               pacer=Pacer(ds.sizes.chunk_size or MAX_CHUNK_SIZE))
    finally:
        target.dispose()
    if result.failed:
        raise RuntimeError(f"the untimed apply failed: {result.failed[0].error}")


def floor_revert(ds: Dataset, wl: Workload) -> Measurement:
    """Put every snapshotted item back, mark the snapshots restored, close the locks: one
    transaction, no conflict check beyond "still owner-only"."""
    now = utc_now()
    items = 0
    with ds.engine.connect() as conn:
        started = time.perf_counter()
        with conn.begin():
            for spec in ds.shape.kinds:
                if ds.dialect == "mysql":
                    items += _mysql_restore(conn, wl, spec)
                    continue
                table = ds.shape.content_tables[spec.name]
                items += conn.execute(
                    update(table)
                    .values({spec.visibility: snapshots.c[spec.original_column]})
                    .where(
                        locks.c.lock_id == snapshots.c.lock_id,
                        wl.locked_by_us(locks.c.active_subject),
                        snapshots.c.kind == spec.name,
                        snapshots.c.state == "locked",
                        table.c.id == cast(snapshots.c.item_id, Integer),
                        table.c[spec.owner] == ds.shape.from_subject(locks.c.subject),
                        table.c[spec.visibility] == spec.private,
                    )
                ).rowcount
            conn.execute(
                update(snapshots)
                .where(snapshots.c.state == "locked", snapshots.c.lock_id == locks.c.lock_id,
                       wl.locked_by_us(locks.c.active_subject))
                .values(state="restored", resolved_at=now)
            )
            conn.execute(
                update(locks).where(wl.locked_by_us(locks.c.active_subject))
                .values(state="reverted", active_subject=None, reverted_at=now, updated_at=now,
                        reverted_by="floor")
            )
        return Measurement(time.perf_counter() - started, items, transactions=1)


def _mysql_restore(conn: Connection, wl: Workload, spec: KindSpec) -> int:
    """The floor's restore on MySQL/MariaDB, joined in the order that is fast.

    Left to itself the optimizer trusts a sampled estimate of two rows per owner, starts from
    the content table and scans every snapshot for each of the heavy user's items (the
    statement ran for over 15 minutes); STRAIGHT_JOIN goes locks -> snapshots -> item by key.
    """
    batch = wl.shape.batch_table.name
    as_subject = "user_id" if wl.shape.string_owners else "CAST(user_id AS CHAR)"
    owner = "l.subject" if wl.shape.string_owners else "CAST(l.subject AS SIGNED)"
    subjects = ("l.active_subject = :subject" if wl.name == "heavy" else
                f"l.active_subject IN (SELECT {as_subject} FROM {batch})")
    statement = text(
        f"UPDATE privacy_lock_locks AS l"
        f" STRAIGHT_JOIN privacy_lock_snapshots AS s ON s.lock_id = l.lock_id"
        f" STRAIGHT_JOIN {spec.table} AS t ON t.id = CAST(s.item_id AS SIGNED)"
        f" SET t.{spec.visibility} = s.{spec.original_column}"
        f" WHERE {subjects} AND s.kind = :kind AND s.state = 'locked'"
        f" AND t.{spec.owner} = {owner} AND t.{spec.visibility} = :private"
    )
    params = {"kind": spec.name, "private": spec.private, "subject": wl.subjects[0]}
    return conn.execute(statement, params).rowcount


# --- the naive tool: a per-row ORM loop --------------------------------------------------------


def _naive_mappings(shape: Shape) -> dict[str, type]:
    """ORM classes for the content tables and the tool's tables, in a registry of their own."""
    mapper_registry = registry()
    classes: dict[str, type] = {}
    for spec in shape.kinds:
        cls = type(f"Naive{spec.name.title()}", (), {})
        mapper_registry.map_imperatively(cls, shape.content_tables[spec.name])
        classes[spec.name] = cls
    lock_cls = type("NaiveLock", (), {})
    snap_cls = type("NaiveSnapshot", (), {})
    mapper_registry.map_imperatively(lock_cls, locks)
    mapper_registry.map_imperatively(snap_cls, snapshots)
    classes["lock"], classes["snapshot"] = lock_cls, snap_cls
    return classes


def naive_apply(ds: Dataset, wl: Workload, sample: int | None) -> Measurement:
    """What a hurried script does: load the user's items, then for each one save a snapshot
    object and change it, committing every 100 rows (each commit expires the loaded objects,
    so every next item is fetched again, one SELECT per row).

    With ``sample``, stops after about that many items (whole users in the batch) and the
    measured rate is what the report extrapolates.
    """
    classes = _naive_mappings(ds.shape)
    subjects, per_user_limit = _naive_scope(ds, wl, sample)
    items = 0
    started = time.perf_counter()
    with Session(ds.engine) as session:
        for subject in subjects:
            now = utc_now()
            lock = classes["lock"](subject=subject, active_subject=subject, state="active",
                                   operator="naive", ticket="BENCH-1", reason="benchmark",
                                   created_at=now, updated_at=now)
            session.add(lock)
            session.commit()
            for spec in ds.shape.kinds:
                cls = classes[spec.name]
                query = select(cls).where(
                    getattr(cls, spec.owner) == ds.shape.owner_value(subject))
                query = query.order_by(cls.id).limit(per_user_limit)
                for item in session.scalars(query).all():
                    value = getattr(item, spec.visibility)
                    if value == spec.private:
                        continue
                    session.add(classes["snapshot"](**{
                        "lock_id": lock.lock_id, "kind": spec.name, "item_id": str(item.id),
                        spec.original_column: value, "state": "locked",
                        "snapshotted_at": utc_now(),
                    }))
                    setattr(item, spec.visibility, spec.private)
                    items += 1
                    if items % 100 == 0:
                        session.commit()
            session.commit()
    return Measurement(time.perf_counter() - started, items, sampled=sample is not None)


def naive_revert(ds: Dataset, wl: Workload, sample: int | None) -> Measurement:
    """The hurried script's revert: for each snapshot object, load the item, put it back if it
    is still owner-only, mark the snapshot, commit every 100 rows."""
    classes = _naive_mappings(ds.shape)
    subjects, per_user_limit = _naive_scope(ds, wl, sample)
    specs = {spec.name: spec for spec in ds.shape.kinds}
    items = done = 0
    started = time.perf_counter()
    with Session(ds.engine) as session:
        for subject in subjects:
            lock_cls, snap_cls = classes["lock"], classes["snapshot"]
            lock = session.scalars(
                select(lock_cls).where(lock_cls.active_subject == subject)).one()
            query = (select(snap_cls)
                     .where(snap_cls.lock_id == lock.lock_id, snap_cls.state == "locked")
                     .order_by(snap_cls.snapshot_id).limit(per_user_limit * len(specs)))
            for snap in session.scalars(query).all():
                spec = specs[snap.kind]
                item = session.get(classes[spec.name], int(snap.item_id))
                if item is None or getattr(item, spec.owner) != ds.shape.owner_value(subject):
                    snap.state = "gone"
                elif getattr(item, spec.visibility) == spec.private:
                    setattr(item, spec.visibility, getattr(snap, spec.original_column))
                    snap.state = "restored"
                    items += 1
                else:
                    snap.state = "conflict"
                snap.resolved_at = utc_now()
                done += 1
                if done % 100 == 0:
                    session.commit()
            if sample is None:
                now = utc_now()
                lock.state, lock.active_subject = "reverted", None
                lock.reverted_at, lock.updated_at, lock.reverted_by = now, now, "naive"
            session.commit()
    return Measurement(time.perf_counter() - started, items, sampled=sample is not None)


def _naive_scope(ds: Dataset, wl: Workload, sample: int | None) -> tuple[tuple[str, ...], int]:
    """Which users the naive tool works on, and at most how many items of each kind per user."""
    if sample is None:
        return wl.subjects, ds.sizes.total_rows
    if wl.name == "heavy":
        return wl.subjects, max(1, sample // len(ds.shape.kinds))
    users = max(1, sample // ds.sizes.items_per_user)
    return wl.subjects[:users], ds.sizes.total_rows


# --- privacy-lock itself -----------------------------------------------------------------------


def _run_child(
    args: list[str], workdir: Path, label: str, package_root: Path = REPO_ROOT
) -> tuple[float, float | None, str]:
    """Run a child process; return (wall seconds, its peak RSS in MB, its stdout).

    ``package_root`` goes first on the child's PYTHONPATH: the directory whose ``privacy_lock``
    it imports (this working tree, or a revision exported by ``exported_revision``).

    The peak is the child's VmHWM, sampled from /proc while it runs (it only grows, so the
    last sample is the peak up to a few milliseconds before exit). Not getrusage: a child's
    ru_maxrss starts from its parent's RSS at fork on Linux, which is this benchmark's own.
    """
    out_path, err_path = workdir / f"{label}.out", workdir / f"{label}.err"
    env = _child_env(package_root)
    peak: list[float] = []
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        child = subprocess.Popen(args, stdout=out, stderr=err, cwd=workdir, env=env)

        def sample() -> None:
            while child.returncode is None:
                value = peak_rss_mb(child.pid)
                if value is not None:
                    peak.append(value)
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        child.wait()
        seconds = time.perf_counter() - started
        sampler.join()
    if child.returncode != 0:
        detail = err_path.read_text(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"{label} exited with {child.returncode}: " + " | ".join(detail))
    return seconds, max(peak, default=None), out_path.read_text()


def _child_env(package_root: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(package_root), os.environ.get("PYTHONPATH", "")) if p)}


def tool_api(ds: Dataset, wl: Workload, operation: str) -> Measurement:
    """The tool through its Python API, in a child process of its own (bench.worker), so that
    its peak RSS is the tool's alone; its transactions are timed by engine events there."""
    spec = {"url": ds.url, "config": str(ds.config_path), "operation": operation,
            "subjects": list(wl.subjects), "chunk_size": ds.sizes.chunk_size}
    spec_path = ds.workdir / "worker.json"
    spec_path.write_text(json.dumps(spec))
    _seconds, sampled_rss, out = _run_child(
        [sys.executable, "-m", "bench.worker", str(spec_path)], ds.workdir, f"api-{operation}"
    )
    report = json.loads(out)
    return Measurement(
        report["seconds"], report["items"], report["peak_rss_mb"] or sampled_rss,
        report["longest_txn_ms"], report["longest_writing_txn_ms"], report["transactions"],
        report["writing_transactions"], report["max_chunk_items"], report["chunks"],
        extra={"validate_seconds": report["validate_seconds"],
               "longest_txn_commit_ms": report["longest_txn_commit_ms"],
               "longest_writing_txn_commit_ms": report["longest_writing_txn_commit_ms"]},
    )


def tool_cli(
    ds: Dataset, wl: Workload, operation: str, package_root: Path = REPO_ROOT,
    label: str = "cli",
) -> Measurement:
    """The whole CLI process, ``python -m privacy_lock apply|revert ...``, timed from outside,
    while a site writer (``bench.site``) keeps editing the workload's items.

    The heavy user is named on the command line; the batch comes as a request file (CSV).
    Chunking is the CLI's default, as a user runs it: sized by time (``--chunk-time``, 0.1 s
    unless PRIVACY_LOCK_CHUNK_TIME says otherwise), with ``--chunk-size`` as the bound (the
    CLI's own default unless the bench was given one).
    ``package_root`` is where the child imports ``privacy_lock`` from (see ``_run_child``).
    """
    if wl.name == "heavy":
        targets = list(wl.subjects) if operation == "apply" else ["--user", *wl.subjects]
    else:
        request_file = ds.workdir / f"batch-{operation}.csv"
        request_file.write_text("user_id,ticket,reason\n" + "".join(
            f"{subject},BENCH-1,benchmark\n" for subject in wl.subjects), encoding="utf-8")
        targets = ["--from-file", str(request_file)]
    args = [sys.executable, "-m", "privacy_lock", "--config", str(ds.config_path),
            "--database-url", ds.url, operation, *targets, *IDENTITY,
            *(("--chunk-size", str(ds.sizes.chunk_size)) if ds.sizes.chunk_size else ()),
            "--quiet", "--format", "json"]
    startup, _rss, _out = _run_child([sys.executable, "-m", "privacy_lock", "--version"],
                                     ds.workdir, f"{label}-startup", package_root)
    writer = SiteWriter(ds.url, ds.shape, workload_items(ds.engine, ds.shape, wl.owns))
    with writer:
        seconds, rss, out = _run_child(args, ds.workdir, f"{label}-{operation}", package_root)
    counted = "changed" if operation == "apply" else "restored"
    items = sum(kind[counted] for user in json.loads(out) for kind in user["kinds"].values())
    # The summary line on stderr ("done: ..., 14 chunks, 0 retries in 3.2 s").
    summary = (ds.workdir / f"{label}-{operation}.err").read_text(errors="replace")
    chunks = re.findall(r"([\d,]+) chunks?\b", summary)
    return Measurement(seconds, items, rss,
                       chunks=int(chunks[-1].replace(",", "")) if chunks else None,
                       site_writes=writer.result, startup_seconds=startup)


CONTENDERS: dict[str, Callable[..., Measurement]] = {
    "floor": lambda ds, wl, op: (floor_apply if op == "apply" else floor_revert)(ds, wl),
    "api": tool_api,
    "cli": tool_cli,
}


def contenders_for(baseline: Path | None) -> dict[str, Callable[..., Measurement]]:
    """The timed contenders, in the order of a turn; with a ``baseline`` tree (from
    ``exported_revision``) also ``before``, the CLI of that revision, which is compared with
    this tree's ``cli`` — so ``cli`` is always there when ``before`` is."""
    contenders = dict(CONTENDERS)
    if baseline is not None:
        contenders["cli"] = tool_cli
        contenders["before"] = functools.partial(tool_cli, package_root=baseline,
                                                 label="before")
    return contenders


@dataclass(frozen=True)
class Baseline:
    """A revision's ``privacy_lock`` package, exported for the ``before`` contender."""

    revision: str  # as given, e.g. origin/main
    commit: str  # the full hash it named
    root: Path  # the directory holding its privacy_lock/


@contextmanager
def exported_revision(revision: str) -> Iterator[Baseline]:
    """Export ``revision``'s ``privacy_lock`` package into a temporary directory, for as long as
    the context lasts.

    Its modules, and this tree's, are compiled to bytecode here, so that neither CLI's first
    run pays for writing it. Raises ValueError when the revision is unknown, has no package,
    or a child would not import it from there.
    """
    git = functools.partial(subprocess.run, cwd=REPO_ROOT, capture_output=True)
    found = git(["git", "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"], text=True)
    if found.returncode != 0:
        raise ValueError(f"--baseline {revision}: not a revision of {REPO_ROOT}")
    commit = found.stdout.strip()
    archive = git(["git", "archive", "--format=tar", commit, "privacy_lock"])
    if archive.returncode != 0:
        raise ValueError(f"--baseline {revision}: git archive failed: "
                         f"{archive.stderr.decode(errors='replace').strip()}")
    root = Path(tempfile.mkdtemp(prefix="pl_bench_baseline_"))
    try:
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(root, filter="data")
        for package in (root / "privacy_lock", REPO_ROOT / "privacy_lock"):
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)],
                           stdout=subprocess.DEVNULL)  # one that fails, fails in the CLI
        # The venv has this tree installed (editable); make sure PYTHONPATH wins over it.
        probe = subprocess.run(
            [sys.executable, "-c", "import privacy_lock; print(privacy_lock.__file__)"],
            cwd=root.parent, env=_child_env(root), capture_output=True, text=True,
        )
        imported = probe.stdout.strip()
        if not imported or Path(imported).resolve().parent != (root / "privacy_lock").resolve():
            problem = probe.stderr.strip().splitlines()[-1:] or [f"it came from {imported}"]
            raise ValueError(f"--baseline {revision}: a child did not import privacy_lock "
                             f"from the export in {root}: {problem[0]}")
        yield Baseline(revision, commit, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def naive(ds: Dataset, wl: Workload, operation: str, sample: int | None) -> Measurement:
    """The naive tool for ``operation``."""
    return (naive_apply if operation == "apply" else naive_revert)(ds, wl, sample)
