"""TritonGrpcGenerator's use of stream calls, over a test double of grpc.aio's stream call and Triton's stub (the
real gRPC path against tritonserver is in test_e2e_frontend.py and test_e2e_serve.py)."""

from __future__ import annotations

import asyncio
import struct

from tritonclient.grpc import model_config_pb2, service_pb2

from tritonrepo.frontend.triton_client import GenerationParams, TritonGrpcGenerator

TOKEN_BYTES = [b"", b"he", b"llo"]


def response(ids: list[int], final: bool) -> service_pb2.ModelStreamInferResponse:
    message = service_pb2.ModelStreamInferResponse()
    inner = message.infer_response
    inner.outputs.add(name="output_ids", datatype="INT32", shape=[1, 1, len(ids)])
    inner.raw_output_contents.append(struct.pack(f"<{len(ids)}i", *ids))
    inner.parameters["triton_final_response"].bool_param = final
    return message


class FakeStreamCall:
    """Test double of grpc.aio's StreamStreamCall: records writes, replays responses, can be broken or cancelled."""

    def __init__(self, *, broken: bool = False, ended: bool = False) -> None:
        self.written: list = []
        self.broken, self.ended, self.cancelled = broken, ended, False

    def done(self) -> bool:
        return self.ended or self.cancelled

    async def write(self, request) -> None:
        if self.broken:
            raise ConnectionError("the stream was reset")
        self.written.append(request)

    async def done_writing(self) -> None:
        pass

    def cancel(self) -> bool:
        self.cancelled = True
        return True

    async def __aiter__(self):
        yield response([1], final=False)
        yield response([2], final=True)


class FakeStub:
    """Test double of Triton's GRPCInferenceServiceStub: a runtime model's config, and stream calls it records."""

    def __init__(self) -> None:
        self.calls: list[FakeStreamCall] = []

    async def ModelConfig(self, request, timeout=None):  # noqa: N802 (the gRPC method's name)
        config = model_config_pb2.ModelConfig(name=request.name, max_batch_size=8)
        for name, dtype in (("input_ids", "TYPE_INT32"), ("input_lengths", "TYPE_INT32"), ("streaming", "TYPE_BOOL")):
            config.input.add(name=name, data_type=model_config_pb2.DataType.Value(dtype))
        config.input.add(name="request_output_len", data_type=model_config_pb2.TYPE_INT32)
        return service_pb2.ModelConfigResponse(config=config)

    def ModelStreamInfer(self):  # noqa: N802
        self.calls.append(FakeStreamCall())
        return self.calls[-1]


class Generator(TritonGrpcGenerator):
    def __init__(self, stub: FakeStub) -> None:
        super().__init__("unused:0", token_bytes=TOKEN_BYTES)
        self.stub = stub
        self._channel = object()  # "connected": spares may be opened

    def _grpc(self):
        return self.stub


PARAMS = GenerationParams(prompt="hi", prompt_ids=(5, 6), max_tokens=2)


async def generate(generator: Generator) -> bytes:
    text = b"".join([chunk.text_bytes async for chunk in generator.generate("tensorrt_llm", PARAMS)])
    await asyncio.sleep(0)  # the spare is opened on the loop's next turn
    return text


def test_the_next_request_goes_on_the_spare_opened_after_the_last_one():
    stub = FakeStub()

    async def two_requests():
        generator = Generator(stub)
        first = await generate(generator)
        after_first = len(stub.calls)
        second = await generate(generator)
        return first, after_first, second

    first, after_first, second = asyncio.run(two_requests())
    assert first == second == b"hello"
    assert after_first == 2  # the first request's call, then the spare
    assert len(stub.calls[0].written) == len(stub.calls[1].written) == 1  # the second request went on the spare
    assert len(stub.calls) == 3 and not stub.calls[2].written  # and a new spare waits
    assert stub.calls[1].written[0].inputs[0].name == "input_ids"


def test_an_ended_or_broken_spare_gives_way_to_a_new_call():
    stub = FakeStub()

    async def scenario(spare: FakeStreamCall):
        generator = Generator(stub)
        generator._spare = spare
        return await generate(generator)

    ended = FakeStreamCall(ended=True)
    assert asyncio.run(scenario(ended)) == b"hello" and not ended.written
    broken = FakeStreamCall(broken=True)
    assert asyncio.run(scenario(broken)) == b"hello" and broken.cancelled
    assert all(len(call.written) == 1 for call in stub.calls[::2])  # each request on a new call (spares between)


def test_leaving_early_cancels_the_requests_call_only():
    stub = FakeStub()

    async def leave_after_one_chunk():
        generator = Generator(stub)
        await generate(generator)
        spare = generator._spare
        chunks = generator.generate("tensorrt_llm", PARAMS)
        await anext(chunks)
        await chunks.aclose()
        await asyncio.sleep(0)
        return spare, generator._spare

    used, new_spare = asyncio.run(leave_after_one_chunk())
    assert used.cancelled and used.written  # the request on the spare was cancelled at Triton
    assert new_spare is not used and not new_spare.cancelled


class HangingStreamCall(FakeStreamCall):
    """Test double of a grpc.aio stream call whose generation goes on until it is cancelled; reading a locally
    cancelled call raises asyncio.CancelledError, as grpc.aio does."""

    def __init__(self) -> None:
        super().__init__()
        self._cancelled = asyncio.Event()

    def cancel(self) -> bool:
        self.cancelled = True
        self._cancelled.set()
        return True

    async def __aiter__(self):
        yield response([1], final=False)
        await self._cancelled.wait()
        raise asyncio.CancelledError


def test_abort_all_fails_requests_in_flight_with_the_reason_and_refuses_new_ones_until_resume():
    from tritonrepo.frontend.triton_client import GenerationError

    stub = FakeStub()

    async def scenario():
        generator = Generator(stub)
        stub.ModelStreamInfer = lambda: stub.calls.append(HangingStreamCall()) or stub.calls[-1]
        chunks = generator.generate("tensorrt_llm", PARAMS)
        first = await anext(chunks)
        generator.abort_all("the stub of tensorrt_llm_0_0 died")
        failures = []
        try:
            await anext(chunks)
        except GenerationError as exc:
            failures.append(exc)
        try:
            await anext(generator.generate("tensorrt_llm", PARAMS))
        except GenerationError as exc:
            failures.append(exc)
        refused_calls = len(stub.calls)
        generator.resume()
        del stub.ModelStreamInfer  # back to calls that finish
        after = await generate(generator)
        return first, failures, refused_calls, after

    first, failures, calls_before_resume, after = asyncio.run(scenario())
    assert first.text_bytes == b"he"
    assert [(f.status, f.message) for f in failures] == [
        (503, "Triton is unavailable: the stub of tensorrt_llm_0_0 died")
    ] * 2
    assert stub.calls[0].cancelled and calls_before_resume == 1  # the refused request opened no call
    assert after == b"hello"


def test_a_caller_that_is_cancelled_is_not_mistaken_for_an_abort():
    stub = FakeStub()

    async def scenario():
        generator = Generator(stub)
        stub.ModelStreamInfer = lambda: stub.calls.append(HangingStreamCall()) or stub.calls[-1]

        async def consume():
            async for _ in generator.generate("tensorrt_llm", PARAMS):
                pass

        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.wait({task})
        return task, generator

    task, generator = asyncio.run(scenario())
    assert task.cancelled() and stub.calls[0].cancelled and generator.unavailable is None
