"""The one boundary to TensorRT-LLM: convert and build as subprocesses, logged, checked, and swapped in atomically."""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from tritonrepo.errors import EngineBuildError
from tritonrepo.trtllm.commands import convert_request, trtllm_build_args
from tritonrepo.trtllm.spec import EngineBuildSpec
from tritonrepo.trtllm.versions import container_for, features, newest_container

LineSink = Callable[[str], None]
TAIL_LINES = 15
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# The source checkout holding tritonrepo, put first on the workers' PYTHONPATH so they run this very code even
# where tritonrepo is not installed for `python`. Never a site-packages folder: that would shadow the
# interpreter's own packages.
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
_SOURCE_ROOT = None if _PACKAGE_ROOT.name in ("site-packages", "dist-packages") else _PACKAGE_ROOT


class TensorRTLLM(Protocol):
    """What tritonrepo needs from TensorRT-LLM. InstalledTensorRTLLM is the real one."""

    def version(self) -> str: ...

    def convert(self, spec: EngineBuildSpec, on_line: LineSink) -> None: ...

    def build(self, spec: EngineBuildSpec, on_line: LineSink) -> None: ...


def _container_hint(version: str | None) -> str:
    image = container_for(version) if version else None
    if image:
        return f"Run it inside the NGC container {image}, which ships TensorRT-LLM {version}."
    newest = newest_container()
    return f"Run it inside an NGC container such as {newest.image} (TensorRT-LLM {newest.trtllm})."


def partial_dir(final: Path) -> Path:
    """Where a stage writes before its output is renamed into place."""
    return final.with_name(final.name + ".partial")


class InstalledTensorRTLLM:
    """TensorRT-LLM as installed for `python` (the NGC container's), driven through subprocesses."""

    def __init__(self, python: str = sys.executable, trtllm_build: str = "trtllm-build") -> None:
        self.python = python
        self.trtllm_build = trtllm_build
        self._version: str | None = None

    # --- the interface ---------------------------------------------------------------------------------------------
    def version(self) -> str:
        """The installed TensorRT-LLM version, read from the wheel metadata of `python` without importing it."""
        if self._version is None:
            code = "from tritonrepo.trtllm.versions import installed_version as v; print(v() or '')"
            try:
                done = subprocess.run(
                    [self.python, "-c", code], env=self._env(), capture_output=True, text=True, timeout=120
                )
            except (OSError, subprocess.TimeoutExpired) as error:
                raise EngineBuildError(f"Cannot run {self.python}: {error}.", hint=_container_hint(None)) from error
            found = done.stdout.strip().splitlines()[-1:] if done.returncode == 0 else []
            if not found or not found[0]:
                raise EngineBuildError(f"TensorRT-LLM is not installed for {self.python}.", hint=_container_hint(None))
            self._version = found[0]
        return self._version

    def convert(self, spec: EngineBuildSpec, on_line: LineSink) -> None:
        spec = _absolute(spec)
        version = self.version()
        staging = _prepare(spec.checkpoint_dir, "checkpoint")
        request_file = staging.with_name(staging.name + ".request.json")
        request_file.write_text(json.dumps(convert_request(spec, checkpoint_dir=staging), indent=2))
        argv = [self.python, "-m", "tritonrepo.trtllm.convert_worker", str(request_file)]
        try:
            self._run("checkpoint conversion", argv, spec, version, on_line)
            missing = _missing_files(staging, "safetensors", spec.world_size)
            if missing:
                raise EngineBuildError(
                    f"Checkpoint conversion finished but {staging} lacks {', '.join(missing)}.",
                    log_path=str(spec.log_path),
                )
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            request_file.unlink(missing_ok=True)
        _swap_in(staging, spec.checkpoint_dir)

    def build(self, spec: EngineBuildSpec, on_line: LineSink) -> None:
        spec = _absolute(spec)
        version = self.version()
        executable = shutil.which(self.trtllm_build)
        if executable is None:
            raise EngineBuildError(
                f"{self.trtllm_build} is not on PATH, so engines cannot be built here.", hint=_container_hint(version)
            )
        if _missing_files(spec.checkpoint_dir, "safetensors", spec.world_size):
            raise EngineBuildError(
                f"{spec.checkpoint_dir} is not a complete TensorRT-LLM checkpoint for {spec.world_size} rank(s).",
                hint="Convert the Hugging Face checkpoint first.",
            )
        staging = _prepare(spec.engine_dir, "engine")
        argv = [executable, *trtllm_build_args(spec, version, output_dir=staging)]
        try:
            # cwd: files trtllm-build writes relative to it (the timing cache, model.cache) stay with the engines.
            self._run("trtllm-build", argv, spec, version, on_line, cwd=staging)
            missing = _missing_files(staging, "engine", spec.world_size)
            if missing:
                raise EngineBuildError(
                    f"trtllm-build exited 0 but {staging} lacks {', '.join(missing)}; "
                    f"world size {spec.world_size} needs one engine per rank.",
                    log_path=str(spec.log_path),
                )
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _swap_in(staging, spec.engine_dir)

    # --- processes ------------------------------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if _SOURCE_ROOT is not None:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_SOURCE_ROOT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"  # progress lines arrive as they are printed, not at exit
        return env

    def _run(
        self,
        stage: str,
        argv: list[str],
        spec: EngineBuildSpec,
        version: str,
        on_line: LineSink,
        cwd: Path | None = None,
    ) -> None:
        """Run one stage: every line to the log (appended) and to on_line; a non-zero exit raises with the tail."""
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        with spec.log_path.open("a", encoding="utf-8") as log:
            log.write(f"==> {stage} (TensorRT-LLM {version}): {' '.join(argv)}\n")
            note = features(version).note
            if note:  # an untested version: say so where the user looks when it breaks
                log.write(f"note: {note}\n")
                on_line(f"note: {note}")
            log.flush()
            try:
                process = subprocess.Popen(
                    argv,
                    env=self._env(),
                    cwd=cwd,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    text=True,
                    encoding="utf-8",
                    errors="replace",
                    bufsize=1,
                )
            except OSError as error:
                raise EngineBuildError(f"{stage} could not start: {error}.", hint=_container_hint(version)) from error
            try:
                assert process.stdout is not None
                for raw in process.stdout:
                    line = _ANSI.sub("", raw.rstrip("\r\n"))
                    log.write(line + "\n")
                    log.flush()
                    if line.strip():
                        tail.append(line)
                    on_line(line)
                code = process.wait()
            finally:
                if process.poll() is None:  # interrupted (Ctrl-C) or on_line raised: leave no build running
                    process.terminate()
                    try:
                        process.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
            log.write(f"<== {stage} exit code {code}\n")
        if code != 0:
            lines = "\n".join(f"  {line}" for line in tail) or "  (no output)"
            raise EngineBuildError(
                f"{stage} failed with exit code {code}; its partial output was removed. Last lines:\n{lines}\n",
                log_path=str(spec.log_path),
            )


def _absolute(spec: EngineBuildSpec) -> EngineBuildSpec:
    """The same spec with absolute paths, so that subprocesses may run in any folder."""
    paths = ("hf_dir", "checkpoint_dir", "engine_dir", "log_path")
    return dataclasses.replace(spec, **{name: Path(getattr(spec, name)).absolute() for name in paths})


# --- staging folders -------------------------------------------------------------------------------------------------
def _prepare(final: Path, what: str) -> Path:
    """A fresh `<final>.partial`; refuses to later replace a `final` that is not a TensorRT-LLM output folder."""
    if final.exists() and (not final.is_dir() or (any(final.iterdir()) and not (final / "config.json").is_file())):
        raise EngineBuildError(
            f"{final} exists and is not a TensorRT-LLM {what} folder (no config.json); not replacing it.",
            hint="Choose another folder or remove it.",
        )
    staging = partial_dir(final)
    shutil.rmtree(staging, ignore_errors=True)  # left over from an interrupted run
    staging.parent.mkdir(parents=True, exist_ok=True)
    staging.mkdir()
    return staging


def _missing_files(folder: Path, suffix: str, world_size: int) -> list[str]:
    """config.json plus rank{i}.<suffix> for every rank: what TensorRT-LLM writes and what its loaders read."""
    expected = ["config.json", *(f"rank{rank}.{suffix}" for rank in range(world_size))]
    return [name for name in expected if not (folder / name).is_file()]


def _swap_in(staging: Path, final: Path) -> None:
    """Replace final with staging; the old output is moved aside first and removed only after the rename."""
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)
