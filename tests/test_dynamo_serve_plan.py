"""What `serve` starts for a Dynamo deployment (serve_plan.py) and how the portable worker maps Dynamo's requests."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import model_code_path

from tritonrepo.dynamo.manifest import DynamoDeployment, WorkerGroup
from tritonrepo.dynamo.portable_worker import finish_reason, sampling_params
from tritonrepo.dynamo.serve_plan import frontend_command, trtllm_worker_command, worker_processes
from tritonrepo.errors import ServerError

model_code_path("tensorrt_llm")
from hf_engine import SamplingParams  # noqa: E402

AGG = (WorkerGroup("aggregated", 2, 1, "engine/agg.yaml"),)
DISAGG = (WorkerGroup("prefill", 2, 4, "engine/prefill.yaml"), WorkerGroup("decode", 1, 4, "engine/decode.yaml"))


def deployment(workers=AGG, router="kv") -> DynamoDeployment:
    return DynamoDeployment(
        model="m", model_path="/models/m", served_model_name="m", router_mode=router, kv_block_size=32,
        workers=workers, max_seq_len=4096, max_batch_size=16,
    )  # fmt: skip


def flag(argv, name):
    return argv[argv.index(name) + 1]


def test_the_frontend_takes_the_router_mode_block_size_and_port_of_the_deployment():
    argv = frontend_command(deployment(router="round-robin"), host="0.0.0.0", port=9100)
    assert argv[1:3] == ["-m", "dynamo.frontend"]
    assert flag(argv, "--router-mode") == "round-robin" and "--kv-cache-block-size" not in argv
    assert flag(argv, "--http-port") == "9100" and flag(argv, "--http-host") == "0.0.0.0"
    assert flag(argv, "--discovery-backend") == "file" and flag(argv, "--migration-limit") == "3"
    routed = frontend_command(deployment(router="kv"), host="127.0.0.1", port=9100)
    assert flag(routed, "--router-mode") == "kv" and flag(routed, "--kv-cache-block-size") == "32"  # the workers' size


def test_without_tensorrt_llm_each_aggregated_replica_is_a_portable_worker():
    specs = worker_processes(deployment(), Path("/d"), trtllm_available=False, stand_in=None)
    assert [s.name for s in specs] == ["aggregated-worker-0", "aggregated-worker-1"]
    assert all("tritonrepo.dynamo.portable_worker" in s.argv and not s.stand_in for s in specs)
    assert flag(list(specs[0].argv), "--kv-block-size") == "32"


def test_with_tensorrt_llm_the_workers_are_dynamo_trtllm_in_their_disaggregation_mode():
    specs = worker_processes(deployment(DISAGG), Path("/d"), trtllm_available=True, stand_in=None)
    assert [s.role for s in specs] == ["prefill", "prefill", "decode"]
    prefill, decode = list(specs[0].argv), list(specs[2].argv)
    assert prefill[:3] == ["python3", "-m", "dynamo.trtllm"]
    assert flag(prefill, "--disaggregation-mode") == "prefill" and flag(decode, "--disaggregation-mode") == "decode"
    assert flag(prefill, "--extra-engine-args") == "/d/engine/prefill.yaml"
    assert "--publish-kv-events" in decode and "--publish-kv-events" in prefill  # the KV router sees both
    agg = trtllm_worker_command(deployment(), Path("/d"), AGG[0])
    assert flag(agg, "--disaggregation-mode") == "agg" and flag(agg, "--model") == "/models/m"


def test_disaggregated_without_tensorrt_llm_is_refused_unless_a_stand_in_is_asked_for():
    with pytest.raises(ServerError, match="--stand-in mocker"):
        worker_processes(deployment(DISAGG), Path("/d"), trtllm_available=False, stand_in=None)
    specs = worker_processes(
        deployment(DISAGG), Path("/d"), trtllm_available=False, stand_in="mocker", bootstrap_ports=[7001, 7002]
    )
    assert all(s.stand_in == "mocker" and "dynamo.mocker" in s.argv for s in specs)
    assert [flag(list(s.argv), "--bootstrap-ports") for s in specs[:2]] == ["7001", "7002"]
    assert "--bootstrap-ports" not in specs[2].argv
    assert "stand-in: dynamo.mocker for dynamo.trtllm" in specs[0].label


def test_dynamo_requests_map_onto_the_engines_sampling_params():
    request = {
        "token_ids": [1, 2, 3],
        "stop_conditions": {"max_tokens": 20, "min_tokens": 4, "stop_token_ids_hidden": [2]},
        "sampling_options": {"temperature": 0.7, "top_p": 0.9, "top_k": -1, "seed": 5, "frequency_penalty": 0.5},
    }
    params, hidden = sampling_params(request, max_seq_len=100, prompt_len=3, params_type=SamplingParams)
    assert (params.max_new_tokens, params.min_length, params.temperature, params.top_p) == (20, 4, 0.7, 0.9)
    assert params.top_k == 0 and params.seed == 5 and params.frequency_penalty == 0.5
    assert params.stop_words == [[2]] and hidden == {2} and not params.greedy
    # OpenAI defaults (no top_p) sample; temperature 0 is greedy; no max_tokens: up to max_seq_len
    sampled, _ = sampling_params({"sampling_options": {}}, max_seq_len=100, prompt_len=10, params_type=SamplingParams)
    assert not sampled.greedy and sampled.max_new_tokens == 90
    greedy, _ = sampling_params(
        {"sampling_options": {"temperature": 0}}, max_seq_len=100, prompt_len=10, params_type=SamplingParams
    )
    assert greedy.greedy
    ignoring, hidden = sampling_params(
        {"stop_conditions": {"ignore_eos": True, "stop_token_ids_hidden": [2]}},
        max_seq_len=100, prompt_len=10, params_type=SamplingParams,
    )  # fmt: skip
    assert ignoring.end_id == -1 and ignoring.stop_words == [] and hidden == set()


def test_engine_finish_reasons_become_openai_ones():
    assert [finish_reason(r) for r in ("end_id", "stop_word", "length", "max_seq_len")] == [
        "stop", "stop", "length", "length",
    ]  # fmt: skip


def test_dynamo_trtllm_workers_get_consecutive_gpus_and_our_workers_keep_the_environment():
    groups = (WorkerGroup("prefill", 2, 2, "engine/prefill.yaml"), WorkerGroup("decode", 1, 4, "engine/decode.yaml"))
    specs = worker_processes(deployment(groups), Path("/d"), trtllm_available=True, stand_in=None)
    assert [s.gpus for s in specs] == [(0, 1), (2, 3), (4, 5, 6, 7)]
    assert specs[2].environment({"PATH": "/bin"}) == {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "4,5,6,7"}
    portable = worker_processes(deployment(), Path("/d"), trtllm_available=False, stand_in=None)
    assert portable[0].environment({"PATH": "/bin"}) == {"PATH": "/bin"}


def test_workers_that_span_nodes_are_sent_to_the_multi_node_launchers():
    spanning = (WorkerGroup("aggregated", 1, 16, "engine/agg.yaml", nodes_per_worker=2),)
    with pytest.raises(ServerError, match="span 2 nodes each") as refused:
        worker_processes(deployment(spanning), Path("/d"), trtllm_available=True, stand_in=None)
    assert "launch/multi-node.sbatch" in str(refused.value)
