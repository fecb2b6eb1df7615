"""push/pull safety against moto's real S3 server: symbolic links never carry a transfer outside the repository,
pulled files get the usual mode, and an interrupted pull (SIGINT, SIGTERM, SIGKILL of a real process) leaves no part
file behind, or one the next pull sweeps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import pytest
import requests
from click.testing import CliRunner
from conftest import free_port
from test_storage_s3 import _credentials, _keys, _tree, _with, bucket, built, endpoint, options, repo, s3  # noqa: F401 (fixtures)

from tritonrepo.cli.main import cli
from tritonrepo.errors import UnsafeKeyError, UnsafeLinkError
from tritonrepo.repository.manifest import MANIFEST
from tritonrepo.storage import TransferOptions, pull, push
from tritonrepo.storage.transfer import PART_SUFFIX


@pytest.fixture
def outside(tmp_path) -> Path:
    """A folder beside the repository, with a file nobody meant to publish."""
    folder = tmp_path / "outside"
    (folder / "engines").mkdir(parents=True)
    (folder / "engines" / "rank0.engine").write_bytes(b"e" * 4096)
    (folder / "secret.txt").write_text("root:x:0:0:not for the bucket\n")
    return folder


# --- push ----------------------------------------------------------------------------------------------------------
def test_push_refuses_links_that_lead_outside_and_uploads_nothing(repo, bucket, s3, options, outside):
    (repo / "preprocessing/1/passwd").symlink_to(outside / "secret.txt")
    (repo / "tensorrt_llm/1/engines").symlink_to(outside / "engines")
    with pytest.raises(UnsafeLinkError) as caught:
        push(repo, f"s3://{bucket}/r", options)
    message = str(caught.value)
    assert f"preprocessing/1/passwd -> {outside / 'secret.txt'}" in message
    assert f"tensorrt_llm/1/engines -> {outside / 'engines'}" in message and caught.value.exit_code == 8
    assert [link["path"] for link in caught.value.links] == ["preprocessing/1/passwd", "tensorrt_llm/1/engines"]
    assert _keys(s3, bucket) == {}  # refused before the first request that writes


def test_a_loop_is_skipped_not_followed_and_named_in_the_summary(repo, bucket, s3, options):
    (repo / "ensemble/loop").symlink_to("..")
    summary = push(repo, f"s3://{bucket}/r", options)
    keys = _keys(s3, bucket)
    assert not [key for key in keys if "loop" in key]
    assert len(keys) == len(_tree(repo)) + 1  # every file (manifest included) and the ensemble/1/ marker, once
    assert summary.skipped_links == [
        {"path": "ensemble/loop", "target": "..", "resolved": str(repo.resolve()), "kind": "folder", "inside": True}
    ]


def test_a_link_to_a_file_inside_moves_as_that_content(repo, bucket, s3, options, tmp_path):
    (repo / "postprocessing/1/model_copy.py").symlink_to("model.py")
    push(repo, f"s3://{bucket}/r", options)
    body = s3.get_object(Bucket=bucket, Key="r/postprocessing/1/model_copy.py")["Body"].read()
    assert body == (repo / "postprocessing/1/model.py").read_bytes()
    pulled = tmp_path / "pulled"
    pull(f"s3://{bucket}/r", pulled, options)
    assert not (pulled / "postprocessing/1/model_copy.py").is_symlink()  # S3 has no links: a plain file comes back
    assert push(repo, f"s3://{bucket}/r", options).files_moved == 0  # and the link is no change on the next push


def test_cli_push_names_refused_links_on_the_console_and_in_json(repo, bucket, endpoint, outside):
    (repo / "preprocessing/1/passwd").symlink_to(outside / "secret.txt")
    result = CliRunner().invoke(
        cli, ["-q", "push", str(repo), f"s3://{bucket}/r", "--endpoint-url", endpoint, "--json"]
    )
    assert result.exit_code == 8
    assert f"Error: refusing to push {repo}" in result.stderr and "preprocessing/1/passwd ->" in result.stderr
    failure = json.loads(result.stdout)
    assert failure["exit_code"] == 8 and "refusing to push" in failure["error"]
    assert failure["links"][0]["path"] == "preprocessing/1/passwd"
    assert failure["links"][0]["resolved"] == str((outside / "secret.txt").resolve())

    (repo / "preprocessing/1/passwd").unlink()
    (repo / "ensemble/loop").symlink_to("..")
    result = CliRunner().invoke(cli, ["-q", "push", str(repo), f"s3://{bucket}/r", "--endpoint-url", endpoint])
    assert result.exit_code == 0
    assert "skipped symbolic link ensemble/loop -> .. (a folder link: never followed)" in result.stdout
    result = CliRunner().invoke(
        cli, ["-q", "push", str(repo), f"s3://{bucket}/r", "--endpoint-url", endpoint, "--json"]
    )
    assert json.loads(result.stdout)["skipped_links"][0]["path"] == "ensemble/loop"


# --- pull: links planted in the destination ------------------------------------------------------------------------
def test_pull_never_writes_through_a_folder_link_in_the_destination(repo, bucket, options, tmp_path, outside):
    push(repo, f"s3://{bucket}/r", options)
    target = tmp_path / "target"
    target.mkdir()
    (target / "preprocessing").symlink_to(outside)
    before = sorted(p.name for p in outside.rglob("*"))
    with pytest.raises(UnsafeKeyError, match=r"preprocessing is a symbolic link .*nothing can land outside"):
        pull(f"s3://{bucket}/r", target, options)
    assert sorted(p.name for p in outside.rglob("*")) == before
    assert [p.name for p in target.iterdir()] == ["preprocessing"]  # refused before any write


def test_pull_replaces_a_file_link_without_touching_its_target(repo, bucket, options, tmp_path, outside):
    push(repo, f"s3://{bucket}/r", options)
    target = tmp_path / "target"
    pull(f"s3://{bucket}/r", target, options)
    planted = target / "postprocessing/1/model.py"
    planted.unlink()
    planted.symlink_to(outside / "secret.txt")
    secret = (outside / "secret.txt").read_bytes()
    summary = pull(f"s3://{bucket}/r", target, options)
    assert summary.moved == ["postprocessing/1/model.py"]  # a link is never taken for the file, whatever it holds
    assert not planted.is_symlink() and planted.read_bytes() == (repo / "postprocessing/1/model.py").read_bytes()
    assert (outside / "secret.txt").read_bytes() == secret


def test_pull_delete_removes_extra_links_never_what_they_point_to(repo, bucket, options, tmp_path, outside):
    push(repo, f"s3://{bucket}/r", options)
    target = tmp_path / "target"
    pull(f"s3://{bucket}/r", target, options)
    (target / "engines").symlink_to(outside / "engines")
    (target / "ensemble/1/secret").symlink_to(outside / "secret.txt")
    summary = pull(f"s3://{bucket}/r", target, _with(options, delete=True))
    assert summary.deleted == ["engines", "ensemble/1/secret"]
    assert not (target / "engines").exists() and (target / "ensemble/1").is_dir()
    assert (outside / "engines/rank0.engine").stat().st_size == 4096 and (outside / "secret.txt").exists()
    assert _tree(target) == _tree(repo)


# --- pull: file modes ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_pulled_files_get_the_usual_mode_for_the_umask(repo, bucket, options, tmp_path, umask):
    (repo / "tensorrt_llm/1/weights.bin").write_bytes(os.urandom(6 << 20))  # above the part size: ranged GETs
    push(repo, f"s3://{bucket}/r", options)
    previous = os.umask(umask)
    try:
        pull(f"s3://{bucket}/r", tmp_path / "pulled", _with(options, part_size=5 << 20))
    finally:
        os.umask(previous)
    modes = {p.relative_to(tmp_path / "pulled").as_posix(): p.stat().st_mode & 0o777 for p in _files(tmp_path)}
    assert set(modes) == set(_tree(repo))
    assert set(modes.values()) == {0o666 & ~umask}, modes  # as `cp` or `aws s3 cp` would make them


def _files(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "pulled").rglob("*") if p.is_file()]


# --- pull: interrupted ---------------------------------------------------------------------------------------------
# These run moto in a process of its own: in this one, its threads would hold the GIL while serving the download and
# delay the loop that watches for the part file, so the signal could arrive after the download had finished.
@pytest.fixture(scope="module")
def own_endpoint():
    port = free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{url}/moto-api/", timeout=2)
                break
            except requests.ConnectionError:
                assert server.poll() is None and time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def _part_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if PART_SUFFIX in p.name] if root.exists() else []


def _start_pull(bucket_name: str, endpoint_url: str, target: Path) -> subprocess.Popen:
    """A real `tritonrepo pull` process, one file at a time in 5 MiB ranged GETs (moto reads the whole object for
    each), so the large file is still downloading when the test signals it."""
    argv = [sys.executable, "-m", "tritonrepo.cli.main", "-q", "pull", f"s3://{bucket_name}/big", str(target)]
    argv += ["--endpoint-url", endpoint_url, "--concurrency", "1", "--part-size", "5"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_the_part_file(process: subprocess.Popen, folder: Path) -> None:
    deadline = time.monotonic() + 60
    while not (folder.is_dir() and any(name.endswith(PART_SUFFIX) for name in os.listdir(folder))):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the pull never started downloading"
        time.sleep(0.002)


@pytest.fixture
def big_remote(own_endpoint, tmp_path) -> tuple[str, Path]:
    bucket_name = f"big-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=own_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket_name)
    source = tmp_path / "big-source"
    (source / "m/1").mkdir(parents=True)
    (source / "m/1/weights.bin").write_bytes(os.urandom(128 << 20))
    (source / "m/config.pbtxt").write_text("name: 'm'\n")
    push(source, f"s3://{bucket_name}/big", TransferOptions(endpoint_url=own_endpoint))
    return bucket_name, source


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_pull_removes_its_part_file_at_once(big_remote, own_endpoint, tmp_path, stop):
    bucket_name, source = big_remote
    target = tmp_path / "target"
    process = _start_pull(bucket_name, own_endpoint, target)
    _wait_for_the_part_file(process, target / "m/1")  # weights.bin comes first, one file at a time
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=60)
    left = sorted(p.relative_to(target).as_posix() for p in target.rglob("*"))
    assert process.returncode == 130, (process.returncode, stderr, left)
    assert "Interrupted: the pull stopped and left no partial file behind" in stderr
    assert left == ["m", "m/1"], stderr  # no part file, no weights.bin (it was downloading), no manifest
    pull(f"s3://{bucket_name}/big", target, TransferOptions(endpoint_url=own_endpoint))  # the rerun finishes it
    assert _tree(target) == {**_tree(source), MANIFEST: _tree(target)[MANIFEST]}


def test_the_part_file_of_a_killed_pull_is_swept_by_the_next_one(big_remote, own_endpoint, tmp_path):
    bucket_name, source = big_remote
    target = tmp_path / "target"
    process = _start_pull(bucket_name, own_endpoint, target)
    _wait_for_the_part_file(process, target / "m/1")
    process.kill()  # SIGKILL: nothing can clean up
    process.communicate(timeout=60)
    assert len(_part_files(target)) == 1
    summary = pull(f"s3://{bucket_name}/big", target, TransferOptions(endpoint_url=own_endpoint))
    assert _part_files(target) == [] and "m/1/weights.bin" in summary.moved
    assert _tree(target) == {**_tree(source), MANIFEST: _tree(target)[MANIFEST]}
