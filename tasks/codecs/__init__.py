"""Codec registry: what turns the tensors crossing a network cut into bytes and back.

    setting("nncodec", {"qp": -38})          → CodecSetting (validated, defaults filled)
    setting_grid("uniform", {"bits": [8, 4]}) → [CodecSetting, ...] (cartesian product)
    build(setting)                            → Codec with encode(arrays) / decode(bytes)

Built-in codecs: ``none`` (raw, bit-exact), ``float16``, ``bfloat16``, ``uniform``
(2–16-bit min/max quantization), ``nncodec`` (NNCodec at an absolute QP); all but
``nncodec`` take ``zstd: <level>`` for a lossless zstd stage. Image codecs for remote
inference (the split ``input``: the picture is coded, the whole model runs on the
server): ``jpeg``, ``webp``, ``avif`` (Pillow) and ``hevc`` (libx265 through PyAV); they
write the standard bitstream itself (``image.ImageCodec``), see ``is_image_codec``.
``hevc`` is also a tensor codec (``is_tensor_codec``): at node splits it codes the cut's
feature maps packed into one monochrome frame, and with ``sequence: true`` a video's
frames as one stream with inter prediction (``tasks.sequence``). Every codec writes one
self-describing byte string (see ``container``): ``coded_bytes = len(encode(arrays))``.
Shape tensors (non-float tensors, float scalars and float vectors of at most 64 elements,
empty tensors; see ``tasks.tensorkinds``) pass through losslessly in every codec, as raw
side data counted in ``coded_bytes``; float16 tensors come back as float16.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from ..errors import CodecError
from ..registry import REQUIRED, Field, Registry, qualified_key
from ..rows import CodecSetting
from .avif import AvifCodec
from .base import Codec, CodecInfo
from .container import header_size
from .floats import BFloat16Codec, Float16Codec, NoneCodec
from .hevc import HevcCodec
from .image import ImageCodec
from .jpeg import JpegCodec
from .nnc import NncodecCodec
from .uniform import UniformCodec
from .webp import WebpCodec

__all__ = [
    "Codec",
    "CodecInfo",
    "Field",
    "REQUIRED",
    "CODECS",
    "setting",
    "setting_grid",
    "build",
    "names",
    "describe",
    "header_size",
    "label",
    "ImageCodec",
    "is_image_codec",
    "is_tensor_codec",
    "image_codec_names",
]

CODECS: Registry[type[Codec]] = Registry(
    "codec",
    CodecError,
    (NoneCodec, Float16Codec, BFloat16Codec, UniformCodec, NncodecCodec, JpegCodec, WebpCodec, AvifCodec, HevcCodec),
)


def is_image_codec(name: str) -> bool:
    """True for the codecs of the remote-inference split ``input`` (they code the picture, not cut tensors)."""
    return isinstance(name, str) and name in CODECS and issubclass(CODECS.get(name), ImageCodec)


def is_tensor_codec(name: str) -> bool:
    """True for the codecs of node splits (they code the cut tensors); ``hevc`` is both kinds."""
    if not isinstance(name, str) or name not in CODECS:
        return False
    cls = CODECS.get(name)
    return not issubclass(cls, ImageCodec) or bool(getattr(cls, "codes_tensors", False))


def image_codec_names() -> list[str]:
    return [n for n in CODECS.names() if is_image_codec(n)]


def setting(
    name: str, params: Mapping[str, Any] | None = None, *, file: str | None = None, key: str | None = None
) -> CodecSetting:
    """Validate a codec name and its settings; the result has every setting filled in."""
    cls = _lookup(name, file=file, key=key)
    return CodecSetting(name, cls.validate(params if params is not None else {}, file=file, key=key))


def setting_grid(
    name: str, params_with_lists: Mapping[str, Any] | None = None, *, file: str | None = None, key: str | None = None
) -> list[CodecSetting]:
    """Expand list values to their cartesian product, e.g. ``{"qp": [-38, -26]}`` → two settings.

    Keys vary in sorted order (the last key fastest), values in the order written;
    a setting that appears twice (``[8, 8]``, or a default spelled out) is kept once.
    """
    cls = _lookup(name, file=file, key=key)
    if not isinstance(params_with_lists, (Mapping, type(None))):
        raise CodecError(
            f"settings of codec {name!r} must be a mapping, got {type(params_with_lists).__name__}",
            file=file,
            key=key,
        )
    params = dict(params_with_lists or {})
    axes = []
    for k in sorted(params, key=str):
        values = params[k]
        if isinstance(values, (list, tuple)):
            if not values:
                raise CodecError(
                    f"codec {name!r} setting {k!r} lists no values", file=file, key=qualified_key(key, str(k))
                )
            axes.append([(k, v) for v in values])
        else:
            axes.append([(k, values)])
    out: list[CodecSetting] = []
    for combo in itertools.product(*axes):
        s = CodecSetting(name, cls.validate(dict(combo), file=file, key=key))
        if s not in out:
            out.append(s)
    return out


def build(codec_setting: CodecSetting) -> Codec:
    """A ready codec; the settings are validated again (they may come from a stored row)."""
    return _lookup(codec_setting.codec)(codec_setting.params)


def _lookup(name: object, *, file: str | None = None, key: str | None = None) -> type[Codec]:
    if not isinstance(name, str):
        raise CodecError(f"a codec name must be a string, got {name!r}", file=file, key=key, allowed=CODECS.names())
    return CODECS.get(name, file=file, key=key)


def names() -> list[str]:
    return CODECS.names()


def describe() -> list[CodecInfo]:
    """Every codec with its settings (type, default, allowed values, meaning) and losslessness."""
    return [CODECS.get(n).info() for n in CODECS.names()]


def label(setting: CodecSetting) -> str:
    """A short name for tables and legends: settings that differ from their defaults,
    plus the codec's rate knob (``qp``, ``bits``) always: ``nncodec qp=-18``, ``uniform bits=4``."""
    cls = _lookup(setting.codec)
    parts = [setting.codec]
    for s in cls.fields:
        if s.name not in setting.params:
            continue
        value = setting.params[s.name]
        if s.default is REQUIRED or s.name == "bits" or value != s.default:
            parts.append(f"{s.name}={value}")
    return " ".join(parts)
