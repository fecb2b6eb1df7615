"""One request's tensorrt_llm inputs, read for the portable runtime: what it honours, and a refusal naming the input
for anything set that it cannot honour.

No Triton imports: `read_request` takes a `get(name) -> numpy array or None`, so tests drive it with plain dicts.
An input that is absent, empty or at its neutral value is never refused: upstream's ensemble, BLS and preprocessing
pass optional inputs through (return_context_logits false, an empty embedding_bias, decoder_input_ids [pad_id]).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from hf_engine import SamplingParams

Get = Callable[[str], "np.ndarray | None"]

# Why each feature is refused when set; the inputs that carry it, with the value that means "not used".
_DECODER_ONLY = "the hf runtime serves decoder-only models (transformers AutoModelForCausalLM); encoder-decoder inputs"
_UNSUPPORTED = {
    "LoRA adapters are not supported by the hf runtime (merge the adapter into the checkpoint, or use the tensorrtllm "
    "runtime)": ("lora_task_id", "lora_weights", "lora_config"),
    "prompt tables (p-tuning) are not supported by the hf runtime": (
        "prompt_embedding_table",
        "prompt_table_extra_ids",
        "prompt_vocab_size",
    ),
    f"{_DECODER_ONLY} are not supported": (
        "encoder_input_features",
        "encoder_output_lengths",
        "decoder_input_ids",
        "decoder_input_lengths",
        "cross_attention_mask",
        "skip_cross_attn_blocks",
    ),
    "multimodal rotary embeddings (mrope) are not supported by the hf runtime": (
        "mrope_rotary_cos_sin",
        "mrope_position_deltas",
    ),
    "speculative decoding (draft tokens, lookahead) is not supported by the hf runtime": (
        "draft_input_ids",
        "draft_logits",
        "lookahead_window_size",
        "lookahead_ngram_size",
        "lookahead_verification_set_size",
    ),
    "guided decoding is not supported by the hf runtime": ("guided_decoding_guide_type", "guided_decoding_guide"),
    "disaggregated serving (context phase parameters) is not supported by the hf runtime": ("context_phase_params",),
    "KV-cache retention is not supported: the hf runtime keeps no KV cache between requests": (
        "retention_token_range_starts",
        "retention_token_range_ends",
        "retention_token_range_priorities",
        "retention_token_range_durations_ms",
        "retention_decode_priority",
        "retention_decode_duration_ms",
    ),
    "top-p decay is not supported by the hf runtime; use runtime_top_p alone": ("runtime_top_p_decay",),
    "the hf runtime keeps no paged KV cache, so it has no block reuse counts to report": (
        "return_kv_cache_reuse_stats",
    ),
    "per-request performance metrics are not reported by the hf runtime": ("return_perf_metrics",),
}

HONOURED = (
    "input_ids", "input_lengths", "request_output_len", "end_id", "stop_words_list", "bad_words_list",
    "embedding_bias", "beam_width", "num_return_sequences", "temperature", "runtime_top_k", "runtime_top_p",
    "repetition_penalty", "presence_penalty", "frequency_penalty", "min_length", "min_tokens", "random_seed", "seed",
    "return_log_probs", "return_context_logits", "return_generation_logits", "return_num_input_tokens",
    "return_num_output_tokens", "exclude_input_in_output", "streaming",
    "stop",  # model.py: cancels the request with the same id
)  # fmt: skip
REFUSED = tuple(name for names in _UNSUPPORTED.values() for name in names)

# Accepted without effect, as in TensorRT-LLM with one beam: beam-search settings; draft_acceptance_threshold,
# runtime_top_p_min and runtime_top_p_reset_ids only shape features refused above when set (draft tokens, decay).
IGNORED = (
    "len_penalty",
    "early_stopping",
    "beam_search_diversity_rate",
    "draft_acceptance_threshold",
    "runtime_top_p_min",
    "runtime_top_p_reset_ids",
    "pad_id",
)


@dataclass
class RequestOptions:
    prompt_ids: list[int]
    params: SamplingParams
    streaming: bool
    exclude_input: bool
    return_num_input_tokens: bool = False
    return_num_output_tokens: bool = False


def _scalar(get: Get, name: str, default, cast=int):
    array = get(name)
    return default if array is None or array.size == 0 else cast(array.reshape(-1)[0])


# Inputs with a value that means "not used" besides absent or empty; any other non-empty input is set.
_NEUTRAL = {
    # upstream's preprocessing sends [pad_id] (length 1) when there is no decoder text
    "decoder_input_ids": lambda values, pad_id: values.size == 1 and pad_id is not None and int(values[0]) == pad_id,
    "decoder_input_lengths": lambda values, pad_id: int(values[0]) <= 1,
    "encoder_output_lengths": lambda values, pad_id: int(values[0]) == 0,
    "prompt_table_extra_ids": lambda values, pad_id: not values.any(),  # upstream marks in-vocabulary ids with 0
    "prompt_vocab_size": lambda values, pad_id: int(values[0]) == 0,
    "runtime_top_p_decay": lambda values, pad_id: float(values[0]) == 1.0,
}


def _is_set(get: Get, name: str, pad_id: int | None) -> bool:
    """Whether an unsupported input carries a value that would change the result (see the module docstring)."""
    array = get(name)
    if array is None or array.size == 0:
        return False
    values = array.reshape(-1)
    if name in _NEUTRAL:
        return not _NEUTRAL[name](values, pad_id)
    if array.dtype == np.bool_:  # a flag (return_kv_cache_reuse_stats, skip_cross_attn_blocks): false is off
        return bool(values.any())
    if array.dtype == np.object_:  # strings: an empty guide is no guide
        return any(v not in (b"", "") for v in values)
    return True  # data (LoRA weights, a task id, draft tokens, retention ranges): present means used


def _alias(get: Get, old: str, new: str, default, cast=int):
    """An input upstream renamed (min_length -> min_tokens, random_seed -> seed): either name, not both differently."""
    first, second = _scalar(get, old, None, cast), _scalar(get, new, None, cast)
    if first is not None and second is not None and first != second:
        raise ValueError(f"{old} ({first}) and {new} ({second}) are the same setting with different values; set one")
    return first if first is not None else second if second is not None else default


def refusals(get: Get) -> list[str]:
    """One message per unsupported input that is set, naming the input and why."""
    pad_id = _scalar(get, "pad_id", None)
    messages = []
    for reason, names in _UNSUPPORTED.items():
        messages += [f"{name}: {reason}" for name in names if _is_set(get, name, pad_id)]
    beam_width = _scalar(get, "beam_width", 1)
    if beam_width not in (0, 1):
        messages.append(f"beam_width {beam_width}: beam search is not supported by the hf runtime; use beam_width 1")
    returns = _scalar(get, "num_return_sequences", 1)
    if returns not in (0, 1):
        messages.append(
            f"num_return_sequences {returns}: the hf runtime returns one sequence per request; send {returns} "
            "requests (with different seeds) instead"
        )
    return messages


def _embedding_bias(get: Get, vocab_size: int) -> list[float] | None:
    array = get("embedding_bias")
    if array is None or array.size == 0:
        return None
    bias = array.reshape(-1)
    if bias.size > vocab_size:
        raise ValueError(f"embedding_bias has {bias.size} entries, more than the model's vocabulary ({vocab_size})")
    return bias.astype(np.float32).tolist()  # a shorter bias (a tokenizer's vocabulary) covers the first entries


def _prompt_ids(get: Get, vocab_size: int, max_input_len: int) -> list[int]:
    input_ids = get("input_ids")
    if input_ids is None:
        raise ValueError("input_ids is required by the hf runtime (it serves decoder-only models)")
    if input_ids.ndim > 1 and input_ids.shape[0] != 1:
        raise ValueError(f"one sequence per request is supported, got a batch of {input_ids.shape[0]}")
    length = _scalar(get, "input_lengths", input_ids.size)
    prompt_ids = input_ids.reshape(-1)[:length].tolist()
    if max_input_len and len(prompt_ids) > max_input_len:
        raise ValueError(f"input length {len(prompt_ids)} exceeds max_input_len {max_input_len}")
    outside = [t for t in prompt_ids if not 0 <= t < vocab_size]
    if outside:  # ids past the vocabulary address a prompt table; the embedding lookup would fail on them
        raise ValueError(
            f"input_ids: token id {outside[0]} is outside the model's vocabulary (0..{vocab_size - 1}); ids past the "
            "vocabulary address a prompt table, which the hf runtime does not support"
        )
    return prompt_ids


def read_request(
    get: Get, *, vocab_size: int, max_input_len: int = 0, exclude_input_default: bool = False
) -> RequestOptions:
    """The request as the engine runs it; ValueError (naming the inputs) when it sets what cannot be honoured."""
    messages = refusals(get)
    if messages:
        raise ValueError("; ".join(messages))
    params = SamplingParams(
        max_new_tokens=_scalar(get, "request_output_len", 0),
        end_id=_scalar(get, "end_id", None),
        temperature=_scalar(get, "temperature", 1.0, float),
        top_k=_scalar(get, "runtime_top_k", 0),
        top_p=_scalar(get, "runtime_top_p", 0.0, float),
        seed=_alias(get, "random_seed", "seed", None),
        repetition_penalty=_scalar(get, "repetition_penalty", 1.0, float),
        presence_penalty=_scalar(get, "presence_penalty", 0.0, float),
        frequency_penalty=_scalar(get, "frequency_penalty", 0.0, float),
        min_length=_alias(get, "min_length", "min_tokens", 0),
        stop_words=word_lists(get("stop_words_list")),
        bad_words=word_lists(get("bad_words_list")),
        embedding_bias=_embedding_bias(get, vocab_size),
        return_log_probs=_scalar(get, "return_log_probs", False, bool),
        return_context_logits=_scalar(get, "return_context_logits", False, bool),
        return_generation_logits=_scalar(get, "return_generation_logits", False, bool),
    )
    return RequestOptions(
        prompt_ids=_prompt_ids(get, vocab_size, max_input_len),
        params=params,
        streaming=_scalar(get, "streaming", False, bool),
        exclude_input=_scalar(get, "exclude_input_in_output", exclude_input_default, bool),
        return_num_input_tokens=_scalar(get, "return_num_input_tokens", False, bool),
        return_num_output_tokens=_scalar(get, "return_num_output_tokens", False, bool),
    )


def word_lists(array: np.ndarray | None) -> list[list[int]]:
    """[1, 2, n] TensorRT-LLM word list (flat ids + end offsets, -1 padded) -> [[ids of word 1], ...]."""
    if array is None or array.size == 0:
        return []
    flat, offsets = array.reshape(-1, 2, array.shape[-1])[0]
    words, start = [], 0
    for end in offsets.tolist():
        if end < 0:
            break
        words.append(flat[start:end].tolist())
        start = end
    return [w for w in words if w]
