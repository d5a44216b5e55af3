"""The Python API (privacy_lock.service): what the CLI does, callable without Click, on every
dialect; results asserted in the database."""

from __future__ import annotations

import pytest

from privacy_lock import service
from privacy_lock.errors import UsageError
from privacy_lock.service import Identity, Target
from sns import build_sns

WHO = Identity("tester", "T-1", "test")


@pytest.fixture
def sns(db_url, tmp_path):
    return build_sns(db_url, tmp_path)


@pytest.fixture
def target(sns):
    notes: list[str] = []
    target = Target.load(str(sns.config_path), sns.url, note=notes.append)
    target.notes = notes  # type: ignore[attr-defined]
    yield target
    target.dispose()


def test_apply_status_and_revert_through_the_service(sns, target):
    user = sns.users[0]
    before = sns.everything()
    plan = service.apply(target, [str(user)], dry_run=True)
    assert plan.ending is service.Ending.DRY_RUN and sns.lock_rows() == []
    assert [o.status for o in plan.outcomes] == ["would-lock"]

    done = service.apply(target, [str(user)], identity=WHO)
    assert done.ending is service.Ending.DONE and not done.failed
    assert all(v == sns.private for v in sns.items_of(user).values())
    [report] = service.status(target, [str(user)])
    assert report["lock"]["lock_id"] == done.outcomes[0].lock_id
    assert [lk["lock_id"] for lk in service.locks(target)] == [done.outcomes[0].lock_id]

    back = service.revert(target, users=[str(user)], identity=WHO)
    assert isinstance(back, service.RunResult) and back.ending is service.Ending.DONE
    assert sns.everything() == before
    assert service.audit_verify(target).ok
    assert target.notes[0].startswith("database: ")  # announced once, password hidden
    assert len(target.notes) == 1


def test_a_change_without_its_identity_is_refused_before_anything(sns, target):
    with pytest.raises(UsageError, match="--ticket, --reason required"):
        service.apply(target, [str(sns.users[0])], identity=Identity("tester"))
    with pytest.raises(UsageError, match="name at least one USER"):
        service.apply(target, [])
    assert sns.lock_rows() == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_output_and_the_retry_file_through_the_service(sns, target, tmp_path):
    out = tmp_path / "result.json"
    result = service.apply(target, [str(u) for u in sns.users], identity=WHO, output=out)
    assert result.output == out and result.retry_file is None
    assert out.read_text(encoding="utf-8").lstrip().startswith("[")
    with pytest.raises(UsageError, match="does not exist"):
        service.apply(target, [str(sns.users[0])], identity=WHO,
                      output=tmp_path / "no" / "x.csv")
