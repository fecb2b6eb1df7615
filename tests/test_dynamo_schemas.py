"""The files of `tritonrepo build --serving dynamo` against upstream schemas (tests/data/dynamo-1.6.1/SOURCE.md): the
DynamoGraphDeployment against the operator's CRD (served versions and openAPIV3Schema excerpt)."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from dynamo_acceptance import WITH_VARIANTS

from tritonrepo.cli.main import cli

DATA = Path(__file__).parent / "data"
CRD = yaml.safe_load((DATA / "dynamo-1.6.1" / "dgd-crd-v1alpha1-excerpt.yaml").read_text())


@pytest.fixture(scope="module", params=sorted(WITH_VARIANTS))
def built(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param) / "out"
    args = ["-q", "build", "--serving", "dynamo", *WITH_VARIANTS[request.param], "--output", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return request.param, out


def _strict(schema):
    """kubectl's default field validation (Strict) rejects fields a structural schema does not list: close every
    object that lists its properties, except the nodes the excerpt cut (x-kubernetes-preserve-unknown-fields)."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema.setdefault("additionalProperties", False)
    elif isinstance(schema, list):
        schema = [_strict(value) for value in schema]
    return schema


VALIDATOR = jsonschema.Draft202012Validator(_strict(CRD["openAPIV3Schema"]))


def _graph(out: Path) -> dict:
    docs = yaml.safe_load_all((out / "k8s" / "dynamo-graph-deployment.yaml").read_text())
    return next(d for d in docs if d["kind"] == "DynamoGraphDeployment")


def test_graph_deployment_uses_a_version_the_crd_serves(built):
    name, out = built
    graph = _graph(out)
    group, version = graph["apiVersion"].split("/")
    assert group == CRD["crd"]["group"] and graph["kind"] == CRD["crd"]["kind"]
    served = [v["name"] for v in CRD["crd"]["versions"] if v["served"]]
    assert version in served, f"{name}: {graph['apiVersion']} not served ({served})"


def test_graph_deployment_validates_against_the_crd_schema(built):
    name, out = built
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(_graph(out))]
    assert not errors, f"{name}: {errors}"


@pytest.mark.parametrize(
    "path, value",
    [
        (("spec", "backendFramework"), "tensorrt"),  # not in the enum
        (("spec", "services", "Frontend", "replica"), 1),  # misspelt service field
        (("spec", "services", "Frontend", "extraPodSpec", "mainContainer", "cmd"), ["x"]),  # misspelt Container field
        (("spec", "services", "Frontend", "multinode"), {"nodeCount": 1}),  # below the minimum of 2
        (("spec", "services", "Frontend", "replicas"), "1"),  # a string, not an integer
    ],
)
def test_the_schema_check_catches_wrong_fields(tmp_path, path, value):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["-q", "build", "--serving", "dynamo", "--model", "tiny-llama", "-o", str(out)])
    assert result.exit_code == 0, result.output
    graph = copy.deepcopy(_graph(out))
    assert not list(VALIDATOR.iter_errors(graph))
    node = graph
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert list(VALIDATOR.iter_errors(graph))
