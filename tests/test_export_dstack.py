"""dstack configurations: what `dstack apply` itself accepts, with the plan's values, and commands that reach bash byte
for byte (files written by heredoc included)."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os
import subprocess
import typing
from pathlib import Path

import gpuhunt
import pytest
import yaml
from dstack._internal.cli.services.configurators import get_apply_configurator_class, load_apply_configuration
from dstack._internal.core.errors import ConfigurationError
from dstack._internal.core.models.configurations import (
    ServiceConfiguration,
    TaskConfiguration,
    parse_apply_configuration,
)
from dstack._internal.core.models.profiles import StartupOrder, StopCriteria
from dstack._internal.core.models.volumes import InstanceMountPoint
from dstack._internal.core.services import is_valid_dstack_resource_name
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tritonrepo.errors import RenderError
from tritonrepo.export.dstack import (
    BUILD_FILE,
    DSTACK_GPUS,
    SERVE_FILE,
    DstackTarget,
    dstack_gpu,
    render_dstack,
    run_name,
    write_configurations,
)
from tritonrepo.hardware import known_profiles

DISTILL = "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
R1 = "deepseek-ai/DeepSeek-R1"
OPTIONS_PATH = "/workspace/extra-llm-api-options.yml"
R1_OPTIONS = """\
# Extra LLM-API options for trtllm-serve --extra_llm_api_options
enable_attention_dp: true
cuda_graph_config:
  enable_padding: true
  max_batch_size: 128
kv_cache_config:
  dtype: fp8
moe_config:
  backend: CUTLASS
stream_interval: 10
"""


# --- what `dstack apply -f FILE` does, here -------------------------------------------------------------------------
def dstack_apply(path: Path, monkeypatch) -> TaskConfiguration | ServiceConfiguration:
    """`dstack apply -f PATH` up to where it asks the server for a plan (cli/commands/apply.py, then
    configurators/run.py `get_plan`): load and validate the file with `load_apply_configuration`, then apply the
    (empty) command-line arguments, which fills the passed-through environment and interpolates the commands."""
    monkeypatch.chdir(path.parent)  # load_apply_configuration names the file relative to the working directory
    _, configuration = load_apply_configuration(path.name)
    configurator = get_apply_configurator_class(configuration.type)(api_client=None)
    args, unknown = configurator.get_parser().parse_known_args([])
    assert not unknown
    configurator.apply_args(configuration, args)
    return configuration


def _dstack_server_function(relative_path: str, name: str):
    """One function of the installed dstack server, compiled from its source: importing the server needs its extras
    (SQLAlchemy, ...), which this function does not use."""
    root = Path(importlib.util.find_spec("dstack").submodule_search_locations[0])
    tree = ast.parse((root / relative_path).read_text())
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == name)
    namespace = {symbol: getattr(typing, symbol) for symbol in typing.__all__}  # for its annotations
    exec(compile(ast.Module(body=[function], type_ignores=[]), relative_path, "exec"), namespace)
    return namespace[name]


# How the server makes one shell command line of a job's commands (it runs it as `<shell> -i -c LINE`).
join_shell_commands = _dstack_server_function(
    "_internal/server/services/jobs/configurators/base.py", "_join_shell_commands"
)


def run_like_dstack(configuration, cwd: Path, *, env: dict | None = None, prelude: str = "") -> None:
    """The job's command line as dstack runs it, `<shell> -i -c LINE`, minus the rc files of whoever runs the tests."""
    assert configuration.shell == "bash"
    cwd.mkdir(parents=True, exist_ok=True)
    line = prelude + join_shell_commands(list(configuration.commands))
    result = subprocess.run(
        ["bash", "--norc", "-i", "-c", line],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


# --- targets ----------------------------------------------------------------------------------------------------------
def dense_target() -> DstackTarget:
    """(a) A Llama-architecture distill: TensorRT-LLM engines built on, and served from, one A100 40GB."""
    gpu_name, memory = dstack_gpu("A100-40GB")
    return DstackTarget(
        name=DISTILL,
        model=DISTILL,
        gpu_name=gpu_name,
        gpu_memory_gb=memory,
        gpus_per_node=1,
        nodes=1,
        image="nvcr.io/nvidia/tritonserver:25.01-trtllm-python-py3",
        build_commands=(
            "pip install tritonrepo",
            f"tritonrepo build --model {DISTILL} --runtime tensorrtllm --output /root/.cache/tritonrepo/distill",
        ),
        serve_commands=(
            "tritonrepo serve /root/.cache/tritonrepo/distill --host 0.0.0.0 --openai-port 8000"
            " --served-model-name distill-8b",
        ),
        port=8000,
        openai_model_name="distill-8b",
        disk_gb=200,
        env=("HF_TOKEN",),
        volume_path="/root/.cache",
        plan_summary="tensorrtllm, bfloat16, tp 1, max_seq_len 8192, max_batch_size 256",
    )


def r1_target() -> DstackTarget:
    """(b) DeepSeek-R1 on 8x H200 with trtllm-serve's PyTorch backend: nothing to build, an options file inline."""
    gpu_name, memory = dstack_gpu("H200")
    return DstackTarget(
        name=R1,
        model=R1,
        gpu_name=gpu_name,
        gpu_memory_gb=memory,
        gpus_per_node=8,
        nodes=1,
        image="nvcr.io/nvidia/tensorrt-llm/release:1.0.0",
        build_commands=(),
        serve_commands=(
            f"trtllm-serve {R1} --backend pytorch --host 0.0.0.0 --port 8000 --tp_size 8 --ep_size 8"
            f" --max_batch_size 128 --max_num_tokens 16384 --kv_cache_free_gpu_memory_fraction 0.9"
            f" --extra_llm_api_options {OPTIONS_PATH}",
        ),
        port=8000,
        openai_model_name=R1,
        disk_gb=2000,
        env=("HF_TOKEN", "HF_HUB_ENABLE_HF_TRANSFER=1"),
        files=((OPTIONS_PATH, R1_OPTIONS),),
        volume_path="/root/.cache/huggingface",
        shm_size_gb=32,
        plan_summary="pytorch backend, fp8, tp 8, ep 8, MoE backend CUTLASS",
    )


def multi_node_target() -> DstackTarget:
    """(c) DeepSeek-R1 on 2 nodes of 8x H100 80GB: the master starts all 16 ranks through MPI."""
    gpu_name, memory = dstack_gpu("H100-80GB")
    launch = (
        "mpirun --allow-run-as-root --hostfile $DSTACK_MPI_HOSTFILE -np $DSTACK_GPUS_NUM -npernode"
        " $DSTACK_GPUS_PER_NODE -x HF_TOKEN trtllm-llmapi-launch"
    )
    return dataclasses.replace(
        r1_target(),
        gpu_name=gpu_name,
        gpu_memory_gb=memory,
        nodes=2,
        serve_commands=(
            f"{launch} trtllm-serve {R1} --backend pytorch --host 0.0.0.0 --port 8000 --tp_size 16 --ep_size 16"
            f" --extra_llm_api_options {OPTIONS_PATH}",
        ),
        plan_summary="pytorch backend, fp8, tp 16, ep 16, 2 nodes",
    )


def rendered(target: DstackTarget, folder: Path) -> dict[str, Path]:
    return {path.name: path for path in write_configurations(folder, render_dstack(target))}


def assert_machine(configuration, target: DstackTarget, *, gpu: str, memory_gb: int, count: int) -> None:
    resources = configuration.resources
    assert resources.gpu.name == [gpu]
    assert (resources.gpu.count.min, resources.gpu.count.max) == (count, count)
    assert (resources.gpu.memory.min, resources.gpu.memory.max) == (memory_gb, memory_gb)
    assert (resources.disk.size.min, resources.disk.size.max) == (target.disk_gb, None)
    assert configuration.image == target.image
    assert configuration.shell == "bash"
    assert configuration.volumes == [
        InstanceMountPoint(instance_path=f"/dstack-cache{target.volume_path}", path=target.volume_path, optional=True)
    ]


def assert_header(text: str, file_name: str) -> None:
    assert text.startswith("# Generated by tritonrepo ")
    assert f"dstack apply -f {file_name}" in text
    assert "From the plan:" in text


# --- (a) dense engine, build and serve on 1x A100 40GB ----------------------------------------------------------------
def test_dense_engine_build_task_and_service_on_one_a100(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    target = dense_target()
    paths = rendered(target, tmp_path)
    assert sorted(paths) == [BUILD_FILE, SERVE_FILE]
    texts = {name: path.read_text() for name, path in paths.items()}
    for name, text in texts.items():
        assert_header(text, name)
        assert yaml.safe_load(text)["resources"]["gpu"] == "A100:40GB:1"

    build = dstack_apply(paths[BUILD_FILE], monkeypatch)
    serve = dstack_apply(paths[SERVE_FILE], monkeypatch)

    assert isinstance(build, TaskConfiguration) and isinstance(serve, ServiceConfiguration)
    assert (build.name, serve.name) == ("deepseek-r1-distill-llama-8b-build", "deepseek-r1-distill-llama-8b")
    assert is_valid_dstack_resource_name(build.name) and is_valid_dstack_resource_name(serve.name)
    assert build.nodes is None  # one node
    for configuration in (build, serve):
        assert_machine(configuration, target, gpu="A100", memory_gb=40, count=1)
        assert configuration.env.as_dict() == {"HF_TOKEN": "hf_test_token"}
        assert configuration.resources.shm_size is None
    assert build.commands == list(target.build_commands)
    assert serve.commands == list(target.serve_commands)
    assert serve.port.container_port == 8000
    assert (serve.model.name, serve.model.format, serve.model.type) == ("distill-8b", "openai", "chat")
    assert "stays in /root/.cache, an instance volume" in texts[BUILD_FILE]


# --- (b) DeepSeek-R1 on 8x H200, nothing to build ---------------------------------------------------------------------
def test_deepseek_r1_service_on_eight_h200_with_an_inline_options_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    target = r1_target()
    paths = rendered(target, tmp_path / "configs")
    assert sorted(paths) == [SERVE_FILE]  # the PyTorch backend builds nothing
    text = paths[SERVE_FILE].read_text()
    assert_header(text, SERVE_FILE)
    assert yaml.safe_load(text)["resources"] == {"gpu": "H200:141GB:8", "disk": "2000GB..", "shm_size": "32GB"}

    serve = dstack_apply(paths[SERVE_FILE], monkeypatch)

    assert isinstance(serve, ServiceConfiguration) and serve.name == "deepseek-r1"
    assert_machine(serve, target, gpu="H200", memory_gb=141, count=8)
    assert serve.resources.shm_size == 32
    assert serve.env.as_dict() == {"HF_TOKEN": "hf_test_token", "HF_HUB_ENABLE_HF_TRANSFER": "1"}
    assert serve.port.container_port == 8000 and serve.model.name == R1
    assert len(serve.commands) == 2 and serve.commands[1] == target.serve_commands[0]
    assert OPTIONS_PATH in serve.commands[0]
    # The same configuration with the options file somewhere this test may write: bash makes it byte for byte.
    local = dataclasses.replace(
        target, files=(("workspace/extra-llm-api-options.yml", R1_OPTIONS),), serve_commands=("true",)
    )
    run_like_dstack(dstack_apply(rendered(local, tmp_path / "local")[SERVE_FILE], monkeypatch), tmp_path / "run")
    assert (tmp_path / "run/workspace/extra-llm-api-options.yml").read_bytes() == R1_OPTIONS.encode()


def test_passed_through_env_comes_from_the_shell_that_runs_dstack_apply(tmp_path, monkeypatch):
    path = rendered(r1_target(), tmp_path)[SERVE_FILE]
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(ConfigurationError, match="HF_TOKEN"):
        dstack_apply(path, monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_from_here")
    assert dstack_apply(path, monkeypatch).env.as_dict()["HF_TOKEN"] == "hf_from_here"


# --- (c) 2 nodes x 8 H100 -----------------------------------------------------------------------------------------
def test_two_nodes_of_eight_h100_run_as_a_distributed_task(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    target = multi_node_target()
    text = rendered(target, tmp_path)[SERVE_FILE].read_text()
    assert "A task, not a service" in text
    assert yaml.safe_load(text)["nodes"] == 2

    task = dstack_apply(tmp_path / SERVE_FILE, monkeypatch)

    assert isinstance(task, TaskConfiguration) and task.name == "deepseek-r1"
    assert task.nodes == 2 and task.nodes_num == 2
    assert (task.startup_order, task.stop_criteria) == (StartupOrder.WORKERS_FIRST, StopCriteria.MASTER_DONE)
    assert [(port.local_port, port.container_port) for port in task.ports] == [(8000, 8000)]
    assert_machine(task, target, gpu="H100", memory_gb=80, count=8)
    assert task.commands[-1] == target.serve_commands[0]  # $DSTACK_* reach bash as written
    assert any("$DSTACK_NODE_RANK" in command for command in task.commands)


def test_a_dstack_service_cannot_span_nodes():
    """Why several nodes render as a task: dstack's own model refuses `nodes` on a service."""
    service = {"type": "service", "port": 8000, "commands": ["serve"]}
    assert isinstance(parse_apply_configuration(service), ServiceConfiguration)
    with pytest.raises(ConfigurationError, match="nodes"):
        parse_apply_configuration({**service, "nodes": 2})


def test_on_several_nodes_every_node_writes_the_files_and_only_the_master_serves(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    local = dataclasses.replace(
        multi_node_target(),
        files=(("workspace/extra-llm-api-options.yml", R1_OPTIONS),),
        serve_commands=("echo master-serves > role",),
    )
    task = dstack_apply(rendered(local, tmp_path / "configs")[SERVE_FILE], monkeypatch)
    # A worker's wait must not hold the test: `sleep` records its argument and ends the script.
    prelude = 'sleep() { echo "worker-waits $*" > role; exit 0; }\n'
    for rank, role in (("0", "master-serves\n"), ("1", "worker-waits infinity\n")):
        node = tmp_path / f"node{rank}"
        run_like_dstack(task, node, env={"DSTACK_NODE_RANK": rank}, prelude=prelude)
        assert (node / "role").read_text() == role
        assert (node / "workspace/extra-llm-api-options.yml").read_bytes() == R1_OPTIONS.encode()


# --- files and commands reach bash byte for byte ------------------------------------------------------------------
CONTENTS = {
    "r1-options": R1_OPTIONS,
    "shell-syntax": "home: $HOME ${HOME} pid: $$ three: $$$ `date` $(id -u) 'single' \"double\" !! !$ \\n \\\n",
    "leading-dollars": "$$ first\n$$$\n",
    "delimiter-line": "before\nTRITONREPO_EOF\nafter\n",
    "no-final-newline": "the last line has no newline $$ \\",
    "empty": "",
    "only-newlines": "\n\n",
    "crlf-tabs-spaces": "a\r\n\tb  \r\n  c   \n",
    "unicode": "ü — 🙂\n",
}


@pytest.mark.parametrize("content", CONTENTS.values(), ids=CONTENTS.keys())
def test_files_and_commands_reach_bash_byte_for_byte(content, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    target = dataclasses.replace(
        r1_target(),
        files=(("conf/extra.yml", content),),
        serve_commands=("printf '%s\\n' '$$ stays two' > serve-saw",),  # dstack turns a leading $$ into $
    )
    serve = dstack_apply(rendered(target, tmp_path / "configs")[SERVE_FILE], monkeypatch)
    run_like_dstack(serve, tmp_path / "run")
    assert (tmp_path / "run/conf/extra.yml").read_bytes() == content.encode()
    assert (tmp_path / "run/serve-saw").read_text() == "$$ stays two\n"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet="$ab{}()'\"\\ \n", min_size=1, max_size=24).filter(lambda s: s.strip() and "${{" not in s))
def test_any_command_reaches_dstack_unchanged(tmp_path_factory, monkeypatch, command):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    target = dataclasses.replace(r1_target(), files=(), serve_commands=(command,))
    serve = dstack_apply(rendered(target, tmp_path_factory.mktemp("configs"))[SERVE_FILE], monkeypatch)
    assert serve.commands == [command]


# --- names ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "given_name, expected",
    [
        ("deepseek-ai/DeepSeek-R1", "deepseek-r1"),
        ("DeepSeek-AI/DeepSeek-R1_Distill.Llama 8B!!", "deepseek-r1-distill-llama-8b"),
        ("/models/Llama-3.1-8B-Instruct/", "llama-3-1-8b-instruct"),
        ("01-ai/Yi-34B", "yi-34b"),
        ("01-ai/01-model", "model-01-model"),
        ("", "model"),
        ("x", "x-model"),
        ("Ü", "model"),
        ("a" * 100, "a" * 35),
        ("b" * 34 + "-c", "b" * 34),
    ],
)
def test_run_names_are_valid_for_dstack(given_name, expected):
    assert run_name(given_name) == expected
    assert is_valid_dstack_resource_name(expected) and is_valid_dstack_resource_name(expected + "-build")


def test_an_invalid_name_is_sanitised_in_the_target_and_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    target = dataclasses.replace(dense_target(), name="My Models/Llama 3.1 (8B) — v2!")
    assert target.name == "llama-3-1-8b-v2"
    paths = rendered(target, tmp_path)
    assert dstack_apply(paths[SERVE_FILE], monkeypatch).name == "llama-3-1-8b-v2"
    assert dstack_apply(paths[BUILD_FILE], monkeypatch).name == "llama-3-1-8b-v2-build"


# --- refusals -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, message",
    [
        ({"nodes": 0}, "nodes must be a positive integer"),
        ({"gpu_name": "H100-80GB"}, "gpu_name"),
        ({"serve_commands": ()}, "serve_commands must not be empty"),
        ({"files": (("a.yml", "x: ${{ run.args }}\n"),)}, "interpolation"),
        ({"files": (("a.yml", "x\n"), ("a.yml", "y\n"))}, "appears twice"),
        ({"env": ("NOT A NAME",)}, "env entry"),
        ({"volume_path": "relative/cache"}, "volume_path"),
        ({"port": 70000}, "port"),
    ],
)
def test_targets_that_cannot_render_are_refused(change, message):
    with pytest.raises(RenderError, match=message):
        dataclasses.replace(r1_target(), **change)


def test_write_configurations_refuses_to_overwrite_other_content(tmp_path):
    out = tmp_path / "dstack"
    first = render_dstack(dense_target())
    assert write_configurations(out, first) == [out / BUILD_FILE, out / SERVE_FILE]
    assert {path.name: path.read_text() for path in out.iterdir()} == first
    write_configurations(out, first)  # the same content again: nothing to refuse

    (out / SERVE_FILE).write_text("# edited by hand\n")
    second = render_dstack(
        dataclasses.replace(dense_target(), image="nvcr.io/nvidia/tritonserver:25.04-trtllm-python-py3")
    )
    assert second[BUILD_FILE] != first[BUILD_FILE]
    with pytest.raises(RenderError, match="not overwriting"):
        write_configurations(out, second)
    # Refused before writing anything: the build file is still the first one.
    assert (out / SERVE_FILE).read_text() == "# edited by hand\n"
    assert (out / BUILD_FILE).read_text() == first[BUILD_FILE]

    write_configurations(out, second, force=True)
    assert {path.name: path.read_text() for path in out.iterdir()} == second  # and no temp file left behind
    with pytest.raises(RenderError, match="not a plain file name"):
        write_configurations(out, {"../serve.dstack.yml": "type: task\n"})


# --- GPU names ----------------------------------------------------------------------------------------------------
def test_gpu_names_are_those_of_dstacks_catalog():
    catalog = {(gpu.name, gpu.memory) for gpu in gpuhunt.KNOWN_NVIDIA_GPUS}
    profiles = {profile.name for profile in known_profiles()}
    for profile, gpu in DSTACK_GPUS.items():
        assert profile in profiles
        assert gpu in catalog, (profile, gpu)
    assert dstack_gpu("H100-80GB") == ("H100", 80)
    with pytest.raises(RenderError, match="H20"):
        dstack_gpu("H20")  # a tritonrepo profile that dstack's catalog does not list


# --- `tritonrepo export dstack`: from a plan to files dstack accepts ---------------------------------------------------
def _export(tmp_path: Path, monkeypatch, *args: str) -> Path:
    from click.testing import CliRunner

    from tritonrepo.cli.main import cli

    out = tmp_path / "dstack"
    monkeypatch.setenv("HF_TOKEN", "hf_test")  # dstack apply reads passed-through variables from its shell
    result = CliRunner().invoke(cli, ["export", "dstack", "--offline", "--output", str(out), *args])
    assert result.exit_code == 0, result.output
    return out


def test_export_of_deepseek_r1_on_eight_h200_is_a_trtllm_serve_service(tmp_path, monkeypatch):
    from tritonrepo.hardware import parse_gpu
    from tritonrepo.planning.llmapi import plan_llmapi
    from tritonrepo.planning.request import DeploymentRequest
    from tritonrepo.pytorch_path.llm_options import options_yaml
    from tritonrepo.source.catalog import lookup

    out = _export(tmp_path, monkeypatch, "--model", "DeepSeek-R1", "--gpu", "H200 x8")
    assert sorted(p.name for p in out.iterdir()) == [SERVE_FILE]  # nothing to build on the PyTorch path
    service = dstack_apply(out / SERVE_FILE, monkeypatch)
    assert isinstance(service, ServiceConfiguration) and service.port.container_port == 8000
    assert service.image.startswith("nvcr.io/nvidia/tensorrt-llm/release:")
    assert str(service.resources.gpu.name) in ("['H200']", "H200") and service.resources.gpu.count.min == 8
    commands = list(service.commands)
    serve = next(c for c in commands if c.startswith("trtllm-serve "))
    assert (
        "--tp_size 8 --ep_size 8" in serve and "--extra_llm_api_options /workspace/extra-llm-api-options.yml" in serve
    )
    entry = lookup("DeepSeek-R1")
    plan = plan_llmapi(entry.hf_id, entry.facts, parse_gpu("H200 x8"), DeploymentRequest(entry.name),
                       reasoning_parser="deepseek-r1", display_name=entry.name)  # fmt: skip
    assert options_yaml(plan) in commands[0]  # the options file, written inline before the server starts


def test_export_over_two_h100_nodes_is_a_task_with_one_mpirun(tmp_path, monkeypatch):
    out = _export(tmp_path, monkeypatch, "--model", "DeepSeek-R1", "--gpu", "H100-80GB x16")
    task = dstack_apply(out / SERVE_FILE, monkeypatch)
    assert isinstance(task, TaskConfiguration) and task.nodes == 2
    launch = next(c for c in task.commands if "mpirun" in c)
    assert "--hostfile $DSTACK_MPI_HOSTFILE" in launch and "trtllm-llmapi-launch trtllm-serve" in launch
    assert "--tp_size 16" in launch


def test_export_of_a_distill_builds_engines_in_a_task_and_serves_with_tritonrepo(tmp_path, monkeypatch):
    out = _export(
        tmp_path, monkeypatch, "--model", "DeepSeek-R1-Distill-Llama-8B", "--gpu", "H100-80GB", "--max-batch-size", "64"
    )
    build_task = dstack_apply(out / BUILD_FILE, monkeypatch)
    service = dstack_apply(out / SERVE_FILE, monkeypatch)
    build_line = next(c for c in build_task.commands if c.startswith("tritonrepo build"))
    assert build_line.startswith("tritonrepo build --model DeepSeek-R1-Distill-Llama-8B --max-batch-size 64")
    output = build_line.split("--output ")[1]
    assert any(c.startswith(f"tritonrepo serve {output} --host 0.0.0.0 --openai-port 8000") for c in service.commands)
    assert build_task.image.startswith("nvcr.io/nvidia/tritonserver:") and build_task.image.endswith(
        "-trtllm-python-py3"
    )


def test_export_with_serving_triton_builds_and_serves_the_llmapi_repository_in_the_service(tmp_path, monkeypatch):
    out = _export(
        tmp_path,
        monkeypatch,
        "--model",
        "DeepSeek-R1",
        "--gpu",
        "H200 x8",
        "--serving",
        "triton",
        "--profile",
        "latency",
    )
    service = dstack_apply(out / SERVE_FILE, monkeypatch)
    lines = [c for c in service.commands if c.startswith("tritonrepo ")]
    assert lines[0].startswith("tritonrepo build --model DeepSeek-R1 ")
    assert "--serving triton" in lines[0] and "--profile latency" in lines[0]
    assert lines[1].startswith("tritonrepo serve /root/.cache/tritonrepo-build/DeepSeek-R1")
    assert "trtllm-python-py3" in service.image  # the Triton container with the llmapi model's TensorRT-LLM
