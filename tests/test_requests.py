"""Request files: every problem of a whole file is found, with its line, before any change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from privacy_lock.errors import UsageError
from privacy_lock.requests import (
    MAX_LISTED_PROBLEMS,
    Request,
    RequestFileError,
    load_requests,
)

KINDS = ("diary", "photo", "album")
KNOWN_USERS = {str(n) for n in range(1, 100)}


def normalize(raw: str) -> str:
    """Like ContentMap.normalize_user for integer owner ids."""
    try:
        return str(int(raw.strip()))
    except ValueError:
        raise UsageError(f"user id {raw.strip()!r} is not an integer") from None


def load(path: Path, mode: str = "apply", **overrides):
    args = dict(
        default_ticket=None, default_reason=None, default_operator="alice",
        known_kinds=KINDS, normalize_user=normalize,
        unknown_users=lambda users: [u for u in users if u not in KNOWN_USERS],
    )
    args.update(overrides)
    return load_requests(path, mode, **args)  # type: ignore[arg-type]


def write(tmp_path: Path, text: str | bytes, name: str = "req.csv") -> Path:
    path = tmp_path / name
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8", newline="")
    else:
        path.write_bytes(text)
    return path


def problems(path: Path, mode: str = "apply", **overrides) -> list[tuple[int, str]]:
    with pytest.raises(RequestFileError) as info:
        load(path, mode, **overrides)
    return info.value.problems


def only_problem(path: Path, mode: str = "apply", **overrides) -> tuple[int, str]:
    found = problems(path, mode, **overrides)
    assert len(found) == 1, found
    return found[0]


# --- valid files ---------------------------------------------------------------------------------


def test_valid_csv_gives_one_request_per_row(tmp_path):
    path = write(tmp_path, "user_id,ticket,reason,kinds,operator\n"
                           "1,T-1,lost mail,diary;photo,bob\n"
                           " 2 ,T-2,asked to hide,,\n")
    assert load(path) == [
        Request(2, "1", None, "T-1", "lost mail", "bob", ("diary", "photo")),
        Request(3, "2", None, "T-2", "asked to hide", "alice", ()),
    ]


def test_header_is_case_and_space_insensitive_and_crlf_works(tmp_path):
    path = write(tmp_path, " User_ID , Ticket ,REASON\r\n5,T,r\r\n")
    assert load(path) == [Request(2, "5", None, "T", "r", "alice", ())]


def test_defaults_fill_missing_columns_and_empty_values_and_rows_win(tmp_path):
    path = write(tmp_path, "user_id,reason\n1,\n2,own reason\n")
    requests = load(path, default_ticket="SUP-9", default_reason="batch reason",
                    default_operator="carol")
    assert [(r.ticket, r.reason, r.operator) for r in requests] == [
        ("SUP-9", "batch reason", "carol"), ("SUP-9", "own reason", "carol"),
    ]


def test_utf8_bom_and_japanese_reasons_round_trip(tmp_path):
    reason = "キャリアメールが使えない。日記と写真は消さずに非公開に（本人確認済み）"
    body = f"user_id,ticket,reason\n1,問い合わせ-1,{reason}\n2,T-2,\"改行\nを含む理由\"\n"
    path = write(tmp_path, "\ufeff".encode() + body.encode("utf-8"))
    requests = load(path)
    assert requests[0].reason == reason and requests[0].ticket == "問い合わせ-1"
    assert requests[1].reason == "改行\nを含む理由"
    assert requests[0].line == 2 and requests[1].line == 3


def test_quoted_newlines_keep_physical_line_numbers(tmp_path):
    path = write(tmp_path, 'user_id,ticket,reason\n1,T,"one\ntwo\nthree"\n\n2,T,r\n')
    assert [r.line for r in load(path)] == [2, 6]


def test_kinds_are_split_stripped_and_deduplicated(tmp_path):
    path = write(tmp_path, "user_id,ticket,reason,kinds\n1,T,r, diary ; photo;;diary\n2,T,r,;\n")
    assert [r.kinds for r in load(path)] == [("diary", "photo"), ()]


def test_blank_lines_and_all_empty_rows_are_skipped(tmp_path):
    path = write(tmp_path, "\nuser_id,ticket,reason\n\n1,T,r\n,,\n")
    assert [r.line for r in load(path)] == [4]


def test_unknown_existence_is_not_a_problem(tmp_path):
    path = write(tmp_path, "user_id,ticket,reason\n12345,T,r\n")
    assert load(path, unknown_users=lambda users: [])[0].user_id == "12345"


def test_the_database_is_asked_about_every_normalized_id_at_once(tmp_path):
    asked: list[list[str]] = []
    path = write(tmp_path, "user_id,ticket,reason\n007,T,r\n8,T,r\n")
    load(path, unknown_users=lambda users: asked.append(users) or [])
    assert asked == [["7", "8"]]


def test_extension_less_file_is_sniffed(tmp_path):
    csv_path = write(tmp_path, "user_id,ticket,reason\n1,T,r\n", name="requests")
    json_path = write(tmp_path, ' \n[{"user_id": 1, "ticket": "T", "reason": "r"}]',
                      name="requests.txt")
    assert load(csv_path)[0].user_id == "1"
    assert load(json_path)[0].user_id == "1"


# --- JSON ----------------------------------------------------------------------------------------


def test_json_objects_with_their_lines_integers_and_kind_lists(tmp_path):
    path = write(tmp_path, "\ufeff" + """[
  {"user_id": 1, "ticket": 4711, "reason": "理由", "kinds": "diary;photo"},
  {"user_id": "2", "ticket": "T", "reason": "r", "kinds": ["album"], "operator": null},

  {"user_id": "3",
   "ticket": "T", "reason": "r"}
]""", name="req.json")
    assert load(path) == [
        Request(2, "1", None, "4711", "理由", "alice", ("diary", "photo")),
        Request(3, "2", None, "T", "r", "alice", ("album",)),
        Request(5, "3", None, "T", "r", "alice", ()),
    ]


def test_json_round_trips_japanese_written_escaped_or_raw(tmp_path):
    reason = "退会せずに非公開"
    rows = [{"user_id": 1, "ticket": "T", "reason": reason}]
    for ascii_only in (True, False):
        path = write(tmp_path, json.dumps(rows, ensure_ascii=ascii_only), name="r.json")
        assert load(path)[0].reason == reason


@pytest.mark.parametrize(("text", "line", "expected"), [
    ('{"user_id": 1}', 1, "JSON must be a list of objects"),
    ('"hello"', 1, "JSON must be a list of objects"),
    ("[]", 1, "no requests: the list is empty"),
    ('[\n{"user_id": 1, "ticket": "T", "reason": "r"},\n]', 3, "JSON syntax"),
    ('[\n{"user_id": 1, "ticket": "T" "reason": "r"}]', 2, "JSON syntax"),
    ('[{"user_id": 1, "ticket": "T", "reason": "r"}', 1, "never closed"),
    ('[{"user_id": 1, "ticket": "T", "reason": "r"}] x', 1, "extra data"),
    ('[\n1,\n{"user_id": 1, "ticket": "T", "reason": "r"}]', 2, "object 1: is an integer"),
    ('[\n{"user_id": 1, "ticket": "T", "reason": 2.5}]', 2, "'reason' is a number"),
    ('[\n{"user_id": true, "ticket": "T", "reason": "r"}]', 2, "'user_id' is true/false"),
    ('[\n{"user_id": 1, "ticket": {"id": 1}, "reason": "r"}]', 2, "'ticket' is an object"),
    ('[\n{"user_id": 1, "ticket": "T", "reason": "r", "kinds": [1]}]', 2, "'kinds' is a list"),
])
def test_json_shapes_that_are_refused(tmp_path, text, line, expected):
    found_line, found = only_problem(write(tmp_path, text, name="req.json"))
    assert found_line == line and expected in found, found


def test_json_problems_name_the_object_and_its_line(tmp_path):
    rows = [{"user_id": 1, "ticket": "T", "reason": "r"},
            {"user_id": 1, "ticket": "T", "reason": "", "note": "x"},
            {"ticket": "T", "reason": "r", "note": "y"}]
    text = "[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]"
    assert problems(write(tmp_path, text, name="req.json")) == [
        (3, "object 2: duplicate user '1', also on line 2"),
        (3, "object 2: empty reason (fill it in, or give --reason for the whole file)"),
        (3, "unknown key 'note' in 2 objects, first here "
            "(allowed: user_id, ticket, reason, kinds, operator)"),
        (4, "object 3: empty user_id"),
    ]


# --- each kind of problem alone -----------------------------------------------------------------


@pytest.mark.parametrize(("text", "line", "expected"), [
    ("user_id,ticket,reason,colour\n1,T,r,red\n", 1,
     "unknown column 'colour' (allowed: user_id, ticket, reason, kinds, operator)"),
    ("user_id,tikcet,ticket,reason\n1,x,T,r\n", 1, "did you mean 'ticket'?"),
    ("user_id,ticket,reason,\n1,T,r,\n", 1, "column 4 of the header has no name"),
    ("user_id,ticket,ticket,reason\n1,T,T,r\n", 1, "column 'ticket' appears twice"),
    ("ticket,reason\nT,r\n", 1, "missing column 'user_id' (the first line must be the header"),
    ("user_id,reason\n1,r\n", 1, "missing column 'ticket' (or give --ticket"),
    ("user_id;ticket;reason\n1;T;r\n", 1, "separated by ';'; give --delimiter ';'"),
    ("user_id,ticket,reason\n,T,r\n", 2, "empty user_id"),
    ("user_id,ticket,reason\n1, ,r\n", 2, "empty ticket (fill it in, or give --ticket"),
    ("user_id,ticket,reason\n1,T,\n", 2, "empty reason"),
    ("user_id,ticket,reason\nabc,T,r\n", 2, "user id 'abc' is not an integer"),
    ("user_id,ticket,reason\n500,T,r\n", 2, "unknown user '500'"),
    ("user_id,ticket,reason\n1,T,r\n01,T,r\n", 3,
     "duplicate user '1' (written '01'), also on line 2"),
    ("user_id,ticket,reason,kinds\n1,T,r,diary;foto;vids\n", 2,
     "unknown kinds 'foto', 'vids' (configured: diary, photo, album)"),
    ("user_id,ticket,reason\n1,T,r,extra\n", 2, "4 fields, the header has 3 (a comma"),
    ("user_id,ticket,reason\n1,T\n", 2, "2 fields, the header has 3"),
    ("user_id,ticket,reason\n1,T,\"r\"x\n", 2, "CSV syntax"),
    ("user_id,ticket,reason\n1,T,\"never closed\n2,T,r\n", 2, "never closed"),
    ("user_id,ticket,reason\n", 1, "no requests: the file has a header but no rows"),
    ("", 1, "the file is empty"),
    (" \n\n", 1, "the file is empty"),
    ("\ufeff", 1, "the file is empty"),
    ("user_id,ticket,reason\n1," + "T" * 192 + ",r\n", 2, "ticket is 192 characters long"),
    ("user_id,ticket,reason\n1,T,a\x00b\n", 2, "reason contains a NUL character"),
])
def test_each_problem_alone(tmp_path, text, line, expected):
    found_line, found = only_problem(write(tmp_path, text))
    assert found_line == line and expected in found, found


def test_missing_operator_without_default(tmp_path):
    path = write(tmp_path, "user_id,ticket,reason,operator\n1,T,r,\n2,T,r,bob\n")
    assert only_problem(path, default_operator=None) == (
        2, "empty operator (fill it in, or give --operator or PRIVACY_LOCK_OPERATOR for the "
           "whole file)")
    path = write(tmp_path, "user_id,ticket,reason\n1,T,r\n2,T,r\n")
    line, text = only_problem(path, default_operator=" ")
    assert line == 1 and text.startswith("missing column 'operator'")


def test_a_missing_column_is_reported_once_not_per_row(tmp_path):
    path = write(tmp_path, "ticket,reason\n" + "T,r\n" * 20)
    assert len(problems(path)) == 1


def test_bad_encoding_names_line_and_byte_offset(tmp_path):
    good = "user_id,ticket,reason\n1,T,理由\n".encode()
    bad = "2,T,理由\n".encode("cp932")  # Excel's "CSV" on Japanese Windows
    path = write(tmp_path, good + bad + b"3,T,r\n")
    line, text = only_problem(path)
    assert line == 3
    assert f"byte offset {len(good) + 4}" in text and "save the file as UTF-8" in text


def test_bad_encoding_after_a_bom_counts_the_bom_bytes(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbfuser_id,ticket,reason\n1,T,caf\xe9\n")
    line, text = only_problem(path)
    assert line == 2 and "(byte 0xe9 at byte offset 32)" in text


def test_bad_encoding_in_json(tmp_path):
    path = write(tmp_path, b'[\n{"user_id": 1, "ticket": "T", "reason": "caf\xe9"}]',
                 name="r.json")
    line, text = only_problem(path)
    assert line == 2 and "not UTF-8 (byte 0xe9 at byte offset 46)" in text


def test_utf16_is_refused_with_advice(tmp_path):
    path = write(tmp_path, "user_id,ticket,reason\n1,T,r\n".encode("utf-16"))
    assert "UTF-16" in only_problem(path)[1]


def test_unreadable_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="cannot read the request file"):
        load(tmp_path / "missing.csv")


# --- revert --------------------------------------------------------------------------------------


def test_revert_by_lock_id_or_user(tmp_path):
    path = write(tmp_path, "lock_id,user_id,ticket,reason\n12,,T,r\n,3,T,r\n")
    assert load(path, "revert", missing_locks=lambda ns: [n for n in ns if n != 12]) == [
        Request(2, None, 12, "T", "r", "alice", ()),
        Request(3, "3", None, "T", "r", "alice", ()),
    ]


def test_revert_problems(tmp_path):
    path = write(tmp_path, "lock_id,user_id,ticket,reason\n"
                           "12,,T,r\n"
                           "12,,T,r\n"
                           "x1,,T,r\n"
                           "13,,T,r\n"
                           "14,4,T,r\n"
                           ",,T,r\n"
                           "0,,T,r\n")
    assert problems(path, "revert", missing_locks=lambda ns: [n for n in ns if n != 12]) == [
        (3, "duplicate lock_id 12 (also on line 2)"),
        (4, "lock_id 'x1' is not an integer: use the digits 0-9 only (not '+', '_' or "
            "full-width digits)"),
        (5, "no lock 13"),
        (6, "give user_id or lock_id, not both"),
        (7, "needs a user_id or a lock_id"),
        (8, "lock_id '0' is out of range: 1..9223372036854775807"),
    ]


def test_revert_reads_but_does_not_use_kinds_and_apply_takes_no_lock_id(tmp_path):
    path = write(tmp_path, "user_id,ticket,reason,kinds\n1,T,r,diary\n")
    assert load(path, "revert") == [Request(2, "1", None, "T", "r", "alice", ())]
    path = write(tmp_path, "user_id,lock_id,ticket,reason\n1,2,T,r\n")
    assert "lock_id is for revert" in only_problem(path, "apply")[1]


def test_revert_needs_an_id_column(tmp_path):
    path = write(tmp_path, "ticket,reason\nT,r\n")
    assert "'user_id' or 'lock_id' is needed" in only_problem(path, "revert")[1]


# --- several problems at once --------------------------------------------------------------------


def test_every_problem_of_the_file_with_its_physical_line(tmp_path):
    path = write(tmp_path, (
        "user_id,ticket,reason,kinds,colour\n"       # 1
        '1,T-1,"a reason\nover two lines",diary,x\n'  # 2-3
        "2,T-2,,photo,x\n"                           # 4
        '3,T-3,"a, b, and\n\nc",foto,x\n'            # 5-7
        "01,T-4,r,,x\n"                              # 8
        "abc,,r,,x\n"                                # 9
        "999,T-5,r,,x,overflow\n"                    # 10
    ))
    with pytest.raises(RequestFileError) as info:
        load(path)
    assert info.value.exit_code == 2
    assert str(info.value) == (
        f"{path}: 7 problems, nothing was changed:\n"
        "  line 1: unknown column 'colour' (allowed: user_id, ticket, reason, kinds, operator)\n"
        "  line 4: empty reason (fill it in, or give --reason for the whole file)\n"
        "  line 5: unknown kind 'foto' (configured: diary, photo, album)\n"
        "  line 8: duplicate user '1' (written '01'), also on line 2\n"
        "  line 9: user id 'abc' is not an integer\n"
        "  line 9: empty ticket (fill it in, or give --ticket for the whole file)\n"
        "  line 10: 6 fields, the header has 5 (a comma in an unquoted value? put the value in "
        "double quotes)"
    )


def test_problem_list_is_capped_but_every_problem_is_kept(tmp_path):
    rows = "".join(f"{n},T,\n" for n in range(1, 81))
    with pytest.raises(RequestFileError) as info:
        load(write(tmp_path, "user_id,ticket,reason\n" + rows))
    lines = str(info.value).splitlines()
    assert lines[0].endswith(": 80 problems, nothing was changed:")
    assert len(lines) == 1 + MAX_LISTED_PROBLEMS + 1
    assert lines[1].startswith("  line 2: empty reason")
    assert lines[-1] == f"  ... and {80 - MAX_LISTED_PROBLEMS} more"
    assert len(info.value.problems) == 80


def test_one_problem_is_singular(tmp_path):
    with pytest.raises(RequestFileError, match=r"req\.csv: 1 problem, nothing was changed:\n"):
        load(write(tmp_path, "user_id,ticket,reason\n1,T,\n"))


def test_large_file_is_fine(tmp_path):
    rows = "".join(f"{n},T-{n},理由 {n}\n" for n in range(1, 30_001))
    path = write(tmp_path, "user_id,ticket,reason\n" + rows)
    requests = load(path, unknown_users=lambda users: [])
    assert len(requests) == 30_000 and requests[-1] == Request(
        30_001, "30000", None, "T-30000", "理由 30000", "alice", ())
