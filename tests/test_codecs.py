"""Codec registry, settings validation, container format and the none / float16 / bfloat16 / uniform codecs."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from tasks.codecs import build, container, describe, header_size, names, setting, setting_grid
from tasks.codecs.floats import from_bfloat16_bits, to_bfloat16_bits
from tasks.codecs.uniform import pack_bits, unpack_bits
from tasks.errors import CodecError
from tasks.rows import CodecSetting

ALL = ["none", "float16", "bfloat16", "uniform", "nncodec"]  # the tensor codecs
IMAGE = ["avif", "hevc", "jpeg", "webp"]  # remote inference: tests/test_image_codecs.py


def codec(name: str, **params):
    if name == "nncodec":
        params.setdefault("qp", -30)
    return build(setting(name, params))


def mixed_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "feat": np.maximum(rng.standard_normal((1, 8, 6, 5)), 0).astype(np.float32),
        "shape": np.array([1, 8, 6, 5], np.int64),
        "idx": rng.integers(-5, 5, (3, 4)).astype(np.int32),
        "q8": rng.integers(-128, 127, (2, 7)).astype(np.int8),
        "u8": rng.integers(0, 255, (9,)).astype(np.uint8),
        "mask": rng.random((4, 4)) > 0.5,
        "half": rng.standard_normal((2, 3, 4)).astype(np.float16),
        "double": rng.standard_normal((3, 2)),
        "scalar": np.float32(2.5),
        "empty": np.zeros((0, 3), np.float32),
    }


# --- registry and settings ------------------------------------------------------------


def test_names_and_describe_cover_every_codec_and_setting():
    assert names() == sorted(ALL + IMAGE)
    infos = {i.name: i for i in describe()}
    assert set(infos) == set(ALL + IMAGE)
    assert [n for n, i in infos.items() if i.lossless] == ["none"]
    for info in infos.values():
        assert info.doc
        for s in info.settings:
            assert s.doc and s.type_name in ("bool", "int", "float") and s.allowed
    assert {s.name for s in infos["uniform"].settings} == {"bits", "per_channel", "zstd"}
    assert {s.name for s in infos["nncodec"].settings} >= {"qp", "use_dq", "qp_density", "nonweight_qp"}
    assert next(s for s in infos["nncodec"].settings if s.name == "qp").required


def test_unknown_codec_names_allowed_and_suggests():
    with pytest.raises(CodecError) as err:
        setting("flaot16", file="sweep.yaml", key="codecs")
    e = err.value
    assert "did you mean 'float16'" in str(e)
    assert e.file == "sweep.yaml" and e.key == "codecs"
    assert all(n in e.allowed for n in ALL)


def test_unknown_setting_key_names_it_and_the_allowed_keys():
    with pytest.raises(CodecError) as err:
        setting("uniform", {"bitz": 8}, file="s.yaml", key="codecs.uniform")
    e = err.value
    assert e.key == "codecs.uniform.bitz"
    assert "did you mean 'bits'" in str(e)
    assert e.allowed == "bits, per_channel, zstd"


@pytest.mark.parametrize(
    "name, params, key, allowed",
    [
        ("uniform", {"bits": 1}, "bits", "int in [2, 16]"),
        ("uniform", {"bits": 17}, "bits", "int in [2, 16]"),
        ("uniform", {"bits": 4.5}, "bits", "int in [2, 16]"),
        ("uniform", {"bits": True}, "bits", "int in [2, 16]"),
        ("uniform", {"bits": "8"}, "bits", "int in [2, 16]"),
        ("uniform", {"per_channel": 1}, "per_channel", "true, false"),
        ("float16", {"zstd": 23}, "zstd", "int in [0, 22]"),
        ("none", {"zstd": -1}, "zstd", "int in [0, 22]"),
        ("nncodec", {}, "qp", None),
        ("nncodec", {"qp": -129}, "qp", "int in [-128, 127]"),
        ("nncodec", {"qp": 128}, "qp", "int in [-128, 127]"),
        ("nncodec", {"qp": -200, "qp_density": 2}, "qp", "int in [-128, 127]"),
        ("nncodec", {"qp": -20, "qp_density": 8}, "qp_density", "int in [0, 7]"),
        ("nncodec", {"qp": -20, "nonweight_qp": -300}, "nonweight_qp", "int in [-128, 127]"),
        ("nncodec", {"qp": -20, "use_dq": "yes"}, "use_dq", "true, false"),
    ],
)
def test_bad_setting_values_name_key_and_allowed_range(name, params, key, allowed):
    with pytest.raises(CodecError) as err:
        setting(name, params, file="s.yaml", key="c")
    assert err.value.key == f"c.{key}"
    assert err.value.file == "s.yaml"
    if allowed:
        assert err.value.allowed == allowed


def test_qp_range_follows_qp_density():
    assert setting("nncodec", {"qp": -200, "qp_density": 3}).params["qp"] == -200
    assert setting("nncodec", {"qp": -256, "qp_density": 3}).qp == -256
    with pytest.raises(CodecError):
        setting("nncodec", {"qp": -257, "qp_density": 3})


def test_defaults_are_filled_and_spellings_agree():
    a = setting("uniform", {"bits": 8})
    b = setting("uniform", {"zstd": 0, "per_channel": True, "bits": np.int64(8)})
    c = setting("uniform", {"bits": 8.0})
    assert a.canonical == b.canonical == c.canonical == '{"bits":8,"per_channel":true,"zstd":0}'
    assert a == b and hash(a) == hash(b)
    assert setting("float16").canonical == setting("float16", {"zstd": 0}).canonical == '{"zstd":0}'
    n = setting("nncodec", {"qp": -38})
    assert n.canonical == (
        '{"nonweight_qp":-75,"param_opt":true,"qp":-38,"qp_density":2,"row_skipping":true,"use_dq":true}'
    )
    assert n.qp == -38 and isinstance(n.params["qp"], int)


def test_setting_grid_expands_lists_in_a_fixed_order():
    grid = setting_grid("nncodec", {"qp": [-38, -26, -18]})
    assert [s.qp for s in grid] == [-38, -26, -18]
    assert all(s.params["use_dq"] is True for s in grid)

    grid = setting_grid("uniform", {"bits": [8, 4], "per_channel": True})
    assert [(s.params["bits"], s.params["per_channel"]) for s in grid] == [(8, True), (4, True)]

    # sorted keys, the last key varies fastest; written order of keys does not matter
    g1 = setting_grid("nncodec", {"use_dq": [True, False], "qp": [-38, 0]})
    g2 = setting_grid("nncodec", {"qp": [-38, 0], "use_dq": [True, False]})
    assert g1 == g2
    assert [(s.qp, s.params["use_dq"]) for s in g1] == [(-38, True), (-38, False), (0, True), (0, False)]

    # the same setting spelled twice is kept once
    assert len(setting_grid("uniform", {"bits": [8, 8.0], "zstd": [0]})) == 1
    assert setting_grid("float16") == [setting("float16")]


def test_setting_grid_errors_name_the_key():
    with pytest.raises(CodecError) as err:
        setting_grid("uniform", {"bits": []}, key="codecs.uniform")
    assert err.value.key == "codecs.uniform.bits"
    with pytest.raises(CodecError) as err:
        setting_grid("nncodec", {"qp": [-38, -300]}, file="f.yaml", key="codecs.nncodec")
    assert err.value.key == "codecs.nncodec.qp" and err.value.file == "f.yaml"


def test_build_revalidates_a_stored_setting():
    c = build(CodecSetting("uniform", {"bits": 4}))
    assert c.params == {"bits": 4, "per_channel": True, "zstd": 0}
    with pytest.raises(CodecError):
        build(CodecSetting("uniform", {"bits": 40}))
    with pytest.raises(CodecError):
        build(CodecSetting("h264", {}))


# --- behaviour common to every codec ---------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_names_shapes_dtypes_survive_and_non_floats_are_exact(name):
    arrays = mixed_tensors()
    out = codec(name).decode(codec(name).encode(arrays))
    assert list(out) == list(arrays)
    for k, v in arrays.items():
        v = np.asarray(v)
        assert out[k].dtype == v.dtype and out[k].shape == v.shape, k
        if v.dtype.kind in "biu":
            assert np.array_equal(out[k], v), k
        assert out[k].flags.writeable
    assert np.allclose(out["half"], arrays["half"], atol=0.02)
    assert np.allclose(out["feat"], arrays["feat"], atol=0.03)


@pytest.mark.parametrize("name", ALL)
def test_non_float_tensors_are_counted_at_their_real_size(name):
    rng = np.random.default_rng(1)
    base = {"x": rng.standard_normal((1, 4, 8, 8)).astype(np.float32)}
    extra = {"shape_tensor": np.array([1, 3, 224, 224], np.int64), "mask": np.ones((5, 7), bool)}
    c = codec(name)
    grown = len(c.encode({**base, **extra})) - len(c.encode(base))
    directory = header_size(list(extra), [v.shape for v in extra.values()]) - header_size([], [])
    assert grown == 4 * 8 + 35 + directory


@pytest.mark.parametrize("name", ALL)
def test_corrupt_or_truncated_bytes_raise_codec_error(name):
    c = codec(name)
    data = c.encode(mixed_tensors())
    damaged = [
        b"",
        data[:5],
        data[:19],
        data[:20],
        data[: len(data) // 2],
        data[:-1],
        data + b"\0",
        b"XXXX" + data[4:],
        data[:40] + bytes([data[40] ^ 0x10]) + data[41:],
        data[:-3] + bytes([data[-3] ^ 0x01]) + data[-2:],
    ]
    for bad in damaged:
        with pytest.raises(CodecError):
            c.decode(bad)
    with pytest.raises(CodecError):
        c.decode("not bytes")  # type: ignore[arg-type]


def test_bytes_of_one_codec_are_refused_by_another():
    data = codec("float16").encode({"x": np.ones((2, 2), np.float32)})
    with pytest.raises(CodecError, match="written by codec 'float16'"):
        codec("uniform").decode(data)


def test_consistent_crc_but_impossible_directory_raises_codec_error():
    x = np.ones(10, np.float32)
    short = container.Entry("x", x.dtype, x.shape, container.RAW, b"", b"\0" * 8)
    with pytest.raises(CodecError, match="payload bytes"):
        codec("none").decode(container.pack(0, [short]))
    bad_meta = container.Entry("x", x.dtype, x.shape, container.UNIFORM, struct.pack("<BBI", 1, 0, 1) + b"\0" * 8, b"\0" * 2)
    with pytest.raises(CodecError, match="uniform meta"):
        codec("uniform").decode(container.pack(3, [bad_meta]))
    foreign = container.Entry("x", x.dtype, x.shape, container.FLOAT16, b"", b"\0" * 20)
    with pytest.raises(CodecError, match="does not write"):
        codec("uniform").decode(container.pack(3, [foreign]))


def test_unsupported_inputs_raise_codec_error():
    with pytest.raises(CodecError, match="dtype"):
        codec("none").encode({"s": np.array(["a", "b"])})
    with pytest.raises(CodecError, match="dtype"):
        codec("float16").encode({"c": np.ones(3, np.complex64)})
    with pytest.raises(CodecError, match="names must be strings"):
        codec("none").encode({1: np.ones(3)})  # type: ignore[dict-item]


# --- none -------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [0, 3])
def test_none_is_bit_exact_including_nan_payloads(level):
    special = np.array([0x7FC01234, 0xFF800001, 0x80000000, 0x00000001, 0x7F800000, 0x3F800000], np.uint32)
    arrays = mixed_tensors()
    arrays["special"] = special.view(np.float32)
    arrays["special16"] = np.array([0x7E01, 0xFC00, 0x8000, 0x0001], np.uint16).view(np.float16)
    arrays["special64"] = np.array([0x7FF0000000000123], np.uint64).view(np.float64)
    c = codec("none", zstd=level)
    out = c.decode(c.encode(arrays))
    for k, v in arrays.items():
        v = np.asarray(v)
        assert out[k].tobytes() == v.tobytes() and out[k].dtype == v.dtype and out[k].shape == v.shape, k


def test_zstd_stage_shrinks_and_is_detected_from_the_bytes():
    x = np.maximum(np.random.default_rng(0).standard_normal((1, 16, 32, 32)), 0).astype(np.float32)
    x[:, ::2] = 0  # dead channels: plenty for zstd to find
    plain, packed = codec("none").encode({"x": x}), codec("none", zstd=3).encode({"x": x})
    assert len(packed) < 0.8 * len(plain)
    out = codec("none").decode(packed)  # a zstd-off instance still reads zstd bytes
    assert out["x"].tobytes() == x.tobytes()
    for name in ("float16", "bfloat16", "uniform"):
        a, b = codec(name), codec(name, zstd=9)
        assert np.array_equal(a.decode(b.encode({"x": x}))["x"], a.decode(a.encode({"x": x}))["x"])


# --- float16 / bfloat16 ------------------------------------------------------------------


def test_header_size_formula():
    assert header_size([], []) == 32
    assert header_size(["a"], [4]) == 32 + 17 + 1 + 32
    assert header_size(["ä"], [(1, 2)]) == header_size(["xy"], [2])  # UTF-8 bytes count
    assert header_size(["a", "bc"], [(1, 2, 3, 4), ()]) == 32 + (17 + 1 + 32) + (17 + 2)


@pytest.mark.parametrize("name", ["float16", "bfloat16"])
def test_half_codecs_are_exactly_half_the_float32_payload_plus_header(name):
    rng = np.random.default_rng(3)
    arrays = {
        "backbone/stage3/relu:0": rng.standard_normal((1, 256, 38, 38)).astype(np.float32),
        "x": rng.standard_normal((1, 3, 7)).astype(np.float32),
        "scalar": np.float32(1.0),
        "ünïcode": rng.standard_normal(11).astype(np.float32),
    }
    # feature maps at half; the scalar and the 11-vector are shape tensors, carried raw
    maps = sum(np.asarray(arrays[k]).nbytes for k in ("backbone/stage3/relu:0", "x"))
    side = sum(np.asarray(arrays[k]).nbytes for k in ("scalar", "ünïcode"))
    coded = len(codec(name).encode(arrays))
    assert maps % 2 == 0
    assert coded == maps // 2 + side + header_size(list(arrays), [np.shape(v) for v in arrays.values()])
    assert len(codec(name).encode({"t": arrays["x"]})) == 21 * 2 + header_size(["t"], [3])


def test_float16_saturates_out_of_range_and_keeps_inf_and_nan():
    x = np.array([[1e5, -1e6, 65519.0, 65520.0, np.inf, -np.inf, np.nan, 3.4e38, 1e-9, 0.1]], np.float32)
    y = codec("float16").decode(codec("float16").encode({"x": x}))["x"][0]
    assert y.dtype == np.float32
    assert y[:4].tolist() == [65504.0, -65504.0, 65504.0, 65504.0]
    assert y[4] == np.inf and y[5] == -np.inf and np.isnan(y[6])
    assert y[7] == 65504.0 and y[8] == 0.0
    assert abs(y[9] - 0.1) <= 0.1 * 2.0**-11


def test_float16_error_is_half_precision_rounding():
    x = np.random.default_rng(0).uniform(-1000, 1000, 10000).astype(np.float32)
    y = codec("float16").decode(codec("float16").encode({"x": x}))["x"]
    assert np.array_equal(y, x.astype(np.float16).astype(np.float32))


def test_bfloat16_rounds_to_nearest_even():
    cases = {
        0x3F808000: 0x3F80,  # tie, kept lsb even: down
        0x3F818000: 0x3F82,  # tie, kept lsb odd: up
        0x3F808001: 0x3F81,  # above half: up
        0x3F807FFF: 0x3F80,  # below half: down
        0xBF818000: 0xBF82,  # sign does not matter
        0x7F7FFFFF: 0x7F7F,  # float32 max would round to inf: saturates
        0xFF7FFFFF: 0xFF7F,
        0x7F800000: 0x7F80,  # inf stays inf
        0x00000001: 0x0000,  # tiny subnormal to zero
    }
    bits = np.array(list(cases), np.uint32)
    assert to_bfloat16_bits(bits.view(np.float32)).tolist() == list(cases.values())
    nans = np.array([0x7F800001, 0x7FFFFFFF, 0xFFFFFFFF, 0x7FC00000], np.uint32).view(np.float32)
    assert np.isnan(from_bfloat16_bits(to_bfloat16_bits(nans), np.dtype(np.float32))).all()


def test_bfloat16_round_trip_error_and_float16_inputs():
    x = np.random.default_rng(0).standard_normal((4, 100)).astype(np.float32) * 100
    y = codec("bfloat16").decode(codec("bfloat16").encode({"x": x}))["x"]
    assert np.all(np.abs(y - x) <= np.abs(x) * 2.0**-8)
    h = np.array([65504, -65504, 1.0, np.inf], np.float16)
    out = codec("bfloat16").decode(codec("bfloat16").encode({"h": h}))["h"]
    assert out.dtype == np.float16
    assert out.tolist() == [65504.0, -65504.0, 1.0, np.inf]  # 65504 rounds to 65536 in bf16: saturated back


# --- uniform -----------------------------------------------------------------------------


def _groups(x: np.ndarray, per_channel: bool) -> list[np.ndarray]:
    if per_channel and x.ndim >= 2:
        return [x[:, c] for c in range(x.shape[1])]
    return [x]


@pytest.mark.parametrize("bits", [2, 3, 4, 8, 11, 16])
@pytest.mark.parametrize("per_channel", [True, False])
def test_uniform_error_within_half_a_step_and_exact_payload_size(bits, per_channel):
    rng = np.random.default_rng(bits)
    x = (rng.standard_normal((2, 5, 9, 7)) * rng.uniform(0.1, 50, (1, 5, 1, 1)) + 3).astype(np.float32)
    x[:, 2] = -1.25  # a channel that is all equal
    c = codec("uniform", bits=bits, per_channel=per_channel)
    data = c.encode({"x": x})
    y = c.decode(data)["x"]
    assert y.dtype == np.float32 and y.shape == x.shape
    for xg, yg in zip(_groups(x, per_channel), _groups(y, per_channel)):
        step = (float(xg.max()) - float(xg.min())) / (2**bits - 1)
        err = np.abs(yg.astype(np.float64) - xg).max()
        assert err <= step / 2 + 1e-6 * max(1.0, float(np.abs(xg).max())), (bits, per_channel, err, step)
    if per_channel:
        assert np.array_equal(y[:, 2], x[:, 2])
    n_groups = 5 if per_channel else 1
    payload = len(data) - header_size(["x"], [4]) - (6 + 8 * n_groups)
    assert payload == math.ceil(x.size * bits / 8)


def test_uniform_constant_tensor_and_rank_one_per_tensor():
    c = codec("uniform", bits=2)
    x = np.full((1, 3, 4, 4), 7.125, np.float32)
    assert np.array_equal(c.decode(c.encode({"x": x}))["x"], x)
    v = np.linspace(-1, 1, 130, dtype=np.float32)  # > 64 elements: a feature map, not a shape tensor
    data = c.encode({"v": v})  # per_channel is on, but a rank-1 tensor has one group
    assert len(data) == header_size(["v"], [1]) + 6 + 8 + math.ceil(130 * 2 / 8)
    assert np.abs(c.decode(data)["v"] - v).max() <= (2 / 3) / 2 + 1e-6


def test_uniform_per_channel_beats_per_tensor_on_uneven_channels():
    rng = np.random.default_rng(0)
    x = (rng.random((1, 4, 16, 16)) * np.array([0.01, 1, 10, 100])[None, :, None, None]).astype(np.float32)
    err = {}
    for pc in (True, False):
        c = codec("uniform", bits=4, per_channel=pc)
        err[pc] = np.abs(c.decode(c.encode({"x": x}))["x"][:, 0] - x[:, 0]).max()
    assert err[True] < err[False] / 10  # channel 0 spans 0.01: per tensor it is all one level


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_uniform_refuses_nan_and_inf_naming_the_tensor(bad):
    x = np.ones((1, 2, 3, 3), np.float32)
    x[0, 1, 2, 2] = bad
    with pytest.raises(CodecError, match="'cut/relu_7'") as err:
        codec("uniform").encode({"fine": np.ones(3, np.float32), "cut/relu_7": x})
    assert err.value.key == "cut/relu_7"


def test_uniform_float16_and_float64_inputs():
    rng = np.random.default_rng(0)
    h = rng.standard_normal((1, 3, 5, 5)).astype(np.float16)
    d = rng.standard_normal((2, 3))
    out = codec("uniform", bits=8).decode(codec("uniform", bits=8).encode({"h": h, "d": d}))
    assert out["h"].dtype == np.float16 and out["d"].dtype == np.float64
    step = (float(h.max()) - float(h.min())) / 255
    assert np.abs(out["h"].astype(np.float64) - h).max() <= step / 2 + 2.0**-10 * float(np.abs(h).max())


@pytest.mark.parametrize("bits", range(2, 17))
def test_bit_packing_round_trips_every_width(bits):
    rng = np.random.default_rng(bits)
    for n in (0, 1, 7, 8, 9, 1000, (1 << 20) + 13):
        q = rng.integers(0, 2**bits, n).astype(np.uint16)
        packed = pack_bits(q, bits)
        assert len(packed) == math.ceil(n * bits / 8)
        assert np.array_equal(unpack_bits(packed, n, bits), q)


def test_codec_reports_its_setting_and_rejects_non_string_names():
    c = codec("uniform", bits=4)
    assert c.setting == setting("uniform", {"bits": 4})
    with pytest.raises(CodecError, match="must be a string"):
        setting(None)  # type: ignore[arg-type]


def test_label_shows_rate_knob_and_non_defaults_only():
    from tasks.codecs import label, setting

    assert label(setting("nncodec", {"qp": -18})) == "nncodec qp=-18"
    assert label(setting("nncodec", {"qp": -18, "use_dq": False})) == "nncodec qp=-18 use_dq=False"
    assert label(setting("uniform", {"bits": 4})) == "uniform bits=4"
    assert label(setting("uniform", {"bits": 8, "per_channel": False})) == "uniform bits=8 per_channel=False"
    assert label(setting("float16")) == "float16"
    assert label(setting("none", {"zstd": 3})) == "none zstd=3"
