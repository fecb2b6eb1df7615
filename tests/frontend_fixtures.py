"""Shared helpers for the front-end tests: a tiny local tokenizer, TextGenerator test doubles, uvicorn in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

from tritonrepo.frontend.triton_client import GeneratedChunk, GenerationError, GenerationParams

# A chat template of our own (roles in tags, BOS first), so tests do not depend on any real model's template.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
TRAINING_TEXT = [
    "héllo 🙂 wörld, the quick brown fox jumps over the lazy dog.",
    "Grüße aus Köln! Ça va très bien. 日本語のテキスト.",
    "<|system|> <|user|> <|assistant|> You are a helpful assistant. Say hello in one word.",
]
# Split inside multi-byte characters on purpose: "é" is c3 a9, "🙂" is f0 9f 99 82, "ö" is c3 b6.
REPLY = "héllo 🙂 wörld"
REPLY_CHUNKS = [b"h\xc3", b"\xa9llo \xf0", b"\x9f", b"\x99", b"\x82 w\xc3", b"\xb6rld"]


def make_tokenizer_dir(path: Path, *, chat_template: str | None = CHAT_TEMPLATE) -> Path:
    """A byte-level BPE tokenizer trained on a few sentences, saved as a Hugging Face tokenizer directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(TRAINING_TEXT, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>")
    # Byte-level BPE adds no BOS by itself; a post-processor makes add_special_tokens=True mean "prepend <s>".
    fast.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
    )
    if chat_template is not None:
        fast.chat_template = chat_template
    path.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(path))
    return path


def make_repository(root: Path, tokenizer_source: Path, *, limits: dict | None = None) -> Path:
    """A repository directory as tritonrepo builds it: a manifest, entry-point folders and the tokenizer."""
    import shutil

    for name in ("ensemble", "tensorrt_llm_bls", "preprocessing", "postprocessing", "tensorrt_llm"):
        (root / name / "1").mkdir(parents=True, exist_ok=True)
        (root / name / "config.pbtxt").write_text(f'name: "{name}"\n')
    shutil.copytree(tokenizer_source, root / "preprocessing" / "1" / "tokenizer", dirs_exist_ok=True)
    manifest = {
        "format": 1,
        "model": {"name": "tiny-llama", "id": "tiny-llama", "revision": None},
        "runtime": "hf",
        "entry_points": ["ensemble", "tensorrt_llm_bls"],
        "default_entry_point": "ensemble",
        "tokenizer_dir": "preprocessing/1/tokenizer",
        "limits": limits if limits is not None else {"max_input_len": 64, "max_seq_len": 128, "max_batch_size": 8},
    }
    (root / "tritonrepo.json").write_text(json.dumps(manifest))
    return root


class ScriptedGenerator:
    """Test double of our TextGenerator interface (not of Triton): replays pre-set byte chunks and records calls.

    Streamed requests get `chunks` one by one; non-streamed ones get them joined into one chunk, as Triton does.
    `hang_after` makes the stream block after that many chunks (to test cancellation); `error` fails the stream.
    """

    def __init__(
        self,
        chunks: Sequence[bytes] = REPLY_CHUNKS,
        *,
        tokens_per_chunk: int | None = 1,
        inputs: set[str] | None = None,
        ready: bool = True,
        hang_after: int | None = None,
        error: GenerationError | None = None,
        error_after: int = 0,
    ) -> None:
        self.chunks = list(chunks)
        self.tokens_per_chunk = tokens_per_chunk
        self.inputs = (
            inputs
            if inputs is not None
            else {
                "text_input",
                "max_tokens",
                "stream",
                "exclude_input_in_output",
                "temperature",
                "top_p",
                "top_k",
                "random_seed",
                "stop_words",
                "presence_penalty",
                "frequency_penalty",
            }
        )
        self.ready = ready
        self.hang_after = hang_after
        self.error = error
        self.error_after = error_after
        self.calls: list[tuple[str, GenerationParams]] = []
        self.closed_early = 0  # generations that were closed before their last chunk
        self.finished = 0
        self.hanging = asyncio.Event()
        self.unavailable: str | None = None

    def abort_all(self, reason: str) -> None:
        self.unavailable = reason

    def resume(self) -> None:
        self.unavailable = None

    async def is_ready(self) -> bool:
        return self.ready

    async def model_inputs(self, model: str) -> set[str]:
        if self.error is not None and self.error.status == 503:
            raise self.error
        return set(self.inputs)

    async def generate(self, model: str, request: GenerationParams) -> AsyncIterator[GeneratedChunk]:
        self.calls.append((model, request))
        chunks = self.chunks if request.stream else [b"".join(self.chunks)]
        per_chunk = self.tokens_per_chunk
        # Non-streamed, the one response only comes at the end: hanging means hanging before it.
        hang_at = None if self.hang_after is None else min(self.hang_after, len(chunks) - 1)
        done = False
        try:
            for index, data in enumerate(chunks):
                if self.error is not None and index == self.error_after:
                    raise self.error
                if index == hang_at:
                    self.hanging.set()
                    await asyncio.Event().wait()  # never set: only cancellation gets past this
                tokens = None if per_chunk is None else per_chunk * (len(self.chunks) if not request.stream else 1)
                yield GeneratedChunk(text_bytes=data, num_tokens=tokens)
            done = True
            self.finished += 1
        finally:
            if not done:
                self.closed_early += 1


class GatedGenerator:
    """Test double of our TextGenerator interface (not of Triton) whose generations the test ends.

    Each generation yields "<prompt>:" at once; a prompt that starts with "hold" then waits until the test calls
    `open_gate(prompt)` (from any thread), others go on. Then it yields "done" and ends. It records which prompts
    started, finished and were closed (finished or cut short).
    """

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.started: list[str] = []
        self.finished: list[str] = []
        self.closed: list[str] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.unavailable: str | None = None

    def abort_all(self, reason: str) -> None:
        self.unavailable = reason

    def resume(self) -> None:
        self.unavailable = None

    async def is_ready(self) -> bool:
        return True

    async def model_inputs(self, model: str) -> set[str]:
        return {"text_input", "max_tokens", "stream", "exclude_input_in_output"}

    def open_gate(self, prompt: str) -> None:
        assert self.loop is not None, "no generation has started yet"
        self.loop.call_soon_threadsafe(lambda: self._gate(prompt).set())

    def _gate(self, prompt: str) -> asyncio.Event:
        return self.gates.setdefault(prompt, asyncio.Event())

    async def generate(self, model: str, request: GenerationParams) -> AsyncIterator[GeneratedChunk]:
        self.loop = asyncio.get_running_loop()
        prompt = request.prompt
        self.started.append(prompt)
        try:
            yield GeneratedChunk(text_bytes=f"{prompt[:40]}:".encode(), num_tokens=1)
            if prompt.startswith("hold"):
                await self._gate(prompt).wait()
            yield GeneratedChunk(text_bytes=b"done", num_tokens=1)
            self.finished.append(prompt)
        finally:
            self.closed.append(prompt)


@contextlib.contextmanager
def uvicorn_in_thread(app) -> Iterator[str]:
    """Serves an ASGI app with real uvicorn on a free port in a thread; yields its base URL."""
    import threading
    import time

    import uvicorn
    from conftest import free_port

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2)
    )
    thread = threading.Thread(target=server.run, daemon=True, name="frontend-test-server")
    thread.start()
    try:
        for _ in range(1000):  # the bound only turns a server that never starts into a failure
            if server.started:
                break
            time.sleep(0.01)
        assert server.started, "uvicorn never started"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
