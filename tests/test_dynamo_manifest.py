"""The Dynamo deployment manifest: round trip and the consistency every reader relies on."""

from __future__ import annotations

import json

import pytest

from tritonrepo.dynamo.manifest import MANIFEST, DynamoDeployment, WorkerGroup, is_dynamo_deployment, load, save
from tritonrepo.errors import ValidationError


def _deployment(**overrides) -> DynamoDeployment:
    values = dict(
        model="tiny-llama",
        model_path="/models/tiny-llama",
        served_model_name="tiny-llama",
        router_mode="kv",
        kv_block_size=32,
        workers=(
            WorkerGroup("prefill", 1, 4, "engine/prefill.yaml"),
            WorkerGroup("decode", 2, 4, "engine/decode.yaml"),
        ),
        max_seq_len=2048,
        max_batch_size=64,
        notes=("max_tokens_in_buffer raised to the longest input",),
    )
    return DynamoDeployment(**{**values, **overrides})


def test_a_manifest_round_trips(tmp_path):
    deployment = _deployment()
    save(tmp_path, deployment)
    assert is_dynamo_deployment(tmp_path)
    assert load(tmp_path) == deployment
    assert deployment.disaggregated


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"router_mode": "random"}, "router_mode 'random' is not one of kv, round-robin"),
        ({"workers": ()}, "it has no workers"),
        ({"workers": (WorkerGroup("prefill", 1, 1, "engine/prefill.yaml"),)}, "needs prefill and decode workers"),
        ({"workers": (WorkerGroup("decoder", 1, 1, "engine/decode.yaml"),)}, "worker role 'decoder'"),
        ({"kv_block_size": 0}, "must be positive"),
    ],
)
def test_an_inconsistent_manifest_is_refused_and_nothing_is_written(tmp_path, overrides, message):
    with pytest.raises(ValidationError, match=message):
        save(tmp_path, _deployment(**overrides))
    assert not (tmp_path / MANIFEST).exists()


def test_a_manifest_of_another_format_says_to_rebuild(tmp_path):
    save(tmp_path, _deployment())
    data = json.loads((tmp_path / MANIFEST).read_text())
    (tmp_path / MANIFEST).write_text(json.dumps({**data, "format": 99}))
    with pytest.raises(ValidationError, match="(?s)format 99; .*rebuild the deployment"):
        load(tmp_path)


def test_a_folder_without_a_manifest_is_not_a_dynamo_deployment(tmp_path):
    assert not is_dynamo_deployment(tmp_path)
    with pytest.raises(ValidationError, match="not a Dynamo deployment: dynamo-deployment.json is missing"):
        load(tmp_path)
