"""push/pull against a real S3 server (moto's standalone server on 127.0.0.1), through boto3 and the CLI."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import uuid
from pathlib import Path

import boto3
import pytest
import requests
from click.testing import CliRunner
from conftest import free_port

from tritonrepo.cli.main import cli
from tritonrepo.errors import BucketNotFoundError, IntegrityError, StorageAuthError, StorageError, UnsafeKeyError
from tritonrepo.planning import stage_cache as stage_cache_module
from tritonrepo.planning.build import build
from tritonrepo.planning.request import DeploymentRequest
from tritonrepo.repository.manifest import MANIFEST, sha256_file
from tritonrepo.storage import TransferOptions, pull, push
from tritonrepo.storage import transfer as transfer_module

SECRET = "super-secret-value-xyz"


@pytest.fixture(scope="module")
def endpoint():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per request drowns failures
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def _credentials(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # No ~/.aws of the machine running the tests may change what boto3 does.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture
def s3(endpoint):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


@pytest.fixture
def bucket(s3) -> str:
    name = f"models-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return build(DeploymentRequest(model="tiny-llama", output=tmp_path_factory.mktemp("built") / "tiny-llama")).path


@pytest.fixture
def repo(built, tmp_path) -> Path:
    """A private copy, free to change."""
    return Path(shutil.copytree(built, tmp_path / "repo"))


@pytest.fixture
def options(endpoint) -> TransferOptions:
    return TransferOptions(endpoint_url=endpoint, concurrency=4)


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _keys(s3, bucket: str, prefix: str = "") -> dict[str, int]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}


def _with(options: TransferOptions, **changes) -> TransferOptions:
    return TransferOptions(**{**options.__dict__, **changes})


def test_push_uploads_every_file_byte_for_byte_with_directory_markers(repo, bucket, s3, options):
    summary = push(repo, f"s3://{bucket}/tiny/v1", options)
    keys = _keys(s3, bucket)
    for path, digest in _tree(repo).items():
        body = s3.get_object(Bucket=bucket, Key=f"tiny/v1/{path}")["Body"].read()
        assert __import__("hashlib").sha256(body).hexdigest() == digest, path
    assert keys["tiny/v1/ensemble/1/"] == 0  # Triton needs the empty version folder to exist
    assert summary.files_moved == len(_tree(repo)) - 1 and summary.files_skipped == 0
    assert summary.bytes_moved == sum(p.stat().st_size for p in repo.rglob("*") if p.is_file() and p.name != MANIFEST)


def test_pull_gives_a_byte_identical_tree_and_a_second_push_moves_nothing(repo, bucket, options, tmp_path):
    push(repo, f"s3://{bucket}/r", options)
    again = push(repo, f"s3://{bucket}/r", options)
    assert again.files_moved == 0 and again.bytes_moved == 0 and again.files_skipped == len(_tree(repo)) - 1

    pulled = pull(f"s3://{bucket}/r", tmp_path / "pulled", options)
    assert _tree(tmp_path / "pulled") == _tree(repo)
    assert (tmp_path / "pulled/ensemble/1").is_dir()
    assert pulled.files_moved == len(_tree(repo)) - 1
    assert pull(f"s3://{bucket}/r", tmp_path / "pulled", options).bytes_moved == 0


def test_a_changed_file_is_the_only_one_that_moves_both_ways(repo, bucket, options, tmp_path):
    push(repo, f"s3://{bucket}/r", options)
    pull(f"s3://{bucket}/r", tmp_path / "copy", options)
    (repo / "preprocessing/1/model.py").write_text("# changed\n")
    summary = push(repo, f"s3://{bucket}/r", options)
    assert summary.moved == ["preprocessing/1/model.py"] and summary.bytes_moved == len("# changed\n")
    back = pull(f"s3://{bucket}/r", tmp_path / "copy", options)
    assert back.moved == ["preprocessing/1/model.py"]
    assert (tmp_path / "copy/preprocessing/1/model.py").read_text() == "# changed\n"


def test_a_file_whose_size_changed_is_hashed_once_while_it_uploads(repo, bucket, s3, options, monkeypatch):
    push(repo, f"s3://{bucket}/r", options)
    grown = repo / "preprocessing/1/model.py"
    grown.write_text(grown.read_text() + "# grown\n")
    hashed = []
    real = stage_cache_module.sha256_file

    def spy(path):
        hashed.append((path.name, threading.current_thread() is threading.main_thread()))
        return real(path)

    monkeypatch.setattr(stage_cache_module, "sha256_file", spy)
    summary = push(repo, f"s3://{bucket}/r", options)
    # Its size differs from the remote copy's, so it must move: hashed by its upload worker, not before planning.
    assert summary.moved == ["preprocessing/1/model.py"] and hashed == [("model.py", False)]
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"r/{MANIFEST}")["Body"].read())
    assert manifest["files"]["preprocessing/1/model.py"]["sha256"] == sha256_file(grown)
    stored = s3.head_object(Bucket=bucket, Key="r/preprocessing/1/model.py")["Metadata"]["sha256"]
    assert stored == sha256_file(grown)


def test_delete_removes_a_remote_extra_only_when_asked(repo, bucket, s3, options):
    push(repo, f"s3://{bucket}/r", options)
    s3.put_object(Bucket=bucket, Key="r/stale/old.bin", Body=b"old")
    assert push(repo, f"s3://{bucket}/r", options).deleted == []
    assert "r/stale/old.bin" in _keys(s3, bucket)
    assert push(repo, f"s3://{bucket}/r", _with(options, delete=True)).deleted == ["stale/old.bin"]
    keys = _keys(s3, bucket)
    assert "r/stale/old.bin" not in keys and f"r/{MANIFEST}" in keys and "r/ensemble/1/" in keys


def test_an_unchanged_push_trusts_the_manifest_and_check_remote_repairs_what_vanished(
    repo, bucket, s3, options, monkeypatch
):
    push(repo, f"s3://{bucket}/r", options)
    s3.delete_object(Bucket=bucket, Key="r/postprocessing/1/model.py")  # removed behind tritonrepo's back
    listed = []
    real_list = transfer_module.S3Store.list
    monkeypatch.setattr(transfer_module.S3Store, "list", lambda self: listed.append(1) or real_list(self))

    fast = push(repo, f"s3://{bucket}/r", options)
    assert listed == [] and fast.files_moved == 0  # the identical manifest is proof enough: nothing listed
    assert "r/postprocessing/1/model.py" not in _keys(s3, bucket)

    checked = push(repo, f"s3://{bucket}/r", _with(options, check_remote=True))
    assert listed == [1] and checked.moved == ["postprocessing/1/model.py"]
    body = s3.get_object(Bucket=bucket, Key="r/postprocessing/1/model.py")["Body"].read()
    assert body == (repo / "postprocessing/1/model.py").read_bytes()


def test_a_missing_directory_marker_defeats_the_fast_path(repo, bucket, s3, options):
    push(repo, f"s3://{bucket}/r", options)
    s3.delete_object(Bucket=bucket, Key="r/ensemble/1/")
    push(repo, f"s3://{bucket}/r", options)
    assert "r/ensemble/1/" in _keys(s3, bucket)


def test_a_second_pull_reads_no_local_file(repo, bucket, options, tmp_path, monkeypatch):
    push(repo, f"s3://{bucket}/r", options)
    pull(f"s3://{bucket}/r", tmp_path / "copy", options)
    hashed = []
    real = stage_cache_module.sha256_file
    monkeypatch.setattr(stage_cache_module, "sha256_file", lambda path: hashed.append(path) or real(path))
    again = pull(f"s3://{bucket}/r", tmp_path / "copy", options)
    assert again.files_moved == 0 and hashed == []  # digests remembered from the download, by size and mtime
    (tmp_path / "copy/preprocessing/1/model.py").write_text("# edited locally\n")
    repaired = pull(f"s3://{bucket}/r", tmp_path / "copy", options)
    assert repaired.moved == ["preprocessing/1/model.py"]
    assert _tree(tmp_path / "copy") == _tree(repo)


def test_pull_delete_removes_extra_files_and_the_folders_they_leave_empty(repo, bucket, options, tmp_path):
    push(repo, f"s3://{bucket}/r", options)
    target = tmp_path / "copy"
    pull(f"s3://{bucket}/r", target, options)
    (target / "extra/deep").mkdir(parents=True)
    (target / "extra/deep/file.txt").write_text("x")
    (target / "empty_extra").mkdir()
    assert pull(f"s3://{bucket}/r", target, options).deleted == []
    assert (target / "extra/deep/file.txt").exists()
    summary = pull(f"s3://{bucket}/r", target, _with(options, delete=True))
    assert summary.deleted == ["extra/deep/file.txt"]
    assert not (target / "extra").exists() and not (target / "empty_extra").exists()
    assert (target / "ensemble/1").is_dir()  # the remote's own empty folder stays
    assert _tree(target) == _tree(repo)


def test_dry_run_moves_nothing(repo, bucket, s3, options, tmp_path):
    summary = push(repo, f"s3://{bucket}/r", _with(options, dry_run=True))
    assert summary.dry_run and summary.files_moved > 0 and _keys(s3, bucket) == {}
    push(repo, f"s3://{bucket}/r", options)
    dry_pull = pull(f"s3://{bucket}/r", tmp_path / "dry", _with(options, dry_run=True))
    assert dry_pull.files_moved > 0 and not (tmp_path / "dry").exists()


def test_multipart_uploads_and_downloads_large_files(tmp_path, bucket, s3, options):
    (tmp_path / "big").mkdir()
    (tmp_path / "big/weights.bin").write_bytes(bytes(range(256)) * (12 * 4096 + 7))  # ~12 MiB, 3 parts of 5 MiB
    push(tmp_path / "big", f"s3://{bucket}/big", _with(options, part_size=5 << 20))
    head = s3.head_object(Bucket=bucket, Key="big/weights.bin", ChecksumMode="ENABLED")
    assert head["ETag"].strip('"').endswith("-3")  # multipart ETags end in -<number of parts>
    assert head.get("ChecksumCRC32")  # every part carried a CRC32 the store checked on arrival
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"big/{MANIFEST}")["Body"].read())
    assert manifest["files"]["weights.bin"]["sha256"] == sha256_file(tmp_path / "big/weights.bin")
    pull(f"s3://{bucket}/big", tmp_path / "back", _with(options, part_size=5 << 20))
    assert _tree(tmp_path / "back") == {**_tree(tmp_path / "big"), MANIFEST: sha256_file(tmp_path / "back" / MANIFEST)}


def test_a_corrupted_object_fails_the_pull_and_leaves_no_file(repo, bucket, s3, options, tmp_path):
    push(repo, f"s3://{bucket}/r", options)
    s3.put_object(Bucket=bucket, Key="r/postprocessing/1/model.py", Body=b"tampered")
    with pytest.raises(IntegrityError, match="r/postprocessing/1/model.py"):
        pull(f"s3://{bucket}/r", tmp_path / "out", options)
    folder = tmp_path / "out/postprocessing/1"
    assert not (folder / "model.py").exists()
    assert not [p for p in (tmp_path / "out").rglob("*") if p.name.endswith(transfer_module.PART_SUFFIX)]
    for path, digest in _tree(tmp_path / "out").items():  # whatever did land is verified content
        assert digest == sha256_file(repo / path), path
    assert not (tmp_path / "out" / MANIFEST).exists()  # an incomplete pull has no manifest


def test_a_manifest_escaping_the_target_is_refused_before_any_write(bucket, s3, options, tmp_path):
    files = {"ok.txt": {"size": 2, "sha256": "0" * 64}, "../../etc/x": {"size": 1, "sha256": "1" * 64}}
    s3.put_object(Bucket=bucket, Key="evil/ok.txt", Body=b"ok")
    s3.put_object(Bucket=bucket, Key=f"evil/{MANIFEST}", Body=json.dumps({"files": files}).encode())
    before = {p for p in tmp_path.rglob("*")}
    with pytest.raises(UnsafeKeyError, match=r"\.\./\.\./etc/x"):
        pull(f"s3://{bucket}/evil", tmp_path / "a" / "b" / "target", options)
    assert {p for p in tmp_path.rglob("*")} == before


def test_wrong_credentials_are_an_auth_error_without_the_secret(endpoint, bucket, repo, options, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0").raise_for_status()  # moto checks keys from now on
    try:
        with pytest.raises(StorageAuthError) as caught:
            push(repo, f"s3://{bucket}/r", options)
    finally:
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"inf").raise_for_status()
    assert SECRET not in str(caught.value) and "AKIAWRONGKEY" not in str(caught.value)
    assert caught.value.exit_code == 8


def test_no_credentials_at_all_is_an_auth_error(repo, bucket, options, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StorageAuthError, match="no AWS credentials"):
        push(repo, f"s3://{bucket}/r", options)


def test_a_missing_bucket_and_an_unreachable_endpoint_are_named(repo, options):
    with pytest.raises(BucketNotFoundError, match="no-such-bucket-here"):
        push(repo, "s3://no-such-bucket-here/r", options)
    unreachable = _with(options, endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StorageError, match=r"cannot reach http://127.0.0.1:\d+ to list"):
        pull("s3://any-bucket/r", Path("/nonexistent"), unreachable)


def test_an_interrupted_push_has_no_manifest_and_a_rerun_completes_it(repo, bucket, s3, options, monkeypatch):
    calls = []
    real_upload = transfer_module.upload_one

    def failing_upload(store, root, path, entry, callback):
        calls.append(path)
        if len(calls) == 3:
            raise StorageError("simulated network failure")
        real_upload(store, root, path, entry, callback)

    monkeypatch.setattr(transfer_module, "upload_one", failing_upload)
    with pytest.raises(StorageError, match="simulated"):
        push(repo, f"s3://{bucket}/r", _with(options, concurrency=1))
    assert f"r/{MANIFEST}" not in _keys(s3, bucket)
    uploaded = [k for k in _keys(s3, bucket) if not k.endswith("/")]
    assert 2 <= len(uploaded) < len(_tree(repo)) - 1  # the worker may start one more before the failure cancels it

    monkeypatch.setattr(transfer_module, "upload_one", real_upload)
    done = push(repo, f"s3://{bucket}/r", options)
    assert done.files_skipped == len(uploaded)  # what did finish is recognised by its stored sha256, not resent
    assert done.files_moved == len(_tree(repo)) - 1 - len(uploaded)
    assert f"r/{MANIFEST}" in _keys(s3, bucket)
    assert push(repo, f"s3://{bucket}/r", options).bytes_moved == 0


def test_cli_push_and_pull_with_endpoint_url_and_json(repo, bucket, endpoint, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["-q", "push", str(repo), f"s3://{bucket}/cli", "--endpoint-url", endpoint, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["action"] == "push" and summary["files_moved"] == len(_tree(repo)) - 1 and "mb_per_s" in summary

    target = tmp_path / "cli-pulled"
    result = runner.invoke(cli, ["-q", "pull", f"s3://{bucket}/cli", str(target), "--endpoint-url", endpoint])
    assert result.exit_code == 0, result.output
    assert "downloaded" in result.stdout and _tree(target) == _tree(repo)

    result = runner.invoke(cli, ["-q", "pull", "s3://no-such-bucket-cli/x", str(target), "--endpoint-url", endpoint])
    assert result.exit_code == 8 and "does not exist" in result.output
