"""The code stays ruff-clean and mypy-clean (configuration in pyproject.toml)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_clean():
    if importlib.util.find_spec("ruff") is None:
        if os.environ.get("CI"):
            pytest.fail("ruff is not installed (it is in the [test] extra)")
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_clean():
    if importlib.util.find_spec("mypy") is None:
        if os.environ.get("CI"):
            pytest.fail("mypy is not installed (it is in the [test] extra)")
        pytest.skip("mypy is not installed (pip install -e '.[test]')")
    # The options ([tool.mypy] in pyproject.toml) are read from ROOT, the working directory.
    result = subprocess.run([sys.executable, "-m", "mypy", "privacy_lock"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
