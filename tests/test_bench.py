"""`tritonrepo bench` without a server: reading aiperf's export, result files, run folders, ratios, and the errors for
a missing aiperf, nothing listening and a foreign result file."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner
from conftest import free_port

from tritonrepo.bench.results import SCHEMA, BenchResult, LevelResult, Percentiles, load_result
from tritonrepo.bench.sweep import new_run_folder, write_result
from tritonrepo.bench.table import compare, format_comparison, format_table, load_differences
from tritonrepo.cli.main import cli
from tritonrepo.errors import BenchError


def _metric(unit: str, **values: float) -> dict:
    return {"unit": unit, **values}


def aiperf_export(*, errors: int = 0) -> dict:
    """The fields `LevelResult.from_aiperf` reads, shaped as aiperf 0.13.0 writes them (profile_export_aiperf.json)."""
    export = {
        "schema_version": "1.4",
        "aiperf_version": "0.13.0",
        "request_throughput": _metric("requests/sec", avg=13.2),
        "request_latency": _metric("ms", avg=139.0, p50=94.9, p90=238.9, p99=241.8),
        "request_count": _metric("requests", avg=6.0),
        "time_to_first_token": _metric("ms", avg=59.8, p50=67.1, p90=88.6, p99=90.9),
        "inter_token_latency": _metric("ms", avg=5.3, p50=3.9, p90=11.5, p99=12.2),
        "output_token_throughput": _metric("tokens/sec", avg=210.9),
        "output_token_throughput_per_user": _metric("tokens/sec/user", avg=937.3, p50=260.2),
        "output_sequence_length": _metric("tokens", avg=16.0),
        "input_sequence_length": _metric("tokens", avg=36.0),
        "benchmark_duration": _metric("sec", avg=0.44),
        "completed_request_count": _metric("requests", avg=6.0 + errors),
        "error_summary": [],
    }
    if errors:
        export["error_request_count"] = _metric("requests", avg=float(errors))
        export["error_summary"] = [{"error_details": {"code": 503, "message": "model unavailable"}, "count": errors}]
    return export


def result(levels: list[LevelResult], **changes) -> BenchResult:
    settings = {"input_len": 32, "output_len": 16, "stream": True}
    return BenchResult(model="m", openai_url="http://x/v1", settings=settings, levels=levels, started="t", **changes)


def test_level_reads_aiperf_export():
    level = LevelResult.from_aiperf(4, aiperf_export())
    assert level.concurrency == 4 and level.requests == 6 and level.errors == 0
    assert level.output_tokens_per_s == 210.9 and level.requests_per_s == 13.2
    assert level.output_tokens_per_s_per_user == 260.2  # the median user, not aiperf's outlier-driven mean
    assert level.ttft_ms == Percentiles(p50=67.1, p90=88.6, p99=90.9, avg=59.8)
    assert level.itl_ms.p99 == 12.2 and level.latency_ms.p50 == 94.9


def test_level_counts_errors_and_keeps_their_messages():
    level = LevelResult.from_aiperf(2, aiperf_export(errors=3))
    assert level.errors == 3 and level.requests == 9
    assert level.error_messages == ["model unavailable"]


def test_result_round_trips_through_json(tmp_path):
    written = result([LevelResult.from_aiperf(1, aiperf_export())], hardware={"description": "no GPU"})
    write_result(written, tmp_path)
    data = json.loads((tmp_path / "result.json").read_text())
    assert data["schema"] == SCHEMA
    assert load_result(tmp_path) == written  # the folder or the file
    assert load_result(tmp_path / "result.json") == written


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"schema": "other/1"}', "is not a tritonrepo bench result"),
        ('{"schema": "tritonrepo.bench/0"}', "this tritonrepo reads"),
        ("[1, 2]", "is not a tritonrepo bench result"),
        ("{not json", "Cannot read the benchmark result"),
        (f'{{"schema": "{SCHEMA}"}}', "not a complete tritonrepo bench result"),
    ],
)
def test_foreign_results_are_refused(tmp_path, content, message):
    (tmp_path / "result.json").write_text(content)
    with pytest.raises(BenchError, match=message):
        load_result(tmp_path / "result.json")


def test_missing_result_is_named(tmp_path):
    with pytest.raises(BenchError, match="No benchmark result at"):
        load_result(tmp_path)


def test_run_folders_are_new_never_reused(tmp_path):
    now = datetime(2026, 12, 3, 12, 0, 0, tzinfo=timezone.utc)
    first = new_run_folder(tmp_path / "out", "org/model name", now)
    (first / "result.json").write_text("kept")
    second = new_run_folder(tmp_path / "out", "org/model name", now)
    assert first.name == "20261203-120000-org_model_name" and second.name == first.name + "-2"
    assert (first / "result.json").read_text() == "kept"


def test_compare_gives_ratios_at_common_levels():
    old = LevelResult.from_aiperf(1, aiperf_export())
    new_export = aiperf_export()
    new_export["output_token_throughput"] = _metric("tokens/sec", avg=421.8)
    rows = compare(result([LevelResult.from_aiperf(1, new_export), LevelResult.from_aiperf(8, new_export)]),
                   result([old]))  # fmt: skip
    assert [row["concurrency"] for row in rows] == [1]
    assert rows[0]["out tok/s"] == pytest.approx(2.0) and rows[0]["TTFT p50"] == pytest.approx(1.0)
    text = format_comparison(rows, "old.json")
    assert "2.00x" in text and "old.json" in text
    assert "nothing to compare" in format_comparison([], "old.json")
    assert "differ" not in text


def test_compare_says_when_the_loads_differ():
    level = LevelResult.from_aiperf(1, aiperf_export())
    same = load_differences(result([level]), result([level]))
    assert same == []
    longer = result([level])
    longer.settings = {**longer.settings, "input_len": 128}
    other = result([level])
    other.model = "other"
    differences = load_differences(longer, other)
    assert differences == ["model m here, other there", "--input-len 128 here, 32 there"]
    text = format_comparison(compare(longer, result([level])), "old.json", differences)
    assert "Note: the runs' loads differ (model m here, other there; --input-len 128 here, 32 there)" in text


def test_table_has_a_row_per_level():
    table = format_table(result([LevelResult.from_aiperf(c, aiperf_export()) for c in (1, 4)]))
    lines = table.splitlines()
    assert "TTFT p50/p90/p99 ms" in lines[1]
    assert [line.split()[0] for line in lines[3:]] == ["1", "4"]
    assert "67.1 / 88.6 / 90.9" in lines[3]


def test_missing_aiperf_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no aiperf on PATH
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))  # nor beside the interpreter
    run = CliRunner().invoke(cli, ["bench", "--out", str(tmp_path / "out")])
    assert run.exit_code == 9
    assert "aiperf" in run.output and "pip install 'tritonrepo[bench]'" in run.output
    assert not (tmp_path / "out").exists()


def test_nothing_listening_is_a_clear_error(tmp_path):
    port = free_port()  # bound then closed: nothing listens there
    run = CliRunner().invoke(
        cli, ["bench", "--openai-url", f"http://127.0.0.1:{port}/v1", "--out", str(tmp_path / "o")]
    )
    assert run.exit_code == 9, run.output
    assert f"Nothing answers at http://127.0.0.1:{port}/v1/models" in run.output and "tritonrepo serve" in run.output
    assert not (tmp_path / "o").exists()


def test_bad_concurrency_is_a_usage_error(tmp_path):
    run = CliRunner().invoke(cli, ["bench", "--concurrency", "1,x"])
    assert run.exit_code == 2 and "whole numbers" in run.output
    run = CliRunner().invoke(cli, ["bench", "--requests", "4", "--duration", "10"])
    assert run.exit_code == 2 and "not both" in run.output


def test_a_folder_that_is_no_deployment_is_refused(tmp_path):
    run = CliRunner().invoke(cli, ["bench", str(tmp_path)])
    assert run.exit_code == 9 and "is not a deployment" in run.output


def test_tokenizer_and_manifest_come_from_the_deployment(tmp_path):
    from tritonrepo.bench.target import deployment_manifest, deployment_tokenizer

    dynamo = tmp_path / "dynamo"
    dynamo.mkdir()
    (dynamo / "dynamo-deployment.json").write_text('{"model_path": "/models/llama", "served_model_name": "llama"}')
    manifest = deployment_manifest(dynamo)
    assert deployment_tokenizer(dynamo, manifest) == "/models/llama"  # what Dynamo's workers load
    triton = tmp_path / "triton"
    (triton / "preprocessing/1/tokenizer").mkdir(parents=True)
    (triton / "tritonrepo.json").write_text('{"tokenizer_dir": "preprocessing/1/tokenizer"}')
    assert deployment_tokenizer(triton, deployment_manifest(triton)) == str(triton / "preprocessing/1/tokenizer")
    (triton / "preprocessing/1/tokenizer").rmdir()
    with pytest.raises(BenchError, match="tokenizer folder .* is missing"):
        deployment_tokenizer(triton, deployment_manifest(triton))


def test_offline_flags_are_dropped_only_for_a_local_tokenizer(tmp_path, monkeypatch):
    from tritonrepo.bench.aiperf_runner import aiperf_environment

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "HF_HUB_OFFLINE" not in aiperf_environment(str(tmp_path))  # aiperf 0.13 would look the folder up on the Hub
    assert aiperf_environment("org/model")["HF_HUB_OFFLINE"] == "1"
