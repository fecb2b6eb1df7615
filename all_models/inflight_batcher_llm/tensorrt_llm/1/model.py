"""Triton Python model: the tensorrt_llm tensor contract served by the portable runtime (hf_engine.py).

Decoupled mode streams one response per decode step (only the new tokens, as TensorRT-LLM does); the last response
carries the final flag, with zero tokens when generation ended on the end token. Non-decoupled mode returns one
response per request with all tokens. Which inputs are honoured and which refused: request_options.py.
"""

import json
import threading

import numpy as np
import triton_python_backend_utils as pb_utils
from hf_engine import Engine, Sequence
from model_utils import (
    error_response,
    flag,
    input_array,
    input_scalar,
    parameters,
    resolve,
)
from request_options import read_request

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _outputs(tokens, log_probs, cum_log_prob, extra=None):
    """One response; `extra` holds the optional outputs the request asked for (name -> array, batch dim included)."""
    tensors = [
        pb_utils.Tensor("output_ids", np.array([[tokens]], dtype=np.int32).reshape(1, 1, len(tokens))),
        pb_utils.Tensor("sequence_length", np.array([[len(tokens)]], dtype=np.int32)),
        pb_utils.Tensor("cum_log_probs", np.array([[cum_log_prob]], dtype=np.float32)),
        pb_utils.Tensor(
            "output_log_probs",
            np.array(log_probs if len(log_probs) == len(tokens) else [0.0] * len(tokens), dtype=np.float32).reshape(
                1, 1, len(tokens)
            ),
        ),
    ]
    tensors += [pb_utils.Tensor(name, array) for name, array in (extra or {}).items()]
    return pb_utils.InferenceResponse(output_tensors=tensors)


class _Counters:
    """The runtime's own Prometheus counters on Triton's metrics port: how requests ended, tokens generated.
    They show from outside whether a cancelled request really stopped generating."""

    def __init__(self):
        requests = pb_utils.MetricFamily(
            name="tritonrepo_runtime_requests_total",
            description="Requests the runtime finished, by outcome (completed, cancelled, error)",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        tokens = pb_utils.MetricFamily(
            name="tritonrepo_runtime_generated_tokens_total",
            description="Tokens the runtime generated, cancelled requests included",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.outcomes = {
            name: requests.Metric(labels={"outcome": name}) for name in ("completed", "cancelled", "error")
        }
        self.tokens = tokens.Metric(labels={})
        self._families = (requests, tokens)  # metrics live only as long as their family

    def ended(self, outcome, generated_tokens):
        self.outcomes[outcome].increment(1)
        self.tokens.increment(generated_tokens)


class _NoCounters:
    def ended(self, outcome, generated_tokens):
        pass


class _Reply:
    """Delivers one request's results: streamed per step, or all at once at the end."""

    def __init__(self, request, sender, streaming, options, counters):
        self.request, self.sender, self.streaming, self.counters = request, sender, streaming, counters
        self.options = options
        self.echo = [] if options.exclude_input or streaming else list(options.prompt_ids)
        self.log_probs = []
        self.context_logits = None
        self.generation_logits = []  # [1, vocab] per step, until the end (non-streaming)
        self.response = None  # non-decoupled mode: what execute() returns
        self.done = threading.Event()

    def _extra(self, tokens, context_logits, generation_logits):
        """The optional outputs asked for, shaped as TensorRT-LLM returns them (batch and beam dims included)."""
        extra = {}
        if context_logits is not None:
            extra["context_logits"] = context_logits.numpy()[None]
        if generation_logits:
            extra["generation_logits"] = np.concatenate([g.numpy() for g in generation_logits])[None, None]
        if self.options.return_num_input_tokens:
            extra["num_input_tokens"] = np.array([[len(self.options.prompt_ids)]], dtype=np.int32)
        if self.options.return_num_output_tokens:  # the tokens in this response's output_ids, as upstream counts
            extra["num_output_tokens"] = np.array([[len(tokens)]], dtype=np.int32)
        return extra

    def is_cancelled(self):
        if self.sender is not None:
            return self.sender.is_cancelled()
        return self.request.is_cancelled()

    def on_step(self, sequence, result):
        self.log_probs += result.log_probs
        if self.streaming:
            steps = [result.generation_logits] if result.generation_logits is not None else []
            extra = self._extra(result.new_tokens, result.context_logits, steps)
            response = _outputs(result.new_tokens, result.log_probs, sequence.cum_log_prob, extra)
            self.sender.send(response, flags=FINAL if result.finished else 0)
        else:
            if result.context_logits is not None:
                self.context_logits = result.context_logits
            if result.generation_logits is not None:
                self.generation_logits.append(result.generation_logits)
            if result.finished:
                tokens = self.echo + sequence.output_ids
                extra = self._extra(tokens, self.context_logits, self.generation_logits)
                self._finish(_outputs(tokens, [0.0] * len(self.echo) + self.log_probs, sequence.cum_log_prob, extra))
        if result.finished:
            self.counters.ended("completed", len(sequence.output_ids))
            self.done.set()

    def on_error(self, sequence, error):
        self.counters.ended("error", len(sequence.output_ids))
        self._finish(error_response(f"tensorrt_llm (hf runtime): {error}"))

    def on_cancel(self, sequence):
        self.counters.ended("cancelled", len(sequence.output_ids))
        pb_utils.Logger.log_info(f"hf runtime: request cancelled after {len(sequence.output_ids)} tokens")
        if self.sender is not None:
            self.sender.send(flags=FINAL)
        else:
            self.response = error_response("request cancelled")
        self.done.set()

    def _finish(self, response):
        if self.sender is not None:
            self.sender.send(response, flags=FINAL)
        else:
            self.response = response
        self.done.set()


class TritonPythonModel:
    def initialize(self, args):
        params = parameters(args)
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(json.loads(args["model_config"]))
        self.exclude_input_default = flag(params.get("exclude_input_in_output", "false"))
        self.max_input_len = int(params.get("max_input_len", "0") or 0)
        self.engine = Engine(
            resolve(args, params["hf_model_dir"]),
            device=params.get("device", "auto"),
            dtype=params.get("dtype", "auto"),
            max_seq_len=int(params.get("max_seq_len", "0") or 0),
            max_num_sequences=int(params.get("max_num_sequences", "8") or 8),
        )
        self.engine.start()
        try:
            self.counters = _Counters()
        except Exception as error:  # metrics switched off in tritonserver: serve without the counters
            pb_utils.Logger.log_warn(f"hf runtime: no runtime counters ({error})")
            self.counters = _NoCounters()
        pb_utils.Logger.log_info(
            f"hf runtime: {self.engine.model.config.architectures} on {self.engine.device} ({self.engine.dtype}), "
            f"max_seq_len {self.engine.max_seq_len}, {self.engine.max_num_sequences} sequences decoded together; "
            f"{self.engine.kv_cache_note}; {self.engine.compile_note}"
        )

    def finalize(self):
        self.engine.stop()

    def execute(self, requests):
        replies = [self._submit(request) for request in requests]
        if self.decoupled:
            return None
        for reply in replies:
            if isinstance(reply, _Reply):
                reply.done.wait()
        return [reply.response if isinstance(reply, _Reply) else reply for reply in replies]

    def _submit(self, request):
        """Queue one request; returns its _Reply, or (non-decoupled) an immediate response."""
        sender = request.get_response_sender() if self.decoupled else None
        try:
            if input_scalar(request, "stop", False, bool):
                self.engine.cancel(request.request_id())
                return self._immediate(sender, _outputs([], [], 0.0))
            sequence, reply = self._parse(request, sender)
            self.engine.submit(sequence)
            return reply
        except ValueError as error:
            return self._immediate(sender, error_response(f"tensorrt_llm (hf runtime): {error}"))

    @staticmethod
    def _immediate(sender, response):
        if sender is None:
            return response
        sender.send(response, flags=FINAL)
        return None

    def _parse(self, request, sender):
        options = read_request(
            lambda name: input_array(request, name),
            vocab_size=self.engine.vocab_size,
            max_input_len=self.max_input_len,
            exclude_input_default=self.exclude_input_default,
        )
        self.engine.check(len(options.prompt_ids), options.params)
        reply = _Reply(request, sender, self.decoupled and options.streaming, options, self.counters)
        sequence = Sequence(
            prompt_ids=options.prompt_ids,
            params=options.params,
            on_step=reply.on_step,
            on_error=reply.on_error,
            on_cancel=reply.on_cancel,
            is_cancelled=reply.is_cancelled,
            key=request.request_id() or "",
        )
        return sequence, reply
