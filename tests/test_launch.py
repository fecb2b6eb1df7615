"""`tritonrepo serve` decisions that need no server: which repository, and refusals before anything starts."""

from __future__ import annotations

import os
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
            serve_repository(ServeOptions(repository=repository, openai_port=port))
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
        serve_repository(ServeOptions(repository=repository))
    assert not (tmp_path / "engines.tritonserver.log").exists()
