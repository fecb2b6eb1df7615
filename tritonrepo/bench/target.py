"""What a benchmark points at: the OpenAI endpoint, the model it serves, the tokenizer and the deployment's manifest."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tritonrepo.errors import BenchError, EndpointUnreachableError, UnknownServedModelError

TRITON_MANIFEST = "tritonrepo.json"
DYNAMO_MANIFEST = "dynamo-deployment.json"


@dataclass(frozen=True)
class Target:
    openai_url: str  # ends with /v1
    model: str
    tokenizer: str  # a local folder, or a Hugging Face id that aiperf downloads
    manifest: dict | None


def deployment_manifest(deployment: Path) -> dict:
    """The manifest of a tritonrepo repository or a Dynamo deployment folder."""
    for name in (TRITON_MANIFEST, DYNAMO_MANIFEST):
        if (deployment / name).is_file():
            try:
                return json.loads((deployment / name).read_text())
            except (OSError, ValueError) as error:
                raise BenchError(f"Cannot read {deployment / name}: {error}") from None
    raise BenchError(
        f"{deployment} is not a deployment: it has neither {TRITON_MANIFEST} nor {DYNAMO_MANIFEST}.",
        hint="Give the folder `tritonrepo build` wrote, or leave DIR out and pass --tokenizer.",
    )


def deployment_tokenizer(deployment: Path, manifest: dict) -> str:
    """The tokenizer the deployment itself uses: the repository's copy, or what Dynamo's workers load."""
    if "model_path" in manifest:  # a Dynamo deployment: a local folder or a Hugging Face id
        return str(manifest["model_path"])
    folder = deployment / str(manifest.get("tokenizer_dir") or "preprocessing/1/tokenizer")
    if not folder.is_dir():
        raise BenchError(f"The repository's tokenizer folder {folder} is missing.", hint="Pass --tokenizer.")
    return str(folder)


def served_models(openai_url: str, api_key: str | None = None) -> list[str]:
    """The model ids of GET /v1/models, in the server's order."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = f"{openai_url.rstrip('/')}/models"
    try:
        response = httpx.get(url, headers=headers, timeout=10)
    except httpx.HTTPError as error:
        raise EndpointUnreachableError(
            f"Nothing answers at {url} ({type(error).__name__}: {error}).",
            hint="Start the deployment first (`tritonrepo serve`) or give its address with --openai-url.",
        ) from None
    if response.status_code in (401, 403):
        raise BenchError(f"{url} refused the request ({response.status_code}).", hint="Pass --api-key.")
    try:
        response.raise_for_status()
        return [str(entry["id"]) for entry in response.json()["data"]]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
        raise EndpointUnreachableError(
            f"{url} is not an OpenAI endpoint ({error}).",
            hint="--openai-url takes the base URL, e.g. http://host:9000/v1",
        ) from None


def resolve_target(
    openai_url: str,
    *,
    deployment: Path | None = None,
    model: str | None = None,
    tokenizer: str | None = None,
    api_key: str | None = None,
) -> Target:
    """Find the model name (from /v1/models unless given, and checked against it) and the tokenizer."""
    openai_url = openai_url.rstrip("/")
    if not openai_url.endswith("/v1"):
        openai_url += "/v1"
    manifest = deployment_manifest(deployment) if deployment else None
    served = served_models(openai_url, api_key)
    if not served:
        raise UnknownServedModelError(f"{openai_url} serves no model yet.", hint="Wait until the deployment is ready.")
    if model is None and manifest and manifest.get("served_model_name") in served:
        model = manifest["served_model_name"]
    if model is None:
        model = served[0]  # our front end and Dynamo's list the served name first
    elif model not in served:
        raise UnknownServedModelError(
            f"{openai_url} does not serve a model named {model!r}; it serves: {', '.join(served)}.",
            hint="Pass one of those with --model, or leave --model out to take the first.",
        )
    if tokenizer is None:
        tokenizer = deployment_tokenizer(deployment, manifest) if deployment and manifest is not None else model
    return Target(openai_url=openai_url, model=model, tokenizer=tokenizer, manifest=manifest)
