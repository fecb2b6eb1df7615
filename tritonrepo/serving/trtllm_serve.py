"""`tritonrepo serve` on a trtllm-serve deployment (the PyTorch path's default): its serve.sh in the foreground.

trtllm-serve brings its own OpenAI-compatible endpoint, so no Triton and no front end of ours start here; the
`--serving triton` deployments go through serving/launch.py like every other Triton repository."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

from tritonrepo import progress
from tritonrepo.errors import ServerError, ServerNotFoundError
from tritonrepo.repository.manifest import read_manifest
from tritonrepo.serving.tritonserver import die_with_parent


def is_trtllm_serve_deployment(folder: Path) -> bool:
    manifest = read_manifest(folder) if folder.is_dir() else None
    return bool(manifest) and manifest.get("runtime") == "pytorch" and manifest.get("serving") == "trtllm-serve"


def serve_deployment(folder: Path) -> int:
    """Runs serve.sh until it exits or Ctrl-C/SIGTERM (passed on to trtllm-serve); returns its exit status."""
    manifest = read_manifest(folder)
    launch = manifest.get("launch", {})
    layout = manifest.get("plan", {}).get("llmapi", {}).get("sizing", {})
    if not launch.get("single_node"):
        raise ServerError(
            f"{folder} spans {layout.get('nodes', 'several')} nodes; `tritonrepo serve` starts one",
            hint=f"Submit {folder}/{launch.get('slurm')} with sbatch, or run {folder}/{launch.get('mpirun')} "
            "with HOSTS set to the node names.",
        )
    if shutil.which("trtllm-serve") is None:
        raise ServerNotFoundError(
            "this deployment runs trtllm-serve, which is not on PATH",
            hint=f"Run it inside {launch.get('image')} (docker run --gpus all --ipc=host -v {folder}:{folder} ...).",
        )
    script = folder / launch["single_node"]
    progress.say(
        f"==> trtllm-serve on {layout.get('gpus')}x {layout.get('gpu')} ({script}); its OpenAI endpoint listens on "
        f"port {launch.get('port')}"
    )
    # serve.sh ends in `exec trtllm-serve`, so the parent-death signal armed here reaches trtllm-serve itself: a
    # killed `tritonrepo serve` leaves no server holding the GPUs and the port.
    process = subprocess.Popen(die_with_parent(["bash", str(script)], signal.SIGTERM))
    previous = signal.signal(signal.SIGTERM, lambda *_: process.terminate())
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.send_signal(signal.SIGINT)
        return process.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
