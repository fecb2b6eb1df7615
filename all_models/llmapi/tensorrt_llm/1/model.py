"""Triton Python model: TensorRT-LLM's LLM API (PyTorch backend) as one Triton model, configured by model.yaml.

Written for TensorRT-LLM 1.0 and 1.1 (NGC tritonserver 25.09 to 26.02 -trtllm-python-py3), using only names those
releases share: tensorrt_llm.LLM(**arguments) and .generate_async(prompt, SamplingParams, streaming=...), whose result
is async-iterable and has .outputs[0].text (the whole text so far, also when streaming), .finish_reason ("stop",
"length", "timeout", "cancelled"), .stop_reason, .finished and .abort(); and
tensorrt_llm.llmapi.llm_utils.update_llm_args_with_extra_dict, which turns model.yaml's nested sections
(kv_cache_config, speculative_config, ...) into the LLM API's config objects, as trtllm-serve does with its YAML.
The tensors are those of upstream's llmapi model (NVIDIA/TensorRT-LLM triton_backend/all_models/llmapi/tensorrt_llm,
read at commit b35ac1b6, version 1.2.0rc2), so its clients work unchanged; the code here is our own.

- model.yaml: every key is an LLM() argument except triton_config {max_batch_size, decoupled,
  cancellation_check_period_ms}. A relative `model` path resolves against the repository root.
- streaming (decoupled models only): one response per step, each with the whole text so far, as upstream sends it.
  Without streaming, or on a non-decoupled model, one response with the whole text.
- A client that cancels (gone, gRPC cancel) is noticed within cancellation_check_period_ms (default 100) and its
  generation is aborted; a `stop: true` request aborts the running requests that have its request id (as upstream).
- Any failure becomes a TritonError response to that request only; the model keeps serving.
Requests run as tasks on one asyncio loop in a background thread, so execute() returns at once and the LLM API
batches all requests in flight.
"""

import asyncio
import json
import os
import threading
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
import yaml

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
CONFIG_ENV = "LLM_CONFIG_PATH"  # upstream's override of model.yaml's location (relative to this folder)

# Optional scalar inputs -> (SamplingParams field, type). Absent inputs keep SamplingParams' own defaults.
_SAMPLING_SCALARS = {
    "sampling_param_best_of": ("best_of", int),
    "sampling_param_temperature": ("temperature", float),
    "sampling_param_top_k": ("top_k", int),
    "sampling_param_top_p": ("top_p", float),
    "sampling_param_frequency_penalty": ("frequency_penalty", float),
    "sampling_param_presence_penalty": ("presence_penalty", float),
    "sampling_param_max_tokens": ("max_tokens", int),
    "sampling_param_min_tokens": ("min_tokens", int),
    "sampling_param_seed": ("seed", int),
    "sampling_param_exclude_input_from_output": ("exclude_input_from_output", bool),
}


def read_model_yaml(path):
    """(LLM API arguments, triton_config) from model.yaml."""
    with open(path, encoding="utf-8") as file:
        settings = yaml.safe_load(file)
    if not isinstance(settings, dict) or not settings.get("model"):
        raise pb_utils.TritonModelException(f"{path}: expected a mapping of LLM API arguments with `model`")
    triton_config = settings.pop("triton_config", None) or {}
    return settings, triton_config


def _values(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy().reshape(-1)  # a batch dim of 1 or none: the same


def _scalar(request, name, cast, default=None):
    values = _values(request, name)
    if values is None or values.size == 0:
        return default
    if values.size != 1:
        raise ValueError(f"{name} must hold one value, got {values.size}")
    return cast(values.item())


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)
        self.batched = int(config.get("max_batch_size", 0)) > 0
        model_dir = Path(args["model_repository"])
        path = model_dir / args["model_version"] / os.environ.get(CONFIG_ENV, "model.yaml")
        llm_args, triton_config = read_model_yaml(path)
        if bool(triton_config.get("decoupled", self.decoupled)) != self.decoupled:
            raise pb_utils.TritonModelException(
                f"{path}: triton_config.decoupled is {triton_config['decoupled']} but config.pbtxt says "
                f"{self.decoupled}; make them equal"
            )
        self.cancel_check_s = float(triton_config.get("cancellation_check_period_ms", 100)) / 1000
        local = model_dir.parent / str(llm_args["model"])
        if not Path(str(llm_args["model"])).is_absolute() and local.exists():
            llm_args["model"] = str(local)  # tritonserver may run from anywhere; the repository root is fixed

        from tensorrt_llm import LLM, SamplingParams
        from tensorrt_llm.llmapi.llm_utils import update_llm_args_with_extra_dict

        self.sampling_params = SamplingParams
        pb_utils.Logger.log_info(f"llmapi: tensorrt_llm.LLM({llm_args})")
        self.llm = LLM(**update_llm_args_with_extra_dict({}, llm_args))
        self.running = {}  # Triton request id -> generations in flight, for `stop` requests
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="llmapi-requests", daemon=True)
        self.thread.start()

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            asyncio.run_coroutine_threadsafe(self._serve(request, sender), self.loop)
        return None

    def finalize(self):
        asyncio.run_coroutine_threadsafe(self._cancel_all(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.llm.shutdown()

    async def _cancel_all(self):
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self, request, sender):
        try:
            if _scalar(request, "stop", bool, False):
                self._stop(request.request_id())
                self._send_cancelled(sender)
            else:
                await self._generate(request, sender)
        except Exception as error:  # this request's failure only: report it to its client and keep serving
            pb_utils.Logger.log_error(f"llmapi: request {request.request_id()!r} failed: {error}")
            try:
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"llmapi: {error}")), flags=FINAL)
            except Exception as send_error:  # the client is gone, or a response was already final
                pb_utils.Logger.log_warn(f"llmapi: could not report the failure: {send_error}")

    async def _generate(self, request, sender):
        prompt, sampling, streaming, wanted = self._parse(request)
        streaming = streaming and self.decoupled  # a non-decoupled model sends exactly one response
        generation = self.llm.generate_async(prompt, sampling, streaming=streaming)
        in_flight = self.running.setdefault(request.request_id(), set())
        in_flight.add(generation)
        watcher = asyncio.ensure_future(self._abort_when_cancelled(sender, generation))
        try:
            output = None
            async for output in generation:
                if streaming and not output.finished:
                    sender.send(self._response(output, wanted))
            if watcher.done() and watcher.result():
                self._send_cancelled(sender)  # the client cancelled: no text, as Triton reports cancellations
            elif output is None:
                raise RuntimeError("the LLM API returned no output")
            else:
                sender.send(self._response(output, wanted), flags=FINAL)
        finally:
            watcher.cancel()
            if not generation.finished:  # we are leaving early (a failed send, shutdown): free its slot
                generation.abort()
            in_flight.discard(generation)
            if not in_flight:
                self.running.pop(request.request_id(), None)

    async def _abort_when_cancelled(self, sender, generation):
        """True once the client cancelled and the generation was aborted; polls until the generation finishes."""
        while not generation.finished:
            await asyncio.sleep(self.cancel_check_s)
            if sender.is_cancelled():
                generation.abort()
                return True
        return False

    def _stop(self, request_id):
        if not request_id:
            raise ValueError("a stop request needs the request id of the request to stop")
        for generation in list(self.running.get(request_id, ())):
            generation.abort()

    def _parse(self, request):
        prompts = _values(request, "text_input")
        if prompts is None or prompts.size != 1:
            raise ValueError("text_input must hold exactly one prompt")
        arguments = {}
        for name, (field, cast) in _SAMPLING_SCALARS.items():
            value = _scalar(request, name, cast)
            if value is not None:
                arguments[field] = value
        stop = _values(request, "sampling_param_stop")
        if stop is not None and stop.size:
            arguments["stop"] = [text for text in (_text(s) for s in stop) if text]
        streaming = _scalar(request, "streaming", bool, False)
        wanted = [name for name in ("finish_reason", "stop_reason") if _scalar(request, f"return_{name}", bool, False)]
        return _text(prompts[0]), self.sampling_params(**arguments), streaming, wanted

    def _response(self, output, wanted):
        completion = output.outputs[0]
        values = {"text_output": completion.text}
        if "finish_reason" in wanted:
            values["finish_reason"] = completion.finish_reason or ""  # "" while the request is still running
        if "stop_reason" in wanted:
            values["stop_reason"] = "" if completion.stop_reason is None else str(completion.stop_reason)
        shape = (1, 1) if self.batched else (1,)
        tensors = [
            pb_utils.Tensor(name, np.array([value.encode("utf-8")], dtype=np.object_).reshape(shape))
            for name, value in values.items()
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    @staticmethod
    def _send_cancelled(sender):
        error = pb_utils.TritonError("request cancelled", pb_utils.TritonError.CANCELLED)
        sender.send(pb_utils.InferenceResponse(error=error), flags=FINAL)
