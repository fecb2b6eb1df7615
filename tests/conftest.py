"""Shared fixtures: an isolated cache and offline Hub, the tiny model, and paths into all_models/."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "all_models" / "inflight_batcher_llm"


def model_code_path(model: str) -> Path:
    """The version folder of one of our Triton Python models, to import its Triton-free modules in tests."""
    path = PIPELINE / model / "1"
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory):
    """No test reads or writes the user's caches, and nothing reaches the Hugging Face Hub."""
    patch = pytest.MonkeyPatch()
    patch.setenv("TRITONREPO_CACHE", str(tmp_path_factory.mktemp("tritonrepo-cache")))
    patch.setenv("HF_HUB_OFFLINE", "1")
    patch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf-home")))
    patch.delenv("TRITONREPO_TRITONSERVER", raising=False)
    yield
    patch.undo()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from tritonrepo.source.tiny_llama import create_tiny_llama

    return create_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture(scope="session")
def tiny_reference_model(tiny_model_dir):
    """The checkpoint in plain transformers, the reference our runtime must match."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()


def reference_greedy(model, tokenizer, prompt: str, max_new_tokens: int) -> list[int]:
    import torch

    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return out[0, ids.shape[1] :].tolist()
