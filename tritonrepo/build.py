"""`tritonrepo build`: model source -> runtime and limits -> rendered, validated repository with its manifest."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tritonrepo import __version__, hardware, progress
from tritonrepo.plan import Limits, RuntimeChoice, choose_runtime, plan_limits
from tritonrepo.repository.manifest import FORMAT, file_digests, library_versions, now_utc, write_manifest
from tritonrepo.repository.params import ENTRY_POINTS, HF_MODEL_DIR, TOKENIZER_DIR, RepositoryParams
from tritonrepo.repository.render import render_repository
from tritonrepo.repository.validate import check_repository
from tritonrepo.repository.writer import place_files, staged_directory, write_rendered
from tritonrepo.source.resolve import CHECKPOINT_FILES, TOKENIZER_FILES, ModelSource, resolve_model

DEFAULT_OUTPUT_ROOT = Path("build")


@dataclass(frozen=True)
class BuildRequest:
    model: str
    runtime: str = "auto"
    output: Path | None = None
    revision: str | None = None
    max_batch_size: int | None = None
    max_input_len: int | None = None
    max_seq_len: int | None = None
    decoupled: bool = True
    offline: bool = False


@dataclass
class BuildResult:
    path: Path
    source: ModelSource
    runtime: RuntimeChoice
    limits: Limits
    manifest: dict = field(repr=False)


def build(request: BuildRequest) -> BuildResult:
    with progress.step(f"Resolving model {request.model}"):
        source = resolve_model(request.model, revision=request.revision, offline=request.offline)
        progress.say(f"    {source.kind} checkpoint at {source.path}")
    gpus = hardware.detect_gpus()
    choice = choose_runtime(
        request.runtime, tensorrt_llm_installed=hardware.tensorrt_llm_installed(), gpu_count=len(gpus)
    )
    progress.say(f"==> Runtime: {choice.runtime} ({choice.reason})")
    limits = plan_limits(
        source.config(),
        max_batch_size=request.max_batch_size,
        max_input_len=request.max_input_len,
        max_seq_len=request.max_seq_len,
    )
    params = RepositoryParams(
        runtime=choice.runtime,  # type: ignore[arg-type]
        max_input_len=limits.max_input_len,
        max_seq_len=limits.max_seq_len,
        triton_max_batch_size=limits.max_batch_size,
        max_num_sequences=limits.max_batch_size,
        decoupled_mode=request.decoupled,
    )
    target = request.output or DEFAULT_OUTPUT_ROOT / source.name
    with progress.step(f"Rendering the repository into {target}"), staged_directory(target) as staging:
        write_rendered(staging, render_repository(params))
        place_files(source.path, TOKENIZER_FILES, staging / TOKENIZER_DIR)
        if choice.runtime == "hf":
            place_files(source.path, CHECKPOINT_FILES, staging / HF_MODEL_DIR)
        check_repository(staging)
        manifest = _manifest(source, choice, limits, params, staging)
        write_manifest(staging, manifest)
    progress.say(f"Built {target} ({len(manifest['files'])} files, runtime {choice.runtime}).")
    return BuildResult(path=Path(target).resolve(), source=source, runtime=choice, limits=limits, manifest=manifest)


def _manifest(source: ModelSource, choice: RuntimeChoice, limits: Limits, params: RepositoryParams, root: Path) -> dict:
    return {
        "format": FORMAT,
        "created": now_utc(),
        "tool": {"name": "tritonrepo", "version": __version__},
        "model": {"name": source.name, "source": source.kind, "id": source.id, "revision": source.revision},
        "runtime": choice.runtime,
        "runtime_reason": choice.reason,
        "entry_points": list(ENTRY_POINTS),
        "default_entry_point": ENTRY_POINTS[0],
        "tokenizer_dir": TOKENIZER_DIR,
        "limits": {
            "max_batch_size": limits.max_batch_size,
            "max_input_len": limits.max_input_len,
            "max_seq_len": limits.max_seq_len,
        },
        "parameters": params.template_vars(),
        "versions": library_versions(),
        "files": file_digests(root),
    }
