"""Hub downloads with the real huggingface_hub against a local fake Hub: only the needed files, errors, disk, offline."""

from __future__ import annotations

import json
import shutil
from collections import namedtuple

import pytest
from conftest import free_port
from fake_hub import FakeHub, use_fake_hub

from tritonrepo.errors import ModelDownloadError, ModelNotFoundError
from tritonrepo.source import download
from tritonrepo.source.download import download_checkpoint
from tritonrepo.source.resolve import check_checkpoint, resolve_model

MIB = 1024**2
TOKEN = "hf_fakeSecretToken1234567890"
NEEDED = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"}


def checkpoint(hidden_size: int = 64) -> dict[str, bytes]:
    """A small Llama-shaped repository, with the duplicate weights real repositories carry next to the safetensors."""
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden_size}
    return {
        "config.json": json.dumps(config).encode(),
        "generation_config.json": b'{"do_sample": false}',
        "model.safetensors": bytes(range(256)) * 256,  # 64 KiB
        "tokenizer.json": b'{"version": "1.0", "model": {"type": "BPE"}}',
        "tokenizer_config.json": b'{"model_max_length": 2048}',
        "README.md": b"# a model card a build does not need",
        "pytorch_model.bin": b"\1" * (16 * MIB),
        "original/consolidated.pth": b"\2" * MIB,
    }


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with FakeHub() as fake:
        use_fake_hub(monkeypatch, fake.url, tmp_path / "hf-home")
        yield fake


def fetched(hub: FakeHub) -> set[str]:
    return set(hub.file_gets())


def one_line_without_token(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and TOKEN not in message, message
    return message


def test_only_the_files_a_build_needs_are_downloaded(hub, tmp_path):
    sha = hub.add("org/name", checkpoint())
    path = download_checkpoint("org/name", cache_dir=tmp_path / "cache")
    assert fetched(hub) == NEEDED
    assert sorted(p.name for p in path.iterdir()) == sorted(NEEDED)
    assert path.name == sha and path.is_relative_to(tmp_path / "cache")
    assert (path / "model.safetensors").read_bytes() == checkpoint()["model.safetensors"]
    check_checkpoint(path)


def test_resolve_model_downloads_into_the_default_cache_and_records_the_commit(hub, tmp_path):
    sha = hub.add("org/name", checkpoint())
    source = resolve_model("org/name")
    assert (source.kind, source.name, source.id, source.revision) == ("hub", "name", "org/name", sha)
    assert source.path.is_relative_to(tmp_path / "hf-home" / "hub")
    assert source.config()["architectures"] == ["LlamaForCausalLM"]


def test_a_revision_pins_the_files(hub, tmp_path):
    main = hub.add("org/name", checkpoint(hidden_size=64))
    v1 = hub.add("org/name", checkpoint(hidden_size=128), ref="v1")
    assert main != v1
    sizes = {
        revision: json.loads((download_checkpoint("org/name", revision=revision) / "config.json").read_text())
        for revision in (None, "v1", main)
    }
    assert sizes[None]["hidden_size"] == sizes[main]["hidden_size"] == 64
    assert sizes["v1"]["hidden_size"] == 128
    assert resolve_model("org/name", revision="v1").revision == v1


@pytest.mark.parametrize("token", [None, "hf_someoneElsesToken"])
def test_a_gated_model_without_access_says_how_to_get_it(hub, token):
    hub.add("org/gated", checkpoint(), token=TOKEN)
    with pytest.raises(ModelDownloadError) as raised:
        download_checkpoint("org/gated", token=token)
    message = one_line_without_token(raised)
    assert "gated" in message and "HF_TOKEN" in message and "license" in message
    assert not token or token not in message
    assert fetched(hub) == set()


def test_a_gated_model_downloads_with_hf_token_sent_as_a_bearer_token(hub, monkeypatch):
    hub.add("org/gated", checkpoint(), token=TOKEN)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    check_checkpoint(download_checkpoint("org/gated"))
    assert fetched(hub) == NEEDED
    assert {r.authorization for r in hub.requests if "/resolve/" in r.path} == {f"Bearer {TOKEN}"}


def test_a_token_never_shows_in_an_error(hub):
    with pytest.raises(ModelNotFoundError) as raised:
        download_checkpoint("org/missing", token=TOKEN)
    one_line_without_token(raised)


def test_an_unknown_repository_is_not_found(hub):
    with pytest.raises(ModelNotFoundError, match="org/missing was not found on the Hugging Face Hub") as raised:
        resolve_model("org/missing")
    one_line_without_token(raised)


def test_an_unknown_revision_is_named(hub):
    hub.add("org/name", checkpoint())
    with pytest.raises(ModelNotFoundError, match="revision 'nope' of org/name does not exist") as raised:
        download_checkpoint("org/name", revision="nope")
    one_line_without_token(raised)
    assert fetched(hub) == set()


def fake_disk(monkeypatch, free: int) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(download.shutil, "disk_usage", lambda path: usage(100 * download.GIB, 0, free))


def test_not_enough_disk_is_refused_before_anything_is_downloaded(hub, monkeypatch, tmp_path):
    hub.add("org/name", checkpoint())
    fake_disk(monkeypatch, free=download.GIB // 2)
    with pytest.raises(ModelDownloadError) as raised:
        download_checkpoint("org/name", cache_dir=tmp_path / "cache")
    message = one_line_without_token(raised)
    assert "not enough disk space" in message and "0.50 GiB free" in message and "--cache-dir" in message
    assert not [r for r in hub.requests if "/resolve/" in r.path]  # not even a HEAD
    assert not (tmp_path / "cache").exists()


def test_the_disk_check_counts_only_needed_files_and_not_what_is_cached(hub, monkeypatch, tmp_path):
    hub.add("org/name", checkpoint())
    # Room for the safetensors and the margin, not for the 16 MiB pytorch_model.bin that is not downloaded.
    fake_disk(monkeypatch, free=download.SPACE_MARGIN_BYTES + MIB)
    download_checkpoint("org/name", cache_dir=tmp_path / "cache")
    fake_disk(monkeypatch, free=0)
    hub.requests.clear()
    download_checkpoint("org/name", cache_dir=tmp_path / "cache")  # everything cached: nothing to make room for
    assert fetched(hub) == set()


def test_a_broken_transfer_resumes_with_a_range_request(hub, monkeypatch, tmp_path):
    from huggingface_hub import constants

    # huggingface_hub resumes from the last whole chunk it wrote; its 10 MiB chunks would swallow our 32 KiB.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 4096)
    hub.add("org/name", checkpoint())
    hub.interrupt.add("model.safetensors")
    path = download_checkpoint("org/name", cache_dir=tmp_path / "cache")
    assert (path / "model.safetensors").read_bytes() == checkpoint()["model.safetensors"]
    ranges = [r.range for r in hub.requests if r.method == "GET" and r.path.endswith("/model.safetensors")]
    assert ranges == [None, "bytes=32768-"]


def test_an_unreachable_hub_is_reported_as_such(monkeypatch, tmp_path):
    use_fake_hub(monkeypatch, f"http://127.0.0.1:{free_port()}", tmp_path)  # nothing listens there
    with pytest.raises(ModelDownloadError, match="Hugging Face Hub cannot be reached at http://127") as raised:
        resolve_model("org/name")
    assert "HF_ENDPOINT" in one_line_without_token(raised)


def test_offline_after_a_download_reads_the_cache_without_the_network(hub, tmp_path):
    sha = hub.add("org/name", checkpoint())
    online = download_checkpoint("org/name", revision="main", cache_dir=tmp_path / "cache")
    hub.requests.clear()
    offline = download_checkpoint("org/name", revision="main", cache_dir=tmp_path / "cache", offline=True)
    assert offline == online and offline.name == sha
    assert resolve_model("org/name", cache_dir=tmp_path / "cache", offline=True).revision == sha
    assert hub.requests == []


def test_hf_hub_offline_counts_as_offline(hub, monkeypatch, tmp_path):
    from huggingface_hub import constants

    hub.add("org/name", checkpoint())
    online = download_checkpoint("org/name", cache_dir=tmp_path / "cache")
    hub.requests.clear()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets when huggingface_hub loads
    assert download_checkpoint("org/name", cache_dir=tmp_path / "cache") == online
    assert hub.requests == []


def test_offline_without_a_cached_copy_says_so(hub, tmp_path):
    hub.add("org/name", checkpoint())
    with pytest.raises(ModelDownloadError, match="not in the local cache .* in offline mode") as raised:
        download_checkpoint("org/name", cache_dir=tmp_path / "cache", offline=True)
    assert "--offline" in one_line_without_token(raised)
    assert hub.requests == []


def test_offline_with_a_partial_cached_copy_says_it_is_incomplete(hub, tmp_path):
    sha = hub.add("org/name", checkpoint())
    path = download_checkpoint("org/name", cache_dir=tmp_path / "cache")
    (path / "tokenizer.json").unlink()
    with pytest.raises(ModelDownloadError, match="only partly in the local cache") as raised:
        download_checkpoint("org/name", cache_dir=tmp_path / "cache", offline=True)
    one_line_without_token(raised)
    assert path.name == sha


def test_the_cache_dir_is_used_instead_of_the_default(hub, tmp_path):
    hub.add("org/name", checkpoint())
    path = download_checkpoint("org/name", cache_dir=tmp_path / "elsewhere")
    assert path.is_relative_to(tmp_path / "elsewhere" / "models--org--name" / "snapshots")
    assert not (tmp_path / "hf-home" / "hub").exists()
    shutil.rmtree(tmp_path / "elsewhere")
    with pytest.raises(ModelDownloadError, match="not in the local cache"):
        download_checkpoint("org/name", cache_dir=tmp_path / "elsewhere", offline=True)
