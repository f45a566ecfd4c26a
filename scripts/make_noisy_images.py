"""Make the noisy nuclei quadrants of the restoration tests (test-data/nuclei_q1..4_noisy.tif),
and the clean quadrant 4 as float32 (nuclei_q4_float32.tif: Galaxy's image_diff compares the
float32 images that predict writes only with images of the same data type).

Each quadrant of nuclei.tif (DSB2018) is taken as the clean image, in photons: the noisy one is
drawn as a low-light camera would record it, Poisson shot noise on every pixel plus Gaussian
read noise of ``READ_NOISE`` counts, rounded and clipped to uint16. The seed of quadrant q is q,
so the files are the same on every run.
"""

from pathlib import Path

import numpy as np
import tifffile

TEST_DATA = Path(__file__).resolve().parent.parent / "test-data"
READ_NOISE = 10.0


def noisy(clean: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(clean.astype(np.float64)) + rng.normal(0, READ_NOISE, clean.shape)
    return np.clip(np.round(counts), 0, np.iinfo(np.uint16).max).astype(np.uint16)


def main() -> None:
    for quadrant in range(1, 5):
        clean = tifffile.imread(TEST_DATA / f"nuclei_q{quadrant}.tif")
        tifffile.imwrite(TEST_DATA / f"nuclei_q{quadrant}_noisy.tif", noisy(clean, quadrant), compression="zlib")
    clean = tifffile.imread(TEST_DATA / "nuclei_q4.tif")
    tifffile.imwrite(TEST_DATA / "nuclei_q4_float32.tif", clean.astype(np.float32), compression="zlib")


if __name__ == "__main__":
    main()
