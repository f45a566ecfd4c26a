"""The ``dlhisto`` command: one subcommand per analysis step (each one a Galaxy tool).

Errors in the input end the command with one line on stderr and exit status 2; no output file
is left behind. Unexpected errors (bugs) give one line too, and the traceback with
``DLHISTO_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from . import __version__
from .errors import InputError
from .image_io import read_image, write_image, write_labels
from .measure import measure_objects, measurement_columns, summarize, write_table
from .preprocess import STAINS, PreprocessOptions, preprocess
from .segment_classic import THRESHOLD_METHODS, ClassicOptions, segment_classic, single_channel


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line, like every other dlhisto error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def run_preprocess(args: argparse.Namespace) -> None:
    image = read_image(args.input, args.image_name)
    options = PreprocessOptions(
        deconvolve=args.deconvolve, target_pixel_size=args.target_pixel_size,
        input_pixel_size=args.input_pixel_size, sigma=args.sigma,
        normalize=tuple(args.normalize) if args.normalize else None)
    result = preprocess(image, options)
    write_image(args.output, result.data, result.pixel_size)


def run_segment_classic(args: argparse.Namespace) -> None:
    image = read_image(args.input, args.image_name)
    plane = single_channel(image.data, None if args.channel is None else args.channel - 1)
    options = ClassicOptions(
        sigma=args.sigma, threshold=args.threshold, manual_threshold=args.manual_threshold,
        dark_objects=args.dark_objects, min_area=args.min_area, fill_holes=args.fill_holes,
        watershed=not args.no_watershed, min_distance=args.min_distance,
        exclude_border=args.exclude_border)
    result = segment_classic(plane, options)
    rows = measure_objects(result.labels, plane, image.pixel_size)
    name = args.image_name or Path(args.input).name
    summary = summarize(rows, name, result.labels.size, threshold=result.threshold)
    write_labels(args.labels, result.labels, image.pixel_size)
    write_table(args.measurements, rows, measurement_columns(image.pixel_size))
    write_table(args.summary, [summary], list(summary))


def add_image_name(step: argparse.ArgumentParser) -> None:
    step.add_argument("--image-name", metavar="NAME",
                      help="name of the input in messages and tables (default: its file name)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dlhisto", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"dlhisto {__version__}")
    steps = parser.add_subparsers(dest="step", required=True, metavar="STEP")

    pre = steps.add_parser("preprocess", help="deconvolve stains, rescale, smooth, normalise")
    pre.add_argument("input", help="TIFF, OME-TIFF, PNG or JPEG image")
    pre.add_argument("output", help="float32 OME-TIFF")
    add_image_name(pre)
    pre.add_argument("--deconvolve", choices=["hed", *STAINS],
                     help="colour deconvolution of an RGB image: one stain or all three (H, E, DAB)")
    pre.add_argument("--input-pixel-size", type=float, metavar="UM",
                     help="pixel size in µm, when the file records none or a wrong one")
    pre.add_argument("--target-pixel-size", type=float, metavar="UM", help="resample to this pixel size")
    pre.add_argument("--sigma", type=float, default=0.0, help="Gaussian smoothing sigma in pixels")
    pre.add_argument("--normalize", type=float, nargs=2, metavar=("LOW", "HIGH"),
                     help="map these percentiles of each channel to 0 and 1 (e.g. 1 99.8)")
    pre.set_defaults(func=run_preprocess)

    seg = steps.add_parser("segment_classic",
                           help="smooth, threshold, remove small objects, watershed, measure")
    seg.add_argument("input", help="TIFF, OME-TIFF, PNG or JPEG image")
    seg.add_argument("--labels", required=True, help="output label image (OME-TIFF)")
    seg.add_argument("--measurements", required=True, help="output table, one row per object")
    seg.add_argument("--summary", required=True, help="output table: object count and areas")
    add_image_name(seg)
    seg.add_argument("--channel", type=int, metavar="N",
                     help="channel to segment, from 1 (default: the only one, or RGB luminance)")
    seg.add_argument("--sigma", type=float, default=3.0, help="Gaussian smoothing sigma (default 3)")
    seg.add_argument("--threshold", choices=THRESHOLD_METHODS, default="kmeans")
    seg.add_argument("--manual-threshold", type=float, metavar="VALUE",
                     help="threshold on the smoothed image, with --threshold manual")
    seg.add_argument("--dark-objects", action="store_true",
                     help="objects are darker than the background (brightfield)")
    seg.add_argument("--min-area", type=int, default=60, help="remove smaller objects (pixels, default 60)")
    seg.add_argument("--fill-holes", action="store_true", help="fill holes inside objects")
    seg.add_argument("--no-watershed", action="store_true", help="do not split touching objects")
    seg.add_argument("--min-distance", type=int, default=5,
                     help="smallest distance between watershed seeds in pixels (default 5)")
    seg.add_argument("--exclude-border", action="store_true", help="drop objects touching the border")
    seg.set_defaults(func=run_segment_classic)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"dlhisto {args.step}"
    try:
        args.func(args)
    except InputError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"{prog}: error: out of memory; try a smaller image or tile size", file=sys.stderr)
        return 3
    except OSError as exc:
        print(f"{prog}: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 3
    except Exception as exc:  # a bug: still one readable line for the Galaxy user
        if os.environ.get("DLHISTO_DEBUG"):
            traceback.print_exc()
        print(f"{prog}: internal error: {type(exc).__name__}: {exc} "
              "(please report it; DLHISTO_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
