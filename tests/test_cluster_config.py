"""cluster.yaml is a valid Ray cluster-launcher config, the commented on-prem variant too."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def schema():
    import ray.autoscaler

    return json.loads(Path(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json").read_text())


def _configs():
    text = (ROOT / "cluster.yaml").read_text()
    aws = yaml.safe_load(text)
    block = re.search(r"# BEGIN LOCAL PROVIDER\n(.*?)# END LOCAL PROVIDER", text, re.S).group(1)
    local = yaml.safe_load("\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in block.splitlines()))
    return aws, {**aws, **local}


def test_cloud_template_matches_rays_schema_and_prepares(schema):
    from ray.autoscaler._private.util import prepare_config, validate_config

    aws, _ = _configs()
    jsonschema.validate(aws, schema)
    validate_config(prepare_config(copy.deepcopy(aws)))
    assert aws["provider"]["type"] == "aws"
    assert any("pip install" in c and "constraints.txt" in c for c in aws["setup_commands"])
    assert any("ray start --head" in c for c in aws["head_start_ray_commands"])
    assert any("ray start --address" in c for c in aws["worker_start_ray_commands"])


def test_on_prem_variant_matches_rays_schema(schema):
    _, local = _configs()
    jsonschema.validate(local, schema)
    assert local["provider"]["type"] == "local"
    assert local["provider"]["worker_ips"]


def test_schema_rejects_a_broken_config(schema):
    aws, _ = _configs()
    broken = copy.deepcopy(aws)
    broken["available_node_types"]["cpu_worker"]["min_wrokers"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
