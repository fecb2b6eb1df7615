"""The portable runtime's engine: many requests decoded in flight with Hugging Face transformers + PyTorch.

No Triton imports here: `model.py` adapts this engine to the tensorrt_llm tensor contract, and tests drive it directly.
Semantics follow TensorRT-LLM where they differ from transformers: the end token is not part of the output, stop
words are (generation stops after them), and greedy decoding is chosen by top_k == 1 or by top_k == 0 with top_p == 0.
"""

from __future__ import annotations

import collections
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

MAX_PENDING_STOPS = 4096


@dataclass
class SamplingParams:
    max_new_tokens: int
    end_id: int | None = None
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.0
    seed: int | None = None
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    min_length: int = 0
    stop_words: list[list[int]] = field(default_factory=list)
    bad_words: list[list[int]] = field(default_factory=list)
    embedding_bias: list[float] | None = None  # added to the logits (its first entries when shorter than the vocab)
    return_log_probs: bool = False
    return_context_logits: bool = False
    return_generation_logits: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0 or self.top_k == 1 or (self.top_k <= 0 and self.top_p <= 0)


@dataclass
class StepResult:
    """What one decode step produced for one sequence. `new_tokens` is empty when the step ended on the end token."""

    new_tokens: list[int]
    log_probs: list[float]
    finished: bool
    finish_reason: str | None = None  # "end_id" | "stop_word" | "length" | "max_seq_len"
    context_logits: torch.Tensor | None = None  # [prompt_len, vocab]: on the first step, when asked for
    generation_logits: torch.Tensor | None = None  # [1, vocab]: the model's raw logits of this step, when asked for


@dataclass
class Sequence:
    """One request in flight. The callbacks run on the engine thread."""

    prompt_ids: list[int]
    params: SamplingParams
    on_step: Callable[[Sequence, StepResult], None]
    on_error: Callable[[Sequence, BaseException], None]
    is_cancelled: Callable[[], bool] = lambda: False
    on_cancel: Callable[[Sequence], None] = lambda sequence: None
    key: str = ""
    output_ids: list[int] = field(default_factory=list)
    cum_log_prob: float = 0.0
    cache: object = None
    generator: torch.Generator | None = None
    bias: torch.Tensor | None = None


def _pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype != "auto":
        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


class Engine:
    """Owns the model and one decoding thread; `submit` is thread-safe and returns at once."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        device: str = "auto",
        dtype: str = "auto",
        max_seq_len: int = 0,
        max_num_sequences: int = 8,
    ) -> None:
        from transformers import AutoModelForCausalLM, GenerationConfig

        self.device = _pick_device(device)
        self.dtype = _pick_dtype(dtype, self.device)
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=self.dtype).to(self.device).eval()
        config = self.model.config
        self.max_seq_len = max_seq_len or int(getattr(config, "max_position_embeddings", 0) or 0)
        self.max_num_sequences = max(1, max_num_sequences)
        try:
            eos = GenerationConfig.from_pretrained(str(model_dir)).eos_token_id
        except OSError:
            eos = getattr(config, "eos_token_id", None)
        self.default_end_id = eos[0] if isinstance(eos, list) else eos
        self.vocab_size = int(config.vocab_size)  # the width of the logits
        self._incoming: queue.Queue[Sequence] = queue.Queue()
        self._active: list[Sequence] = []
        # Stops by request id (TensorRT-LLM's `stop` input). A stop may come before its request (kept until it comes)
        # or after it finished (never claimed): only the latest MAX_PENDING_STOPS are kept, so those cannot pile up.
        self._cancelled_keys: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._stops_lock = threading.Lock()
        self._running = False
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="hf-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join(timeout=30)

    # --- requests ----------------------------------------------------------------------------------------------------
    def check(self, prompt_len: int, params: SamplingParams) -> None:
        """Raise ValueError with the numbers when a request cannot be served."""
        if prompt_len < 1:
            raise ValueError("the request has no input tokens")
        if params.max_new_tokens < 1:
            raise ValueError(f"request_output_len must be at least 1, got {params.max_new_tokens}")
        if self.max_seq_len and prompt_len + params.max_new_tokens > self.max_seq_len:
            raise ValueError(
                f"input length {prompt_len} + request_output_len {params.max_new_tokens} exceeds "
                f"max_seq_len {self.max_seq_len}"
            )

    def submit(self, sequence: Sequence) -> None:
        self.check(len(sequence.prompt_ids), sequence.params)
        if sequence.params.end_id is None:
            sequence.params.end_id = self.default_end_id
        if not sequence.params.greedy:
            sequence.generator = torch.Generator(device=self.device)
            seed = sequence.params.seed
            sequence.generator.manual_seed(seed if seed is not None else int.from_bytes(os.urandom(8), "little") >> 1)
        if sequence.params.embedding_bias:
            sequence.bias = torch.tensor(sequence.params.embedding_bias, dtype=torch.float32, device=self.device)
        self._incoming.put(sequence)

    def cancel(self, key: str) -> None:
        """Stop the sequence submitted with this key (TensorRT-LLM's `stop` input)."""
        with self._stops_lock:  # called from Triton's threads, read by the engine's
            self._cancelled_keys[key] = None
            while len(self._cancelled_keys) > MAX_PENDING_STOPS:
                self._cancelled_keys.popitem(last=False)

    def _claim_stop(self, key: str) -> bool:
        with self._stops_lock:
            return bool(key) and self._cancelled_keys.pop(key, False) is None

    @property
    def in_flight(self) -> int:
        return len(self._active) + self._incoming.qsize()

    # --- the decoding loop -------------------------------------------------------------------------------------------
    def _admit(self) -> None:
        if not self._active:
            try:
                self._active.append(self._incoming.get(timeout=0.1))
            except queue.Empty:
                return
        while len(self._active) < self.max_num_sequences:
            try:
                self._active.append(self._incoming.get_nowait())
            except queue.Empty:
                return

    def _loop(self) -> None:
        while self._running:
            self._admit()
            # Round-robin one token per sequence, so every request in flight makes progress.
            for sequence in list(self._active):
                if sequence.is_cancelled() or self._claim_stop(sequence.key):
                    self._retire(sequence)
                    sequence.on_cancel(sequence)
                    continue
                try:
                    result = self._step(sequence)
                except Exception as error:  # one bad sequence must not take the engine down
                    self._retire(sequence)
                    sequence.on_error(sequence, error)
                    continue
                if result.finished:
                    self._retire(sequence)
                try:
                    sequence.on_step(sequence, result)
                except Exception as error:  # e.g. the client went away while we were sending
                    self._retire(sequence)
                    sequence.on_error(sequence, error)

    def _retire(self, sequence: Sequence) -> None:
        if sequence in self._active:
            self._active.remove(sequence)
        sequence.cache = None

    @torch.inference_mode()
    def _step(self, sequence: Sequence) -> StepResult:
        if sequence.cache is None:
            input_ids = torch.tensor([sequence.prompt_ids], device=self.device)
        else:
            input_ids = torch.tensor([[sequence.output_ids[-1]]], device=self.device)
        out = self.model(input_ids=input_ids, past_key_values=sequence.cache, use_cache=True)
        params = sequence.params
        logits = {}  # what the request asked to get back, taken before sampling changes the step's logits
        if params.return_context_logits and sequence.cache is None:
            logits["context_logits"] = out.logits[0].to("cpu", torch.float32, copy=True)
        if params.return_generation_logits:
            logits["generation_logits"] = out.logits[0, -1:].to("cpu", torch.float32, copy=True)
        sequence.cache = out.past_key_values
        token, log_prob = self._choose(sequence, self._process_logits(sequence, out.logits[0, -1].float()))
        if token == params.end_id:
            return StepResult([], [], True, "end_id", **logits)
        sequence.output_ids.append(token)
        sequence.cum_log_prob += log_prob
        produced = [token], [log_prob] if params.return_log_probs else []
        total = len(sequence.prompt_ids) + len(sequence.output_ids)
        if any(w and sequence.output_ids[-len(w) :] == w for w in params.stop_words):
            return StepResult(*produced, True, "stop_word", **logits)
        if len(sequence.output_ids) >= params.max_new_tokens:
            return StepResult(*produced, True, "length", **logits)
        if self.max_seq_len and total >= self.max_seq_len:
            return StepResult(*produced, True, "max_seq_len", **logits)
        return StepResult(*produced, False, **logits)

    def _process_logits(self, sequence: Sequence, logits: torch.Tensor) -> torch.Tensor:
        params, generated = sequence.params, sequence.output_ids
        if sequence.bias is not None:  # first: the bias shifts the model's logits, the penalties act on the result
            logits[: sequence.bias.numel()] += sequence.bias
        if params.repetition_penalty != 1.0:
            seen = torch.tensor(sorted(set(sequence.prompt_ids) | set(generated)), device=logits.device)
            values = logits[seen]
            logits[seen] = torch.where(
                values > 0, values / params.repetition_penalty, values * params.repetition_penalty
            )
        if generated and (params.presence_penalty or params.frequency_penalty):
            ids, counts = torch.tensor(generated, device=logits.device).unique(return_counts=True)
            logits[ids] -= params.presence_penalty + params.frequency_penalty * counts.to(logits.dtype)
        if params.end_id is not None and len(generated) < params.min_length:
            logits[params.end_id] = float("-inf")
        history = sequence.prompt_ids + generated
        for word in params.bad_words:
            if word and (len(word) == 1 or history[-(len(word) - 1) :] == word[:-1]):
                logits[word[-1]] = float("-inf")
        return logits

    def _choose(self, sequence: Sequence, logits: torch.Tensor) -> tuple[int, float]:
        params = sequence.params
        if params.greedy:
            token = int(torch.argmax(logits))
            log_prob = float(torch.log_softmax(logits, -1)[token]) if params.return_log_probs else 0.0
            return token, log_prob
        logits = logits / max(params.temperature, 1e-5)
        if params.top_k > 0:
            kth = torch.topk(logits, min(params.top_k, logits.numel())).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if 0 < params.top_p < 1:
            ordered, order = torch.sort(logits, descending=True)
            cumulative = torch.softmax(ordered, -1).cumsum(-1)
            drop = cumulative - torch.softmax(ordered, -1) > params.top_p  # keep the token that crosses top_p
            logits = logits.scatter(0, order[drop], float("-inf"))
        probs = torch.softmax(logits, -1)
        token = int(torch.multinomial(probs, 1, generator=sequence.generator))
        log_prob = float(torch.log(probs[token])) if params.return_log_probs else 0.0
        return token, log_prob
