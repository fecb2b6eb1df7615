"""Tests for tritonrepo/frontend/prompts.py through the whole front end: a long prompt is tokenized off the event
loop (health checks and open streams keep answering meanwhile), and a prompt too long by its length alone is refused
without being tokenized."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import pytest
from frontend_fixtures import GatedGenerator, make_repository, make_tokenizer_dir, uvicorn_in_thread

from tritonrepo.frontend import app as app_module
from tritonrepo.frontend.app import FrontendSettings, build_asgi, load_tokenizer
from tritonrepo.frontend.prompts import INLINE_PROMPT_CHARS, PromptTokenizer

LONG_PROMPT = "the quick brown fox jumps over the lazy dog. " * 6000  # 270 KB, far past the inline limit


class WatchedBackend:
    """Test double around a real tokenizers.Tokenizer: records the length of every text it encodes, and holds the
    encoding of long texts at `gate` (a threading.Event) until the test opens it, noting when it starts and ends."""

    def __init__(self, real, events: list[str]) -> None:
        self._real = real
        self.events = events
        self.encoded: list[int] = []
        self.entered = threading.Event()
        self.gate = threading.Event()

    def __getattr__(self, name: str):  # truncation, padding, to_str, ...: the real tokenizer's
        return getattr(self._real, name)

    def _watch(self, texts) -> None:
        self.encoded += [len(text) for text in texts]
        if any(len(text) > INLINE_PROMPT_CHARS for text in texts):
            self.events.append("tokenizing")
            self.entered.set()
            # Bounded, so that tokenizing on the event loop (which the gate then blocks) fails the test, not hangs it.
            self.gate.wait(timeout=10)
            self.events.append("tokenized")

    def encode(self, text, *args, **kwargs):
        self._watch([text])
        return self._real.encode(text, *args, **kwargs)

    def encode_batch(self, texts, *args, **kwargs):
        self._watch(texts)
        return self._real.encode_batch(texts, *args, **kwargs)

    def encode_batch_fast(self, texts, *args, **kwargs):
        self._watch(texts)
        return self._real.encode_batch_fast(texts, *args, **kwargs)


class WatchedTokenizer:
    """A transformers tokenizer whose backend is a WatchedBackend; everything else is the real tokenizer's."""

    def __init__(self, real, backend: WatchedBackend) -> None:
        self._real = real
        self.backend_tokenizer = backend

    def __getattr__(self, name: str):
        return getattr(self._real, name)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    return make_tokenizer_dir(tmp_path_factory.mktemp("tok") / "tokenizer")


@pytest.fixture
def watched(monkeypatch, tokenizer_dir):
    """Builds front ends whose tokenizer is watched: (ASGI app, backend double, generator double, events)."""

    def make(repository: Path):
        events: list[str] = []
        real = load_tokenizer(tokenizer_dir)
        backend = WatchedBackend(real.backend_tokenizer, events)
        monkeypatch.setattr(app_module, "load_tokenizer", lambda _: WatchedTokenizer(real, backend))
        generator = GatedGenerator()
        asgi, _ = build_asgi(FrontendSettings(repository=repository), generator)
        return asgi, backend, generator, events

    return make


def completion(prompt: str, stream: bool = False, **extra) -> dict:
    return {"model": "tiny-llama", "prompt": prompt, "stream": stream, **extra}


def test_health_and_open_streams_keep_answering_while_a_long_prompt_is_tokenized(watched, tmp_path, tokenizer_dir):
    # No limits: nothing refuses the prompt early, so it really is tokenized (held at the gate meanwhile).
    asgi, backend, generator, events = watched(make_repository(tmp_path / "repo", tokenizer_dir, limits={}))
    answers: list[httpx.Response] = []
    with uvicorn_in_thread(asgi) as url, httpx.Client(base_url=url, timeout=30) as client:
        with client.stream("POST", "/v1/completions", json=completion("hold-stream", stream=True)) as stream:
            lines = (line for line in stream.iter_lines() if line)
            assert "hold-stream:" in next(lines)

            def send_long_prompt() -> None:
                with httpx.Client(base_url=url, timeout=60) as other:
                    answers.append(other.post("/v1/completions", json=completion(LONG_PROMPT, max_tokens=4)))

            sender = threading.Thread(target=send_long_prompt)
            sender.start()
            assert backend.entered.wait(30), "the long prompt never reached the tokenizer"
            events.append(f"health {client.get('/health').status_code}")
            generator.open_gate("hold-stream")
            assert "done" in next(lines)
            events.append("stream")
            backend.gate.set()
            sender.join(60)
    assert events == ["tokenizing", "health 200", "stream", "tokenized"]
    assert answers[0].status_code == 200 and answers[0].json()["usage"]["prompt_tokens"] > 6000


@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
def test_a_prompt_too_long_by_its_length_alone_is_refused_without_tokenizing(watched, tmp_path, tokenizer_dir, route):
    # The default test repository accepts 64 input tokens; a megabyte of text cannot fit whatever its tokens.
    asgi, backend, _, _ = watched(make_repository(tmp_path / "repo", tokenizer_dir))
    prompt = "word " * 200_000
    body = (
        completion(prompt)
        if route == "/v1/completions"
        else {"model": "tiny-llama", "messages": [{"role": "user", "content": prompt}]}
    )

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://test") as client:
            refused = await client.post(route, json=body)
            encoded_before = list(backend.encoded)
            fitting = await client.post("/v1/completions", json=completion("hello", max_tokens=4))
            return refused, encoded_before, fitting

    refused, encoded_before, fitting = asyncio.run(scenario())
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert "The prompt has at least " in error["message"] and "at most 64 input tokens" in error["message"]
    assert encoded_before == []  # refused by its length: the tokenizer never saw it
    assert fitting.status_code == 200 and backend.encoded == [len("hello")]  # the double does count encodes


def test_long_and_short_prompts_get_the_same_ids_as_the_tokenizer(tokenizer_dir):
    tokenizer = load_tokenizer(tokenizer_dir)
    prompts = PromptTokenizer(tokenizer, workers=2)

    async def scenario():
        try:
            return [
                await prompts.encode(text, special)
                for text in ("héllo wörld", LONG_PROMPT)
                for special in (True, False)
            ]
        finally:
            prompts.close()

    expected = [
        tuple(tokenizer.encode(t, add_special_tokens=s)) for t in ("héllo wörld", LONG_PROMPT) for s in (True, False)
    ]
    assert asyncio.run(scenario()) == expected


def test_work_on_long_text_runs_on_the_bounded_worker_threads(tokenizer_dir):
    prompts = PromptTokenizer(load_tokenizer(tokenizer_dir), workers=1)

    async def scenario():
        short = await prompts.run(10, lambda: threading.current_thread().name)
        long = await asyncio.gather(*(prompts.run(10**6, lambda: threading.current_thread().name) for _ in range(4)))
        return short, long

    try:
        short, long = asyncio.run(scenario())
    finally:
        prompts.close()
    assert short == threading.current_thread().name  # inline, on the event loop's thread
    assert len(set(long)) == 1 and long[0].startswith("tritonrepo-prompts")  # one worker took all four
