"""``nncodec``: NNCodec (Fraunhofer HHI, ISO/IEC 15938-17 NNR) through its core coder, in memory.

Only ``nncodec.nnc_core`` is used — the path ``nnc.compress`` takes (NNRModel →
init_approx_data / ApproxInfo → approx → coder.encode; coder.decode → rec →
recompose_params) gives byte-identical bitstreams without importing torch, torchvision
or writing ``./*_bitstream.nnc`` files that concurrent workers would overwrite.

All float tensors go into **one** NNR bitstream (the container's shared stream), named
``"0"``, ``"1"``, … in encoding order; the container directory keeps the real names,
shapes and dtypes. One stream, as ``nnc.compress`` does for a model's weights: one start
and one parameter-set unit instead of one per tensor, one coder call; NNR restarts its
CABAC contexts per tensor anyway, so nothing is lost in rate. The index names also
avoid NNCodec's special meaning of names ending in ``_G`` / ``_H`` (decomposed tensors)
and never send a name twice. Shape tensors (non-float, 0-d, short vectors) pass through raw; float16 / float64
tensors are coded as float32 and cast back (float16 saturating at ±65504).

QP is an absolute step size, not relative to the tensor's range: with qp_density ``d``
and ``k = 2**d``, ``Δ = (k + qp mod k) · 2**(qp // k − d)`` (``step_size``), for the
default ``d = 2`` about ``2**(qp / 4)``. Without dependent quantization the error is at
most ``Δ / 2``; with it (the default) each of its two quantizers has step ``2Δ`` and the
trellis picks levels by rate and distortion, so the error stays below ``2Δ`` (measured
up to 1.75Δ). So at the same QP dependent quantization gives fewer bytes *and* more
distortion (on a ReLU activation: 7–27% fewer bytes, ~4.7 dB lower PSNR; at equal PSNR
it saves only 0–2%): compare the two at equal distortion, not at equal QP. The QP is written as a signed ``6 + d``-bit number: values outside
``[−2**(5+d), 2**(5+d) − 1]`` would silently wrap, so they are rejected. 1-D and 0-D
tensors are coded at ``nonweight_qp`` (NNCodec treats them as biases). When ``|x| / Δ``
would overflow int32 NNCodec raises that tensor's QP (printing an INFO line); if even
the largest QP cannot hold the values, CodecError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import CodecError
from ..tensorkinds import is_feature_map
from . import container
from .base import FLOAT_DTYPES, REQUIRED, Codec, Field, check_arrays, qualified_key
from .floats import to_float16

__all__ = ["NncodecCodec", "encode_arrays", "decode_arrays", "step_size", "qp_range", "SETTINGS"]

SETTINGS = (
    Field(
        "qp",
        int,
        REQUIRED,
        "quantization parameter: absolute step Δ ≈ 2^(qp/4) at qp_density 2 "
        "(−38 → 0.0015, −18 → 0.047, 0 → 1)",
        range_text="int in [-128, 127] at qp_density 2; [-2^(5+d), 2^(5+d)-1] in general",
    ),
    Field(
        "use_dq",
        bool,
        True,
        "dependent (trellis-coded) quantization: 7–27% fewer bytes at the same QP but about "
        "4.7 dB lower PSNR (error up to 2Δ instead of Δ/2); at equal PSNR 0–2% fewer bytes; "
        "slower encode",
    ),
    Field("qp_density", int, 2, "QP steps per doubling of Δ are 2^qp_density", low=0, high=7),
    Field(
        "nonweight_qp",
        int,
        -75,
        "QP for 1-D and 0-D tensors, which NNCodec codes as non-weights (−75: nearly lossless)",
        range_text="same range as qp",
    ),
    Field("param_opt", bool, True, "NNCodec's CABAC parameter optimization (slightly fewer bytes)"),
    Field(
        "row_skipping",
        bool,
        True,
        "signal all-zero slices along axis 0 instead of coding them (helps only when axis 0 > 1)",
    ),
)

_CABAC_UNARY_LENGTH_MINUS1 = 10  # nnc.compress's default


def qp_range(qp_density: int = 2) -> tuple[int, int]:
    """Inclusive range of a QP that NNR's (6 + qp_density)-bit field can carry."""
    lim = 1 << (5 + qp_density)
    return -lim, lim - 1


def step_size(qp: int, *, qp_density: int = 2) -> float:
    """NNR quantization step Δ for a QP (as ``nnc_core.common.get_stepsize_from_qp``)."""
    k = 1 << qp_density
    return float((k + (qp & (k - 1))) * 2.0 ** ((qp >> qp_density) - qp_density))


class NncodecCodec(Codec):
    name = "nncodec"
    wire_id = 4
    lossless = False
    doc = (
        "NNCodec (ISO/IEC 15938-17) at an absolute QP through its in-memory core coder; all "
        "float tensors in one NNR bitstream. Cannot carry NaN or inf."
    )
    fields = SETTINGS

    @classmethod
    def check_together(cls, params: dict[str, Any], *, file: str | None, key: str | None) -> None:
        lo, hi = qp_range(params["qp_density"])
        for name in ("qp", "nonweight_qp"):
            if not lo <= params[name] <= hi:
                raise CodecError(
                    f"nncodec {name} {params[name]} does not fit NNR's QP field at "
                    f"qp_density {params['qp_density']}",
                    file=file,
                    key=qualified_key(key, name),
                    allowed=f"int in [{lo}, {hi}]",
                )

    def encode(self, arrays: Mapping[str, np.ndarray]) -> bytes:
        return _encode(check_arrays(arrays), self.params)

    def decode(self, data: bytes) -> dict[str, np.ndarray]:
        return _decode(self._unpack(data))


def encode_arrays(arrays: Mapping[str, np.ndarray], *, qp: int, **settings: Any) -> bytes:
    """NNCodec-code tensors at ``qp`` into self-describing bytes (settings: see SETTINGS)."""
    params = NncodecCodec.validate({"qp": qp, **settings})
    return _encode(check_arrays(arrays), params)


def decode_arrays(data: bytes) -> dict[str, np.ndarray]:
    """Inverse of encode_arrays: the same names, shapes and dtypes."""
    box = container.unpack(data)
    if box.codec_id != NncodecCodec.wire_id:
        raise CodecError(f"these bytes were written by codec {container.codec_name(box.codec_id)!r}, not 'nncodec'")
    return _decode(box)


def _encode(tensors: list[tuple[str, np.ndarray]], params: Mapping[str, Any]) -> bytes:
    entries = []
    coded: dict[str, np.ndarray] = {}
    for name, arr in tensors:
        if arr.dtype not in FLOAT_DTYPES or not is_feature_map(arr):  # shape tensors: side data, bit-exact
            entries.append(container.raw_entry(name, arr))
            continue
        with np.errstate(over="ignore"):
            x = arr.astype(np.float32)
        if not np.isfinite(x).all():
            bad = "NaN" if np.isnan(x).any() else "inf" if np.isinf(arr).any() else "values beyond float32"
            raise CodecError(f"nncodec cannot carry {bad}: tensor {name!r} contains it", key=name)
        coded[str(len(coded))] = x.reshape(arr.shape or (1,))
        entries.append(container.Entry(name, arr.dtype, arr.shape, container.NNR, b"", b""))
    stream = _nnr_encode(coded, params, [e.name for e in entries if e.method == container.NNR]) if coded else b""
    return container.pack(NncodecCodec.wire_id, entries, stream=stream)


def _nnr_encode(coded: dict[str, np.ndarray], params: Mapping[str, Any], names: list[str]) -> bytes:
    from nncodec.nnc_core import approximator, coder, nnr_model

    qp, nonweight_qp, density = params["qp"], params["nonweight_qp"], params["qp_density"]
    model = nnr_model.NNRModel(coded)
    approx_data = approximator.init_approx_data(coded, model.model_info, qp_density=density, scan_order=0)
    # explicit per-tensor QPs: ApproxInfo reads nonweight_qp=0 as "unset" (falls back to qp - 8)
    qp_per_tensor = {k: np.int32(qp if v.ndim > 1 else nonweight_qp) for k, v in coded.items()}
    approx_info = approximator.ApproxInfo(
        approx_data,
        model.model_info,
        "uniform",
        0,  # codebook_mode
        qp,
        False,  # opt_qp
        not params["use_dq"],
        _CABAC_UNARY_LENGTH_MINUS1,
        0,  # lambda_scale
        nonweight_qp=nonweight_qp,
        qp_per_tensor=qp_per_tensor,
        int_quant_bw=False,
    ).approx_info
    enc_info = {  # as nnc.compress builds it for a base model (general profile)
        "cabac_unary_length_minus1": _CABAC_UNARY_LENGTH_MINUS1,
        "param_opt_flag": params["param_opt"],
        "partial_data_counter": 0,
        "general_profile_idc": 1,
        "node_id_present_flag": 1,
        "device_id": 0,
        "mps_parent_signalling_enabled_flag": 0,
        "parent_node_id_present_flag": 0,
        "temporal_context_modeling_flag": 0,
        "row_skip_enabled_flag": 1 if params["row_skipping"] else 0,
        "pre_signalling": 0,
    }
    try:
        approx_enc = approximator.approx(approx_info, model.model_info, approx_data, enc_info)
        bitstream, _ = coder.encode(enc_info=enc_info, model_info=model.model_info, approx_data=approx_enc)
    except (SystemExit, RuntimeError) as exc:  # NNCodec reports bad input by SystemExit / pybind RuntimeError
        raise CodecError(f"NNCodec refused the input: {str(exc).strip()}") from None
    lo, hi = qp_range(density)
    for k, name in zip(coded, names):
        used = int(approx_enc["qp"][k])
        if not lo <= used <= hi:
            raise CodecError(
                f"tensor {name!r}: values up to {float(np.abs(coded[k]).max()):.3g} overflow NNCodec's "
                f"integer levels even at its largest step (QP would be {used})",
                key=name,
            )
    return bytes(bitstream)


def _decode(box: container.Container) -> dict[str, np.ndarray]:
    nnr = [e for e in box.entries if e.method == container.NNR]
    decoded = _nnr_decode(box.stream) if nnr else {}
    if len(decoded) != len(nnr):
        raise CodecError(f"damaged bytes: NNR stream holds {len(decoded)} tensors, directory lists {len(nnr)}")
    out = {}
    index = 0
    for e in box.entries:
        if e.method == container.RAW:
            out[e.name] = container.raw_array(e)
            continue
        if e.method != container.NNR or e.dtype not in FLOAT_DTYPES or len(e.payload):
            raise CodecError(f"damaged bytes: tensor {e.name!r} has a payload nncodec does not write")
        x = decoded.get(str(index))
        index += 1
        if x is None or x.size != e.size:
            raise CodecError(f"damaged bytes: NNR tensor for {e.name!r} is missing or has the wrong size")
        x = np.asarray(x, np.float32).reshape(e.shape)
        out[e.name] = to_float16(x) if e.dtype == np.float16 else x.astype(e.dtype, copy=False)
    return out


def _nnr_decode(stream: bytes | memoryview) -> dict[str, np.ndarray]:
    from nncodec.nnc_core import approximator, coder

    model_info: dict[str, Any] = {  # what nnc.decompress starts from
        "parameter_type": {},
        "parameter_dimensions": {},
        "parameter_index": {},
        "block_identifier": {},
        "topology_storage_format": None,
        "topology_compression_format": None,
        "performance_maps": {"mps": {}, "lps": {}},
        "performance_map_flags": {
            f"{unit}_{flag}": {}
            for unit in ("mps", "lps")
            for flag in ("sparsification_flag", "pruning_flag", "unification_flag", "decomposition_performance_map_flag")
        },
    }
    # The container's crc32 already rejected damaged bytes, so a failure here means a stream
    # NNCodec did not write (forged or another producer): its parser then fails with
    # assorted Python errors (assert, IndexError, SystemExit, ...), all of them input errors.
    try:
        approx_data = coder.decode(bytearray(stream), model_info, oob_dict={}, hls_stats={})
        approximator.rec(approx_data)
        approx_data = approximator.recompose_params(model_info, approx_data)
    except (SystemExit, Exception) as exc:
        raise CodecError(f"not a valid NNR stream ({type(exc).__name__}: {str(exc).strip()})") from exc
    return approx_data["parameters"]
