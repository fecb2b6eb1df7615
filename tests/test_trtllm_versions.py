"""The container table, version parsing and the features keyed by TensorRT-LLM version."""

from __future__ import annotations

import logging

import pytest
from doubles.trtllm_double import install

from tritonrepo.trtllm import versions
from tritonrepo.trtllm.versions import CONTAINERS, container_for, features, installed_version, parse_version


def test_table_is_ordered_unique_and_names_real_images():
    tags = [c.tag for c in CONTAINERS]
    assert tags == sorted(tags) and len(set(tags)) == len(tags)
    assert CONTAINERS[0].image == "nvcr.io/nvidia/tritonserver:24.10-trtllm-python-py3"
    # Neither TensorRT-LLM nor Triton versions ever go back in time.
    assert [parse_version(c.trtllm) for c in CONTAINERS] == sorted(parse_version(c.trtllm) for c in CONTAINERS)
    assert [parse_version(c.triton) for c in CONTAINERS] == sorted(parse_version(c.triton) for c in CONTAINERS)


@pytest.mark.parametrize(
    ("tag", "trtllm", "triton"),
    [
        ("24.10", "0.14.0", "2.51.0"),  # the tritonserver of nvidia-pytriton 0.7.0, used by the portable runtime
        ("25.01", "0.17.0", "2.54.0"),  # the dstack recipe's container
        ("25.07", "0.20.0", "2.59.1"),  # a patch release: Triton does not simply count up one a month
        ("25.08", "0.21.0", "2.60.0"),
        ("26.07", "1.2.1", "2.71.0"),
    ],
)
def test_table_rows(tag, trtllm, triton):
    row = next(c for c in CONTAINERS if c.tag == tag)
    assert (row.trtllm, row.triton) == (trtllm, triton)


@pytest.mark.parametrize(
    ("trtllm", "tag"),
    [
        ("0.17.0", "25.01"),
        ("0.17.0.post1", "25.02"),  # a different wheel than 0.17.0: engines are not interchangeable
        ("0.20.0", "25.07"),  # the newest of the two containers shipping it
        ("1.0.0", "25.10"),
        ("1.1.0", "26.02"),
        ("1.2.1", "26.07"),
        ("v1.2.1", "26.07"),
    ],
)
def test_container_for_names_the_newest_container_with_that_version(trtllm, tag):
    assert container_for(trtllm) == f"nvcr.io/nvidia/tritonserver:{tag}-trtllm-python-py3"


@pytest.mark.parametrize("trtllm", ["0.16.0", "0.18.1", "2.0.0", "", "nonsense"])
def test_container_for_unshipped_versions_is_none(trtllm):
    assert container_for(trtllm) is None


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("0.17.0", (0, 17, 0)), ("0.17.0.post1", (0, 17, 0)), ("1.1.0rc2", (1, 1, 0)), ("1.2", (1, 2, 0))],
)
def test_parse_version(text, parsed):
    assert parse_version(text) == parsed
    assert str(parse_version(text)) == ".".join(map(str, parsed))


@pytest.mark.parametrize("text", ["", "latest", "x1.2.3"])
def test_parse_version_rejects_non_versions(text):
    with pytest.raises(ValueError):
        parse_version(text)


@pytest.mark.parametrize(
    ("version", "logits", "llmapi", "moved", "kv_flag", "llm_class"),
    [
        ("0.14.0", False, False, False, True, "tensorrt_llm.LLM"),
        ("0.17.0", True, False, False, True, "tensorrt_llm.LLM"),
        ("0.18.2", True, False, False, True, "tensorrt_llm.LLM"),
        ("0.19.0", True, True, False, True, "tensorrt_llm.LLM"),
        ("0.20.0", True, True, True, True, "tensorrt_llm.LLM"),
        ("1.0.3", True, True, True, True, "tensorrt_llm.LLM"),
        ("1.1.0", True, True, True, True, "tensorrt_llm._tensorrt_engine.LLM"),
        ("1.2.1", True, True, True, True, "tensorrt_llm._tensorrt_engine.LLM"),
    ],
)
def test_features_by_version(version, logits, llmapi, moved, kv_flag, llm_class):
    found = features(version)
    assert found.known and found.note is None
    assert found.has_logits_datatype is logits
    assert found.llmapi_triton_model is llmapi
    assert found.backend_in_trtllm_repo is moved
    assert found.kv_cache_type_flag is kv_flag
    assert found.engine_llm_class == llm_class
    assert found.container == container_for(version)


def test_older_version_keeps_its_own_features_with_a_note(caplog):
    with caplog.at_level(logging.WARNING, logger=versions.__name__):
        found = features("0.12.0")
    assert not found.known and found.kv_cache_type_flag is False and found.has_logits_datatype is False
    assert "not shipped by a supported container" in found.note
    assert found.note in caplog.text


@pytest.mark.parametrize("version", ["2.0.0", "1.3.0rc1", "garbage", None])
def test_unknown_or_newer_version_gets_newest_features_and_a_warning(version, caplog):
    with caplog.at_level(logging.WARNING, logger=versions.__name__):
        found = features(version)
    newest = features(CONTAINERS[-1].trtllm)
    assert found.note and found.note in caplog.text
    assert not found.known
    assert (found.has_logits_datatype, found.kv_cache_type_flag, found.engine_llm_class) == (
        newest.has_logits_datatype,
        newest.kv_cache_type_flag,
        newest.engine_llm_class,
    )


def test_installed_version_reads_wheel_metadata(monkeypatch, tmp_path):
    if installed_version() is not None:
        pytest.skip("a real TensorRT-LLM is installed here")
    install(monkeypatch, tmp_path, version="0.17.0.post1")
    assert installed_version() == "0.17.0.post1"
