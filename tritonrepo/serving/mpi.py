"""Launching tritonserver for models that span several GPUs: under mpirun, in one of two shapes.

Engines (tensorrtllm backend), leader mode, the shape of tensorrtllm_backend's scripts/launch_triton_server.py: one
tritonserver rank per GPU, each with its own Python-backend shared-memory prefix; ranks other than 0 load only the
generation model (the other models live on the leader); all ranks take the same ports, which only the leader opens,
because the tensorrtllm model on the other ranks never finishes loading: those ranks serve the leader over MPI.

The llmapi model (TensorRT-LLM's PyTorch backend) goes through TensorRT-LLM's `trtllm-llmapi-launch` under mpirun,
as upstream's CI launches it for tensor parallel > 1: the launcher runs tritonserver on rank 0 only (with the MPI
variables cleared, so the model's LLM() reaches the other ranks through the launcher's proxy), and turns every other
rank into an LLM API worker. A plain tritonserver there fails to spawn its workers (MPI_ERR_SPAWN).
"""

from __future__ import annotations

import shutil

from tritonrepo.errors import ServerNotFoundError

LLMAPI_LAUNCHER = "trtllm-llmapi-launch"
_CONTAINER_HINT = "the NGC tritonserver:<yy.mm>-trtllm-python-py3 container has it"


def find_mpirun(purpose: str = "serving engines that span several GPUs") -> str:
    found = shutil.which("mpirun")
    if not found:
        raise ServerNotFoundError(
            f"{purpose} needs mpirun, which is not on PATH",
            hint=f"Install OpenMPI ({_CONTAINER_HINT}).",
        )
    return found


def find_llmapi_launcher() -> str:
    found = shutil.which(LLMAPI_LAUNCHER)
    if not found:
        raise ServerNotFoundError(
            f"serving an llmapi model on several GPUs needs TensorRT-LLM's {LLMAPI_LAUNCHER}, which is not on PATH",
            hint=f"Serve it where TensorRT-LLM is installed ({_CONTAINER_HINT}).",
        )
    return found


def leader_mode_command(
    mpirun: str, rank_command: list[str], world_size: int, shm_prefix: str, generation_model: str = "tensorrt_llm"
) -> list[str]:
    """mpirun with one `-n 1 tritonserver ...` block per rank, blocks separated by ':'; each rank's Python backend
    regions are named `<shm_prefix><rank>_...`."""
    command = [mpirun, "--allow-run-as-root"]
    for rank in range(world_size):
        if rank:
            command.append(":")
        command += ["-n", "1", *rank_command, f"--backend-config=python,shm-region-prefix-name={shm_prefix}{rank}_"]
        if rank:
            command += ["--model-control-mode=explicit", f"--load-model={generation_model}"]
    return command


def llmapi_launch_command(mpirun: str, launcher: str, server_command: list[str], world_size: int) -> list[str]:
    """`mpirun -n N trtllm-llmapi-launch tritonserver ...`: rank 0 serves, ranks 1..N-1 are LLM API workers.
    --oversubscribe as upstream passes it: a rank per GPU may exceed the slots mpirun counts (cores, SLURM)."""
    return [mpirun, "--allow-run-as-root", "--oversubscribe", "-n", str(world_size), launcher, *server_command]
