"""Tests for tritonrepo/frontend/metrics.py: observer math, private registries, the middleware and /metrics."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import REGISTRY
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Route

from tritonrepo.frontend import metrics as metrics_module
from tritonrepo.frontend.metrics import (
    INTER_TOKEN_BUCKETS,
    REQUEST_LATENCY_BUCKETS,
    FrontendMetrics,
    MetricsMiddleware,
    metrics_endpoint,
)

MODEL = "tiny-llama"


class FakeClock:
    def __init__(self, now: float = 10.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(metrics_module, "perf_counter", fake)
    return fake


def value(metrics: FrontendMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def requests(metrics: FrontendMetrics, endpoint: str, status: str) -> float | None:
    return value(metrics, "tritonrepo_http_requests_total", endpoint=endpoint, status=status)


# --- generation observer -------------------------------------------------------------------------------------------
def test_observer_times_first_token_inter_token_and_end(clock):
    metrics = FrontendMetrics()
    observer = metrics.generation(MODEL)  # started at 10.0
    clock.now = 10.25
    observer.chunk(1)  # first token after 0.25 s
    clock.now = 10.375
    observer.chunk(2)  # 0.125 s for two tokens: 0.0625 each
    clock.now = 10.5
    observer.chunk(1)  # 0.125 s for one token
    clock.now = 12.0
    observer.finish(prompt_tokens=7, completion_tokens=4)

    assert value(metrics, "tritonrepo_time_to_first_token_seconds_count", model=MODEL) == 1
    assert value(metrics, "tritonrepo_time_to_first_token_seconds_sum", model=MODEL) == 0.25
    assert value(metrics, "tritonrepo_inter_token_latency_seconds_count", model=MODEL) == 3
    assert value(metrics, "tritonrepo_inter_token_latency_seconds_sum", model=MODEL) == 0.25
    assert 0.075 in INTER_TOKEN_BUCKETS and 0.15 in INTER_TOKEN_BUCKETS
    assert value(metrics, "tritonrepo_inter_token_latency_seconds_bucket", model=MODEL, le="0.075") == 2
    assert value(metrics, "tritonrepo_inter_token_latency_seconds_bucket", model=MODEL, le="0.15") == 3
    assert value(metrics, "tritonrepo_e2e_request_latency_seconds_count", model=MODEL) == 1
    assert value(metrics, "tritonrepo_e2e_request_latency_seconds_sum", model=MODEL) == 2.0
    assert value(metrics, "tritonrepo_prompt_tokens_total", model=MODEL) == 7
    assert value(metrics, "tritonrepo_generation_tokens_total", model=MODEL) == 4
    assert value(metrics, "tritonrepo_requests_cancelled_total", model=MODEL) == 0


def test_first_chunk_of_several_tokens_is_only_ttft_and_empty_chunks_are_skipped(clock):
    metrics = FrontendMetrics()
    observer = metrics.generation(MODEL)
    clock.now = 10.5
    observer.chunk(0)  # no tokens yet: neither the first token nor a gap
    clock.now = 11.0
    observer.chunk(3)
    clock.now = 11.5
    observer.chunk(0)  # the next gap still runs from 11.0
    clock.now = 12.0
    observer.chunk(2)

    assert value(metrics, "tritonrepo_time_to_first_token_seconds_sum", model=MODEL) == 1.0
    assert value(metrics, "tritonrepo_inter_token_latency_seconds_count", model=MODEL) == 2
    assert value(metrics, "tritonrepo_inter_token_latency_seconds_sum", model=MODEL) == 1.0


def test_finish_is_idempotent_and_later_chunks_are_ignored(clock):
    metrics = FrontendMetrics()
    observer = metrics.generation(MODEL)
    clock.now = 11.0
    observer.chunk(1)
    observer.finish(prompt_tokens=5, completion_tokens=1)
    clock.now = 20.0
    observer.chunk(1)
    observer.finish(prompt_tokens=5, completion_tokens=1)
    observer.finish(prompt_tokens=5, completion_tokens=1, cancelled=True)

    assert value(metrics, "tritonrepo_e2e_request_latency_seconds_count", model=MODEL) == 1
    assert value(metrics, "tritonrepo_e2e_request_latency_seconds_sum", model=MODEL) == 1.0
    assert value(metrics, "tritonrepo_inter_token_latency_seconds_count", model=MODEL) == 0
    assert value(metrics, "tritonrepo_prompt_tokens_total", model=MODEL) == 5
    assert value(metrics, "tritonrepo_generation_tokens_total", model=MODEL) == 1
    assert value(metrics, "tritonrepo_requests_cancelled_total", model=MODEL) == 0


def test_cancelled_generation_counts_tokens_but_not_e2e_latency(clock):
    metrics = FrontendMetrics()
    observer = metrics.generation(MODEL)
    clock.now = 10.5
    observer.chunk(1)
    clock.now = 30.0
    observer.finish(prompt_tokens=9, completion_tokens=1, cancelled=True)

    assert value(metrics, "tritonrepo_requests_cancelled_total", model=MODEL) == 1
    assert value(metrics, "tritonrepo_e2e_request_latency_seconds_count", model=MODEL) == 0
    assert value(metrics, "tritonrepo_prompt_tokens_total", model=MODEL) == 9
    assert value(metrics, "tritonrepo_generation_tokens_total", model=MODEL) == 1


def test_models_get_their_own_series(clock):
    metrics = FrontendMetrics()
    first, second, again = metrics.generation("a"), metrics.generation("b"), metrics.generation("a")
    first.finish(prompt_tokens=1, completion_tokens=2)
    second.finish(prompt_tokens=10, completion_tokens=20)
    again.finish(prompt_tokens=100, completion_tokens=200)

    assert value(metrics, "tritonrepo_prompt_tokens_total", model="a") == 101
    assert value(metrics, "tritonrepo_generation_tokens_total", model="b") == 20
    assert value(metrics, "tritonrepo_e2e_request_latency_seconds_count", model="a") == 2


def test_instances_do_not_share_values_nor_the_global_registry():
    one, two = FrontendMetrics(), FrontendMetrics()  # registering the same names twice must not raise
    one.generation(MODEL).finish(prompt_tokens=3, completion_tokens=4)

    assert value(one, "tritonrepo_prompt_tokens_total", model=MODEL) == 3
    assert value(two, "tritonrepo_prompt_tokens_total", model=MODEL) is None
    assert REGISTRY.get_sample_value("tritonrepo_prompt_tokens_total", {"model": MODEL}) is None


def test_buckets_span_llm_serving_latencies():
    assert REQUEST_LATENCY_BUCKETS[0] == 0.001 and REQUEST_LATENCY_BUCKETS[-1] == 60.0
    assert INTER_TOKEN_BUCKETS[0] == 0.0005 and INTER_TOKEN_BUCKETS[-1] == 2.0
    for buckets in (REQUEST_LATENCY_BUCKETS, INTER_TOKEN_BUCKETS):
        assert list(buckets) == sorted(set(buckets))


# --- queue depth ---------------------------------------------------------------------------------------------------
def test_queue_depth_is_read_at_scrape_time_and_absent_without_a_source():
    metrics = FrontendMetrics()
    assert value(metrics, "tritonrepo_queue_depth") is None

    depth = [3]
    metrics.set_queue_source(lambda: depth[0])
    assert value(metrics, "tritonrepo_queue_depth") == 3
    depth[0] = 5
    assert value(metrics, "tritonrepo_queue_depth") == 5

    metrics.set_queue_source(None)
    assert value(metrics, "tritonrepo_queue_depth") is None


def test_failing_queue_source_leaves_the_gauge_out_but_not_the_scrape():
    metrics = FrontendMetrics()

    def broken() -> float:
        raise RuntimeError("triton is gone")

    metrics.set_queue_source(broken)
    metrics.generation(MODEL).finish(prompt_tokens=1, completion_tokens=1)
    body, _ = metrics.render()
    names = {family.name for family in text_string_to_metric_families(body.decode())}

    assert "tritonrepo_queue_depth" not in names
    assert "tritonrepo_prompt_tokens" in names


# --- middleware over a FastAPI app ---------------------------------------------------------------------------------
def make_app(metrics: FrontendMetrics) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse({"data": []})

    @app.get("/v1/models/{model}")
    async def model(model: str) -> JSONResponse:
        return JSONResponse({"id": model})

    @app.post("/v1/completions")
    async def completions() -> JSONResponse:
        raise HTTPException(400, "bad request")

    @app.get("/health")
    async def health() -> JSONResponse:
        raise RuntimeError("unexpected")

    @app.post("/v1/chat/completions")
    async def chat() -> StreamingResponse:
        async def events():
            yield b"data: one\n\n"
            yield b"data: two\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    app.add_api_route("/metrics", metrics_endpoint(metrics), methods=["GET"])
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def client_for(app) -> httpx.AsyncClient:
    # raise_app_exceptions=False: an unhandled error comes back as a 500, as it would from uvicorn.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def test_middleware_counts_requests_by_endpoint_and_status():
    metrics = FrontendMetrics()

    async def scenario() -> list[int]:
        async with client_for(make_app(metrics)) as client:
            return [
                (await client.get("/v1/models")).status_code,
                (await client.get("/v1/models")).status_code,
                (await client.get("/v1/models/tiny-llama")).status_code,
                (await client.get("/nowhere")).status_code,
                (await client.post("/v1/completions")).status_code,
                (await client.get("/health")).status_code,
            ]

    assert asyncio.run(scenario()) == [200, 200, 200, 404, 400, 500]
    assert requests(metrics, "/v1/models", "200") == 3  # /v1/models/<id> folds into /v1/models
    assert requests(metrics, "other", "404") == 1
    assert requests(metrics, "/v1/completions", "400") == 1
    assert requests(metrics, "/health", "500") == 1
    assert value(metrics, "tritonrepo_http_requests_in_flight", endpoint="/v1/models") == 0
    # Every label the middleware can produce is bounded: no path of a request became a label of its own.
    endpoints = {
        sample.labels["endpoint"]
        for family in metrics.registry.collect()
        for sample in family.samples
        if "endpoint" in sample.labels
    }
    assert endpoints == {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics", "other"}


def test_metrics_endpoint_serves_parseable_text_with_its_content_type():
    metrics = FrontendMetrics()
    metrics.generation(MODEL).finish(prompt_tokens=2, completion_tokens=3)
    metrics.set_queue_source(lambda: 4)

    async def scenario() -> httpx.Response:
        async with client_for(make_app(metrics)) as client:
            await client.get("/v1/models")
            return await client.get("/metrics")

    response = asyncio.run(scenario())
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    for name in (
        "tritonrepo_http_requests",
        "tritonrepo_http_requests_in_flight",
        "tritonrepo_time_to_first_token_seconds",
        "tritonrepo_inter_token_latency_seconds",
        "tritonrepo_e2e_request_latency_seconds",
        "tritonrepo_prompt_tokens",
        "tritonrepo_generation_tokens",
        "tritonrepo_requests_cancelled",
        "tritonrepo_queue_depth",
    ):
        assert name in families, name
    counted = {
        (s.labels["endpoint"], s.labels["status"]): s.value
        for s in families["tritonrepo_http_requests"].samples
        if s.name == "tritonrepo_http_requests_total"
    }
    assert counted == {("/v1/models", "200"): 1.0}  # the /metrics request itself is counted once it ends
    in_flight = {s.labels["endpoint"]: s.value for s in families["tritonrepo_http_requests_in_flight"].samples}
    assert in_flight["/metrics"] == 1.0  # the scrape sees itself in flight
    assert families["tritonrepo_queue_depth"].samples[0].value == 4.0
    generated = [s for s in families["tritonrepo_generation_tokens"].samples if s.name.endswith("_total")]
    assert [(s.labels, s.value) for s in generated] == [({"model": MODEL}, 3.0)]


def test_metrics_endpoint_works_as_a_plain_starlette_route():
    metrics = FrontendMetrics()
    metrics.generation(MODEL).finish(prompt_tokens=6, completion_tokens=1)
    app = Starlette(routes=[Route("/metrics", metrics_endpoint(metrics))])

    async def scenario() -> httpx.Response:
        async with client_for(app) as client:
            return await client.get("/metrics")

    response = asyncio.run(scenario())
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    assert 'tritonrepo_prompt_tokens_total{model="tiny-llama"} 6.0' in response.text


# --- middleware at the ASGI level (httpx's ASGITransport buffers whole responses, so streaming is driven here) -----
class RecordingServer:
    """Plays the server side of one ASGI http request and records what the app sends."""

    def __init__(self, path: str, method: str = "GET") -> None:
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"test")],
            "client": ("127.0.0.1", 1234),
            "server": ("test", 80),
        }
        self.sent: list[dict] = []
        self.first_body = asyncio.Event()
        self.done = asyncio.Event()
        self._requested = False

    async def receive(self) -> dict:
        if not self._requested:
            self._requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.done.wait()
        return {"type": "http.disconnect"}

    async def send(self, message) -> None:
        self.sent.append(dict(message))
        if message["type"] == "http.response.body":
            if message.get("body"):
                self.first_body.set()
            if not message.get("more_body", False):
                self.done.set()

    async def run(self, app) -> None:
        await app(self.scope, self.receive, self.send)

    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.sent if m["type"] == "http.response.body" and m.get("body")]


def test_streamed_chunks_pass_through_before_the_generator_finishes():
    metrics = FrontendMetrics()
    observed: dict[str, object] = {}
    server_holder: list[RecordingServer] = []
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat() -> StreamingResponse:
        async def events():
            yield b"data: one\n\n"
            # Resumed only after the first chunk was sent on: it must already be at the server, not held back.
            observed["first_chunk_arrived"] = server_holder[0].first_body.is_set()
            observed["in_flight"] = value(
                metrics, "tritonrepo_http_requests_in_flight", endpoint="/v1/chat/completions"
            )
            yield b"data: two\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    server = RecordingServer("/v1/chat/completions", method="POST")
    server_holder.append(server)
    asyncio.run(server.run(MetricsMiddleware(app, metrics)))

    assert observed == {"first_chunk_arrived": True, "in_flight": 1.0}
    assert server.bodies() == [b"data: one\n\n", b"data: two\n\n"]
    assert requests(metrics, "/v1/chat/completions", "200") == 1
    assert value(metrics, "tritonrepo_http_requests_in_flight", endpoint="/v1/chat/completions") == 0


def test_request_ending_without_a_response_counts_as_499():
    metrics = FrontendMetrics()

    async def silent_app(scope, receive, send) -> None:
        await receive()  # the client went away; nothing is answered

    server = RecordingServer("/v1/completions", method="POST")
    asyncio.run(server.run(MetricsMiddleware(silent_app, metrics)))

    assert server.sent == []
    assert requests(metrics, "/v1/completions", "499") == 1
    assert value(metrics, "tritonrepo_http_requests_in_flight", endpoint="/v1/completions") == 0


def test_cancelled_request_counts_as_499_and_stays_cancelled():
    metrics = FrontendMetrics()
    started = asyncio.Event()

    async def endless_app(scope, receive, send) -> None:
        started.set()
        await asyncio.Event().wait()

    async def scenario() -> None:
        server = RecordingServer("/v1/chat/completions", method="POST")
        task = asyncio.ensure_future(server.run(MetricsMiddleware(endless_app, metrics)))
        await started.wait()
        assert value(metrics, "tritonrepo_http_requests_in_flight", endpoint="/v1/chat/completions") == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert requests(metrics, "/v1/chat/completions", "499") == 1
    assert value(metrics, "tritonrepo_http_requests_in_flight", endpoint="/v1/chat/completions") == 0


def test_non_http_scopes_pass_through_uncounted():
    metrics = FrontendMetrics()
    seen: list[str] = []

    async def app(scope, receive, send) -> None:
        seen.append(scope["type"])

    asyncio.run(MetricsMiddleware(app, metrics)({"type": "lifespan"}, None, None))

    assert seen == ["lifespan"]
    assert not [s for f in metrics.registry.collect() for s in f.samples if s.name == "tritonrepo_http_requests_total"]
