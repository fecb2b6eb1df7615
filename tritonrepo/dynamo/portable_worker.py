"""A Dynamo worker backed by the portable runtime (hf_engine.Engine): token ids in, token ids out, behind dynamo.frontend.

    python -m tritonrepo.dynamo.portable_worker --model-path DIR --served-model-name NAME [--namespace NS]
        [--kv-block-size 16] [--max-seq-len 0] [--max-batch-size 8] [--device auto] [--discovery-backend file]

It registers `NS.backend.generate` as a chat and completions model (the frontend tokenizes and applies the chat
template from DIR), runs one continuous-batching Engine, and streams each request's tokens back as the engine's thread
produces them. A request the client leaves (Dynamo's context stopped, or the stream closed) is cancelled in the
engine at once. The KV blocks of the prompts it holds are published as KV events, so a KV router sees this worker's
real cache contents (the engine keeps one slot per sequence and reuses no prefix, so blocks leave when the request
ends). Every request ends with one log line on stderr (`request ID: N prompt tokens -> M tokens, FINISH`).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

POLL_S = 0.1  # how often a request waiting for its next token looks at Dynamo's context for a stop
log = logging.getLogger("tritonrepo.portable_worker")


def _engine_module():
    """hf_engine and its sibling modules live in the Triton model's version folder (all_models/), not in a package."""
    from tritonrepo.repository.render import PIPELINE, templates_root

    folder = str(templates_root() / PIPELINE / "tensorrt_llm" / "1")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import hf_engine

    return hf_engine


def sampling_params(request: dict[str, Any], *, max_seq_len: int, prompt_len: int, params_type):
    """Dynamo's preprocessed request (`stop_conditions`, `sampling_options`) as the engine's SamplingParams, and the
    stop token ids that end generation without being returned (the end-of-text tokens the frontend names)."""
    stop = request.get("stop_conditions") or {}
    options = request.get("sampling_options") or {}
    max_tokens = stop.get("max_tokens") or max(1, max_seq_len - prompt_len)
    hidden = set(stop.get("stop_token_ids_hidden") or [])
    visible = set(stop.get("stop_token_ids_visible") or [])
    ignore_eos = bool(stop.get("ignore_eos"))
    temperature = options.get("temperature")
    top_k = options.get("top_k")
    params = params_type(
        max_new_tokens=int(max_tokens),
        # -1 is no token: with ignore_eos the model's end token is generated like any other
        end_id=-1 if ignore_eos else None,
        temperature=1.0 if temperature is None else float(temperature),
        top_k=0 if top_k is None or top_k < 0 else int(top_k),  # Dynamo's -1 means no top-k
        # The engine reads top_p 0 with top_k 0 as greedy; OpenAI's absent top_p means no nucleus cut-off (1.0).
        top_p=1.0 if options.get("top_p") is None else float(options["top_p"]),
        seed=options.get("seed"),
        repetition_penalty=float(options.get("repetition_penalty") or 1.0),
        presence_penalty=float(options.get("presence_penalty") or 0.0),
        frequency_penalty=float(options.get("frequency_penalty") or 0.0),
        min_length=int(stop.get("min_tokens") or 0),
        # Stop words end generation after the token; hidden ones are then dropped from the output here.
        stop_words=[[token] for token in sorted((set() if ignore_eos else hidden) | visible)],
    )
    return params, (set() if ignore_eos else hidden - visible)


def finish_reason(engine_reason: str | None) -> str:
    """TensorRT-LLM-style engine reasons as OpenAI's."""
    return "length" if engine_reason in ("length", "max_seq_len") else "stop"


class PortableWorker:
    """One engine; `generate` is the Dynamo endpoint handler (an async generator per request)."""

    def __init__(self, engine, hf_engine, *, name: str, kv_block_size: int, publisher=None) -> None:
        self.engine = engine
        self.hf_engine = hf_engine
        self.name = name
        self.kv_block_size = kv_block_size
        self.publisher = publisher
        self._block_ids = itertools.count(1)
        self.served = 0

    async def generate(self, request: dict[str, Any], context=None) -> AsyncIterator[dict[str, Any]]:
        from dynamo.common.utils.token_ids import token_ids_to_list

        prompt = token_ids_to_list(request.get("token_ids")) or []
        key = _request_id(context)
        params, hidden = sampling_params(
            request,
            max_seq_len=self.engine.max_seq_len,
            prompt_len=len(prompt),
            params_type=self.hf_engine.SamplingParams,
        )
        loop = asyncio.get_running_loop()
        updates: asyncio.Queue = asyncio.Queue()

        def deliver(kind: str, value: Any) -> None:  # on the engine's thread
            loop.call_soon_threadsafe(updates.put_nowait, (kind, value))

        sequence = self.hf_engine.Sequence(
            prompt_ids=prompt,
            params=params,
            on_step=lambda _sequence, result: deliver("step", result),
            on_error=lambda _sequence, error: deliver("error", error),
            on_cancel=lambda cancelled: self._cancelled(cancelled, deliver),
            key=key,
        )
        try:
            self.engine.submit(sequence)
        except ValueError as error:  # too long for max_seq_len, or empty: Dynamo returns it to the client
            log.warning("request %s refused: %s", key, error)
            raise
        produced, ended, blocks = 0, None, []
        # Dynamo may stop a request while this generator waits at a `yield` (the client left the stream) and close it
        # only much later: a watcher on the loop cancels the engine's sequence at once.
        watcher = asyncio.create_task(self._watch(context, key)) if context is not None else None
        try:
            while ended is None:
                try:
                    kind, value = await asyncio.wait_for(updates.get(), timeout=POLL_S)
                except asyncio.TimeoutError:
                    if context is not None and context.is_stopped():
                        self.engine.cancel(key)
                        ended = "cancelled"
                    continue
                if kind == "error":
                    raise RuntimeError(f"the portable runtime failed this request: {value}") from value
                if kind == "cancelled":
                    ended = "cancelled"
                    break
                if not blocks:
                    blocks = self._publish_stored(prompt)
                tokens = value.new_tokens
                if value.finished and value.finish_reason == "stop_word" and tokens and tokens[-1] in hidden:
                    tokens = tokens[:-1]
                produced += len(tokens)
                if not value.finished:
                    yield {"token_ids": tokens}
                    continue
                ended = finish_reason(value.finish_reason)
                yield {
                    "token_ids": tokens,
                    "finish_reason": ended,
                    "completion_usage": {
                        "prompt_tokens": len(prompt),
                        "completion_tokens": produced,
                        "total_tokens": len(prompt) + produced,
                    },
                }
        finally:
            if watcher is not None:
                watcher.cancel()
            if ended is None or ended == "cancelled":  # the client left (the generator closed) or Dynamo stopped it
                self.engine.cancel(key)
                ended = "cancelled"
            self._publish_removed(blocks)
            self.served += 1
            log.info("request %s: %d prompt tokens -> %d tokens, %s", key, len(prompt), produced, ended)

    async def _watch(self, context, key: str) -> None:
        while not (context.is_stopped() or context.is_killed()):
            await asyncio.sleep(POLL_S)
        self.engine.cancel(key)

    @staticmethod
    def _cancelled(sequence, deliver) -> None:  # on the engine's thread, as the sequence leaves its slot
        log.info("request %s cancelled in the engine after %d tokens", sequence.key, len(sequence.output_ids))
        deliver("cancelled", None)

    def _publish_stored(self, prompt: list[int]) -> list[int]:
        """The prompt's full blocks, once the engine holds them (after its prefill): the KV router's view."""
        full = len(prompt) // self.kv_block_size
        if self.publisher is None or full == 0:
            return [0]  # marks "prefilled" without blocks
        ids = [next(self._block_ids) for _ in range(full)]
        try:
            self.publisher.publish_stored(
                token_ids=prompt[: full * self.kv_block_size],
                num_block_tokens=[self.kv_block_size] * full,
                block_hashes=ids,
                parent_hash=None,
            )
        except Exception as error:  # KV events are advice to the router; serving goes on without them
            log.warning("KV event not published: %s", error)
        return ids

    def _publish_removed(self, ids: list[int]) -> None:
        ids = [block for block in ids if block]
        if self.publisher is None or not ids:
            return
        try:
            self.publisher.publish_removed(ids)
        except Exception as error:
            log.warning("KV event not published: %s", error)


def _request_id(context) -> str:
    try:
        return str(context.id()) if context is not None else uuid.uuid4().hex
    except Exception:  # a context without an id (tests driving generate directly)
        return uuid.uuid4().hex


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", required=True, help="a Hugging Face-format folder (weights and tokenizer)")
    parser.add_argument("--served-model-name", required=True)
    parser.add_argument("--namespace", default="dynamo")
    parser.add_argument("--kv-block-size", type=int, default=16)
    parser.add_argument("--max-seq-len", type=int, default=0, help="prompt + output; 0: the model's")
    parser.add_argument("--max-batch-size", type=int, default=8, help="sequences decoded together")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--discovery-backend", default=None, help="Dynamo's discovery backend (file on one machine)")
    parser.add_argument("--no-kv-events", action="store_true", help="do not publish KV events")
    return parser.parse_args(argv)


async def serve(runtime, args: argparse.Namespace) -> None:
    from dynamo.llm import KvEventPublisher, ModelInput, ModelRuntimeConfig, ModelType, WorkerType, register_llm

    hf_engine = _engine_module()
    engine = hf_engine.Engine(
        args.model_path, device=args.device, max_seq_len=args.max_seq_len, max_num_sequences=args.max_batch_size
    )
    engine.start()
    log.info("engine ready: %s; %s", engine.kv_cache_note, engine.compile_note)
    endpoint = runtime.endpoint(f"{args.namespace}.backend.generate")
    publisher = None
    if not args.no_kv_events:
        try:
            publisher = KvEventPublisher(endpoint, kv_block_size=args.kv_block_size)
        except Exception as error:  # the router then keeps its own approximate view of this worker's cache
            log.warning("KV events off: %s", error)
    worker = PortableWorker(
        engine, hf_engine, name=args.served_model_name, kv_block_size=args.kv_block_size, publisher=publisher
    )
    runtime_config = ModelRuntimeConfig()
    runtime_config.context_length = engine.max_seq_len
    runtime_config.max_num_seqs = engine.max_num_sequences
    runtime_config.total_kv_blocks = engine.max_num_sequences * (engine.max_seq_len // args.kv_block_size)
    await register_llm(
        ModelInput.Tokens,
        ModelType.Chat | ModelType.Completions,
        endpoint,
        args.model_path,
        args.served_model_name,
        worker_type=WorkerType.Aggregated,
        kv_cache_block_size=args.kv_block_size,
        runtime_config=runtime_config,
    )
    log.info(
        "registered %s as %s.backend.generate (pid %d, KV events %s)",
        args.served_model_name,
        args.namespace,
        os.getpid(),
        "on" if publisher is not None else "off",
    )
    try:
        await endpoint.serve_endpoint(worker.generate)
    finally:
        engine.stop()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s portable-worker[{os.getpid()}] %(levelname)s %(message)s",
    )
    if args.discovery_backend:  # dynamo_worker() reads it from the environment
        os.environ["DYN_DISCOVERY_BACKEND"] = args.discovery_backend
    from dynamo.runtime import dynamo_worker

    @dynamo_worker()
    async def worker(runtime) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):  # stop at once: nothing in flight is worth keeping
            loop.add_signal_handler(signum, runtime.shutdown)
        await serve(runtime, args)

    try:
        asyncio.run(worker())
    except KeyboardInterrupt:
        pass
    log.info("stopped")


if __name__ == "__main__":
    main()
