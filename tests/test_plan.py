"""Runtime choice and limits are pure functions of what the machine has and what the user asked."""

from __future__ import annotations

import pytest

from tritonrepo.errors import PlanError
from tritonrepo.planning.limits import plan_limits
from tritonrepo.planning.planner import choose_runtime


@pytest.mark.parametrize(
    "trt, gpus, expected_runtime, words",
    [
        (False, 0, "hf", "TensorRT-LLM and a GPU not found"),
        (True, 0, "hf", "a GPU not found"),
        (False, 2, "hf", "TensorRT-LLM not found"),
        (True, 1, "tensorrtllm", "1 GPU"),
    ],
)
def test_auto_falls_back_to_the_portable_runtime_and_says_why(trt, gpus, expected_runtime, words):
    choice = choose_runtime("auto", tensorrt_llm_installed=trt, gpu_count=gpus)
    assert choice.runtime == expected_runtime and words in choice.reason


def test_hf_is_always_available():
    assert choose_runtime("hf", tensorrt_llm_installed=False, gpu_count=0).runtime == "hf"


def test_tensorrtllm_without_tensorrt_llm_is_refused_with_what_is_missing():
    with pytest.raises(PlanError, match="needs TensorRT-LLM and a GPU") as raised:
        choose_runtime("tensorrtllm", tensorrt_llm_installed=False, gpu_count=0)
    assert "--runtime hf" in str(raised.value)


def test_unknown_runtime_is_refused():
    with pytest.raises(PlanError, match="unknown runtime 'vllm'"):
        choose_runtime("vllm", tensorrt_llm_installed=True, gpu_count=1)


def test_limits_default_from_the_model_context():
    limits = plan_limits({"max_position_embeddings": 2048})
    assert (limits.max_seq_len, limits.max_input_len, limits.max_batch_size) == (2048, 1024, 8)
    assert plan_limits({"max_position_embeddings": 131072}).max_seq_len == 4096  # capped for the portable runtime


def test_user_limits_win_and_are_checked():
    limits = plan_limits({"max_position_embeddings": 8192}, max_seq_len=8192, max_input_len=4096, max_batch_size=2)
    assert (limits.max_seq_len, limits.max_input_len, limits.max_batch_size) == (8192, 4096, 2)
    with pytest.raises(PlanError, match="exceeds the model's context length 2048"):
        plan_limits({"max_position_embeddings": 2048}, max_seq_len=4096)
    with pytest.raises(PlanError, match="must be smaller than --max-seq-len 1024"):
        plan_limits({"max_position_embeddings": 2048}, max_seq_len=1024, max_input_len=1024)
