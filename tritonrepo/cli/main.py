"""The `tritonrepo` command: parse flags, call the library, print. Errors print one line (a traceback with TRITONREPO_DEBUG=1)."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click

from tritonrepo import __version__
from tritonrepo.errors import TritonRepoError


def _handle_errors(command):
    """Turn our typed errors into one line on stderr and their exit code (click's ClickException contract)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except TritonRepoError as error:
            if os.environ.get("TRITONREPO_DEBUG"):
                raise
            click.echo(f"Error: {error}", err=True)
            sys.exit(error.exit_code)
        except ModuleNotFoundError as error:  # an optional dependency (e.g. [runtime] for the embedded models)
            from tritonrepo.extras import missing_module_message

            message = missing_module_message(error)
            if message is None or os.environ.get("TRITONREPO_DEBUG"):
                raise
            click.echo(f"Error: {message}", err=True)
            sys.exit(1)

    return wrapper


def _with_options(command, options: list):
    """`command` with `options` applied, listed in --help in the order given."""
    for option in reversed(options):
        command = option(command)
    return command


def _engine_options(command):
    """The runtime, its parallelism and its limits, shared by build and plan."""
    return _with_options(command, [
        click.option("--runtime", type=click.Choice(["auto", "hf", "tensorrtllm", "pytorch"]), default="auto",
                     show_default=True, help="hf: the portable runtime; tensorrtllm: compiled engines; pytorch: "
                     "TensorRT-LLM's PyTorch backend (trtllm-serve or the llmapi Triton model, no engine build; "
                     "DeepSeek-V3 models always)."),
        click.option("--max-batch-size", type=click.IntRange(min=1), help="Sequences in flight (Triton max_batch_size)."),
        click.option("--max-input-len", type=click.IntRange(min=1), help="Longest prompt in tokens."),
        click.option("--max-seq-len", type=click.IntRange(min=2), help="Longest prompt + output in tokens."),
        click.option("--max-num-tokens", type=click.IntRange(min=1), help="Tokens per engine step (TensorRT-LLM)."),
        click.option("--quantization", type=click.Choice(["none", "fp8", "fp8-kv"]), default="none",
                     show_default=True),
        click.option("--tp-size", type=click.IntRange(min=1), help="Tensor parallel size [default: the smallest "
                     "that fits]."),
        click.option("--pp-size", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Pipeline parallel size."),
    ])  # fmt: skip


def _pytorch_path_options(command):
    """Options of the PyTorch path (DeepSeek-V3-architecture MoE models), shared by plan, build and export."""
    options = [
        click.option("--profile", type=click.Choice(["throughput", "latency"]), default="throughput",
                     show_default=True, help="PyTorch path: attention data parallel + big batches, or small batches "
                     "+ more MTP layers."),
        click.option("--serving", type=click.Choice(["trtllm-serve", "triton", "dynamo"]), default="trtllm-serve",
                     show_default=True, help="PyTorch path: trtllm-serve, or Triton's llmapi model behind our "
                     "OpenAI front end; dynamo (build): NVIDIA Dynamo frontend + TensorRT-LLM workers, any model."),
        click.option("--trtllm-version", help="PyTorch path: the TensorRT-LLM to write for [default: the installed "
                     "one, else the newest known]."),
        click.option("--nodes", type=click.IntRange(min=1), help="PyTorch path: nodes the GPUs span [default: 8 "
                     "GPUs per node, 4 for GB200]."),
        click.option("--ep-size", type=click.IntRange(min=1), help="PyTorch path: expert parallel size [default: "
                     "every GPU, within the MoE backend's limit]."),
        click.option("--mtp", type=click.IntRange(min=0), help="PyTorch path: MTP next-n layers, 0 for off "
                     "[default: 1 throughput, 3 latency]."),
        click.option("--kv-cache-dtype", type=click.Choice(["auto", "fp8"]), help="PyTorch path: KV cache dtype "
                     "[default: fp8 where the backend supports it]."),
    ]  # fmt: skip
    return _with_options(command, options)


def _llmapi_choices(profile, serving, trtllm_version, nodes, ep_size, mtp, kv_cache_dtype, *, dynamo_ok=False):
    from tritonrepo.planning.request import LlmApiChoices

    if serving == "dynamo":
        if not dynamo_ok:
            raise click.UsageError("--serving dynamo is a build option: tritonrepo build --serving dynamo ...")
        serving = "trtllm-serve"  # Dynamo's own choices are DynamoChoices; MTP and the rest are shared
    return LlmApiChoices(
        profile=profile, serving=serving, trtllm_version=trtllm_version, nodes=nodes, ep_size=ep_size,
        mtp_layers=mtp, kv_cache_dtype=kv_cache_dtype,
    )  # fmt: skip


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tritonrepo")
@click.option("-q", "--quiet", is_flag=True, help="No progress output (also TRITONREPO_QUIET=1).")
def cli(quiet: bool) -> None:
    """From a Hugging Face LLM checkpoint to a running, tested Triton Inference Server deployment."""
    from tritonrepo import progress

    # Decided per invocation (not only when -q is given), so one quiet command never silences the next.
    progress.set_enabled(not quiet and os.environ.get("TRITONREPO_QUIET", "") in ("", "0"))


@cli.command()
@click.option(
    "--model", "-m", required=True, help="tiny-llama (embedded), a local checkpoint folder, or a Hugging Face id."
)
@_engine_options
@click.option(
    "--output", "-o", type=click.Path(path_type=Path), help="Repository folder [default: build/<model name>]."
)
@click.option("--revision", help="Hub revision (branch, tag or commit).")
@click.option(
    "--decoupled/--no-decoupled", default=True, show_default=True, help="Decoupled (streaming) generation models."
)
@click.option("--offline", is_flag=True, help="Use only the local Hugging Face cache.")
@click.option("--force", is_flag=True, help="Rebuild every stage even when its inputs are unchanged.")
@click.option(
    "--cache-dir", type=click.Path(path_type=Path), help="Hugging Face download cache [default: HF_HUB_CACHE]."
)
@click.option("--gpu", help="PyTorch path only: the target hardware, e.g. 'H200 x8' [default: this machine's GPUs].")
@click.option("--download", is_flag=True, help="PyTorch path: fetch the weights now [default: the server does].")
@click.option("--disagg", is_flag=True, help="--serving dynamo: separate prefill and decode workers.")
@click.option("--router", default="kv", show_default=True, help="--serving dynamo: kv or round-robin.")
@click.option("--workers", type=int, help="--serving dynamo: aggregated workers [default: as many as the GPUs hold].")
@click.option("--prefill-workers", type=int, help="--serving dynamo --disagg: prefill workers.")
@click.option("--decode-workers", type=int, help="--serving dynamo --disagg: decode workers.")
@click.option("--max-tokens-in-buffer", type=int, help="--serving dynamo --disagg: KV transfer buffer in tokens "
              "[default: above the longest input].")  # fmt: skip
@click.option("--http-port", type=click.IntRange(1, 65535), default=8000, show_default=True,
              help="--serving dynamo: the frontend's port.")  # fmt: skip
@_pytorch_path_options
@_handle_errors
def build(model, runtime, output, revision, max_batch_size, max_input_len, max_seq_len, decoupled, offline,
          max_num_tokens, quantization, tp_size, pp_size, force, cache_dir, gpu, download, disagg, router, workers,
          prefill_workers, decode_workers, max_tokens_in_buffer, http_port, **pytorch_path) -> None:  # fmt: skip
    """Build a validated Triton model repository for MODEL."""
    from tritonrepo.planning.build import build as run_build
    from tritonrepo.planning.request import DeploymentRequest, DynamoChoices

    dynamo = None
    if pytorch_path["serving"] == "dynamo":
        dynamo = DynamoChoices(disagg=disagg, router=router, workers=workers, prefill_workers=prefill_workers,
                               decode_workers=decode_workers, max_tokens_in_buffer=max_tokens_in_buffer,
                               http_port=http_port)  # fmt: skip
    elif disagg or workers or prefill_workers or decode_workers or max_tokens_in_buffer or router != "kv":
        raise click.UsageError("--disagg, --router, --workers, --prefill-workers, --decode-workers and "
                               "--max-tokens-in-buffer need --serving dynamo")  # fmt: skip

    result = run_build(
        DeploymentRequest(
            model=model,
            runtime=runtime,
            output=output,
            revision=revision,
            max_batch_size=max_batch_size,
            max_input_len=max_input_len,
            max_seq_len=max_seq_len,
            decoupled=decoupled,
            offline=offline,
            max_num_tokens=max_num_tokens,
            quantization=quantization,
            tp_size=tp_size,
            pp_size=pp_size,
            force=force,
            cache_dir=cache_dir,
            gpu=gpu,
            llmapi=_llmapi_choices(**pytorch_path, dynamo_ok=True),
            dynamo=dynamo,
            download=download,
        )
    )
    click.echo(str(result.path))


@cli.command()
@click.option("--model", "-m", required=True, help="A known model name, Hugging Face id, local folder or tiny-llama.")
@click.option("--gpu", help="Plan for hardware you do not have: NAME[xN], e.g. A100-40GB, 'H100-80GB x8', L4.")
@_engine_options
@click.option(
    "--kv-cache-free-gpu-mem-fraction",
    type=click.FloatRange(0.05, 0.99),
    help="Share of free GPU memory for the KV cache [default: 0.9 engines, 0.8 PyTorch path].",
)
@click.option("--revision", help="Hub revision, when the model's config.json comes from the Hub.")
@click.option("--offline", is_flag=True, help="Use only the local Hugging Face cache.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@_pytorch_path_options
@_handle_errors
def plan(model, gpu, runtime, quantization, tp_size, pp_size, max_batch_size, max_input_len, max_seq_len,
         max_num_tokens, kv_cache_free_gpu_mem_fraction, revision, offline, as_json, **pytorch_path) -> None:  # fmt: skip
    """Show the deployment plan for MODEL on this machine's GPUs or on --gpu; no GPU needed."""
    from tritonrepo.planning.preview import make_plan
    from tritonrepo.planning.report import format_plan
    from tritonrepo.planning.request import DeploymentRequest

    request = DeploymentRequest(
        model=model,
        gpu=gpu,
        revision=revision,
        offline=offline,
        runtime=runtime,
        max_batch_size=max_batch_size,
        max_input_len=max_input_len,
        max_seq_len=max_seq_len,
        max_num_tokens=max_num_tokens,
        quantization=quantization,
        tp_size=tp_size,
        pp_size=pp_size,
        kv_cache_free_gpu_mem_fraction=kv_cache_free_gpu_mem_fraction,
        llmapi=_llmapi_choices(**pytorch_path),
    )
    result = make_plan(request)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        click.echo(format_plan(result.plan, result.build_command))


@cli.group()
def export() -> None:
    """Write deployment configurations for other tools from a plan."""


@export.command("dstack")
@click.argument("deployment", required=False, type=click.Path(path_type=Path))
@click.option("--model", "-m", help="A known model name, Hugging Face id or local folder.")
@click.option("--gpu", help="The target hardware: NAME[xN], e.g. 'H200 x8', 'A100-40GB'.")
@click.option(
    "--runtime",
    type=click.Choice(["auto", "tensorrtllm", "pytorch"]),
    default="auto",
    show_default=True,
    help="pytorch: TensorRT-LLM's PyTorch backend (a trtllm-serve service), for any model.",
)
@click.option("--quantization", type=click.Choice(["none", "fp8", "fp8-kv"]), default="none", show_default=True)
@click.option("--max-batch-size", type=click.IntRange(min=1))
@click.option("--max-seq-len", type=click.IntRange(min=2))
@click.option("--output", "-o", type=click.Path(path_type=Path), default=Path("."), show_default=True)
@click.option("--force", is_flag=True, help="Overwrite configurations that differ.")
@click.option("--install", default='pip install "tritonrepo[frontend]"', show_default=True,
              help="How the container gets tritonrepo (a wheel URL, a git URL...).")  # fmt: skip
@click.option("--offline", is_flag=True, help="Use only the local Hugging Face cache.")
@_pytorch_path_options
@_handle_errors
def export_dstack(deployment, model, gpu, runtime, quantization, max_batch_size, max_seq_len, output, force, install, offline,
                  **pytorch_path) -> None:  # fmt: skip
    """dstack configurations (`dstack apply -f <file>`): from a plan (--model M --gpu G: build and serve it), or of a
    DEPLOYMENT folder written by `build --serving dynamo` (a service on one node, a task over several)."""
    from tritonrepo.export.dstack import render_dstack, write_configurations
    from tritonrepo.export.from_plan import dstack_target
    from tritonrepo.planning.preview import make_plan
    from tritonrepo.planning.request import DeploymentRequest

    if deployment is not None:
        from tritonrepo.export.from_dynamo import target_from_folder

        if model or gpu:
            raise click.UsageError("DEPLOYMENT already holds the model and the GPUs: give it, or --model and --gpu")
        for path in write_configurations(output, render_dstack(target_from_folder(deployment)), force=force):
            click.echo(str(path))
        return
    if not model or not gpu:
        raise click.UsageError("give --model and --gpu (a plan), or a DEPLOYMENT folder (build --serving dynamo)")

    request = DeploymentRequest(
        model=model, gpu=gpu, offline=offline, max_batch_size=max_batch_size, max_seq_len=max_seq_len,
        quantization=quantization, runtime=runtime, llmapi=_llmapi_choices(**pytorch_path),
    )  # fmt: skip
    result = make_plan(request)
    flags = {"--runtime": runtime if runtime != "auto" else None,
             "--quantization": quantization if quantization != "none" else None, "--max-batch-size": max_batch_size,
             "--max-seq-len": max_seq_len}  # fmt: skip
    if result.plan.llmapi is not None:
        flags.update({f"--{k.replace('_', '-')}": v for k, v in pytorch_path.items() if v is not None})
        flags.pop("--trtllm-version", None)  # the container's own version decides there
    build_args = tuple(str(part) for flag, value in flags.items() if value is not None for part in (flag, value))
    target = dstack_target(result.plan, model_spec=model, build_args=build_args, install=install)
    for path in write_configurations(output, render_dstack(target), force=force):
        click.echo(str(path))


@cli.command()
def models() -> None:
    """List the embedded and the known models (names usable with --model)."""
    from tritonrepo.source.catalog import CATALOG, EMBEDDED

    click.echo("Embedded models (made offline on first use: no download, no GPU needed):")
    for model in EMBEDDED:
        click.echo(f"  {model.name:<32} {model.description}")
    click.echo("\nKnown models (short name, Hugging Face id, parameters, serving path on a GPU):")
    for entry in CATALOG:
        facts = entry.facts
        click.echo(f"  {entry.name:<32} {entry.hf_id:<44} {facts.num_params / 1e9:7.2f}B  {entry.serving_path}")


@cli.command()
@click.argument("repository", type=click.Path(path_type=Path))
@_handle_errors
def validate(repository: Path) -> None:
    """Check any Triton model repository (ours or one made with upstream tools)."""
    from tritonrepo.repository.validate import check_repository

    check_repository(repository)
    click.echo(f"{repository}: OK")


@cli.command()
@click.argument("repository", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_handle_errors
def relocate(repository: Path) -> None:
    """Point a moved or pulled repository's engine paths (gpt_model_path) at where it is now, then validate it."""
    from tritonrepo.repository.location import relocate as relocate_repository
    from tritonrepo.repository.validate import check_repository

    for changed in relocate_repository(repository):
        click.echo(f"{repository / changed}: engine paths now point into {repository.resolve()}")
    check_repository(repository)
    click.echo(f"{repository}: OK")


@cli.command()
@click.argument("repository", required=False)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the servers listen on.")
@click.option("--http-port", type=int, default=8000, show_default=True)
@click.option("--grpc-port", type=int, default=8001, show_default=True)
@click.option("--metrics-port", type=int, default=8002, show_default=True)
@click.option(
    "--openai-port", type=int, default=9000, show_default=True, help="OpenAI-compatible endpoint; 0 disables it."
)
@click.option(
    "--tritonserver", "tritonserver_path", envvar="TRITONREPO_TRITONSERVER", help="tritonserver binary to use."
)
@click.option("--served-model-name", help="Name clients use in the OpenAI API [default: the model's name].")
@click.option(
    "--log-file", type=click.Path(path_type=Path), help="tritonserver log [default: <repository>.tritonserver.log]."
)
@click.option("--ready-timeout", type=float, default=600, show_default=True, help="Seconds to wait for every model.")
@click.option(
    "--max-restarts",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Restarts of tritonserver within 10 minutes when a model's stub process dies; then serve exits. 0: exit.",
)
@click.option("--direct", is_flag=True, help="s3:// only: Triton reads the bucket itself (no local engine files).")
@click.option(
    "--trust-repository",
    is_flag=True,
    help="Serve even when the checks of `tritonrepo validate` find problems (files changed since the build, paths "
    "outside the repository, sizes beyond the limits, ...); each is printed as a warning. Without it serve refuses.",
)
@click.option("--endpoint-url", help="s3:// only: an S3-compatible endpoint (MinIO, Ceph, ...).")
@click.option("--profile", help="s3:// only: AWS profile.")
@click.option("--region", help="s3:// only: AWS region.")
@click.option(
    "--api-key",
    help="Require `Authorization: Bearer KEY` on /v1 and the API docs (comma-separated for several). Visible to "
    "every local user in `ps`: $TRITONREPO_API_KEY or --api-key-file is the safe way [default: $TRITONREPO_API_KEY].",
)
@click.option(
    "--api-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the API keys from this file instead: one per line, blank lines and # comments ignored.",
)
@click.option("--cors-origin", "cors_origins", multiple=True, help="Allow browsers from this origin (repeatable).")
@click.option("--max-request-bytes", type=click.IntRange(min=1024), default=8 << 20, show_default=True)
@click.option(
    "--request-body-timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds a request body may take to arrive, from its headers; later: 408 and the connection is closed.",
)
@click.option(
    "--max-concurrent-requests",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Generations at once; a request takes a slot once its body is in.",
)
@click.option("--max-queued-requests", type=click.IntRange(min=0), default=1024, show_default=True, help="Beyond: 429.")
@click.option("--queue-timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True, help="Seconds.")
@click.option(
    "--reasoning-parser",
    type=click.Choice(["auto", "deepseek-r1", "none"]),
    default="auto",
    show_default=True,
    help="Return DeepSeek-R1 thinking as reasoning_content; auto: on for DeepSeek-R1 and its distills.",
)
@click.option(
    "--chat-template",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A Jinja chat template replacing the tokenizer's.",
)
@click.option(
    "--stand-in",
    type=click.Choice(["mocker"]),
    help="Dynamo deployments only: where TensorRT-LLM is missing, run Dynamo's mocker (random tokens) in place of "
    "the prefill/decode workers, named as stand-ins, to run the wiring for real.",
)
@_handle_errors
def serve(
    repository,
    host,
    http_port,
    grpc_port,
    metrics_port,
    openai_port,
    tritonserver_path,
    served_model_name,
    log_file,
    ready_timeout,
    max_restarts,
    direct,
    trust_repository,
    endpoint_url,
    profile,
    region,
    api_key,
    api_key_file,
    cors_origins,
    max_request_bytes,
    request_body_timeout,
    max_concurrent_requests,
    max_queued_requests,
    queue_timeout,
    reasoning_parser,
    chat_template,
    stand_in,
):
    """Start tritonserver on REPOSITORY (a folder or s3://bucket/prefix) and the OpenAI endpoint; Ctrl-C stops both."""
    from tritonrepo.dynamo.manifest import is_dynamo_deployment
    from tritonrepo.frontend.admission import api_keys_from
    from tritonrepo.frontend.policy import FrontendPolicy
    from tritonrepo.serving.launch import ServeOptions, default_repository, serve_repository
    from tritonrepo.serving.trtllm_serve import is_trtllm_serve_deployment, serve_deployment

    chosen = repository or default_repository()
    if not str(chosen).startswith("s3://") and is_dynamo_deployment(Path(chosen)):
        from tritonrepo.dynamo.serve import DynamoServeOptions, serve_dynamo_deployment

        serve_dynamo_deployment(
            DynamoServeOptions(
                folder=Path(chosen).resolve(),
                host=host,
                port=openai_port,
                stand_in=stand_in,
                ready_timeout=ready_timeout,
                api_keys=tuple(api_keys_from(api_key, api_key_file)),
            )
        )
        return
    if stand_in:
        raise click.UsageError("--stand-in applies to Dynamo deployments (tritonrepo build --serving dynamo) only")
    if not str(chosen).startswith("s3://") and is_trtllm_serve_deployment(Path(chosen)):
        sys.exit(serve_deployment(Path(chosen)))

    policy = FrontendPolicy(
        api_keys=api_keys_from(api_key, api_key_file),
        cors_origins=tuple(cors_origins),
        max_body_bytes=max_request_bytes,
        body_timeout_s=request_body_timeout,
        max_in_flight=max_concurrent_requests,
        max_queued=max_queued_requests,
        queue_timeout_s=queue_timeout,
        reasoning_parser=reasoning_parser,
        chat_template=chat_template,
    )

    serve_repository(
        ServeOptions(
            repository=chosen,
            host=host,
            http_port=http_port,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            openai_port=openai_port,
            tritonserver=tritonserver_path,
            served_model_name=served_model_name,
            log_file=log_file,
            ready_timeout=ready_timeout,
            max_restarts=max_restarts,
            direct=direct,
            trust_repository=trust_repository,
            s3_profile=profile,
            s3_region=region,
            s3_endpoint_url=endpoint_url,
            frontend=policy,
        )
    )


@cli.command()
@click.option("--url", default="127.0.0.1:8000", show_default=True, help="Triton HTTP address.")
@click.option("--grpc-url", default="127.0.0.1:8001", show_default=True, help="Triton gRPC address.")
@click.option(
    "--openai-url", default="http://127.0.0.1:9000/v1", show_default=True, help="OpenAI endpoint ('' to skip)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option(
    "--dynamo",
    is_flag=True,
    help="The deployment is served by NVIDIA Dynamo: the OpenAI checks run, Triton's are reported not applicable.",
)
@_handle_errors
def smoke(url, grpc_url, openai_url, as_json, dynamo) -> None:
    """Smoke-test a running deployment with tritonclient (HTTP and gRPC) and the OpenAI endpoint."""
    from tritonrepo.checks.smoke import SmokeTargets, format_table, raise_on_failure, run_smoke

    targets = SmokeTargets(http_url=url, grpc_url=grpc_url, openai_url=openai_url or None, dynamo=dynamo)
    results = run_smoke(targets)
    click.echo(json.dumps([r.as_dict() for r in results], indent=2) if as_json else format_table(results))
    raise_on_failure(results)


def _concurrency_levels(ctx, param, value: str) -> list[int]:
    try:
        levels = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give whole numbers separated by commas, e.g. 1,4,16,64") from None
    if not levels or min(levels) < 1:
        raise click.BadParameter(f"{value!r}: give at least one level, each 1 or more")
    return sorted(set(levels))


@cli.command()
@click.argument("deployment", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--openai-url", default="http://127.0.0.1:9000/v1", show_default=True, help="The OpenAI endpoint.")
@click.option(
    "--model", "-m", help="The served model name [default: from DIR's manifest, else the first of /v1/models]."
)
@click.option("--tokenizer", help="Tokenizer folder or Hugging Face id for the prompts [default: DIR's own].")
@click.option("--concurrency", default="1,4,16,64", show_default=True, callback=_concurrency_levels,
              help="Requests in flight, one level per value.")  # fmt: skip
@click.option(
    "--requests", type=click.IntRange(min=1), help="Requests per level [default: 8 x concurrency, 16 at least]."
)
@click.option("--duration", type=click.FloatRange(min=1), help="Seconds per level, instead of --requests.")
@click.option("--input-len", type=click.IntRange(min=1), default=128, show_default=True, help="Prompt tokens.")
@click.option("--output-len", type=click.IntRange(min=1), default=128, show_default=True, help="Tokens per reply.")
@click.option("--stream/--no-stream", default=True, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("bench-results"),
              show_default=True, help="Each run gets a new folder inside.")  # fmt: skip
@click.option("--compare", "compare_to", type=click.Path(exists=True, path_type=Path),
              help="An earlier run's result.json (or its folder): overlaid on the charts, ratios printed.")  # fmt: skip
@click.option("--api-key", envvar="TRITONREPO_API_KEY", help="Bearer key of the endpoint (also TRITONREPO_API_KEY).")
@_handle_errors
def bench(deployment, openai_url, model, tokenizer, concurrency, requests, duration, input_len, output_len, stream, out,
          compare_to, api_key) -> None:  # fmt: skip
    """Measure a running deployment with aiperf: a sweep over concurrency levels, as a table, JSON, PNG charts and an
    HTML report. DIR (a repository or Dynamo deployment folder) gives the tokenizer and the manifest."""
    from tritonrepo import progress
    from tritonrepo.bench.aiperf_runner import Workload, aiperf_executable
    from tritonrepo.bench.plots import require_matplotlib
    from tritonrepo.bench.results import load_result
    from tritonrepo.bench.sweep import run_sweep
    from tritonrepo.bench.table import format_comparison, format_table, load_differences
    from tritonrepo.bench.target import resolve_target
    from tritonrepo.errors import BenchRunError
    from tritonrepo.interrupts import sigterm_as_interrupt

    if requests and duration:
        raise click.UsageError("give --requests or --duration, not both")
    aiperf_executable()  # before anything else: without the tools of the [bench] extra there is nothing to do
    require_matplotlib()

    earlier = load_result(compare_to) if compare_to else None
    target = resolve_target(openai_url, deployment=deployment, model=model, tokenizer=tokenizer, api_key=api_key)
    progress.say(f"Benchmarking {target.model!r} at {target.openai_url} (tokenizer {target.tokenizer})")
    workloads = {level: Workload(input_len, output_len, None if duration else requests or max(16, 8 * level), duration,
                                 stream) for level in concurrency}  # fmt: skip
    try:
        with sigterm_as_interrupt():
            outcome = run_sweep(target, concurrency, workloads, out, api_key=api_key, earlier=earlier, say=progress.say)
    except KeyboardInterrupt as interrupt:
        outcome = getattr(interrupt, "outcome", None)
        where = f" in {outcome.folder}" if outcome else ""
        click.echo(f"Interrupted: aiperf stopped; the levels that finished are kept{where}.", err=True)
        if outcome and outcome.result.levels:
            click.echo(format_table(outcome.result))
        sys.exit(130)
    click.echo(format_table(outcome.result))
    if earlier is not None:
        differences = load_differences(outcome.result, earlier)
        click.echo("\n" + format_comparison(outcome.comparison or [], str(compare_to), differences))
    click.echo(f"\nResults: {outcome.folder / 'result.json'}")
    for path in [*outcome.plots, outcome.report]:
        if path:
            click.echo(f"         {path}")
    if outcome.result.levels and all(level.errors == level.requests for level in outcome.result.levels):
        raise BenchRunError(
            "Every request failed, at every level; the errors are in result.json.",
            hint="Check the lengths against the deployment's limits (--input-len, --output-len).",
        )


def _storage_options(command):
    """The flags push and pull share: where S3 is, how to authenticate, how fast to go, what to change."""
    options = [
        click.option("--profile", help="AWS profile [default: the standard credential chain]."),
        click.option("--region", help="AWS region [default: from the profile or AWS_DEFAULT_REGION]."),
        click.option("--endpoint-url", help="S3-compatible endpoint, e.g. http://127.0.0.1:9000 (MinIO, moto)."),
        click.option(
            "--part-size",
            type=click.IntRange(min=5),
            help="Multipart size in MiB [default: 16 for push, 64 for pull].",
        ),
        click.option(
            "--concurrency", type=click.IntRange(min=1), default=16, show_default=True, help="Files/parts in flight."
        ),
        click.option("--delete", is_flag=True, help="Remove what the source no longer has."),
        click.option("--dry-run", is_flag=True, help="List what would move; move nothing."),
        click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _transfer(action, source, destination, profile, region, endpoint_url, part_size, concurrency, delete, dry_run,
              as_json, check_remote=False) -> None:  # fmt: skip
    from tritonrepo.interrupts import sigterm_as_interrupt
    from tritonrepo.storage import TransferOptions, format_summary, pull, push

    options = TransferOptions(
        profile=profile,
        region=region,
        endpoint_url=endpoint_url,
        part_size=part_size << 20 if part_size else None,
        concurrency=concurrency,
        delete=delete,
        dry_run=dry_run,
        check_remote=check_remote,
    )
    try:
        # SIGTERM stops a transfer as Ctrl-C does: transfers in flight stop and their part files are removed.
        with sigterm_as_interrupt():
            summary = (push if action == "push" else pull)(source, destination, options)
    except KeyboardInterrupt:
        click.echo(f"Interrupted: the {action} stopped and left no partial file behind. Run the same command again to "
                   "finish: what already moved is not sent again.", err=True)  # fmt: skip
        sys.exit(130)
    except TritonRepoError as error:
        if as_json:  # a --json caller gets the failure on stdout too, with what it concerns (e.g. the links refused)
            failure = {"action": action, "source": str(source), "destination": str(destination), "error": str(error),
                       "exit_code": error.exit_code, "links": getattr(error, "links", [])}  # fmt: skip
            click.echo(json.dumps(failure, indent=2))
        raise
    click.echo(json.dumps(summary.as_dict(), indent=2) if as_json else format_summary(summary))


@cli.command()
@click.argument("repository", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("url")
@_storage_options
@click.option(
    "--check-remote",
    is_flag=True,
    help="List the prefix and compare every object even when the remote manifest already matches "
    "(repairs objects removed behind tritonrepo's back).",
)
@_handle_errors
def push(repository, url, **options) -> None:
    """Upload REPOSITORY to URL (s3://bucket/prefix): only changed files, manifest last, loadable by Triton."""
    _transfer("push", repository, url, **options)


@cli.command()
@click.argument("url")
@click.argument("repository", type=click.Path(file_okay=False, path_type=Path))
@_storage_options
@_handle_errors
def pull(url, repository, **options) -> None:
    """Download URL (s3://bucket/prefix) into REPOSITORY: only changed files, each verified against the manifest."""
    _transfer("pull", url, repository, **options)


def main() -> None:
    cli(prog_name="tritonrepo")


if __name__ == "__main__":
    main()
