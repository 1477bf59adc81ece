"""Image codecs for remote inference (jpeg, webp, avif, hevc) on a real demo photo."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from orchestrator.data.demo_data import ensure_demo_images
from tasks.codecs import build, describe, image_codec_names, is_image_codec, is_tensor_codec, label, setting
from tasks.codecs import hevc as hevc_module
from tasks.codecs.image import ImageCodec, image_psnr
from tasks.errors import CodecError

# (codec, low setting, high setting, PSNR range in dB of the low setting on astronaut.png)
RATE_KNOBS = {
    "jpeg": ("quality", 30, 90, (28.0, 36.0)),
    "webp": ("quality", 30, 90, (28.0, 36.0)),
    "avif": ("quality", 30, 90, (28.0, 36.0)),
    "hevc": ("qp", 42, 22, (26.0, 33.0)),
}
MAGIC = {"jpeg": b"\xff\xd8\xff", "webp": b"RIFF", "avif": b"\x00\x00\x00", "hevc": b"\x00\x00\x00\x01\x40\x01"}
PILLOW_FORMAT = {"jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF"}


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """astronaut.png (scikit-image, public domain) as Pillow decodes it: the reference pixels."""
    with Image.open(ensure_demo_images() / "astronaut.png") as img:
        return np.asarray(img.convert("RGB"))


def test_registered_as_image_codecs_with_documented_settings():
    assert image_codec_names() == ["avif", "hevc", "jpeg", "webp"]
    infos = {i.name: i for i in describe()}
    for name, (knob, *_rest) in RATE_KNOBS.items():
        assert is_image_codec(name) and not infos[name].lossless and infos[name].doc
        assert next(s for s in infos[name].settings if s.name == knob).required
    assert not any(is_image_codec(n) for n in ("none", "float16", "uniform", "nncodec", "nope"))


@pytest.mark.parametrize("name", sorted(RATE_KNOBS))
def test_round_trip_of_a_real_photo(name, photo):
    knob, low, high, (lo_db, hi_db) = RATE_KNOBS[name]
    codec = build(setting(name, {knob: low}))
    data = codec.encode_image(photo)
    assert isinstance(data, bytes) and data.startswith(MAGIC[name])
    if not is_tensor_codec(name):  # hevc's generic entry point codes cut tensors (tests/test_hevc_features.py)
        assert codec.encode({"image": photo}) == data  # the generic entry point sends the same bitstream
    decoded = codec.decode_image(data)
    assert decoded.shape == photo.shape and decoded.dtype == np.uint8 and decoded.flags.writeable
    mse, psnr = image_psnr(photo, decoded)
    assert lo_db < psnr < hi_db, psnr
    assert mse == pytest.approx(np.mean((decoded.astype(float) - photo) ** 2))
    # the rate knob does what it says: more bytes, less distortion
    better = build(setting(name, {knob: high}))
    richer = better.encode_image(photo)
    assert len(richer) > 1.5 * len(data)
    assert image_psnr(photo, better.decode_image(richer))[1] > psnr + 2
    assert label(codec.setting) == f"{name} {knob}={low}"


@pytest.mark.parametrize("name", sorted(PILLOW_FORMAT))
def test_pillow_bitstreams_are_plain_files_any_reader_decodes(name, photo):
    """coded bytes are exactly the file: Pillow alone opens it and gets the codec's pixels."""
    codec = build(setting(name, {"quality": 60}))
    data = codec.encode_image(photo)
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == PILLOW_FORMAT[name] and img.size == (photo.shape[1], photo.shape[0])
        assert np.array_equal(np.asarray(img.convert("RGB")), codec.decode_image(data))


def test_hevc_stream_is_annex_b_that_ffmpeg_decodes_alone(photo):
    import av

    codec = build(setting("hevc", {"qp": 32}))
    data = codec.encode_image(photo)
    nal_types = [(data[i + 3] >> 1) & 0x3F for i in range(len(data) - 4) if data[i : i + 3] == b"\x00\x00\x01"]
    assert nal_types[:3] == [32, 33, 34]  # VPS, SPS, PPS; then an IRAP slice, no SEI (info=0)
    assert 39 not in nal_types and any(16 <= t <= 21 for t in nal_types)
    ctx = av.CodecContext.create("hevc", "r")
    frames = [*ctx.decode(av.Packet(data)), *ctx.decode(None)]
    assert len(frames) == 1 and (frames[0].width, frames[0].height) == (photo.shape[1], photo.shape[0])
    assert np.array_equal(frames[0].to_ndarray(format="rgb24"), codec.decode_image(data))


def test_hevc_odd_sizes_come_back_at_their_size(photo):
    odd = np.ascontiguousarray(photo[:301, :255])
    codec = build(setting("hevc", {"qp": 30}))
    data = codec.encode_image(odd)
    back = codec.decode_image(data)
    assert back.shape == odd.shape and image_psnr(odd, back)[1] > 28


@pytest.mark.parametrize(
    "name, params, key, allowed",
    [
        ("jpeg", {"quality": 0}, "codecs.jpeg.quality", "int in [1, 100]"),
        ("jpeg", {"quality": 101}, "codecs.jpeg.quality", "int in [1, 100]"),
        ("hevc", {"qp": 60}, "codecs.hevc.qp", "int in [0, 51]"),
        ("webp", {"quality": 101}, "codecs.webp.quality", "int in [0, 100]"),
        ("jpeg", {}, "codecs.jpeg.quality", "int in [1, 100]"),
    ],
)
def test_out_of_range_settings_name_the_key(name, params, key, allowed):
    with pytest.raises(CodecError) as err:
        setting(name, params, file="s.yaml", key=f"codecs.{name}")
    assert (err.value.file, err.value.key, err.value.allowed) == ("s.yaml", key, allowed)


def test_missing_libx265_says_how_to_install(monkeypatch):
    # Stand in for an FFmpeg build without libx265 (the `av` wheel here has it).
    monkeypatch.setattr(hevc_module, "available", lambda: False)
    with pytest.raises(CodecError, match="pip install av") as err:
        setting("hevc", {"qp": 30}, file="s.yaml", key="codecs.hevc")
    assert err.value.key == "codecs.hevc"


def test_image_codecs_refuse_tensors_and_damaged_bytes(photo):
    for name in image_codec_names():
        codec = build(setting(name, {RATE_KNOBS[name][0]: 30}))
        assert isinstance(codec, ImageCodec)
        if not is_tensor_codec(name):  # hevc codes tensors too: tests/test_hevc_features.py
            with pytest.raises(CodecError, match="codes RGB images"):
                codec.encode({"feat": np.zeros((1, 8, 4, 4), np.float32)})
            with pytest.raises(CodecError, match="one RGB image"):
                codec.encode({"a": photo, "b": photo})
        data = codec.encode_image(photo[:64, :64].copy())
        with pytest.raises(CodecError, match="damaged"):
            codec.decode_image(data[: len(data) // 3] if name != "hevc" else b"\x00\x00\x01garbage")
