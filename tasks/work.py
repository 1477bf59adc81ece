"""One unit of work: an image through the head once, then every (split, codec setting) → results."""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .codecs import Codec, build
from .codecs.image import ImageCodec
from .errors import CodecError, SplitsweepError
from .remote import INPUT_SPLIT, remote_task
from .rows import NO_SPLIT, CodecSetting, Detections, TaskResult
from .tensorkinds import is_feature_map

__all__ = [
    "HeadOutput", "TaskOutcome", "run_head", "run_tasks", "distortion", "float_range", "float32_bytes",
    "NO_SPLIT", "INPUT_SPLIT",
]  # fmt: skip



@dataclass(frozen=True)
class HeadOutput:
    """The shared part of a unit: preprocessed input, one full run exposing every cut tensor."""

    feeds: Mapping[str, np.ndarray]
    meta: Any
    outputs: Mapping[str, np.ndarray]
    cut_tensors: Mapping[str, np.ndarray]
    seconds: float
    detections: Detections
    image: np.ndarray | None = None  # the original RGB: what remote inference (INPUT_SPLIT) codes


@dataclass(frozen=True)
class TaskOutcome:
    """What became of one (split, codec setting): a result and detections, or an error."""

    split: int
    setting: CodecSetting
    result: TaskResult | None
    detections: Detections | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


def run_head(runner, adapter, rgb: np.ndarray) -> HeadOutput:
    """Preprocess and run the whole network once with every requested cut tensor exposed."""
    prepared = adapter.preprocess(rgb)
    head = runner.run_head(prepared.feeds)
    detections = adapter.postprocess(head.outputs, prepared.meta)
    return HeadOutput(prepared.feeds, prepared.meta, head.outputs, head.tensors, head.seconds, detections, rgb)


def run_tasks(
    runner,
    adapter,
    head: HeadOutput,
    tasks: Sequence[tuple[int, CodecSetting]],
    *,
    codecs: Mapping[CodecSetting, Codec] | None = None,
) -> list[TaskOutcome]:
    """Code, decode and finish inference for each (split, setting); one outcome per task.

    A task that raises becomes a failed outcome carrying the error's type and message
    (with the last traceback frame for non-user errors, so a bug is visible, not hidden)
    and the other tasks go on.
    """
    codecs = dict(codecs or {})
    ranges: dict[int, tuple[float, float]] = {}  # per split: the cut's value range, once
    outcomes = []
    for split, setting in tasks:
        try:
            codec = codecs.get(setting) or codecs.setdefault(setting, build(setting))
            result, detections = _one_task(runner, adapter, head, split, setting, codec, ranges)
            outcomes.append(TaskOutcome(split, setting, result, detections, None))
        except Exception as exc:  # noqa: BLE001 - recorded as a failed row, see docstring
            outcomes.append(TaskOutcome(split, setting, None, None, describe_error(exc)))
    return outcomes


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, SplitsweepError):
        return f"{type(exc).__name__}: {exc}"
    frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {frame[0].filename.rsplit('/', 1)[-1]}:{frame[0].lineno})" if frame else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _one_task(runner, adapter, head: HeadOutput, split: int, setting: CodecSetting, codec: Codec, ranges: dict):
    if split == INPUT_SPLIT:
        return remote_task(runner, adapter, head, setting, codec)
    if isinstance(codec, ImageCodec) and not getattr(codec, "codes_tensors", False):
        raise CodecError(
            f"codec {setting.codec!r} codes the input picture (remote inference), not the cut tensors of split {split}",
            key=setting.codec,
            allowed="the split `input`",
        )
    if split == NO_SPLIT:
        if setting.codec != "none":
            raise ValueError("the unsplit model (split -1) is only run with codec 'none'")
        result = TaskResult(
            split=split, setting=setting, raw_bytes=0, float32_bytes=0, coded_bytes=0, side_bytes=0,
            feature_mse=0.0, feature_psnr=math.inf, head_s=head.seconds,
            encode_s=0.0, decode_s=0.0, tail_s=0.0, outputs=head.outputs,
        )
        return result, head.detections

    cut = runner.cut(split)
    tensors = {name: head.cut_tensors[name] for name in cut.tensors}
    side = runner.side_feeds(split, head.feeds)
    t0 = time.perf_counter()
    data = codec.encode(tensors)
    t1 = time.perf_counter()
    decoded = codec.decode(data)
    t2 = time.perf_counter()
    if codec.lossless:  # bit-exact by contract (tested for every lossless codec)
        mse, psnr = 0.0, math.inf
    else:
        if split not in ranges:
            ranges[split] = float_range(tensors)
        mse, psnr = distortion(tensors, decoded, value_range=ranges[split])
    if setting.codec == "none":
        # Lossless by construction: the full model's outputs are the tail's outputs.
        outputs, tail_s, detections = head.outputs, 0.0, head.detections
    else:
        tail = runner.run_tail(split, decoded, head.feeds)
        outputs, tail_s = tail.outputs, tail.seconds
        detections = adapter.postprocess(outputs, head.meta)
    result = TaskResult(
        split=split,
        setting=setting,
        raw_bytes=int(sum(a.nbytes for a in tensors.values())),
        float32_bytes=float32_bytes(tensors),
        coded_bytes=len(data),
        side_bytes=int(sum(a.nbytes for a in side.values())),
        feature_mse=mse,
        feature_psnr=psnr,
        head_s=head.seconds,
        encode_s=t1 - t0,
        decode_s=t2 - t1,
        tail_s=tail_s,
        outputs=outputs,
    )
    return result, detections


def distortion(
    original: Mapping[str, np.ndarray],
    decoded: Mapping[str, np.ndarray],
    *,
    value_range: tuple[float, float] | None = None,
) -> tuple[float, float]:
    """MSE over every element of the cut's feature maps, and PSNR against their value range.

    Shape tensors (ints, bools, float scalars and short float vectors, empty tensors; see
    tasks.tensorkinds) cross every codec bit-exactly and are left out; a cut of shape
    tensors only gives (0, inf).

    PSNR's peak is (max − min) of the original float tensors, because activations have no
    fixed range the way 8-bit pixels do; a lossless round trip gives (0, inf). Differences
    are taken in float32 and summed in float64 (no float64 copy of multi-megabyte cuts);
    `value_range` is the original's (min, max) when the caller already knows it.
    """
    sq, count = 0.0, 0
    for name, ref in original.items():
        ref = np.asarray(ref)
        if not is_feature_map(ref):
            continue
        # 1-d views: on 0-d arrays numpy's ufuncs return scalars, which cannot take out=
        diff = np.subtract(np.asarray(decoded[name]).reshape(-1), ref.reshape(-1), dtype=np.float32)
        np.square(diff, out=diff)
        sq += float(diff.sum(dtype=np.float64))
        count += ref.size
    if count == 0:
        return 0.0, math.inf
    mse = sq / count
    if mse == 0.0:
        return 0.0, math.inf
    lo, hi = value_range if value_range is not None else float_range(original)
    peak = hi - lo if hi > lo else 1.0
    return mse, 10.0 * math.log10(peak * peak / mse)


def float32_bytes(tensors: Mapping[str, np.ndarray]) -> int:
    """The cut at float32 precision: float elements at 4 bytes, other tensors (int64 indices,
    bool masks, shape scalars) at their real size, since no codec ever narrows them."""
    return int(
        sum(4 * a.size if np.issubdtype(a.dtype, np.floating) else a.nbytes for a in tensors.values())
    )


def float_range(tensors: Mapping[str, np.ndarray]) -> tuple[float, float]:
    """(min, max) over the feature maps' elements."""
    lo, hi = math.inf, -math.inf
    for ref in tensors.values():
        if is_feature_map(ref):
            lo, hi = min(lo, float(ref.min())), max(hi, float(ref.max()))
    return lo, hi
