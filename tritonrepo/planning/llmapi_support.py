"""Which GPUs serve a DeepSeek-V3-architecture checkpoint through TensorRT-LLM's PyTorch backend, and with which MoE
backend. Pure: the tables of TensorRT-LLM's DeepSeek recipes, and the check that refuses too little hardware
(planner.py adds a distill that fits, from the engine path, to the alternatives).

Sources (facts, read from the recipes this project started from):
- minimum GPUs: TensorRT-LLM examples/deepseek_v3 README (seed 002): FP8 on 16x H100-80GB, 8x H200, 8x H20 (96 or
  141 GB); FP4 on 4x B200/GB200 (8 recommended); Ampere (SM80/86) unsupported.
- MoE backends: the DeepSeek-R1 quick-start recipe (seed 001, TensorRT-LLM 1.0): H100/H200 FP8 -> CUTLASS;
  B200/GB200 EP<=8 NVFP4 -> CUTLASS or TRTLLM; B200/GB200 EP<=8 FP8 -> DEEPGEMM; GB200 NVL72 EP>8 NVFP4 -> WIDEEP;
  GB200 NVL72 EP>8 FP8 -> none yet. Blackwell FP8 is "not supported yet" in the older README, so it needs 1.0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tritonrepo.errors import PlanError
from tritonrepo.hardware import GpuSpec, Hardware
from tritonrepo.trtllm.versions import Version, parse_version

PRECISIONS = ("fp8", "nvfp4")
FP4_CHECKPOINTS = {"DeepSeek-R1": "nvidia/DeepSeek-R1-FP4", "DeepSeek-R1-0528": "nvidia/DeepSeek-R1-0528-FP4"}
BLACKWELL_FP8 = Version(1, 0, 0)  # seed 001 (1.0) has a DEEPGEMM row for it; seed 002 (0.19) says "WIP"
WIDE_EP = BLACKWELL_FP8  # also from seed 001 only
# TensorRT-LLM removed the WIDEEP MoE backend (PR #17797, 2026-08, after it could no longer be selected): wide expert
# parallel with its load balancer runs on the other backends, CUTEDSL for NVFP4 (examples/wide_ep/README.md).
WIDEEP_REMOVED = Version(1, 3, 0)
NVL72_GPUS = 72
GB200_GPUS_PER_NODE = 4  # a GB200 compute tray holds 4 GPUs; NVLink joins 72 across trays


class UnsupportedHardwareError(PlanError):
    """The checkpoint cannot run on this hardware (too few GPUs, or an architecture the backend lacks)."""

    def __init__(self, message: str, *, hint: str | None = None, alternatives: tuple[str, ...] = ()) -> None:
        super().__init__(message, hint=hint or (f"Alternatives: {'; '.join(alternatives)}." if alternatives else None))
        self.alternatives = alternatives

    def with_alternative(self, alternative: str) -> UnsupportedHardwareError:
        """The same refusal suggesting one more thing: the planner adds what another path could serve instead."""
        return UnsupportedHardwareError(self.message, alternatives=(*self.alternatives, alternative))


@dataclass(frozen=True)
class Row:
    """One row of the support matrix: a GPU family and checkpoint precision."""

    gpus: tuple[str, ...]  # profile names
    precision: str
    min_gpus: int
    recommended_gpus: int
    moe_backends: tuple[str, ...]  # what the recipe lists; the first is the default choice
    max_ep: int | None = None  # expert parallelism above this needs another row (GB200 NVL72)
    min_version: Version = Version(0, 19, 0)


HOPPER_FP8 = (("H100-80GB",), 16), (("H200",), 8), (("H20", "H20-141GB"), 8)
ROWS: tuple[Row, ...] = (
    *(Row(gpus, "fp8", n, n, ("CUTLASS",)) for gpus, n in HOPPER_FP8),
    Row(("B200", "GB200"), "nvfp4", 4, 8, ("CUTLASS", "TRTLLM"), max_ep=8),
    Row(("B200", "GB200"), "fp8", 8, 8, ("DEEPGEMM",), max_ep=8, min_version=BLACKWELL_FP8),
    # NVL72, expert parallel beyond 8; the older schema has no moe_config to choose WIDEEP with
    Row(("GB200",), "nvfp4", 16, NVL72_GPUS, ("WIDEEP",), min_version=WIDE_EP),
)


@dataclass(frozen=True)
class Sizing:
    """How the hardware is used: the row that allows it, the parallel layout and the MoE backend."""

    row: Row
    gpu: str  # the profile name
    gpus: int
    nodes: int
    gpus_per_node: int
    tp_size: int
    pp_size: int
    ep_size: int
    moe_backend: str
    notes: tuple[str, ...] = ()
    moe_slots: int | None = None  # WIDEEP: expert slots for the load balancer, a multiple of ep_size (seed 001: 288)


def checkpoint_precision(native_dtype: str) -> str:
    """fp8 / nvfp4 from the facts' native dtype; a bf16 copy of DeepSeek-V3 is not a checkpoint the recipes serve."""
    if native_dtype in PRECISIONS:
        return native_dtype
    raise UnsupportedHardwareError(
        f"this DeepSeek-V3-architecture checkpoint is {native_dtype}; TensorRT-LLM's recipes serve the FP8 release "
        "(deepseek-ai/DeepSeek-R1) and NVIDIA's NVFP4 one (nvidia/DeepSeek-R1-FP4)",
        hint="Use one of those checkpoints.",
    )


def _row_for(gpu: GpuSpec, precision: str, ep: int) -> Row | None:
    family = [r for r in ROWS if gpu.name in r.gpus and r.precision == precision]
    fitting = [r for r in family if r.max_ep is None or ep <= r.max_ep]
    return (fitting or family or [None])[0]


def size(
    model: str,
    precision: str,
    hardware: Hardware,
    version: str,
    *,
    nodes: int | None = None,
    pp_size: int = 1,
    ep_size: int | None = None,
    num_experts: int = 256,
) -> Sizing:
    """The layout for `hardware`, or UnsupportedHardwareError with the numbers and what would work instead."""
    gpu = hardware.gpu
    if gpu is None or hardware.count == 0:
        raise UnsupportedHardwareError(
            f"{model} needs GPUs: TensorRT-LLM's PyTorch backend has no CPU path",
            hint="Plan for the target hardware with --gpu, e.g. --gpu 'H200 x8'.",
        )
    count = hardware.count
    if gpu.sm < 90:
        raise _refuse(model, precision, hardware, f"{gpu.name} is SM{gpu.sm} ({gpu.arch}); the PyTorch backend's "
                      "DeepSeek kernels need Hopper (SM90) or Blackwell (SM100)")  # fmt: skip
    if precision == "nvfp4" and not gpu.supports_fp4:
        raise _refuse(model, precision, hardware, f"NVFP4 weights need Blackwell (SM100); {gpu.name} is SM{gpu.sm}")
    if pp_size < 1 or count % pp_size:
        raise PlanError(f"pipeline parallel {pp_size} does not divide {count} GPUs")
    tp = count // pp_size
    wanted_ep = ep_size or tp
    row = _row_for(gpu, precision, wanted_ep)
    if row is None:
        raise _refuse(model, precision, hardware, f"TensorRT-LLM's recipes list no {precision.upper()} row for "
                      f"{gpu.name}")  # fmt: skip
    if parse_version(version) < row.min_version:
        raise _refuse(model, precision, hardware, f"{precision.upper()} on {gpu.name} needs TensorRT-LLM "
                      f"{row.min_version} or newer; the target is {version}")  # fmt: skip
    notes = []
    if row.max_ep is not None and wanted_ep > row.max_ep:
        if ep_size:
            raise PlanError(
                f"expert parallel {ep_size} on {gpu.name} with a {precision.upper()} checkpoint: the recipes support "
                f"at most {row.max_ep} here"
                + (" (GB200 NVL72 with the FP4 checkpoint goes further)" if gpu.name == "GB200" else ""),  # fmt: skip
                hint=f"Use --ep-size {row.max_ep} or less.",
            )
        wanted_ep = row.max_ep
        notes.append(f"expert parallel capped at {row.max_ep}: wider needs GB200 NVL72 with the FP4 checkpoint")
    if count < row.min_gpus:
        raise _refuse(model, precision, hardware, f"{model} ({precision.upper()}) needs at least {row.min_gpus}x "
                      f"{gpu.name}; {hardware.describe()} has {count}", need=row.min_gpus)  # fmt: skip
    wide = row.moe_backends[0] == "WIDEEP"  # its load balancer spreads expert slots, not whole experts
    backend = row.moe_backends[0]
    if wide and parse_version(version) >= WIDEEP_REMOVED:
        backend = "CUTEDSL"
        notes.append(f"MoE backend CUTEDSL: TensorRT-LLM {version} has no WIDEEP backend (removed in PR #17797)")
    if tp % wanted_ep or (num_experts % wanted_ep and not wide):
        if ep_size:
            raise PlanError(
                f"expert parallel {ep_size} must divide both tensor parallel {tp} and the {num_experts} experts",
                hint="Choose another --ep-size, or leave it out.",
            )
        wanted_ep = max(e for e in range(1, wanted_ep + 1) if tp % e == 0 and num_experts % e == 0)
        notes.append(f"expert parallel {wanted_ep}: the largest that divides both {tp} GPUs and {num_experts} experts")
    if count < row.recommended_gpus:
        notes.append(f"{count} GPUs work; the recipe recommends {row.recommended_gpus} for best performance")
    per_node = _gpus_per_node(gpu, count, nodes)
    return Sizing(
        row=row, gpu=gpu.name, gpus=count, nodes=count // per_node, gpus_per_node=per_node, tp_size=tp, pp_size=pp_size,
        ep_size=wanted_ep, moe_backend=backend, notes=tuple(notes),
        moe_slots=math.ceil(num_experts / wanted_ep) * wanted_ep if wide else None,
    )  # fmt: skip


def _gpus_per_node(gpu: GpuSpec, count: int, nodes: int | None) -> int:
    if nodes:
        if count % nodes:
            raise PlanError(f"{count} GPUs do not split evenly over {nodes} nodes", hint="Give a GPU count that does.")
        return count // nodes
    per_node = min(count, GB200_GPUS_PER_NODE if gpu.name == "GB200" else 8)  # a GB200 tray holds 4, HGX boards 8
    if count % per_node:
        raise PlanError(
            f"{count}x {gpu.name} do not fill nodes of {per_node}",
            hint="Say how they are spread with --nodes, or give a multiple of the GPUs per node.",
        )
    return per_node


def _refuse(model: str, precision: str, hardware: Hardware, why: str, *, need: int | None = None):
    gpu = hardware.gpu
    options = []
    if need:
        per_node = GB200_GPUS_PER_NODE if gpu.name == "GB200" else 8
        options.append(f"--gpu '{gpu.name} x{need}' ({math.ceil(need / per_node)} node(s) of {min(need, per_node)})")
    if precision == "fp8" and (gpu.name not in ("H200", "H20", "H20-141GB")):
        options.append("--gpu 'H200 x8'")
    fp4 = FP4_CHECKPOINTS.get(model)
    if precision == "fp8" and fp4:
        options.append(f"the FP4 checkpoint {fp4} on --gpu 'B200 x4' (8 recommended)")
    if precision == "nvfp4":
        options.append("--gpu 'B200 x4'")
    return UnsupportedHardwareError(f"{why}.", alternatives=tuple(options))
