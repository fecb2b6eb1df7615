"""`tritonrepo export dstack DIR` on a Dynamo deployment folder: what dstack's own loader accepts, and scripts that
start the right processes on the right node, run here with stand-ins for etcd, NATS and python3 (named as such)."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from dstack._internal.core.models.configurations import ServiceConfiguration, TaskConfiguration
from dstack._internal.core.models.profiles import StartupOrder, StopCriteria
from dstack._internal.utils.interpolator import VariablesInterpolator
from test_export_dstack import dstack_apply, run_like_dstack

from tritonrepo.cli.main import cli
from tritonrepo.export.dstack import SERVE_FILE
from tritonrepo.export.from_dynamo import NODE_SCRIPT, WORKDIR, target_from_folder

R1 = "deepseek-ai/DeepSeek-R1"


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _build(tmp_path: Path, name: str, *args: str) -> Path:
    folder = tmp_path / name
    _invoke("-q", "build", *args, "--serving", "dynamo", "--output", str(folder))
    return folder


def _export(tmp_path: Path, folder: Path) -> Path:
    out = tmp_path / f"{folder.name}-dstack"
    _invoke("export", "dstack", str(folder), "--output", str(out))
    assert sorted(p.name for p in out.iterdir()) == [SERVE_FILE]  # Dynamo builds nothing
    return out / SERVE_FILE


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dynamo")
    return {
        "tiny": _build(root, "tiny", "--model", "tiny-llama", "--workers", "2", "--gpu", "L4 x2"),
        "tiny-no-gpu": _build(root, "tiny-no-gpu", "--model", "tiny-llama", "--workers", "2"),
        "r1": _build(root, "r1", "--model", R1, "--disagg", "--gpu", "H200 x16"),
    }


def _stand_ins(folder: Path) -> Path:
    """Stand-ins for etcd, nats-server and python3 (Dynamo, TensorRT-LLM): each logs its GPUs and argv, then runs
    until all the expected processes have started (a launch script ends when its first process does)."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("etcd", "nats-server", "python3"):
        path = bin_dir / name
        path.write_text(
            f'#!/bin/sh\necho "{name} GPUS=${{CUDA_VISIBLE_DEVICES:-}} $*" >> "$STAND_IN_LOG"\n'
            'for _ in $(seq 400); do [ "$(wc -l < "$STAND_IN_LOG")" -ge "$STAND_IN_EXPECT" ] && exit 0; sleep 0.05; done\n'
            "exit 1\n"
        )
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def _local(configuration, root: Path):
    """The configuration with /workspace/dynamo moved under `root`, so bash here may write and run it."""
    local = f"{root}{WORKDIR}"
    return configuration.model_copy(
        update={"commands": [command.replace(WORKDIR, local) for command in configuration.commands]}
    )


def _run(configuration, tmp_path: Path, expect: int, rank: str | None = None) -> list[str]:
    run_dir = tmp_path / f"run-{rank}"
    bin_dir = _stand_ins(run_dir)
    log = run_dir / "processes.log"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "STAND_IN_LOG": str(log), "STAND_IN_EXPECT": str(expect)}
    if rank is not None:
        env.update(DSTACK_NODE_RANK=rank, DSTACK_MASTER_NODE_IP="127.0.0.1")
    run_like_dstack(_local(configuration, run_dir), run_dir, env=env)
    return log.read_text().splitlines()


def test_one_node_is_a_service_running_the_single_node_launch(folders, tmp_path, monkeypatch):
    service = dstack_apply(_export(tmp_path, folders["tiny"]), monkeypatch)

    assert isinstance(service, ServiceConfiguration) and service.name == "tiny-llama"
    assert service.port.container_port == 8000  # the frontend's --http-port
    assert service.model.name == "tiny-llama"
    assert service.image == "nvcr.io/nvidia/ai-dynamo/tensorrtllm-runtime:1.6.1"  # the manifest's image
    assert service.resources.gpu.name == ["L4"] and service.resources.gpu.count.min == 2
    # The token is a dstack secret, filled in by the server (its own interpolator), never written in the YAML.
    token = service.env.as_dict()["HF_TOKEN"]
    assert token == "${{ secrets.hf_token }}"
    assert VariablesInterpolator({"secrets": {"hf_token": "hf_x"}}).interpolate_or_error(token) == "hf_x"
    # The embedded model's folder exists only here: dstack uploads it to the same path.
    model_path = yaml.safe_load((folders["tiny"] / "plan.json").read_text())["model_path"]
    assert [(f.local_path, f.path) for f in service.files] == [(model_path, model_path)]
    assert service.commands[-1] == f"DISCOVERY=file bash {WORKDIR}/launch/single-node.sh"

    processes = _run(service, tmp_path, 3)

    workers = [line for line in processes if "dynamo.trtllm" in line]
    assert sorted(w.split()[1] for w in workers) == ["GPUS=0", "GPUS=1"]
    assert all("--discovery-backend file" in w and "--extra-engine-args engine/agg.yaml" in w for w in workers)
    assert any("dynamo.frontend --http-port 8000 --router-mode kv" in line for line in processes)
    written = tmp_path / f"run-None{WORKDIR}"
    for relative in ("engine/agg.yaml", "launch/single-node.sh"):
        assert (written / relative).read_bytes() == (folders["tiny"] / relative).read_bytes()


def test_several_nodes_are_a_task_whose_head_runs_etcd_nats_and_the_frontend(folders, tmp_path, monkeypatch):
    task = dstack_apply(_export(tmp_path, folders["r1"]), monkeypatch)

    assert isinstance(task, TaskConfiguration) and task.name == "deepseek-r1"
    assert task.nodes == 2
    assert (task.startup_order, task.stop_criteria) == (StartupOrder.MASTER_FIRST, StopCriteria.MASTER_DONE)
    assert [port.container_port for port in task.ports] == [8000]
    assert task.resources.gpu.name == ["H200"] and task.resources.gpu.count.min == 8
    assert task.resources.shm_size == 32
    assert task.files == []  # a Hub id: the workers download it
    assert task.commands[-1] == f"bash {WORKDIR}/{NODE_SCRIPT}"
    assert not any("sleep infinity" in command for command in task.commands)  # every node serves

    try:  # the script waits for etcd on the head's port 2379 before the workers start
        etcd = socket.create_server(("127.0.0.1", 2379))
    except OSError:
        pytest.skip("port 2379 is taken on this machine")
    with etcd:
        head, other = _run(task, tmp_path, 4, "0"), _run(task, tmp_path, 1, "1")

    assert sorted(line.split()[0] for line in head) == ["etcd", "nats-server", "python3", "python3"]
    prefill = next(line for line in head if "dynamo.trtllm" in line)
    assert "--disaggregation-mode prefill" in prefill and prefill.split()[1] == "GPUS=0,1,2,3,4,5,6,7"
    frontend = next(line for line in head if "dynamo.frontend" in line)
    assert "--router-mode kv" in frontend and "--discovery-backend etcd" in frontend
    assert len(other) == 1 and "--disaggregation-mode decode" in other[0] and "--discovery-backend etcd" in other[0]
    assert other[0].split()[1] == "GPUS=0,1,2,3,4,5,6,7"
    for relative in ("engine/prefill.yaml", "engine/decode.yaml"):
        assert (tmp_path / f"run-1{WORKDIR}" / relative).read_bytes() == (folders["r1"] / relative).read_bytes()


def test_a_folder_planned_without_gpus_is_refused_with_the_fix(folders, tmp_path):
    result = CliRunner().invoke(cli, ["export", "dstack", str(folders["tiny-no-gpu"]), "-o", str(tmp_path / "out")])
    assert result.exit_code == 3, result.output
    assert "planned without GPUs" in result.output and "--gpu" in result.output
    assert not (tmp_path / "out").exists()


def test_workers_spanning_nodes_are_refused_and_pointed_at_slurm(tmp_path):
    folder = _build(tmp_path, "r1-h100", "--model", R1, "--disagg", "--gpu", "H100-80GB x32")
    with pytest.raises(Exception, match="span several nodes") as error:
        target_from_folder(folder)
    assert "multi-node.sbatch" in str(error.value)


def test_a_folder_that_is_not_a_dynamo_deployment_and_mixed_arguments_are_refused(folders, tmp_path):
    result = CliRunner().invoke(cli, ["export", "dstack", str(tmp_path)])
    assert result.exit_code == 3 and "not a Dynamo deployment folder" in result.output
    result = CliRunner().invoke(cli, ["export", "dstack", str(folders["r1"]), "--model", R1])
    assert result.exit_code == 2 and "DEPLOYMENT already holds" in result.output
    result = CliRunner().invoke(cli, ["export", "dstack", "--model", R1])
    assert result.exit_code == 2 and "--gpu" in result.output
