"""`tritonrepo serve` decisions that need no server: which repository, and refusals before anything starts."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import pytest

from tritonrepo.errors import PortInUseError, ServerError
from tritonrepo.repository.manifest import MANIFEST
from tritonrepo.serving.launch import ServeOptions, default_repository, serve_repository


def _repository(root: Path, name: str, age_s: float = 0) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / MANIFEST).write_text("{}")
    stamp = time.time() - age_s
    os.utime(path / MANIFEST, (stamp, stamp))
    return path


def test_the_only_repository_under_build_is_the_default(tmp_path):
    only = _repository(tmp_path, "tiny-llama")
    (tmp_path / "not-a-repository").mkdir()
    assert default_repository(tmp_path) == only


def test_with_several_repositories_the_newest_is_served(tmp_path):
    _repository(tmp_path, "older", age_s=100)
    newest = _repository(tmp_path, "newer")
    assert default_repository(tmp_path) == newest


def test_no_repository_says_how_to_make_one(tmp_path):
    with pytest.raises(ServerError, match="tritonrepo build --model tiny-llama"):
        default_repository(tmp_path / "build")


def test_a_missing_repository_folder_is_refused(tmp_path):
    with pytest.raises(ServerError, match="is not a directory"):
        serve_repository(ServeOptions(repository=tmp_path / "nope"))


def test_a_taken_openai_port_is_refused_before_tritonserver_starts(tmp_path):
    repository = _repository(tmp_path, "repo")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"port {port} .*--openai-port"):
            # (the folder is no repository: trusted, so the port check is what stops it)
            serve_repository(ServeOptions(repository=repository, openai_port=port, trust_repository=True))
    assert not (tmp_path / "repo.tritonserver.log").exists()  # nothing was started


def test_engines_are_checked_against_this_machine_before_tritonserver_starts(tmp_path):
    import json

    from tritonrepo.errors import EngineMismatchError

    repository = tmp_path / "engines"
    repository.mkdir()
    record = {"tensorrt_llm_version": "0.17.0", "gpu_name": "H100-80GB", "compute_capability": [9, 0],
              "tp_size": 1, "pp_size": 1, "world_size": 1}  # fmt: skip
    (repository / MANIFEST).write_text(json.dumps({"runtime": "tensorrtllm", "engine": record}))
    with pytest.raises(EngineMismatchError, match="need a GPU"):  # this machine has none
        serve_repository(ServeOptions(repository=repository, trust_repository=True))  # no models, trusted
    assert not (tmp_path / "engines.tritonserver.log").exists()


# --- serve validates first (issue 12, items 11 and 14) --------------------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    from tritonrepo.planning.build import build
    from tritonrepo.planning.request import DeploymentRequest

    return build(DeploymentRequest(model="tiny-llama", output=tmp_path_factory.mktemp("built") / "tiny-llama")).path


class _Started(Exception):
    """Raised where serve would find and start tritonserver: everything before it has passed."""


@pytest.fixture
def no_server(monkeypatch):
    from tritonrepo.serving import launch

    def refuse(*_args, **_kwargs):
        raise _Started

    monkeypatch.setattr(launch, "find_tritonserver", refuse)


def test_a_folder_that_is_not_a_repository_fails_like_validate_before_anything_starts(tmp_path, capsys, no_server):
    from tritonrepo.errors import ValidationError

    folder = tmp_path / "photos"
    (folder / "2024").mkdir(parents=True)
    (folder / "2024" / "beach.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(ValidationError) as raised:
        serve_repository(ServeOptions(repository=folder, openai_port=0))
    assert raised.value.exit_code == 4
    assert "2024: model directory has no config.pbtxt" in str(raised.value)
    assert "--trust-repository" in str(raised.value)
    said = capsys.readouterr().err
    assert "ready" not in said and "endpoint" not in said.lower() and "Starting" not in said
    assert not (tmp_path / "photos.tritonserver.log").exists()


def test_a_changed_model_file_stops_serve_unless_the_repository_is_trusted(built, tmp_path, capsys, no_server):
    from tritonrepo.errors import ValidationError

    repository = Path(shutil.copytree(built, tmp_path / "repo"))
    code = repository / "postprocessing" / "1" / "model.py"
    code.write_text(code.read_text() + "\nimport os  # not what was built\n")
    with pytest.raises(ValidationError, match="postprocessing/1/model.py: changed since the build"):
        serve_repository(ServeOptions(repository=repository, openai_port=0))
    capsys.readouterr()
    with pytest.raises(_Started):  # trusted: it goes on to start tritonserver
        serve_repository(ServeOptions(repository=repository, openai_port=0, trust_repository=True))
    warned = capsys.readouterr().err
    assert "WARNING: serving" in warned and "--trust-repository" in warned
    assert "postprocessing/1/model.py: changed since the build" in warned


def test_a_clean_repository_goes_on_to_start_tritonserver(built, no_server):
    with pytest.raises(_Started):
        serve_repository(ServeOptions(repository=built, openai_port=0))


def test_serve_help_documents_the_trust_flag():
    from click.testing import CliRunner

    from tritonrepo.cli.main import cli

    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert "--trust-repository" in result.output and "warning" in result.output


def test_a_pulled_s3_copy_is_validated_before_anything_starts(monkeypatch, no_server):
    """The local copy serve pulls is what Triton (or the front end, with --direct) reads: it is checked the same way."""
    import tritonrepo.storage as storage
    from tritonrepo.errors import ValidationError
    from tritonrepo.storage.sync import summarize

    def pull_something_else(url, target, options):
        (Path(target) / "loose-folder").mkdir(parents=True, exist_ok=True)
        return summarize("pull", str(url), str(target), storage.sync.Plan(), dry_run=False, seconds=0.0)

    monkeypatch.setattr(storage, "pull", pull_something_else)
    with pytest.raises(ValidationError, match="loose-folder: model directory has no config.pbtxt"):
        serve_repository(ServeOptions(repository="s3://bucket/prefix", openai_port=0))
