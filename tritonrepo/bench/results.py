"""The typed result of a benchmark sweep: one entry per concurrency level, read from aiperf's JSON export."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tritonrepo.errors import BenchError

SCHEMA = "tritonrepo.bench/1"  # bump when a field changes meaning; readers refuse other major versions


@dataclass(frozen=True)
class Percentiles:
    """Milliseconds."""

    p50: float
    p90: float
    p99: float
    avg: float

    @classmethod
    def from_aiperf(cls, metric: dict | None) -> Percentiles:
        metric = metric or {}
        return cls(**{key: float(metric.get(key) or 0.0) for key in ("p50", "p90", "p99", "avg")})


@dataclass(frozen=True)
class LevelResult:
    """One concurrency level: throughput, latency percentiles and errors, as the server counted the tokens."""

    concurrency: int
    requests: int  # completed, successful or not
    errors: int
    requests_per_s: float
    output_tokens_per_s: float  # all users together
    output_tokens_per_s_per_user: float  # the median request's decode rate after its first token (1 / its ITL)
    ttft_ms: Percentiles
    itl_ms: Percentiles  # inter-token latency
    latency_ms: Percentiles  # end to end, per request
    input_tokens_avg: float
    output_tokens_avg: float
    duration_s: float
    error_messages: list[str] = field(default_factory=list)

    @classmethod
    def from_aiperf(cls, concurrency: int, export: dict) -> LevelResult:
        """From aiperf 0.13's profile_export_aiperf.json (metrics are `{"unit", "avg", "p50", ...}` objects)."""

        def avg(name: str) -> float:
            return float((export.get(name) or {}).get("avg") or 0.0)

        summary = export.get("error_summary") or []
        errors = int(avg("error_request_count")) or sum(int(entry.get("count", 0)) for entry in summary)
        messages = [str((entry.get("error_details") or {}).get("message", ""))[:300] for entry in summary]
        return cls(
            concurrency=concurrency,
            requests=int(avg("completed_request_count")) or int(avg("request_count")) + errors,
            errors=errors,
            requests_per_s=avg("request_throughput"),
            output_tokens_per_s=avg("output_token_throughput"),
            output_tokens_per_s_per_user=float(
                (export.get("output_token_throughput_per_user") or {}).get("p50") or 0.0
            ),
            ttft_ms=Percentiles.from_aiperf(export.get("time_to_first_token")),
            itl_ms=Percentiles.from_aiperf(export.get("inter_token_latency")),
            latency_ms=Percentiles.from_aiperf(export.get("request_latency")),
            input_tokens_avg=avg("input_sequence_length"),
            output_tokens_avg=avg("output_sequence_length"),
            duration_s=avg("benchmark_duration"),
            error_messages=[m for m in messages if m],
        )

    @classmethod
    def from_dict(cls, data: dict) -> LevelResult:
        data = dict(data)
        for key in ("ttft_ms", "itl_ms", "latency_ms"):
            data[key] = Percentiles(**data[key])
        return cls(**data)


@dataclass
class BenchResult:
    """A whole sweep, as written to result.json."""

    model: str
    openai_url: str
    settings: dict  # what was asked: concurrency levels, requests or duration, lengths, streaming
    levels: list[LevelResult]
    started: str
    finished: str = ""
    interrupted: bool = False
    deployment: dict | None = None  # the deployment's manifest (tritonrepo.json or dynamo-deployment.json)
    hardware: dict = field(default_factory=dict)
    tools: dict = field(default_factory=dict)  # versions of tritonrepo, aiperf, python
    schema: str = SCHEMA

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "result") -> BenchResult:
        if str(data.get("schema", "")).split("/")[0] != SCHEMA.split("/")[0]:
            raise BenchError(f"{where} is not a tritonrepo bench result (schema {data.get('schema')!r}).")
        if data["schema"] != SCHEMA:
            raise BenchError(f"{where} has schema {data['schema']!r}; this tritonrepo reads {SCHEMA!r}.")
        data = dict(data)
        data["levels"] = [LevelResult.from_dict(level) for level in data.get("levels", [])]
        return cls(**data)


def load_result(path: Path) -> BenchResult:
    """A result.json, or the run folder holding one (what --compare takes)."""
    path = Path(path)
    file = path / "result.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise BenchError(
            f"No benchmark result at {file}.", hint="Give a result.json or the run folder holding it."
        ) from None
    except (OSError, ValueError) as error:
        raise BenchError(f"Cannot read the benchmark result {file}: {error}") from None
    if not isinstance(data, dict):
        raise BenchError(f"{file} is not a tritonrepo bench result.")
    try:
        return BenchResult.from_dict(data, str(file))
    except (KeyError, TypeError) as error:
        raise BenchError(f"{file} is not a complete tritonrepo bench result ({error}).") from None
