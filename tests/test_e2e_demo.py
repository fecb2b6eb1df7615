"""What `make demo` shows, through the real tritonserver: scripted-llama answers its fixed reply to the demo's request
(temperature 0), and `tritonrepo smoke` passes every check against it, though the model ends at once on other prompts."""

from __future__ import annotations

import ast

import pytest
from serve_support import Deployment

from tritonrepo.checks.smoke import SmokeTargets, run_smoke
from tritonrepo.source.scripted_llama import DEFAULT_SCRIPT, expected_reasoning_and_answer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    from tritonrepo.planning.build import build
    from tritonrepo.planning.request import DeploymentRequest

    root = tmp_path_factory.mktemp("e2e-demo")
    repository = build(DeploymentRequest(model="scripted-llama", output=root / "scripted-llama")).path
    deployment = Deployment(repository, root / "serve.log")
    deployment.wait_healthy()
    yield deployment
    deployment.stop_cleanly()


def test_the_demo_request_gets_the_fixed_answer(deployment):
    from openai import OpenAI

    client = OpenAI(base_url=deployment.base_url, api_key="none", max_retries=0)
    # the request the Makefile's demo sends
    response = client.chat.completions.create(
        model="scripted-llama", messages=[{"role": "user", "content": "Hello!"}], max_tokens=200, temperature=0
    )
    message = response.choices[0].message
    reasoning, answer = expected_reasoning_and_answer(DEFAULT_SCRIPT)
    assert (message.model_extra["reasoning_content"], message.content) == (reasoning, answer)
    assert response.choices[0].finish_reason == "stop"


def test_smoke_passes_on_a_model_that_ends_at_once_on_its_prompt(deployment):
    results = run_smoke(
        SmokeTargets(
            http_url=f"127.0.0.1:{deployment.http}", grpc_url=f"127.0.0.1:{deployment.grpc}",
            openai_url=deployment.base_url,
        )
    )  # fmt: skip
    assert [r.name for r in results if not r.ok] == [], [r.as_dict() for r in results]
    assert len(results) == 3 + 5 + 4 + 2
    streamed = next(r for r in results if r.name == "ensemble over gRPC streaming")
    assert streamed.detail.startswith("8 responses")  # min_length held it to the 8 tokens asked for
    reasoning, _ = expected_reasoning_and_answer(DEFAULT_SCRIPT)
    for name in ("OpenAI chat (non-stream)", "OpenAI chat (stream)"):  # the script thinks first: that is what shows
        detail = next(r.detail for r in results if r.name == name)
        shown = ast.literal_eval(detail.split("(reasoning: ", 1)[1][:-1])
        # 8 tokens may end inside a character: a cut one is U+FFFD at the end of a whole (non-streamed) text
        assert len(shown) > 10 and reasoning.startswith(shown.removesuffix("\ufffd")), detail
