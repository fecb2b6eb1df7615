"""Property-based fuzzing of the OpenAI front end from its own OpenAPI schema (schemathesis): whatever a client sends,
the answer is never a 5xx and the app keeps serving. Runs the whole ASGI stack (metrics, admission, routes, serving)
in process over the ScriptedGenerator test double of our TextGenerator interface."""

from __future__ import annotations

import pytest
import schemathesis
from frontend_fixtures import ScriptedGenerator, make_repository, make_tokenizer_dir
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from starlette.testclient import TestClient

from tritonrepo.frontend.app import FrontendSettings, build_asgi


def _stack(root):
    repository = make_repository(root / "repo", make_tokenizer_dir(root / "tokenizer"))
    asgi, _ = build_asgi(FrontendSettings(repository=repository), generator=ScriptedGenerator())
    return asgi


@pytest.fixture(scope="module")
def asgi(tmp_path_factory):
    return _stack(tmp_path_factory.mktemp("fuzz"))


_GATES = (
    "n", "logprobs", "top_logprobs", "tools", "tool_choice", "functions", "function_call", "response_format",
    "logit_bias", "suffix", "best_of",
)  # fmt: skip


def _check(case, mode) -> None:
    if mode is GenerationMode.POSITIVE and isinstance(case.body, dict):
        # A random model name is a 404, and n > 1, logprobs or a feature this server lacks (tools, ...) a 400, before
        # the other fields are looked at: name the served model and drop those, so the fuzzed sampling fields and
        # messages reach the serving code.
        case.body["model"] = "tiny-llama"
        for gate in _GATES:
            case.body.pop(gate, None)
        for message in case.body.get("messages") or []:
            if isinstance(message, dict):
                for gate in ("tool_calls", "function_call", "refusal"):
                    message.pop(gate, None)
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, case.body, response.text[:500])
    if response.status_code >= 400:
        assert "message" in response.json()["error"]  # every refusal speaks the one OpenAI error format


def _checker(mode):
    def check(case) -> None:
        _check(case, mode)

    return check


def test_no_request_makes_the_front_end_fail(asgi):
    # Driven through hypothesis directly (schemathesis' pytest plugin does not load under this pytest version).
    schema = schemathesis.openapi.from_asgi("/openapi.json", asgi)
    operations = [result.ok() for result in schema.get_all_operations()]
    paths = {operation.path for operation in operations}
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models"} <= paths
    fuzz = settings(max_examples=80, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    for operation in operations:
        # Positive cases reach the serving code; negative ones (wrong types, missing fields) hit validation.
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if operation.method.upper() == "POST" else ()
        for mode in modes or (GenerationMode.POSITIVE,):
            fuzz(given(case=operation.as_strategy(generation_mode=mode))(_checker(mode)))()


def test_the_app_still_serves_after_the_fuzzing(asgi):
    with TestClient(asgi) as client:
        assert client.get("/health").status_code == 200
        reply = client.post("/v1/completions", json={"model": "tiny-llama", "prompt": "hi", "max_tokens": 4})
        assert reply.status_code == 200 and reply.json()["choices"][0]["text"]
