"""Make the sparse 'scribble' annotation of test-data/nuclei.tif used to train pixel classifiers,
and the held-out annotation used to measure their accuracy.

What a person does in ilastik, done reproducibly: a one-pixel stroke along the long axis of
every 8th annotated nucleus (class 1, 'nucleus'), and a few straight strokes across the
background, kept 3 pixels away from any nucleus (class 2, 'background'). Every other pixel is
0 (not annotated).

The held-out annotation is the full human annotation (nuclei_groundtruth.tif) turned into
classes (1 = nucleus, 2 = background) with the scribbled pixels removed (0), so that accuracy
is measured only on pixels the classifier never trained on.

Usage: .venv/bin/python scripts/make_scribbles.py
       (writes test-data/nuclei_scribbles.tif and test-data/nuclei_heldout.tif)
"""

from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage import draw, measure

from dlhisto_core.io.images import read_labels
from dlhisto_core.io.writers import write_labels

TEST_DATA = Path(__file__).resolve().parent.parent / "test-data"
BACKGROUND_STROKES = [((20, 40), (20, 200)), ((150, 300), (250, 480)), ((480, 60), (400, 250)),
                      ((300, 10), (500, 10)), ((90, 400), (60, 500)), ((260, 150), (330, 120))]


def main() -> None:
    truth = read_labels(TEST_DATA / "nuclei_groundtruth.tif").data
    scribbles = np.zeros(truth.shape, np.uint8)
    for region in measure.regionprops(truth)[::8]:
        cy, cx = region.centroid
        half = 0.3 * region.axis_major_length
        dy, dx = -np.sin(region.orientation + np.pi / 2) * half, np.cos(region.orientation + np.pi / 2) * half
        rr, cc = draw.line(int(cy - dy), int(cx - dx), int(cy + dy), int(cx + dx))
        inside = truth[rr, cc] == region.label
        scribbles[rr[inside], cc[inside]] = 1
    far_from_nuclei = ~ndi.binary_dilation(truth > 0, iterations=3)
    for (r0, c0), (r1, c1) in BACKGROUND_STROKES:
        rr, cc = draw.line(r0, c0, r1, c1)
        keep = far_from_nuclei[rr, cc]
        scribbles[rr[keep], cc[keep]] = 2
    heldout = np.where(truth > 0, 1, 2).astype(np.uint8)
    heldout[scribbles > 0] = 0
    write_labels(TEST_DATA / "nuclei_scribbles.tif", scribbles)
    write_labels(TEST_DATA / "nuclei_heldout.tif", heldout)
    print(f"scribbles: nucleus {(scribbles == 1).sum()} px, background {(scribbles == 2).sum()} px; "
          f"held out: nucleus {(heldout == 1).sum()} px, background {(heldout == 2).sum()} px")


if __name__ == "__main__":
    main()
