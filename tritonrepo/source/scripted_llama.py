"""The embedded test model `scripted-llama`: a tiny Llama whose greedy output is a fixed script, built offline."""

from __future__ import annotations

import pathlib
from dataclasses import replace

from tritonrepo.source.tiny_llama import (
    _CORPUS,
    ASSISTANT_TOKEN,
    BOS_TOKEN,
    CHAT_TEMPLATE,
    EOS_TOKEN,
    THINK_END,
    THINK_START,
    TINY_LLAMA,
    bpe_trainer,
    checkpoint_files,
    write_checkpoint,
)

SCRIPTED_LLAMA_NAME = "scripted-llama"

# Reasoning with CJK and emoji ("猫" and "✨" each span three byte tokens; "中文" and "🙂" are one token each), the
# closing tag, a blank line as one token, and an answer with a multi-byte character. No token occurs twice: the
# model maps each token to its successor, so a repeated token would make the chain loop or branch.
DEFAULT_SCRIPT = (
    "Okay, so the user wrote 猫 — which means cat in Chinese (中文) 🙂. I should reply kindly and briefly.\n"
    f"{THINK_END}\n\n"
    "Hello! Cats are lovely ✨"
)
# The same output for a chat template that leaves the opening tag to the model (its prompt ends with the
# Assistant token): the model itself writes `<think>\n` first.
THINK_SCRIPT = f"{THINK_START}\n{DEFAULT_SCRIPT}"
# A plain /v1/completions prompt; greedy output from it (from any prompt ending in its last token) is the script.
COMPLETION_PROMPT = "Question: what does 猫 mean?\nAnswer:"

# DeepSeek-R1's tokenizers keep a run of newlines in one pre-token (GPT-2's regex splits "\n\nHello" into "\n", "\n",
# "Hello"), so "\n\n" after `</think>` is a single token and does not repeat the "\n" that ends the chat prompt.
_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Extra training text so the script's English words become whole tokens (fewer, and none repeated). It holds no CJK
# or emoji: those keep the byte-level splits the tiny-llama corpus gives them.
_SCRIPT_CORPUS = (
    "Okay, so the user wrote a word which means cat in Chinese (a language). I should reply kindly and briefly.\n"
    "Hello! Cats are lovely.\n"
)
_BPE_VOCAB_TARGET = 1200
# lm_head scale: the successor's logit is this times sqrt(hidden_size) (>= 32), every other logit exactly 0, a margin
# no bf16/fp16 rounding can close.
_LOGIT_SCALE = 4.0
_SPEC = replace(
    TINY_LLAMA,
    name=SCRIPTED_LLAMA_NAME,
    hidden_size=64,
    num_hidden_layers=1,
    intermediate_size=64,
    bpe_vocab_target=_BPE_VOCAB_TARGET,
)
_ASSISTANT_PROMPT_END = "{{- '<｜Assistant｜><think>\\n' -}}"
# Greedy by default (generation_config.json's do_sample false): the fixed script is what a request without
# temperature gets, as the tests that check it expect.
_SAMPLING = {"do_sample": False}


def expected_reasoning_and_answer(script: str) -> tuple[str, str]:
    """What a DeepSeek-R1 reasoning parser makes of the script's output: (text before `</think>`, text after it).

    A leading `<think>` is dropped (the whitespace after it is kept); without `</think>` everything is reasoning.
    """
    text = script
    if text.lstrip().startswith(THINK_START):
        text = text.lstrip()[len(THINK_START) :]
    reasoning, _, answer = text.partition(THINK_END)
    return reasoning, answer


def _chat_template(script: str) -> str:
    if not script.startswith(THINK_START):
        return CHAT_TEMPLATE
    # The model writes `<think>` itself, so the prompt must end at the Assistant token (no second tag).
    if _ASSISTANT_PROMPT_END not in CHAT_TEMPLATE:
        raise RuntimeError("tiny-llama's chat template changed; update _ASSISTANT_PROMPT_END to match it")
    return CHAT_TEMPLATE.replace(_ASSISTANT_PROMPT_END, "{{- '<｜Assistant｜>' -}}")


def _train_tokenizer():
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = bpe_trainer(_SPEC.bpe_vocab_target)
    # Whole texts, not lines: a line never holds "\n\n", so no merge for it would be learned.
    tokenizer.train_from_iterator([_CORPUS, _SCRIPT_CORPUS * 2], trainer=trainer)
    # Not special (as in the DeepSeek-R1 distills): reasoning markers survive skip_special_tokens decoding.
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in (THINK_START, THINK_END)])
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B",
        special_tokens=[(BOS_TOKEN, tokenizer.token_to_id(BOS_TOKEN))],
    )
    return tokenizer


def _chain(tokenizer, script: str) -> tuple[list[int], list[int]]:
    """(the script's token ids, the prompt-ending ids it starts from); ValueError when the map cannot be built."""

    def ids(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False).ids

    script_ids = ids(script)
    if not script_ids:
        raise ValueError("the script is empty")
    if tokenizer.decode(script_ids, skip_special_tokens=False) != script:
        raise ValueError(f"the script does not survive tokenizing and decoding: {script!r}")
    eos_id = tokenizer.token_to_id(EOS_TOKEN)
    if eos_id in script_ids:
        raise ValueError(f"the script must not contain {EOS_TOKEN}: the model adds it at the end")
    seen: dict[int, int] = {}
    for position, token in enumerate(script_ids):
        if token in seen:
            raise ValueError(
                f"token {tokenizer.id_to_token(token)!r} occurs at positions {seen[token]} and {position} of the "
                "script; each token has one successor, so the script must not repeat a token"
            )
        seen[token] = position
    chat_end = ASSISTANT_TOKEN if script.startswith(THINK_START) else f"{ASSISTANT_TOKEN}{THINK_START}\n"
    starts = [ids(chat_end)[-1], ids(COMPLETION_PROMPT)[-1]]
    for start in starts:
        if start in seen:
            raise ValueError(
                f"the script contains {tokenizer.id_to_token(start)!r}, the token that ends a prompt it starts from"
            )
    return script_ids, starts


def _weights(vocab_size: int, hidden: int, script_ids: list[int], starts: list[int], eos_id: int) -> dict:
    import numpy as np

    successor = dict.fromkeys(range(vocab_size), eos_id)
    successor |= dict.fromkeys(starts, script_ids[0])
    successor |= dict(zip(script_ids, script_ids[1:] + [eos_id], strict=True))
    # One hidden dimension per distinct successor: a token's embedding is the one-hot of its successor's dimension,
    # and that successor's lm_head row reads exactly that dimension, so its logit is the only non-zero one.
    dimension = {token: index for index, token in enumerate([eos_id, *script_ids])}
    embed = np.zeros((vocab_size, hidden), dtype=np.float32)
    embed[np.arange(vocab_size), [dimension[successor[token]] for token in range(vocab_size)]] = 1.0
    lm_head = np.zeros((vocab_size, hidden), dtype=np.float32)
    lm_head[list(dimension), list(dimension.values())] = _LOGIT_SCALE
    spec = replace(_SPEC, hidden_size=hidden)
    head_dim = hidden // spec.num_attention_heads
    kv = spec.num_key_value_heads * head_dim
    tensors = {
        "lm_head.weight": lm_head,
        "model.embed_tokens.weight": embed,
        "model.norm.weight": np.ones(hidden, dtype=np.float32),
    }
    # Zero projections: attention and MLP add nothing, so the residual stream stays the token's embedding and the
    # next token depends on the last token alone (at any position, with or without a KV cache).
    for layer in range(spec.num_hidden_layers):
        prefix = f"model.layers.{layer}."
        tensors |= {
            prefix + "input_layernorm.weight": np.ones(hidden, dtype=np.float32),
            prefix + "post_attention_layernorm.weight": np.ones(hidden, dtype=np.float32),
            prefix + "self_attn.q_proj.weight": np.zeros((hidden, hidden), dtype=np.float32),
            prefix + "self_attn.k_proj.weight": np.zeros((kv, hidden), dtype=np.float32),
            prefix + "self_attn.v_proj.weight": np.zeros((kv, hidden), dtype=np.float32),
            prefix + "self_attn.o_proj.weight": np.zeros((hidden, hidden), dtype=np.float32),
            prefix + "mlp.gate_proj.weight": np.zeros((spec.intermediate_size, hidden), dtype=np.float32),
            prefix + "mlp.up_proj.weight": np.zeros((spec.intermediate_size, hidden), dtype=np.float32),
            prefix + "mlp.down_proj.weight": np.zeros((hidden, spec.intermediate_size), dtype=np.float32),
        }
    return dict(sorted(tensors.items()))


def _files(script: str) -> dict[str, bytes]:
    from safetensors.numpy import save

    tokenizer = _train_tokenizer()
    script_ids, starts = _chain(tokenizer, script)
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    bos_id, eos_id = tokenizer.token_to_id(BOS_TOKEN), tokenizer.token_to_id(EOS_TOKEN)
    # Enough dimensions for every successor (the script's tokens and EOS), in whole multiples of 64.
    hidden = max(_SPEC.hidden_size, -(-(len(script_ids) + 1) // 64) * 64)
    spec = replace(_SPEC, hidden_size=hidden)
    weights = _weights(vocab_size, hidden, script_ids, starts, eos_id)
    return checkpoint_files(
        spec, tokenizer, _chat_template(script), (bos_id, eos_id), save(weights, metadata={"format": "pt"}), _SAMPLING
    )


def create_scripted_llama(target_dir: pathlib.Path, *, script: str = DEFAULT_SCRIPT) -> pathlib.Path:
    """Write a checkpoint whose greedy output is `script` then EOS into `target_dir` (replaced atomically).

    Greedy decoding from any prompt ending like the chat template's generation prompt, or like `COMPLETION_PROMPT`,
    yields exactly `script`. A script starting with `<think>` gets a chat template whose prompt ends at the Assistant
    token instead. Raises ValueError when the script repeats a token or contains a token that ends those prompts.
    """
    return write_checkpoint(pathlib.Path(target_dir), _files(script))
