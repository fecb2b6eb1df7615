"""The embedded default model `tiny-llama`: a tiny random Llama checkpoint, built offline and deterministically."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import shutil
import tempfile
import uuid
from dataclasses import dataclass

TINY_LLAMA_NAME = "tiny-llama"

BOS_TOKEN = "<｜begin▁of▁sentence｜>"
EOS_TOKEN = "<｜end▁of▁sentence｜>"
USER_TOKEN = "<｜User｜>"
ASSISTANT_TOKEN = "<｜Assistant｜>"
THINK_START = "<think>"
THINK_END = "</think>"
# Sampling defaults in generation_config.json, which the front end follows when a request sends no temperature:
# tiny-llama stands in for the DeepSeek-R1 distills (their tokens and chat template), so it declares what those
# recommend (temperature 0.6, top_p 0.95), and serving it by default takes the path a real checkpoint takes.
TINY_LLAMA_SAMPLING = {"do_sample": True, "temperature": 0.6, "top_p": 0.95}


@dataclass(frozen=True)
class TinyLlamaSpec:
    name: str = TINY_LLAMA_NAME
    bos_token: str = BOS_TOKEN
    eos_token: str = EOS_TOKEN
    pad_token: str = EOS_TOKEN
    user_token: str = USER_TOKEN
    assistant_token: str = ASSISTANT_TOKEN
    think_start: str = THINK_START
    think_end: str = THINK_END
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 128
    max_position_embeddings: int = 2048
    bpe_vocab_target: int = 1000
    files: tuple[str, ...] = (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    )


TINY_LLAMA = TinyLlamaSpec()

# Jinja, in the spirit of the DeepSeek-R1 distills (written for this project).
CHAT_TEMPLATE = (
    "{%- macro text(content) -%}"
    "{%- if content is none -%}"
    "{%- elif content is string -%}{{ content }}"
    "{%- else -%}{%- for part in content if part['type'] == 'text' -%}{{ part['text'] }}{%- endfor -%}"
    "{%- endif -%}"
    "{%- endmacro -%}"
    "{{- bos_token -}}"
    "{%- for message in messages if message['role'] == 'system' -%}"
    "{%- if not loop.first %}{{ '\\n\\n' }}{% endif -%}{{- text(message['content']) -}}"
    "{%- endfor -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{- '<｜User｜>' + text(message['content']) -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{%- set reply = text(message['content']) -%}"
    "{%- if '</think>' in reply -%}{%- set reply = reply.split('</think>')[-1].lstrip() -%}{%- endif -%}"
    "{{- '<｜Assistant｜>' + reply + eos_token -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<｜Assistant｜><think>\\n' -}}{%- endif -%}"
)

# Training text for the tokenizer. The mix matters: common English and code become merged tokens, while the rarer
# multi-byte characters (CJK, emoji, some Greek/Cyrillic) stay split across several byte tokens.
_CORPUS = """\
The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs away into the forest.
Once upon a time, in a small village by the sea, there lived an old fisherman and his wife.
Every morning he went out in his little boat, and every evening he came back with the day's catch.
"What did you find today?" she asked. "Nothing but water and wind," he said, and they both laughed.
It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness.
Triton Inference Server serves models over HTTP and gRPC. A model repository holds one directory per model,
and each directory holds a config.pbtxt file and numbered version directories such as 1/.
Large language models generate text one token at a time; a tokenizer turns text into tokens and back again.
Streaming responses send each new piece of text as soon as it is ready, so the user sees the answer grow.
Please answer the question below. Think step by step, then give the final answer in one short sentence.
The river wound through the valley, past farms and mills, until it reached the harbour where the ships waited.
Children played in the streets while their parents talked about the weather, the harvest and the price of bread.
When the storm came, the lights went out across the city, and people lit candles and told stories until morning.
She opened the window, looked at the mountains covered in snow, and decided that today would be a good day to travel.
Scientists measure temperature, pressure and humidity every hour; the results are stored in a database for later study.
A good teacher listens carefully, explains things clearly, and gives students the time they need to understand.
The library was quiet except for the sound of pages turning and the soft ticking of the clock above the door.
He wrote a letter to his brother, describing the new house, the garden, the neighbours and the long summer evenings.
Before you deploy a service, check the logs, run the tests, measure the latency and make sure the health checks pass.
If the request fails, retry it after a short delay; if it fails again, report the error and explain what went wrong.
Memory, bandwidth and compute limit how fast a model can answer; batching many requests together uses them better.
The train left the station at noon, crossed the bridge over the river, and arrived in the capital early that evening.
Good documentation answers three questions: what does this do, how do I use it, and what should I do when it breaks?
Some people prefer tea in the morning and coffee in the afternoon, while others drink only water throughout the day.
The market opened at dawn; farmers sold apples, pears, cheese, eggs, honey and fresh bread from their small stalls.
Our team reviewed the design, found two problems with the cache, fixed them, and then shipped the release on Friday.
Birds sang in the trees behind the school, and the smell of rain drifted through the open windows of the classroom.
History teaches us that great changes often begin with small ideas, shared by a few people who refuse to give up.
The recipe is simple: mix flour, sugar, butter and two eggs, then bake the dough for twenty minutes until golden.
Every evening the lighthouse keeper climbed the stairs, cleaned the lamp, and watched the ships pass in the dark.
Engineers compare throughput and latency under load, because a fast server that crashes at peak time helps no one.
The museum displays paintings, sculptures, maps and old musical instruments collected from many different countries.
Questions are welcome at any time; write them down, bring them to the meeting, and we will try to answer each one.
Winter nights are long and cold in the north, but the people there are warm, generous and full of wonderful songs.
To install the package, create a virtual environment, activate it, and run pip install with the extras you need.
Mountains, forests, lakes and rivers cover most of the country, and only a small part of the land is used for farming.
User: What is the capital of France? Assistant: The capital of France is Paris.
User: How many legs does a spider have? Assistant: A spider has eight legs.
User: Write a haiku about autumn. Assistant: Red leaves drift and fall, / cold wind hums an old, slow song, / the year breathes softly.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 42 100 256 1024 2048 4096 65536 3.14159 2.71828 1e-5 -7 +12 50% $19.99
Dates and times: 2024-01-15 09:30:00, 1999-12-31 23:59:59, 12/25/2023, 7:45 pm, version 2.51.0, port 8000.
def fibonacci(n: int) -> int:
    \"\"\"Return the n-th Fibonacci number.\"\"\"
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


class Greeter:
    def __init__(self, name):
        self.name = name

    def greet(self):
        print(f"Hello, {self.name}!")
        return {"status": "ok", "count": len(self.name)}


if __name__ == "__main__":
    for i in range(10):
        print(i, fibonacci(i))
    data = [x * x for x in range(100) if x % 3 == 0]
    print(sum(data), max(data), min(data))


def read_config(path):
    with open(path, encoding="utf-8") as handle:
        lines = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    result = {}
    for line in lines:
        key, _, value = line.partition("=")
        result[key.strip()] = value.strip()
    return result


async def fetch_all(client, urls):
    responses = await asyncio.gather(*(client.get(url, timeout=10.0) for url in urls))
    return [response.json() for response in responses if response.status_code == 200]
// JavaScript: const add = (a, b) => a + b; console.log(add(2, 3));
#include <stdio.h>
int main(void) { printf("hello, world\\n"); return 0; }
SELECT name, count(*) FROM users WHERE age >= 18 GROUP BY name ORDER BY 2 DESC;
{"model": "tiny-llama", "messages": [{"role": "user", "content": "Hi!"}], "stream": true, "max_tokens": 32}
curl -s http://localhost:8000/v2/health/ready && echo ready || echo "not ready"
Le café est prêt. Un naïve garçon mange une crème brûlée à la fenêtre; l'été est très chaud.
Ça va? Où est la bibliothèque? Über den Wolken muss die Freiheit wohl grenzenlos sein. Schöne Grüße aus München!
El niño comió piñata y jalapeño; mañana será otro día. São Paulo é a maior cidade do Brasil. Smørrebrød og æbler.
Ελληνικά: Καλημέρα κόσμε. Η γλώσσα είναι όμορφη. Αλφα, βήτα, γάμμα, δέλτα.
Русский: Привет, мир! Как дела? Москва — столица России. Спасибо и до свидания.
日本語: こんにちは、世界。今日はいい天気ですね。東京は日本の首都です。
中文: 你好，世界。我喜欢学习中文。北京是中国的首都。
한국어: 안녕하세요, 세계. العربية: مرحبا بالعالم. עברית: שלום עולם. हिन्दी: नमस्ते दुनिया।
Emoji: 🙂 🚀 🎉 👍 🐍 ❤️ ✨ 🌍 — math: ∑ ∞ ≈ ≠ ≤ ≥ √ π ± × ÷ → ← ° € £ ¥ © ®.
Mixed: The café in 東京 serves crêpes for ¥800 🙂; the rocket 🚀 launched at 09:00 UTC, and everyone cheered.
A stream may split a character like é, 日 or 🙂 across tokens, so the detokenizer must wait for the full character.
"""


def bpe_trainer(vocab_target: int):
    """A byte-level BPE trainer with the DeepSeek-style special tokens (shared by the embedded test models)."""
    from tokenizers import AddedToken, pre_tokenizers, trainers

    return trainers.BpeTrainer(
        vocab_size=vocab_target,
        min_frequency=2,
        show_progress=False,
        special_tokens=[
            AddedToken(token, special=True, normalized=False)
            for token in (BOS_TOKEN, EOS_TOKEN, USER_TOKEN, ASSISTANT_TOKEN)
        ],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )


def _train_tokenizer(vocab_target: int):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = bpe_trainer(vocab_target)
    tokenizer.train_from_iterator(_CORPUS.splitlines(keepends=True), trainer=trainer)
    # Not special (as in the DeepSeek-R1 distills): reasoning markers survive skip_special_tokens decoding.
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in (THINK_START, THINK_END)])
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B",
        special_tokens=[(BOS_TOKEN, tokenizer.token_to_id(BOS_TOKEN))],
    )
    return tokenizer


def _json_bytes(data: dict) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _config(spec: TinyLlamaSpec, vocab_size: int, bos_id: int, eos_id: int) -> dict:
    # Written by hand (not LlamaConfig.to_json_string) so the bytes do not depend on the installed transformers.
    return {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": bos_id,
        "dtype": "float32",
        "eos_token_id": eos_id,
        "head_dim": spec.hidden_size // spec.num_attention_heads,
        "hidden_act": "silu",
        "hidden_size": spec.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": spec.intermediate_size,
        "max_position_embeddings": spec.max_position_embeddings,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": spec.num_attention_heads,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_key_value_heads": spec.num_key_value_heads,
        "pad_token_id": eos_id,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-06,
        "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "use_cache": True,
        "vocab_size": vocab_size,
    }


def _weight_shapes(spec: TinyLlamaSpec, vocab_size: int) -> dict[str, tuple[int, ...]]:
    hidden, head_dim = spec.hidden_size, spec.hidden_size // spec.num_attention_heads
    kv = spec.num_key_value_heads * head_dim
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (vocab_size, hidden),
        "model.norm.weight": (hidden,),
        "lm_head.weight": (vocab_size, hidden),
    }
    for layer in range(spec.num_hidden_layers):
        prefix = f"model.layers.{layer}."
        shapes |= {
            prefix + "input_layernorm.weight": (hidden,),
            prefix + "post_attention_layernorm.weight": (hidden,),
            prefix + "self_attn.q_proj.weight": (hidden, hidden),
            prefix + "self_attn.k_proj.weight": (kv, hidden),
            prefix + "self_attn.v_proj.weight": (kv, hidden),
            prefix + "self_attn.o_proj.weight": (hidden, hidden),
            prefix + "mlp.gate_proj.weight": (spec.intermediate_size, hidden),
            prefix + "mlp.up_proj.weight": (spec.intermediate_size, hidden),
            prefix + "mlp.down_proj.weight": (hidden, spec.intermediate_size),
        }
    return shapes


def _weights(spec: TinyLlamaSpec, vocab_size: int, seed: int, silent_ids: list[int]) -> dict:
    import numpy as np

    tensors = {}
    for name, shape in sorted(_weight_shapes(spec, vocab_size).items()):
        if name.endswith("norm.weight"):
            tensors[name] = np.ones(shape, dtype=np.float32)
            continue
        # Uniform draws from the legacy RandomState (a frozen stream) with only +,* in float64 are bit-identical on
        # every machine, unlike torch.normal_, whose vectorised CPU kernels may round differently.
        name_seed = int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:4], "little")
        uniform = np.random.RandomState(name_seed).random_sample(shape) * 2.0 - 1.0
        # Large embedding/lm_head scales give peaked, varied logits, so greedy decoding does not repeat one token.
        std = 1.0 if name in ("model.embed_tokens.weight", "lm_head.weight") else shape[-1] ** -0.5
        tensors[name] = (uniform * (std * 3.0**0.5)).astype(np.float32)
    # Zero logits for BOS/EOS/role tokens: the other logits spread ~8 wide, so these are practically never generated
    # and generation runs to max_tokens without emitting control tokens (predictable for tests).
    tensors["lm_head.weight"][silent_ids] = 0.0
    return tensors


def _files(spec: TinyLlamaSpec, seed: int) -> dict[str, bytes]:
    from safetensors.numpy import save

    tokenizer = _train_tokenizer(spec.bpe_vocab_target)
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    bos_id, eos_id = tokenizer.token_to_id(spec.bos_token), tokenizer.token_to_id(spec.eos_token)
    added = json.loads(tokenizer.to_str())["added_tokens"]
    silent_ids = [token["id"] for token in added if token["special"]]
    weights = save(_weights(spec, vocab_size, seed, silent_ids), metadata={"format": "pt"})
    return checkpoint_files(spec, tokenizer, CHAT_TEMPLATE, (bos_id, eos_id), weights, TINY_LLAMA_SAMPLING)


def checkpoint_files(
    spec, tokenizer, chat_template: str, ids: tuple[int, int], weights: bytes, sampling: dict
) -> dict[str, bytes]:
    """The files of a Llama checkpoint with a DeepSeek-style tokenizer: configs (`sampling` in
    generation_config.json), weights, tokenizer files."""
    bos_id, eos_id = ids
    added = json.loads(tokenizer.to_str())["added_tokens"]
    tokenizer_config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {
            str(token["id"]): {key: value for key, value in token.items() if key != "id"} for token in added
        },
        "bos_token": spec.bos_token,
        "chat_template": chat_template,
        "clean_up_tokenization_spaces": False,
        "eos_token": spec.eos_token,
        "legacy": False,
        "model_max_length": spec.max_position_embeddings,
        "pad_token": spec.pad_token,
        "padding_side": "left",
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    special_tokens_map = {
        "bos_token": spec.bos_token,
        "eos_token": spec.eos_token,
        "pad_token": spec.pad_token,
        "additional_special_tokens": [spec.user_token, spec.assistant_token],
    }
    return {
        "config.json": _json_bytes(_config(spec, tokenizer.get_vocab_size(with_added_tokens=True), bos_id, eos_id)),
        "generation_config.json": _json_bytes(
            {"bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": eos_id, **sampling}
        ),
        "model.safetensors": weights,
        "special_tokens_map.json": _json_bytes(special_tokens_map),
        "tokenizer.json": (tokenizer.to_str(pretty=True) + "\n").encode("utf-8"),
        "tokenizer_config.json": _json_bytes(tokenizer_config),
    }


def _holds(directory: pathlib.Path, files: dict[str, bytes]) -> bool:
    try:
        names = sorted(path.name for path in directory.iterdir())
        return names == sorted(files) and all((directory / name).read_bytes() == data for name, data in files.items())
    except OSError:
        return False


def create_tiny_llama(target_dir: pathlib.Path, *, seed: int = 0) -> pathlib.Path:
    """Write the tiny-llama checkpoint into `target_dir` (replacing it atomically) and return `target_dir`."""
    return write_checkpoint(pathlib.Path(target_dir), _files(TINY_LLAMA, seed))


def write_checkpoint(target_dir: pathlib.Path, files: dict[str, bytes]) -> pathlib.Path:
    """Write `files` as the folder `target_dir`, replacing it atomically (staging folder, then rename)."""
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{target_dir.name}.tmp-", dir=target_dir.parent))
    moved_aside: list[pathlib.Path] = []
    try:
        os.chmod(staging, 0o755)  # mkdtemp makes 0700; a server running as another user must be able to read it
        for name, data in files.items():
            (staging / name).write_bytes(data)
        # rename() cannot replace a non-empty directory: move the old one aside and retry; a concurrent creator
        # may put its copy in place between our renames, and an identical copy is as good as ours.
        for attempt in range(10):
            try:
                os.rename(staging, target_dir)
                break
            except OSError:
                if _holds(target_dir, files):
                    break
                if attempt == 9:
                    raise
            old = target_dir.parent / f".{target_dir.name}.old-{uuid.uuid4().hex}"
            with contextlib.suppress(FileNotFoundError):
                os.rename(target_dir, old)
                moved_aside.append(old)
    finally:
        for leftover in (staging, *moved_aside):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
    return target_dir
