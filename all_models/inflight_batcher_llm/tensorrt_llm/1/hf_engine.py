"""The portable runtime's engine: continuous batching with Hugging Face transformers + PyTorch.

Every sequence in flight decodes in one forward pass per step, over a KV cache of fixed slots allocated once
(kv_slots.py); new requests join between steps, their prompts prefilled together in chunks so a long prompt does not
stall the others; finished and cancelled ones leave at once. On CUDA each decode batch size replays a captured CUDA
graph of the model whose normalizations and MLPs are compiled (compiled_parts.py), and each step's results are
handed to the requests (Triton responses) while the GPU computes the next step. No Triton imports here: `model.py` adapts this engine to the tensorrt_llm tensor contract, and tests drive it
directly.

Semantics follow TensorRT-LLM where they differ from transformers: the end token is not part of the output, stop
words are (generation stops after them), and greedy decoding is chosen by top_k == 1 or by top_k == 0 with top_p == 0.
"""

from __future__ import annotations

import collections
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from batch_sampling import choose
from compiled_parts import compile_parts, keep_for_graphs, uncompile
from kv_slots import (
    SlotCache,
    attention_mask,
    bytes_per_slot,
    cache_argument,
    install_slot_attention,
    probe_layer_shapes,
    sliding_window,
)

MAX_PENDING_STOPS = 4096
PREFILL_TOKENS = 2048  # prompt tokens one prefill pass takes, over all the prompts it prefills
CANCEL_CHECK_S = 0.02  # how often each sequence's cancellation is polled (Triton's check is not free)


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
    generator: torch.Generator | None = None
    bias: torch.Tensor | None = None
    # the engine's bookkeeping
    slot: int = -1
    cached: int = 0  # tokens whose keys and values are in the slot
    context_logits: list[torch.Tensor] = field(default_factory=list)


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
    """Owns the model, the KV slots and one decoding thread; `submit` is thread-safe and returns at once.

    `max_num_sequences` sequences run at once (fewer when the KV cache for that many does not fit in memory: see
    `kv_cache_note`); more wait in a queue. `max_seq_len` bounds prompt + output and sizes each slot.
    """

    def __init__(
        self,
        model_dir: str | Path | torch.nn.Module,
        *,
        device: str = "auto",
        dtype: str = "auto",
        max_seq_len: int = 0,
        max_num_sequences: int = 8,
        cuda_graphs: bool = True,
        prefill_tokens: int = PREFILL_TOKENS,
        compile_layers: bool | None = None,
        overlap: bool | None = None,
    ) -> None:
        self._incoming: queue.Queue[Sequence] = queue.Queue()
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._decoding: list[Sequence] = []  # in slot order: slots 0..len-1
        self._prefilling: list[Sequence] = []  # the slots right after the decoding ones, in slot order
        # Stops by request id (TensorRT-LLM's `stop` input). A stop may come before its request (kept until it comes)
        # or after it finished (never claimed): only the latest MAX_PENDING_STOPS are kept, so those cannot pile up.
        self._cancelled_keys: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._stops_lock = threading.Lock()
        self._next_cancel_check = 0.0
        self._running = False
        self._go = threading.Event()
        # Results of the last pass not yet handed to their requests: delivered once the next pass is launched, so the
        # callbacks (Triton responses) run on the host while the device computes.
        # On a CPU a pass runs while it is called, so there is nothing to overlap: results go out at once.
        self._delivering: list[tuple[Sequence, StepResult]] = []
        self._overlap = overlap
        # How many sequences each pass carried (passes counted by size): what batching achieved, for tests and logs.
        self.decode_batches: collections.Counter[int] = collections.Counter()
        self.prefill_batches: collections.Counter[int] = collections.Counter()
        # Every torch call of the engine, loading included, runs on its own thread: on the CPU, small operations
        # from a second thread run many times slower once another thread has used PyTorch's OpenMP pool.
        ready: queue.Queue[BaseException | None] = queue.Queue()
        settings = (
            model_dir,
            device,
            dtype,
            max_seq_len,
            max_num_sequences,
            cuda_graphs,
            prefill_tokens,
            compile_layers,
        )
        self._thread = threading.Thread(target=self._run, args=(settings, ready), name="hf-engine", daemon=True)
        self._thread.start()
        error = ready.get()
        if error is not None:
            self._thread.join()
            raise error

    def _run(self, settings: tuple, ready: queue.Queue) -> None:
        try:
            self._load(*settings)
        except BaseException as error:
            ready.put(error)
            return
        ready.put(None)
        self._go.wait()
        self._loop()

    def _load(
        self, model_dir, device, dtype, max_seq_len, max_num_sequences, cuda_graphs, prefill_tokens, compile_layers
    ) -> None:
        from transformers import AutoModelForCausalLM, GenerationConfig

        self.device = _pick_device(device)
        if isinstance(model_dir, torch.nn.Module):  # a model already made (benchmarks: no checkpoint on disk)
            self.model = model_dir.to(self.device).eval()
            self.dtype = next(self.model.parameters()).dtype if dtype == "auto" else _pick_dtype(dtype, self.device)
            self.model.to(self.dtype)
            eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        else:
            self.dtype = _pick_dtype(dtype, self.device)
            self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=self.dtype).to(self.device).eval()
            try:
                eos = GenerationConfig.from_pretrained(str(model_dir)).eos_token_id
            except OSError:
                eos = None
        config = self.model.config
        self.max_seq_len = max_seq_len or int(getattr(config, "max_position_embeddings", 0) or 0) or 2048
        if eos is None:
            eos = getattr(config, "eos_token_id", None)
        self.default_end_id = eos[0] if isinstance(eos, list) else eos
        self.vocab_size = int(config.vocab_size)  # the width of the logits
        self.prefill_tokens = max(1, prefill_tokens)
        architecture = ", ".join(getattr(config, "architectures", None) or [type(self.model).__name__])
        try:
            self._window = sliding_window(config)
            shapes = probe_layer_shapes(self.model, self.device)
        except ValueError as error:
            raise ValueError(f"the portable runtime cannot batch {architecture}: {error}") from error
        self._cache_argument = cache_argument(self.model)
        self.slot_attention = install_slot_attention(self.model)  # checked with the rest by the start-up check
        self.cache = self._allocate(shapes, max(1, max_num_sequences))
        self.max_num_sequences = self.cache.slots
        if self._overlap is None:
            self._overlap = self.device.type == "cuda"
        wanted = self.device.type == "cuda" if compile_layers is None else compile_layers
        self.compile_note, parts = self._compile(architecture, wanted)
        self._graphs = _DecodeGraphs(self) if cuda_graphs and self.device.type == "cuda" else None
        self._compiled_calls = keep_for_graphs(parts) if parts and self._graphs is not None else []
        self._check_against_the_model(architecture)  # as the passes will run: prefill eager, decode as captured

    def _compile(self, architecture: str, wanted: bool) -> tuple[str, list[torch.nn.Module]]:
        """Compiles the layers' norms and MLPs (on CUDA by default) and runs the start-up check through them, which
        compiles them for the shapes of a prefill and of a decode; any failure leaves them uncompiled, and says so.
        Returns (what happened, the compiled modules)."""
        if not wanted:
            return "layers not compiled", []
        started = time.perf_counter()
        parts = compile_parts(self.model)
        if not parts:
            return "layers not compiled (no normalization or MLP modules found)", []
        try:
            self._check_against_the_model(architecture)
        except Exception as error:  # a compiler missing or failing, or compiled logits that differ: run uncompiled
            uncompile(parts)
            reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
            return f"layers not compiled: torch.compile failed ({type(error).__name__}: {reason})", []
        return f"{len(parts)} norm and MLP modules compiled in {time.perf_counter() - started:.1f} s", parts

    # --- memory --------------------------------------------------------------------------------------------------------
    def _allocate(self, shapes, wanted: int) -> SlotCache:
        per_slot = bytes_per_slot(shapes, self.max_seq_len, self.dtype)
        available, where = self._kv_memory()
        slots = min(wanted, available // per_slot)
        if slots < 1:
            raise ValueError(
                f"one sequence of max_seq_len {self.max_seq_len} needs {per_slot / 2**30:.2f} GiB of KV cache and "
                f"{available / 2**30:.2f} GiB is available on {where}; lower max_seq_len (tritonrepo build "
                "--max-seq-len) or use a device with more memory"
            )
        cache = SlotCache(shapes, int(slots), self.max_seq_len, self.dtype, self.device)
        fitted = "" if slots == wanted else f" (of {wanted} asked for: that many do not fit)"
        self.kv_cache_bytes = cache.nbytes
        self.kv_cache_note = (
            f"KV cache: {slots} sequence slot(s){fitted} x {self.max_seq_len} tokens = {cache.nbytes / 2**30:.2f} GiB "
            f"({per_slot / 2**20:.1f} MiB per slot), allocated once on {where} "
            f"({available / 2**30:.1f} GiB was available for it)"
        )
        return cache

    def _kv_memory(self) -> tuple[int, str]:
        """(bytes the KV cache may take, where): on CUDA 90% of the free memory less room for a prefill pass's
        activations; on the CPU half the memory available."""
        if self.device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(self.device)
            config = self.model.config
            hidden = int(getattr(config, "hidden_size", 4096))
            activations = self.prefill_tokens * (hidden * 32 + self.vocab_size * 8)
            return max(0, int(free * 0.9) - activations), torch.cuda.get_device_name(self.device)
        try:
            with open("/proc/meminfo") as meminfo:
                fields = dict(line.split(":", 1) for line in meminfo)
            available = int(fields["MemAvailable"].split()[0]) * 1024
        except (OSError, KeyError, ValueError):
            available = 8 << 30
        return available // 2, "the CPU"

    # --- lifecycle -----------------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._running = True
        self._go.set()

    def stop(self) -> None:
        self._running = False
        self._go.set()
        self._thread.join(timeout=30)

    # --- requests ------------------------------------------------------------------------------------------------------
    def check(self, prompt_len: int, params: SamplingParams) -> None:
        """Raise ValueError with the numbers when a request cannot be served."""
        if prompt_len < 1:
            raise ValueError("the request has no input tokens")
        if params.max_new_tokens < 1:
            raise ValueError(f"request_output_len must be at least 1, got {params.max_new_tokens}")
        if prompt_len + params.max_new_tokens > self.max_seq_len:
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
        return len(self._decoding) + len(self._prefilling) + len(self._waiting) + self._incoming.qsize()

    # --- the scheduling loop -------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while self._running:
            self._take_incoming()
            self._drop_cancelled()
            if not self._prefilling:
                self._start_prefill()
            try:
                if self._prefilling:
                    self._prefill_step()
                if self._decoding:
                    self._decode_step()
            except Exception as error:  # a failing pass fails the sequences in it, never the engine
                self._deliver()
                for sequence in [*self._decoding, *self._prefilling]:
                    self._fail(sequence, error)
            if not (self._decoding or self._prefilling):
                self._deliver()  # nothing runs next: no reason to hold results back
        self._deliver()

    def _take_incoming(self) -> None:
        idle = not (self._decoding or self._prefilling or self._waiting)
        try:
            self._waiting.append(self._incoming.get(timeout=0.1) if idle else self._incoming.get_nowait())
            while True:
                self._waiting.append(self._incoming.get_nowait())
        except queue.Empty:
            return

    def _drop_cancelled(self) -> None:
        now = time.monotonic()
        if now < self._next_cancel_check and not self._cancelled_keys:
            return
        self._next_cancel_check = now + CANCEL_CHECK_S
        cancelled = [
            sequence
            for sequence in [*self._decoding, *self._prefilling, *self._waiting]
            if self._claim_stop(sequence.key) or sequence.is_cancelled()
        ]
        if cancelled:
            self._deliver()  # what a request produced before it was cancelled reaches it first
        for sequence in cancelled:
            if self._retire(sequence):  # not if it finished (or failed) meanwhile
                sequence.on_cancel(sequence)

    def _start_prefill(self) -> None:
        """Waiting sequences take the free slots after the decoding ones, as many as one prefill pass takes."""
        budget = self.prefill_tokens
        while self._waiting and len(self._decoding) + len(self._prefilling) < self.cache.slots:
            size = min(len(self._waiting[0].prompt_ids), self.prefill_tokens)
            if self._prefilling and size > budget:
                break
            sequence = self._waiting.popleft()
            sequence.slot = len(self._decoding) + len(self._prefilling)
            sequence.cached = 0
            self._prefilling.append(sequence)
            budget -= size

    # --- passes --------------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _prefill_step(self) -> None:
        """One chunk of every prompt being prefilled, in one pass (left-padded, so each row's last logits are at the
        end); a prompt that is complete gets its first token, and the group joins decoding once all are."""
        rows = list(self._prefilling)
        self.prefill_batches[len(rows)] += 1
        share = max(1, self.prefill_tokens // len(rows))
        takes = [min(len(s.prompt_ids) - s.cached, share) for s in rows]
        width = max(takes)
        capacity = self.cache.capacity
        tokens = torch.zeros((len(rows), width), dtype=torch.long)
        positions = torch.full((len(rows), width), capacity, dtype=torch.long)
        for r, (sequence, take) in enumerate(zip(rows, takes, strict=True)):
            start = sequence.cached
            tokens[r, width - take :] = torch.tensor(sequence.prompt_ids[start : start + take])
            positions[r, width - take :] = torch.arange(start, start + take)
        keep_all = any(s.params.return_context_logits for s in rows)
        block = slice(rows[0].slot, rows[0].slot + len(rows))
        logits = self._forward(block, tokens.to(self.device), positions.to(self.device), keep_all=keep_all)
        for sequence, take in zip(rows, takes, strict=True):
            sequence.cached += take
        self._deliver()  # the previous pass's results, while the device runs this one
        done = []
        for r, (sequence, take) in enumerate(zip(rows, takes, strict=True)):
            if sequence.slot < 0:  # failed while its results were delivered
                continue
            if sequence.params.return_context_logits:
                sequence.context_logits.append(logits[r, width - take :].to("cpu", torch.float32, copy=True))
            if sequence.cached == len(sequence.prompt_ids):
                done.append(r)
        if done:
            last = logits[done, -1].float()
            context = {r: torch.cat(rows[r].context_logits) for r in done if rows[r].params.return_context_logits}
            self._emit([rows[r] for r in done], last, context)
        if all(s.cached == len(s.prompt_ids) for s in self._prefilling):
            self._decoding.extend(self._prefilling)  # already in the slots right after the decoding ones
            self._prefilling = []

    @torch.inference_mode()
    def _decode_step(self) -> None:
        rows = list(self._decoding)
        self.decode_batches[len(rows)] += 1
        tokens = [s.output_ids[-1] for s in rows]
        positions = [s.cached for s in rows]
        if self._graphs is not None:
            logits = self._graphs.run(tokens, positions)
        else:
            block = slice(0, len(rows))
            token_tensor = torch.tensor(tokens, device=self.device)[:, None]
            position_tensor = torch.tensor(positions, device=self.device)[:, None]
            logits = self._forward(block, token_tensor, position_tensor)[:, -1].float()
        for sequence in rows:
            sequence.cached += 1
        self._deliver()  # the previous pass's results, while the device runs this one
        self._emit(rows, logits)

    def _forward(self, block: slice, tokens: torch.Tensor, positions: torch.Tensor, keep_all: bool = False):
        """The model over batch rows = slots `block`: tokens/positions [rows, q]; logits [rows, q or 1, vocab]."""
        rows = torch.arange(tokens.shape[0], device=self.device)[:, None]
        self.cache.aim(block, rows, positions)
        mask = attention_mask(positions, self.cache.capacity, self.dtype, self._window)
        output = self.model(
            input_ids=tokens,
            position_ids=positions,
            attention_mask=mask,
            use_cache=True,
            logits_to_keep=0 if keep_all else 1,
            **{self._cache_argument: self.cache},
        )
        return output.logits

    # --- results -------------------------------------------------------------------------------------------------------
    def _emit(self, rows: list[Sequence], logits: torch.Tensor, context: dict[int, torch.Tensor] | None = None) -> None:
        """Chooses each row's next token from its logits [rows, vocab] and reports it; retires finished rows."""
        raw = {
            i: logits[i : i + 1].to("cpu", torch.float32, copy=True)
            for i, s in enumerate(rows)
            if s.params.return_generation_logits
        }
        tokens, log_probs = choose(rows, logits)
        finished = []
        for i, sequence in enumerate(rows):
            if sequence.slot < 0:  # retired while this pass ran (its results failed to reach it)
                continue
            extra = {"generation_logits": raw.get(i), "context_logits": (context or {}).get(i)}
            result = self._advance(sequence, tokens[i], log_probs[i], extra)
            if result.finished:
                finished.append(sequence)
            self._delivering.append((sequence, result))
        for sequence in finished:
            self._retire(sequence)
        if not self._overlap:
            self._deliver()

    def _deliver(self) -> None:
        """Hands the results held back to their requests; one whose delivery fails (e.g. its client went away) is
        failed and leaves the batch."""
        delivering, self._delivering = self._delivering, []
        for sequence, result in delivering:
            try:
                sequence.on_step(sequence, result)
            except Exception as error:
                self._fail(sequence, error)

    def _advance(self, sequence: Sequence, token: int, log_prob: float, extra: dict) -> StepResult:
        params = sequence.params
        if token == params.end_id:
            return StepResult([], [], True, "end_id", **extra)
        sequence.output_ids.append(token)
        sequence.cum_log_prob += log_prob
        produced = [token], [log_prob] if params.return_log_probs else []
        if any(w and sequence.output_ids[-len(w) :] == w for w in params.stop_words):
            return StepResult(*produced, True, "stop_word", **extra)
        if len(sequence.output_ids) >= params.max_new_tokens:
            return StepResult(*produced, True, "length", **extra)
        if len(sequence.prompt_ids) + len(sequence.output_ids) >= self.max_seq_len:
            return StepResult(*produced, True, "max_seq_len", **extra)
        return StepResult(*produced, False, **extra)

    def _fail(self, sequence: Sequence, error: BaseException) -> None:
        if self._retire(sequence):
            sequence.on_error(sequence, error)

    def _retire(self, sequence: Sequence) -> bool:
        """Frees the sequence's slot, keeping the decoding and prefilling slots contiguous; False if it held none."""
        if sequence in self._waiting:
            self._waiting.remove(sequence)
            return True
        if sequence in self._decoding:
            index = self._decoding.index(sequence)
            last = self._decoding.pop()
            if last is not sequence:  # the last decoding sequence takes the freed slot
                self._move(last, index)
                self._decoding[index] = last
            if self._prefilling:  # and the last prefilling one the slot that frees at the end of the decoding ones
                moved = self._prefilling.pop()
                self._move(moved, len(self._decoding))
                self._prefilling.insert(0, moved)
        elif sequence in self._prefilling:
            index = self._prefilling.index(sequence)
            last = self._prefilling.pop()
            if last is not sequence:
                self._move(last, sequence.slot)
                self._prefilling[index] = last
        else:
            return False
        sequence.slot = -1
        return True

    def _move(self, sequence: Sequence, slot: int) -> None:
        if sequence.slot != slot:
            self.cache.move(sequence.slot, slot, sequence.cached)
            sequence.slot = slot

    # --- start-up check ------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _check_against_the_model(self, architecture: str) -> None:
        """The slot cache must give the model's own logits: prefill two prompts of different lengths together, decode
        them together, and compare with the model run alone on each (its own cache). An architecture that computes
        attention in a way the slots cannot reproduce is refused here, not served wrong."""
        prompts = [[1, 2, 3, 4, 5], [6, 7]][: self.cache.slots]
        prompts = [[token % self.vocab_size for token in prompt] for prompt in prompts]
        width, capacity = max(map(len, prompts)), self.cache.capacity
        tokens = torch.zeros((len(prompts), width), dtype=torch.long)
        positions = torch.full((len(prompts), width), capacity, dtype=torch.long)
        for r, prompt in enumerate(prompts):
            tokens[r, width - len(prompt) :] = torch.tensor(prompt)
            positions[r, width - len(prompt) :] = torch.arange(len(prompt))
        block = slice(0, len(prompts))
        ours = [self._forward(block, tokens.to(self.device), positions.to(self.device))[:, -1]]
        step = torch.full((len(prompts), 1), 9 % self.vocab_size, device=self.device)
        after = torch.tensor([[len(prompt)] for prompt in prompts], device=self.device)
        ours.append(self._forward(block, step, after)[:, -1])
        for r, prompt in enumerate(prompts):
            whole = torch.tensor([prompt + [9 % self.vocab_size]], device=self.device)
            alone = self.model(input_ids=whole).logits[0, -2:].float()
            found = torch.stack([ours[0][r], ours[1][r]]).float()
            scale = alone.abs().max().clamp(min=1.0)
            difference = float((found - alone).abs().max() / scale)
            if difference > (1e-3 if self.dtype == torch.float32 else 5e-2):
                raise ValueError(
                    f"the portable runtime cannot batch {architecture}: its logits through the slot cache differ from "
                    f"the model's own by {difference:.2g} (relative); this architecture is not supported"
                )


class _DecodeGraphs:
    """CUDA graphs of the decode pass, one per batch-size bucket (1, 2, 4, ... slots): a replay launches the whole
    model at once, which is what makes small batches fast on a GPU. Rows past the real batch are padding: they write
    the scratch column and their logits are ignored."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        slots, device = engine.cache.slots, engine.device
        self.buckets = sorted({min(2**i, slots) for i in range(slots.bit_length() + 1)})
        self.tokens = torch.zeros((slots, 1), dtype=torch.long, device=device)
        self.positions = torch.full((slots, 1), engine.cache.capacity, dtype=torch.long, device=device)
        self.rows = torch.arange(slots, device=device)[:, None]
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        pool = torch.cuda.graph_pool_handle()
        for size in reversed(self.buckets):  # the largest first, so the smaller ones reuse its memory pool
            self.graphs[size] = self._capture(size, pool)

    @torch.inference_mode()
    def _capture(self, size: int, pool) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        engine = self.engine

        def forward() -> torch.Tensor:
            engine.cache.aim(slice(0, size), self.rows[:size], self.positions[:size])
            mask = attention_mask(self.positions[:size], engine.cache.capacity, engine.dtype, engine._window)
            output = engine.model(
                input_ids=self.tokens[:size],
                position_ids=self.positions[:size],
                attention_mask=mask,
                use_cache=True,
                logits_to_keep=1,
                **{engine._cache_argument: engine.cache},
            )
            return output.logits[:, -1].float()

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up off the capture: lazy initialisation, kernel selection
                forward()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            logits = forward()
        return graph, logits

    def run(self, tokens: list[int], positions: list[int]) -> torch.Tensor:
        count = len(tokens)
        size = next(bucket for bucket in self.buckets if bucket >= count)
        padding = size - count
        self.tokens[:size, 0].copy_(torch.tensor(tokens + [0] * padding), non_blocking=True)
        capacity = self.engine.cache.capacity
        self.positions[:size, 0].copy_(torch.tensor(positions + [capacity] * padding), non_blocking=True)
        graph, logits = self.graphs[size]
        graph.replay()
        return logits[:count]
