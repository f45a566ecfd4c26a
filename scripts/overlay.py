"""Nuclei outlined over a region of the slide they were found on: the picture of the demo and the README.

Usage: .venv/bin/python scripts/overlay.py SLIDE LABELS OUT.png [--region X0 Y0 X1 Y1] [--types TABLE]

LABELS is the label image ``predict`` wrote for SLIDE (at the model's pixel size: it is scaled
to the slide's full resolution, nearest neighbour). The region is in the slide's full-resolution
pixels; by default the dermis, epidermis and keratin of the bundled Aperio slide
(test-data/cmu_small_region.svs), where the classic pipeline takes keratin for nuclei. With
``--types`` (the table of object_classifier_apply), each nucleus is outlined in its type's colour
(the colours of the QuPath exports) and the legend gives the types.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from dlhisto_core.io.images import read_labels
from dlhisto_core.io.slides import image_reader

REGION = (900, 800, 1800, 1800)
"""x0, y0, x1, y1 in the bundled slide's pixels."""
OUTLINE = (0, 255, 80)


def draw_overlay(slide: str | Path, labels: str | Path, out: str | Path, region: tuple[int, int, int, int] = REGION,
                 caption: str | None = None, types: str | Path | None = None) -> int:
    """Write ``out`` (PNG): the slide's ``region`` with each object of ``labels`` outlined (in
    its type's colour, with ``types``); returns the number of objects drawn."""
    from PIL import Image, ImageDraw
    from skimage import segmentation

    from dlhisto_core.classic.object_classes import read_object_classes
    from dlhisto_core.io.geojson import class_colour

    x0, y0, x1, y1 = region
    with image_reader(slide) as reader:
        height, width = reader.shape[:2]
        rgb = np.asarray(reader.read_region(y0, x0, y1 - y0, x1 - x0))[..., :3].astype(np.uint8).copy()
    objects = read_labels(labels).data
    rows = np.minimum((np.arange(y0, y1) * objects.shape[0]) // height, objects.shape[0] - 1)
    cols = np.minimum((np.arange(x0, x1) * objects.shape[1]) // width, objects.shape[1] - 1)
    region_objects = objects[np.ix_(rows, cols)]
    boundaries = segmentation.find_boundaries(region_objects, mode="inner" if types else "thick")
    legend = []
    if types:
        classes = read_object_classes(types, objects, kind="table")
        colour_of = np.zeros((int(objects.max()) + 1, 3), np.uint8)
        colour_of[:] = OUTLINE
        for k, name in enumerate(classes.names, 1):
            colour_of[classes.labels[classes.classes == k]] = class_colour(k - 1)
            legend.append((name, tuple(class_colour(k - 1))))
        rgb[boundaries] = colour_of[region_objects[boundaries]]
    else:
        rgb[boundaries] = OUTLINE
    picture = Image.fromarray(rgb)
    count = len(np.unique(region_objects)) - (1 if (region_objects == 0).any() else 0)
    if caption:
        draw = ImageDraw.Draw(picture)
        draw.rectangle([0, 0, picture.width, 18], fill=(255, 255, 255))
        draw.text((4, 3), caption.format(count=count), fill=(0, 0, 0))
        if legend:  # a second line: the types in their colours
            draw.rectangle([0, 18, picture.width, 36], fill=(255, 255, 255))
        x = 4
        for name, colour in legend:
            draw.rectangle([x, 22, x + 10, 32], fill=colour)
            draw.text((x + 14, 21), name, fill=(0, 0, 0))
            x += 24 + 7 * len(name)
    picture.save(out)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slide")
    parser.add_argument("labels")
    parser.add_argument("out")
    parser.add_argument("--region", nargs=4, type=int, default=REGION, metavar=("X0", "Y0", "X1", "Y1"))
    parser.add_argument("--caption", help="text above the picture; {count} is the number of objects drawn")
    parser.add_argument("--types", help="the objects' types (object_classifier_apply's table): outlines in their colours")
    args = parser.parse_args()
    print(draw_overlay(args.slide, args.labels, args.out, tuple(args.region), args.caption, args.types),
          "objects drawn")


if __name__ == "__main__":
    main()
