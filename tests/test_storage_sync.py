"""Pure transfer planning: what moves, what is skipped, what is deleted, and which remote paths are refused."""

from __future__ import annotations

import json

import pytest

from tritonrepo.errors import StorageError, UnsafeKeyError
from tritonrepo.storage.sync import (
    digests_to_check,
    format_summary,
    parse_remote_manifest,
    plan_pull,
    plan_push,
    summarize,
)
from tritonrepo.storage.url import parse_s3_url, safe_target

A, B, C = "a" * 64, "b" * 64, "c" * 64
LOCAL = {"m/config.pbtxt": {"size": 10, "sha256": A}, "m/1/model.py": {"size": 20, "sha256": B}}


def test_push_to_an_empty_prefix_uploads_everything_and_every_marker():
    plan = plan_push(LOCAL, ["e/1"], {}, {}, delete=False)
    assert plan.transfer == ["m/1/model.py", "m/config.pbtxt"] and plan.skip == []
    assert plan.directories == ["e/1/"] and plan.bytes_to_move == 30


def test_push_skips_what_the_manifest_vouches_for_and_moves_what_changed():
    remote = {"m/config.pbtxt": 10, "m/1/model.py": 20, "e/1/": 0}
    plan = plan_push(LOCAL, ["e/1"], remote, {"m/config.pbtxt": A, "m/1/model.py": C}, delete=False)
    assert plan.transfer == ["m/1/model.py"] and plan.skip == ["m/config.pbtxt"]
    assert plan.directories == [] and plan.bytes_to_move == 20 and plan.bytes_skipped == 10


def test_push_uploads_a_file_the_manifest_lists_but_the_bucket_lost():
    plan = plan_push(LOCAL, [], {"m/1/model.py": 20}, {"m/config.pbtxt": A, "m/1/model.py": B}, delete=False)
    assert plan.transfer == ["m/config.pbtxt"]


def test_push_deletes_only_with_delete_and_never_the_manifest_or_live_folders():
    remote = {"m/config.pbtxt": 10, "old.bin": 5, "gone/1/": 0, "m/": 0, "tritonrepo.json": 3}
    assert plan_push(LOCAL, [], remote, {}, delete=False).delete == []
    assert plan_push(LOCAL, [], remote, {}, delete=True).delete == ["gone/1/", "old.bin"]


def test_objects_of_an_interrupted_push_are_checked_by_their_stored_digest():
    remote = {"m/config.pbtxt": 10, "m/1/model.py": 99}
    # Same size and not vouched for by the manifest -> check; a different size is an upload anyway.
    assert digests_to_check(LOCAL, remote, {}) == ["m/config.pbtxt"]
    assert digests_to_check(LOCAL, remote, {"m/config.pbtxt": {"size": 10, "sha256": A}}) == []


def test_pull_downloads_what_differs_and_deletes_local_extras_only_when_asked():
    local = {"m/config.pbtxt": {"size": 10, "sha256": A}, "m/1/model.py": {"size": 7, "sha256": None}, "x": {}}
    plan = plan_pull(LOCAL, ["e/1"], local, delete=False)
    assert plan.transfer == ["m/1/model.py"] and plan.skip == ["m/config.pbtxt"] and plan.delete == []
    assert plan.directories == ["e/1"]
    assert plan_pull(LOCAL, [], {**local, "tritonrepo.json": {}}, delete=True).delete == ["x"]


@pytest.mark.parametrize("path", ["../../etc/x", "/etc/passwd", "a\\b", "a/../../b", "./a", "a//b", "C:/x", ""])
def test_unsafe_manifest_paths_are_refused(path, tmp_path):
    raw = json.dumps({"files": {path: {"size": 1, "sha256": A}}}).encode()
    with pytest.raises(UnsafeKeyError):
        parse_remote_manifest(raw, "s3://b/p")
    with pytest.raises(UnsafeKeyError):
        safe_target(tmp_path, path)


def test_a_symlink_in_the_target_cannot_carry_a_key_outside(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    with pytest.raises(UnsafeKeyError, match="outside"):
        safe_target(tmp_path / "root", "link/escaped")


@pytest.mark.parametrize(
    "raw", [b"not json", b"{}", b'{"files": []}', b'{"files": {"a": {"size": 1}}}', b'{"files": {"a/": {}}}']
)
def test_a_manifest_that_is_not_ours_is_a_storage_error(raw):
    with pytest.raises(StorageError):
        parse_remote_manifest(raw, "s3://b/p")


def test_urls_are_parsed_and_validated():
    url = parse_s3_url("s3://models/llama/v1/")
    assert (url.bucket, url.prefix, url.key("a/b"), str(url)) == (
        "models",
        "llama/v1",
        "llama/v1/a/b",
        "s3://models/llama/v1",
    )
    assert parse_s3_url("s3://models").key("a") == "a"
    for bad in ("http://x/y", "s3://UPPER/x", "s3://ab/x", "s3://bucket/a/../b"):
        with pytest.raises(StorageError):
            parse_s3_url(bad)


def test_the_summary_reads_as_one_line_and_lists_moves_in_a_dry_run():
    plan = plan_push(LOCAL, [], {}, {}, delete=False)
    line = format_summary(summarize("push", "repo", "s3://b/p", plan, dry_run=False, seconds=2.0))
    assert "2 file(s) uploaded" in line and "0 unchanged" in line and "MB/s" in line
    dry = format_summary(summarize("push", "repo", "s3://b/p", plan, dry_run=True, seconds=0.1))
    assert "would upload m/config.pbtxt" in dry and dry.endswith("0 would be deleted")
