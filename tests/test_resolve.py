"""--model resolution: embedded, local folders and Hub ids, with clear errors for everything else."""

from __future__ import annotations

import shutil

import pytest

from tritonrepo.errors import ModelDownloadError, ModelNotFoundError, UnsupportedModelError
from tritonrepo.source.resolve import resolve_model


def test_embedded_tiny_llama_is_created_once_in_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TRITONREPO_CACHE", str(tmp_path))
    first = resolve_model("tiny-llama")
    assert first.kind == "embedded" and first.path.is_relative_to(tmp_path)
    stamp = (first.path / "model.safetensors").stat().st_mtime_ns
    assert resolve_model("tiny-llama").path == first.path
    assert (first.path / "model.safetensors").stat().st_mtime_ns == stamp


def test_an_embedded_model_made_by_other_code_is_not_reused(monkeypatch, tmp_path):
    from tritonrepo.source import resolve

    monkeypatch.setenv("TRITONREPO_CACHE", str(tmp_path))
    first = resolve_model("scripted-llama").path
    monkeypatch.setattr(resolve, "_embedded_code_digest", lambda: "0" * 12)  # as after a change to its generator
    second = resolve_model("scripted-llama").path
    assert second != first and (second / "config.json").is_file()


def test_a_local_folder_resolves_to_itself(tiny_model_dir):
    source = resolve_model(str(tiny_model_dir))
    assert source.kind == "local" and source.path == tiny_model_dir.resolve()
    assert source.config()["model_type"] == "llama"


@pytest.mark.parametrize("spec", ["./missing-folder", "/no/such/dir", "a/b/c"])
def test_a_missing_folder_is_named(spec):
    with pytest.raises(ModelNotFoundError, match="no such model directory"):
        resolve_model(spec)


def test_an_unknown_short_name_lists_what_would_work():
    with pytest.raises(ModelNotFoundError) as raised:
        resolve_model("llama-9000")
    assert "tiny-llama" in str(raised.value) and "Hugging Face id" in str(raised.value)


@pytest.mark.parametrize(
    "remove, message",
    [
        ("config.json", "has no config.json"),
        ("model.safetensors", "has no weights"),
        ("tokenizer.json", "has no tokenizer"),
    ],
)
def test_an_incomplete_checkpoint_says_what_is_missing(tiny_model_dir, tmp_path, remove, message):
    copy = tmp_path / "ckpt"
    shutil.copytree(tiny_model_dir, copy)
    (copy / remove).unlink()
    with pytest.raises(UnsupportedModelError, match=message):
        resolve_model(str(copy))


def test_a_hub_id_that_is_not_cached_fails_clearly_offline():
    with pytest.raises(ModelDownloadError, match="not in the local cache and the Hub cannot be reached"):
        resolve_model("deepseek-ai/DeepSeek-R1-Distill-Llama-8B", offline=True)


def test_an_invalid_hub_id_is_refused():
    with pytest.raises(ModelNotFoundError, match="not a valid Hugging Face id"):
        resolve_model("bad id/with spaces")
