"""The portable runtime's per-request decision on upstream's tensorrt_llm inputs (request_options.py, no Triton):
what it honours, what it ignores as TensorRT-LLM does with one beam, and the refusal naming what it cannot honour."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import model_code_path
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from upstream_contract import TENSORRT_LLM_INPUTS

from tritonrepo.repository.params import RepositoryParams
from tritonrepo.repository.render import render_repository

model_code_path("tensorrt_llm")
from request_options import HONOURED, IGNORED, REFUSED, read_request, refusals  # noqa: E402

VOCAB = 930
PAD = 1


def _request(**inputs) -> dict[str, np.ndarray]:
    """A request as Triton hands it to the model: [1, ...] arrays (batch dim first), scalars reshaped to [1]."""
    base = {
        "input_ids": np.array([[5, 6, 7]], dtype=np.int32),
        "input_lengths": np.array([3], dtype=np.int32),
        "request_output_len": np.array([4], dtype=np.int32),
    }
    return {**base, **inputs}


def _read(inputs: dict[str, np.ndarray]):
    return read_request(inputs.get, vocab_size=VOCAB, max_input_len=512)


def test_every_declared_input_has_a_decision():
    config = text_format.Parse(
        render_repository(RepositoryParams(runtime="hf", max_input_len=512, max_seq_len=1024)).files[
            "tensorrt_llm/config.pbtxt"
        ],
        model_config_pb2.ModelConfig(),
    )
    declared = {tensor.name for tensor in config.input}
    decided = set(HONOURED) | set(IGNORED) | set(REFUSED)
    assert declared == decided, {"undecided": declared - decided, "not declared": decided - declared}
    assert not set(HONOURED) & set(REFUSED) and not set(IGNORED) & set(REFUSED)
    assert {t.name for t in TENSORRT_LLM_INPUTS} <= declared


# What upstream's ensemble, BLS and preprocessing send when the client set nothing: never refused.
NEUTRAL = {
    "embedding_bias": np.zeros((1, 0), dtype=np.float32),  # upstream preprocessing without bias words
    "decoder_input_ids": np.array([[PAD]], dtype=np.int32),  # upstream preprocessing without decoder text
    "decoder_input_lengths": np.array([1], dtype=np.int32),
    "pad_id": np.array([PAD], dtype=np.int32),
    "return_context_logits": np.array([False]),  # upstream BLS always sends these two
    "return_generation_logits": np.array([False]),
    "return_kv_cache_reuse_stats": np.array([False]),
    "return_perf_metrics": np.array([False]),
    "num_return_sequences": np.array([1], dtype=np.int32),
    "beam_width": np.array([1], dtype=np.int32),
    "runtime_top_p_decay": np.array([1.0], dtype=np.float32),
    "lora_weights": np.zeros((1, 0, 0), dtype=np.float16),
    "lora_config": np.zeros((1, 0, 3), dtype=np.int32),
    "prompt_embedding_table": np.zeros((1, 0, 0), dtype=np.float16),
    "prompt_table_extra_ids": np.zeros((1, 3), dtype=np.uint64),  # upstream preprocessing: 0 for in-vocab ids
    "prompt_vocab_size": np.array([0], dtype=np.int32),
    "skip_cross_attn_blocks": np.array([[False]]),
    "guided_decoding_guide": np.array([[b""]], dtype=object),
    "len_penalty": np.array([1.5], dtype=np.float32),  # beam-search settings: no effect with one beam
    "early_stopping": np.array([True]),
    "draft_acceptance_threshold": np.array([0.5], dtype=np.float32),
}


def test_neutral_values_are_accepted():
    options = _read(_request(**NEUTRAL))
    assert options.prompt_ids == [5, 6, 7]
    assert options.params.embedding_bias is None
    assert not options.params.return_context_logits and not options.params.return_generation_logits


# One value per refused input that sets its feature; the error must name the input.
SET = {
    "lora_task_id": np.array([0], dtype=np.uint64),  # task 0 is a real adapter id in TensorRT-LLM
    "lora_weights": np.ones((1, 2, 8), dtype=np.float16),
    "lora_config": np.array([[[0, 0, 4]]], dtype=np.int32),
    "prompt_embedding_table": np.ones((1, 2, 64), dtype=np.float16),
    "prompt_table_extra_ids": np.array([[0, 0, 9]], dtype=np.uint64),
    "prompt_vocab_size": np.array([2], dtype=np.int32),
    "encoder_input_features": np.ones((1, 3, 8), dtype=np.float16),
    "encoder_output_lengths": np.array([3], dtype=np.int32),
    "decoder_input_ids": np.array([[PAD, 42]], dtype=np.int32),
    "decoder_input_lengths": np.array([2], dtype=np.int32),
    "cross_attention_mask": np.ones((1, 3, 2), dtype=bool),
    "skip_cross_attn_blocks": np.array([[True]]),
    "mrope_rotary_cos_sin": np.ones((1, 8), dtype=np.float32),
    "mrope_position_deltas": np.array([[3]], dtype=np.int64),
    "draft_input_ids": np.array([[8, 9]], dtype=np.int32),
    "draft_logits": np.ones((1, 2, VOCAB), dtype=np.float32),
    "lookahead_window_size": np.array([[4]], dtype=np.int32),
    "lookahead_ngram_size": np.array([[3]], dtype=np.int32),
    "lookahead_verification_set_size": np.array([[2]], dtype=np.int32),
    "guided_decoding_guide_type": np.array([[b"json"]], dtype=object),
    "guided_decoding_guide": np.array([[b"{}"]], dtype=object),
    "context_phase_params": np.ones((1, 16), dtype=np.uint8),
    "retention_token_range_starts": np.array([[0]], dtype=np.int32),
    "retention_token_range_ends": np.array([[2]], dtype=np.int32),
    "retention_token_range_priorities": np.array([[80]], dtype=np.int32),
    "retention_token_range_durations_ms": np.array([[100]], dtype=np.int32),
    "retention_decode_priority": np.array([[50]], dtype=np.int32),
    "retention_decode_duration_ms": np.array([[100]], dtype=np.int32),
    "runtime_top_p_decay": np.array([0.9], dtype=np.float32),
    "return_kv_cache_reuse_stats": np.array([True]),
    "return_perf_metrics": np.array([True]),
}


def test_every_refused_input_has_a_value_that_sets_it():
    assert set(SET) == set(REFUSED)


@pytest.mark.parametrize("name", sorted(SET))
def test_an_input_the_runtime_cannot_honour_is_refused_by_name(name):
    with pytest.raises(ValueError, match=rf"^{name}: .*(not supported|no paged KV cache|not reported)"):
        _read(_request(pad_id=np.array([PAD], dtype=np.int32), **{name: SET[name]}))


@pytest.mark.parametrize(
    "name, value, words",
    [
        ("beam_width", 4, "beam_width 4: beam search is not supported"),
        ("num_return_sequences", 3, "num_return_sequences 3: the hf runtime returns one sequence per request; send 3"),
    ],
)
def test_more_beams_or_sequences_than_one_are_refused_with_the_number(name, value, words):
    with pytest.raises(ValueError, match=words):
        _read(_request(**{name: np.array([value], dtype=np.int32)}))


def test_every_refusal_of_a_request_is_reported_at_once():
    messages = refusals(
        _request(lora_task_id=SET["lora_task_id"], prompt_embedding_table=SET["prompt_embedding_table"]).get
    )
    assert [m.split(":")[0] for m in messages] == ["lora_task_id", "prompt_embedding_table"]


def test_decoder_ids_other_than_the_pad_token_are_refused():
    with pytest.raises(ValueError, match="decoder_input_ids: .*decoder-only"):
        _read(_request(pad_id=np.array([PAD], dtype=np.int32), decoder_input_ids=np.array([[7]], dtype=np.int32)))


def test_honoured_inputs_reach_the_sampling_parameters():
    bias = np.zeros((1, VOCAB), dtype=np.float32)
    bias[0, 17] = 2.5
    options = _read(
        _request(
            embedding_bias=bias,
            min_tokens=np.array([3], dtype=np.int32),
            seed=np.array([9], dtype=np.uint64),
            return_context_logits=np.array([True]),
            return_generation_logits=np.array([True]),
            return_num_input_tokens=np.array([True]),
            return_num_output_tokens=np.array([True]),
            streaming=np.array([True]),
        )
    )
    params = options.params
    assert params.embedding_bias[17] == 2.5 and len(params.embedding_bias) == VOCAB
    assert (params.min_length, params.seed) == (3, 9)
    assert params.return_context_logits and params.return_generation_logits
    assert options.return_num_input_tokens and options.return_num_output_tokens and options.streaming


def test_old_and_new_names_of_a_setting_agree_or_are_refused():
    same = _read(_request(min_length=np.array([2], np.int32), min_tokens=np.array([2], np.int32)))
    assert same.params.min_length == 2
    assert _read(_request(random_seed=np.array([4], np.uint64))).params.seed == 4
    with pytest.raises(ValueError, match=r"random_seed \(4\) and seed \(5\)"):
        _read(_request(random_seed=np.array([4], np.uint64), seed=np.array([5], np.uint64)))


def test_an_embedding_bias_wider_than_the_vocabulary_is_refused_and_a_narrower_one_accepted():
    with pytest.raises(ValueError, match=f"embedding_bias has {VOCAB + 1} entries, more than .* \\({VOCAB}\\)"):
        _read(_request(embedding_bias=np.zeros((1, VOCAB + 1), np.float32)))
    assert len(_read(_request(embedding_bias=np.ones((1, 10), np.float32))).params.embedding_bias) == 10


def test_token_ids_past_the_vocabulary_are_refused_as_prompt_table_ids():
    with pytest.raises(ValueError, match=f"input_ids: token id {VOCAB + 3} is outside .*prompt table"):
        _read(_request(input_ids=np.array([[5, VOCAB + 3, 7]], dtype=np.int32)))
