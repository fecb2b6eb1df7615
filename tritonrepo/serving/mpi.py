"""Leader-mode launch for engines that span several GPUs: one tritonserver rank per GPU under mpirun.

The shape follows tensorrtllm_backend's scripts/launch_triton_server.py: every rank gets its own Python-backend
shared-memory prefix; ranks other than 0 load only the generation model (the other models live on the leader);
all ranks take the same ports, which only the leader opens, because the tensorrtllm model on the other ranks never
finishes loading: those ranks serve the leader over MPI.
"""

from __future__ import annotations

import shutil

from tritonrepo.errors import ServerNotFoundError


def find_mpirun() -> str:
    found = shutil.which("mpirun")
    if not found:
        raise ServerNotFoundError(
            "these engines span several GPUs, and serving them needs mpirun, which is not on PATH",
            hint="Install OpenMPI (the NGC tritonserver:<yy.mm>-trtllm-python-py3 container has it).",
        )
    return found


def leader_mode_command(
    mpirun: str, rank_command: list[str], world_size: int, generation_model: str = "tensorrt_llm"
) -> list[str]:
    """mpirun with one `-n 1 tritonserver ...` block per rank, blocks separated by ':'."""
    command = [mpirun, "--allow-run-as-root"]
    for rank in range(world_size):
        if rank:
            command.append(":")
        command += ["-n", "1", *rank_command, f"--backend-config=python,shm-region-prefix-name=prefix{rank}_"]
        if rank:
            command += ["--model-control-mode=explicit", f"--load-model={generation_model}"]
    return command
