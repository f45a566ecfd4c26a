"""Whole-slide prediction with a U-Net: throughput against the bare forward pass, and peak memory
on large, mostly empty slides.

The network is an untrained U-Net (mobilenet_v2 encoder by default, instance task: 3 classes,
1 channel, seed 0); its weights do not change the amount of work.

(a) Throughput: a grey slide of ``--size`` x ``--size`` pixels, a mosaic of the bundled nuclei
    image stored as a tiled OME-TIFF (tiles of 512), goes through ``prediction.predict_slide``
    writing only the class map (reading, normalisation, blending of the overlaps, argmax, tiled
    pyramidal output), in the default precision (float32 on CPUs) and in bfloat16. The
    baselines are the network's forward pass alone (``torch.inference_mode``) on as many
    windows of ``tile_size + overlap`` pixels, in the same batches as dlhisto forms them, with
    the input tensors prepared beforehand: the plain float32 network, and the fastest float32
    and bfloat16 paths (BARE_PATHS). All are given in megapixels of slide per second; the
    ratios compare dlhisto with the fastest bare pass (below 1: dlhisto is slower). The median
    of ``--repeats`` runs is printed.

(b) Peak memory: for each of ``--memory-sizes``, a synthetic slide that looks like a whole-slide
    scan: a constant dark background and a few discs of tissue (filled with the nuclei image,
    ``--tissue-fraction`` of the area in all), written tile by tile (the whole slide is never in
    memory). ``predict_slide`` runs with ``skip_background=True`` and writes the class map and the
    objects (instance labels) to a temporary folder, in a fresh process per slide so that each
    peak resident memory (VmHWM of the child) is its own. The first two lines are the floor: that
    process with the network built and nothing predicted (imports + model), then the same after
    one forward pass of a full batch of windows (the activations of inference).

Usage: .venv/bin/python benchmarks/dl_predict.py [--size 4096] [--repeats 3]
       [--memory-sizes 2000 8000 20000] [--tissue-fraction 0.05] [--skip-throughput] [--skip-memory]
"""

import argparse
import dataclasses
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dlhisto_core.models import networks
from dlhisto_core.models.spec import ENCODERS, ModelSpec
from dlhisto_core.imaging.intensity import channel_range, scale_channels
from dlhisto_core.dl.options import PredictOptions
from dlhisto_core.dl.prediction import predict_slide
from dlhisto_core.io.images import read_image
from dlhisto_core.io.writers import write_tiled_image
from dlhisto_core.dl.precision import inference_network
from dlhisto_core.io.tiling import tile_grid

NUCLEI = Path(__file__).resolve().parent.parent / "test-data" / "nuclei.tif"
SLIDE_TILE = 512


def make_model(encoder: str) -> tuple[torch.nn.Module, ModelSpec]:
    spec = ModelSpec("instance", 3, 1, "unet", encoder)
    return networks.build_model(spec, seed=0), spec


def options_from(args, skip_background: bool) -> PredictOptions:
    return PredictOptions(tile_size=args.tile_size, overlap=args.overlap, batch_size=args.batch_size,
                          device="cpu", skip_background=skip_background, min_tissue=args.min_tissue)


def mosaic_region(nuclei: np.ndarray, y: int, x: int, height: int, width: int) -> np.ndarray:
    """Pixels [y:y+h, x:x+w] of an endless mosaic of ``nuclei``."""
    ys, xs = np.arange(y, y + height) % nuclei.shape[0], np.arange(x, x + width) % nuclei.shape[1]
    return nuclei[np.ix_(ys, xs)]


def write_mosaic_slide(path: Path, size: int, nuclei: np.ndarray) -> None:
    tiles = (mosaic_region(nuclei, t.y, t.x, t.height, t.width) for t in tile_grid(size, size, SLIDE_TILE))
    write_tiled_image(path, tiles, (size, size), nuclei.dtype, SLIDE_TILE)


def tissue_discs(size: int, n_discs: int, fraction: float) -> list[tuple[float, float, float]]:
    """(cy, cx, radius) of ``n_discs`` equal discs covering ``fraction`` of the slide, one per cell
    of a grid, slightly off-centre."""
    grid = math.ceil(math.sqrt(n_discs))
    cell = size / grid
    radius = math.sqrt(fraction * size * size / (n_discs * math.pi))
    if radius > 0.45 * cell:
        raise SystemExit(f"{n_discs} discs cannot cover {fraction:.0%} of the slide; use more discs")
    rng = np.random.default_rng(0)
    discs = []
    for k in range(n_discs):
        row, col = divmod(k, grid)
        slack = 0.45 * cell - radius
        cy, cx = (row + 0.5) * cell + rng.uniform(-slack, slack), (col + 0.5) * cell + rng.uniform(-slack, slack)
        discs.append((cy, cx, radius))
    return discs


def write_sparse_slide(path: Path, size: int, nuclei: np.ndarray, discs, background: int) -> float:
    """Constant background with discs of nuclei mosaic, tile by tile; returns the tissue fraction."""
    tissue = 0

    def tiles():
        nonlocal tissue
        for t in tile_grid(size, size, SLIDE_TILE):
            tile = np.full((t.height, t.width), background, nuclei.dtype)
            yy, xx = np.ogrid[t.y:t.y + t.height, t.x:t.x + t.width]
            inside = np.zeros((t.height, t.width), bool)
            for cy, cx, r in discs:
                if cy + r < t.y or cy - r > t.y + t.height or cx + r < t.x or cx - r > t.x + t.width:
                    continue
                inside |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            if inside.any():
                tile[inside] = mosaic_region(nuclei, t.y, t.x, t.height, t.width)[inside]
                tissue += int(inside.sum())
            yield tile

    write_tiled_image(path, tiles(), (size, size), nuclei.dtype, SLIDE_TILE)
    return tissue / (size * size)


def time_predict(model, spec, slide: Path, options: PredictOptions, out: Path) -> tuple[float, object]:
    start = time.perf_counter()
    summary = predict_slide(model, spec, slide, options, classes_path=out / "classes.tif")
    return time.perf_counter() - start, summary


def bare_batches(size: int, options: PredictOptions) -> list[int]:
    """The batch sizes dlhisto forms: each row of windows, ``batch_size`` windows at a time."""
    cols = rows = -(-size // options.tile_size)
    return [min(options.batch_size, cols - start) for _ in range(rows) for start in range(0, cols, options.batch_size)]


BARE_PATHS = {
    "fp32": "plain network, float32",
    "fp32_fast": "BN folded, channels-last, float32",
    "bf16_fast": "BN folded, channels-last, bfloat16 autocast",
}
"""The bare forward passes timed: the textbook one, and the fastest float32 and bfloat16 ones
found on this CPU (torch.compile is not among them: 28 s to compile, then slower than these)."""


def time_bare(model, path: str, batches: list[int], window: int, nuclei: np.ndarray) -> float:
    """Seconds of the bare forward pass ``path`` (BARE_PATHS) over the batches, inputs prepared beforehand."""
    raw = mosaic_region(nuclei, 0, 0, window, window)
    sample = scale_channels(raw, *channel_range(raw))  # (1, W, W) float32
    inputs = [torch.from_numpy(np.repeat(sample[None], n, axis=0)) for n in batches]
    network = model.eval() if path == "fp32" else inference_network(model, torch.device("cpu"))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=path.startswith("bf16"))
    with torch.inference_mode(), autocast:
        network(inputs[0])  # warm-up of this path
        start = time.perf_counter()
        for batch in inputs:
            network(batch).float()
    return time.perf_counter() - start


def throughput(args, nuclei: np.ndarray, work: Path) -> dict:
    model, spec = make_model(args.encoder)
    slide = work / "mosaic.tif"
    write_mosaic_slide(slide, args.size, nuclei)
    window = args.tile_size + args.overlap
    runs = {"dlhisto_fp32": options_from(args, skip_background=False)}
    runs["dlhisto_bf16"] = dataclasses.replace(runs["dlhisto_fp32"], precision="bf16")
    batches = bare_batches(args.size, runs["dlhisto_fp32"])
    megapixels = args.size * args.size / 1e6
    with torch.inference_mode():  # warm-up
        model.eval()(torch.zeros(args.batch_size, 1, window, window))
    seconds = {key: [] for key in [*runs, *BARE_PATHS]}
    for _ in range(args.repeats):  # alternate, so that a slow spell of the machine hits all of them
        for key, options in runs.items():
            seconds[key].append(time_predict(model, spec, slide, options, work)[0])
        for path in BARE_PATHS:
            seconds[path].append(time_bare(model, path, batches, window, nuclei))
    seconds = {key: float(np.median(values)) for key, values in seconds.items()}
    print(f"(a) throughput: slide {args.size}x{args.size} ({megapixels:.1f} Mpx), {len(batches)} batches of up to "
          f"{args.batch_size} windows of {window} px (tile {args.tile_size} + overlap {args.overlap}); "
          f"median of {args.repeats}")
    print(f"{'measurement':<60} {'s':>8} {'Mpx/s':>8}")
    labels = {"dlhisto_fp32": "dlhisto predict_slide, --precision auto (float32 on CPUs)",
              "dlhisto_bf16": "dlhisto predict_slide, --precision bf16",
              **{path: f"bare forward: {label}" for path, label in BARE_PATHS.items()}}
    for key, label in labels.items():
        print(f"{label:<60} {seconds[key]:>8.2f} {megapixels / seconds[key]:>8.3f}")
    fastest_fp32 = min(seconds["fp32"], seconds["fp32_fast"])
    fastest = min(seconds[path] for path in BARE_PATHS)
    print(f"ratio dlhisto/fastest bare (Mpx/s): bf16 {fastest / seconds['dlhisto_bf16']:.2f}; "
          f"float32 {fastest_fp32 / seconds['dlhisto_fp32']:.2f} of the fastest float32, "
          f"{fastest / seconds['dlhisto_fp32']:.2f} of the fastest", flush=True)
    return {"megapixels": megapixels, **{f"{key}_s": value for key, value in seconds.items()}}


def memory(args, nuclei: np.ndarray, work: Path) -> dict:
    background = args.background
    print(f"(b) peak memory: predict_slide with skip_background, class map + objects written; {args.discs} discs "
          f"of tissue (~{args.tissue_fraction:.0%} of the area) on a constant background of {background}; "
          f"a fresh process per slide")
    print(f"{'slide':>13} {'tissue':>7} {'windows':>8} {'skipped':>8} {'objects':>8} {'s':>8} {'peak RSS MB':>12}")
    peaks = {}
    for floor, label in (("model", "model only"), ("forward", "+1 batch")):
        base = run_child(args, None, work, floor)
        peaks[floor] = base["peak_rss_mb"]
        print(f"{label:>13} {'':>7} {'':>8} {'':>8} {'':>8} {base['seconds']:>8.1f} "
              f"{base['peak_rss_mb']:>12.0f}", flush=True)
    for size in args.memory_sizes:
        slide = work / f"sparse-{size}.tif"
        fraction = write_sparse_slide(slide, size, nuclei, tissue_discs(size, args.discs, args.tissue_fraction),
                                      background)
        result = run_child(args, slide, work)
        print(f"{f'{size}x{size}':>13} {fraction:>7.1%} {result['windows']:>8} {result['skipped']:>8} "
              f"{result['objects']:>8} {result['seconds']:>8.1f} {result['peak_rss_mb']:>12.0f}", flush=True)
        peaks[str(size)] = result["peak_rss_mb"]
        slide.unlink()
    return peaks


def run_child(args, slide: Path | None, work: Path, floor: str = "model") -> dict:
    command = [sys.executable, __file__, "--child", str(slide or ""), "--floor", floor, "--work", str(work),
               "--encoder", args.encoder,
               "--tile-size", str(args.tile_size), "--overlap", str(args.overlap),
               "--batch-size", str(args.batch_size), "--min-tissue", str(args.min_tissue)]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"the measurement of '{slide}' failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def child(args) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    torch.set_num_threads(os.cpu_count())
    model, spec = make_model(args.encoder)
    start = time.perf_counter()
    result = {"windows": 0, "skipped": 0, "objects": 0}
    if not args.child and args.floor == "forward":  # one forward pass of a full batch of windows
        window = args.tile_size + args.overlap
        with torch.inference_mode():
            model.eval()(torch.zeros(args.batch_size, 1, window, window))
    if args.child:
        out = Path(tempfile.mkdtemp(dir=args.work, prefix="out-"))
        summary = predict_slide(model, spec, args.child, options_from(args, skip_background=True),
                                classes_path=out / "classes.tif", objects_path=out / "objects.tif")
        result = {"windows": summary.windows, "skipped": summary.skipped, "objects": summary.objects}
        for file in out.iterdir():
            file.unlink()
        out.rmdir()
    result["seconds"] = time.perf_counter() - start
    status = Path("/proc/self/status").read_text()
    vmhwm = [line for line in status.splitlines() if line.startswith("VmHWM:")]
    result["peak_rss_mb"] = int(vmhwm[0].split()[1]) / 1024 if vmhwm else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", choices=ENCODERS, default="mobilenet_v2")
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--min-tissue", type=float, default=0.01)
    parser.add_argument("--size", type=int, default=4096,
                        help="(a) side of the mosaic slide (4096: 64 windows, so that the work done once per slide, "
                        "statistics, network copy and pyramid, weighs little, as on scanner slides)")
    parser.add_argument("--repeats", type=int, default=3, help="(a) runs of each; the median is printed")
    parser.add_argument("--memory-sizes", type=int, nargs="+", default=[2000, 8000, 20000],
                        help="(b) sides of the sparse slides")
    parser.add_argument("--tissue-fraction", type=float, default=0.05, help="(b) area covered by the discs")
    parser.add_argument("--discs", type=int, default=4, help="(b) number of tissue discs")
    parser.add_argument("--background", type=int, default=5, help="(b) value of the empty background")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--json", help="also write the figures to this JSON file (benchmarks/run)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: one memory measurement
    parser.add_argument("--floor", choices=["model", "forward"], default="model", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args)
        return
    torch.set_num_threads(os.cpu_count())
    nuclei = read_image(NUCLEI).data
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), CPU; untrained U-Net {args.encoder}, "
          f"instance task (3 classes), 1 channel")
    with tempfile.TemporaryDirectory(prefix="dl-predict-bench-") as tmp:
        work = Path(tmp)
        figures = {}
        if not args.skip_throughput:
            figures["throughput"] = throughput(args, nuclei, work)
        if not args.skip_memory:
            figures["peak_rss_mb"] = memory(args, nuclei, work)
    if args.json:
        Path(args.json).write_text(json.dumps(figures))


if __name__ == "__main__":
    main()
