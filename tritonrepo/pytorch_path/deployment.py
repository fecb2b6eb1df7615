"""`tritonrepo build` for the PyTorch path: the plan's files, written atomically into one folder with a manifest.

The folder holds the extra LLM-API options, serve.sh (one node), launch-mpirun.sh and launch-slurm.sbatch (any
number of nodes) and, with --serving triton, the llmapi model `tensorrt_llm/` beside them, so the folder itself is
the Triton model repository (Triton ignores the files at its top level)."""

from __future__ import annotations

import os
from pathlib import Path

from tritonrepo import __version__, progress
from tritonrepo.planning.plan import DeploymentPlan
from tritonrepo.pytorch_path import launch_files
from tritonrepo.pytorch_path.llm_options import llm_args, options_yaml
from tritonrepo.pytorch_path.triton_repo import render_llmapi_repository
from tritonrepo.repository.integrity import remember_large_files
from tritonrepo.repository.manifest import (
    FORMAT,
    file_digests,
    hashing_with_progress,
    library_versions,
    now_utc,
    write_manifest,
)
from tritonrepo.repository.writer import place_files, staged_directory

EXECUTABLE = (launch_files.SERVE_SCRIPT, launch_files.MPIRUN_SCRIPT, launch_files.SLURM_SCRIPT)
CHECKPOINT_DIR = "tensorrt_llm/1/checkpoint"  # a local checkpoint of the llmapi model, linked into its own folder


def deployment_files(plan: DeploymentPlan) -> dict[str, str]:
    """{relative path: text}. Pure, but for asking whether the model is a local checkpoint folder."""
    llmapi = plan.llmapi
    assert llmapi is not None, "a PyTorch-path plan carries its llmapi plan"
    files = {
        launch_files.OPTIONS_FILE: options_yaml(llmapi),
        launch_files.MPIRUN_SCRIPT: launch_files.mpirun_script(llmapi),
        launch_files.SLURM_SCRIPT: launch_files.slurm_script(llmapi),
    }
    if llmapi.sizing.nodes == 1:
        files[launch_files.SERVE_SCRIPT] = launch_files.serve_script(llmapi)
    if llmapi.serving == "triton":
        args = llm_args(llmapi)
        if _local_checkpoint(llmapi.model) is not None:
            args["model"] = CHECKPOINT_DIR  # linked in by write_deployment; model.py resolves it against the root
        files.update(render_llmapi_repository(args, triton_max_batch_size=llmapi.max_batch_size))
    return files


def _local_checkpoint(model: str) -> Path | None:
    """The checkpoint folder the llmapi model loads, when it is local (--download, or --model FOLDER)."""
    path = Path(model)
    return path if path.is_absolute() and path.is_dir() else None


def _hashed(root: Path) -> dict:
    with hashing_with_progress(root, "sha256 of the deployment's files") as digest_of:
        return file_digests(root, digest_of)


def _remember_digests(target: Path, files: dict) -> None:
    """So the first serve's integrity check reads no weight file again (a linked checkpoint may be hundreds of GB)."""
    from tritonrepo.planning.stage_cache import FileDigests
    from tritonrepo.source.resolve import cache_root

    remember_large_files(FileDigests(cache_root() / "file-digests.json"), target, files)


def write_deployment(plan: DeploymentPlan, target: Path, *, model: dict) -> dict:
    """Writes the folder (replacing an earlier build of ours, never anything else); returns its manifest."""
    llmapi = plan.llmapi
    files = deployment_files(plan)
    with progress.step(f"Writing the {llmapi.serving} deployment into {target}"), staged_directory(target) as staging:
        for relative, text in files.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            if relative in EXECUTABLE:
                os.chmod(path, 0o755)
        if llmapi.serving == "triton":
            from tritonrepo.repository.validate import check_repository

            if (checkpoint := _local_checkpoint(llmapi.model)) is not None:
                # Inside the repository, so the model serves what it was built with and push/pull carry it.
                progress.say(f"    linking {checkpoint} into {CHECKPOINT_DIR} (copied when on another file system)")
                place_files(checkpoint, ("*",), staging / CHECKPOINT_DIR)
            check_repository(staging, location=target)
        manifest = {
            "format": FORMAT,
            "created": now_utc(),
            "tool": {"name": "tritonrepo", "version": __version__},
            "model": model,
            "reasoning_parser": llmapi.reasoning_parser,
            "runtime": "pytorch",
            "runtime_reason": plan.reason,
            "serving": llmapi.serving,
            "launch": {
                "single_node": launch_files.SERVE_SCRIPT if llmapi.sizing.nodes == 1 else None,
                "mpirun": launch_files.MPIRUN_SCRIPT,
                "slurm": launch_files.SLURM_SCRIPT,
                "image": llmapi.image,
                "port": llmapi.port,
            },
            "limits": {
                "max_batch_size": plan.limits.max_batch_size,
                "max_input_len": plan.limits.max_input_len,
                "max_seq_len": plan.limits.max_seq_len,
            },
            "plan": plan.as_dict(),
            "versions": library_versions(),
            "files": _hashed(staging),
        }
        if llmapi.serving == "triton":
            manifest["entry_points"] = ["tensorrt_llm"]
            manifest["default_entry_point"] = "tensorrt_llm"
            manifest["parameters"] = {"decoupled_mode": True}  # the llmapi model streams; the front end reads this
        write_manifest(staging, manifest)
    _remember_digests(target, manifest["files"])
    sizing = llmapi.sizing
    how = (
        f"`tritonrepo serve {target}` (or {target}/{launch_files.SERVE_SCRIPT})"
        if sizing.nodes == 1
        else f"{target}/{launch_files.SLURM_SCRIPT} (sbatch) or {target}/{launch_files.MPIRUN_SCRIPT}"
    )
    progress.say(f"Wrote {target}: {sizing.gpus}x {sizing.gpu} over {sizing.nodes} node(s); launch with {how}.")
    return manifest
