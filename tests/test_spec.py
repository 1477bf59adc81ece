"""Spec validation: every error names the file, the line, the key and what is allowed."""

from __future__ import annotations

import pytest

from orchestrator.planning.spec import SplitRange, load_spec, parse_spec
from tasks.errors import SpecError

GOOD = """\
sweep: demo
output: results/demo
dataset: {type: demo, limit: 12}
models:
  - name: centernet
    path: asset:centernet
    adapter: centernet
    variants: [fp32, {int8-static: {images: 8}}]
    splits: [10, 50]
codecs:
  none: {}
  nncodec: {qp: [-38, -18]}
"""


def error(text: str) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(text, file="sweep.yaml")
    return str(info.value)


def test_good_spec_parses_with_defaults():
    spec = parse_spec(GOOD, file="sweep.yaml")
    assert spec.sweep == "demo"
    assert spec.models[0].splits == [10, 50]
    assert spec.models[0].variant_entries() == [("fp32", {}), ("int8-static", {"images": 8})]
    assert spec.codec_entries() == [("none", {}, "codecs.none"), ("nncodec", {"qp": [-38, -18]}, "codecs.nncodec")]
    assert spec.execution.workers == "auto" and spec.execution.threads == 1
    assert spec.evaluation.mode is None


def test_unknown_key_names_line_key_and_nearest():
    msg = error(GOOD.replace("limit: 12", "limt: 12"))
    assert msg.startswith("sweep.yaml:3: dataset.limt: unknown key 'limt'; did you mean 'limit'?")
    assert "allowed: annotations, image_ids, images, limit, name, path, step, type" in msg


def test_unknown_nested_key_in_split_range():
    msg = error(GOOD.replace("splits: [10, 50]", "splits: {evry: 20}"))
    assert "sweep.yaml:9: models[0].splits.evry" in msg and "did you mean 'every'" in msg


def test_wrong_type_and_range():
    assert "models[0].splits.every" in error(GOOD.replace("splits: [10, 50]", "splits: {every: 0}"))
    msg = error(GOOD.replace("type: demo", "type: cocoa"))
    assert "dataset.type" in msg and "'coco'" in msg and "cocoa" in msg
    assert "execution.threads" in error(GOOD + "execution: {threads: 0}\n")


def test_missing_required_and_kind_specific_keys():
    assert "sweep: required key is missing" in error(GOOD.replace("sweep: demo\n", ""))
    assert "needs `annotations`" in error(GOOD.replace("{type: demo, limit: 12}", "{type: coco, images: val2017}"))
    msg = error(GOOD.replace("{type: demo, limit: 12}", "{type: coco, images: a, annotations: b, step: 2}"))
    assert "sweep.yaml:3: dataset: `step` is not a setting of a coco dataset" in msg


def test_split_range_and_tensor_names():
    spec = parse_spec(GOOD.replace("[10, 50]", "{every: 20, stop: 100}"))
    assert spec.models[0].splits == SplitRange(every=20, start=0, stop=100)
    spec = parse_spec(GOOD.replace("[10, 50]", "[conv1_out, 12]"))
    assert spec.models[0].splits == ["conv1_out", 12]


def test_codecs_as_list_allows_repeats_of_a_codec():
    text = GOOD.replace("  none: {}\n  nncodec: {qp: [-38, -18]}\n", "  - uniform: {bits: [8, 4]}\n  - uniform: {bits: 8, per_channel: false}\n")
    spec = parse_spec(text)
    assert [e[0] for e in spec.codec_entries()] == ["uniform", "uniform"]
    assert spec.codec_entries()[1][2] == "codecs[1].uniform"


def test_duplicate_model_names_and_bad_yaml(tmp_path):
    text = GOOD + GOOD[GOOD.index("  - name"):GOOD.index("codecs:")]
    text = text.replace("codecs:\n  none: {}\n  nncodec: {qp: [-38, -18]}\n", "") + "codecs: {none: {}}\n"
    assert "repeated: centernet" in error(text)
    assert error("sweep: [").startswith("sweep.yaml:1: not valid YAML")
    assert "a spec is a YAML mapping" in error("- 1\n- 2\n")
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "nope.yaml")


def test_paths_resolve_relative_to_the_spec_file(tmp_path):
    (tmp_path / "sub").mkdir()
    f = tmp_path / "sub" / "s.yaml"
    f.write_text(GOOD)
    spec = load_spec(f)
    assert spec.output_location == str(tmp_path / "sub" / "results" / "demo")
    assert spec.resolve("asset:centernet") == "asset:centernet"
    assert spec.resolve("s3://bucket/x") == "s3://bucket/x"
