"""Prometheus metrics of the OpenAI front end: HTTP traffic, token latencies and throughput, served at /metrics."""

# No `from __future__ import annotations`: FastAPI reads the /metrics handler's `request: Request` annotation, and
# Request is imported inside metrics_endpoint (starlette stays out of module import), so it must be evaluated at def.

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from time import perf_counter
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from .asgi_types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

log = logging.getLogger(__name__)


# Waiting for the first token spans queueing, prefill and a cold start: a short prompt on a warm GPU answers in a few
# ms, a long prompt behind a full batch takes seconds, and anything past a minute is a failure, not a latency. Buckets
# are densest from 50 ms to 2 s, where interactive TTFT objectives sit, so their percentiles come out precise.
REQUEST_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
)  # fmt: skip
# One decode step per token: 5 to 50 ms per token (20 to 200 tokens/s per stream) is the usual range, a fraction of a
# ms shows up when several tokens arrive in one chunk, and second-long gaps mean a stalled or preempted stream.
INTER_TOKEN_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
    0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0,
)  # fmt: skip

DEFAULT_ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics")
OTHER_ENDPOINT = "other"
CLIENT_GONE_STATUS = "499"  # nginx's "client closed request": the request ended before any response was started
QUEUE_DEPTH = "tritonrepo_queue_depth"
_QUEUE_DOC = "Requests waiting to be scheduled, read from the queue source at scrape time."


class _QueueDepthCollector(Collector):
    """Reads the queue depth at scrape time; reports nothing while there is no source (an unknown depth is not 0)."""

    def __init__(self) -> None:
        self.source: Callable[[], float] | None = None

    def describe(self) -> list[GaugeMetricFamily]:
        # Describing without collecting keeps the registry from calling the source when the collector is registered.
        return [GaugeMetricFamily(QUEUE_DEPTH, _QUEUE_DOC)]

    def collect(self) -> list[GaugeMetricFamily]:
        source = self.source
        if source is None:
            return []
        try:
            depth = float(source())
        except Exception:  # a broken source must not fail the whole scrape
            log.warning("the queue depth source failed; tritonrepo_queue_depth is left out", exc_info=True)
            return []
        return [GaugeMetricFamily(QUEUE_DEPTH, _QUEUE_DOC, value=depth)]


class _ModelSeries:
    """The labelled children of one model, bound once so that a token costs no label lookup."""

    __slots__ = ("ttft", "itl", "e2e", "prompt_tokens", "generation_tokens", "cancelled")

    def __init__(self, metrics: "FrontendMetrics", model: str) -> None:
        self.ttft = metrics.time_to_first_token.labels(model=model)
        self.itl = metrics.inter_token_latency.labels(model=model)
        self.e2e = metrics.e2e_request_latency.labels(model=model)
        self.prompt_tokens = metrics.prompt_tokens.labels(model=model)
        self.generation_tokens = metrics.generation_tokens.labels(model=model)
        self.cancelled = metrics.requests_cancelled.labels(model=model)


class GenerationObserver:
    """Times one generation: TTFT at the first chunk, inter-token latency after it, e2e latency and tokens at finish."""

    __slots__ = ("_series", "_started", "_last", "_finished")

    def __init__(self, series: _ModelSeries) -> None:
        self._series = series
        self._started = perf_counter()
        self._last: float | None = None  # when the latest chunk arrived; None until the first one
        self._finished = False

    def chunk(self, num_tokens: int = 1) -> None:
        """Call as each chunk of `num_tokens` new tokens arrives; a chunk without tokens is no token and is skipped."""
        if num_tokens < 1 or self._finished:
            return
        now = perf_counter()
        last = self._last
        self._last = now
        if last is None:
            self._series.ttft.observe(now - self._started)
            return
        # Tokens that arrive together shared the wait: each is observed with its share, so a chunked stream and a
        # token-by-token stream of the same speed give the same histogram.
        per_token = (now - last) / num_tokens
        itl = self._series.itl
        if num_tokens == 1:
            itl.observe(per_token)
            return
        for _ in range(num_tokens):
            itl.observe(per_token)

    def finish(self, prompt_tokens: int, completion_tokens: int, cancelled: bool = False) -> None:
        """Records the generation once; later calls do nothing, so every exit path may call it.

        A cancelled generation counts its tokens (the server did that work) but not its e2e latency, which then
        measures the client's patience rather than the server.
        """
        if self._finished:
            return
        self._finished = True
        series = self._series
        if cancelled:
            series.cancelled.inc()
        else:
            series.e2e.observe(perf_counter() - self._started)
        if prompt_tokens > 0:
            series.prompt_tokens.inc(prompt_tokens)
        if completion_tokens > 0:
            series.generation_tokens.inc(completion_tokens)


class FrontendMetrics:
    """The front end's metrics on a private registry, so several apps in one process never share or clash."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.http_requests = Counter(
            "tritonrepo_http_requests_total",
            "HTTP requests by endpoint and response status (499: the client left before a response started).",
            ["endpoint", "status"],
            registry=registry,
        )
        self.http_requests_in_flight = Gauge(
            "tritonrepo_http_requests_in_flight", "HTTP requests being handled now.", ["endpoint"], registry=registry
        )

        def per_model_histogram(name: str, documentation: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, documentation, ["model"], buckets=buckets, registry=registry)

        self.time_to_first_token = per_model_histogram(
            "tritonrepo_time_to_first_token_seconds",
            "Time from the start of a generation to its first tokens.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.inter_token_latency = per_model_histogram(
            "tritonrepo_inter_token_latency_seconds",
            "Time between generated tokens after the first, one observation per token.",
            INTER_TOKEN_BUCKETS,
        )
        self.e2e_request_latency = per_model_histogram(
            "tritonrepo_e2e_request_latency_seconds",
            "Time from the start to the end of a generation that was not cancelled.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.prompt_tokens = Counter(
            "tritonrepo_prompt_tokens_total", "Prompt tokens processed.", ["model"], registry=registry
        )
        self.generation_tokens = Counter(
            "tritonrepo_generation_tokens_total", "Tokens generated.", ["model"], registry=registry
        )
        self.requests_cancelled = Counter(
            "tritonrepo_requests_cancelled_total",
            "Generations cut short because the client went away before the end.",
            ["model"],
            registry=registry,
        )
        self._queue_depth = _QueueDepthCollector()
        registry.register(self._queue_depth)
        self._series: dict[str, _ModelSeries] = {}

    def set_queue_source(self, source: Callable[[], float] | None) -> None:
        """`source()` gives the queue depth at each scrape; it runs in the scrape, so it must be cheap and sync."""
        self._queue_depth.source = source

    def generation(self, model: str) -> GenerationObserver:
        """An observer for one generation of `model` (a served name, so the label set stays small), started now."""
        series = self._series.get(model)
        if series is None:
            series = self._series.setdefault(model, _ModelSeries(self, model))
        return GenerationObserver(series)

    def render(self) -> tuple[bytes, str]:
        """The registry in the Prometheus text format: (body, content type)."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Pure ASGI middleware counting HTTP requests by endpoint and status; messages pass straight through.

    Paths outside `endpoints` count as "other" and /v1/models/<id> as /v1/models, so clients cannot grow the label set.
    """

    def __init__(self, app: ASGIApp, metrics: FrontendMetrics, endpoints: Iterable[str] = DEFAULT_ENDPOINTS) -> None:
        self.app = app
        self.metrics = metrics
        self.endpoints = frozenset(endpoints)
        labels = (*self.endpoints, OTHER_ENDPOINT)
        # Bound up front, which also exports each endpoint's gauge at 0 before its first request.
        self._in_flight = {label: metrics.http_requests_in_flight.labels(endpoint=label) for label in labels}

    def endpoint_label(self, path: str) -> str:
        if path in self.endpoints:
            return path
        if path.startswith("/v1/models/") and "/v1/models" in self.endpoints:
            return "/v1/models"
        return OTHER_ENDPOINT

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = self.endpoint_label(scope["path"])
        status: str | None = None

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
            await send(message)

        in_flight = self._in_flight[endpoint]
        in_flight.inc()
        try:
            await self.app(scope, receive, send_and_note_status)
        except asyncio.CancelledError:
            status = status or CLIENT_GONE_STATUS
            raise
        except Exception:
            # Raised before any response: the server error middleware outside this one will answer 500.
            status = status or "500"
            raise
        finally:
            in_flight.dec()
            self.metrics.http_requests.labels(endpoint=endpoint, status=status or CLIENT_GONE_STATUS).inc()


def metrics_endpoint(metrics: FrontendMetrics) -> Callable[["Request"], Awaitable["Response"]]:
    """A Starlette or FastAPI handler serving `metrics`, to mount at GET /metrics."""
    from starlette.requests import Request
    from starlette.responses import Response

    async def serve_metrics(request: Request) -> Response:
        body, content_type = metrics.render()
        # Set as a header, not media_type: Starlette would append a second charset to the exposition content type.
        return Response(body, headers={"Content-Type": content_type})

    return serve_metrics
