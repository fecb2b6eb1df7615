"""The operator's front-end choices: reasoning parser resolution and the chat template file."""

from __future__ import annotations

import pytest

from tritonrepo.errors import ServerError
from tritonrepo.frontend.policy import FrontendPolicy
from tritonrepo.source.catalog import reasoning_parser


def test_auto_reasoning_follows_the_manifest_and_explicit_choices_win():
    r1 = {"reasoning_parser": "deepseek-r1"}
    assert FrontendPolicy().resolved_reasoning_parser(r1) == "deepseek-r1"
    assert FrontendPolicy().resolved_reasoning_parser({}) is None
    assert FrontendPolicy(reasoning_parser="none").resolved_reasoning_parser(r1) is None
    assert FrontendPolicy(reasoning_parser="deepseek-r1").resolved_reasoning_parser({}) == "deepseek-r1"
    with pytest.raises(ServerError, match="deepseek-r1"):
        FrontendPolicy(reasoning_parser="qwen3").resolved_reasoning_parser({})


def test_the_build_knows_which_models_reason():
    assert reasoning_parser("DeepSeek-R1-Distill-Llama-8B") == "deepseek-r1"
    assert reasoning_parser("whatever", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B") == "deepseek-r1"
    assert reasoning_parser("my-DeepSeek-R1-finetune") == "deepseek-r1"
    assert reasoning_parser("scripted-llama") == "deepseek-r1"
    assert reasoning_parser("Llama-3.1-8B-Instruct") is None and reasoning_parser("tiny-llama") is None


def test_chat_template_file_is_read_and_checked(tmp_path):
    good = tmp_path / "template.jinja"
    good.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    assert FrontendPolicy(chat_template=good).chat_template_text().startswith("{% for")
    assert FrontendPolicy().chat_template_text() is None
    plain = tmp_path / "notes.txt"
    plain.write_text("just some words")
    with pytest.raises(ServerError, match="does not look like a Jinja chat template"):
        FrontendPolicy(chat_template=plain).chat_template_text()
    with pytest.raises(ServerError, match="cannot read the chat template"):
        FrontendPolicy(chat_template=tmp_path / "missing.jinja").chat_template_text()
