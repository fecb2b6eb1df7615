"""The repository writer: staged folders that replace their target whole, with the usual permissions."""

from __future__ import annotations

import os
import stat

import pytest

from tritonrepo.repository.writer import OutputError, staged_directory


@pytest.fixture
def umask():
    """Sets the process umask for one test and puts the old one back."""
    before = os.umask(0o022)
    yield os.umask
    os.umask(before)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o755), (0o027, 0o750)])
def test_a_built_repository_gets_the_usual_folder_mode(tmp_path, umask, mask, expected):
    # mkdtemp's 0700 made every built repository unreadable to a server running as another user.
    umask(mask)
    target = tmp_path / "repo"
    with staged_directory(target) as staging:
        (staging / "tritonrepo.json").write_text("{}")
    assert stat.S_IMODE(target.stat().st_mode) == expected


def test_a_failed_build_leaves_no_staging_folder_and_the_old_repository(tmp_path):
    target = tmp_path / "repo"
    target.mkdir()
    (target / "tritonrepo.json").write_text('{"old": true}')
    with pytest.raises(RuntimeError), staged_directory(target) as staging:
        (staging / "tritonrepo.json").write_text("{}")
        raise RuntimeError("render failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]
    assert (target / "tritonrepo.json").read_text() == '{"old": true}'


def test_a_folder_that_is_not_ours_is_never_replaced(tmp_path):
    target = tmp_path / "photos"
    target.mkdir()
    (target / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(OutputError, match="not a tritonrepo repository"), staged_directory(target):
        pass
    assert (target / "cat.jpg").read_bytes() == b"\xff\xd8"
