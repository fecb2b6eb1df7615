"""The real adapter, subprocesses and all, against the TensorRT-LLM TEST DOUBLE (tests/doubles/)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from doubles.trtllm_double import install
from test_trtllm_commands import SEED_BUILD_FLAGS, flags, seed_spec

from tritonrepo.errors import EngineBuildError
from tritonrepo.trtllm.adapter import InstalledTensorRTLLM, TensorRTLLM
from tritonrepo.trtllm.versions import installed_version

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def hf_dir(tmp_path) -> Path:
    folder = tmp_path / "DeepSeek-R1-Distill-Llama-8B"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    return folder


@pytest.fixture
def double(monkeypatch, tmp_path):
    return install(monkeypatch, tmp_path, version="0.17.0")


def run_both(spec, lines: list[str] | None = None) -> list[str]:
    lines = [] if lines is None else lines
    trtllm: TensorRTLLM = InstalledTensorRTLLM()
    trtllm.convert(spec, lines.append)
    trtllm.build(spec, lines.append)
    return lines


def leftovers(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.name.endswith((".partial", ".old", ".request.json")))


def test_version_comes_from_the_installed_wheel(double):
    assert InstalledTensorRTLLM().version() == "0.17.0"


def test_seed_recipe_end_to_end(double, hf_dir, tmp_path):
    spec = seed_spec(tmp_path)
    lines = run_both(spec)

    assert sorted(p.name for p in spec.checkpoint_dir.iterdir()) == ["config.json", "rank0.safetensors"]
    assert sorted(p.name for p in spec.engine_dir.iterdir()) == ["config.json", "rank0.engine"]
    assert leftovers(tmp_path) == []
    assert "converted rank 1/1" in lines and "[TRT-LLM] [I] Engine for rank 0 saved" in lines

    (converted,) = double.events("from_hugging_face")
    assert converted["cls"] == "LLaMAForCausalLM" and converted["dtype"] == "bfloat16"
    assert converted["hf_model_or_dir"] == str(hf_dir)
    (build,) = double.events("trtllm-build")
    got = flags(build["argv"])
    assert {
        **SEED_BUILD_FLAGS,
        "--checkpoint_dir": str(spec.checkpoint_dir),
        "--output_dir": str(spec.engine_dir) + ".partial",  # renamed into place after success
    }.items() <= got.items()

    log = spec.log_path.read_text()
    assert "==> checkpoint conversion (TensorRT-LLM 0.17.0)" in log and "==> trtllm-build (TensorRT-LLM 0.17.0)" in log
    assert "converted rank 1/1" in log and "Engine for rank 0 saved" in log


def test_tp4_converts_four_ranks_and_builds_with_workers(double, hf_dir, tmp_path):
    spec = seed_spec(tmp_path, tp_size=4)
    lines = run_both(spec)

    mappings = [e["mapping"] for e in double.events("from_hugging_face")]
    assert [(m["world_size"], m["rank"], m["tp_size"], m["pp_size"]) for m in mappings] == [
        (4, rank, 4, 1) for rank in range(4)
    ]
    saves = double.events("save_checkpoint")
    assert [(s["rank"], s["save_config"]) for s in saves] == [(0, True), (1, False), (2, False), (3, False)]
    assert [line for line in lines if line.startswith("converted rank")] == [
        f"converted rank {i}/4" for i in range(1, 5)
    ]
    assert flags(double.events("trtllm-build")[0]["argv"])["--workers"] == "4"
    assert {f"rank{i}.engine" for i in range(4)} <= {p.name for p in spec.engine_dir.iterdir()}


def test_qwen2_uses_the_qwen_class(double, hf_dir, tmp_path):
    spec = seed_spec(tmp_path, architecture="Qwen2ForCausalLM", dtype="float16", gemm_plugin="float16")
    InstalledTensorRTLLM().convert(spec, lambda line: None)
    (converted,) = double.events("from_hugging_face")
    assert converted["cls"] == "QWenForCausalLM" and converted["dtype"] == "float16"


def test_fp8_calibrates_once_with_fp8_weights_and_kv_cache(double, hf_dir, tmp_path):
    spec = seed_spec(tmp_path, tp_size=2, quantization="fp8", gemm_plugin="auto")
    lines = run_both(spec)

    assert double.events("from_hugging_face") == []  # calibrated formats go through quantize, not per rank
    (quantize,) = double.events("quantize")
    assert quantize["quant_config"] == {"quant_algo": "FP8", "kv_cache_quant_algo": "FP8"}
    assert (quantize["mapping"]["world_size"], quantize["mapping"]["tp_size"]) == (2, 2)
    assert quantize["output_dir"] == str(spec.checkpoint_dir) + ".partial"
    assert quantize["calib_dataset"] == "cnn_dailymail"
    assert "converted rank 2/2" in lines
    got = flags(double.events("trtllm-build")[0]["argv"])
    assert got["--use_fp8_context_fmha"] == "enable" and got["--kv_cache_type"] == "paged"


def test_fp8_kv_only_quantizes_the_kv_cache(double, hf_dir, tmp_path):
    spec = seed_spec(tmp_path, quantization="fp8_kv", use_paged_context_fmha=False)
    InstalledTensorRTLLM().convert(spec, lambda line: None)
    (quantize,) = double.events("quantize")
    assert quantize["quant_config"] == {"quant_algo": None, "kv_cache_quant_algo": "FP8"}


def test_version_without_kv_cache_type_builds_with_the_older_flag(monkeypatch, hf_dir, tmp_path):
    double = install(monkeypatch, tmp_path, version="0.12.0")
    lines = run_both(seed_spec(tmp_path))  # the double's argparse, like 0.12's, has no --kv_cache_type
    assert "note: TensorRT-LLM 0.12.0 is not shipped by a supported container; it may not work" in lines
    got = flags(double.events("trtllm-build")[0]["argv"])
    assert got["--paged_kv_cache"] == "enable" and "--kv_cache_type" not in got


def test_failing_convert_reports_the_tail_and_leaves_no_checkpoint(double, hf_dir, tmp_path):
    double.fail("convert")
    spec = seed_spec(tmp_path, tp_size=2)
    with pytest.raises(EngineBuildError) as caught:
        InstalledTensorRTLLM().convert(spec, lambda line: None)
    message = str(caught.value)
    assert "checkpoint conversion failed with exit code 1" in message
    assert "CUDA out of memory while loading weights for rank 1 (TEST DOUBLE)" in message
    assert str(spec.log_path) in message and caught.value.log_path == str(spec.log_path)
    assert not spec.checkpoint_dir.exists() and leftovers(tmp_path) == []
    assert len(double.events("save_checkpoint")) == 1  # rank 0 had been written, then removed with the staging
    assert "Traceback" in spec.log_path.read_text()


def test_failing_build_leaves_no_engine_and_logs_everything(double, hf_dir, tmp_path):
    spec = seed_spec(tmp_path)
    trtllm = InstalledTensorRTLLM()
    trtllm.convert(spec, lambda line: None)
    double.fail("build")
    with pytest.raises(EngineBuildError) as caught:
        trtllm.build(spec, lambda line: None)
    message = str(caught.value)
    assert "trtllm-build failed with exit code 1" in message
    assert "Engine building failed: out of memory (TEST DOUBLE)" in message
    assert "build step 24" in message and "build step 0\n" not in message  # only the last lines
    assert not spec.engine_dir.exists() and leftovers(tmp_path) == []
    assert spec.checkpoint_dir.is_dir()  # the previous stage's output stays
    log = spec.log_path.read_text()
    assert all(f"TEST DOUBLE build step {i}\n" in log for i in range(25))
    assert "Engine building failed" in log and "<== trtllm-build exit code 1" in log


def test_missing_trtllm_build_names_the_container(monkeypatch, hf_dir, tmp_path):
    install(monkeypatch, tmp_path, version="0.17.0", trtllm_build=False)
    spec = seed_spec(tmp_path)
    trtllm = InstalledTensorRTLLM()
    trtllm.convert(spec, lambda line: None)
    with pytest.raises(EngineBuildError, match=r"trtllm-build is not on PATH") as caught:
        trtllm.build(spec, lambda line: None)
    assert "nvcr.io/nvidia/tritonserver:25.01-trtllm-python-py3" in str(caught.value)
    assert not spec.engine_dir.exists()


def test_missing_tensorrt_llm_names_the_newest_container(monkeypatch, tmp_path):
    if installed_version() is not None:
        pytest.skip("a real TensorRT-LLM is installed here")
    monkeypatch.delenv("PYTHONPATH", raising=False)
    with pytest.raises(EngineBuildError, match="TensorRT-LLM is not installed") as caught:
        InstalledTensorRTLLM().version()
    assert "nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3" in str(caught.value)


def test_engine_missing_a_rank_is_an_error(double, hf_dir, tmp_path):
    spec = seed_spec(tmp_path, tp_size=2)
    trtllm = InstalledTensorRTLLM()
    trtllm.convert(spec, lambda line: None)
    double.drop_engine_rank(1)
    with pytest.raises(EngineBuildError, match=r"lacks rank1\.engine"):
        trtllm.build(spec, lambda line: None)
    assert not spec.engine_dir.exists() and leftovers(tmp_path) == []


def test_rebuild_replaces_and_a_failed_rebuild_keeps_the_previous_engine(double, hf_dir, tmp_path):
    spec = seed_spec(tmp_path)
    run_both(spec)
    first = (spec.engine_dir / "config.json").read_text()
    run_both(replace(spec, max_batch_size=64))
    second = json.loads((spec.engine_dir / "config.json").read_text())
    assert second["build_config"]["max_batch_size"] == 64 and json.loads(first)["build_config"]["max_batch_size"] == 256
    double.fail("build")
    with pytest.raises(EngineBuildError):
        InstalledTensorRTLLM().build(spec, lambda line: None)
    assert json.loads((spec.engine_dir / "config.json").read_text()) == second
    assert leftovers(tmp_path) == []


def test_refuses_to_replace_a_folder_that_is_not_an_engine(double, hf_dir, tmp_path):
    spec = seed_spec(tmp_path)
    InstalledTensorRTLLM().convert(spec, lambda line: None)
    spec.engine_dir.mkdir()
    (spec.engine_dir / "notes.txt").write_text("mine")
    with pytest.raises(EngineBuildError, match="not a TensorRT-LLM engine folder"):
        InstalledTensorRTLLM().build(spec, lambda line: None)
    assert (spec.engine_dir / "notes.txt").read_text() == "mine"
    assert double.events("trtllm-build") == []


def test_build_needs_a_converted_checkpoint(double, tmp_path):
    with pytest.raises(EngineBuildError, match="not a complete TensorRT-LLM checkpoint"):
        InstalledTensorRTLLM().build(seed_spec(tmp_path, tp_size=2), lambda line: None)


def test_relative_paths_work(double, hf_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = seed_spec(Path("."))
    run_both(spec)
    assert (tmp_path / "tllm_engine_1gpu_bf16" / "rank0.engine").is_file()
    assert flags(double.events("trtllm-build")[0]["argv"])["--checkpoint_dir"] == str(
        tmp_path / "tllm_checkpoint_1gpu_bf16"
    )


def test_worker_usage_and_foreign_requests_fail_in_one_line(tmp_path, capsys):
    from tritonrepo.trtllm import convert_worker

    assert convert_worker.main([]) == 2
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"format": 99}))
    assert convert_worker.main([str(request)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("convert failed: request format 99")
