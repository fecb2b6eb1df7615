"""Tests for tritonrepo/source/generation_config.py: the sampling defaults a checkpoint declares."""

from __future__ import annotations

import json

import pytest

from tritonrepo.source.generation_config import sampling_defaults, usable_sampling_defaults


def test_only_the_sampling_keys_the_file_sets_are_read(tmp_path):
    (tmp_path / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 1, "do_sample": True, "temperature": 0.6, "top_p": 0.95, "max_length": 4096})
    )
    assert sampling_defaults(tmp_path) == {"do_sample": True, "temperature": 0.6, "top_p": 0.95}


@pytest.mark.parametrize("content", [None, "not json", "[1, 2]"])
def test_a_missing_or_unreadable_file_declares_nothing(tmp_path, content):
    if content is not None:
        (tmp_path / "generation_config.json").write_text(content)
    assert sampling_defaults(tmp_path) == {}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"do_sample": "yes", "temperature": True, "top_p": 1.5, "top_k": -1}, {}),
        ({"temperature": float("nan"), "top_p": float("inf"), "top_k": 2**31}, {}),
        (
            {"do_sample": False, "temperature": 0, "top_p": 1, "top_k": 0},
            {"do_sample": False, "temperature": 0.0, "top_p": 1.0, "top_k": 0},
        ),
    ],
)
def test_values_no_request_could_carry_are_dropped(data, expected):
    assert usable_sampling_defaults(data) == expected
