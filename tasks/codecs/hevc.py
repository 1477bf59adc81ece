"""``hevc``: HEVC (libx265 through PyAV) for the picture at the split ``input`` and for packed cut tensors.

One codec name, two things coded, chosen by the split (the way MPEG FCM's tooling uses
the same video codec for its remote-inference anchor and for features):

* **the picture** (remote inference, ``encode_image`` / ``decode_image``): converted to
  YUV 4:2:0 8-bit by FFmpeg's swscale (BT.601, limited range, FFmpeg's default for
  ``rgb24 → yuv420p``), one intra frame at a constant QP (``qp=N``: no rate control),
  written as an Annex-B stream (VPS, SPS, PPS, slice) without x265's informational SEI
  (``info=0``). 4:2:0 needs an even width and height: an odd one is padded by repeating
  the last column / row, and the true size travels in an 8-byte prefix of our own (four
  zero bytes, which no Annex-B stream starts with, then width and height), counted in
  the coded bytes. The picture is always 8-bit: ``bit_depth`` is the tensors' setting.
* **cut tensors** (node splits, ``encode`` / ``decode``): every feature map of the cut is
  normalised on its own to ``bit_depth`` bits (``q = round((x − min) / (max − min) ·
  (2^b − 1))``; min and max travel as float32 side information, so the error is at most
  half a step, ``(max − min) / (2^b − 1) / 2``, before coding) and tiled into **one
  monochrome frame** (``gray`` / ``gray10le``, HEVC 4:0:0), coded as one intra frame.
  Shape tensors (see ``tasks.tensorkinds``) pass raw and bit-exact as in every codec.

Frame layout (``frame_layout``, a pure function of the feature maps' shapes in cut order,
so it is recomputed by the decoder and never sent): a tensor of rank ≥ 3 is read as
``prod(shape[:-2])`` channels of ``H × W`` (``N × C × H × W`` → ``N·C`` channels), rank 2
as one channel, rank 1 (> 64 elements) as one near-square channel of ``ceil(√n)``
columns (filled row by row, the tail padded). A tensor's channels are tiled row-major in
a grid of ``cols = ceil(√(channels · H / W))`` columns (a near-square block); the blocks
of the cut's tensors are stacked top to bottom, each at the left edge. Unused area is 0
(each tensor's minimum). The frame is padded to a multiple of 8 in both directions
(x265's smallest coding unit; the padding is never read back) and must fit HEVC level
6.2 (at most 8,192 × 4,320-class limits: width and height ≤ 16,888, 35,651,584 samples);
a larger cut is refused with CodecError naming the size.

Bytes: the project container (``container``) holds names, shapes, dtypes and per tensor
``min``, ``max`` and the bit depth (9 bytes of meta); its shared stream is the Annex-B
HEVC bitstream. ``coded_bytes`` = bitstream + side information, all of it.

**Sequences** (``sequence: true``, video datasets only): ``encode_sequence`` codes the
frames of a whole video as one HEVC stream with inter prediction (an intra picture every
``intra_period`` frames, x265's default B-frames, no scene-cut I-frames); each frame's
bytes are those of the packets whose presentation time is that frame (the first one
carries VPS/SPS/PPS), plus its own side information. ``encode_picture_sequence`` does the
same for the pictures of remote inference. The decoder is FFmpeg's own ``hevc``; same
bytes → same tensors on any machine. x265 runs single-threaded (``pools=1``,
``frame-threads=1``): a sweep already runs one worker per core.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from ..errors import CodecError
from ..tensorkinds import is_feature_map
from . import container
from .base import FLOAT_DTYPES, REQUIRED, Field, check_arrays
from .floats import to_float16
from .image import ImageCodec

__all__ = ["HevcCodec", "SequenceCode", "frame_layout", "check_frame_size", "available", "INSTALL", "PRESETS", "MAX_SIDE", "MAX_SAMPLES"]

INSTALL = "hevc needs PyAV with libx265 (the `av` wheel carries it): pip install av, or run scripts/bootstrap.sh"
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")
ALIGN = 8  # x265's smallest coding unit: frames are padded to a multiple of it
MAX_SIDE = 16888  # HEVC level 6.2: width, height <= sqrt(8 · MaxLumaPs)
MAX_SAMPLES = 35_651_584  # HEVC level 6.2 MaxLumaPs
_META = struct.Struct("<ffB")  # min, max, bit depth


def available() -> bool:
    """True when PyAV imports and its FFmpeg has the libx265 encoder and the hevc decoder."""
    try:
        import av
    except ImportError:
        return False
    return {"libx265", "hevc"} <= set(av.codecs_available)


@dataclass(frozen=True)
class Placement:
    """Where one feature map lies in the packed frame."""

    name: str
    shape: tuple[int, ...]
    channels: int
    height: int  # of one channel tile
    width: int
    cols: int
    top: int  # first frame row of the tensor's block

    @property
    def rows(self) -> int:
        return -(-self.channels // self.cols)


@dataclass(frozen=True)
class FrameLayout:
    placements: tuple[Placement, ...]
    width: int
    height: int


def frame_layout(shapes: Sequence[tuple[str, tuple[int, ...]]]) -> FrameLayout:
    """The packed frame of feature maps of these (name, shape)s, in this order (see module docstring)."""
    out, top, widest = [], 0, 0
    for name, shape in shapes:
        if len(shape) >= 2:
            channels, h, w = math.prod(shape[:-2]), shape[-2], shape[-1]
        else:
            n = math.prod(shape)
            w = math.ceil(math.sqrt(n))
            channels, h = 1, -(-n // w)
        cols = min(channels, max(1, math.ceil(math.sqrt(channels * h / w))))
        p = Placement(name, tuple(shape), channels, h, w, cols, top)
        out.append(p)
        top += p.rows * h
        widest = max(widest, cols * w)
    return FrameLayout(tuple(out), _align(widest), _align(top))


def _align(n: int) -> int:
    return max(ALIGN, -(-n // ALIGN) * ALIGN)


@dataclass(frozen=True)
class SequenceCode:
    """A coded sequence: the whole stream, and per frame its packet bytes and side information."""

    stream: bytes
    frame_bytes: tuple[int, ...]  # packet bytes per frame, in frame order (sums to len(stream))
    sides: tuple[bytes, ...]  # per frame: the container without the stream (empty for pictures)
    encode_s: float = 0.0

    def coded_bytes(self, index: int) -> int:
        return self.frame_bytes[index] + len(self.sides[index])


class HevcCodec(ImageCodec):
    name = "hevc"
    wire_id = 5
    codes_tensors = True  # an image codec at the split `input`, a tensor codec at node splits
    doc = (
        "HEVC via libx265 (PyAV), constant QP. At the split `input` (remote inference): the picture as YUV "
        "4:2:0 8-bit, coded bytes = the Annex-B stream. At node splits: each feature map normalised to "
        "bit_depth bits by its min/max and tiled into one monochrome frame (4:0:0), coded bytes = stream + "
        "min/max/shape side information. `sequence: true` codes a video's frames as one stream with inter "
        "prediction (video datasets)."
    )
    fields = (
        Field("qp", int, REQUIRED, "x265 constant quantization parameter", low=0, high=51),
        Field(
            "preset",
            int,
            5,
            "x265 preset: 0 ultrafast … 5 medium … 9 placebo",
            low=0,
            high=len(PRESETS) - 1,
        ),
        Field(
            "bit_depth",
            int,
            10,
            "bits per sample of the packed tensor frame (8: gray, Main; 10: gray10le, Main 10); "
            "pictures are always 8-bit",
            choices=(8, 10),
        ),
        Field(
            "lossless",
            bool,
            False,
            "x265's lossless mode (transform and quantization bypassed; qp ignored): only the "
            "bit_depth normalisation is lost",
        ),
        Field(
            "sequence",
            bool,
            False,
            "code all frames of a video as one stream with inter prediction (video datasets only); "
            "false: every frame on its own, intra",
        ),
        Field("intra_period", int, 32, "frames between intra pictures of a sequence", low=1, high=1024),
    )

    @classmethod
    def check_together(cls, params, *, file, key) -> None:
        if not available():
            raise CodecError(INSTALL, file=file, key=key)

    # the picture (remote inference) -------------------------------------------------------
    def encode_image(self, rgb: np.ndarray) -> bytes:
        height, width = rgb.shape[:2]
        padded = _even(rgb)
        enc = self._encoder(padded.shape[1], padded.shape[0], "yuv420p", intra=True)
        data = b"".join(bytes(p) for p in enc.encode_frames([_yuv(padded)]))
        if (width, height) != (padded.shape[1], padded.shape[0]):
            # the crop travels in two bytes of our own ahead of the stream: odd sizes only
            return b"\x00\x00\x00\x00" + width.to_bytes(2, "big") + height.to_bytes(2, "big") + data
        return data

    def decode_image(self, data: bytes) -> np.ndarray:
        crop = None
        if data[:4] == b"\x00\x00\x00\x00":
            crop = int.from_bytes(data[4:6], "big"), int.from_bytes(data[6:8], "big")
            data = data[8:]
        frames = _decode_stream(data)
        if len(frames) != 1:
            raise CodecError(f"damaged bytes: the HEVC stream holds {len(frames)} pictures, not 1")
        rgb = frames[0].to_ndarray(format="rgb24")
        if crop is not None:
            rgb = rgb[: crop[1], : crop[0]]
        return self._decoded(rgb)

    def encode_picture_sequence(self, rgbs: Iterable[np.ndarray]) -> SequenceCode:
        """The pictures of a video (all of one size) as one stream with inter prediction.

        An odd size is padded as in ``encode_image``; the true size then travels as the same
        8-byte prefix, counted in the first frame's side information.
        """
        frames = iter(rgbs)
        first = next(frames, None)
        if first is None:
            raise CodecError("an empty sequence has nothing to code")
        height, width = first.shape[:2]
        padded = _even(first)
        enc = self._encoder(padded.shape[1], padded.shape[0], "yuv420p", intra=False)

        def yuv():
            for i, rgb in enumerate(_chain(first, frames)):
                if rgb.shape[:2] != (height, width):
                    raise CodecError(f"frame {i} of the sequence is {rgb.shape[1]}×{rgb.shape[0]}, not {width}×{height}")
                yield _yuv(_even(rgb))

        packets = enc.encode_frames(yuv())
        stream, frame_bytes = _by_frame(packets, enc.count)
        crop = b""
        if padded.shape[:2] != (height, width):
            crop = b"\x00\x00\x00\x00" + width.to_bytes(2, "big") + height.to_bytes(2, "big")
        return SequenceCode(stream, frame_bytes, (crop, *(b"" for _ in frame_bytes[1:])))

    def decode_picture_sequence(self, code: SequenceCode) -> list[np.ndarray]:
        frames = _decode_stream(code.stream)
        if len(frames) != len(code.frame_bytes):
            raise CodecError(f"damaged bytes: the stream holds {len(frames)} pictures, not {len(code.frame_bytes)}")
        crop = code.sides[0] if code.sides and len(code.sides[0]) == 8 else None
        out = []
        for f in frames:
            rgb = f.to_ndarray(format="rgb24")
            if crop is not None:
                rgb = rgb[: int.from_bytes(crop[6:8], "big"), : int.from_bytes(crop[4:6], "big")]
            out.append(self._decoded(rgb))
        return out

    # cut tensors ----------------------------------------------------------------------
    def encode(self, arrays: Mapping[str, np.ndarray]) -> bytes:
        entries, frame, _ = self._pack(check_arrays(arrays))
        stream = b""
        if frame is not None:
            enc = self._encoder(frame.shape[1], frame.shape[0], self._pix_fmt, intra=True)
            stream = b"".join(bytes(p) for p in enc.encode_frames([self._gray(frame)]))
        return container.pack(self.wire_id, entries, stream=stream)

    def decode(self, data: bytes) -> dict[str, np.ndarray]:
        box = self._unpack(data)
        frames = _decode_stream(box.stream) if len(box.stream) else []
        if len(frames) > 1:
            raise CodecError(f"damaged bytes: the HEVC stream holds {len(frames)} frames, not 1")
        return _unpack_frame(box.entries, frames[0].to_ndarray() if frames else None)

    def encode_sequence(self, cuts: Iterable[Mapping[str, np.ndarray]]) -> SequenceCode:
        """The cut tensors of a video's frames, one packed frame each, as one stream with inter prediction.

        ``cuts`` is consumed one frame at a time (packed, then handed to x265), so only
        x265's look-ahead holds several frames. Every frame must have the same tensors.
        """
        sides: list[bytes] = []
        enc = None
        shapes = None

        def frames():
            nonlocal enc, shapes
            for i, arrays in enumerate(cuts):
                entries, frame, layout = self._pack(check_arrays(arrays))
                these = [(e.name, e.shape, e.dtype, e.method) for e in entries]
                if shapes is None:
                    shapes = these
                elif these != shapes:
                    raise CodecError(f"frame {i} of the sequence has other cut tensors than frame 0")
                sides.append(container.pack(self.wire_id, entries))
                if frame is not None:
                    if enc is None:
                        enc = self._encoder(layout.width, layout.height, self._pix_fmt, intra=False)
                    yield self._gray(frame)

        gen = frames()
        first = next(gen, None)
        if first is None:
            if not sides:
                raise CodecError("an empty sequence has nothing to code")
            return SequenceCode(b"", tuple(0 for _ in sides), tuple(sides))  # shape tensors only
        packets = enc.encode_frames(_chain(first, gen))
        stream, frame_bytes = _by_frame(packets, len(sides))
        return SequenceCode(stream, frame_bytes, tuple(sides))

    def decode_sequence(self, code: SequenceCode) -> list[dict[str, np.ndarray]]:
        frames = _decode_stream(code.stream) if code.stream else []
        out = []
        for i, side in enumerate(code.sides):
            box = self._unpack(side)
            has_frame = any(e.method == container.HEVC for e in box.entries)
            if has_frame and i >= len(frames):
                raise CodecError(f"damaged bytes: the stream holds {len(frames)} frames, the sequence {len(code.sides)}")
            out.append(_unpack_frame(box.entries, frames[i].to_ndarray() if has_frame else None))
        return out

    # helpers ------------------------------------------------------------------------------
    @property
    def _pix_fmt(self) -> str:
        return "gray10le" if self.params["bit_depth"] == 10 else "gray"

    def _gray(self, frame: np.ndarray):
        import av

        return av.VideoFrame.from_ndarray(frame, format=self._pix_fmt)

    def _pack(self, tensors: list[tuple[str, np.ndarray]]):
        """(container entries, packed frame or None, layout) of a cut."""
        bits = self.params["bit_depth"]
        levels = (1 << bits) - 1
        maps = [(n, a) for n, a in tensors if a.dtype in FLOAT_DTYPES and is_feature_map(a)]
        layout = frame_layout([(n, a.shape) for n, a in maps])
        frame = None
        if maps:
            check_frame_size([(n, a.shape) for n, a in maps])
            frame = np.zeros((layout.height, layout.width), np.uint16 if bits > 8 else np.uint8)
        metas = {}
        for (name, arr), p in zip(maps, layout.placements):
            x = np.asarray(arr, np.float64)
            if not np.isfinite(x).all():
                bad = "NaN" if np.isnan(x).any() else "inf"
                raise CodecError(f"hevc cannot carry {bad}: tensor {name!r} contains it", key=name)
            lo, hi = np.float32(x.min()), np.float32(x.max())
            if not (np.isfinite(lo) and np.isfinite(hi)):
                raise CodecError(f"hevc: tensor {name!r} has values beyond the float32 range", key=name)
            span = float(hi) - float(lo)
            q = np.zeros(x.shape, np.float64) if span <= 0 else np.rint((x - float(lo)) * (levels / span))
            np.clip(q, 0, levels, out=q)
            _place(frame, p, q.astype(frame.dtype))
            metas[name] = _META.pack(float(lo), float(hi), bits)
        entries = [
            container.Entry(n, a.dtype, a.shape, container.HEVC, metas[n], b"") if n in metas else container.raw_entry(n, a)
            for n, a in tensors
        ]
        return entries, frame, layout

    def _encoder(self, width: int, height: int, pix_fmt: str, *, intra: bool) -> _Encoder:
        return _Encoder(width, height, pix_fmt, self.params, intra=intra)


def _chain(first, rest):
    yield first
    yield from rest


def _even(rgb: np.ndarray) -> np.ndarray:
    height, width = rgb.shape[:2]
    if width % 2 or height % 2:
        # 4:2:0 needs even sizes: repeat the last column / row (the decoder crops it away again)
        return np.pad(rgb, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    return rgb


def _yuv(rgb: np.ndarray):
    import av

    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")


def check_frame_size(shapes: Sequence[tuple[str, tuple[int, ...]]], *, file: str | None = None,
                     key: str | None = "hevc", where: str = "the cut") -> FrameLayout:
    """The packed frame of these feature maps, or CodecError when HEVC cannot code a frame that large
    (what ``plan`` checks on the statically known cut shapes, and ``encode`` on the real ones)."""
    layout = frame_layout(shapes)
    if layout.width > MAX_SIDE or layout.height > MAX_SIDE or layout.width * layout.height > MAX_SAMPLES:
        raise CodecError(
            f"the feature maps of {where} pack into a {layout.width}×{layout.height} frame, larger than HEVC allows",
            file=file,
            key=key,
            allowed=f"frames up to {MAX_SIDE} per side and {MAX_SAMPLES:,} samples (HEVC level 6.2); "
            "choose another split or codec",
        )
    return layout


def _place(frame: np.ndarray, p: Placement, q: np.ndarray) -> None:
    tiles = _tiles(q, p)
    block = np.zeros((p.rows * p.cols, p.height, p.width), frame.dtype)
    block[: p.channels] = tiles
    block = block.reshape(p.rows, p.cols, p.height, p.width).transpose(0, 2, 1, 3)
    frame[p.top : p.top + p.rows * p.height, : p.cols * p.width] = block.reshape(p.rows * p.height, p.cols * p.width)


def _tiles(q: np.ndarray, p: Placement) -> np.ndarray:
    if len(p.shape) >= 2:
        return q.reshape(p.channels, p.height, p.width)
    flat = np.zeros(p.height * p.width, q.dtype)
    flat[: q.size] = q.reshape(-1)
    return flat.reshape(1, p.height, p.width)


def _take(frame: np.ndarray, p: Placement) -> np.ndarray:
    block = frame[p.top : p.top + p.rows * p.height, : p.cols * p.width]
    tiles = block.reshape(p.rows, p.height, p.cols, p.width).transpose(0, 2, 1, 3).reshape(-1, p.height, p.width)
    tiles = tiles[: p.channels]
    if len(p.shape) >= 2:
        return tiles.reshape(p.shape)
    return tiles.reshape(-1)[: math.prod(p.shape)].reshape(p.shape)


def _unpack_frame(entries: Sequence[container.Entry], frame: np.ndarray | None) -> dict[str, np.ndarray]:
    coded = [e for e in entries if e.method == container.HEVC]
    layout = frame_layout([(e.name, e.shape) for e in coded])
    if coded and (frame is None or frame.shape != (layout.height, layout.width)):
        got = "no frame" if frame is None else f"a {frame.shape[1]}×{frame.shape[0]} frame"
        raise CodecError(f"damaged bytes: the stream holds {got}, the tensors need {layout.width}×{layout.height}")
    places = {p.name: p for p in layout.placements}
    out = {}
    for e in entries:
        if e.method == container.RAW:
            out[e.name] = container.raw_array(e)
            continue
        if e.method != container.HEVC or e.dtype not in FLOAT_DTYPES or len(e.meta) != _META.size or len(e.payload):
            raise CodecError(f"damaged bytes: tensor {e.name!r} has a payload hevc does not write")
        lo, hi, bits = _META.unpack(e.meta)
        if bits not in (8, 10):
            raise CodecError(f"damaged bytes: tensor {e.name!r} has bit depth {bits}")
        q = _take(frame, places[e.name]).astype(np.float64)
        x = float(lo) + q * ((float(hi) - float(lo)) / ((1 << bits) - 1))
        out[e.name] = to_float16(x) if e.dtype == np.float16 else x.astype(e.dtype)
    return out


class _Encoder:
    """One libx265 encoder at the codec's settings (intra: every frame an intra picture)."""

    def __init__(self, width: int, height: int, pix_fmt: str, params: Mapping[str, Any], *, intra: bool) -> None:
        import av

        self.ctx = av.CodecContext.create("libx265", "w")
        self.ctx.width, self.ctx.height = width, height
        self.ctx.pix_fmt = pix_fmt
        self.ctx.time_base = Fraction(1, 25)
        period = 1 if intra else params["intra_period"]
        x265 = [f"qp={params['qp']}", f"keyint={period}", f"min-keyint={period}", "scenecut=0", "info=0",
                "log-level=none", "pools=1", "frame-threads=1"]
        if params.get("lossless"):
            x265.append("lossless=1")
        self.ctx.options = {"preset": PRESETS[params["preset"]], "x265-params": ":".join(x265)}
        self.count = 0

    def encode_frames(self, frames: Iterable[Any]) -> list[Any]:
        import av

        packets = []
        try:
            for frame in frames:
                frame.pts = self.count
                self.count += 1
                packets.extend(self.ctx.encode(frame))
            packets.extend(self.ctx.encode(None))
        except av.FFmpegError as exc:
            raise CodecError(f"libx265 refused the frame ({exc})", key="hevc") from None
        return packets


def _by_frame(packets: Sequence[Any], count: int) -> tuple[bytes, tuple[int, ...]]:
    """The stream in decode order, and each frame's packet bytes by presentation time."""
    sizes = [0] * count
    for p in packets:
        if p.pts is None or not 0 <= p.pts < count:
            raise AssertionError(f"libx265 returned a packet with pts {p.pts} for {count} frames")
        sizes[p.pts] += p.size
    return b"".join(bytes(p) for p in packets), tuple(sizes)


def _decode_stream(data: bytes | memoryview) -> list[Any]:
    import av

    ctx = av.CodecContext.create("hevc", "r")
    ctx.thread_count = 1  # the same frames everywhere, one core per worker
    try:
        # the parser splits the Annex-B stream into access units: one packet per picture
        packets = [*ctx.parse(bytes(data)), *ctx.parse(None)]  # parse(None) flushes the last one
        frames = [f for packet in packets for f in ctx.decode(packet)]
        frames += ctx.decode(None)
    except av.FFmpegError as exc:
        raise CodecError(f"damaged bytes: not an HEVC stream ({exc})") from None
    return frames
