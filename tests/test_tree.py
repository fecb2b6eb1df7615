"""Walking a repository: symbolic links are entries, never followed out of the tree or round a loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from tritonrepo.repository.manifest import file_digests, sha256_file
from tritonrepo.repository.tree import walk


@pytest.fixture
def layout(tmp_path) -> Path:
    """A repository with one link of each kind, and an outside folder and file the links point at."""
    outside = tmp_path / "outside"
    (outside / "folder").mkdir(parents=True)
    (outside / "folder" / "big.bin").write_bytes(b"x" * 1000)
    (outside / "secret.txt").write_text("not part of the repository\n")
    repo = tmp_path / "repo"
    (repo / "ensemble" / "1").mkdir(parents=True)
    (repo / "ensemble" / "config.pbtxt").write_text("name: 'ensemble'\n")
    (repo / "model" / "1").mkdir(parents=True)
    (repo / "model" / "1" / "model.py").write_text("# model\n")
    (repo / "model" / "1" / "same.py").symlink_to("model.py")  # a file inside: content
    (repo / "ensemble" / "loop").symlink_to("..")  # a loop: would recur forever if followed
    (repo / "model" / "1" / "passwd").symlink_to(outside / "secret.txt")
    (repo / "model" / "shared").symlink_to(outside / "folder")
    (repo / "model" / "dangling").symlink_to(tmp_path / "nowhere")
    (repo / "model" / "1" / "__pycache__").mkdir()
    (repo / "model" / "1" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    return repo


def test_links_are_classified_and_never_entered(layout):
    tree = walk(layout)
    assert tree.files == ["ensemble/config.pbtxt", "model/1/model.py", "model/1/same.py"]
    kinds = {link.path: (link.kind, link.inside) for link in tree.links}
    assert kinds == {
        "ensemble/loop": ("folder", True),
        "model/1/passwd": ("file", False),
        "model/1/same.py": ("file", True),
        "model/dangling": ("broken", False),
        "model/shared": ("folder", False),
    }
    assert [link.path for link in tree.outside_links] == ["model/1/passwd", "model/shared"]
    assert [link.path for link in tree.skipped_links] == ["ensemble/loop", "model/dangling"]
    assert tree.empty_folders == ["ensemble/1"]  # Triton needs it; no folder behind a link is listed


def test_a_folder_holding_only_a_skipped_link_counts_as_empty(tmp_path):
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "loop").symlink_to("..")
    assert walk(tmp_path).empty_folders == ["m/1"]  # push marks it, as an empty version folder


def test_the_manifest_digests_hold_only_what_is_inside(layout):
    digests = file_digests(layout)
    assert list(digests) == ["ensemble/config.pbtxt", "model/1/model.py", "model/1/same.py"]
    assert digests["model/1/same.py"]["sha256"] == sha256_file(layout / "model/1/model.py")
