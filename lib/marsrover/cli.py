"""The ``marsrover`` command line (also ``python -m marsrover``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _data(args: argparse.Namespace) -> int:
    from . import study

    paths, index = study.acquire(args.data_dir, rebuild_index=args.rebuild_index)
    print(f"{len(index)} images ready under {paths.images_root}; index at {paths.index_csv}")
    return 0


def _study(args: argparse.Namespace) -> int:
    from .runner import main as run_all

    forwarded = ["--profile", args.profile] + (["--output-dir", str(args.output_dir)] if args.output_dir else [])
    return run_all(forwarded)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marsrover", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="get, verify and extract the MSL archive and build the index")
    data.add_argument("--data-dir", type=Path, help="data folder (default: data/ or $MARSROVER_DATA_DIR)")
    data.add_argument("--rebuild-index", action="store_true", help="re-check every image even if indexed")
    data.set_defaults(handler=_data)

    run = commands.add_parser("study", help="run every notebook and render the report (as run_all.py)")
    run.add_argument("--profile", default="full", choices=["smoke", "full", "gpu"])
    run.add_argument("--output-dir", type=Path)
    run.set_defaults(handler=_study)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)
