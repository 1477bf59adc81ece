"""The one plug-in form (tasks/registry.py): the codec example of docs/ARCHITECTURE.md, field
validation shared by codecs, variants and adapters, and the one YAML shape of plug-ins."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.planning.spec import parse_spec, plugin_entries
from tasks import codecs, detectors, variants
from tasks.codecs import container
from tasks.codecs.base import ZSTD, Field, TensorwiseCodec
from tasks.errors import CodecError, DetectorError, VariantError
from tasks.registry import REQUIRED, Registry


class Scaled16Codec(TensorwiseCodec):  # docs/ARCHITECTURE.md, "The plug-in form", as written there
    name, wire_id, method = "scaled16", 9, container.FLOAT16
    doc = "float16 of x·scale: a scale > 1 keeps small activations out of float16's subnormals"
    fields = (Field("scale", float, 1.0, "multiplied before rounding to float16", low=0, exclusive=True), ZSTD)

    def encode_float(self, name, arr):
        half = (arr * self.params["scale"]).astype("<f2")
        return container.Entry(name, arr.dtype, arr.shape, self.method, b"", container.as_bytes(half))

    def decode_float(self, entry):
        return np.frombuffer(entry.payload, "<f2").reshape(entry.shape).astype(entry.dtype) / self.params["scale"]


def test_the_documented_codec_example_validates_and_round_trips():
    registry = Registry("codec", CodecError, [*(codecs.CODECS.get(n) for n in codecs.names()), Scaled16Codec])
    assert "scaled16" in registry and len(registry.names()) == len(codecs.names()) + 1
    with pytest.raises(CodecError) as err:
        registry.get("scaled16").validate({"scal": 4}, file="s.yaml", key="codecs.scaled16")
    assert str(err.value) == (
        "s.yaml: codecs.scaled16.scal: unknown setting 'scal' for codec 'scaled16'; did you mean 'scale'? "
        "(allowed: scale, zstd)"
    )
    with pytest.raises(CodecError, match="out of range") as err:
        Scaled16Codec({"scale": 0})
    assert err.value.allowed == "float > 0"
    codec = Scaled16Codec({"scale": 64, "zstd": 3})
    assert codec.params == {"scale": 64.0, "zstd": 3}
    x = np.random.default_rng(0).normal(0, 1e-5, (1, 8, 16, 16)).astype(np.float32)
    back = codec.decode(codec.encode({"x": x}))["x"]
    float16 = codecs.build(codecs.setting("float16"))
    plain = float16.decode(float16.encode({"x": x}))["x"]
    assert back.dtype == np.float32 and back.shape == x.shape
    # the scale keeps tiny values out of float16's subnormal range: a far smaller error
    assert np.median(np.abs(back - x)) * 8 < np.median(np.abs(plain - x))


@pytest.mark.parametrize(
    "field, value, canonical",
    [
        (Field("bits", int, 8, "d", low=2, high=16), 8.0, 8),
        (Field("bits", int, 8, "d", low=2, high=16), np.int64(4), 4),
        (Field("on", bool, True, "d"), np.bool_(False), False),
        (Field("method", str, "minmax", "d", choices=("minmax", "entropy")), "Entropy", "entropy"),
        (Field("size", tuple[int, int] | None, None, "d"), [3, 4], (3, 4)),
        (Field("size", tuple[int, int] | None, None, "d"), None, None),
    ],
)
def test_one_field_check_for_every_kind_canonicalises(field, value, canonical):
    out = field.check(value, owner="x", error=CodecError, file=None, key=None)
    assert out == canonical and type(out) is type(canonical)


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        (Field("bits", int, 8, "d", low=2, high=16), True, "int in [2, 16]"),
        (Field("bits", int, 8, "d", low=2, high=16), 4.5, "int in [2, 16]"),
        (Field("ratio", float, 0.5, "d", low=0, high=1, exclusive=True), 1.0, "float in (0, 1)"),
        (Field("ratio", float, 0.5, "d"), float("nan"), "float"),
        (Field("q", int, REQUIRED, "d", low=1), 0, "int >= 1"),
    ],
)
def test_one_field_check_refuses_with_the_allowed_values(field, value, allowed):
    with pytest.raises(VariantError) as err:
        field.check(value, owner="v", error=VariantError, file="f.yaml", key="variants[0]")
    assert err.value.key == f"variants[0].{field.name}" and err.value.allowed == allowed


def test_every_plugin_kind_is_declared_the_same_way():
    kinds = [
        *(codecs.CODECS.get(n) for n in codecs.names()),
        *(variants.VARIANTS.get(n) for n in variants.VARIANTS.names()),
        *(detectors.ADAPTERS.get(n) for n in detectors.ADAPTERS.names()),
    ]
    for cls in kinds:
        assert cls.summary(), cls.name
        assert all(isinstance(f, Field) and f.doc for f in cls.fields), cls.name
    errors = {codecs.CODECS.get("uniform").error, variants.VARIANTS.get("fp16").error, detectors.ADAPTERS.get("nanodet").error}
    assert errors == {CodecError, VariantError, DetectorError}
    # the adapter's fields are its settings dataclass's, type from the annotation
    centernet = {f.name: f for f in detectors.ADAPTERS.get("centernet").fields}
    assert centernet["input_size"].default == (512, 512) and centernet["layout"].allowed == "NCHW, NHWC"


SPEC = """
sweep: s
output: out
dataset: {{type: folder, path: imgs}}
models:
  - name: m
    path: m.onnx
    adapter: {adapter}
    variants: {variants}
    splits: [1]
codecs: {codecs}
"""


def test_one_yaml_shape_for_codecs_variants_and_adapters():
    new = parse_spec(SPEC.format(adapter="{centernet: {score_threshold: 0.1}}", variants="{fp16: {}, int8-dynamic: }",
                                 codecs="[none, {uniform: {bits: [8, 4]}}]"), file="new.yaml")
    old = parse_spec(SPEC.format(adapter="{type: centernet, score_threshold: 0.1}", variants="[fp16, int8-dynamic]",
                                 codecs="{none: , uniform: {bits: [8, 4]}}"), file="old.yaml")
    for spec in (new, old):
        assert spec.models[0].adapter_type == "centernet" and spec.models[0].adapter_settings == {"score_threshold": 0.1}
        assert spec.models[0].variant_entries() == [("fp16", {}), ("int8-dynamic", {})]
        assert [(n, p) for n, p, _ in spec.codec_entries()] == [("none", {}), ("uniform", {"bits": [8, 4]})]
    assert plugin_entries(["a", {"b": {"x": 1}}, {"c": None}]) == [("a", {}), ("b", {"x": 1}), ("c", {})]


def test_the_old_adapter_spelling_warns_in_one_line():
    with pytest.warns(FutureWarning) as caught:
        parse_spec(SPEC.format(adapter="{type: nanodet}", variants="[fp32]", codecs="{none: }"), file="old.yaml")
    message = str(caught[0].message)
    assert "\n" not in message and message.startswith("old.yaml: models[0].adapter: {type: nanodet, …}")
    assert "{nanodet: {setting: value, …}}" in message
