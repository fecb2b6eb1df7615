"""TEST DOUBLE -- NOT TensorRT-LLM. A scripted stand-in for tensorrt_llm.LLM, for our llmapi Triton model's tests.

It generates no text from any model: every request gets the same SCRIPT (_double_script.py), one piece per step (FAKE_LLMAPI_STEP_S
seconds, default 0.01), so streaming, max_tokens ("length"), stop strings ("stop", cut before the stop string) and
abort ("cancelled") behave as the LLM API's do. After the script it "emits the end token" (finish_reason "stop"). A
prompt containing ENDLESS_MARKER repeats the script until max_tokens, so a test has time to cancel. With
exclude_input_from_output=False the text starts with the prompt, as TensorRT-LLM's does. As in the LLM API,
outputs[0].text is the whole text so far, also when streaming.

Every LLM(...) construction, generation, abort, finish and shutdown is appended as one JSON line to the file named by
$FAKE_LLMAPI_RECORD (from whichever process runs it: the tests read what tritonserver's Python stub did).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from dataclasses import asdict, dataclass, field

from tensorrt_llm.llmapi._double_script import ENDLESS_MARKER, RECORD_ENV, SCRIPT, STEP_ENV
from tensorrt_llm.sampling_params import SamplingParams

_ids = itertools.count(1)


def record(event: str, **fields) -> None:
    path = os.environ.get(RECORD_ENV)
    if path:
        line = json.dumps({"event": event, "pid": os.getpid(), **fields}, default=str, ensure_ascii=False)
        with open(path, "a", encoding="utf-8") as file:  # one short append per event: lines never interleave
            file.write(line + "\n")


@dataclass
class CompletionOutput:
    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: str | None = None


class RequestOutput:
    """Async-iterable like the LLM API's result: streaming yields after every step, otherwise once, when done."""

    def __init__(self, prompt: str, params: SamplingParams, streaming: bool) -> None:
        self.request_id = next(_ids)
        self.prompt = prompt
        self.params = params
        self.streaming = streaming
        self.outputs = [CompletionOutput(0)]
        self.finished = False
        self._aborted = False
        self._pieces: list[str] = []
        endless = ENDLESS_MARKER in prompt
        self._source = itertools.cycle(SCRIPT) if endless else iter(SCRIPT)
        self._step_s = float(os.environ.get(STEP_ENV, "0.01"))

    def abort(self) -> None:
        if not self._aborted and not self.finished:
            record("abort", request_id=self.request_id, generated=len(self._pieces))
        self._aborted = True

    def aborted(self) -> bool:
        return self._aborted

    def __aiter__(self) -> RequestOutput:
        return self

    async def __anext__(self) -> RequestOutput:
        if self.finished:
            raise StopAsyncIteration
        while True:
            await asyncio.sleep(self._step_s)
            self._step()
            if self.finished or self.streaming:
                return self

    def _step(self) -> None:
        if self._aborted:
            return self._finish("cancelled")
        piece = next(self._source, None)
        if piece is None:
            return self._finish("stop")  # the end token: no text
        self._pieces.append(piece)
        generated = "".join(self._pieces)
        for stop in self.params.stop_strings():
            if stop in generated:
                self._set_text(generated[: generated.index(stop)])
                return self._finish("stop", stop_reason=stop)
        self._set_text(generated)
        if len(self._pieces) >= self.params.max_tokens:
            self._finish("length")

    def _set_text(self, generated: str) -> None:
        output = self.outputs[0]
        output.text = generated if self.params.exclude_input_from_output else self.prompt + generated
        output.token_ids = list(range(len(self._pieces)))

    def _finish(self, reason: str, stop_reason: str | None = None) -> None:
        self.outputs[0].finish_reason, self.outputs[0].stop_reason = reason, stop_reason
        self.finished = True
        record("finish", request_id=self.request_id, reason=reason, generated=len(self._pieces))


class LLM:
    """Records its arguments; rejects triton_config, which the real LLM() would refuse as an unknown argument."""

    def __init__(self, model: str, **kwargs) -> None:
        if "triton_config" in kwargs:
            raise TypeError("LLM() got an unexpected keyword argument 'triton_config'")
        self.args = {"model": model, **kwargs}
        record("init", kwargs=self.args)

    def generate_async(self, inputs: str, sampling_params: SamplingParams | None = None, streaming: bool = False):
        params = sampling_params or SamplingParams()
        output = RequestOutput(inputs, params, streaming)
        record("generate", request_id=output.request_id, prompt=inputs, sampling=asdict(params), streaming=streaming)
        return output

    def shutdown(self) -> None:
        record("shutdown")
