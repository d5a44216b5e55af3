"""Request files as Excel in Japan saves them: CP932 (Shift_JIS), detected or given with
--encoding; TSV and --delimiter; revert --from-file takes the file apply took."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from test_requests import load, only_problem, write

from privacy_lock.errors import UsageError
from privacy_lock.requests import Request, RequestFileError, load_requests
from privacy_lock.schema import locks
from sns import build_sns

JAPANESE = "user_id,ticket,reason,operator\n1,T-１,ログインできない①,佐藤\n2,T-2,退会～希望,佐藤\n"


def heard(path: Path, **options) -> tuple[list[Request], list[str]]:
    notes: list[str] = []
    return load(path, note=notes.append, **options), notes


def test_cp932_is_detected_and_said(tmp_path):
    path = write(tmp_path, JAPANESE.encode("cp932"))
    requests, notes = heard(path)
    assert [(r.user_id, r.ticket, r.reason, r.operator) for r in requests] == [
        ("1", "T-１", "ログインできない①", "佐藤"), ("2", "T-2", "退会～希望", "佐藤")]
    assert notes == [f"{path}: read as CP932 (Shift_JIS) (detected), columns split on ','"]


@pytest.mark.parametrize("name", ["cp932", "shift_jis", "Shift-JIS", "sjis", "MS932"])
def test_cp932_given_by_any_of_its_names(tmp_path, name):
    path = write(tmp_path, JAPANESE.encode("cp932"))
    requests, notes = heard(path, encoding=name)
    assert requests[0].reason == "ログインできない①" and "CP932 (Shift_JIS) (given)" in notes[0]


def test_utf8_wins_over_cp932_when_both_decode(tmp_path):
    # "ロ" in UTF-8 (e3 83 ad) is also two valid CP932 characters
    path = write(tmp_path, "user_id,ticket,reason\n1,T,ロ\n".encode())
    assert b"\xe3\x83\xad".decode("cp932") != "ロ"
    requests, notes = heard(path)
    assert requests[0].reason == "ロ" and "UTF-8 (detected)" in notes[0]
    bom = write(tmp_path, b"\xef\xbb\xbf" + "user_id,ticket,reason\n1,T,ロ\n".encode(), "b.csv")
    assert load(bom)[0].reason == "ロ"


def test_neither_utf8_nor_cp932_names_both_offsets(tmp_path):
    path = write(tmp_path, b"user_id,ticket,reason\n1,T,ok\n2,T,\x82\xff\n")
    line, text = only_problem(path)
    assert line == 3
    assert "not UTF-8 (byte 0x82 at byte offset 33) nor CP932 (Shift_JIS) (byte 0x82 at " \
           "byte offset 33)" in text


def test_bytes_cp932_maps_to_no_character_are_not_cp932(tmp_path):
    # Python's cp932 decodes 0xa0, 0xfd-0xff to private-use code points: not text
    path = write(tmp_path, b"user_id,ticket,reason\n1,T,\xfd\n")
    assert "nor CP932" in only_problem(path)[1]
    line, text = only_problem(path, encoding="cp932")
    assert line == 2 and "not CP932 (Shift_JIS) (byte 0xfd at byte offset 26)" in text


def test_cp932_given_for_a_utf8_file_with_a_bom_is_refused(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbfuser_id,ticket,reason\n1,T,r\n")
    with pytest.raises(UsageError, match="UTF-8 BOM"):
        load(path, encoding="cp932")


def test_utf8_given_for_a_cp932_file_names_the_byte(tmp_path):
    path = write(tmp_path, JAPANESE.encode("cp932"))
    line, text = only_problem(path, encoding="utf-8")
    assert line == 2 and text.startswith("not UTF-8 (byte 0x82 at byte offset")


@pytest.mark.parametrize("name", ["latin-1", "utf-16", "ascii", ""])
def test_other_encodings_are_refused(tmp_path, name):
    path = write(tmp_path, "user_id,ticket,reason\n1,T,r\n")
    with pytest.raises(UsageError, match="is not supported: use utf-8 or cp932"):
        load(path, encoding=name)


def test_json_stays_utf8(tmp_path):
    path = write(tmp_path, '[{"user_id": 1, "ticket": "T", "reason": "r"}]', "r.json")
    with pytest.raises(UsageError, match="JSON request file is UTF-8"):
        load(path, encoding="cp932")


def test_tsv_by_extension_and_delimiter_by_option(tmp_path):
    tsv = write(tmp_path, "user_id\tticket\treason\n1\tT, with comma\tr\n", "r.tsv")
    requests, notes = heard(tsv)
    assert requests[0].ticket == "T, with comma" and "split on tab" in notes[0]
    semi = write(tmp_path, "user_id;ticket;reason\n1;T;r\n")
    assert load(semi, delimiter=";")[0].ticket == "T"
    assert load(write(tmp_path, "user_id\tticket\treason\n1\tT\tr\n", "x.txt"),
                delimiter="tab")[0].ticket == "T"
    line, text = only_problem(write(tmp_path, "user_id\tticket\treason\n1\tT\tr\n", "t.csv"))
    assert line == 1 and "give --delimiter 'tab'" in text


@pytest.mark.parametrize("bad", ["", ";;", '"', "a", "7", "\n"])
def test_a_delimiter_is_one_harmless_character(tmp_path, bad):
    path = write(tmp_path, "user_id,ticket,reason\n1,T,r\n")
    with pytest.raises(UsageError, match="--delimiter"):
        load(path, delimiter=bad)


def test_revert_reads_the_apply_file_and_says_kinds_are_not_used(tmp_path):
    path = write(tmp_path, "user_id,ticket,reason,kinds\n1,T,r,diary\n2,T,r,\n")
    requests, notes = heard(path, mode="revert")
    assert [r.kinds for r in requests] == [(), ()]
    assert "kinds column is not used by revert (1 row(s) name kinds)" in notes[-1]


def test_loading_without_note_still_works(tmp_path):
    path = write(tmp_path, JAPANESE.encode("cp932"))
    assert len(load_requests(
        path, "apply", default_ticket=None, default_reason=None, default_operator=None,
        known_kinds=("diary",), normalize_user=str, unknown_users=lambda users: [])) == 2
    with pytest.raises(RequestFileError):
        load(write(tmp_path, b"user_id,ticket,reason\n1,T,\xff\n", "bad.csv"))


# --- end to end, on every dialect ---------------------------------------------------------------


def test_an_excel_cp932_file_applies_and_the_same_file_reverts(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path)
    before = sns.everything()
    u1, u2 = sns.users[:2]
    path = tmp_path / "依頼.csv"
    path.write_bytes((f"user_id,ticket,reason,kinds\r\n{u1},SUP-１,ログインできない①,diary\r\n"
                      f"{u2},SUP-2,退会～希望,\r\n").encode("cp932"))
    out = sns.run("apply", "--from-file", str(path), "--operator", "佐藤", "-q")
    assert "read as CP932 (Shift_JIS) (detected)" in out.stderr
    with sns.engine.connect() as conn:
        rows = conn.execute(select(locks.c.subject, locks.c.ticket, locks.c.reason,
                                   locks.c.operator).order_by(locks.c.lock_id)).all()
    assert [tuple(r) for r in rows] == [(str(u1), "SUP-１", "ログインできない①", "佐藤"),
                                        (str(u2), "SUP-2", "退会～希望", "佐藤")]
    after = sns.everything()
    photos_of = {kind: {i: row for i, row in rows.items() if row[0] == u1}
                 for kind, rows in after.items()}["photo"]
    assert photos_of == {i: row for i, row in before["photo"].items() if row[0] == u1}
    assert after != before  # u1's diaries and all of u2's items were hidden

    # the very file apply took reverts (here without the two-person rule of the test config)
    out = sns.run("revert", "--from-file", str(path), "--operator", "佐藤", "-q")
    assert "kinds column is not used by revert" in out.stderr
    assert [r["state"] for r in sns.lock_rows()] == ["reverted", "reverted"]
    assert sns.everything() == before


def test_a_file_in_neither_encoding_changes_nothing(db_url, tmp_path):
    sns = build_sns(db_url, tmp_path)
    before = sns.everything()
    path = tmp_path / "bad.csv"
    path.write_bytes(f"user_id,ticket,reason\n{sns.users[0]},T,\x82\xff\n".encode("latin-1"))
    out = sns.run("apply", "--from-file", str(path), "--operator", "a", expect=2)
    assert "nor CP932" in out.stderr and "Traceback" not in out.output
    assert sns.everything() == before and sns.lock_rows() == [] and sns.audit_count() == 0


def test_a_utf8_bom_is_never_second_guessed_as_cp932(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbfuser_id,ticket,reason\n1,T,caf\xe9\n")
    line, text = only_problem(path)
    assert line == 2 and text.startswith("not UTF-8 (byte 0xe9 at byte offset 32)")
    assert "CP932" not in text
