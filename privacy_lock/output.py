"""One way to write a result file: its path checked writable before the run starts, and the file
written whole (a temporary file next to it, then renamed over it), so a reader never sees half a
file and a failed write never leaves one."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from privacy_lock.errors import OutputError, UsageError
from privacy_lock.render import FILE_FORMATS, csv_raw, json_pieces, outcome_rows, render
from privacy_lock.requests import COLUMNS
from privacy_lock.vocabulary import Mode

if TYPE_CHECKING:
    from privacy_lock.engine import Outcome


def failed_path(path: Path) -> Path:
    """Where the failed requests of a run with ``--output path`` go: ``NAME.failed.csv``."""
    return path.with_name(path.stem + ".failed.csv")


def file_format(path: Path, formats: dict[str, str] = FILE_FORMATS) -> str:
    """The format a result file is written in, from its name's extension (``.csv``, ``.json``,
    ``.ndjson``, ``.tsv``); a usage error (exit 2, before anything changes) for any other
    name: ``result.txt`` used to get CSV without a word."""
    fmt = formats.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"cannot tell the format of {path.name} from its extension: name it "
                         f"{' '.join('NAME' + ext for ext in formats)}; nothing was changed")
    return fmt


def check_writable(path: Path, *, with_failed: bool = False) -> None:
    """A usage error (exit 2; raise it before anything changes) unless ``path`` can be written:
    its directory exists and takes a new file, and the path is not a directory or a read-only
    file. With ``with_failed`` the same holds for its ``NAME.failed.csv``."""
    try:  # a name the system refuses (too long) raises from is_dir()/exists() too
        for target in (path, failed_path(path)) if with_failed else (path,):
            if target.is_dir():
                raise UsageError(f"cannot write {target}: it is a directory; nothing was "
                                 "changed")
            if target.exists() and not os.access(target, os.W_OK):
                raise UsageError(f"cannot write {target}: permission denied; nothing was "
                                 "changed")
        directory = path.parent
        if not directory.is_dir():
            raise UsageError(f"cannot write {path}: directory {directory} does not exist; "
                             "nothing was changed")
        probe = _partial(path)
        try:  # the only sure test of "may create a file here" (ACLs, read-only mounts, quotas)
            probe.open("x", encoding="utf-8").close()
        except FileExistsError:
            pass  # another run of ours is writing there: the directory takes files
        else:
            probe.unlink(missing_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}; nothing was changed"
                         ) from None


def write_text(path: Path, text: str | Iterable[str]) -> None:
    """Write ``text`` (or its pieces, in order) to ``path`` whole, ending with a newline; an
    :class:`OutputError` (exit 1) when it cannot, leaving no partial file behind."""
    partial = _partial(path)
    try:
        with partial.open("w", encoding="utf-8", newline="") as fh:
            last = ""
            for piece in [text] if isinstance(text, str) else text:
                if piece:
                    fh.write(piece)
                    last = piece
            if not last.endswith("\n"):
                fh.write("\n")
        partial.replace(path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_outcomes(path: Path, outcomes: Sequence[Outcome], mode: Mode) -> Path | None:
    """Write a run's per-request results to ``path`` in the format its extension names
    (:func:`file_format`); when some failed, also write :func:`failed_path`, a request file of
    just those rows, and return it."""
    fmt = file_format(path)
    if fmt == "json":
        write_text(path, json_pieces([o.as_dict() for o in outcomes]))
    elif fmt == "ndjson":
        write_text(path, render([], fmt, payload=[o.as_dict() for o in outcomes]))
    else:
        write_text(path, render(outcome_rows(outcomes, mode), fmt))
    failed = [o for o in outcomes if o.failed]
    if not failed:
        return None
    retry_path = failed_path(path)
    # Neutralized even under --csv-raw: it is a request file, opened in a spreadsheet to see
    # what failed, and --from-file takes the leading "'" off again (requests.py), so each
    # ticket, reason and operator re-runs exactly as it was given.
    with csv_raw(False):
        text = render(_retry_rows(failed, mode), "csv", columns=_retry_columns(failed, mode))
    write_text(retry_path, text)
    return retry_path


def _retry_rows(failed: Sequence[Outcome], mode: Mode) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = [{
        "user_id": o.request.user_id or "",
        "lock_id": o.request.lock_id if o.request.lock_id is not None else "",
        "ticket": o.request.ticket, "reason": o.request.reason,
        "kinds": ";".join(o.request.kinds), "operator": o.request.operator,
    } for o in failed]
    if mode == "revert":
        # A revert row names a user or a lock, not both: keep the lock where the row had one.
        for row in rows:
            if row["lock_id"] != "":
                row["user_id"] = ""
    return rows


def _retry_columns(failed: Sequence[Outcome], mode: Mode) -> list[str]:
    """The request file's columns; a revert file keeps only the lock_id or user_id column when
    no failed row needs the other."""
    columns = [c for c in COLUMNS[mode] if c != "kinds" or mode == "apply"]
    if mode == "revert" and all(o.request.lock_id is None for o in failed):
        columns.remove("lock_id")
    elif mode == "revert" and all(not o.request.user_id for o in failed):
        columns.remove("user_id")
    return columns


def _partial(path: Path) -> Path:
    """The temporary file a write of ``path`` goes through (hidden, next to it, per process)."""
    return path.with_name(f".{path.name}.{os.getpid()}.partial")
