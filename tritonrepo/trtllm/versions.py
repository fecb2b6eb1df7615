"""Which NGC container ships which TensorRT-LLM and Triton, and what each TensorRT-LLM version can do."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import metadata
from typing import NamedTuple

log = logging.getLogger(__name__)

IMAGE = "nvcr.io/nvidia/tritonserver:{tag}-trtllm-python-py3"


@dataclass(frozen=True)
class Container:
    """One monthly `tritonserver:<yy.mm>-trtllm-python-py3` release."""

    tag: str
    trtllm: str
    triton: str

    @property
    def image(self) -> str:
        return IMAGE.format(tag=self.tag)


# The one table. TensorRT-LLM per container: /work/shared/reference/upstream.md ("Version lines"), which read the
# NGC release notes. Triton per container: TRITON_VERSION@r<yy.mm> in triton-inference-server/server; note that
# 25.07 is a patch release (2.59.1), so the numbers do not simply count up one a month.
CONTAINERS: tuple[Container, ...] = (
    Container("24.10", "0.14.0", "2.51.0"),
    Container("25.01", "0.17.0", "2.54.0"),
    Container("25.02", "0.17.0.post1", "2.55.0"),
    Container("25.03", "0.18.0", "2.56.0"),
    Container("25.04", "0.18.2", "2.57.0"),
    Container("25.05", "0.19.0", "2.58.0"),
    Container("25.06", "0.20.0", "2.59.0"),
    Container("25.07", "0.20.0", "2.59.1"),
    Container("25.08", "0.21.0", "2.60.0"),
    Container("25.09", "1.0.0", "2.61.0"),
    Container("25.10", "1.0.0", "2.62.0"),
    Container("25.11", "1.0.3", "2.63.0"),
    Container("25.12", "1.1.0", "2.64.0"),
    Container("26.01", "1.1.0", "2.65.0"),
    Container("26.02", "1.1.0", "2.66.0"),
    Container("26.03", "1.2.0", "2.67.0"),
    Container("26.04", "1.2.1", "2.68.0"),
    Container("26.05", "1.2.1", "2.69.0"),
    Container("26.06", "1.2.1", "2.70.0"),
    Container("26.07", "1.2.1", "2.71.0"),
)


class Version(NamedTuple):
    """major.minor.patch; pre-releases (rc) and post-releases compare as the release they belong to."""

    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


_VERSION_RE = re.compile(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text: str) -> Version:
    """'0.17.0.post1' -> (0, 17, 0); '1.1.0rc2' -> (1, 1, 0); raises ValueError on anything else."""
    match = _VERSION_RE.match(text or "")
    if not match:
        raise ValueError(f"not a TensorRT-LLM version: {text!r}")
    major, minor, patch = match.groups()
    return Version(int(major), int(minor), int(patch or 0))


def _same_release(a: str, b: str) -> bool:
    # '0.17.0.post1' and '0.17.0' are different wheels (and engines): compare the full normalised text.
    return a.strip().lower().lstrip("v") == b.strip().lower().lstrip("v")


def container_for(trtllm_version: str) -> str | None:
    """The image of the newest supported container that ships exactly this TensorRT-LLM version, else None."""
    matches = [c for c in CONTAINERS if _same_release(c.trtllm, trtllm_version)]
    return matches[-1].image if matches else None


def newest_container() -> Container:
    return CONTAINERS[-1]


def installed_version() -> str | None:
    """The TensorRT-LLM wheel version of this interpreter, read from its metadata (importing it takes seconds)."""
    for name in ("tensorrt_llm", "tensorrt-llm"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


@dataclass(frozen=True)
class Features:
    """What one TensorRT-LLM version offers that our build and templates depend on."""

    version: str
    known: bool  # shipped in a container of the table
    note: str | None  # why the version was treated as another one, for the user
    has_logits_datatype: bool
    llmapi_triton_model: bool
    backend_in_trtllm_repo: bool
    engine_llm_class: str
    kv_cache_type_flag: bool

    @property
    def container(self) -> str | None:
        return container_for(self.version)


# Thresholds, each the first version with the feature.
# logits_datatype: all_models/inflight_batcher_llm/tensorrt_llm/config.pbtxt has it @v0.17.0, not @v0.16.0
#   (triton-inference-server/tensorrtllm_backend).
LOGITS_DATATYPE = Version(0, 17, 0)
# all_models/llmapi exists @v0.19.0, not @v0.18.2 (tensorrtllm_backend).
LLMAPI_MODEL = Version(0, 19, 0)
# README.md@v0.20.0 (tensorrtllm_backend): sources moved to NVIDIA/TensorRT-LLM triton_backend/; the tag holds docs only.
BACKEND_MOVED = Version(0, 20, 0)
# --kv_cache_type {continuous,paged,disabled} replaced `--paged_kv_cache enable`: the backend's own build scripts
# (ci/L0_backend_trtllm/generate_engines.sh, docs/llama.md) switch @v0.13.0 and use it through @v1.0.0;
# tensorrt_llm/commands/build.py (NVIDIA/TensorRT-LLM, indexed snapshot 008b2b8d) keeps --paged_kv_cache only as
# a deprecated alias.
KV_CACHE_TYPE_FLAG = Version(0, 13, 0)
# The TensorRT-engine LLM class moved when the PyTorch backend became `tensorrt_llm.LLM` (upstream.md).
TENSORRT_ENGINE_LLM_MOVED = Version(1, 1, 0)


def features(trtllm_version: str | None) -> Features:
    """Features for a version; an unknown or newer-than-known version gets the newest known features and a note."""
    newest = newest_container().trtllm
    note = None
    try:
        version = parse_version(trtllm_version or "")
    except ValueError:
        version = parse_version(newest)
        note = f"TensorRT-LLM version {trtllm_version!r} is not recognised; assuming {newest}"
    else:
        if version > parse_version(newest):
            note = f"TensorRT-LLM {trtllm_version} is newer than the newest known ({newest}); assuming its features"
            version = parse_version(newest)
        elif container_for(trtllm_version or "") is None:
            # Older or in-between versions keep their own features: the thresholds above were read for them.
            note = f"TensorRT-LLM {trtllm_version} is not shipped by a supported container; it may not work"
    if note:
        log.warning(note)
    known = container_for(trtllm_version or "") is not None
    return Features(
        version=trtllm_version or newest,
        known=known,
        note=note,
        has_logits_datatype=version >= LOGITS_DATATYPE,
        llmapi_triton_model=version >= LLMAPI_MODEL,
        backend_in_trtllm_repo=version >= BACKEND_MOVED,
        engine_llm_class=(
            "tensorrt_llm._tensorrt_engine.LLM" if version >= TENSORRT_ENGINE_LLM_MOVED else "tensorrt_llm.LLM"
        ),
        kv_cache_type_flag=version >= KV_CACHE_TYPE_FLAG,
    )
