"""End to end: upstream tensorrtllm_backend v0.17's ensemble (its inputs, outputs and step mappings, rendered by
tests/upstream_contract.py) in place of ours, over our preprocessing, tensorrt_llm (portable runtime) and
postprocessing, in the real tritonserver: it loads, `tritonrepo validate` accepts it, requests through it get the same
text as transformers, honoured inputs act, and inputs the runtime cannot honour get an error naming them."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import reference_greedy
from serve_support import Deployment, grpc_stream
from upstream_contract import ensemble_v017_config

pytestmark = pytest.mark.e2e

PROMPT = "The café in 東京 serves"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    from tritonrepo.planning.build import build
    from tritonrepo.planning.request import DeploymentRequest
    from tritonrepo.repository.manifest import file_entry, read_manifest, write_manifest

    root = tmp_path_factory.mktemp("upstream-ensemble")
    repository = build(DeploymentRequest(model="tiny-llama", output=root / "tiny-llama")).path
    (repository / "ensemble" / "config.pbtxt").write_text(ensemble_v017_config(8))
    # Swapped in by hand: record it as the build records its files (that a changed file is refused is tested apart).
    manifest = read_manifest(repository)
    manifest["files"]["ensemble/config.pbtxt"] = file_entry(repository, "ensemble/config.pbtxt")
    write_manifest(repository, manifest)
    deployment = Deployment(repository, root / "serve.log")
    deployment.wait_healthy()
    yield deployment
    deployment.stop_cleanly()


def _request(prompt: str = PROMPT, max_tokens: int = 16, stream: bool = False, **extra) -> dict[str, np.ndarray]:
    return {
        "text_input": np.array([[prompt.encode()]], dtype=object),
        "max_tokens": np.array([[max_tokens]], dtype=np.int32),
        "stream": np.array([[stream]]),
        "exclude_input_in_output": np.array([[True]]),
        **extra,
    }


def _generate(deployment, inputs: dict[str, np.ndarray]) -> tuple[list, str | None]:
    responses, error = grpc_stream(deployment.grpc, "ensemble", inputs)
    return [r for r in responses if r.get_response().outputs], error


def _text(responses) -> str:
    """Streamed chunks are exact bytes (a character may be split across two): decode them incrementally."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    chunks = [b"".join(r.as_numpy("text_output").reshape(-1)) for r in responses]
    return "".join(decoder.decode(chunk) for chunk in chunks) + decoder.decode(b"", final=True)


def test_tritonrepo_validate_accepts_the_repository(deployment):
    result = subprocess.run(
        [sys.executable, "-m", "tritonrepo.cli.main", "validate", str(deployment.repository)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_through_upstreams_ensemble_gets_the_transformers_text(
    deployment, tiny_tokenizer, tiny_reference_model, stream
):
    expected = tiny_tokenizer.decode(reference_greedy(tiny_reference_model, tiny_tokenizer, PROMPT, 16))
    responses, error = _generate(deployment, _request(stream=stream))
    assert error is None, error
    assert len(responses) == (16 if stream else 1)
    assert _text(responses) == expected


def test_embedding_bias_words_steer_generation(deployment, tiny_tokenizer):
    word = next(
        text
        for token in range(10, len(tiny_tokenizer))
        if len(tiny_tokenizer.encode(text := tiny_tokenizer.decode([token]), add_special_tokens=False)) == 1
        and text.strip()
    )
    extra = {
        "embedding_bias_words": np.array([[word.encode()]], dtype=object),
        "embedding_bias_weights": np.array([[1000.0]], dtype=np.float32),
    }
    responses, error = _generate(deployment, _request(max_tokens=6, **extra))
    assert error is None, error
    assert _text(responses) == word * 6


def test_context_and_generation_logits_come_back_through_the_ensemble(deployment, tiny_tokenizer):
    extra = {"return_context_logits": np.array([[True]]), "return_generation_logits": np.array([[True]])}
    responses, error = _generate(deployment, _request(max_tokens=5, **extra))
    assert error is None, error
    prompt_len = len(tiny_tokenizer(PROMPT).input_ids)
    vocab = len(tiny_tokenizer)
    assert responses[0].as_numpy("context_logits").shape == (1, prompt_len, vocab)
    assert responses[0].as_numpy("generation_logits").shape == (1, 1, 5, vocab)


@pytest.mark.parametrize(
    "extra, names",
    [
        ({"lora_task_id": np.array([[3]], dtype=np.uint64)}, "lora_task_id"),
        ({"prompt_embedding_table": np.ones((1, 2, 64), dtype=np.float16)}, "prompt_embedding_table"),
        ({"decoder_text_input": np.array([[b"bonjour"]], dtype=object)}, "decoder_input_ids"),
        ({"num_return_sequences": np.array([[2]], dtype=np.int32)}, "num_return_sequences 2"),
        ({"return_kv_cache_reuse_stats": np.array([[True]])}, "return_kv_cache_reuse_stats"),
    ],
)
def test_what_the_runtime_cannot_honour_is_refused_by_name_and_serving_goes_on(deployment, extra, names):
    responses, error = _generate(deployment, _request(**extra))
    assert error is not None and f"{names}:" in error and "hf runtime" in error, error
    assert _text(_generate(deployment, _request(max_tokens=2))[0])  # the server still serves


def test_streamed_logits_and_token_counts_come_with_each_response(deployment, tiny_tokenizer):
    ids = tiny_tokenizer(PROMPT).input_ids
    inputs = {
        "input_ids": np.array([ids], dtype=np.int32),
        "input_lengths": np.array([[len(ids)]], dtype=np.int32),
        "request_output_len": np.array([[4]], dtype=np.int32),
        "streaming": np.array([[True]]),
        "return_context_logits": np.array([[True]]),
        "return_generation_logits": np.array([[True]]),
        "return_num_input_tokens": np.array([[True]]),
        "return_num_output_tokens": np.array([[True]]),
    }
    responses, error = grpc_stream(deployment.grpc, "tensorrt_llm", inputs)
    assert error is None, error
    responses = [r for r in responses if r.get_response().outputs]
    assert len(responses) == 4
    vocab = len(tiny_tokenizer)
    assert responses[0].as_numpy("context_logits").shape == (1, len(ids), vocab)
    assert all(r.as_numpy("context_logits") is None for r in responses[1:])
    for response in responses:
        assert response.as_numpy("generation_logits").shape == (1, 1, 1, vocab)
        token = response.as_numpy("output_ids").reshape(-1).tolist()
        assert response.as_numpy("generation_logits").reshape(-1).argmax() == token[0]
        assert response.as_numpy("num_input_tokens").reshape(-1).tolist() == [len(ids)]
        assert response.as_numpy("num_output_tokens").reshape(-1).tolist() == [1]
