"""Video reporting in the MPEG CTTC style: per sequence and QP, kbps, accuracy and coding times.

MPEG FCM's common test and training conditions (CTTC) report one line per (sequence,
QP) of a codec: the bitrate in kbps at the sequence's frame rate, the task accuracy, and
the encoder / decoder run time. ``cttc_table`` builds that view from the configuration
table of a video sweep (``orchestrator.reporting.report``; one video dataset = one sequence):
a row per (model, variant, split, codec family, QP), where the family keeps intra
(``hevc``) and sequence coding (``hevc sequence``, see ``orchestrator.reporting.bdrate``) apart.
``encode_s`` / ``decode_s`` are the sequence's totals (per-frame mean × frames).
"""

from __future__ import annotations

import pandas as pd

from orchestrator.reporting.bdrate import sequence_families
from orchestrator.reporting.report import with_kbps

__all__ = ["CTTC_COLUMNS", "cttc_table"]

CTTC_COLUMNS = (
    "sequence", "model", "variant", "split", "codec", "qp", "frames", "kbps", "bpp", "ap", "miou",
    "encode_s", "decode_s",
)  # fmt: skip


def cttc_table(report: pd.DataFrame, *, sequence: str, frame_rate: float | None) -> pd.DataFrame:
    """One row per (model, variant, split, codec family, setting) of a video sweep's report.

    ``sequence`` names the video (the dataset's name); without a frame rate (stills) the
    table has no kbps and is still useful per configuration."""
    table = with_kbps(sequence_families(report), frame_rate)
    table = table[table["split"] != -1]
    frames = table["n_images"].astype(float)
    out = pd.DataFrame(
        {
            "sequence": sequence,
            "model": table["model"],
            "variant": table["variant"],
            "split": table["split"],
            "codec": table["codec"],
            "qp": table["qp"],
            "frames": table["n_images"],
            "kbps": table["kbps"] if "kbps" in table else float("nan"),
            "bpp": table["bpp"],
            "ap": table["ap"],
            "miou": table["miou"],
            "encode_s": table["encode_s"] * frames,
            "decode_s": table["decode_s"] * frames,
        }
    )
    return out.sort_values(["model", "variant", "split", "codec", "qp"], kind="stable").reset_index(drop=True)
