"""The ``marsrover`` command line (also ``python -m marsrover``).

Exit status: 0 when everything worked; 2 when some images could not be read (predict, sort) or
downloaded (fetch-raw), after the others were handled; 1 when nothing could be done (no model,
no such path, the feed refused, a usage error).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

EXIT_OK, EXIT_ERROR, EXIT_SOME_FAILED = 0, 1, 2
DEFAULT_FETCH_LIMIT = 100  # images a bare `fetch-raw` downloads


def _fail(message: str) -> int:
    print(f"marsrover: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def _data(args: argparse.Namespace) -> int:
    from . import study
    from .acquisition import AcquisitionError
    from .dataset import DataSetError

    try:
        paths, index = study.acquire(args.data_dir, rebuild_index=args.rebuild_index)
    except (AcquisitionError, DataSetError, OSError) as error:  # checksum, unsafe archive, bad data set, disk
        return _fail(str(error))
    print(f"{len(index)} images ready under {paths.images_root}; index at {paths.index_csv}")
    return 0


def _study(args: argparse.Namespace) -> int:
    from .runner import run_from_arguments

    return run_from_arguments(args)


def _unwritable(folder: Path, option: str, given: Path) -> str | None:
    """Why nothing can be written into ``folder``, or None: checked before any image is classified, so a bad
    ``--out`` or ``--into`` never costs a whole run's work. Nothing is created here: a missing folder is
    judged by the nearest folder above it that exists, where it would be made, so a run that fails later
    (a model that will not load, no images) leaves no empty folder behind."""
    import tempfile

    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"cannot write {option} {given}: {existing} is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        return f"cannot write {option} {given}: {error.strerror or error} ({error.filename or existing})"
    return None


def _model_and_files(args: argparse.Namespace, exclude=()):
    """(model, its path, files) or raise with a message for the user."""
    import os

    from . import inference
    from .console import start_keras_quietly

    # Quietens TensorFlow's C++ logging, unless asked for; TF 2.21 prints its start-up lines (CUDA) before
    # this setting is read, and on a CPU-only machine they read as errors: its start leaves those out.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start_keras_quietly()

    files = inference.discover_images(args.paths, exclude=exclude)
    if not files:
        raise FileNotFoundError(f"no images in {', '.join(map(str, args.paths))} "
                                "(folders and globs are searched for .jpg, .jpeg and .png files)")
    model_path = Path(args.model) if args.model else inference.find_default_model()
    model = inference.load_model(model_path)
    height, width = inference.model_image_size(model)
    print(f"Model {model_path} ({width}x{height} input); {len(files)} image(s) found")
    return model, model_path, files


def _predict(args: argparse.Namespace) -> int:
    from . import inference

    if Path(args.out).is_dir():  # found now, not after classifying every image
        return _fail(f"--out {args.out} is a folder; give a file name for the CSV")
    if problem := _unwritable(Path(args.out).absolute().parent, "--out", args.out):
        return _fail(problem)
    try:
        model, model_path, files = _model_and_files(args)
    except (FileNotFoundError, ValueError) as error:
        return _fail(str(error))
    table = inference.classify_files(model, files, batch_size=args.batch_size, threshold=args.threshold,
                                     workers=args.workers, max_pixels=args.max_pixels,
                                     model_name=str(model_path), progress=not args.no_progress)
    inference.write_csv(table, args.out)
    counts = inference.summarize(table)
    print(f"{counts['images']} image(s): {counts['Rover']} Rover, {counts['Surface']} Surface, "
          f"{counts['failed']} failed (threshold {args.threshold} on P(Surface)); wrote {args.out}")
    for row in table[table["error"] != ""].itertuples():
        print(f"  failed: {row.path}: {row.error}")
    return EXIT_SOME_FAILED if counts["failed"] else EXIT_OK


def _sort(args: argparse.Namespace) -> int:
    from . import sorting

    if not 0.0 <= args.low <= args.high <= 1.0:
        return _fail(f"need 0 <= --low <= --high <= 1, got --low {args.low} --high {args.high}")
    if problem := _unwritable(Path(args.into), "--into", args.into):
        return _fail(problem)
    args.paths, gone = sorting.named_paths_sorted_earlier(args.paths, args.into)
    if gone:  # an interrupted --move, run again with the same names
        print(f"Sorted by an earlier run (in {Path(args.into) / sorting.LOG_NAME}), now gone or emptied: "
              f"{', '.join(dict.fromkeys(gone))}")
        if not args.paths:
            print("Nothing left to sort.")
            return EXIT_OK
    try:
        model, _, files = _model_and_files(args, exclude=[args.into])
    except (FileNotFoundError, ValueError) as error:
        return _fail(str(error))
    summary = sorting.sort_files(model, files, args.into, move=args.move, low=args.low, high=args.high,
                                 batch_size=args.batch_size, workers=args.workers, max_pixels=args.max_pixels,
                                 progress=not args.no_progress)
    print("\n".join(summary.lines()))
    print(f"Log: {Path(args.into) / sorting.LOG_NAME}")
    return EXIT_SOME_FAILED if summary.failed else EXIT_OK


def _fetch_raw(args: argparse.Namespace) -> int:
    from . import rawfeeds
    from .acquisition import DownloadError

    if args.size is not None and args.mission != "mars2020":
        return _fail(f"--size picks a Mars 2020 rendition; the {args.mission} feed has one size")
    limit = args.limit
    try:
        no_sols = rawfeeds.parse_sols(args.sols) == (None, None)
    except ValueError as error:
        return _fail(str(error))
    if limit is None and no_sols:  # the whole feed would take days: say what a bare call fetches
        limit = DEFAULT_FETCH_LIMIT
        print(f"No --sols or --limit: fetching the newest {limit} images (give --limit N or --sols A-B for more)")
    try:
        result = rawfeeds.fetch_raw(args.mission, sols=args.sols, limit=limit, size=args.size or "medium",
                                    out_dir=args.out, per_page=args.per_page, base_url=args.feed_url,
                                    retries=args.retries, timeout=args.timeout, progress=not args.no_progress)
    except (DownloadError, ValueError, OSError) as error:  # the feed, bad options, the disk (e.g. --out)
        return _fail(str(error))
    print("\n".join(result.lines()))
    return EXIT_SOME_FAILED if result.failed else EXIT_OK


def _parsed(text: str, kind: type):
    """``kind(text)``, or the message argparse shows ("argument --x: not a number: 'abc'")."""
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {'a whole number' if kind is int else 'a number'}: {text!r}") from None


def _probability(text: str) -> float:
    value = _parsed(text, float)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text}")
    return value


def _positive_int(text: str) -> int:
    value = _parsed(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = _parsed(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _parsed(text, float)
    if not 0 < value < math.inf:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a finite number more than 0, got {text}")
    return value


def _max_pixels(text: str) -> float:
    from PIL import Image

    value = _positive_float(text)
    pillow_cap = 2 * Image.MAX_IMAGE_PIXELS  # Pillow refuses larger images itself, whatever the limit here
    if value > pillow_cap:
        raise argparse.ArgumentTypeError(f"Pillow refuses images over {pillow_cap} pixels, so a limit of {text} "
                                         "cannot let them through; give at most that")
    return value


def _add_classifier_options(parser: argparse.ArgumentParser) -> None:
    from .inference import DEFAULT_BATCH_SIZE, DEFAULT_MAX_PIXELS

    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="image files (tried whatever their extension), folders (searched recursively for "
                             ".jpg, .jpeg and .png files) or glob patterns")
    parser.add_argument("--model", type=Path,
                        help="saved .keras model (default: the newest *.keras under models/, else a study's "
                             "headline under reports/*/models/, else the newest model there)")
    parser.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH_SIZE,
                        help=f"images per model call (default {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--workers", type=_positive_int, help="decoding threads (default: 2 x CPUs, at most 8)")
    parser.add_argument("--max-pixels", type=_max_pixels, default=DEFAULT_MAX_PIXELS,
                        help="refuse images with more pixels than this, undecoded (default 50e6; at most "
                             "Pillow's own cap of 178956970)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


class _Parser(argparse.ArgumentParser):
    """argparse, except that a usage error exits with 1 (nothing was done): 2 stays "some images failed"."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="marsrover", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser(
        "data", help="get, verify and extract the MSL archive and build the index",
        description="Get msl-images.zip (from $MARSROVER_MIRROR when set, else Zenodo record 1049137), verify "
                    "its checksum, keep it in data/raw/, extract it safely into data/interim/ and build "
                    "data/processed/index.csv: one row per image with its split, class, label, size and any "
                    "reason it cannot be read.")
    data.add_argument("--data-dir", type=Path, help="data folder (default: data/ or $MARSROVER_DATA_DIR)")
    data.add_argument("--rebuild-index", action="store_true", help="re-check every image even if indexed")
    data.set_defaults(handler=_data)

    from .runner import add_study_arguments

    run = commands.add_parser(
        "study", help="run every notebook and render the report (as run_all.py)",
        description="Execute notebooks/NN_*.ipynb in order with papermill under a profile's parameters and "
                    "render the report (HTML, figures, metrics.json) into reports/<profile>/, as run_all.py does.")
    add_study_arguments(run).set_defaults(handler=_study)

    predict = commands.add_parser(
        "predict", help="classify images as Rover or Surface and write a CSV",
        description="Classify images as Rover or Surface; one CSV row per image "
                    "(path,label,p_surface,model,error). Exit status 2 if any image could not be read.")
    _add_classifier_options(predict)
    predict.add_argument("--out", type=Path, default=Path("predictions.csv"),
                         help="CSV to write (default predictions.csv)")
    predict.add_argument("--threshold", type=_probability, default=0.5,
                         help="label Surface when P(Surface) >= this (default 0.5)")
    predict.set_defaults(handler=_predict)

    sort = commands.add_parser(
        "sort", help="copy (or move) images into DIR/Rover, DIR/Surface and DIR/Uncertain",
        description="Copy (or move) images into DIR/Rover (P(Surface) < low), DIR/Surface (> high) and "
                    "DIR/Uncertain (in between). Never overwrites; rerunning finishes an interrupted run "
                    "(progress in DIR/sort_log.csv). Exit status 2 if any image could not be read.")
    _add_classifier_options(sort)
    sort.add_argument("--into", type=Path, required=True, metavar="DIR", help="folder to sort into")
    sort.add_argument("--move", action="store_true", help="move the images instead of copying them")
    sort.add_argument("--low", type=_probability, default=0.2, help="Rover below this P(Surface) (default 0.2)")
    sort.add_argument("--high", type=_probability, default=0.8, help="Surface above this P(Surface) (default 0.8)")
    sort.set_defaults(handler=_sort)

    from . import rawfeeds

    fetch = commands.add_parser(
        "fetch-raw", help="download raw images and metadata from NASA's raw-image feeds",
        description="Download raw images (newest sol first) and metadata.csv from NASA's public raw-image "
                    "feeds into data/raw/<mission>/. Rerunning skips what is already there.")
    fetch.add_argument("--mission", required=True, choices=rawfeeds.MISSIONS)
    fetch.add_argument("--sols", metavar="A-B", help="sol range: A-B, A, A- or -B")
    fetch.add_argument("--limit", type=_non_negative_int,
                       help=f"stop after this many images (default {DEFAULT_FETCH_LIMIT} without --sols, "
                            "none with it: a feed holds hundreds of thousands)")
    fetch.add_argument("--size", choices=rawfeeds.SIZES,
                       help="Mars 2020 rendition (default medium); the MSL feed has one size")
    fetch.add_argument("--out", type=Path, metavar="DIR", help="folder (default data/raw/<mission>)")
    fetch.add_argument("--per-page", type=_positive_int, default=rawfeeds.DEFAULT_PER_PAGE,
                       help=f"feed page size (default {rawfeeds.DEFAULT_PER_PAGE})")
    fetch.add_argument("--feed-url", help="feed base URL (default: the mission's mars.nasa.gov feed)")
    fetch.add_argument("--retries", type=_non_negative_int, default=5, help="retries per request (default 5)")
    fetch.add_argument("--timeout", type=_positive_float, default=30, help="seconds per request (default 30)")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bar")
    fetch.set_defaults(handler=_fetch_raw)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)
