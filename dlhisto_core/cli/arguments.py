"""Arguments that many steps share: outputs, display names, pairing, GeoJSON and stain options."""

from __future__ import annotations

import argparse

from ..base.bounds import add_option
from ..imaging.preprocessing import PreprocessOptions
from ..io.geojson import ExportOptions


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line, like every other dlhisto error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_output(step: argparse.ArgumentParser, flag: str, **options) -> None:
    """An output file of the step: :func:`main` checks, before any work, that no two outputs
    share a path and that none would overwrite an input."""
    action = step.add_argument(flag, **options)
    step.set_defaults(outputs={**(step.get_default("outputs") or {}), action.dest: flag})


def add_pairing(step: argparse.ArgumentParser, *pairs: tuple[str, str, str, str, bool]) -> None:
    """--pair-by-name: the repeated inputs (first, second) of each pair are matched by their
    display names instead of their order (Galaxy collections, by element identifier); each pair
    is (first option, second option, what the first is, what the second is, whether every first
    needs a second)."""
    step.add_argument("--pair-by-name", action="store_true",
                      help="pair the repeated inputs by their names (--*-name), not by their order")
    step.set_defaults(pairs=pairs)


def add_image_name(step: argparse.ArgumentParser) -> None:
    step.add_argument("--image-name", metavar="NAME",
                      help="name of the input in messages and tables (default: its file name)")


def add_geojson_output(step: argparse.ArgumentParser, what: str) -> None:
    """--geojson: the objects as QuPath GeoJSON (and for detections or annotations)."""
    add_output(step, "--geojson", help=f"output: {what} as a QuPath GeoJSON FeatureCollection, in the "
               "coordinates of the input's full resolution")
    add_option(step, ExportOptions(), "object_type", help="QuPath object type of the GeoJSON features: "
               "detection (many, measured) or annotation (editable) (default %(default)s)")


def add_stain_arguments(step: argparse.ArgumentParser, about: str) -> None:
    """--stain-normalization (PreprocessOptions' choices), --stain-reference and its name."""
    add_option(step, PreprocessOptions(), "stain_normalization", help=about)
    step.add_argument("--stain-reference", metavar="FILE",
                      help="image to fit the stain reference on, or a reference saved by preprocess --stain-reference-out")
    step.add_argument("--stain-reference-name", metavar="NAME", help="name of the reference in messages")
