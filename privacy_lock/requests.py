"""Batch request files: parse and validate every row before anything changes.

A request file is CSV with a header, or JSON (a list of objects with the same keys). The whole
file is read and checked first; every problem is collected with its line number, and if there is
any, ``RequestFileError`` carries all of them so that nothing is changed and nothing is audited.

CSV is streamed: raw byte lines are decoded one at a time, so a bad byte is reported with its
exact offset, and only the parsed ``Request`` list is kept in memory. Line numbers are physical
lines of the file (a quoted field may span several), the ones an editor shows.
"""

from __future__ import annotations

import csv
import difflib
import json
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from privacy_lock.errors import UsageError
from privacy_lock.ids import parse_id, parse_id_ranges
from privacy_lock.render import csv_text_read
from privacy_lock.stored_text import TextLimit, stored_limits, text_problem
from privacy_lock.vocabulary import Mode

COLUMNS: dict[str, tuple[str, ...]] = {
    "apply": ("user_id", "ticket", "reason", "kinds", "operator"),
    # kinds: so that the file apply took reverts as it is; revert restores every kind of a
    # lock, so its values are not used (load_requests says so).
    "revert": ("user_id", "lock_id", "ticket", "reason", "operator", "kinds"),
}
MAX_LISTED_PROBLEMS = 50
EXISTENCE_BATCH = 1000  # ids per existence query when validating a file
UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
SAVE_AS_UTF8 = "save the file as UTF-8 (in Excel: 'CSV UTF-8')"
# The encodings a request file may be read in: UTF-8 (with or without a BOM), and the Japanese
# Excel's "CSV" (Windows code page 932, which it calls Shift_JIS and which holds characters
# strict Shift_JIS lacks, such as ① and ～). Both keep b'\n' a line end of its own, so the file
# is still decoded line by line with exact offsets. Not UTF-16: Excel's "Unicode text" is
# refused with a hint.
ENCODINGS = {"utf-8": "utf-8", "utf8": "utf-8", "utf-8-sig": "utf-8", "cp932": "cp932",
             "ms932": "cp932", "windows-31j": "cp932", "shift-jis": "cp932", "sjis": "cp932"}
ENCODING_NAMES = {"utf-8": "UTF-8", "cp932": "CP932 (Shift_JIS)"}
# What Python's cp932 decodes bytes that hold no character to (0x80 -> U+0080; 0xA0, 0xFD-0xFF
# and the user-defined area -> private use): taken as "not CP932", else any file would be.
_NOT_CP932_TEXT = re.compile("[\u0080\ue000-\uf8ff]")
DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";"}
_JSON_SPACE = re.compile(r"[ \t\n\r]*")


@dataclass(frozen=True)
class Request:
    """One validated row of a request file."""

    line: int  # physical 1-based line where the row (CSV) or object (JSON) starts
    user_id: str | None  # as written (a string id keeps its spaces); the caller normalizes it
    lock_id: int | None  # revert only, instead of user_id
    ticket: str
    reason: str
    operator: str
    kinds: tuple[str, ...]  # empty = every configured kind
    identity_check: int | None = None  # the identity-verdict event cited (--identity-check)


class RequestFileError(UsageError):
    """Every problem found in a request file; nothing was changed."""

    def __init__(self, path: Path | str, problems: list[tuple[int, str]]) -> None:
        self.path = str(path)
        self.problems = sorted(problems, key=lambda p: p[0])  # stable: same line keeps order
        super().__init__(self.render())

    def render(self, limit: int = MAX_LISTED_PROBLEMS) -> str:
        """'<file>: N problems, nothing was changed:' then one '  line L: ...' per problem."""
        count = len(self.problems)
        lines = [f"{self.path}: {count:,} problem{'s' if count != 1 else ''}, nothing was "
                 "changed:"]
        lines += [f"  line {line}: {text}" for line, text in self.problems[:limit]]
        if count > limit:
            lines.append(f"  ... and {count - limit:,} more")
        return "\n".join(lines)


class _Stop(Exception):
    """The rest of the file cannot be read (bad encoding, JSON syntax); carries the problem."""

    def __init__(self, line: int, text: str, where: str = "") -> None:
        super().__init__(text)
        self.line = line
        self.text = text
        self.where = where  # "byte 0x.. at byte offset N, line L" for a decoding error


def load_requests(
    path: Path,
    mode: Mode,
    *,
    default_ticket: str | None,
    default_reason: str | None,
    default_operator: str | None,
    known_kinds: Collection[str],
    normalize_user: Callable[[str], str],
    unknown_users: Callable[[list[str]], Collection[str]],
    missing_locks: Callable[[list[int]], Collection[int]] | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
    note: Callable[[str], None] | None = None,
    limits: Mapping[str, tuple[TextLimit, ...]] | None = None,
    spaces_hint: Callable[[list[str]], Mapping[str, str]] | None = None,
) -> list[Request]:
    """Read and validate a whole request file; raise RequestFileError listing every problem.

    ``normalize_user`` raises UsageError for a malformed id. ``unknown_users`` gets the
    normalized ids (a thousand at a time, so that a 10,000-row file costs ten queries, not
    10,000) and returns those known not to exist (``spaces_hint`` gets those and may add a hint
    to each: the id exists without its spaces); ``missing_locks`` likewise for lock ids.
    Duplicates are checked on normalized ids. Row values win over the defaults. Ticket,
    reason and operator are checked by :func:`privacy_lock.stored_text.text_problem` against
    ``limits`` (the target database's, :func:`~privacy_lock.stored_text.stored_limits`).

    A CSV file is read in ``encoding`` (:data:`ENCODINGS`); without one, as UTF-8 when it is
    valid UTF-8 (with or without a BOM), else as CP932 when it is valid CP932, else refused
    with both offsets. Its columns are split on ``delimiter`` (``tab`` for a tab; by default a
    tab for a .tsv file, else a comma). ``note`` hears which encoding and delimiter were used.
    """
    if mode not in COLUMNS:
        raise ValueError(f"mode must be 'apply' or 'revert', not {mode!r}")
    codec = _codec(encoding)
    split = _delimiter(path, delimiter)
    checker = _Checker(
        mode, default_ticket, default_reason, default_operator, known_kinds,
        normalize_user, unknown_users, missing_locks,
        stored_limits() if limits is None else limits,
    )
    checker.delimiter = split
    try:
        with open(path, "rb") as fh:
            head = fh.read(65536)
            fh.seek(0)
            if not head.strip() or head.strip() == UTF8_BOM:
                checker.problem(1, "the file is empty")
            elif head.startswith(UTF16_BOMS):
                checker.problem(1, f"the file is UTF-16, not UTF-8: {SAVE_AS_UTF8}")
            elif _is_json(path, head):
                if codec not in (None, "utf-8"):
                    raise UsageError(f"{path}: a JSON request file is UTF-8 (RFC 8259); "
                                     f"--encoding {encoding} is for CSV and TSV files")
                _read_json(fh, checker)
            else:
                if codec == "cp932" and head.startswith(UTF8_BOM):
                    raise UsageError(f"{path}: the file starts with a UTF-8 BOM, so it is "
                                     f"UTF-8, not {encoding}: drop --encoding")
                used = codec or _detect_encoding(path, fh)
                if note is not None:
                    how = "given" if codec else "detected"
                    shown = "tab" if split == "\t" else repr(split)
                    note(f"{path}: read as {ENCODING_NAMES[used]} ({how}), columns split on "
                         f"{shown}")
                _read_csv(fh, checker, used, split)
    except _Stop as stop:
        checker.problem(stop.line, stop.text)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the request file: {exc.strerror or exc}") from None
    checker.check_existence(spaces_hint)
    if checker.problems:
        raise RequestFileError(path, checker.problems)
    if checker.ignored_kinds and note is not None:
        note(f"{path}: the kinds column is not used by revert ({checker.ignored_kinds:,} "
             "row(s) name kinds): a revert restores every kind its lock hid")
    return checker.requests


def _codec(encoding: str | None) -> str | None:
    """The codec for ``--encoding`` (None: detect); a usage error for any other name."""
    if encoding is None:
        return None
    codec = ENCODINGS.get(encoding.strip().lower().replace("_", "-"))
    if codec is None:
        raise UsageError(f"--encoding {encoding!r} is not supported: use utf-8 or cp932 "
                         "(shift_jis); for anything else, save the file as UTF-8")
    return codec


def _delimiter(path: Path, delimiter: str | None) -> str:
    """The column separator: ``delimiter`` (one character, or ``tab``), else a tab for a .tsv
    file and a comma for anything else."""
    if delimiter is None:
        return "\t" if Path(path).suffix.lower() == ".tsv" else ","
    value = DELIMITER_NAMES.get(delimiter.lower(), delimiter)
    if len(value) != 1 or value in ('"', "\r", "\n") or value.isalnum():
        raise UsageError(f"--delimiter {delimiter!r}: give one character such as ';' or '|', "
                         "or 'tab' (not a letter, digit, quote or line break)")
    return value


def _detect_encoding(path: Path, fh: IO[bytes]) -> str:
    """UTF-8 when every line decodes as UTF-8 (UTF-8 wins over CP932, which would read most
    UTF-8 Japanese as other characters), else CP932 when every line decodes as it; else a
    problem at the first byte that is not UTF-8, naming where CP932 failed too. The file is
    rewound."""
    failures: list[_Stop] = []
    fh.seek(0)
    bom = fh.read(len(UTF8_BOM)) == UTF8_BOM  # a BOM says UTF-8: not a guess to second
    for codec in ("utf-8",) if bom else ("utf-8", "cp932"):
        fh.seek(0)
        try:
            for _line in _decoded_lines(fh, codec):
                pass
        except _Stop as stop:
            failures.append(stop)
            continue
        finally:
            fh.seek(0)
        return codec
    if bom:
        raise failures[0]
    utf8, cp932 = failures
    raise _Stop(utf8.line, f"not UTF-8 ({utf8.where}) nor CP932 (Shift_JIS) ({cp932.where}"
                           + (f", line {cp932.line}" if cp932.line != utf8.line else "")
                           + f"); {SAVE_AS_UTF8}, or give --encoding; the rest of the file "
                           "was not read")


def _report_missing(
    checks: list[tuple[Any, Callable[[str], None]]],
    missing_of: Callable[[list[Any]], Collection[Any]],
    text: str,
    hints_of: Callable[[list[Any]], Mapping[Any, str]] | None = None,
) -> None:
    """Ask ``missing_of`` about the checked ids, EXISTENCE_BATCH at a time, and report each
    missing one with ``text`` formatted with it (and its hint from ``hints_of``, if any)."""
    for start in range(0, len(checks), EXISTENCE_BATCH):
        part = checks[start:start + EXISTENCE_BATCH]
        missing = set(missing_of([key for key, _report in part]))
        hints = hints_of([key for key, _report in part if key in missing]) \
            if hints_of and missing else {}
        for key, report in part:
            if key in missing:
                report(text.format(key) + hints.get(key, ""))


def _is_json(path: Path, head: bytes) -> bool:
    """By extension, else by the first character: '[' or '{' is JSON, anything else CSV."""
    suffix = Path(path).suffix.lower()
    if suffix in (".csv", ".tsv", ".json"):
        return suffix == ".json"
    return head.removeprefix(UTF8_BOM).lstrip()[:1] in (b"[", b"{")


# --- CSV -----------------------------------------------------------------------------------------


def _decoded_lines(fh: IO[bytes], codec: str = "utf-8") -> Iterator[str]:
    """The file's lines as text in ``codec`` (utf-8 or cp932); a byte that does not decode
    stops with its line and offset.

    Splitting bytes on b'\\n' is safe: no UTF-8 multi-byte sequence contains that byte, and
    in CP932 a second byte is never below 0x40.
    """
    offset = 0
    for number, raw in enumerate(fh, start=1):
        body = raw[len(UTF8_BOM):] if number == 1 and raw.startswith(UTF8_BOM) \
            and codec == "utf-8" else raw
        try:
            text = body.decode(codec)
            if codec == "cp932" and (odd := _NOT_CP932_TEXT.search(text)):
                start = len(text[:odd.start()].encode(codec))
                raise UnicodeDecodeError(codec, body, start, start + 1, "no character")
            yield text
        except UnicodeDecodeError as exc:
            at = offset + (len(raw) - len(body)) + exc.start
            bad = body[exc.start:exc.start + 1].hex()
            where = f"byte 0x{bad} at byte offset {at}"
            hint = SAVE_AS_UTF8 if codec == "utf-8" else "is it another encoding?"
            raise _Stop(number, f"not {ENCODING_NAMES[codec]} (byte 0x{bad} at byte offset "
                                f"{at}); {hint}; the rest of the file was not read",
                        where) from None
        offset += len(raw)


def _read_csv(fh: IO[bytes], checker: _Checker, codec: str = "utf-8",
              delimiter: str = ",") -> None:
    # strict: an unterminated quote is an error at its row instead of silently swallowing
    # every following row into one field.
    reader = csv.reader(_decoded_lines(fh, codec), strict=True, delimiter=delimiter)
    header: list[str] | None = None
    header_line = 1
    rows = 0
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            rows += 1
            text = str(exc)
            if "unexpected end of data" in text:
                text = "a quoted field that starts here is never closed (a stray '\"'?)"
            checker.problem(start, f"CSV syntax: {text}")
            continue
        if not any(f.strip() for f in fields):
            continue  # blank lines (and Excel's all-empty rows) are not requests
        if header is None:
            header, header_line = fields, start
            checker.csv_header(start, fields)
            continue
        rows += 1
        if len(fields) != len(header):
            hint = " (a comma in an unquoted value? put the value in double quotes)" \
                if len(fields) > len(header) else ""
            checker.problem(
                start, f"{len(fields)} fields, the header has {len(header)}{hint}"
            )
            continue
        # csv_text_read: a field the tool wrote neutralized ("'=...") reads as it was given.
        checker.record(start, "", dict(zip(checker.names, map(csv_text_read, fields),
                                           strict=True)))
    if header is None:
        checker.problem(1, "the file is empty")
    elif not rows:
        checker.problem(header_line, "no requests: the file has a header but no rows")


# --- JSON ----------------------------------------------------------------------------------------


def _read_json(fh: IO[bytes], checker: _Checker) -> None:
    """A JSON list of objects, walked element by element to know each object's line."""
    data = fh.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start:exc.start + 1].hex()
        raise _Stop(line, f"not UTF-8 (byte 0x{bad} at byte offset {exc.start}); "
                          f"{SAVE_AS_UTF8}") from None
    del data  # keep one copy of a large file in memory, not two
    decoder = json.JSONDecoder(object_pairs_hook=_Object.of)
    lines = _LineCounter(text)

    def skip(i: int) -> int:
        space = _JSON_SPACE.match(text, i)
        assert space is not None  # '*' matches the empty string: there is always a match
        return space.end()

    i = skip(0)
    if i >= len(text):
        raise _Stop(1, "the file is empty")
    if text[i] != "[":
        what = "an object" if text[i] == "{" else "not a list"
        raise _Stop(lines.at(i), f"JSON must be a list of objects [{{...}}, ...], this is {what}")
    i = skip(i + 1)
    index = 0
    while i < len(text) and text[i] != "]":
        try:
            value, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            raise _Stop(exc.lineno, f"JSON syntax: {exc.msg} (column {exc.colno})") from None
        except ValueError:  # Python reads no integer of more than 4,300 digits
            raise _Stop(lines.at(i), f"object {index + 1}: a number of more than 4300 digits; "
                                     "no id or value is that long") from None
        except RecursionError:  # the json module reads nested lists and objects recursively
            raise _Stop(lines.at(i), f"object {index + 1}: lists or objects nested too deeply; "
                                     "no value of a request is nested") from None
        index += 1
        line = lines.at(i)
        if isinstance(value, dict):
            checker.json_record(line, index, value)
        else:
            checker.problem(line, f"object {index}: is {_json_type(value)}, not an object {{...}}")
        i = skip(end)
        if i >= len(text):
            break
        if text[i] == ",":
            i = skip(i + 1)
            if i < len(text) and text[i] == "]":
                raise _Stop(lines.at(i), "JSON syntax: a ',' before the closing ']'")
        elif text[i] != "]":
            raise _Stop(lines.at(i), "JSON syntax: expected ',' or ']' after an object")
    if i >= len(text):
        raise _Stop(lines.at(i), "JSON syntax: the list is never closed with ']'")
    if skip(i + 1) != len(text):
        raise _Stop(lines.at(skip(i + 1)), "JSON syntax: extra data after the list")
    if not index:
        checker.problem(lines.at(i), "no requests: the list is empty")
    checker.json_unknown_keys()


class _Object(dict[str, Any]):
    """A JSON object, with the keys written in it more than once: the json module keeps the
    last value of a repeated key without a word, so a hand-edited {"user_id": 42, ...,
    "user_id": 43} would silently mean 43."""

    repeated: tuple[str, ...] = ()

    @classmethod
    def of(cls, pairs: list[tuple[str, Any]]) -> _Object:
        obj = cls(pairs)
        if len(obj) != len(pairs):
            keys = [k for k, _v in pairs]
            obj.repeated = tuple(k for k in obj if keys.count(k) > 1)
        return obj


class _LineCounter:
    """Line numbers of increasing text offsets, counted incrementally (no quadratic rescans)."""

    def __init__(self, text: str) -> None:
        self.text, self.pos, self.line = text, 0, 1

    def at(self, offset: int) -> int:
        if offset < self.pos:
            return self.text.count("\n", 0, offset) + 1
        self.line += self.text.count("\n", self.pos, offset)
        self.pos = offset
        return self.line


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, dict):  # json gives every object as an _Object
        return "an object"
    return {dict: "an object", list: "a list", str: "a string", float: "a number with a fraction",
            int: "an integer"}.get(type(value), type(value).__name__)


# --- validation shared by both formats -----------------------------------------------------------


class _Checker:
    """Validates records one at a time, collecting problems and the valid requests."""

    def __init__(
        self, mode: Mode, default_ticket: str | None, default_reason: str | None,
        default_operator: str | None, known_kinds: Collection[str],
        normalize_user: Callable[[str], str],
        unknown_users: Callable[[list[str]], Collection[str]],
        missing_locks: Callable[[list[int]], Collection[int]] | None,
        limits: Mapping[str, tuple[TextLimit, ...]],
    ) -> None:
        self.mode = mode
        self.limits = limits
        self.allowed = COLUMNS[mode]
        self.id_columns = ("user_id",) if mode == "apply" else ("user_id", "lock_id")
        self.defaults = {
            "ticket": (default_ticket or "").strip(),
            "reason": (default_reason or "").strip(),
            "operator": (default_operator or "").strip(),
        }
        self.known_kinds = list(known_kinds)
        self.normalize_user = normalize_user
        self.unknown_users = unknown_users
        self.missing_locks = missing_locks
        # Checked against the database at the end, in batches: (id, how to report it missing).
        self.user_checks: list[tuple[str, Callable[[str], None]]] = []
        self.lock_checks: list[tuple[int, Callable[[str], None]]] = []
        self.problems: list[tuple[int, str]] = []
        self.requests: list[Request] = []
        self.names: list[str] = []  # CSV header, normalized; unknown columns keep their name
        self.reported_missing: set[str] = set()  # CSV columns whose absence was reported once
        self.unknown_keys: dict[str, tuple[int, int]] = {}  # JSON key -> (first line, count)
        self.users: dict[str, tuple[int, str]] = {}  # normalized id -> (line, as written)
        self.locks: dict[int, int] = {}  # lock id -> line
        self.delimiter = ","  # the CSV column separator, for the header's hint
        self.ignored_kinds = 0  # revert rows that name kinds (not used: a lock reverts whole)

    def problem(self, line: int, text: str) -> None:
        self.problems.append((line, text))

    def check_existence(
        self, spaces_hint: Callable[[list[str]], Mapping[str, str]] | None = None
    ) -> None:
        """Report every unknown user and missing lock, asking the database in batches."""
        _report_missing(self.user_checks, self.unknown_users, "unknown user {!r}", spaces_hint)
        if self.missing_locks is not None:
            _report_missing(self.lock_checks, self.missing_locks, "no lock {}")

    def _unknown_column(self, name: str) -> str:
        guess = difflib.get_close_matches(name, self.allowed, n=1)
        if name == "lock_id" and self.mode == "apply":
            hint = "; lock_id is for revert"
        else:
            hint = f"; did you mean {guess[0]!r}?" if guess else ""
        return f"(allowed: {', '.join(self.allowed)}{hint})"

    def csv_header(self, line: int, fields: list[str]) -> None:
        """Check the header once: unknown, unnamed, repeated and missing columns."""
        self.names = [f.strip().lower() for f in fields]
        others = [sep for sep in (",", ";", "\t", "|") if sep != self.delimiter]
        if len(fields) == 1 and (found := [sep for sep in others if sep in fields[0]]):
            shown = "tab" if found[0] == "\t" else found[0]
            self.problem(line, f"the header is one column {fields[0]!r}: its columns are "
                               f"separated by {shown!r}; give --delimiter {shown!r}")
            self.reported_missing.update(self.allowed)
            return
        seen: set[str] = set()
        for position, name in enumerate(self.names, start=1):
            if not name:
                self.problem(line, f"column {position} of the header has no name")
            elif name in seen:
                self.problem(line, f"column {name!r} appears twice in the header")
            elif name not in self.allowed:
                self.problem(line, f"unknown column {fields[position - 1].strip()!r} "
                                   f"{self._unknown_column(name)}")
            seen.add(name)
        first = "the first line must be the header, e.g. user_id,ticket,reason"
        if self.mode == "apply" and "user_id" not in seen:
            self.problem(line, f"missing column 'user_id' ({first})")
        if self.mode == "revert" and not {"user_id", "lock_id"} & seen:
            self.problem(line, f"missing column: 'user_id' or 'lock_id' is needed ({first})")
        for name in ("ticket", "reason", "operator"):
            if name not in seen and not self.defaults[name]:
                self.problem(line, self._missing_text(name, "column"))
        self.reported_missing = {n for n in self.allowed if n not in seen}

    @staticmethod
    def _missing_text(name: str, where: str) -> str:
        option = "--operator or PRIVACY_LOCK_OPERATOR" if name == "operator" else f"--{name}"
        if where == "column":
            return f"missing column {name!r} (or give {option} for the whole file)"
        return f"empty {name} (fill it in, or give {option} for the whole file)"

    def json_record(self, line: int, index: int, obj: dict[str, Any]) -> None:
        """Turn one JSON object into text values, reporting values of the wrong type."""
        label = f"object {index}: "
        values: dict[str, str] = {}
        bad = False
        written: dict[str, str] = {}  # normalized name -> the key as written first
        for key in getattr(obj, "repeated", ()):
            self.problem(line, f"{label}the key {key!r} appears twice; write each key once")
            bad = True
        for key, value in obj.items():
            name = key.strip().lower()
            if name not in self.allowed:
                first, count = self.unknown_keys.get(key, (line, 0))
                self.unknown_keys[key] = (first, count + 1)
                continue
            if name in written:
                self.problem(line, f"{label}the keys {written[name]!r} and {key!r} both mean "
                                   f"{name!r}; write it once")
                bad = True
                continue
            written[name] = key
            if value is None:
                values[name] = ""
            elif isinstance(value, str):
                values[name] = value
            elif isinstance(value, int) and not isinstance(value, bool):
                values[name] = str(value)
            elif name == "kinds" and isinstance(value, list) \
                    and all(isinstance(v, str) for v in value):
                values[name] = ";".join(value)
            else:
                self.problem(line, f"{label}{name!r} is {_json_type(value)}; "
                                   "values must be strings or integers")
                bad = True
        if not bad:
            self.record(line, label, values)

    def json_unknown_keys(self) -> None:
        for key, (line, count) in self.unknown_keys.items():
            where = f"in {count:,} objects, first here" if count > 1 else "here"
            self.problem(line, f"unknown key {key!r} {where} {self._unknown_column(key.lower())}")

    def record(self, line: int, label: str, values: dict[str, str]) -> None:
        """Check one row; keep it as a Request only when it has no problem."""

        def problem(text: str) -> None:
            self.problem(line, label + text)

        # A user id is not stripped here: on a string owner column "u-alice " may be another
        # account than "u-alice" (normalize_user decides; an integer id may have spaces).
        user = values.get("user_id") or ""
        if not user.strip():
            user = ""
        lock_text = (values.get("lock_id") or "").strip()
        lock_id: int | None = None
        if self.mode == "revert" and user and lock_text:
            problem("give user_id or lock_id, not both")
        elif self.mode == "revert" and lock_text:
            lock_id = self._check_lock(line, lock_text, problem)
        elif user:
            subject = self._check_user(line, user, problem)
            if subject != user:  # an integer id: its spaces mean nothing, keep it as written
                user = user.strip()
        elif not all(c in self.reported_missing for c in self.id_columns):
            problem("empty user_id" if self.mode == "apply" else "needs a user_id or a lock_id")

        texts: dict[str, str] = {}
        for name in ("ticket", "reason", "operator"):
            value = (values.get(name) or "").strip() or self.defaults[name]
            texts[name] = value
            if not value:
                if name not in self.reported_missing:  # else said once, at the header
                    problem(self._missing_text(name, "value"))
            elif found := text_problem(name, value, self.limits.get(name, ())):
                problem(found)

        kinds = tuple(dict.fromkeys(
            k.strip() for k in (values.get("kinds") or "").split(";") if k.strip()
        ))
        if self.mode == "revert":  # a lock reverts whole: the column is read, not used
            self.ignored_kinds += bool(kinds)
            kinds = ()
        unknown = [k for k in kinds if k not in self.known_kinds]
        if unknown:
            listed = ", ".join(repr(k) for k in unknown)
            problem(f"unknown kind{'s' if len(unknown) > 1 else ''} {listed} "
                    f"(configured: {', '.join(self.known_kinds) or 'none'})")

        if not self.problems:
            self.requests.append(Request(
                line, user or None, lock_id, texts["ticket"], texts["reason"],
                texts["operator"], kinds,
            ))
        else:
            self.requests.clear()  # the file will be refused: keep no rows in memory

    def _check_user(self, line: int, user: str, problem: Callable[[str], None]) -> str | None:
        """The normalized id of ``user`` (None when refused), reported when it repeats one."""
        try:
            subject = self.normalize_user(user)
        except UsageError as exc:
            problem(str(exc))
            return None
        if subject in self.users:
            first, written = self.users[subject]
            here = f" (written {user!r})" if user != subject else ""
            there = f" (written {written!r})" if written != subject else ""
            problem(f"duplicate user {subject!r}{here}, also on line {first}{there}")
            return subject
        self.users[subject] = (line, user)
        self.user_checks.append((subject, problem))
        return subject

    def _check_lock(self, line: int, text: str, problem: Callable[[str], None]) -> int | None:
        try:
            lock_id = parse_id(text, "lock_id", minimum=1)
        except UsageError as exc:
            problem(str(exc))
            return None
        if lock_id in self.locks:
            problem(f"duplicate lock_id {lock_id} (also on line {self.locks[lock_id]})")
            return None
        self.locks[lock_id] = line
        self.lock_checks.append((lock_id, problem))
        return lock_id


# --- a file of request ids (approve --from-file) -------------------------------------------------

ID_COLUMNS = ("request", "request_id")


def read_request_ids(path: Path) -> list[int]:
    """The request ids a file names, for ``approve --from-file``: what ``requests --format
    ids`` prints (ids and ranges such as ``1-200``, separated by spaces, commas or lines), or
    a CSV with a ``request`` or ``request_id`` column (``requests --format csv``, an
    ``approve --output`` file). Every problem is listed with its line; nothing is approved."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the file of request ids: "
                         f"{exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise RequestFileError(path, [(line, f"not UTF-8 (byte offset {exc.start})")]) from None
    lines = text.splitlines()
    first = next((n for n, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise RequestFileError(path, [(1, "the file is empty")])
    header = [f.strip().lower() for f in next(csv.reader([lines[first]]))]
    column = next((header.index(c) for c in ID_COLUMNS if c in header), None)
    problems: list[tuple[int, str]] = []
    tokens: list[str] = []
    if column is None and any(c.isalpha() for c in lines[first]):
        raise RequestFileError(path, [(first + 1, "no 'request' or 'request_id' column, and "
                                                  "not a list of ids such as 1-200 7 9")])
    if column is not None:
        reader = csv.reader(lines[first + 1:])
        for number, fields in enumerate(reader, start=first + 2):
            if not any(f.strip() for f in fields):
                continue
            if column >= len(fields) or not fields[column].strip():
                problems.append((number, "empty request id"))
            else:
                tokens.append(fields[column])
                _check_token(fields[column], number, problems)
    else:
        for number, text_line in enumerate(lines[first:], start=first + 1):
            for token in text_line.replace(",", " ").split():
                tokens.append(token)
                _check_token(token, number, problems)
    if problems:
        raise RequestFileError(path, problems)
    if not tokens:
        raise RequestFileError(path, [(first + 1, "no request ids")])
    return parse_id_ranges(tokens, "request id")


def _check_token(token: str, line: int, problems: list[tuple[int, str]]) -> None:
    try:
        parse_id_ranges([token], "request id")
    except UsageError as exc:
        problems.append((line, str(exc)))
