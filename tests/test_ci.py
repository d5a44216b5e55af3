"""`.ci/run` installs Debian's chromium only when it is missing, and CI goes on when apt
cannot (the html rendering test is then skipped with its reason)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CI = Path(__file__).resolve().parent.parent / ".ci" / "run"
BASH = shutil.which("bash")


def ensure_chromium(tmp_path: Path, *, chromium: bool, apt_works: bool) -> tuple[int, str, str]:
    """Run .ci/run's ensure_chromium with stub commands; (exit code, stderr, apt calls)."""
    script = CI.read_text(encoding="utf-8")
    function = script.split("# begin ensure_chromium", 1)[1].split("# end ensure_chromium")[0]
    stubs = tmp_path / "bin"
    stubs.mkdir(parents=True)
    log = tmp_path / "apt.log"
    (stubs / "apt-get").write_text(
        f'#!/bin/sh\necho "$@" >> {log}\nexit {0 if apt_works else 100}\n', encoding="utf-8")
    if chromium:
        (stubs / "chromium").write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    done = subprocess.run([BASH, "-c", function.split("\n", 1)[1] + "\nensure_chromium"],
                          env={"PATH": str(stubs)}, capture_output=True, text=True,
                          check=False)
    return done.returncode, done.stderr, log.read_text() if log.exists() else ""


@pytest.mark.skipif(BASH is None, reason="no bash")
def test_chromium_is_installed_only_when_missing_and_ci_goes_on_without_it(tmp_path):
    code, _, calls = ensure_chromium(tmp_path / "a", chromium=False, apt_works=True)
    assert code == 0 and calls.splitlines() == [
        "update -qq", "-y -qq install --no-install-recommends chromium"]
    code, _, calls = ensure_chromium(tmp_path / "b", chromium=True, apt_works=True)
    assert code == 0 and calls == ""  # present: apt is never asked
    code, err, calls = ensure_chromium(tmp_path / "c", chromium=False, apt_works=False)
    assert code == 0 and "html rendering test will be skipped" in err
    assert calls.splitlines() == ["update -qq"]
