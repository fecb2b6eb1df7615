"""Packaging: every third-party import is declared where it is needed (.ci/check_imports.py, which `make test` also
runs on a separate install without the test extra; here only its declaration check, against this pyproject)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKER = ROOT / ".ci" / "check_imports.py"


def _check(pyproject: Path) -> subprocess.CompletedProcess:
    argv = [sys.executable, str(CHECKER), "--root", str(ROOT), "--pyproject", str(pyproject), "--no-import"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def test_every_import_is_declared_in_the_base_or_its_areas_extra():
    result = _check(ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout


def test_an_import_declared_only_by_the_test_extra_is_found(tmp_path):
    text = (ROOT / "pyproject.toml").read_text()
    assert '  "httpx>=0.27",' in text
    moved = text.replace('  "httpx>=0.27",', "").replace(
        'test = ["tritonrepo[all]", ', 'test = ["tritonrepo[all]", "httpx", '
    )
    (tmp_path / "pyproject.toml").write_text(moved)
    result = _check(tmp_path / "pyproject.toml")
    assert result.returncode == 1
    assert "tritonrepo/checks/smoke.py:" in result.stdout
    assert "imports httpx from httpx, which is not in the base dependencies (declared only in [test])" in result.stdout


def test_a_missing_optional_module_is_one_line_naming_the_extra(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from tritonrepo.cli.main import cli
    from tritonrepo.source import resolve

    def without_safetensors(name):  # as on `pip install tritonrepo`, without [runtime]
        raise ModuleNotFoundError("No module named 'safetensors'", name="safetensors")

    monkeypatch.setattr(resolve, "_embedded", without_safetensors)
    result = CliRunner().invoke(cli, ["-q", "build", "--model", "tiny-llama", "-o", str(tmp_path / "t")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr == (
        "Error: this needs the Python module 'safetensors', which the [runtime] extra installs: "
        'pip install "tritonrepo[runtime]"\n'
    )
