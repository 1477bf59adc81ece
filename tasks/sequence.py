"""Sequence coding: every frame of a video at one (split, codec setting) coded as one stream with inter prediction.

A *sequence unit* is the work of one (model, variant, split, setting) over all frames of
a video dataset. Coding frame by frame throws away what video codecs are best at:
consecutive frames (and so their cut tensors) are alike, and inter prediction codes only
what changed. So the head runs on every frame, the cut tensors of all frames go into one
HEVC stream (``HevcCodec.encode_sequence``; at the split ``input`` the pictures,
``encode_picture_sequence``), the stream is decoded once, and the tail runs per frame.

Every frame still gets its own outcome (one row per frame, scored per frame as usual):
``coded_bytes`` is the bytes of the packets whose presentation time is that frame, plus
that frame's side information (min/max, shapes); the stream's headers are in the first
frame's. ``encode_s`` / ``decode_s`` are the sequence's coding times divided evenly over
its frames (a video codec's work is not separable per frame; their sum over the
sequence is the real time). The original cut tensors of every frame are kept until the
decoded ones are compared with them: memory is frames × cut size.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .codecs.image import image_psnr
from .detectors.image import input_image
from .errors import CodecError
from .remote import INPUT_SPLIT
from .rows import CodecSetting, TaskResult
from .work import NO_SPLIT, TaskOutcome, describe_error, distortion, float32_bytes, float_range, run_head

__all__ = ["is_sequence", "run_sequence"]


def is_sequence(setting: CodecSetting) -> bool:
    """True for codec settings that code a video's frames together (``sequence: true``)."""
    return bool(setting.params.get("sequence"))


@dataclass
class _Frame:
    meta: Any
    feeds: Any
    head_s: float
    sent: Any  # the cut tensors (node split) or the picture (split input)


def run_sequence(runner, adapter, frames: Sequence[np.ndarray], split: int, setting: CodecSetting, codec) -> list[TaskOutcome]:
    """One outcome per frame (in order) of ``frames`` (RGB) coded as one sequence at ``split``.

    An error anywhere fails every frame's outcome with that error: the frames share one stream.
    """
    try:
        return _run(runner, adapter, frames, split, setting, codec)
    except Exception as exc:  # noqa: BLE001 - every frame's row carries the error
        error = describe_error(exc)
        return [TaskOutcome(split, setting, None, None, error) for _ in range(len(frames))]


def _run(runner, adapter, frames, split, setting, codec) -> list[TaskOutcome]:
    if split == NO_SPLIT:
        raise ValueError("the unsplit model (split -1) is not coded")
    if not getattr(codec, "encode_sequence", None):
        raise CodecError(f"codec {setting.codec!r} cannot code sequences", key=setting.codec, allowed="hevc")
    remote = split == INPUT_SPLIT
    cut = None if remote else runner.cut(split)
    kept: list[_Frame] = []
    head_total = 0.0

    def cuts():
        nonlocal head_total
        for rgb in frames:
            t = time.perf_counter()
            if remote:
                prepared = adapter.preprocess(rgb)
                frame = _Frame(prepared.meta, prepared.feeds, 0.0, input_image(rgb, adapter.settings))
            else:
                head = run_head(runner, adapter, rgb)
                frame = _Frame(head.meta, head.feeds, head.seconds, {n: head.cut_tensors[n] for n in cut.tensors})
            head_total += time.perf_counter() - t
            kept.append(frame)
            yield frame.sent

    t0 = time.perf_counter()
    code = codec.encode_picture_sequence(cuts()) if remote else codec.encode_sequence(cuts())
    encode_s = (time.perf_counter() - t0 - head_total) / len(kept)
    t1 = time.perf_counter()
    decoded = codec.decode_picture_sequence(code) if remote else codec.decode_sequence(code)
    decode_s = (time.perf_counter() - t1) / len(kept)
    if len(decoded) != len(kept):
        raise CodecError(f"the sequence decoded to {len(decoded)} frames, not {len(kept)}")

    outcomes = []
    for i, (frame, dec) in enumerate(zip(kept, decoded)):
        if remote:
            server = runner.run_head(adapter.preprocess(dec).feeds)
            outputs, tail_s = server.outputs, server.seconds
            mse, psnr = image_psnr(frame.sent, dec)
            raw, f32, side = int(frame.sent.nbytes), int(4 * frame.sent.size), 0
        else:
            tail = runner.run_tail(split, dec, frame.feeds)
            outputs, tail_s = tail.outputs, tail.seconds
            mse, psnr = distortion(frame.sent, dec, value_range=float_range(frame.sent))
            raw, f32 = int(sum(a.nbytes for a in frame.sent.values())), float32_bytes(frame.sent)
            side = int(sum(a.nbytes for a in runner.side_feeds(split, frame.feeds).values()))
        result = TaskResult(
            split=split, setting=setting, raw_bytes=raw, float32_bytes=f32, coded_bytes=code.coded_bytes(i),
            side_bytes=side, feature_mse=mse, feature_psnr=psnr if mse else math.inf, head_s=frame.head_s,
            encode_s=encode_s, decode_s=decode_s, tail_s=tail_s, outputs=outputs,
        )
        outcomes.append(TaskOutcome(split, setting, result, adapter.postprocess(outputs, frame.meta), None))
        kept[i] = None  # type: ignore[call-overload]  # free the frame's tensors as we go
    return outcomes
