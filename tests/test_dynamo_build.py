"""`tritonrepo build --serving dynamo`: the Dynamo plan (planning/dynamo.py) and the files it writes, checked against
Dynamo 1.6.1's own flag list, its DeepSeek-R1 engine configs and a DynamoGraphDeployment it ships (tests/data/
dynamo-1.6.1/SOURCE.md); tests/test_dynamo_schemas.py validates the manifest against the operator's CRD schema.
No Dynamo, TensorRT-LLM or GPU needed."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from dynamo_acceptance import ACCEPTANCE

from tritonrepo.cli.main import cli
from tritonrepo.dynamo.manifest import load
from tritonrepo.errors import PlanDoesNotFitError, PlanError
from tritonrepo.hardware import parse_gpu
from tritonrepo.planning.dynamo import plan_dynamo
from tritonrepo.planning.request import DeploymentRequest, DynamoChoices
from tritonrepo.source.catalog import lookup

DATA = Path(__file__).parent / "data" / "dynamo-1.6.1"
FLAGS = json.loads((DATA / "flags.json").read_text())
# Key values of Dynamo's DeepSeek-R1 engine configs (SOURCE.md); the README's presets table shows the same.
RECIPE = {
    "prefill": {"enable_attention_dp": True, "max_batch_size": 1, "max_num_tokens": 8192,
                "disable_overlap_scheduler": True, ("kv_cache_config", "dtype"): "fp8",
                ("kv_cache_config", "free_gpu_memory_fraction"): 0.75,
                ("cache_transceiver_config", "backend"): "UCX",
                ("cache_transceiver_config", "max_tokens_in_buffer"): 16384},
    "decode": {"enable_attention_dp": False, "max_batch_size": 256, "max_num_tokens": 256, "max_seq_len": 8448,
               "disable_overlap_scheduler": False, ("kv_cache_config", "dtype"): "fp8",
               ("kv_cache_config", "free_gpu_memory_fraction"): 0.85,
               ("cuda_graph_config", "enable_padding"): True,
               ("cuda_graph_config", "batch_sizes"): [1, 2, 4, 8, 16, 32, 64, 128, 256],
               ("cache_transceiver_config", "backend"): "UCX",
               ("cache_transceiver_config", "max_tokens_in_buffer"): 16384},
}  # fmt: skip
# Top-level and nested LLM-API keys those engine configs use (TensorRT-LLM llm_args.py names).
ENGINE_KEYS = {
    "backend", "tensor_parallel_size", "moe_expert_parallel_size", "pipeline_parallel_size", "enable_attention_dp",
    "max_batch_size", "max_num_tokens", "max_seq_len", "disable_overlap_scheduler", "print_iter_log",
    "kv_cache_config.free_gpu_memory_fraction", "kv_cache_config.dtype", "cuda_graph_config.enable_padding",
    "cuda_graph_config.batch_sizes", "cache_transceiver_config.backend", "cache_transceiver_config.max_tokens_in_buffer",
    "speculative_config.decoding_type", "speculative_config.num_nextn_predict_layers",
    "moe_config.backend",  # the wide_ep configs
}  # fmt: skip


def _build(tmp_path: Path, args: list[str], name: str = "out"):
    out = tmp_path / name
    result = CliRunner().invoke(cli, ["-q", "build", "--serving", "dynamo", *args, "--output", str(out)])
    return result, out


@pytest.fixture(scope="module", params=sorted(ACCEPTANCE))
def built(request, tmp_path_factory):
    result, out = _build(tmp_path_factory.mktemp(request.param), ACCEPTANCE[request.param])
    assert result.exit_code == 0, result.output
    return request.param, out


def _keys(data: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in data.items():
        if isinstance(value, dict):
            keys |= _keys(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


def _commands(out: Path) -> list[list[str]]:
    """Every dynamo.frontend / dynamo.trtllm command line of the launch scripts and the Kubernetes manifest."""
    commands = []
    for script in (out / "launch").iterdir():
        for line in script.read_text().splitlines():
            if "-m dynamo." in line and not line.lstrip().startswith("#"):
                words = shlex.split(line.split("python3", 1)[1].split(" &")[0].replace('"$DISCOVERY"', "etcd"))
                commands.append(["python3", *words])
    for doc in yaml.safe_load_all((out / "k8s" / "dynamo-graph-deployment.yaml").read_text()):
        for service in doc.get("spec", {}).get("services", {}).values():
            container = service["extraPodSpec"]["mainContainer"]
            commands.append(container["command"] + container["args"])
    return commands


def test_every_flag_exists_in_dynamo_1_6_1(built):
    name, out = built
    commands = _commands(out)
    assert any("dynamo.frontend" in c for c in commands) and any("dynamo.trtllm" in c for c in commands)
    for argv in commands:
        module = argv[argv.index("-m") + 1]
        known = FLAGS[module]
        args = argv[argv.index("-m") + 2 :]
        for i, word in enumerate(args):
            if word.startswith("--"):
                assert word in known, f"{name}: {module} has no {word} in 1.6.1"
                choices = known[word]
                if choices:
                    assert args[i + 1] in choices, f"{name}: {word} {args[i + 1]} not in {choices}"


def test_engine_yamls_use_llm_api_fields_and_agree(built):
    name, out = built
    manifest = load(out)
    engines = {g.role: yaml.safe_load((out / g.engine_config).read_text()) for g in manifest.workers}
    for role, engine in engines.items():
        unknown = _keys(engine) - ENGINE_KEYS
        assert not unknown, f"{name} {role}: {unknown}"
    if manifest.disaggregated:
        prefill, decode = engines["prefill"], engines["decode"]
        assert prefill["kv_cache_config"].get("dtype") == decode["kv_cache_config"].get("dtype")
        buffer = prefill["cache_transceiver_config"]["max_tokens_in_buffer"]
        assert buffer == decode["cache_transceiver_config"]["max_tokens_in_buffer"]
        plan = json.loads((out / "plan.json").read_text())
        assert buffer > plan["max_input_len"]  # dynamo #4327


@pytest.mark.parametrize("name", ["fp4-gb200", "r1-h200x16"])
def test_deepseek_presets_match_dynamos_recipe(name, tmp_path):
    result, out = _build(tmp_path, ACCEPTANCE[name])
    assert result.exit_code == 0, result.output
    for role, expected in RECIPE.items():
        engine = yaml.safe_load((out / "engine" / f"{role}.yaml").read_text())
        for key, value in expected.items():
            got = engine[key[0]][key[1]] if isinstance(key, tuple) else engine[key]
            assert got == value, f"{role} {key}"
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert "engine_configs/deepseek-r1/disagg/simple/prefill.yaml" in readme


def test_topologies_of_the_acceptance_builds(tmp_path):
    expected = {  # name: ({role: (replicas, gpus per worker, nodes per worker)}, nodes, launch script)
        "fp4-gb200": ({"prefill": (1, 4, 1), "decode": (1, 4, 1)}, 2, "multi-node.sbatch"),
        "r1-h200x16": ({"prefill": (1, 8, 1), "decode": (1, 8, 1)}, 2, "multi-node.sbatch"),
        "distill-8b": ({"prefill": (1, 1, 1), "decode": (1, 1, 1)}, 1, "single-node.sh"),
        "tiny-llama": ({"aggregated": (2, 0, 1)}, 1, "single-node.sh"),
    }
    for name, (roles, nodes, script) in expected.items():
        result, out = _build(tmp_path, ACCEPTANCE[name], name)
        assert result.exit_code == 0, result.output
        manifest = load(out)
        got = {g.role: (g.replicas, g.gpus_per_worker, g.nodes_per_worker) for g in manifest.workers}
        assert got == roles, name
        assert json.loads((out / "plan.json").read_text())["nodes"] == nodes
        assert [p.name for p in (out / "launch").iterdir()] == [script]
        assert manifest.kv_block_size == 32
        text = (out / "PLAN.txt").read_text()
        assert "#5015" in text and "warm-up" in text
        if manifest.disaggregated:
            assert "#4327" in text


def test_tiny_llama_workers_load_the_local_folder(tmp_path):
    result, out = _build(tmp_path, ACCEPTANCE["tiny-llama"])
    assert result.exit_code == 0, result.output
    manifest = load(out)
    assert Path(manifest.model_path).is_absolute() and (Path(manifest.model_path) / "config.json").is_file()
    assert manifest.served_model_name == "tiny-llama" and manifest.router_mode == "kv"


def test_multi_node_script_uses_srun_pmix_and_etcd_nats_on_the_head(tmp_path):
    result, out = _build(tmp_path, ACCEPTANCE["r1-h200x16"])
    assert result.exit_code == 0, result.output
    script = (out / "launch" / "multi-node.sbatch").read_text()
    assert "#SBATCH --nodes=2" in script and "--mpi=pmix" in script and "trtllm-llmapi-launch" in script
    assert "etcd " in script and "nats-server" in script and "ETCD_ENDPOINTS" in script


def test_kubernetes_manifest_uses_the_fields_of_dynamos_own_manifest(built):
    name, out = built
    reference = yaml.safe_load((DATA / "reference-dgd-v1alpha1.yaml").read_text())
    docs = list(yaml.safe_load_all((out / "k8s" / "dynamo-graph-deployment.yaml").read_text()))
    graph = next(d for d in docs if d["kind"] == "DynamoGraphDeployment")
    assert graph["apiVersion"] == reference["apiVersion"]
    allowed = {"backendFramework", "services"} | set(reference["spec"])
    assert set(graph["spec"]) <= allowed
    reference_service_keys = set().union(*(_keys(s) for s in reference["spec"]["services"].values()))
    # Beyond the reference: multinode.nodeCount (the operator's multi-node field), and the Pod/Container fields that
    # mount the engine ConfigMap (core Kubernetes PodSpec).
    extra = {"multinode.nodeCount", "extraPodSpec.volumes", "extraPodSpec.mainContainer.volumeMounts"}
    for service_name, service in graph["spec"]["services"].items():
        unknown = _keys(service) - reference_service_keys - extra
        assert not unknown, f"{name} {service_name}: {unknown}"
        assert service["componentType"] in ("frontend", "worker")
        if service["componentType"] == "worker":
            assert service["envFromSecret"] and int(service["resources"]["limits"]["gpu"]) >= 0
    roles = {s.get("subComponentType") for s in graph["spec"]["services"].values()}
    manifest = load(out)
    assert roles - {None} == ({"prefill", "decode"} if manifest.disaggregated else set())
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    assert set(config_map["data"]) == {Path(g.engine_config).name for g in manifest.workers}


@pytest.mark.parametrize(
    "args, words",
    [
        (["--model", "deepseek-ai/DeepSeek-R1", "--disagg", "--gpu", "H200 x8"],
         ["16 GPUs", "has 8", "aggregated on 8 GPUs", "H200 x16"]),
        (["--model", "DeepSeek-R1-Distill-Llama-8B", "--disagg", "--gpu", "H100-80GB x2", "--max-input-len", "20000",
          "--max-seq-len", "24000", "--max-tokens-in-buffer", "16384"], ["16384", "20000", "#4327"]),
        (["--model", "tiny-llama", "--router", "random"], ["unknown router mode 'random'", "round-robin"]),
        (["--model", "nvidia/DeepSeek-R1-FP4", "--disagg", "--gpu", "GB200 x4"], ["8 GPUs", "has 4"]),
        (["--model", "DeepSeek-R1-Distill-Llama-8B", "--disagg", "--prefill-workers", "2", "--decode-workers", "2",
          "--gpu", "H100-80GB x2"], ["4 GPUs", "has 2"]),
    ],
)  # fmt: skip
def test_refusals_explain_and_write_nothing(tmp_path, args, words):
    result, out = _build(tmp_path, args)
    assert result.exit_code == 3, result.output
    for word in words:
        assert word in result.output
    assert not out.exists() and not list(tmp_path.iterdir())  # no staging folder left either


def test_refusals_are_typed():
    r1 = lookup("DeepSeek-R1")
    request = DeploymentRequest("DeepSeek-R1", dynamo=DynamoChoices(disagg=True))
    with pytest.raises(PlanDoesNotFitError):
        plan_dynamo("DeepSeek-R1", r1.hf_id, r1.facts, parse_gpu("H200 x8"), request)
    with pytest.raises(PlanError):
        plan_dynamo("DeepSeek-R1", r1.hf_id, r1.facts, parse_gpu("H200 x8"),
                    DeploymentRequest("DeepSeek-R1", dynamo=DynamoChoices(router="random")))  # fmt: skip


def test_mtp_on_decode_follows_the_mtp_recipe(tmp_path):
    result, out = _build(tmp_path, [*ACCEPTANCE["fp4-gb200"], "--mtp", "1"])
    assert result.exit_code == 0, result.output
    decode = yaml.safe_load((out / "engine" / "decode.yaml").read_text())
    assert decode["speculative_config"] == {"decoding_type": "MTP", "num_nextn_predict_layers": 1}
    assert decode["max_num_tokens"] == 512  # batch 256 x (1 + 1), as mtp_decode.yaml


def test_dynamo_flags_need_serving_dynamo(tmp_path):
    result = CliRunner().invoke(cli, ["build", "--model", "tiny-llama", "--disagg", "-o", str(tmp_path / "x")])
    assert result.exit_code != 0 and "--serving dynamo" in result.output


def test_plan_refuses_serving_dynamo_instead_of_ignoring_it():
    result = CliRunner().invoke(cli, ["plan", "--model", "tiny-llama", "--serving", "dynamo"])
    assert result.exit_code == 2 and "build option" in result.output
