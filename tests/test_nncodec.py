"""The nncodec codec: NNCodec's in-memory core coder, its settings, errors and worker hygiene."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tasks.codecs import build, container, setting
from tasks.codecs.nnc import _nnr_encode, decode_arrays, encode_arrays, qp_range, step_size
from tasks.errors import CodecError
from tests.graphs import relu_activation

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def activation() -> np.ndarray:
    x = relu_activation((1, 256, 38, 38))
    assert x.nbytes == 1_478_656
    assert 0.4 < (x == 0).mean() < 0.8  # ReLU-sparse, but not trivially so
    return x


@pytest.fixture(scope="module")
def coded(activation) -> dict[tuple[int, bool], bytes]:
    return {
        (qp, dq): encode_arrays({"act": activation}, qp=qp, use_dq=dq)
        for qp in (-38, -26, -18, -10, 0)
        for dq in (True, False)
    }


def test_step_size_matches_nncodec():
    from nncodec.nnc_core.common import get_stepsize_from_qp

    for density in (0, 1, 2, 3, 7):
        lo, hi = qp_range(density)
        for qp in (lo, -38, -17, -1, 0, 5, hi):
            assert step_size(qp, qp_density=density) == get_stepsize_from_qp(np.int32(qp), density)
    assert step_size(-38) == pytest.approx(2 ** (-38 / 4), rel=0.1)
    assert qp_range(2) == (-128, 127)


@pytest.mark.parametrize("qp", [-38, -26, -18, -10, 0])
def test_decoded_within_the_step_size(activation, coded, qp):
    delta = step_size(qp)
    plain = decode_arrays(coded[(qp, False)])["act"]
    assert plain.dtype == np.float32 and plain.shape == activation.shape
    ulp = float(activation.max()) * 2.0**-23  # float32 rounding of the reconstructed value
    assert np.abs(plain - activation).max() <= delta / 2 + ulp
    # dependent quantization: two interleaved quantizers of step 2Δ, levels chosen by a trellis
    dq = decode_arrays(coded[(qp, True)])["act"]
    err = np.abs(dq - activation).max()
    assert delta / 2 < err <= 2 * delta
    assert (dq[activation == 0] == 0).mean() > 0.99  # zeros stay (almost all) zero


def test_coded_size_strictly_falls_as_qp_rises(coded):
    for dq in (True, False):
        sizes = [len(coded[(qp, dq)]) for qp in (-38, -26, -18, -10, 0)]
        assert all(a > b for a, b in zip(sizes, sizes[1:])), sizes
    # dependent quantization buys bytes at every QP
    assert all(len(coded[(qp, True)]) < len(coded[(qp, False)]) for qp in (-38, -18, 0))


def test_codec_and_low_level_helpers_write_the_same_bytes(activation):
    x = activation[:, :32]
    via_codec = build(setting("nncodec", {"qp": -18, "use_dq": False})).encode({"act": x})
    assert via_codec == encode_arrays({"act": x}, qp=-18, use_dq=False)
    assert via_codec == encode_arrays({"act": x}, qp=-18, use_dq=False)  # deterministic
    assert np.array_equal(build(setting("nncodec", {"qp": 0})).decode(via_codec)["act"], decode_arrays(via_codec)["act"])


def test_settings_change_the_bitstream(activation):
    x = activation[:, :32]
    base = encode_arrays({"act": x}, qp=-18)
    assert len(encode_arrays({"act": x}, qp=-18, param_opt=False)) > len(base)
    dense = encode_arrays({"act": x}, qp=-36, qp_density=3)  # same Δ as qp -18 at density 2
    assert step_size(-36, qp_density=3) == step_size(-18)
    assert abs(len(dense) - len(base)) < 0.02 * len(base)
    assert np.abs(decode_arrays(dense)["act"] - x).max() <= 2 * step_size(-18)


def test_many_tensors_in_one_stream_with_awkward_names_and_dtypes():
    rng = np.random.default_rng(0)
    arrays = {
        "conv_G": rng.standard_normal((1, 4, 6, 6)).astype(np.float32),  # NNCodec's decomposition suffixes
        "conv_H": rng.standard_normal((2, 3)).astype(np.float32),
        "bias": rng.standard_normal(17).astype(np.float32),  # 1-D: coded at nonweight_qp
        "scalar": np.float32(-3.25),
        "half": rng.standard_normal((1, 2, 5, 5)).astype(np.float16),
        "double": rng.standard_normal((3, 4)),
        "shape": np.array([1, 4, 6, 6], np.int64),
        "q": rng.integers(-128, 128, (3, 3)).astype(np.int8),
        "empty": np.zeros((1, 0, 4), np.float32),
    }
    data = encode_arrays(arrays, qp=-20, use_dq=False)
    box = container.unpack(data)
    assert len(box.stream) > 0 and all(len(e.payload) == 0 for e in box.entries if e.method == container.NNR)
    out = decode_arrays(data)
    assert list(out) == list(arrays)
    for k, v in arrays.items():
        v = np.asarray(v)
        assert out[k].dtype == v.dtype and out[k].shape == v.shape, k
    assert np.array_equal(out["shape"], arrays["shape"]) and np.array_equal(out["q"], arrays["q"])
    delta = step_size(-20)
    ulp = 2.0**-21  # float32 rounding of values below 4 (and of the float64 tensor's cast)
    assert np.abs(out["conv_G"] - arrays["conv_G"]).max() <= delta / 2 + ulp
    assert np.abs(out["double"] - arrays["double"]).max() <= delta / 2 + ulp
    fine = step_size(-75)
    assert np.abs(out["bias"] - arrays["bias"]).max() <= fine
    assert abs(float(out["scalar"]) + 3.25) <= fine
    assert np.abs(out["half"].astype(np.float32) - arrays["half"]).max() <= delta / 2 + 2.0**-10 * 4


@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "inf")])
def test_nan_and_inf_are_codec_errors_naming_the_tensor(bad, word):
    x = np.ones((1, 2, 4, 4), np.float32)
    x[0, 1, 3, 3] = bad
    with pytest.raises(CodecError, match=word) as err:
        encode_arrays({"ok": np.ones((2, 2), np.float32), "cut:0": x}, qp=-20)
    assert err.value.key == "cut:0"
    with pytest.raises(CodecError):
        build(setting("nncodec", {"qp": -20})).encode({"cut:0": x})


def test_setting_errors_are_codec_errors_not_system_exit():
    x = np.ones((1, 2, 4, 4), np.float32)
    for kwargs in ({"qp": -129}, {"qp": 200}, {"qp": -20, "dq": True}, {"qp": -20, "qp_density": 9}, {"qp": 1.5}):
        with pytest.raises(CodecError):
            encode_arrays({"x": x}, **kwargs)


def test_values_beyond_nncodec_integer_range_are_codec_errors():
    x = np.full((1, 2, 4, 4), 1e30, np.float32)
    with pytest.raises(CodecError, match="overflow"):
        encode_arrays({"big": x}, qp=-38)


def test_nncodec_own_failures_become_codec_errors():
    # past our NaN/inf guard NNCodec's coder itself refuses (a pybind RuntimeError here)
    x = np.ones((1, 2, 4, 4), np.float32)
    x[0, 0, 0, 0] = np.inf
    params = setting("nncodec", {"qp": -20}).params
    with pytest.raises(CodecError, match="NNCodec refused"):
        _nnr_encode({"0": x}, params, ["x"])


def test_forged_nnr_stream_with_a_valid_checksum_is_a_codec_error():
    x = np.ones((1, 2, 4, 4), np.float32)
    box = container.unpack(encode_arrays({"x": x}, qp=-20))
    rng = np.random.default_rng(0)
    for junk in (bytes(box.stream[:-5]), rng.integers(0, 256, len(box.stream), dtype=np.uint8).tobytes()):
        forged = container.pack(4, box.entries, stream=junk)
        with pytest.raises(CodecError):
            decode_arrays(forged)


def test_worker_path_imports_no_torch_and_writes_no_files(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "from tasks.codecs import build, setting\n"
        "c = build(setting('nncodec', {'qp': -18}))\n"
        "x = np.maximum(np.random.default_rng(0).standard_normal((1, 8, 16, 16)), 0).astype(np.float32)\n"
        "y = c.decode(c.encode({'x': x}))['x']\n"
        "assert np.abs(y - x).max() < 0.1\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision'))\n"
        "print('LOADED', bad)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "LOADED []" in res.stdout
    assert list(tmp_path.iterdir()) == []  # no ./*_bitstream.nnc


def test_nonweight_qp_applies_to_one_dimensional_tensors_even_when_zero():
    v = np.linspace(-3, 3, 101, dtype=np.float32)
    # NNCodec's ApproxInfo would read nonweight_qp=0 as unset and use qp - 8 (finer): we pass it explicitly
    out = decode_arrays(encode_arrays({"v": v}, qp=-20, nonweight_qp=0, use_dq=False))["v"]
    err = np.abs(out - v).max()
    assert step_size(-28) < err <= step_size(0) / 2
