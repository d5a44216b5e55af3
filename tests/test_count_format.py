"""Counts a desk reads at scale carry thousands separators."""

from __future__ import annotations

from privacy_lock.approvals import _some
from privacy_lock.requests import RequestFileError


def test_a_request_file_with_thousands_of_problems():
    error = RequestFileError("big.csv", [(n, "empty user_id") for n in range(2, 1236)])
    lines = str(error).splitlines()
    assert lines[0] == "big.csv: 1,234 problems, nothing was changed:"
    assert lines[-1] == "  ... and 1,184 more"


def test_request_ids_named_in_part():
    assert _some(list(range(1, 20001))).endswith(", ... (20,000 in all)")
