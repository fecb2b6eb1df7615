"""The NVIDIA Dynamo topology plan (frontend + TensorRT-LLM workers, aggregated or prefill/decode). Pure.

GPUs per worker: DeepSeek-V3-architecture checkpoints take the smallest layout the PyTorch path's support matrix
allows (llmapi_support.size: 4x GB200 for NVFP4, 8x H200 or 16x H100-80GB for FP8); dense models the PyTorch path's
dense rule (llmapi_dense.layout: the smallest tensor parallel size whose weights leave KV headroom, memory.py). The presets follow Dynamo's TensorRT-LLM engine configs for
DeepSeek-R1 (ai-dynamo/dynamo examples/backends/trtllm/engine_configs/deepseek-r1/disagg/{simple,mtp}/) and its
known-failure notes (seed 003 "Known Issues"; dynamo issues #4327, #5015, #5884, #6734)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from tritonrepo.errors import PlanDoesNotFitError, PlanError
from tritonrepo.hardware import Hardware
from tritonrepo.planning.llmapi_dense import layout
from tritonrepo.planning.llmapi_support import UnsupportedHardwareError, checkpoint_precision, size
from tritonrepo.planning.request import DeploymentRequest, DynamoChoices
from tritonrepo.source.catalog import ModelFacts

DYNAMO_VERSION = "1.6.1"
TRTLLM_VERSION = "1.3.0rc29"  # what Dynamo 1.6.1's [trtllm] extra pins (environment.md)
IMAGE = f"nvcr.io/nvidia/ai-dynamo/tensorrtllm-runtime:{DYNAMO_VERSION}"
ROUTER_MODES = ("kv", "round-robin")
KV_BLOCK_SIZE = 32  # dynamo.trtllm --kv-block-size default; the router is given the same (#5015)
RECIPE_BUFFER = 16384  # max_tokens_in_buffer of the DeepSeek-R1 disagg recipes
DEEPSEEK_MAX_INPUT = 8192  # the recipes' ISL
DEEPSEEK_OUTPUT = 256  # decode max_seq_len 8448 = 8192 ISL + 256 OSL in the simple recipe
DENSE_MAX_SEQ_LEN = 8192
RECIPES = "ai-dynamo/dynamo@v1.6.1 examples/backends/trtllm/engine_configs/deepseek-r1/disagg"
RECIPE_FILES = {
    "prefill": f"{RECIPES}/simple/prefill.yaml",
    "decode": f"{RECIPES}/simple/decode.yaml",
    "decode-mtp": f"{RECIPES}/mtp/mtp_decode.yaml",
    "aggregated": "tritonrepo's PyTorch-path throughput profile (TensorRT-LLM DeepSeek-R1 recipe, seed 001)",
    "dense": "tritonrepo dense preset (no upstream recipe)",
}


@dataclass(frozen=True)
class WorkerPlan:
    """One role's workers and the LLM-API settings of its engine YAML."""

    role: str  # aggregated | prefill | decode
    replicas: int
    gpus_per_worker: int
    nodes_per_worker: int
    tp_size: int
    ep_size: int
    attention_dp: bool
    max_batch_size: int
    max_num_tokens: int
    max_seq_len: int
    kv_cache_dtype: str  # auto | fp8
    free_gpu_memory_fraction: float
    disable_overlap_scheduler: bool
    cuda_graph_batch_sizes: tuple[int, ...]  # empty: no CUDA graphs (prefill)
    mtp_layers: int
    moe_backend: str | None  # only where the default (CUTLASS) does not serve
    preset: str  # where the values come from

    @property
    def engine_file(self) -> str:
        return {"aggregated": "engine/agg.yaml"}.get(self.role, f"engine/{self.role}.yaml")


@dataclass(frozen=True)
class DynamoPlan:
    model: str  # what the user asked for
    model_path: str  # what workers load: a Hub id or an absolute folder
    served_model_name: str
    moe: bool
    precision: str
    gpu: str | None  # profile name; None: no GPU here (the portable-runtime worker serves)
    gpus: int
    gpus_per_node: int
    router_mode: str
    kv_block_size: int
    max_input_len: int
    max_seq_len: int
    max_tokens_in_buffer: int | None  # None when aggregated
    cache_transceiver_backend: str | None
    workers: tuple[WorkerPlan, ...]
    http_port: int
    trtllm_version: str = TRTLLM_VERSION
    dynamo_version: str = DYNAMO_VERSION
    image: str = IMAGE
    reasoning_parser: str | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def disaggregated(self) -> bool:
        return any(w.role != "aggregated" for w in self.workers)

    @property
    def gpus_used(self) -> int:
        return sum(w.replicas * w.gpus_per_worker for w in self.workers)

    @property
    def nodes(self) -> int:
        return max(1, math.ceil(self.gpus_used / self.gpus_per_node)) if self.gpus_per_node else 1

    def as_dict(self) -> dict:
        return {**asdict(self), "disaggregated": self.disaggregated, "nodes": self.nodes}


def cuda_graph_sizes(largest: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to and including `largest`, as the recipe lists them."""
    sizes, value = [], 1
    while value < largest:
        sizes.append(value)
        value *= 2
    return (*sizes, largest)


def buffer_above(max_input_len: int) -> int:
    """The cache transceiver's max_tokens_in_buffer: above the longest input (#4327), at least the recipe's."""
    return max(RECIPE_BUFFER, 1 << max_input_len.bit_length())


def plan_dynamo(
    model: str, model_ref: str, facts: ModelFacts, hardware: Hardware, request: DeploymentRequest, *,
    reasoning_parser: str | None = None,
) -> DynamoPlan:  # fmt: skip
    """`model` the display name; `model_ref` what the workers load. Raises PlanError / PlanDoesNotFitError."""
    choices = request.dynamo or DynamoChoices()
    _check_choices(choices)
    notes: list[str] = []
    if facts.is_moe:
        precision = checkpoint_precision(facts.native_dtype)
        worker_gpus, sizing_notes, moe_backend = _moe_worker_gpus(model, precision, facts, hardware, choices)
        notes += sizing_notes
        max_input = request.max_input_len or min(DEEPSEEK_MAX_INPUT, facts.max_position_embeddings - DEEPSEEK_OUTPUT)
        max_seq_len = request.max_seq_len or max_input + DEEPSEEK_OUTPUT
    else:
        precision = "bf16"
        moe_backend = None
        max_seq_len = request.max_seq_len or min(DENSE_MAX_SEQ_LEN, facts.max_position_embeddings)
        max_input = request.max_input_len or max_seq_len - 1
        worker_gpus = _dense_worker_gpus(model, facts, hardware, max_seq_len, request, notes)
    if max_seq_len > facts.max_position_embeddings:
        raise PlanError(f"--max-seq-len {max_seq_len} exceeds {model}'s context length {facts.max_position_embeddings}")
    if max_input >= max_seq_len:
        raise PlanError(f"--max-input-len {max_input} leaves no room to generate within --max-seq-len {max_seq_len}")
    per_node = _gpus_per_node(hardware)
    buffer = None
    if choices.disagg:
        buffer = choices.max_tokens_in_buffer or buffer_above(max_input)
        if buffer <= max_input:
            raise PlanError(
                f"--max-tokens-in-buffer {buffer} is not above the longest input ({max_input} tokens): disaggregated "
                "workers deadlock under load when a KV transfer does not fit the cache transceiver's buffer "
                "(ai-dynamo/dynamo #4327)",
                hint=f"Use --max-tokens-in-buffer {buffer_above(max_input)} (or leave it out), or a smaller "
                "--max-input-len.",
            )
    counts = _worker_counts(model, choices, hardware, worker_gpus, facts.is_moe)
    mtp = request.llmapi.mtp_layers or 0
    workers = tuple(
        _worker(role, replicas, worker_gpus, per_node, facts.is_moe, request, max_input, max_seq_len, mtp, moe_backend)
        for role, replicas in counts
    )
    kv_dtypes = {w.kv_cache_dtype for w in workers}
    assert len(kv_dtypes) == 1  # prefill and decode must agree: the decode worker reads what prefill wrote
    notes += _check_notes(choices, workers, max_input, buffer, hardware, facts.is_moe)
    return DynamoPlan(
        model=model, model_path=model_ref, served_model_name=model_ref if "/" in model_ref and not
        model_ref.startswith("/") else model, moe=facts.is_moe, precision=precision,
        gpu=hardware.gpu.name if hardware.gpu and hardware.count else None, gpus=hardware.count,
        gpus_per_node=per_node, router_mode=choices.router, kv_block_size=KV_BLOCK_SIZE, max_input_len=max_input,
        max_seq_len=max_seq_len, max_tokens_in_buffer=buffer,
        cache_transceiver_backend=("UCX" if facts.is_moe else "DEFAULT") if choices.disagg else None,
        workers=workers, http_port=choices.http_port, reasoning_parser=reasoning_parser, notes=tuple(notes),
    )  # fmt: skip


def _check_choices(choices: DynamoChoices) -> None:
    if choices.router not in ROUTER_MODES:
        raise PlanError(f"unknown router mode {choices.router!r}", hint=f"Use --router {' or '.join(ROUTER_MODES)}.")
    if choices.disagg and choices.workers:
        raise PlanError("--workers counts aggregated workers", hint="With --disagg give --prefill-workers and "
                        "--decode-workers.")  # fmt: skip
    if not choices.disagg and (choices.prefill_workers or choices.decode_workers):
        raise PlanError("--prefill-workers and --decode-workers need --disagg", hint="Add --disagg, or use --workers.")
    if choices.max_tokens_in_buffer and not choices.disagg:
        raise PlanError("--max-tokens-in-buffer sizes the KV transfer between prefill and decode workers",
                        hint="Add --disagg, or leave it out.")  # fmt: skip
    for name, value in (("--workers", choices.workers), ("--prefill-workers", choices.prefill_workers),
                        ("--decode-workers", choices.decode_workers)):  # fmt: skip
        if value is not None and value < 1:
            raise PlanError(f"{name} {value} must be 1 or more")


def _gpus_per_node(hardware: Hardware) -> int:
    if not hardware.gpu or not hardware.count:
        return 0
    return min(hardware.count, 4 if hardware.gpu.name == "GB200" else 8)  # a GB200 tray holds 4, HGX boards 8


def _moe_worker_gpus(model, precision, facts, hardware, choices) -> tuple[int, list[str], str | None]:
    """The smallest GPU count one DeepSeek worker may span, from the PyTorch path's support matrix."""
    if not hardware.gpu or not hardware.count:
        raise PlanError(f"{model} needs GPUs", hint="Plan for the target hardware with --gpu, e.g. --gpu 'H200 x8'.")
    try:
        full = size(model, precision, hardware, TRTLLM_VERSION, num_experts=facts.num_experts)
    except UnsupportedHardwareError as error:
        raise PlanDoesNotFitError(error.message, hint=error.hint) from None
    smallest = full.row.min_gpus
    sizing = size(model, precision, Hardware(hardware.gpu, smallest, "profile"), TRTLLM_VERSION,
                  num_experts=facts.num_experts)  # fmt: skip
    backend = sizing.moe_backend if sizing.moe_backend != "CUTLASS" else None
    notes = [f"each worker spans {smallest}x {hardware.gpu.name}: the fewest the {precision.upper()} checkpoint runs "
             f"on (tensor parallel {sizing.tp_size}, expert parallel {sizing.ep_size})"]  # fmt: skip
    return smallest, notes, backend


def _dense_worker_gpus(model, facts, hardware, max_seq_len, request, notes) -> int:
    """The PyTorch path's dense rule (llmapi_dense.layout): the fewest GPUs, tensor parallel within one node, whose
    weights leave a KV cache of a few full-length sequences."""
    if not hardware.gpu or not hardware.count:
        notes.append("no GPU planned (--gpu not given and none here): the launch scripts' TensorRT-LLM workers need "
                     "GPUs; `tritonrepo serve` runs the portable-runtime worker instead")  # fmt: skip
        return 0
    chosen = layout(
        model, facts, hardware, max_seq_len=max_seq_len, max_num_tokens=8192,
        max_batch_size=request.max_batch_size or 64, kv_fraction=0.85, kv_bytes=2, allow_pp=False,
    )  # fmt: skip
    notes.append(f"each worker spans {chosen.tp_size}x {hardware.gpu.name}: {chosen.notes[0]}")
    return chosen.tp_size


def _worker_counts(model, choices, hardware, worker_gpus, moe) -> list[tuple[str, int]]:
    gpus = hardware.count
    if worker_gpus == 0:  # no GPU: the counts are what the user asked, run by the portable-runtime worker
        if choices.disagg:
            return [("prefill", choices.prefill_workers or 1), ("decode", choices.decode_workers or 1)]
        return [("aggregated", choices.workers or 1)]
    slots = gpus // worker_gpus
    gpu = hardware.gpu.name
    if choices.disagg:
        prefill = choices.prefill_workers or max(1, slots // 2)
        decode = choices.decode_workers or max(1, slots - prefill)
        needed = (prefill + decode) * worker_gpus
        if needed > gpus:
            nearest = (
                [f"aggregated on {gpus} GPUs (drop --disagg: {slots} worker(s) of {worker_gpus})"] if slots else []
            )
            nearest.append(f"--gpu '{gpu} x{needed}' ({prefill} prefill + {decode} decode worker(s) of {worker_gpus})")
            raise PlanDoesNotFitError(
                f"{model} disaggregated needs {prefill} prefill + {decode} decode worker(s) of {worker_gpus}x {gpu} "
                f"= {needed} GPUs; {hardware.describe()} has {gpus}",
                hint=f"Nearest plans that fit: {'; '.join(nearest)}.",
            )
        return [("prefill", prefill), ("decode", decode)]
    workers = choices.workers or slots
    if workers * worker_gpus > gpus or workers < 1:
        fitting = f"--workers {slots}" if slots else f"--gpu '{gpu} x{worker_gpus}'"
        raise PlanDoesNotFitError(
            f"{choices.workers or 1} worker(s) of {worker_gpus}x {gpu} need {max(1, workers) * worker_gpus} GPUs; "
            f"{hardware.describe()} has {gpus}",
            hint=f"Nearest plans that fit: {fitting}; or --gpu '{gpu} x{max(1, workers) * worker_gpus}'.",
        )
    return [("aggregated", workers)]


def _worker(role, replicas, gpus, per_node, moe, request, max_input, max_seq_len, mtp, moe_backend) -> WorkerPlan:
    nodes = max(1, math.ceil(gpus / per_node)) if per_node else 1
    tp = max(gpus, 1)
    common = dict(role=role, replicas=replicas, gpus_per_worker=gpus, nodes_per_worker=nodes, tp_size=tp,
                  max_seq_len=max_seq_len)  # fmt: skip
    kv_dtype = "fp8" if moe else "auto"
    if role == "prefill":  # one long prompt at a time, attention spread over the ranks, no CUDA graphs
        return WorkerPlan(
            **common, ep_size=tp if moe else 1, attention_dp=moe, max_batch_size=1 if moe else 16,
            max_num_tokens=max(8192, max_input), kv_cache_dtype=kv_dtype, free_gpu_memory_fraction=0.75,
            disable_overlap_scheduler=True, cuda_graph_batch_sizes=(), mtp_layers=0, moe_backend=moe_backend,
            preset=RECIPE_FILES["prefill" if moe else "dense"],
        )  # fmt: skip
    batch = request.max_batch_size or (256 if moe and role == "decode" else 128 if moe else 64)
    if role == "decode":  # many short steps: CUDA graphs up to the batch; MTP drafts count as tokens
        return WorkerPlan(
            **common, ep_size=tp if moe else 1, attention_dp=False, max_batch_size=batch,
            max_num_tokens=batch * (mtp + 1), kv_cache_dtype=kv_dtype, free_gpu_memory_fraction=0.85,
            disable_overlap_scheduler=False, cuda_graph_batch_sizes=cuda_graph_sizes(batch), mtp_layers=mtp,
            moe_backend=moe_backend, preset=RECIPE_FILES[("decode-mtp" if mtp else "decode") if moe else "dense"],
        )  # fmt: skip
    return WorkerPlan(
        **common, ep_size=tp if moe else 1, attention_dp=moe, max_batch_size=batch,
        max_num_tokens=max(8192, max_input), kv_cache_dtype=kv_dtype, free_gpu_memory_fraction=0.8 if moe else 0.85,
        disable_overlap_scheduler=False, cuda_graph_batch_sizes=cuda_graph_sizes(min(batch, 128)), mtp_layers=mtp,
        moe_backend=moe_backend, preset=RECIPE_FILES["aggregated" if moe else "dense"],
    )  # fmt: skip


def _check_notes(choices, workers, max_input, buffer, hardware, moe) -> list[str]:
    notes = [
        f"KV block size {KV_BLOCK_SIZE} tokens for every worker (--kv-block-size) and the router "
        "(--kv-cache-block-size): a router that counts blocks of another size misroutes (ai-dynamo/dynamo #5015)",
        "first requests after start are slow (CUDA graph capture, autotuning): send a few warm-up requests before "
        "benchmarking",
    ]
    if choices.router == "kv":
        notes.append("router kv: workers publish KV events and metrics (--publish-kv-events --publish-metrics); "
                     "multi-node needs etcd and NATS on the head node")  # fmt: skip
    if buffer is not None:
        source = "given" if choices.max_tokens_in_buffer else "set automatically"
        notes.append(f"cache_transceiver_config.max_tokens_in_buffer {buffer} ({source}) is above the longest input "
                     f"({max_input} tokens): below it, disaggregated workers deadlock under load (#4327)")  # fmt: skip
        notes.append("kv_cache_config.dtype is the same on prefill and decode: decode reads the KV prefill wrote")
        if hardware.count and len(workers) == 2 and workers[0].nodes_per_worker == 1 and hardware.count <= 8:
            notes.append("prefill and decode share one host: KV transfers between workers of one host have failed "
                         "with NIXL (ai-dynamo/dynamo #5884); if they do, set cache_transceiver_config.backend to "
                         "UCX in both engine YAMLs")  # fmt: skip
        notes.append("decode workers in disaggregated mode have hit an `emplaceDone` assertion (#6734): restart the "
                     "worker; keep prefill and decode on the same TensorRT-LLM version")  # fmt: skip
    if moe:
        notes.append("on CUDA out-of-memory lower kv_cache_config.free_gpu_memory_fraction in the engine YAML")
    return notes
