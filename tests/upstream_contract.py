"""Upstream's tensor contract as data (names, types, dims, mappings), read from tensorrtllm_backend v0.17.0 and
NVIDIA/TensorRT-LLM triton_backend (newest); plus our own rendering of upstream's v0.17 ensemble from that data.

Template-typed tensors take the values upstream's instructions fill in: logits TYPE_FP32, prompt tables and
encoder features TYPE_FP16.
"""

from __future__ import annotations

from dataclasses import dataclass

SCALAR = "scalar"  # dims [ 1 ] reshaped to [ ] (upstream's per-request scalars)


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str
    dims: tuple[int, ...] | str  # SCALAR, or the dims as declared

    @property
    def declared_dims(self) -> tuple[int, ...]:
        return (1,) if self.dims == SCALAR else self.dims  # type: ignore[return-value]


def _scalars(data_type: str, *names: str) -> list[Tensor]:
    return [Tensor(name, data_type, SCALAR) for name in names]


# --- the tensorrt_llm model: v0.17.0 --------------------------------------------------------------------------------
TENSORRT_LLM_INPUTS_V017 = [
    Tensor("input_ids", "TYPE_INT32", (-1,)),
    Tensor("encoder_input_features", "TYPE_FP16", (-1, -1)),
    *_scalars("TYPE_INT32", "encoder_output_lengths", "input_lengths", "request_output_len", "num_return_sequences"),
    Tensor("draft_input_ids", "TYPE_INT32", (-1,)),
    Tensor("decoder_input_ids", "TYPE_INT32", (-1,)),
    *_scalars("TYPE_INT32", "decoder_input_lengths"),
    Tensor("draft_logits", "TYPE_FP32", (-1, -1)),
    *_scalars("TYPE_FP32", "draft_acceptance_threshold"),
    *_scalars("TYPE_INT32", "end_id", "pad_id"),
    Tensor("stop_words_list", "TYPE_INT32", (2, -1)),
    Tensor("bad_words_list", "TYPE_INT32", (2, -1)),
    Tensor("embedding_bias", "TYPE_FP32", (-1,)),
    *_scalars("TYPE_INT32", "beam_width"),
    *_scalars("TYPE_FP32", "temperature"),
    *_scalars("TYPE_INT32", "runtime_top_k"),
    *_scalars("TYPE_FP32", "runtime_top_p", "runtime_top_p_min", "runtime_top_p_decay"),
    *_scalars("TYPE_INT32", "runtime_top_p_reset_ids"),
    *_scalars("TYPE_FP32", "len_penalty"),
    *_scalars("TYPE_BOOL", "early_stopping"),
    *_scalars("TYPE_FP32", "repetition_penalty"),
    *_scalars("TYPE_INT32", "min_length"),
    *_scalars("TYPE_FP32", "beam_search_diversity_rate", "presence_penalty", "frequency_penalty"),
    *_scalars("TYPE_UINT64", "random_seed"),
    *_scalars(
        "TYPE_BOOL",
        "return_log_probs",
        "return_context_logits",
        "return_generation_logits",
        "return_kv_cache_reuse_stats",
        "exclude_input_in_output",
        "stop",
        "streaming",
    ),
    Tensor("prompt_embedding_table", "TYPE_FP16", (-1, -1)),
    Tensor("prompt_table_extra_ids", "TYPE_UINT64", (-1,)),
    *_scalars("TYPE_INT32", "prompt_vocab_size"),
    Tensor("cross_attention_mask", "TYPE_BOOL", (-1, -1)),
    *_scalars("TYPE_UINT64", "lora_task_id"),
    Tensor("lora_weights", "TYPE_FP16", (-1, -1)),
    Tensor("lora_config", "TYPE_INT32", (-1, 3)),
    Tensor("context_phase_params", "TYPE_UINT8", (-1,)),
    Tensor("skip_cross_attn_blocks", "TYPE_BOOL", (1,)),
    Tensor("retention_token_range_starts", "TYPE_INT32", (-1,)),
    Tensor("retention_token_range_ends", "TYPE_INT32", (-1,)),
    Tensor("retention_token_range_priorities", "TYPE_INT32", (-1,)),
    Tensor("retention_token_range_durations_ms", "TYPE_INT32", (-1,)),
    Tensor("retention_decode_priority", "TYPE_INT32", (1,)),
    Tensor("retention_decode_duration_ms", "TYPE_INT32", (1,)),
]

# Added after v0.17 (the newest triton_backend config; it renamed min_length -> min_tokens, random_seed -> seed and
# return_kv_cache_reuse_stats -> return_perf_metrics).
TENSORRT_LLM_INPUTS_ADDED = [
    *_scalars("TYPE_INT32", "min_tokens"),
    *_scalars("TYPE_UINT64", "seed"),
    *_scalars("TYPE_BOOL", "return_perf_metrics", "return_num_input_tokens", "return_num_output_tokens"),
    Tensor("mrope_rotary_cos_sin", "TYPE_FP32", (-1,)),
    Tensor("mrope_position_deltas", "TYPE_INT64", (1,)),
    Tensor("guided_decoding_guide_type", "TYPE_STRING", (1,)),
    Tensor("guided_decoding_guide", "TYPE_STRING", (1,)),
    Tensor("lookahead_window_size", "TYPE_INT32", (1,)),
    Tensor("lookahead_ngram_size", "TYPE_INT32", (1,)),
    Tensor("lookahead_verification_set_size", "TYPE_INT32", (1,)),
]

TENSORRT_LLM_INPUTS = TENSORRT_LLM_INPUTS_V017 + TENSORRT_LLM_INPUTS_ADDED
TENSORRT_LLM_REQUIRED = {"input_lengths", "request_output_len"}  # upstream makes even input_ids optional

TENSORRT_LLM_OUTPUTS = [
    Tensor("output_ids", "TYPE_INT32", (-1, -1)),
    Tensor("sequence_length", "TYPE_INT32", (-1,)),
    Tensor("cum_log_probs", "TYPE_FP32", (-1,)),
    Tensor("output_log_probs", "TYPE_FP32", (-1, -1)),
    Tensor("context_logits", "TYPE_FP32", (-1, -1)),
    Tensor("generation_logits", "TYPE_FP32", (-1, -1, -1)),
    Tensor("batch_index", "TYPE_INT32", (1,)),
    Tensor("sequence_index", "TYPE_INT32", (1,)),
    Tensor("context_phase_params", "TYPE_UINT8", (-1,)),
    Tensor("kv_cache_alloc_new_blocks", "TYPE_INT32", (1,)),
    Tensor("kv_cache_reused_blocks", "TYPE_INT32", (1,)),
    Tensor("kv_cache_alloc_total_blocks", "TYPE_INT32", (1,)),
    # newest only
    Tensor("arrival_time_ns", "TYPE_INT64", (1,)),
    Tensor("first_scheduled_time_ns", "TYPE_INT64", (1,)),
    Tensor("first_token_time_ns", "TYPE_INT64", (1,)),
    Tensor("last_token_time_ns", "TYPE_INT64", (1,)),
    Tensor("acceptance_rate", "TYPE_FP32", (1,)),
    Tensor("total_accepted_draft_tokens", "TYPE_INT32", (1,)),
    Tensor("total_draft_tokens", "TYPE_INT32", (1,)),
    Tensor("num_input_tokens", "TYPE_INT32", (1,)),
    Tensor("num_output_tokens", "TYPE_INT32", (1,)),
]


# --- the v0.17 ensemble: preprocessing -> tensorrt_llm -> postprocessing ---------------------------------------------
def _optional(data_type: str, dims: tuple[int, ...], *names: str) -> list[tuple[str, str, tuple[int, ...], bool]]:
    return [(name, data_type, dims, True) for name in names]


ENSEMBLE_V017_INPUTS = [
    ("text_input", "TYPE_STRING", (1,), False),
    *_optional("TYPE_STRING", (1,), "decoder_text_input"),
    ("max_tokens", "TYPE_INT32", (1,), False),
    *_optional("TYPE_INT32", (1,), "num_return_sequences"),
    *_optional("TYPE_STRING", (-1,), "bad_words", "stop_words"),
    *_optional("TYPE_BOOL", (1,), "exclude_input_in_output"),
    *_optional("TYPE_INT32", (1,), "end_id", "pad_id", "top_k"),
    *_optional("TYPE_FP32", (1,), "top_p", "temperature", "length_penalty", "repetition_penalty"),
    *_optional("TYPE_INT32", (1,), "min_length"),
    *_optional("TYPE_FP32", (1,), "presence_penalty", "frequency_penalty"),
    *_optional("TYPE_UINT64", (1,), "random_seed"),
    *_optional("TYPE_BOOL", (1,), "return_log_probs", "return_context_logits", "return_generation_logits"),
    *_optional("TYPE_BOOL", (1,), "return_kv_cache_reuse_stats"),
    *_optional("TYPE_INT32", (1,), "beam_width"),
    *_optional("TYPE_BOOL", (1,), "stream"),
    *_optional("TYPE_FP16", (-1, -1), "prompt_embedding_table"),
    *_optional("TYPE_UINT64", (1,), "prompt_table_extra_id"),
    *_optional("TYPE_INT32", (1,), "prompt_vocab_size"),
    *_optional("TYPE_STRING", (-1,), "embedding_bias_words"),
    *_optional("TYPE_FP32", (-1,), "embedding_bias_weights"),
    *_optional("TYPE_UINT64", (1,), "lora_task_id"),
    *_optional("TYPE_FP16", (-1, -1), "lora_weights"),
    *_optional("TYPE_INT32", (-1, 3), "lora_config"),
]

ENSEMBLE_V017_OUTPUTS = [
    ("text_output", "TYPE_STRING", (-1,)),
    ("cum_log_probs", "TYPE_FP32", (-1,)),
    ("output_log_probs", "TYPE_FP32", (-1, -1)),
    ("context_logits", "TYPE_FP32", (-1, -1)),
    ("generation_logits", "TYPE_FP32", (-1, -1, -1)),
    ("batch_index", "TYPE_INT32", (1,)),
    ("sequence_index", "TYPE_INT32", (1,)),
    ("kv_cache_alloc_new_blocks", "TYPE_INT32", (1,)),
    ("kv_cache_reused_blocks", "TYPE_INT32", (1,)),
    ("kv_cache_alloc_total_blocks", "TYPE_INT32", (1,)),
]

# (model, [(model input, ensemble tensor)], [(model output, ensemble tensor)])
ENSEMBLE_V017_STEPS = [
    (
        "preprocessing",
        [
            ("QUERY", "text_input"), ("DECODER_QUERY", "decoder_text_input"), ("REQUEST_OUTPUT_LEN", "max_tokens"),
            ("BAD_WORDS_DICT", "bad_words"), ("STOP_WORDS_DICT", "stop_words"),
            ("EMBEDDING_BIAS_WORDS", "embedding_bias_words"), ("EMBEDDING_BIAS_WEIGHTS", "embedding_bias_weights"),
            ("END_ID", "end_id"), ("PAD_ID", "pad_id"), ("PROMPT_TABLE_EXTRA_ID", "prompt_table_extra_id"),
        ],
        [
            ("REQUEST_INPUT_LEN", "_REQUEST_INPUT_LEN"), ("INPUT_ID", "_INPUT_ID"),
            ("REQUEST_DECODER_INPUT_LEN", "_REQUEST_DECODER_INPUT_LEN"), ("DECODER_INPUT_ID", "_DECODER_INPUT_ID"),
            ("REQUEST_OUTPUT_LEN", "_REQUEST_OUTPUT_LEN"), ("STOP_WORDS_IDS", "_STOP_WORDS_IDS"),
            ("BAD_WORDS_IDS", "_BAD_WORDS_IDS"), ("EMBEDDING_BIAS", "_EMBEDDING_BIAS"),
            ("OUT_END_ID", "_PREPROCESSOR_END_ID"), ("OUT_PAD_ID", "_PREPROCESSOR_PAD_ID"),
            ("OUT_PROMPT_TABLE_EXTRA_IDS", "_OUT_PROMPT_TABLE_EXTRA_IDS"),
        ],
    ),
    (
        "tensorrt_llm",
        [
            ("input_ids", "_INPUT_ID"), ("decoder_input_ids", "_DECODER_INPUT_ID"),
            ("input_lengths", "_REQUEST_INPUT_LEN"), ("decoder_input_lengths", "_REQUEST_DECODER_INPUT_LEN"),
            ("exclude_input_in_output", "exclude_input_in_output"), ("request_output_len", "_REQUEST_OUTPUT_LEN"),
            ("end_id", "_PREPROCESSOR_END_ID"), ("pad_id", "_PREPROCESSOR_PAD_ID"),
            ("embedding_bias", "_EMBEDDING_BIAS"), ("runtime_top_k", "top_k"), ("runtime_top_p", "top_p"),
            ("temperature", "temperature"), ("len_penalty", "length_penalty"),
            ("repetition_penalty", "repetition_penalty"), ("min_length", "min_length"),
            ("presence_penalty", "presence_penalty"), ("frequency_penalty", "frequency_penalty"),
            ("random_seed", "random_seed"), ("return_log_probs", "return_log_probs"),
            ("return_context_logits", "return_context_logits"),
            ("return_generation_logits", "return_generation_logits"),
            ("return_kv_cache_reuse_stats", "return_kv_cache_reuse_stats"),
            ("num_return_sequences", "num_return_sequences"), ("beam_width", "beam_width"), ("streaming", "stream"),
            ("prompt_embedding_table", "prompt_embedding_table"), ("prompt_vocab_size", "prompt_vocab_size"),
            ("stop_words_list", "_STOP_WORDS_IDS"), ("bad_words_list", "_BAD_WORDS_IDS"),
            ("prompt_table_extra_ids", "_OUT_PROMPT_TABLE_EXTRA_IDS"), ("lora_task_id", "lora_task_id"),
            ("lora_weights", "lora_weights"), ("lora_config", "lora_config"),
        ],
        [
            ("output_ids", "_TOKENS_BATCH"), ("sequence_length", "_SEQUENCE_LENGTH"),
            ("cum_log_probs", "cum_log_probs"), ("output_log_probs", "output_log_probs"),
            ("context_logits", "context_logits"), ("generation_logits", "generation_logits"),
            ("batch_index", "batch_index"), ("sequence_index", "sequence_index"),
            ("kv_cache_alloc_new_blocks", "kv_cache_alloc_new_blocks"),
            ("kv_cache_reused_blocks", "kv_cache_reused_blocks"),
            ("kv_cache_alloc_total_blocks", "kv_cache_alloc_total_blocks"),
        ],
    ),
    (
        "postprocessing",
        [("TOKENS_BATCH", "_TOKENS_BATCH"), ("SEQUENCE_LENGTH", "_SEQUENCE_LENGTH")],
        [("OUTPUT", "text_output")],
    ),
]  # fmt: skip


def _dims(dims: tuple[int, ...]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def ensemble_v017_config(max_batch_size: int) -> str:
    """config.pbtxt text of an ensemble with upstream v0.17's inputs, outputs and step mappings."""
    lines = ['name: "ensemble"', 'platform: "ensemble"', f"max_batch_size: {max_batch_size}", "input ["]
    inputs = [
        f'  {{ name: "{name}" data_type: {data_type} dims: {_dims(dims)}{" optional: true" if optional else ""} }}'
        for name, data_type, dims, optional in ENSEMBLE_V017_INPUTS
    ]
    lines += [",\n".join(inputs), "]", "output ["]
    lines.append(
        ",\n".join(
            f'  {{ name: "{name}" data_type: {data_type} dims: {_dims(dims)} }}'
            for name, data_type, dims in ENSEMBLE_V017_OUTPUTS
        )
    )
    lines += ["]", "ensemble_scheduling {", "  step ["]
    steps = []
    for model, input_map, output_map in ENSEMBLE_V017_STEPS:
        body = [f'      model_name: "{model}"', "      model_version: -1"]
        body += [f'      input_map {{ key: "{key}" value: "{value}" }}' for key, value in input_map]
        body += [f'      output_map {{ key: "{key}" value: "{value}" }}' for key, value in output_map]
        steps.append("    {\n" + "\n".join(body) + "\n    }")
    lines += [",\n".join(steps), "  ]", "}"]
    return "\n".join(lines) + "\n"
