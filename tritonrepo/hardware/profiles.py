"""GPU facts for planning: the known profiles, `--gpu` parsing, and matching NVML names to profiles. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tritonrepo.errors import HardwareError

MIB = 2**20
GIB = 2**30
MAX_COUNT = 1024
# The lowest SM of each architecture, newest first (SM 12.x consumer Blackwell is still "blackwell").
_ARCHITECTURES = ((100, "blackwell"), (90, "hopper"), (89, "ada"), (80, "ampere"), (75, "turing"), (70, "volta"))


@dataclass(frozen=True)
class GpuSpec:
    name: str  # a profile name ("A100-40GB") or, when detected, the name NVML reports
    memory_bytes: int  # total memory as nvidia-smi reports it (MiB * 2**20)
    compute_capability: tuple[int, int]
    memory_bandwidth_gbs: float | None = None  # GB/s, for rough decode-speed estimates; None when unknown

    @property
    def sm(self) -> int:
        major, minor = self.compute_capability
        return major * 10 + minor

    @property
    def arch(self) -> str:
        for floor, name in _ARCHITECTURES:
            if self.sm >= floor:
                return name
        return "pascal" if self.sm >= 60 else "unknown"

    @property
    def supports_bf16(self) -> bool:
        return self.sm >= 80

    @property
    def supports_fp8(self) -> bool:
        return self.sm >= 89

    @property
    def supports_fp4(self) -> bool:
        return self.sm >= 100

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "memory_bytes": self.memory_bytes,
            "memory_gib": round(self.memory_bytes / GIB, 1),
            "compute_capability": list(self.compute_capability),
            "sm": self.sm,
            "arch": self.arch,
            "memory_bandwidth_gbs": self.memory_bandwidth_gbs,
            "supports_bf16": self.supports_bf16,
            "supports_fp8": self.supports_fp8,
            "supports_fp4": self.supports_fp4,
        }


@dataclass(frozen=True)
class Hardware:
    gpu: GpuSpec | None  # None when there is no GPU
    count: int  # 0 when none
    source: str  # "detected" | "profile" | "none"
    free_memory_bytes: tuple[int, ...] = ()  # per GPU, detected only
    driver_version: str | None = None
    cuda_version: str | None = None  # the driver's CUDA version, e.g. "12.8"
    unused_gpus: tuple[str, ...] = ()  # detected GPUs of another model than the first: not planned for

    def describe(self) -> str:
        if self.gpu is None or self.count == 0:
            return "no GPU"
        each = " each" if self.count > 1 else ""
        text = f"{self.count}x {self.gpu.name} (SM{self.gpu.sm}, {self.gpu.memory_bytes / GIB:.1f} GiB{each})"
        if self.unused_gpus:
            others = len(self.unused_gpus)
            text += f" (+{others} other GPU{'s' if others > 1 else ''} not used)"
        return text

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "count": self.count,
            "gpu": self.gpu.as_dict() if self.gpu else None,
            "description": self.describe(),
            "free_memory_bytes": list(self.free_memory_bytes),
            "driver_version": self.driver_version,
            "cuda_version": self.cuda_version,
            "unused_gpus": list(self.unused_gpus),
        }


NO_GPU = Hardware(gpu=None, count=0, source="none")


def _profile(name: str, mib: int, cc: tuple[int, int], bandwidth: float) -> GpuSpec:
    return GpuSpec(name, mib * MIB, cc, float(bandwidth))


# Memory totals are what nvidia-smi shows (MiB), not the marketing size: plans must fit the real number.
_PROFILES = (
    _profile("V100-16GB", 16384, (7, 0), 900),
    _profile("V100-32GB", 32768, (7, 0), 900),
    _profile("T4", 15360, (7, 5), 320),
    _profile("A10G", 23028, (8, 6), 600),
    _profile("A10", 23028, (8, 6), 600),
    _profile("L4", 23034, (8, 9), 300),
    _profile("L40S", 46068, (8, 9), 864),
    _profile("RTX-4090", 24564, (8, 9), 1008),
    _profile("A100-40GB", 40960, (8, 0), 1555),
    _profile("A100-80GB", 81920, (8, 0), 2039),
    _profile("H100-80GB", 81559, (9, 0), 3350),
    _profile("H100-NVL", 95830, (9, 0), 3900),
    _profile("H20", 97871, (9, 0), 4000),
    _profile("H20-141GB", 143771, (9, 0), 4800),
    _profile("H200", 143771, (9, 0), 4800),
    _profile("B200", 183359, (10, 0), 8000),
    _profile("GB200", 189471, (10, 0), 8000),
)
_BY_NAME = {p.name: p for p in _PROFILES}
# Only names that the family rule below cannot settle: a bare "H100" means the common SXM/PCIe 80 GB part.
_ALIASES = {
    "H100": "H100-80GB",
    "H100-SXM": "H100-80GB",
    "H100-SXM5": "H100-80GB",
    "H100-PCIE": "H100-80GB",
    "H100-HBM3": "H100-80GB",
    "RTX4090": "RTX-4090",
}
_VENDOR_WORDS = {"NVIDIA", "TESLA", "GEFORCE"}
# Words that may follow a family name ("A100" + "SXM4-40GB"); anything else makes the name unknown.
_VARIANT_WORD = re.compile(r"SXM\d*|PCIE|HBM\d+E?|NVL|\d+GB")
_SIZE_WORD = re.compile(r"(\d+)GB")
# Marketing sizes ("40GB", "141GB") and NVML totals differ by a few percent from the table; a different model does more.
_MEMORY_TOLERANCE = 0.10


def known_profiles() -> list[GpuSpec]:
    return list(_PROFILES)


def profile_for_name(nvml_name: str, memory_bytes: int) -> GpuSpec | None:
    """The profile a detected GPU is, using its memory to tell 40 GB from 80 GB parts; None when unknown or unsure."""
    candidates = _candidates(nvml_name, memory_bytes)
    return candidates[0] if len(candidates) == 1 else None


def parse_gpu(text: str) -> Hardware:
    """A --gpu value: a profile name or alias, optionally with a count ("H100-80GB x8", "8xH200", "L4*2")."""
    name, count = _split_count(text)
    candidates = _candidates(name, 0)
    if not candidates:
        raise HardwareError(
            f"unknown GPU {name.strip()!r}",
            hint=f"Known profiles: {', '.join(sorted(_BY_NAME))} (add xN for N GPUs, e.g. 'H100-80GB x8').",
        )
    if len(candidates) > 1:
        names = ", ".join(sorted(c.name for c in candidates))
        raise HardwareError(f"GPU {name.strip()!r} is ambiguous", hint=f"Say which: {names}.")
    return Hardware(gpu=candidates[0], count=count, source="profile")


def _split_count(text: str) -> tuple[str, int]:
    text = text.strip()
    # A prefix count is followed by a name that starts with a letter, and "*" is in no GPU name. A suffix "x" glued
    # to the name ("H200x8") counts only when what it leaves is a known GPU, so that "RTX4090" is never cut.
    prefix = re.fullmatch(r"(?P<count>\d+)\s*[x×*]\s*(?P<name>[a-z].*)", text, re.IGNORECASE)
    suffix = re.fullmatch(r"(?P<name>.+?)(?:\s+[x×]\s*|\s*\*\s*)(?P<count>\S+)", text, re.IGNORECASE)
    glued = re.fullmatch(r"(?P<name>.*\S)[x×](?P<count>\d+)", text, re.IGNORECASE)
    if glued and (_candidates(text, 0) or not _candidates(glued["name"], 0)):
        glued = None
    match = prefix or suffix or glued
    if not match:
        if not text:
            raise HardwareError("empty --gpu value", hint="Give a profile such as 'A100-80GB' or 'H100-80GB x8'.")
        return text, 1
    raw = match["count"]
    if not raw.isdigit():
        raise HardwareError(f"bad GPU count {raw!r} in --gpu {text!r}", hint="Write the count as 'x8' or '8x'.")
    count = int(raw)
    if not 1 <= count <= MAX_COUNT:
        raise HardwareError(f"GPU count must be between 1 and {MAX_COUNT}, got {count} in --gpu {text!r}")
    return match["name"], count


def _normalize(name: str) -> str:
    """Upper case, dashes between words, no vendor words: "NVIDIA A100 80GB PCIe" -> "A100-80GB-PCIE"."""
    words = [w for w in re.split(r"[\s_\-]+", name.strip().upper()) if w]
    while words and words[0] in _VENDOR_WORDS:
        words.pop(0)
    return "-".join(words)


def _family(profile_name: str) -> str:
    return re.sub(r"-(\d+GB|NVL)$", "", profile_name)


def _candidates(name: str, memory_bytes: int) -> list[GpuSpec]:
    """Profiles the name can mean, narrowed by memory: the detected total, else a size word in the name."""
    key = _normalize(name)
    hint = memory_bytes if memory_bytes > 0 else _size_in_name(key)
    if key in _BY_NAME:
        # An exact name wins, but a measured size may say it is a larger variant ("NVIDIA H20" with 141 GB).
        found = [_BY_NAME[key], *(p for p in _PROFILES if hint and p.name != key and _family(p.name) == key)]
    elif key in _ALIASES:
        found = [_BY_NAME[_ALIASES[key]]]
    else:
        found = [p for p in _PROFILES if _is_variant_of(key, _family(p.name))]
    if hint:
        found = [p for p in found if abs(p.memory_bytes - hint) <= _MEMORY_TOLERANCE * hint]
    return found


def _is_variant_of(key: str, family: str) -> bool:
    if key == family:
        return True
    if not key.startswith(family + "-"):
        return False
    return all(_VARIANT_WORD.fullmatch(word) for word in key[len(family) + 1 :].split("-"))


def _size_in_name(key: str) -> int:
    sizes = [int(m[1]) for word in key.split("-") if (m := _SIZE_WORD.fullmatch(word))]
    return sizes[0] * GIB if len(sizes) == 1 else 0
