"""NNCodec, hevc intra and hevc sequence side by side on the demo CenterNet (splits 20/100/246).

    python benchmarks/hevc_table.py --out /tmp/hevc-table            # photos and 32 vtest.avi frames
    python benchmarks/hevc_table.py --out /tmp/hevc-table --only video --frames 16

Two real sweeps (local Ray, ``--workers``): the 14 demo photos (ground-truth AP, bpp) and
the first ``--frames`` frames of vtest.avi (reference evaluation: the unsplit model's
detections scoring ≥ 0.4 are the truth; kbps at the file's frame rate). Each has remote
inference (split ``input``) coded with the same codec as the anchor of its BD-rates:
hevc intra for intra curves, hevc sequence (the video as one stream) for sequence curves.
Printed: per (codec family, split) the rate range, the accuracy range, the BD-rate and
BD-accuracy against remote inference, and the mean encode / decode seconds per frame;
then the CTTC-style per-sequence table (orchestrator.reporting.videotable). Sweeps resume: a second
run only reports.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.execution.sweep import SweepOptions, run_sweep  # noqa: E402
from orchestrator.planning.spec import parse_spec  # noqa: E402
from orchestrator.reporting.bdrate import bd_table, sequence_families  # noqa: E402
from orchestrator.reporting.report import build_report, with_kbps  # noqa: E402
from orchestrator.reporting.videotable import cttc_table  # noqa: E402

QPS = "[22, 30, 38, 46]"
NNCODEC = "nncodec: {qp: [-10, -4, 4, 8]}"
MODEL = """models:
  - name: centernet
    path: asset:centernet
    adapter: centernet
    splits: [input, 20, 100, 246]
"""


def photos_spec(out: Path, preset: int) -> str:
    return f"""sweep: hevc-photos
output: {out}
dataset: {{type: demo}}
{MODEL}codecs:
  - hevc: {{qp: {QPS}, preset: {preset}}}
  - {NNCODEC}
execution: {{workers: auto}}
"""


def video_spec(out: Path, preset: int, frames: int) -> str:
    from orchestrator.data.demo_data import ensure_video

    return f"""sweep: hevc-vtest
output: {out}
dataset: {{type: video, path: {ensure_video()}, limit: {frames}}}
evaluation: {{mode: reference, score_threshold: 0.4}}
{MODEL}codecs:
  - hevc: {{qp: {QPS}, preset: {preset}}}
  - hevc: {{qp: {QPS}, preset: {preset}, sequence: true, intra_period: 32}}
  - {NNCODEC}
execution: {{workers: auto}}
"""


def summary(report: pd.DataFrame, *, rate: str, metric: str, frame_rate: float | None) -> pd.DataFrame:
    table = with_kbps(sequence_families(report), frame_rate)
    table = table[table["split"] != -1]
    bd = bd_table(with_kbps(report, frame_rate), rate=rate, metric=metric).set_index(["split", "codec"])
    rows = []
    for (split, codec), g in table.groupby(["split", "codec"], sort=True):
        key = (split, codec)
        rows.append({
            "codec": codec,
            "split": "input" if split == -2 else split,
            rate: f"{g[rate].min():,.3g}–{g[rate].max():,.3g}",
            metric: f"{g[metric].min():.1f}–{g[metric].max():.1f}",
            "bd_rate %": f"{bd.loc[key, 'bd_rate']:+.1f}" if key in bd.index and pd.notna(bd.loc[key, "bd_rate"]) else
            ("anchor" if key not in bd.index else bd.loc[key, "note"][:40]),
            f"bd_{metric}": f"{bd.loc[key, 'bd_ap']:+.2f}" if key in bd.index and pd.notna(bd.loc[key, "bd_ap"]) else "",
            "anchor": bd.loc[key, "anchor"] if key in bd.index else "",
            "encode s/frame": f"{g['encode_s'].mean():.3f}",
            "decode s/frame": f"{g['decode_s'].mean():.3f}",
        })
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the two results stores")
    ap.add_argument("--only", choices=("photos", "video"), help="run one of the two sweeps")
    ap.add_argument("--frames", type=int, default=32, help="vtest.avi frames (default 32)")
    ap.add_argument("--preset", type=int, default=0, help="x265 preset 0 (ultrafast) … 9 (default 0)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runs = []
    if args.only in (None, "photos"):
        runs.append(("photos", photos_spec(args.out / "photos", args.preset), "bpp", "ap", None))
    if args.only in (None, "video"):
        runs.append(("vtest", video_spec(args.out / "vtest", args.preset, args.frames), "kbps", "miou", "video"))
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 30)
    for name, text, rate, metric, video in runs:
        spec = parse_spec(text, file=str(args.out / f"{name}.yaml"))
        result = run_sweep(spec, SweepOptions())
        print(f"\n{name}: {result.plan_counts} in {result.stats.seconds:.0f} s")
        from orchestrator import open_results

        frame_rate = open_results(spec.output_location).meta.frame_rate if video else None
        from orchestrator.results.reading import plan_scope

        scope = plan_scope(open_results(spec.output_location))  # the current grid only, as `report` does
        report = build_report(spec.output_location, task_ids=None if scope is None else scope.task_ids).table
        print(summary(report, rate=rate, metric=metric, frame_rate=frame_rate).to_string(index=False))
        if video:
            cttc = cttc_table(report, sequence=f"vtest[:{args.frames}]", frame_rate=frame_rate)
            print(cttc.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
