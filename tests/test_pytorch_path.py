"""The PyTorch path (DeepSeek-V3-architecture MoE): support matrix, LLM-API options in both schemas, launch files
(run against stand-in commands on PATH: srun, mpirun, trtllm-llmapi-launch and trtllm-serve are not installed here),
and `build` writing a deployment. TensorRT-LLM itself cannot run here; these check what we hand it."""

from __future__ import annotations

import json
import os
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tritonrepo.cli.main import cli
from tritonrepo.errors import PlanError
from tritonrepo.hardware import parse_gpu
from tritonrepo.planning.build import build
from tritonrepo.planning.llmapi import plan_llmapi
from tritonrepo.planning.llmapi_support import UnsupportedHardwareError
from tritonrepo.planning.planner import plan_deployment
from tritonrepo.planning.request import DeploymentRequest, LlmApiChoices
from tritonrepo.pytorch_path import launch_files
from tritonrepo.pytorch_path.llm_options import cuda_graph_batch_sizes, extra_options, llm_args, options_yaml
from tritonrepo.repository.manifest import MANIFEST
from tritonrepo.repository.validate import check_repository
from tritonrepo.source.catalog import lookup


def _plan(model: str, gpu: str, *, max_seq_len=None, kv_cache_free_gpu_mem_fraction=None, **llmapi):
    entry = lookup(model)
    request = DeploymentRequest(
        entry.name, max_seq_len=max_seq_len, kv_cache_free_gpu_mem_fraction=kv_cache_free_gpu_mem_fraction,
        llmapi=LlmApiChoices(**llmapi),
    )  # fmt: skip
    return plan_llmapi(
        entry.hf_id, entry.facts, parse_gpu(gpu), request, reasoning_parser="deepseek-r1", display_name=entry.name
    )


def _serve_argv(plan) -> list[str]:
    return shlex.split(shlex.join(launch_files.trtllm_serve_argv(plan, "/d/options.yml")))


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


# (model, gpu, version) -> (tp, ep, nodes, gpus per node, MoE backend)
MATRIX = [
    ("DeepSeek-R1", "H100-80GB x16", "1.0.0", (16, 16, 2, 8, "CUTLASS")),
    ("DeepSeek-R1", "H200 x8", "1.0.0", (8, 8, 1, 8, "CUTLASS")),
    ("DeepSeek-V3", "H20 x8", "1.0.0", (8, 8, 1, 8, "CUTLASS")),
    ("DeepSeek-R1-0528", "H20-141GB x8", "1.2.1", (8, 8, 1, 8, "CUTLASS")),
    ("DeepSeek-R1-FP4", "B200 x4", "1.0.0", (4, 4, 1, 4, "CUTLASS")),
    ("DeepSeek-R1-0528-FP4", "B200 x8", "1.0.0", (8, 8, 1, 8, "CUTLASS")),
    ("DeepSeek-R1", "B200 x8", "1.0.0", (8, 8, 1, 8, "DEEPGEMM")),
    ("DeepSeek-R1-FP4", "GB200 x72", "1.0.0", (72, 72, 18, 4, "WIDEEP")),
]


@pytest.mark.parametrize("model,gpu,version,expected", MATRIX, ids=[f"{m}-{g}" for m, g, _, _ in MATRIX])
def test_each_support_matrix_row_gives_parsable_options_and_command(model, gpu, version, expected):
    plan = _plan(model, gpu, trtllm_version=version)
    tp, ep, nodes, per_node, backend = expected
    sizing = plan.sizing
    assert (sizing.tp_size, sizing.ep_size, sizing.nodes, sizing.gpus_per_node, sizing.moe_backend) == expected
    options = yaml.safe_load(options_yaml(plan))
    assert options["moe_config"]["backend"] == backend
    assert options["enable_attention_dp"] is True and options["cuda_graph_config"]["enable_padding"] is True
    assert options["speculative_config"] == {"decoding_type": "MTP", "num_nextn_predict_layers": 1}
    if backend in ("DEEPGEMM", "WIDEEP"):  # the recipe sets the MoE token budget with these backends
        assert options["moe_config"]["max_num_tokens"] == plan.max_num_tokens
    else:
        assert "max_num_tokens" not in options["moe_config"]
    if backend == "WIDEEP":  # 256 experts over 72 GPUs: 288 balanced slots, as in the recipe
        assert options["moe_config"]["load_balancer"] == {"num_slots": 288, "layer_updates_per_iter": 1}
    else:
        assert "load_balancer" not in options["moe_config"]
    argv = _serve_argv(plan)
    assert argv[:2] == ["trtllm-serve", lookup(model).hf_id]
    assert (_flag(argv, "--tp_size"), _flag(argv, "--ep_size"), _flag(argv, "--backend")) == (
        str(tp),
        str(ep),
        "pytorch",
    )
    assert _flag(argv, "--extra_llm_api_options") == "/d/options.yml" and "--trust_remote_code" in argv
    assert _flag(argv, "--reasoning_parser") == "deepseek-r1"


def test_fp8_kv_cache_where_supported_and_the_h200_allocator_workaround():
    h200 = _plan("DeepSeek-R1", "H200 x8", trtllm_version="1.0.0")
    assert extra_options(h200)["kv_cache_config"] == {"free_gpu_memory_fraction": 0.8, "dtype": "fp8"}
    assert dict(h200.env) == {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:8192"}  # the 8K-input fragmentation fix
    text = options_yaml(h200)
    assert "# - H200 with ~8K-token inputs" in text and "PYTORCH_CUDA_ALLOC_CONF=max_split_size_mb:8192" in text
    short = _plan("DeepSeek-R1", "H200 x8", trtllm_version="1.0.0", max_seq_len=4096)
    assert dict(short.env) == {}  # inputs that short never hit it; the comment stays
    old_blackwell = _plan("DeepSeek-R1-FP4", "B200 x8", trtllm_version="0.20.0")
    assert "kv_cache_dtype" not in extra_options(old_blackwell)["pytorch_backend_config"]  # FP8 MLA accuracy issue


def test_the_latency_profile_keeps_attention_tensor_parallel_with_more_mtp_and_small_batches():
    plan = _plan("DeepSeek-R1", "H200 x8", trtllm_version="1.0.0", profile="latency")
    options = extra_options(plan)
    assert options["enable_attention_dp"] is False and options["stream_interval"] == 1
    assert options["speculative_config"]["num_nextn_predict_layers"] == 3
    assert plan.max_batch_size == 32 and options["cuda_graph_config"]["max_batch_size"] == 32
    assert "speculative_config" not in extra_options(_plan("DeepSeek-R1", "H200 x8", mtp_layers=0))


def test_the_legacy_schema_up_to_0_20_and_the_flat_one_from_1_0():
    legacy = extra_options(_plan("DeepSeek-R1", "H200 x8", trtllm_version="0.19.0"))
    backend = legacy["pytorch_backend_config"]
    assert backend["use_cuda_graph"] is True and backend["cuda_graph_padding_enabled"] is True
    assert backend["cuda_graph_batch_sizes"] == [1, 2, 4, 8, 16, 32, 64, 128]
    assert backend["enable_overlap_scheduler"] is True and backend["kv_cache_dtype"] == "fp8"
    assert "cuda_graph_config" not in legacy and "moe_config" not in legacy and legacy["enable_attention_dp"] is True
    assert (
        "enable_overlap_scheduler"
        not in extra_options(_plan("DeepSeek-R1", "H200 x8", trtllm_version="0.20.0"))["pytorch_backend_config"]
    )  # on by default from 0.20, where the field became disable_overlap_scheduler
    flat = extra_options(_plan("DeepSeek-R1", "H200 x8", trtllm_version="1.0.0"))
    assert set(flat) == {"enable_attention_dp", "cuda_graph_config", "kv_cache_config", "stream_interval",
                         "moe_config", "speculative_config"}  # fmt: skip
    assert cuda_graph_batch_sizes(96) == [1, 2, 4, 8, 16, 32, 64, 96]
    # trtllm-serve of 0.x has no --reasoning_parser; our front end splits the reasoning instead
    assert "--reasoning_parser" not in _serve_argv(_plan("DeepSeek-R1", "H200 x8", trtllm_version="0.19.0"))


def test_llm_args_hold_every_flag_for_the_llmapi_model():
    args = llm_args(_plan("DeepSeek-R1", "H200 x8", trtllm_version="1.0.0"))
    assert args["model"] == "deepseek-ai/DeepSeek-R1" and args["backend"] == "pytorch"
    assert (args["tensor_parallel_size"], args["moe_expert_parallel_size"], args["pipeline_parallel_size"]) == (8, 8, 1)
    assert args["kv_cache_config"] == {"free_gpu_memory_fraction": 0.8, "dtype": "fp8"}
    assert args["trust_remote_code"] is True and args["max_seq_len"] == 8192


@pytest.mark.parametrize(
    "model,gpu,version,expected",
    [
        (
            "DeepSeek-R1",
            "H100-80GB x8",
            "1.0.0",
            [
                "needs at least 16x H100-80GB",
                "has 8",
                "--gpu 'H100-80GB x16'",
                "nvidia/DeepSeek-R1-FP4",
                "DeepSeek-R1-Distill-Llama-70B",
            ],
        ),
        ("DeepSeek-R1", "A100-80GB x8", "1.0.0", ["SM80", "Hopper", "--gpu 'H200 x8'", "a distill that fits"]),
        ("DeepSeek-R1-FP4", "H200 x8", "1.0.0", ["NVFP4 weights need Blackwell"]),
        ("DeepSeek-R1", "B200 x8", "0.20.0", ["needs TensorRT-LLM 1.0.0 or newer"]),
        ("DeepSeek-R1-FP4", "B200 x2", "1.0.0", ["needs at least 4x B200"]),
        ("DeepSeek-R1-FP4", "GB200 x72", "0.20.0", ["needs TensorRT-LLM 1.0.0 or newer"]),
    ],  # fmt: skip
)
def test_too_little_or_the_wrong_hardware_is_refused_with_numbers_and_alternatives(model, gpu, version, expected):
    entry = lookup(model)
    request = DeploymentRequest(entry.name, llmapi=LlmApiChoices(trtllm_version=version))
    with pytest.raises(UnsupportedHardwareError) as caught:  # through the planner, which adds a distill that fits
        plan_deployment(entry.name, entry.facts, parse_gpu(gpu), request, tensorrt_llm_available=False)
    text = f"{caught.value} {caught.value.hint}"
    for phrase in expected:
        assert phrase in text


def test_expert_parallel_beyond_the_row_is_capped_or_refused():
    capped = _plan("DeepSeek-R1", "B200 x16", trtllm_version="1.0.0")
    assert capped.sizing.ep_size == 8 and any("capped at 8" in note for note in capped.sizing.notes)
    with pytest.raises(PlanError, match="expert parallel 16"):
        _plan("DeepSeek-R1", "B200 x16", trtllm_version="1.0.0", ep_size=16)
    with pytest.raises(PlanError, match="do not split evenly over 3 nodes"):
        _plan("DeepSeek-R1", "H200 x8", nodes=3)
    with pytest.raises(PlanError, match="do not fill nodes of 8"):
        _plan("DeepSeek-R1", "H200 x12")
    twelve = _plan("DeepSeek-R1", "H200 x12", nodes=2).sizing
    assert (twelve.gpus_per_node, twelve.tp_size, twelve.ep_size) == (6, 12, 4)  # 256 experts split 4 ways, not 12
    with pytest.raises(PlanError, match="must divide both tensor parallel 12 and the 256 experts"):
        _plan("DeepSeek-R1", "H200 x12", nodes=2, ep_size=12)
    with pytest.raises(PlanError, match="--profile"):
        _plan("DeepSeek-R1", "H200 x8", profile="fast")


def _stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def stubs(tmp_path) -> tuple[Path, dict]:
    """Stand-ins for srun, mpirun, trtllm-llmapi-launch and trtllm-serve that record how they were called."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    # srun: run the task command once per rank, as Slurm would across the nodes
    _stub(bin_dir, "srun", f"""
ntasks=$(printf '%s\\n' "$@" | sed -n 's/^--ntasks=//p'); cmd=("${{@: -3}}")
echo "srun $*" >> {log}
for ((r = 0; r < ntasks; r++)); do SLURM_PROCID=$r SLURM_NTASKS=$ntasks "${{cmd[@]}}"; done
""")  # fmt: skip
    _stub(bin_dir, "mpirun", f'echo "mpirun $*" >> {log}\n')
    _stub(bin_dir, "trtllm-llmapi-launch", f'echo "launch rank=${{SLURM_PROCID:-?}} $*" >> {log}\n')
    _stub(bin_dir, "trtllm-serve", f'echo "serve env=${{PYTORCH_CUDA_ALLOC_CONF:-}} $*" >> {log}\n')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return log, env


def _write(folder: Path, text: str, name: str) -> Path:
    path = folder / name
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_the_slurm_script_passes_bash_n_and_runs_one_rank_per_gpu(tmp_path, stubs):
    log, env = stubs
    plan = _plan("DeepSeek-R1", "H100-80GB x16", trtllm_version="1.0.0")
    script = _write(tmp_path, launch_files.slurm_script(plan), launch_files.SLURM_SCRIPT)
    assert subprocess.run(["bash", "-n", script]).returncode == 0
    text = script.read_text()
    for directive in ("--nodes=2", "--ntasks=16", "--ntasks-per-node=8", "--gres=gpu:8"):
        assert f"#SBATCH {directive}" in text
    subprocess.run(["bash", script], check=True, env={**env, "SLURM_SUBMIT_DIR": str(tmp_path)})
    calls = log.read_text().splitlines()
    assert calls[0].startswith("srun --nodes=2 --ntasks=16 --ntasks-per-node=8 --mpi=pmix")
    launches = [c for c in calls if c.startswith("launch")]
    assert [c.split()[1] for c in launches] == [f"rank={r}" for r in range(16)]  # every rank under llmapi-launch
    argv = shlex.split(launches[0].split(" ", 2)[2])
    assert argv[0] == "trtllm-serve" and _flag(argv, "--tp_size") == "16"
    assert _flag(argv, "--extra_llm_api_options") == f"{tmp_path}/{launch_files.OPTIONS_FILE}"


def test_the_mpirun_script_spreads_ranks_over_the_named_hosts(tmp_path, stubs):
    log, env = stubs
    plan = _plan("DeepSeek-R1", "H100-80GB x16", trtllm_version="1.0.0")
    script = _write(tmp_path, launch_files.mpirun_script(plan), launch_files.MPIRUN_SCRIPT)
    assert subprocess.run(["bash", "-n", script]).returncode == 0
    wrong = subprocess.run(["bash", script], env={**env, "HOSTS": "only-one"}, capture_output=True, text=True)
    assert wrong.returncode == 2 and "set HOSTS to 2 node names" in wrong.stderr
    subprocess.run(["bash", script], check=True, env={**env, "HOSTS": "node-a node-b"})
    call = shlex.split(log.read_text().splitlines()[-1])
    assert call[:6] == ["mpirun", "--allow-run-as-root", "-H", "node-a:8,node-b:8", "-n", "16"]
    assert call[6:8] == ["trtllm-llmapi-launch", "trtllm-serve"] and _flag(call, "--ep_size") == "16"


def test_serve_sh_exports_the_workaround_and_runs_trtllm_serve(tmp_path, stubs):
    log, env = stubs
    plan = _plan("DeepSeek-R1", "H200 x8", trtllm_version="1.0.0")
    script = _write(tmp_path, launch_files.serve_script(plan), launch_files.SERVE_SCRIPT)
    subprocess.run(["bash", script], check=True, env=env)
    line = log.read_text().strip()
    assert line.startswith("serve env=max_split_size_mb:8192 deepseek-ai/DeepSeek-R1 --host 0.0.0.0 --port 8000")
    assert f"--extra_llm_api_options {tmp_path}/{launch_files.OPTIONS_FILE}" in line


# trtllm-serve's default for --kv_cache_free_gpu_memory_fraction, and KvCacheConfig's (0.19, 0.20, 1.0)
TRTLLM_SERVE_DEFAULT_FRACTION = 0.9


def _trtllm_serve_llm_args(argv: list[str]) -> dict:
    """What trtllm-serve 0.19-1.0 hands LLM(...), modelled on its source (commands/serve.py builds kv_cache_config
    from the flag, then llmapi/llm_args.py `update_llm_args_with_extra_dict` does `llm_args | yaml`): the options
    file replaces each top-level key whole. Only the keys this test reads are modelled."""
    flag = "--kv_cache_free_gpu_memory_fraction"
    fraction = float(_flag(argv, flag)) if flag in argv else TRTLLM_SERVE_DEFAULT_FRACTION
    from_flags = {"kv_cache_config": {"free_gpu_memory_fraction": fraction}}
    options = yaml.safe_load(Path(_flag(argv, "--extra_llm_api_options")).read_text())
    return from_flags | options


@pytest.mark.parametrize("version", ["0.19.0", "0.20.0", "1.0.0", "1.2.1"])
def test_the_kv_cache_fraction_reaches_trtllm_serve_through_the_options_file(tmp_path, stubs, version):
    log, env = stubs
    plan = _plan("DeepSeek-R1", "H200 x8", trtllm_version=version, kv_cache_free_gpu_mem_fraction=0.65)
    (tmp_path / launch_files.OPTIONS_FILE).write_text(options_yaml(plan))
    script = _write(tmp_path, launch_files.serve_script(plan), launch_files.SERVE_SCRIPT)
    subprocess.run(["bash", script], check=True, env=env)
    argv = shlex.split(log.read_text().strip().split(" ", 2)[2])
    llm_args = _trtllm_serve_llm_args(["trtllm-serve", *argv])
    kv_cache = llm_args["kv_cache_config"]
    # the README's advice on out-of-memory (lower the fraction) acts: the file holds it, beside the fp8 dtype
    assert kv_cache.get("free_gpu_memory_fraction", TRTLLM_SERVE_DEFAULT_FRACTION) == 0.65
    if plan.schema == "flat":
        assert kv_cache["dtype"] == "fp8"
    else:
        assert llm_args["pytorch_backend_config"]["kv_cache_dtype"] == "fp8"
    # and only there: a flag too would win over the file in later trtllm-serve versions, so edits to the file count
    assert "--kv_cache_free_gpu_memory_fraction" not in argv
    assert "kv_cache_config.free_gpu_memory_fraction (0.7 or less) in extra-llm-api-options.yml" in options_yaml(plan)


def test_build_writes_a_trtllm_serve_deployment_for_the_target_gpus(tmp_path):
    result = build(DeploymentRequest(model="DeepSeek-R1", output=tmp_path / "r1", gpu="H200 x8", offline=True))
    folder = result.path
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["runtime"] == "pytorch" and manifest["serving"] == "trtllm-serve"
    assert manifest["reasoning_parser"] == "deepseek-r1" and manifest["launch"]["single_node"] == "serve.sh"
    assert set(manifest["files"]) == {launch_files.OPTIONS_FILE, "serve.sh", "launch-mpirun.sh", "launch-slurm.sbatch"}
    for script in ("serve.sh", "launch-mpirun.sh", "launch-slurm.sbatch"):
        assert os.access(folder / script, os.X_OK)
        assert subprocess.run(["bash", "-n", folder / script]).returncode == 0
    options = yaml.safe_load((folder / launch_files.OPTIONS_FILE).read_text())
    assert options["moe_config"] == {"backend": "CUTLASS"} and manifest["plan"]["llmapi"]["sizing"]["tp_size"] == 8
    assert result.source is None  # the weights are fetched by the server unless --download


def test_build_with_serving_triton_renders_a_valid_llmapi_repository(tmp_path):
    target = tmp_path / "r1-triton"
    llmapi = LlmApiChoices(serving="triton", trtllm_version="1.0.0", profile="latency")
    build(DeploymentRequest(model="deepseek-ai/DeepSeek-R1", output=target, gpu="H200 x8", llmapi=llmapi, offline=True))
    check_repository(target)
    model_yaml = yaml.safe_load((target / "tensorrt_llm/1/model.yaml").read_text())
    assert model_yaml["model"] == "deepseek-ai/DeepSeek-R1" and model_yaml["tensor_parallel_size"] == 8
    assert model_yaml["enable_attention_dp"] is False and model_yaml["max_batch_size"] == 32
    assert model_yaml["triton_config"] == {"max_batch_size": 32, "decoupled": True}
    assert "tritonrepo serve" in (target / "serve.sh").read_text()
    manifest = json.loads((target / MANIFEST).read_text())
    assert manifest["serving"] == "triton" and manifest["default_entry_point"] == "tensorrt_llm"


def _local_fp4_checkpoint(local: Path) -> Path:
    """A local DeepSeek-V3-architecture folder (configs only) that NVIDIA's FP4 quantization config marks as NVFP4."""
    local.mkdir()
    config = {
        "architectures": ["DeepseekV3ForCausalLM"], "num_hidden_layers": 61, "hidden_size": 7168,
        "num_attention_heads": 128, "vocab_size": 129280, "n_routed_experts": 256, "kv_lora_rank": 512,
        "max_position_embeddings": 163840, "torch_dtype": "bfloat16",
    }  # fmt: skip
    (local / "config.json").write_text(json.dumps(config))
    (local / "hf_quant_config.json").write_text(json.dumps({"quantization": {"quant_algo": "NVFP4"}}))
    return local


def test_the_first_serve_check_reads_no_weight_the_build_hashed(tmp_path, monkeypatch):
    """A linked checkpoint may be hundreds of GB: build hashes it once (with progress) and remembers the digests under
    the repository's paths, so serve's integrity check does not hash it again."""
    from tritonrepo.planning.stage_cache import FileDigests
    from tritonrepo.repository import integrity, validate

    local = _local_fp4_checkpoint(tmp_path / "my-r1")
    (local / "model-00001-of-00001.safetensors").write_bytes(b"w" * 4096)
    monkeypatch.setattr(integrity, "ALWAYS_HASHED_BELOW", 1024)  # the weights count as large
    llmapi = LlmApiChoices(serving="triton", trtllm_version="1.0.0")
    target = tmp_path / "served"
    build(DeploymentRequest(model=str(local), output=target, gpu="B200 x4", llmapi=llmapi, offline=True))
    hashed = []
    original = FileDigests.of

    def recording(self, path):
        hashed.append(Path(path).name)
        return original(self, path)

    monkeypatch.setattr(FileDigests, "of", recording)
    monkeypatch.setattr("tritonrepo.planning.stage_cache.sha256_file", lambda path: pytest.fail(f"{path} hashed again"))
    assert validate.validate_repository(target) == []
    assert "model-00001-of-00001.safetensors" in hashed  # asked of the memo, which knew it


def test_build_of_a_local_deepseek_v3_checkpoint_reads_its_precision(tmp_path):
    local = _local_fp4_checkpoint(tmp_path / "my-r1")
    result = build(DeploymentRequest(model=str(local), output=tmp_path / "out", gpu="B200 x4", offline=True))
    manifest = json.loads((result.path / MANIFEST).read_text())
    assert manifest["plan"]["llmapi"]["precision"] == "nvfp4" and manifest["model"]["id"] == str(local)
    assert manifest["model"]["source"] == "local"
    with pytest.raises(UnsupportedHardwareError, match="NVFP4 weights need Blackwell"):
        build(DeploymentRequest(model=str(local), output=tmp_path / "out2", gpu="H200 x8", offline=True))
    assert not (tmp_path / "out2").exists()  # a refused build leaves nothing behind


def test_build_refuses_gpu_for_a_dense_model_and_engine_flags_on_the_pytorch_path(tmp_path):
    with pytest.raises(PlanError, match="engines compile for the GPU they run on"):
        build(DeploymentRequest(model="tiny-llama", output=tmp_path / "t", gpu="H200 x8"))
    with pytest.raises(PlanError, match="--tp-size"):
        build(DeploymentRequest(model="DeepSeek-R1", output=tmp_path / "r", gpu="H200 x8", tp_size=4, offline=True))


def test_cli_plan_json_shows_the_whole_deployment_offline():
    result = CliRunner().invoke(
        cli, ["plan", "--model", "deepseek-ai/DeepSeek-R1", "--gpu", "H200 x8", "--json", "--offline"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["runtime"] == "pytorch" and data["llmapi"]["sizing"]["moe_backend"] == "CUTLASS"
    deployment = data["deployment"]
    assert deployment["extra_llm_api_options"]["kv_cache_config"] == {"free_gpu_memory_fraction": 0.8, "dtype": "fp8"}
    assert deployment["launch_command"].startswith("trtllm-serve deepseek-ai/DeepSeek-R1 ")
    assert deployment["env"] == {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:8192"}
    refused = CliRunner().invoke(cli, ["plan", "--model", "DeepSeek-R1", "--gpu", "H100 x8"])
    assert refused.exit_code != 0 and "needs at least 16x H100-80GB" in refused.output


def test_serve_runs_a_single_node_trtllm_serve_deployment_and_refuses_multi_node(tmp_path, stubs):
    log, env = stubs
    single = build(DeploymentRequest(model="DeepSeek-R1", output=tmp_path / "one", gpu="H200 x8", offline=True)).path
    tritonrepo = str(Path(sys.executable).parent / "tritonrepo")
    ran = subprocess.run([tritonrepo, "serve", str(single)], env=env, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert log.read_text().startswith("serve env=max_split_size_mb:8192 deepseek-ai/DeepSeek-R1 --host 0.0.0.0")
    bare = {**env, "PATH": "/usr/bin:/bin"}
    missing = subprocess.run([tritonrepo, "serve", str(single)], env=bare, capture_output=True, text=True)
    assert missing.returncode != 0 and "trtllm-serve, which is not on PATH" in missing.stderr
    assert "nvcr.io/nvidia/tensorrt-llm/release:" in missing.stderr
    multi = build(DeploymentRequest(model="DeepSeek-R1", output=tmp_path / "two", gpu="H100 x16", offline=True)).path
    refused = subprocess.run([tritonrepo, "serve", str(multi)], env=env, capture_output=True, text=True)
    assert refused.returncode != 0 and "spans 2 nodes" in refused.stderr and "launch-slurm.sbatch" in refused.stderr


def test_a_killed_serve_takes_trtllm_serve_with_it(tmp_path, stubs):
    _, env = stubs
    pid_file = tmp_path / "trtllm-serve.pid"
    _stub(tmp_path / "bin", "trtllm-serve", f"echo $$ > {pid_file}\nexec sleep 300\n")  # a server that stays up
    single = build(DeploymentRequest(model="DeepSeek-R1", output=tmp_path / "one", gpu="H200 x8", offline=True)).path
    tritonrepo = str(Path(sys.executable).parent / "tritonrepo")
    serve = subprocess.Popen([tritonrepo, "serve", str(single)], env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        server = int(pid_file.read_text())
        serve.kill()  # SIGKILL: serve runs no cleanup of its own
        serve.wait()
        while _alive(server) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(server), "trtllm-serve outlived the serve that started it"
    finally:
        serve.kill()
        if pid_file.exists() and _alive(server := int(pid_file.read_text())):
            os.kill(server, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_a_local_checkpoint_served_by_triton_is_linked_inside_the_repository(tmp_path):
    """The llmapi model must load only what its repository holds (validate refuses a `model` outside it)."""
    local = _local_fp4_checkpoint(tmp_path / "my-r1")
    (local / "model-00001-of-00001.safetensors").write_bytes(b"weights")
    llmapi = LlmApiChoices(serving="triton", trtllm_version="1.0.0")
    target = tmp_path / "served"
    build(DeploymentRequest(model=str(local), output=target, gpu="B200 x4", llmapi=llmapi, offline=True))
    check_repository(target)
    model_yaml = yaml.safe_load((target / "tensorrt_llm/1/model.yaml").read_text())
    assert model_yaml["model"] == "tensorrt_llm/1/checkpoint"
    linked = target / "tensorrt_llm/1/checkpoint/model-00001-of-00001.safetensors"
    assert linked.read_bytes() == b"weights" and linked.stat().st_ino == (local / linked.name).stat().st_ino
