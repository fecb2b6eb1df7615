"""Models, prompts and transformers' own decoders (static-cache generate(), continuous batching) for runtime_decode.py."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# Layer shapes of public Llama checkpoints, on top of tiny-llama's config (its 930-token vocabulary and special ids).
SHAPES: dict[str, dict] = {
    "tiny": {},
    "1b": {  # Llama-3.2-1B
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "rope_theta": 500000.0,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 131072,
    },
    "8b": {  # Llama-3.1-8B
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "rope_theta": 500000.0,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 131072,
    },
}
MARKER = "benchmark-shape.json"  # in a kept checkpoint: the config it was built from, so a reuse is never stale


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    """The engine's own rule for `auto`, made explicit so the engine and the checkpoint agree."""
    import torch

    if dtype != "auto":
        return dtype
    if device == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def shape_config(tiny: Path, shape: str) -> dict:
    config = json.loads((tiny / "config.json").read_text())
    overrides = dict(SHAPES[shape])
    if "rope_theta" in overrides:  # transformers 5 reads rope_parameters; the flat key is kept for older readers
        config["rope_parameters"] = {"rope_type": "default", "rope_theta": overrides["rope_theta"]}
    config.update(overrides)
    config.pop("dtype", None)
    return config


def build_model(config: dict, device: str, dtype: str):
    """A random-weight LlamaForCausalLM made directly on `device` in `dtype` (no float32 copy on the host)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(LlamaConfig(**config), dtype=getattr(torch, dtype))
    return model.eval()


def save_checkpoint(model, tiny: Path, target: Path, marker: dict) -> None:
    """Write the model as a safetensors checkpoint at `target`, atomically (staging folder, then rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        model.save_pretrained(staging)  # transformers 5 writes safetensors only
        for name in ("generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if (tiny / name).exists():
                shutil.copyfile(tiny / name, staging / name)
        (staging / MARKER).write_text(json.dumps(marker, sort_keys=True))
        if target.exists():
            shutil.rmtree(target)
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def checkpoint_reusable(target: Path, marker: dict) -> bool:
    try:
        return json.loads((target / MARKER).read_text()) == marker
    except (OSError, ValueError):
        return False


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


# --- prompts ---------------------------------------------------------------------------------------------------------
class Prompts:
    """Deterministic prompts of ordinary tokens from tiny-llama's tokenizer: BOS, then random non-special ids."""

    def __init__(self, tiny: Path, vocab_size: int) -> None:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tiny / "tokenizer.json"))
        special = set(tokenizer.get_added_tokens_decoder())
        self.bos = int(json.loads((tiny / "config.json").read_text())["bos_token_id"])
        self.ordinary = [i for i in range(min(tokenizer.get_vocab_size(), vocab_size)) if i not in special]

    def make(self, length: int, key: str) -> list[int]:
        """`key` names the request (phase, round, index): the same key always gives the same prompt."""
        rng = random.Random(key)  # str seeds hash with SHA-512: the same on every Python
        return [self.bos, *rng.choices(self.ordinary, k=length - 1)][:length]


# --- measurements ----------------------------------------------------------------------------------------------------
@dataclass
class Batch:
    """One batch of requests decoded to the end: wall time and per-token arrival times (seconds after the submit)."""

    wall: float
    arrivals: list[list[float]]  # per request, one time per new token
    outputs: list[list[int]] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(len(times) for times in self.arrivals)

    @property
    def rate(self) -> float:
        return self.tokens / self.wall

    @property
    def ttft(self) -> list[float]:
        return [times[0] for times in self.arrivals if times]

    @property
    def gaps(self) -> list[float]:
        return [later - earlier for times in self.arrivals for earlier, later in zip(times, times[1:], strict=False)]


def median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarise(batches: list[Batch]) -> dict:
    """Median tokens/s over the rounds; TTFT and inter-token latency pooled over every request of every round."""
    return {
        "rate": statistics.median(batch.rate for batch in batches),
        "rates": [batch.rate for batch in batches],
        "ttft_p50": median_or_none([t for batch in batches for t in batch.ttft]),
        "itl_p50": median_or_none([g for batch in batches for g in batch.gaps]),
        "tokens": [batch.tokens for batch in batches],
    }


def warm_until_stable(run, *, tolerance: float = 0.1, most: int = 6) -> list[float]:
    """Call `run()` (returns seconds) until two calls in a row agree within `tolerance`; return every time seen."""
    times = [run()]
    while len(times) < most:
        times.append(run())
        if abs(times[-1] - times[-2]) <= tolerance * times[-1]:
            break
    return times


def _sync(model) -> None:
    import torch

    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)


def generate_greedy(model, prompt: list[int], tokens: int) -> list[int]:
    """transformers' own greedy decode of one prompt, end token disabled (as the engine is asked to run)."""
    import torch

    with torch.inference_mode(), plain_model(model):
        ids = torch.tensor([prompt], device=model.device)
        mask = torch.ones_like(ids)  # explicit: token 0 is BOS here, not padding
        out = model.generate(
            ids, attention_mask=mask, max_new_tokens=tokens, do_sample=False, eos_token_id=None, pad_token_id=0
        )
    return out[0, len(prompt) :].tolist()


@contextlib.contextmanager
def plain_model(model):
    """The model as transformers runs it, for the references: its own SDPA attention, not the engine's slot attention,
    and none of the engine's compiled norms and MLPs (both are set on the model object the engine shares)."""
    before = getattr(model.config, "_attn_implementation", None)
    compiled = {m: m._compiled_call_impl for m in model.modules() if getattr(m, "_compiled_call_impl", None)}
    for module in compiled:
        module._compiled_call_impl = None
    if before not in (None, "sdpa"):
        model.set_attn_implementation("sdpa")
    try:
        yield
    finally:
        if before not in (None, "sdpa"):
            model.set_attn_implementation(before)
        for module, call in compiled.items():
            module._compiled_call_impl = call


def static_reference(model, prompts: list[list[int]], tokens: int, rounds: int) -> dict:
    """One batched static-cache generate() of all prompts, timed after warming up the same shape until it is stable.

    On CUDA transformers compiles the static-cache decode step on first use (torch.compile): the first warm-up call
    includes that compilation, which is why warm-up repeats until two calls agree."""
    import torch

    ids = torch.tensor(prompts, device=model.device)
    mask = torch.ones_like(ids)

    def run() -> float:
        started = time.perf_counter()
        out = model.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
            cache_implementation="static",
            pad_token_id=0,
        )
        _sync(model)
        wall = time.perf_counter() - started
        if out.shape[1] != ids.shape[1] + tokens:
            raise RuntimeError(f"generate() returned {out.shape[1] - ids.shape[1]} new tokens, not {tokens}")
        return wall

    with plain_model(model):
        warmup = warm_until_stable(run)
        walls = [run() for _ in range(rounds)]
    rates = [len(prompts) * tokens / wall for wall in walls]
    return {"rate": statistics.median(rates), "rates": rates, "warmup_s": warmup}


def cb_reference(model, prompts: list[list[int]], tokens: int, rounds: int) -> dict:
    """transformers' continuous batching (the manager API of 5.17 and 5.24): one warmed-up manager, then the
    requests all added at once per round; per-token timestamps give its TTFT and inter-token latency."""
    from transformers import GenerationConfig
    from transformers.generation.continuous_batching.utils import WorkloadHints

    # eos_token_id -1: the manager's own "no end token", so every request runs to `tokens`.
    config = GenerationConfig(max_new_tokens=tokens, do_sample=False, eos_token_id=-1)
    hints = WorkloadHints(
        max_prompt_length=max(map(len, prompts)), max_generated_length=tokens, num_requests=len(prompts)
    )
    with (
        plain_model(model),
        model.continuous_batching_context_manager(
            generation_config=config, workload_hints=hints, block=True, timeout=60
        ) as manager,
    ):

        def batch() -> Batch:
            started = time.perf_counter()
            ids = manager.add_requests(prompts, max_new_tokens=tokens, record_timestamps=True)
            results = {}
            while len(results) < len(ids):
                result = manager.get_result(timeout=60)
                if result is None:
                    raise RuntimeError("continuous batching stopped answering (no result in 60 s)")
                if result.is_finished():
                    if result.error is not None:
                        raise RuntimeError(f"continuous batching failed a request: {result.error}")
                    results[result.request_id] = result
            wall = time.perf_counter() - started
            arrivals = [[t - started for t in (results[i].timestamps or [])] for i in ids]
            return Batch(wall, arrivals, [list(results[i].generated_tokens) for i in ids])

        warmup = warm_until_stable(lambda: batch().wall)
        batches = [batch() for _ in range(rounds)]
    summary = summarise(batches)
    summary["warmup_s"] = warmup
    summary["outputs"] = batches[-1].outputs
    return summary


def first_difference(left: list[int], right: list[int]) -> int | None:
    """Index of the first token that differs (or where one is shorter); None when equal."""
    for index, (a, b) in enumerate(zip(left, right, strict=False)):
        if a != b:
            return index
    return None if len(left) == len(right) else min(len(left), len(right))
