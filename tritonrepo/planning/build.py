"""`tritonrepo build`: model source -> runtime and limits -> rendered, validated repository with its manifest."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from tritonrepo import __version__, hardware, progress
from tritonrepo.errors import PlanError
from tritonrepo.planning.engines import build_engines, engine_record, engine_spec
from tritonrepo.planning.limits import Limits
from tritonrepo.planning.plan import DeploymentPlan, RuntimeChoice
from tritonrepo.planning.planner import plan_deployment
from tritonrepo.planning.request import DeploymentRequest
from tritonrepo.planning.stage_cache import FileDigests, StageCache, digest
from tritonrepo.repository.integrity import remember_large_files
from tritonrepo.repository.manifest import (
    FORMAT,
    file_digests,
    hashing_with_progress,
    library_versions,
    now_utc,
    read_manifest,
    write_manifest,
)
from tritonrepo.repository.params import (
    ENGINE_DIR,
    ENTRY_POINTS,
    HF_MODEL_DIR,
    POSTPROCESSING_TOKENIZER_DIR,
    TOKENIZER_DIR,
    RepositoryParams,
)
from tritonrepo.repository.render import render_repository, templates_root
from tritonrepo.repository.validate import check_repository, validate_repository
from tritonrepo.repository.writer import place_files, staged_directory, write_rendered
from tritonrepo.source.catalog import ModelFacts, reasoning_parser
from tritonrepo.source.checkpoint_files import CHECKPOINT_FILES, TOKENIZER_FILES
from tritonrepo.source.generation_config import sampling_defaults
from tritonrepo.source.resolve import ModelSource, cache_root, model_facts, model_reference, resolve_model
from tritonrepo.trtllm.adapter import InstalledTensorRTLLM, TensorRTLLM

DEFAULT_OUTPUT_ROOT = Path("build")


@dataclass
class BuildResult:
    path: Path
    source: ModelSource | None  # None on the PyTorch path without --download: the server fetches the weights
    runtime: RuntimeChoice
    limits: Limits
    manifest: dict = field(repr=False)


def build(request: DeploymentRequest, *, adapter: TensorRTLLM | None = None) -> BuildResult:
    """`adapter` drives TensorRT-LLM (engine builds); the installed one unless a caller passes another."""
    # --gpu is parsed first, by the parser `plan --gpu` uses: an unknown name is refused as such, on either path.
    gpus = hardware.parse_gpu(request.gpu) if request.gpu else None
    name, facts = model_facts(request.model, revision=request.revision, offline=request.offline)  # no weights
    if request.dynamo is not None:
        return _build_dynamo(request, name, facts, gpus)
    if facts.is_moe or request.runtime == "pytorch":
        return _build_pytorch_path(request, name, facts, gpus)
    if gpus is not None:
        raise PlanError(
            "--gpu plans hardware this machine lacks, which only the PyTorch path (DeepSeek-V3-architecture models, "
            "or any model with --runtime pytorch) can build for: engines compile for the GPU they run on",
            hint=f"Drop --gpu to build for this machine, add --runtime pytorch (TensorRT-LLM's PyTorch backend), or "
            f"see `tritonrepo plan --model {request.model} --gpu ...`.",
        )
    with progress.step(f"Resolving model {request.model}"):
        source = resolve_model(
            request.model, revision=request.revision, cache_dir=request.cache_dir, offline=request.offline
        )
        progress.say(f"    {source.kind} checkpoint at {source.path}")
    machine = hardware.detect_hardware()
    plan = plan_deployment(
        source.name,
        ModelFacts.from_config(source.config()),
        machine,
        request,
        tensorrt_llm_available=hardware.tensorrt_llm_installed(),
    )
    progress.say(f"==> Runtime: {plan.runtime} ({plan.reason})")
    target = Path(request.output or DEFAULT_OUTPUT_ROOT / source.name).resolve()
    cache = StageCache(cache_root() / "stages")
    digests = FileDigests(cache_root() / "file-digests.json")
    engine = None
    source_files = _matching(source.path, TOKENIZER_FILES)
    if plan.runtime == "tensorrtllm":
        adapter = adapter or InstalledTensorRTLLM()
        version = adapter.version()
        checkpoint = digests.of_files(_matching(source.path, CHECKPOINT_FILES))
        inputs = {
            "spec": _spec_settings(engine_spec(plan, source.path, Path("."))),
            "trtllm": version,
            "checkpoint": checkpoint,
        }
        key = digest(inputs)
        spec = engine_spec(plan, source.path, cache.folder("engines", key))
        if cache.is_complete("engines", key) and not request.force:
            progress.say(f"==> Engines unchanged (inputs {key[:12]}): skipping convert and compile ({spec.engine_dir})")
        else:
            cache.invalidate("engines", key)
            build_engines(spec, adapter)
            cache.mark_complete("engines", key, inputs)
        engine = {**engine_record(plan, machine, version), "inputs_digest": key}
    else:
        source_files += _matching(source.path, CHECKPOINT_FILES)
    params = _repository_params(plan)
    render_inputs = {
        "tool": __version__,
        "params": params.template_vars(),
        "templates": _template_digests(digests),
        "sources": digests.of_files(source_files),
        "engine": engine and engine["inputs_digest"],
        "model": {"source": source.kind, "id": source.id, "revision": source.revision},
        "generation_defaults": sampling_defaults(source.path),  # engine builds do not read generation_config.json
        "location": str(target),  # the engine path in the tensorrt_llm config names it
    }
    digests.save()
    inputs_digest = digest(render_inputs)
    existing = read_manifest(target) if target.is_dir() else None
    if existing and existing.get("inputs_digest") == inputs_digest and not request.force:
        if not (problems := validate_repository(target)):
            progress.say(f"{target} is unchanged (inputs {inputs_digest[:12]}); nothing to do. --force rebuilds it.")
            return BuildResult(target, source, RuntimeChoice(plan.runtime, plan.reason), plan.limits, existing)
        progress.say(
            f"    {target} has the same inputs but {len(problems)} problem(s) (e.g. {problems[0]}): rebuilding"
        )
    with progress.step(f"Rendering the repository into {target}"), staged_directory(target) as staging:
        # Paths are written for the target: the staging folder takes its place only after validation.
        write_rendered(staging, render_repository(params), location=target)
        place_files(source.path, TOKENIZER_FILES, staging / TOKENIZER_DIR)
        place_files(source.path, TOKENIZER_FILES, staging / POSTPROCESSING_TOKENIZER_DIR)  # hard links locally
        if plan.runtime == "hf":
            place_files(source.path, CHECKPOINT_FILES, staging / HF_MODEL_DIR)
        else:
            place_files(spec.engine_dir, ("*",), staging / ENGINE_DIR)
        check_repository(staging, location=target)
        manifest = {**_manifest(source, plan, params, engine, staging, target), "inputs_digest": inputs_digest}
        write_manifest(staging, manifest)
    remember_large_files(digests, target, manifest["files"])
    progress.say(f"Built {target} ({len(manifest['files'])} files, runtime {plan.runtime}).")
    return BuildResult(
        path=target,
        source=source,
        runtime=RuntimeChoice(plan.runtime, plan.reason),
        limits=plan.limits,
        manifest=manifest,
    )


def _build_pytorch_path(
    request: DeploymentRequest, name: str, facts: ModelFacts, gpus: hardware.Hardware | None
) -> BuildResult:
    """No engine compile: a trtllm-serve or llmapi deployment sized for --gpu (or this machine's GPUs)."""
    from tritonrepo.pytorch_path.deployment import write_deployment

    machine = gpus or hardware.detect_hardware()
    reference = model_reference(request.model)
    source = None
    if request.download:
        with progress.step(f"Downloading {request.model}"):
            source = resolve_model(
                request.model, revision=request.revision, cache_dir=request.cache_dir, offline=request.offline
            )
        reference = str(source.path)
    plan = plan_deployment(
        name,
        facts,
        machine,
        request,
        tensorrt_llm_available=hardware.tensorrt_llm_installed(),
        model_ref=reference,
        installed_version=hardware.tensorrt_llm_version(),
    )
    progress.say(f"==> Runtime: pytorch ({plan.reason})")
    for note in plan.notes:
        progress.say(f"    note: {note}")
    target = Path(request.output or DEFAULT_OUTPUT_ROOT / name)
    model = {
        "name": name,
        "source": source.kind if source else ("local" if Path(reference).is_dir() else "hub"),
        "id": reference,
        "revision": source.revision if source else request.revision,
    }
    manifest = write_deployment(plan, target, model=model)
    return BuildResult(target.resolve(), source, RuntimeChoice("pytorch", plan.reason), plan.limits, manifest)


def _build_dynamo(
    request: DeploymentRequest, name: str, facts: ModelFacts, gpus: hardware.Hardware | None
) -> BuildResult:
    """NVIDIA Dynamo: frontend + TensorRT-LLM workers; no weights are fetched (the workers load the model), except the
    embedded models, whose local folder the workers are given."""
    from tritonrepo.dynamo.deployment import write_deployment
    from tritonrepo.planning.dynamo import plan_dynamo
    from tritonrepo.source.resolve import EMBEDDED_MODELS

    machine = gpus or hardware.detect_hardware()
    plan = plan_dynamo(name, model_reference(request.model), facts, machine, request,
                       reasoning_parser=reasoning_parser(name, model_reference(request.model)))  # fmt: skip
    if request.model in EMBEDDED_MODELS:  # planned first: a refused plan creates nothing
        source = resolve_model(request.model)
        plan = dataclasses.replace(plan, model_path=str(source.path), served_model_name=name)
    target = write_deployment(plan, Path(request.output or DEFAULT_OUTPUT_ROOT / name))
    progress.say(f"==> Dynamo {plan.dynamo_version}: {'disaggregated' if plan.disaggregated else 'aggregated'}, "
                 f"router {plan.router_mode}, {plan.nodes} node(s)")  # fmt: skip
    for worker in plan.workers:
        progress.say(f"    {worker.role}: {worker.replicas} x {worker.gpus_per_worker} GPU(s), {worker.engine_file}")
    for note in plan.notes:
        progress.say(f"    check: {note}")
    limits = Limits(max_batch_size=max(w.max_batch_size for w in plan.workers), max_input_len=plan.max_input_len,
                    max_seq_len=plan.max_seq_len)  # fmt: skip
    return BuildResult(target, None, RuntimeChoice("dynamo", "--serving dynamo"), limits, plan.as_dict())


def _matching(folder: Path, patterns: tuple[str, ...]) -> list[Path]:
    return sorted({path for pattern in patterns for path in folder.glob(pattern) if path.is_file()})


def _spec_settings(spec) -> dict:
    """The build settings of a spec without its folders (those depend on the cache key, not the other way)."""
    settings = dataclasses.asdict(spec)
    for name in ("hf_dir", "checkpoint_dir", "engine_dir", "log_path"):
        settings.pop(name)
    return settings


def _template_digests(digests: FileDigests) -> dict[str, str]:
    root = templates_root()
    return {
        p.relative_to(root).as_posix(): digests.of(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def _repository_params(plan: DeploymentPlan) -> RepositoryParams:
    limits = plan.limits
    return RepositoryParams(
        runtime=plan.runtime,  # type: ignore[arg-type]
        max_input_len=limits.max_input_len,
        max_seq_len=limits.max_seq_len,
        triton_max_batch_size=plan.triton_max_batch_size,
        max_num_sequences=limits.max_batch_size,
        decoupled_mode=plan.decoupled,
        preprocessing_instance_count=plan.instance_count,
        postprocessing_instance_count=plan.instance_count,
        bls_instance_count=plan.instance_count,
        kv_cache_free_gpu_mem_fraction=plan.kv_cache_free_gpu_mem_fraction,
        enable_chunked_context=plan.enable_chunked_context,
    )


def _hashed(root: Path, location: Path) -> dict:
    with hashing_with_progress(root, "sha256 of the repository's files") as digest_of:
        return file_digests(root, digest_of, location=location)


def _manifest(
    source: ModelSource,
    plan: DeploymentPlan,
    params: RepositoryParams,
    engine: dict | None,
    root: Path,
    location: Path,
) -> dict:
    return {
        "format": FORMAT,
        "created": now_utc(),
        "tool": {"name": "tritonrepo", "version": __version__},
        "model": {"name": source.name, "source": source.kind, "id": source.id, "revision": source.revision},
        "reasoning_parser": reasoning_parser(source.name, source.id),
        # The checkpoint's sampling defaults: what the front end gives requests without temperature/top_p/top_k.
        "generation_defaults": sampling_defaults(source.path),
        "runtime": plan.runtime,
        "runtime_reason": plan.reason,
        "entry_points": list(ENTRY_POINTS),
        "default_entry_point": ENTRY_POINTS[0],
        "tokenizer_dir": TOKENIZER_DIR,
        "limits": {
            "max_batch_size": plan.limits.max_batch_size,
            "max_input_len": plan.limits.max_input_len,
            "max_seq_len": plan.limits.max_seq_len,
        },
        "parameters": params.template_vars(),
        "plan": plan.as_dict(),
        "engine": engine,
        "versions": library_versions(),
        "files": _hashed(root, location),
    }
