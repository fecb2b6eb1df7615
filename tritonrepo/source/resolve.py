"""Turn a --model value into a local checkpoint directory: the embedded tiny model, a local folder, or a Hub id."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from tritonrepo import __version__, progress
from tritonrepo.errors import ModelDownloadError, ModelNotFoundError, UnsupportedModelError
from tritonrepo.source.catalog import EMBEDDED, ModelFacts, lookup
from tritonrepo.source.download import download_checkpoint

EMBEDDED_MODELS = tuple(model.name for model in EMBEDDED)  # built locally; scripted-llama thinks, then answers


@dataclass(frozen=True)
class ModelSource:
    name: str  # short name used for the output folder and the served model name
    kind: Literal["embedded", "local", "hub"]
    id: str  # what the user asked for: embedded name, absolute directory, or Hub id
    revision: str | None
    path: Path  # local checkpoint directory

    def config(self) -> dict:
        return json.loads((self.path / "config.json").read_text())


def cache_root() -> Path:
    root = (
        os.environ.get("TRITONREPO_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tritonrepo"
    )
    return Path(root)


def resolve_model(
    spec: str,
    *,
    revision: str | None = None,
    cache_dir: Path | None = None,
    token: str | None = None,
    offline: bool = False,
) -> ModelSource:
    if spec in EMBEDDED_MODELS:
        return _embedded(spec)
    entry = lookup(spec)
    if entry is not None:
        source = _hub(entry.hf_id, revision=revision, cache_dir=cache_dir, token=token, offline=offline)
        return replace(source, name=entry.name)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _local(path)
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ModelNotFoundError(f"no such model directory: {spec}", hint="Pass an existing checkpoint folder.")
    if spec.count("/") != 1:
        raise ModelNotFoundError(
            f"unknown model {spec!r}",
            hint=f"Use an embedded model ({', '.join(EMBEDDED_MODELS)}), a known model (e.g. "
            "DeepSeek-R1-Distill-Llama-8B; `tritonrepo models` lists them), a local checkpoint folder, "
            "or a Hugging Face id such as deepseek-ai/DeepSeek-R1-Distill-Llama-8B.",
        )
    return _hub(spec, revision=revision, cache_dir=cache_dir, token=token, offline=offline)


def _embedded(name: str) -> ModelSource:
    from tritonrepo.source.scripted_llama import create_scripted_llama
    from tritonrepo.source.tiny_llama import create_tiny_llama

    target = cache_root() / "models" / f"{name}-{__version__}-{_embedded_code_digest()}"
    if not (target / "config.json").is_file():
        progress.say(f"    creating the embedded model {name} in {target}")
        (create_scripted_llama if name == "scripted-llama" else create_tiny_llama)(target)
    return ModelSource(name=name, kind="embedded", id=name, revision=__version__, path=target)


def _embedded_code_digest() -> str:
    """The embedded checkpoints follow from the code that writes them, so their cache folder is keyed by that code:
    a change (such as new generation defaults) makes a new folder instead of reusing a stale one of the same version."""
    import hashlib

    from tritonrepo.source import scripted_llama, tiny_llama

    digest = hashlib.sha256()
    for module in (tiny_llama, scripted_llama):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:12]


def _local(path: Path) -> ModelSource:
    path = path.resolve()
    check_checkpoint(path)
    return ModelSource(name=path.name, kind="local", id=str(path), revision=None, path=path)


def check_checkpoint(path: Path) -> None:
    """A servable Hugging Face checkpoint: config.json with an architecture, weights, and a tokenizer."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise UnsupportedModelError(
            f"{path} has no config.json", hint="Point --model at a Hugging Face checkpoint folder."
        )
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise UnsupportedModelError(f"{config_file} is not valid JSON: {error}") from None
    if not config.get("architectures"):
        raise UnsupportedModelError(f"{config_file} names no architecture (the 'architectures' field)")
    if not any(path.glob("*.safetensors")) and not any(path.glob("pytorch_model*.bin")):
        raise UnsupportedModelError(f"{path} has no weights (*.safetensors)", hint="Download the complete checkpoint.")
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise UnsupportedModelError(f"{path} has no tokenizer (tokenizer.json, tokenizer.model or vocab.json)")


def _hub(repo_id: str, *, revision, cache_dir, token, offline) -> ModelSource:
    """Download (or reuse from the Hugging Face cache) only the files a build needs."""
    path = download_checkpoint(repo_id, revision=revision, cache_dir=cache_dir, token=token, offline=offline)
    check_checkpoint(path)
    # The snapshot folder is named after the commit: recording it pins exactly what was built, whatever was asked.
    return ModelSource(name=repo_id.split("/")[-1], kind="hub", id=repo_id, revision=path.name, path=path)


def model_facts(spec: str, *, revision: str | None = None, offline: bool = False) -> tuple[str, ModelFacts]:
    """(display name, facts) for planning, without downloading weights: the catalog, a local folder, the embedded
    model, or just config.json from the Hub (or its local cache)."""
    entry = lookup(spec)
    if entry is not None:
        return entry.name, entry.facts
    if spec in EMBEDDED_MODELS:
        return spec, ModelFacts.from_config(_embedded(spec).config())
    path = Path(spec).expanduser()
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise UnsupportedModelError(f"{path} has no config.json")
        return path.name, ModelFacts.from_config(_config_with_quantization(path))
    if spec.count("/") != 1 or spec.startswith((".", "/", "~")):
        resolve_model(spec)  # raises the same clear error a build would
    from huggingface_hub import errors as hub_errors
    from huggingface_hub import hf_hub_download

    try:
        config = hf_hub_download(spec, "config.json", revision=revision, local_files_only=offline)
    except hub_errors.GatedRepoError:
        raise ModelDownloadError(f"{spec} is gated", hint="Set HF_TOKEN to a token with access.") from None
    except hub_errors.RepositoryNotFoundError:
        raise ModelNotFoundError(f"{spec} was not found on the Hugging Face Hub") from None
    except (hub_errors.LocalEntryNotFoundError, hub_errors.HfHubHTTPError, OSError) as error:
        raise ModelDownloadError(
            f"cannot read {spec}'s config.json ({type(error).__name__}): not in the catalog, and the Hub is unreachable",
            hint="Plan offline with a known model name or a local checkpoint folder.",
        ) from None
    return spec.split("/")[-1], ModelFacts.from_config(json.loads(Path(config).read_text()))


def _config_with_quantization(path: Path) -> dict:
    """config.json, plus ModelOpt's hf_quant_config.json (NVIDIA's FP4 checkpoints) as its quantization_config."""
    config = json.loads((path / "config.json").read_text())
    quant_file = path / "hf_quant_config.json"
    if "quantization_config" not in config and quant_file.is_file():
        config["quantization_config"] = json.loads(quant_file.read_text()).get("quantization", {})
    return config


def model_reference(spec: str) -> str:
    """What a runtime that loads the checkpoint itself (trtllm-serve, LLM(model=...)) is given: the Hub id of a known
    or Hub model, or the absolute path of a local folder."""
    entry = lookup(spec)
    if entry is not None:
        return entry.hf_id
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.is_dir() else spec
