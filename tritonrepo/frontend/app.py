"""Builds the front end once (repository manifest, tokenizer, Triton client) and runs it under uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ServerError
from ..repository.manifest import MANIFEST
from ..repository.params import ENTRY_POINTS
from ..source.generation_config import sampling_defaults
from .policy import FrontendPolicy
from .sampling import SamplingDefaults
from .serving import ModelLimits, OpenAIServing, ServedModels
from .triton_client import TextGenerator, TritonGrpcGenerator

if TYPE_CHECKING:  # fastapi and transformers are imported only when an app is built
    from fastapi import FastAPI

log = logging.getLogger(__name__)


@dataclass
class FrontendSettings:
    repository: Path
    triton_grpc_url: str = "localhost:8001"
    host: str = "127.0.0.1"
    port: int = 9000
    served_model_name: str | None = None  # replaces the manifest's model name as the alias
    graceful_shutdown_s: float = 5.0  # open streams get this long after SIGTERM, then they are cancelled
    policy: FrontendPolicy = FrontendPolicy()


@dataclass(frozen=True)
class RepositoryInfo:
    models: ServedModels
    tokenizer_dir: Path
    manifest: dict[str, Any] = field(default_factory=dict)  # empty for repositories made elsewhere
    # The checkpoint's generation_config.json sampling keys (do_sample, temperature, top_p, top_k): what build
    # recorded, else what the tokenizer folder's own generation_config.json says (a Hugging Face checkpoint there).
    generation_defaults: dict[str, Any] = field(default_factory=dict)


# --- what the repository serves ------------------------------------------------------------------------------------
def load_repository_info(repository: Path, served_model_name: str | None = None) -> RepositoryInfo:
    """Served names, limits and tokenizer from tritonrepo.json, or from the layout of a repository made elsewhere."""
    root = Path(repository)
    if not root.is_dir():
        raise ServerError(
            f"Model repository {root} is not a local directory.",
            hint="The front end needs the repository (for its tokenizer) on local disk.",
        )
    manifest_path = root / MANIFEST
    if manifest_path.is_file():
        return _from_manifest(root, _read_manifest(manifest_path), served_model_name)
    return _from_layout(root, served_model_name)


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ServerError(f"Cannot read {path}: {exc}") from exc
    if manifest.get("format") != 1:
        raise ServerError(f"{path} has format {manifest.get('format')!r}; this front end reads format 1.")
    return manifest


def _from_manifest(root: Path, manifest: dict[str, Any], override: str | None) -> RepositoryInfo:
    entry_points = tuple(manifest.get("entry_points") or ())
    default = manifest.get("default_entry_point") or (entry_points[0] if entry_points else None)
    if not entry_points or default not in entry_points:
        raise ServerError(
            f"{root / MANIFEST} names no usable entry point (entry_points={list(entry_points)}, "
            f"default_entry_point={default!r})."
        )
    limits = manifest.get("limits") or {}
    parameters = manifest.get("parameters") or {}
    runtime_model = parameters.get("tensorrt_llm_model_name") or "tensorrt_llm"
    # Streaming straight from the runtime model needs it decoupled (our builds say so in the manifest) and taking
    # token ids: an llmapi model (TensorRT-LLM's PyTorch backend) of that name takes text_input instead, and is
    # served as the entry point it is.
    fast_path = None
    if parameters.get("decoupled_mode") and (root / runtime_model).is_dir():
        takes_text = "text_input" in _declared_inputs(root / runtime_model / "config.pbtxt")
        fast_path = None if takes_text else runtime_model
    models = ServedModels(
        entry_points=entry_points,
        default_entry_point=default,
        fast_path=fast_path,
        alias=override or (manifest.get("model") or {}).get("name"),
        limits=ModelLimits(
            max_input_len=limits.get("max_input_len"),
            max_seq_len=limits.get("max_seq_len"),
            max_batch_size=limits.get("max_batch_size"),
        ),
    )
    tokenizer_dir = manifest.get("tokenizer_dir")
    if not tokenizer_dir:
        raise ServerError(f"{root / MANIFEST} has no tokenizer_dir.")
    tokenizer_path = _existing_dir(root, tokenizer_dir)
    recorded = manifest.get("generation_defaults")
    return RepositoryInfo(
        models=models,
        tokenizer_dir=tokenizer_path,
        manifest=manifest,
        generation_defaults=recorded if isinstance(recorded, dict) else sampling_defaults(tokenizer_path),
    )


def _declared_inputs(config_path: Path) -> set[str]:
    """Input names a model's config.pbtxt declares; empty when it is missing or does not parse."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    try:
        config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
    except (OSError, UnicodeDecodeError, text_format.ParseError):
        return set()
    return {tensor.name for tensor in config.input}


def _from_layout(root: Path, override: str | None) -> RepositoryInfo:
    entry_points = tuple(name for name in ENTRY_POINTS if (root / name / "config.pbtxt").is_file())
    if not entry_points:
        from ..pytorch_path.triton_repo import find_llmapi_model

        llmapi = find_llmapi_model(root)
        if llmapi is not None:
            return _from_llmapi(root, llmapi.name, llmapi.settings, override)
        names = ", ".join(ENTRY_POINTS)
        raise ServerError(f"{root} has neither {MANIFEST} nor an entry-point model ({names}, or an llmapi model).")
    models = ServedModels(entry_points=entry_points, default_entry_point=entry_points[0], alias=override)
    tokenizer_dir = _existing_dir(root, _preprocessing_tokenizer_dir(root))
    return RepositoryInfo(
        models=models, tokenizer_dir=tokenizer_dir, generation_defaults=sampling_defaults(tokenizer_dir)
    )


def _from_llmapi(root: Path, name: str, settings: dict[str, Any], override: str | None) -> RepositoryInfo:
    """An llmapi repository (TensorRT-LLM's PyTorch backend) without a manifest: its model.yaml has the limits and
    names the checkpoint, whose tokenizer the front end uses."""
    models = ServedModels(
        entry_points=(name,),
        default_entry_point=name,
        alias=override,
        limits=ModelLimits(
            max_input_len=settings.get("max_input_len"),
            max_seq_len=settings.get("max_seq_len"),
            max_batch_size=settings.get("max_batch_size"),
        ),
    )
    checkpoint = _checkpoint_dir(root, str(settings.get("model") or ""))
    return RepositoryInfo(models=models, tokenizer_dir=checkpoint, generation_defaults=sampling_defaults(checkpoint))


def _checkpoint_dir(root: Path, model: str) -> Path:
    """model.yaml's `model`: a folder (relative to the repository root), or a Hub id already in the local cache."""
    path = Path(model) if Path(model).is_absolute() else root / model
    if model and path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception as exc:  # not cached, not a valid id, offline: all mean "no tokenizer here"
        raise ServerError(
            f"Cannot find the tokenizer of {model!r}: it is neither a folder nor in the Hugging Face cache.",
            hint="Download the model first, or point `model` in model.yaml at a local checkpoint folder.",
        ) from exc


def _preprocessing_tokenizer_dir(root: Path) -> str:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    path = root / "preprocessing" / "config.pbtxt"
    try:
        config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    except (OSError, text_format.ParseError) as exc:
        raise ServerError(f"Cannot find the tokenizer: {path} is unreadable ({exc}).") from exc
    if "tokenizer_dir" not in config.parameters:
        raise ServerError(f"{path} has no tokenizer_dir parameter.")
    return config.parameters["tokenizer_dir"].string_value


def _existing_dir(root: Path, value: str) -> Path:
    path = Path(value)
    path = path if path.is_absolute() else root / path
    if "${" in value or not path.is_dir():
        raise ServerError(
            f"Tokenizer directory {path} does not exist.",
            hint="Rebuild the repository, or fix tokenizer_dir to a local directory.",
        )
    return path


# --- the app -------------------------------------------------------------------------------------------------------
def token_byte_table(tokenizer: Any) -> list[bytes]:
    """Each token id's exact bytes, from the same module the postprocessing model uses (one implementation)."""
    import importlib.util

    from ..repository.render import templates_root

    path = templates_root() / "inflight_batcher_llm" / "postprocessing" / "1" / "token_bytes.py"
    spec = importlib.util.spec_from_file_location("tritonrepo_token_bytes", path)
    if spec is None or spec.loader is None:
        raise ServerError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.token_byte_table(tokenizer, skip_special_tokens=True)


def load_tokenizer(tokenizer_dir: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(tokenizer_dir))
    except Exception as exc:  # transformers raises many types (OSError, ValueError, ImportError)
        raise ServerError(f"Cannot load the tokenizer from {tokenizer_dir}: {exc}") from exc


def build_app(settings: FrontendSettings, generator: TextGenerator | None = None) -> FastAPI:
    """The FastAPI app with its state built once; `generator` replaces the Triton client (tests)."""
    from fastapi import FastAPI

    from .admission import GenerationSlots
    from .completion_routes import CompletionRoutes, document_completion_routes
    from .metrics import FrontendMetrics, metrics_endpoint
    from .router import install_error_handlers, router

    info = load_repository_info(settings.repository, settings.served_model_name)
    tokenizer = load_tokenizer(info.tokenizer_dir)
    if generator is None:
        generator = TritonGrpcGenerator(
            settings.triton_grpc_url,
            ready_models=info.models.entry_points,
            token_bytes=token_byte_table(tokenizer) if info.models.fast_path else None,
        )
    policy = settings.policy
    metrics = FrontendMetrics()
    serving = OpenAIServing(
        generator,
        info.models,
        tokenizer,
        reasoning_parser=policy.resolved_reasoning_parser(info.manifest),
        chat_template=policy.chat_template_text(),
        metrics=metrics,
        sampling_defaults=SamplingDefaults.from_generation_config(info.generation_defaults),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.loop = asyncio.get_running_loop()  # FrontendThread reaches the generator through it
        yield
        serving.close()
        close = getattr(generator, "close", None)
        if close is not None:
            await close()

    app = FastAPI(title="tritonrepo OpenAI-compatible front end", lifespan=lifespan)
    app.state.settings = settings
    app.state.generator = generator
    app.state.metrics = metrics
    app.state.serving = serving
    # Taken by the completion routes once a request's body is read and valid, so slow senders hold none.
    slots = GenerationSlots(policy.max_in_flight, policy.max_queued, policy.queue_timeout_s)
    app.state.slots = slots
    metrics.set_queue_source(lambda: slots.queued)
    app.include_router(router)
    app.add_middleware(CompletionRoutes, state=app.state)
    document_completion_routes(app)
    app.add_api_route("/metrics", metrics_endpoint(metrics), methods=["GET"], include_in_schema=False)
    install_error_handlers(app)
    return app


def build_asgi(settings: FrontendSettings, generator: TextGenerator | None = None) -> tuple[Any, FastAPI]:
    """The app wrapped for serving: metrics (outermost, so rejections count), CORS, then admission (body size and
    time, API key). Returns (what uvicorn runs, the FastAPI app inside).

    With API keys set, the OpenAPI schema and its documentation pages need a key as /v1 does: they describe the
    protected API, and a server that asks for keys is not meant to be explored anonymously."""
    from .admission import admission_stack
    from .metrics import MetricsMiddleware

    app = build_app(settings, generator)
    policy = settings.policy
    docs = tuple(path for path in (app.openapi_url, app.docs_url, app.redoc_url) if path)
    wrapped: Any = admission_stack(
        app,
        api_keys=policy.api_keys,
        max_body_bytes=policy.max_body_bytes,
        body_timeout_s=policy.body_timeout_s,
        protected_prefixes=("/v1", *docs),
    )
    if policy.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        wrapped = CORSMiddleware(
            wrapped,
            allow_origins=list(policy.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return MetricsMiddleware(wrapped, app.state.metrics), app


def _uvicorn_server(settings: FrontendSettings) -> tuple[Any, FastAPI]:
    """(the uvicorn Server, the FastAPI app it serves), not started."""
    import uvicorn

    asgi, app = build_asgi(settings)
    config = uvicorn.Config(
        asgi,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
    )
    server = uvicorn.Server(config)
    app.state.stopping = lambda: server.should_exit  # streams end early once uvicorn begins its shutdown
    return server, app


class FrontendThread:
    """The front end served on a thread of its own, so that `tritonrepo serve`'s main thread is free to supervise
    tritonserver (serving/supervisor.py). Signals stay with the main thread, which calls stop()."""

    def __init__(self, settings: FrontendSettings) -> None:
        self.server, self.app = _uvicorn_server(settings)  # built here: a bad repository or tokenizer raises here
        self.settings = settings
        self._thread = threading.Thread(target=self._serve, name="openai-frontend", daemon=True)

    def _serve(self) -> None:
        # uvicorn logs why it cannot start (e.g. the port is taken) and then raises SystemExit in this thread: start()
        # turns that into a ServerError, so it is not a thread's traceback as well.
        with contextlib.suppress(SystemExit):
            self.server.run()

    def start(self, timeout: float = 60) -> None:
        """Returns once the endpoint listens; ServerError when it cannot."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ServerError(
                    f"the OpenAI front end did not start on {self.settings.host}:{self.settings.port}",
                    hint="Its reason is logged above; --openai-port picks another port.",
                )
            time.sleep(0.05)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def fail_requests(self, reason: str) -> None:
        """Triton broke: requests in flight fail now with `reason` and /health says it, until triton_ready()."""
        self._on_loop(self.app.state.generator, "abort_all", reason)

    def triton_ready(self) -> None:
        self._on_loop(self.app.state.generator, "resume")

    def stop(self) -> None:
        """Graceful: open streams end at their next event, then uvicorn closes (at most its grace period)."""
        self.server.should_exit = True
        self._thread.join(timeout=self.settings.graceful_shutdown_s + 10)

    def _on_loop(self, target: Any, method: str, *args: Any) -> None:
        loop = getattr(self.app.state, "loop", None)  # set once uvicorn runs the app's lifespan
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing left to tell
            loop.call_soon_threadsafe(getattr(target, method), *args)
