"""The front end's one narrow interface to Triton: stream text out of a decoupled entry model over gRPC."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import struct
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationParams:
    """What the serving layer asks for; None means "the model's default" and is not sent."""

    prompt: str
    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    min_tokens: int | None = None
    stop: tuple[str, ...] = ()
    stream: bool = True
    prompt_ids: tuple[int, ...] = ()  # the tokenized prompt, for runtime models that take input_ids


@dataclass(frozen=True)
class GeneratedChunk:
    """Raw UTF-8 bytes of newly generated tokens (a character may be split across chunks)."""

    text_bytes: bytes
    num_tokens: int | None = None
    finish_reason: str | None = None  # when the model reports it (the llmapi model's finish_reason output)
    token_sizes: tuple[int, ...] | None = None  # each token's byte count, where the token ids are known


class GenerationError(Exception):
    """A Triton failure translated at this boundary; `status` is the HTTP status the front end should answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class TextGenerator(Protocol):
    unavailable: str | None  # why the deployment cannot serve now (set by abort_all, cleared by resume), or None

    def generate(self, model: str, request: GenerationParams) -> AsyncIterator[GeneratedChunk]:
        """An async generator; closing it early cancels the request on the server."""
        ...

    async def is_ready(self) -> bool: ...

    def abort_all(self, reason: str) -> None:
        """The deployment broke: every request in flight fails at once with `reason` (503, not a hang), and new ones
        are refused with it until resume(). Runs on the event loop's thread."""
        ...

    def resume(self) -> None:
        """Triton serves again (every model ready after a restart)."""
        ...

    async def model_inputs(self, model: str) -> set[str]: ...


# --- request building (pure apart from tritonclient's tensor classes) ------------------------------------------------
# A request field -> the entry-model inputs that can carry it; the first one the model declares is used. The names
# cover our models, upstream's ensemble/BLS (older and newer spellings) and the llmapi model (sampling_param_*).
_FIELD_INPUTS: dict[str, tuple[str, ...]] = {
    "max_tokens": ("max_tokens", "sampling_param_max_tokens", "request_output_len"),
    "temperature": ("temperature", "sampling_param_temperature"),
    "top_p": ("top_p", "sampling_param_top_p", "runtime_top_p"),
    "top_k": ("top_k", "sampling_param_top_k", "runtime_top_k"),
    "seed": ("random_seed", "seed", "sampling_param_seed"),
    "presence_penalty": ("presence_penalty", "sampling_param_presence_penalty"),
    "frequency_penalty": ("frequency_penalty", "sampling_param_frequency_penalty"),
    "repetition_penalty": ("repetition_penalty", "sampling_param_repetition_penalty"),
    "min_tokens": ("min_tokens", "min_length", "sampling_param_min_tokens"),
    "stream": ("stream", "streaming"),
    "exclude_input": (
        "exclude_input_in_output",
        "exclude_input_from_output",
        "sampling_param_exclude_input_from_output",
    ),
    "stop_words": ("stop_words", "sampling_param_stop"),
}


def input_for(field: str, declared: set[str]) -> str | None:
    """The entry-model input that carries `field`, or None when the model has no such input."""
    return next((name for name in _FIELD_INPUTS.get(field, (field,)) if name in declared), None)


@dataclass(frozen=True)
class EntryModel:
    """What the entry model's config says about its inputs: name -> Triton datatype, and whether it batches."""

    input_types: dict[str, str]
    batched: bool
    # For an ensemble: the step model with a `stop` input. Triton does not pass an ensemble's cancellation on to
    # its steps, so an abandoned request is stopped the TensorRT-LLM way: `stop` under the same request id.
    stop_target: str | None = None

    @classmethod
    def from_config(cls, config: Any) -> EntryModel:
        from tritonclient.grpc import model_config_pb2

        types = {}
        for tensor in config.input:
            name = model_config_pb2.DataType.Name(tensor.data_type).removeprefix("TYPE_")
            types[tensor.name] = "BYTES" if name == "STRING" else name
        return cls(input_types=types, batched=config.max_batch_size > 0)

    @property
    def cumulative_text(self) -> bool:
        """The llmapi model streams the whole text so far in each response, not only what is new."""
        return "sampling_param_max_tokens" in self.input_types


def sampling_values(params: GenerationParams, declared: set[str]) -> dict[str, Any]:
    """Request fields with a value, keyed by field name."""
    values: dict[str, Any] = {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,
        "seed": params.seed,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
        "repetition_penalty": params.repetition_penalty,
        "min_tokens": params.min_tokens or None,
    }
    if params.temperature == 0 and input_for("top_k", declared) is not None:
        # OpenAI's temperature 0 means greedy; TensorRT-LLM and HF sampling reject 0, and top_k=1 is greedy there.
        values["temperature"] = None
        values["top_k"] = 1
    elif params.temperature is not None and params.temperature > 0 and params.top_p is None:
        # TensorRT-LLM (and the portable runtime, which keeps its rules) decodes greedily when top_k and top_p are
        # both 0, their defaults; in OpenAI's API a temperature above 0 samples, from the whole distribution unless
        # top_p or top_k narrow it.
        values["top_p"] = 1.0
    return {field: value for field, value in values.items() if value is not None}


@dataclass(frozen=True)
class Tensor:
    """One request input in Triton's raw wire form: little-endian values, BYTES items each after a uint32 length."""

    name: str
    datatype: str
    shape: list[int]
    data: bytes


def build_inputs(model: EntryModel, params: GenerationParams) -> list[Tensor]:
    """The tensors to send: only inputs the entry model declares, with its datatypes and a batch dim of 1."""
    declared = set(model.input_types)
    values: dict[str, Any] = {"text_input": [params.prompt.encode()]}
    if "input_ids" in declared:  # the runtime model itself: token ids in, token ids out
        values = {"input_ids": list(params.prompt_ids), "input_lengths": len(params.prompt_ids)}
    for field, value in sampling_values(params, declared).items():
        name = input_for(field, declared)
        if name is not None:
            values[name] = value
    for field, value in (("stream", params.stream), ("exclude_input", True)):  # the prompt must not come back
        if (name := input_for(field, declared)) is not None:
            values[name] = value
    values["return_num_output_tokens"] = True  # Triton's own OpenAI front end asks for token counts this way
    values["return_finish_reason"] = True  # the llmapi model says why it stopped when asked
    if params.stop and (name := input_for("stop_words", declared)) is not None:
        # Stop strings are also matched by the front end, so models without this input still stop at them.
        values[name] = [stop.encode() for stop in params.stop]
    return [tensor(model, name, value) for name, value in values.items() if name in declared]


# Struct formats of the fixed-size datatypes; BYTES is length-prefixed, the rare rest goes through numpy.
_FORMATS = {
    "BOOL": "?", "INT8": "b", "INT16": "h", "INT32": "i", "INT64": "q", "UINT8": "B", "UINT16": "H",
    "UINT32": "I", "UINT64": "Q", "FP32": "f", "FP64": "d",
}  # fmt: skip


def tensor(model: EntryModel, name: str, value: Any) -> Tensor:
    """`value` (a scalar or a list) as the model's input `name`: scalars as [1, 1] and lists as [1, n] when the model
    batches, [1] and [n] when it does not."""
    datatype = model.input_types[name]
    items = value if isinstance(value, list) else [value]
    shape = [1, len(items)] if model.batched else [len(items)]
    if datatype == "BYTES":
        data = b"".join(struct.pack("<I", len(item)) + item for item in items)
    elif datatype in _FORMATS:
        data = struct.pack(f"<{len(items)}{_FORMATS[datatype]}", *items)
    else:
        import numpy as np
        from tritonclient.utils import triton_to_np_dtype

        data = np.array(items, dtype=triton_to_np_dtype(datatype)).tobytes()
    return Tensor(name, datatype, shape, data)


def build_request(model: str, request_id: str, tensors: Sequence[Tensor]) -> Any:
    """The gRPC ModelInferRequest carrying `tensors`."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    for item in tensors:
        request.inputs.add(name=item.name, datatype=item.datatype, shape=item.shape)
        request.raw_input_contents.append(item.data)
    return request


# --- response parsing and error translation ------------------------------------------------------------------------
def output_values(response: Any, name: str) -> list[Any] | None:
    """The values of output `name` of a ModelInferResponse, flattened (BYTES items as bytes); None when absent."""
    for index, output in enumerate(response.outputs):
        if output.name != name:
            continue
        if index >= len(response.raw_output_contents):
            raise GenerationError(500, f"Triton sent output {name!r} without its data.")
        return _decode(output.datatype, response.raw_output_contents[index])
    return None


def _decode(datatype: str, data: bytes) -> list[Any]:
    if datatype == "BYTES":
        items, offset = [], 0
        while offset + 4 <= len(data):
            (length,) = struct.unpack_from("<I", data, offset)
            items.append(data[offset + 4 : offset + 4 + length])
            offset += 4 + length
        return items
    if datatype in _FORMATS:
        size = struct.calcsize(_FORMATS[datatype])
        return list(struct.unpack(f"<{len(data) // size}{_FORMATS[datatype]}", data))
    import numpy as np
    from tritonclient.utils import triton_to_np_dtype

    return np.frombuffer(data, dtype=triton_to_np_dtype(datatype)).tolist()


def parse_result(response: Any, token_bytes: Sequence[bytes] | None = None) -> tuple[GeneratedChunk | None, bool]:
    """A ModelInferResponse as (chunk or None for an empty final response, whether this is the final response).
    `token_bytes` turns the runtime model's output_ids into text: each id's exact bytes, so decoding stays exact
    across chunks."""
    parameters = response.parameters
    final = "triton_final_response" in parameters and parameters["triton_final_response"].bool_param
    ids = output_values(response, "output_ids") if token_bytes is not None else None
    if ids is not None:
        pieces = [token_bytes[i] if 0 <= i < len(token_bytes) else b"" for i in ids]  # type: ignore[index]
        sizes = tuple(len(piece) for piece in pieces)  # where each token's text starts: usage after a stop string
        return GeneratedChunk(text_bytes=b"".join(pieces), num_tokens=len(ids), token_sizes=sizes), final
    text = output_values(response, "text_output")
    if text is None:
        return None, final
    counts = output_values(response, "num_output_tokens")
    reasons = output_values(response, "finish_reason")
    reason = reasons[0].decode(errors="replace") if reasons and isinstance(reasons[0], bytes) else None
    return GeneratedChunk(
        text_bytes=b"".join(text),
        num_tokens=int(sum(counts)) if counts is not None else None,
        finish_reason=reason if reason in ("stop", "length") else None,
    ), final


def new_text(chunk: GeneratedChunk, sent: bytes) -> GeneratedChunk:
    """For models that stream the whole text so far: the part not sent yet (all of it, if it does not extend)."""
    if chunk.text_bytes.startswith(sent):
        return dataclasses.replace(chunk, text_bytes=chunk.text_bytes[len(sent) :])
    return chunk


_BAD_REQUEST_CODES = {"INVALID_ARGUMENT", "OUT_OF_RANGE", "FAILED_PRECONDITION"}
_UNAVAILABLE_CODES = {"UNAVAILABLE", "NOT_FOUND", "DEADLINE_EXCEEDED", "UNIMPLEMENTED"}
# Errors inside the stream come without a gRPC code; these phrases are how Triton and the models word bad input.
_BAD_REQUEST_PHRASES = (
    "invalid argument",
    "unexpected shape",
    "unexpected datatype",
    "unexpected inference input",
    "expected",
    "must be",
    "exceeds",
    "too long",
    "out of range",
    "invalid",
)
_UNAVAILABLE_PHRASES = ("unknown model", "not ready", "unavailable", "failed to connect", "is not found")


def status_for(code: str | None, message: str) -> int:
    """The HTTP status for a Triton failure: 400 bad input, 503 Triton/model unavailable, 500 otherwise."""
    code = (code or "").removeprefix("StatusCode.")
    if code in _BAD_REQUEST_CODES:
        return 400
    if code in _UNAVAILABLE_CODES:
        return 503
    lowered = message.lower()
    if any(phrase in lowered for phrase in _UNAVAILABLE_PHRASES):
        return 503
    if any(phrase in lowered for phrase in _BAD_REQUEST_PHRASES):
        return 400
    return 500


def translate_error(exc: BaseException, model: str) -> GenerationError:
    """Any tritonclient or grpc error -> GenerationError (the only error type that leaves this module)."""
    import grpc

    if isinstance(exc, GenerationError):
        return exc
    if isinstance(exc, grpc.aio.AioRpcError):
        code, message = exc.code().name, exc.details() or str(exc)
    else:
        status = getattr(exc, "status", None)
        code = status() if callable(status) else None
        message = exc.message() if callable(getattr(exc, "message", None)) else str(exc)
        message = message or str(exc)
    status_code = status_for(code, message)
    if status_code == 503:
        message = f"Triton model {model!r} is not available: {message}"
    return GenerationError(status_code, message)


# --- the client ----------------------------------------------------------------------------------------------------
_MAX_MESSAGE_BYTES = 2**31 - 1  # prompts and outputs are not limited here; Triton and the model limit them


class TritonGrpcGenerator:
    """TextGenerator over Triton's gRPC streaming API; one bidirectional stream per request, all on one channel.

    Requests are built as protobufs here and sent with the generated stub, not tritonclient's InferInput and
    stream_infer: their numpy conversions took about 0.3 ms per request, all of it before the request left.
    """

    def __init__(
        self,
        url: str,
        *,
        ready_models: Sequence[str] = (),
        timeout_s: float = 5.0,
        token_bytes: Sequence[bytes] | None = None,
    ) -> None:
        self.url = url
        self.ready_models = tuple(ready_models)
        self.timeout_s = timeout_s
        self.token_bytes = token_bytes  # for runtime models that answer with token ids
        self._channel: Any = None
        self._stub: Any = None
        self._spare: Any = None  # a stream call opened ahead of the next request
        self._models: dict[str, EntryModel] = {}
        self._stopping: set[asyncio.Future] = set()
        self._open: set[Any] = set()  # the stream calls of requests in flight
        self._aborted: dict[Any, str] = {}  # call -> why abort_all() failed it
        # Why Triton cannot serve now (a stub died, tritonserver is restarting: serving/supervisor.py), else None.
        self.unavailable: str | None = None

    def _grpc(self) -> Any:
        # Created on first use: a grpc.aio channel belongs to the event loop that is running when it is made.
        if self._stub is None:
            import grpc
            from tritonclient.grpc import service_pb2_grpc

            options = [
                ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ]
            self._channel = grpc.aio.insecure_channel(self.url, options=options)
            self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        return self._stub

    async def _config(self, model: str) -> Any:
        from tritonclient.grpc import service_pb2

        request = service_pb2.ModelConfigRequest(name=model)
        return (await self._grpc().ModelConfig(request, timeout=self.timeout_s)).config

    async def _entry_model(self, model: str) -> EntryModel:
        if model not in self._models:
            try:
                config = await self._config(model)
            except Exception as exc:
                raise translate_error(exc, model) from exc
            entry = EntryModel.from_config(config)
            if config.platform == "ensemble":
                entry = dataclasses.replace(entry, stop_target=await self._stop_target(config))
            self._models[model] = entry
        return self._models[model]

    async def _stop_target(self, ensemble_config: Any) -> str | None:
        for step in ensemble_config.ensemble_scheduling.step:
            try:
                step_config = await self._config(step.model_name)
            except Exception:  # a step we cannot read cannot be stopped either; cancellation stays best effort
                continue
            if any(tensor.name == "stop" for tensor in step_config.input):
                return step.model_name
        return None

    async def _start(self, model: str, request_id: str, tensors: Sequence[Tensor]) -> Any:
        """A stream call carrying the request. It goes on the spare opened after the previous request when that is
        still usable: opening a call costs about 0.15 ms of CPU here and a stream set-up at Triton, which the spare
        moves out of the time to first token. A spare that broke while it waited (Triton restarted) gives way to one
        new call."""
        spare, self._spare = self._spare, None
        if spare is not None and not spare.done():
            try:
                await self._send(spare, model, request_id, tensors)
                return spare
            except Exception as exc:
                log.debug("the spare stream to Triton broke (%s); opening a new one", exc)
                spare.cancel()
            except BaseException:  # cancelled while sending: the request must not stay half sent
                spare.cancel()
                raise
        call = self._grpc().ModelStreamInfer()
        try:
            await self._send(call, model, request_id, tensors)
        except BaseException:
            call.cancel()
            raise
        return call

    def _open_spare(self) -> None:
        if self._spare is None and self._channel is not None:
            self._spare = self._grpc().ModelStreamInfer()

    @staticmethod
    async def _send(call: Any, model: str, request_id: str, tensors: Sequence[Tensor]) -> None:
        """Sends the one request of a stream call and closes the write side (Triton still sends every response)."""
        await call.write(build_request(model, request_id, tensors))
        await call.done_writing()

    async def _send_stop(self, model: str, request_id: str) -> None:
        """Ask `model` to stop generating for `request_id` (its `stop` input); failures are only logged."""

        async def first_response() -> None:
            entry = await self._entry_model(model)
            values = {"input_ids": [0], "input_lengths": 1, "request_output_len": 1, "stop": True}
            call = self._grpc().ModelStreamInfer()
            try:
                await self._send(call, model, request_id, [tensor(entry, n, v) for n, v in values.items()])
            except BaseException:
                call.cancel()
                raise
            async for response in call:
                if response.error_message:
                    raise GenerationError(status_for(None, response.error_message), response.error_message)
                call.cancel()
                return

        try:
            await asyncio.wait_for(first_response(), self.timeout_s)
        except Exception as exc:
            log.warning("could not stop request %s on %s: %s", request_id, model, exc)

    def abort_all(self, reason: str) -> None:
        """The deployment broke: every request in flight fails at once with `reason` (503, not a hang), and new ones
        are refused with it until resume(). Runs on the event loop's thread."""
        self.unavailable = reason
        for call in self._open:
            self._aborted[call] = reason
            call.cancel()
        if self._spare is not None:  # opened to the server that broke
            self._spare.cancel()
            self._spare = None

    def resume(self) -> None:
        """Triton serves again (every model ready after a restart)."""
        self.unavailable = None

    async def model_inputs(self, model: str) -> set[str]:
        return set((await self._entry_model(model)).input_types)

    async def is_ready(self) -> bool:
        from tritonclient.grpc import service_pb2

        try:
            stub = self._grpc()
            if not (await stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=self.timeout_s)).ready:
                return False
            for model in self.ready_models:
                request = service_pb2.ModelReadyRequest(name=model)
                if not (await stub.ModelReady(request, timeout=self.timeout_s)).ready:
                    return False
            return True
        except Exception as exc:  # any failure to ask means "not ready"; /health only needs yes or no
            log.debug("Triton at %s is not ready: %s", self.url, exc)
            return False

    async def generate(self, model: str, request: GenerationParams) -> AsyncIterator[GeneratedChunk]:
        if self.unavailable is not None:
            raise GenerationError(503, f"Triton is unavailable: {self.unavailable}")
        entry = await self._entry_model(model)
        request_id = uuid.uuid4().hex
        call = None
        finished = False
        sent = b""
        try:
            call = await self._start(model, request_id, build_inputs(entry, request))
            self._open.add(call)
            if self.unavailable is not None:  # aborted while this request was being sent
                self._aborted[call] = self.unavailable
                call.cancel()
            async for response in call:
                if response.error_message:
                    raise GenerationError(status_for(None, response.error_message), response.error_message)
                chunk, final = parse_result(response.infer_response, self.token_bytes)
                if chunk is not None and entry.cumulative_text:
                    whole = chunk.text_bytes
                    chunk, sent = new_text(chunk, sent), whole
                if chunk is not None and (chunk.text_bytes or chunk.num_tokens or chunk.finish_reason):
                    yield chunk
                if final:
                    break
            finished = True
        except GenerationError:
            raise
        except asyncio.CancelledError:
            reason = self._aborted.get(call)
            cancelling = getattr(asyncio.current_task(), "cancelling", None)  # Python 3.11+
            if reason is None or (cancelling is not None and cancelling()):
                raise  # the caller was cancelled (client gone): not an abort
            raise GenerationError(503, f"Triton is unavailable: {reason}") from None
        except Exception as exc:
            raise translate_error(exc, model) from exc
        finally:
            self._open.discard(call)
            aborted = self._aborted.pop(call, None) is not None
            if not finished and call is not None and not aborted:
                # The caller stopped early (client gone, stop string, error): cancelling the gRPC call makes
                # Triton cancel the request, so the engine frees its slot instead of generating to max_tokens.
                call.cancel()
                if entry.stop_target is not None:
                    task = asyncio.ensure_future(self._send_stop(entry.stop_target, request_id))
                    self._stopping.add(task)  # keep a reference until it is done
                    task.add_done_callback(self._stopping.discard)
                log.debug("cancelled Triton request %s", request_id)
            # After the response's last events are out, not before them.
            asyncio.get_running_loop().call_soon(self._open_spare)

    async def close(self) -> None:
        if self._spare is not None:
            self._spare.cancel()
            self._spare = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None
