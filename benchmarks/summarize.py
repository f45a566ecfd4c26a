"""The table of benchmarks/run: the figures its scripts wrote (JSON), the goals of issue 9 marked
met or not, printed and written to a Markdown file with the machine they were measured on.

Usage: python summarize.py FIGURES_DIR RESULTS_MD
"""

import json
import os
import platform
import sys
from datetime import date
from pathlib import Path

import torch

FLAT = 1.2  # peak memory counts as flat when the largest slide needs at most 20 % more than the smallest


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or platform.machine())
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{model}, {len(os.sched_getaffinity(0))} cores, {memory_gb:.0f} GB, {gpu}; "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}, torch {torch.__version__}")


def rows(figures: Path) -> list[tuple[str, str, str, str]]:
    """(measurement, figure, goal, verdict) rows."""
    load = lambda name: json.loads((figures / f"{name}.json").read_text())  # noqa: E731
    classic, pixel, training, predict, galaxy = (load(n) for n in
                                                 ("classic", "pixel_classifier", "training", "predict", "galaxy"))
    out = []
    for image, t in classic.items():
        out.append((f"classic segmentation, {image}: dlhisto / scikit-image time",
                    f"{t['dlhisto_s']:.3f} s / {t['skimage_s']:.3f} s = {t['dlhisto_s'] / t['skimage_s']:.2f}", "", ""))
    tiled = pixel["predict_tiled"]
    out.append((f"pixel classifier, {pixel['megapixels']:.1f} Mpx, tiled (features + forest + write)",
                f"{pixel['megapixels'] / tiled['seconds']:.2f} Mpx/s, peak {tiled['peak_rss_mb']:.0f} MB", "", ""))
    strips, whole = pixel["objects_tiled"], pixel["objects_whole"]
    out.append(("pixel classifier objects + measurements: by strips / whole map (peak RSS)",
                f"{strips['peak_rss_mb']:.0f} MB / {whole['peak_rss_mb']:.0f} MB, "
                f"{strips['seconds']:.1f} s / {whole['seconds']:.1f} s", "", ""))
    ratio = training["aug"] / training["bare"]
    out.append(("U-Net training: dlhisto loop / bare PyTorch loop (samples/s)",
                f"{training['aug']:.1f} / {training['bare']:.1f} = {ratio:.2f}", ">= 0.95",
                "met" if ratio >= 0.95 else "not met"))
    if "full" in training:
        out.append(("U-Net training incl. validation + checkpoint / bare loop",
                    f"{training['full']:.1f} / {training['bare']:.1f} = {training['full'] / training['bare']:.2f}",
                    "", ""))
    t = predict["throughput"]
    rate = lambda key: t["megapixels"] / t[f"{key}_s"]  # noqa: E731
    fastest_fp32, fastest = max(rate("fp32"), rate("fp32_fast")), max(rate(k) for k in ("fp32", "fp32_fast", "bf16_fast"))
    ratio = rate("dlhisto_bf16") / fastest
    out.append((f"whole-slide prediction, {t['megapixels']:.1f} Mpx, --precision bf16: dlhisto / fastest bare "
                "forward (bf16, BN folded, channels-last) (Mpx/s)", f"{rate('dlhisto_bf16'):.3f} / {fastest:.3f} = "
                f"{ratio:.2f}", ">= 0.9", "met" if ratio >= 0.9 else "not met"))
    out.append(("whole-slide prediction, default (float32 on CPUs): dlhisto / fastest bare float32 forward; "
                "/ plain float32 forward (Mpx/s)", f"{rate('dlhisto_fp32'):.3f} / {fastest_fp32:.3f} = "
                f"{rate('dlhisto_fp32') / fastest_fp32:.2f}; / {rate('fp32'):.3f} = "
                f"{rate('dlhisto_fp32') / rate('fp32'):.2f}", "", ""))
    for row in load("precision"):
        if "max_difference" in row:
            figure = (f"max difference {row['max_difference']:.2%} of the range, PSNR {row['psnr_fp32']:.2f} -> "
                      f"{row['psnr']:.2f} dB")
        else:
            figure = f"{row['pixels_agree']:.3%} agree" + (
                f", F1 {row['f1_fp32']:.4f} -> {row['f1']:.4f}" if "f1" in row else "")
        goal = "< 1 % of range" if "max_difference" in row else ">= 99.9 %" + (", F1 change < 0.005" if "f1" in row else "")
        out.append((f"{row['precision']} against fp32: {row['model']}, {row['image']}", figure, goal,
                    "holds" if row["holds"] else "does not hold"))
    peaks = {int(k): v for k, v in predict["peak_rss_mb"].items() if k.isdigit()}
    sizes = sorted(peaks)
    growth = peaks[sizes[-1]] / peaks[sizes[0]]
    out.append(("prediction peak RSS at " + " / ".join(f"{s // 1000}k" for s in sizes) + " px slides",
                " / ".join(f"{peaks[s]:.0f}" for s in sizes) + f" MB (x{growth:.2f})", f"flat (<= x{FLAT})",
                "met" if growth <= FLAT else "not met"))
    zoo = load("zoo")
    for weights in ("torchscript", "onnx"):
        ours, core = zoo["megapixels"] / zoo[weights]["dlhisto_s"], zoo["megapixels"] / zoo[weights]["core_s"]
        out.append((f"foreign bioimage.io U-Net ({weights}), {zoo['megapixels']:.1f} Mpx: dlhisto tiled / "
                    "bioimageio.core whole image (Mpx/s)", f"{ours:.3f} / {core:.3f} = {ours / core:.2f}", "", ""))
    slides = load("slides")
    predict_times = slides.pop("predict", {})
    for label, t in slides.items():
        ours, bare = t["megapixels"] / t["dlhisto_s"], t["megapixels"] / t["bare_s"]
        out.append((f"slide regions, {label}: dlhisto / bare OpenSlide (Mpx/s)",
                    f"{ours:.1f} / {bare:.1f} = {ours / bare:.2f}", "", ""))
    full = predict_times.pop("full resolution (0.499 µm)", None)
    for label, t in predict_times.items():
        out.append((f"SVS prediction at {label} vs full resolution (s)",
                    f"{t['seconds']:.1f} vs {full['seconds']:.1f} (x{full['seconds'] / t['seconds']:.1f} faster)", "", ""))
    geojson = load("geojson")
    ours, bare = geojson["dlhisto"], geojson["bare"]
    out.append((f"QuPath GeoJSON export of {ours['objects']} nuclei: dlhisto / scikit-image script",
                f"{ours['objects'] / ours['seconds']:.0f} / {bare['objects'] / bare['seconds']:.0f} objects/s, "
                f"peak {ours['peak_mb']:.0f} / {bare['peak_mb']:.0f} MB", "", ""))
    cells = load("cell_types")
    ours, bare = cells["dlhisto"], cells["bare"]
    out.append((f"cell types of {ours['objects']} nuclei (features, classifier; script: {bare['objects']}): dlhisto / "
                "scikit-image script",
                f"{ours['objects_per_second']:.0f} / {bare['objects_per_second']:.0f} objects/s, "
                f"{ours['mb_per_1000_objects']:.2f} / {bare['mb_per_1000_objects']:.2f} MB per 1000 nuclei", "", ""))
    viewer = load("viewer")
    out.append((f"viewer tiles of a {viewer['gigapixels']:.2f} Gpx slide + {viewer['objects']} objects: Mpx/s, peak memory",
                f"{viewer['dlhisto_mpx_s']:.1f} Mpx/s, {viewer['dlhisto_peak_gb']:.2f} GB", "bounded memory", ""))
    out.append((f"viewer tiles, same work ({viewer['same_work_gigapixels']:.2f} Gpx): dlhisto / OpenSlide "
                "DeepZoomGenerator (Mpx/s)", f"{viewer['dlhisto_same_work_mpx_s']:.1f} / {viewer['bare_mpx_s']:.1f} = "
                f"{viewer['ratio_same_work']:.2f}", "", ""))
    out.append((f"viewer's first view of the {viewer['gigapixels']:.2f} Gpx slide in headless Chromium (s)",
                f"{viewer['first_view_seconds']:.2f}", "< 2 s", "met" if viewer["first_view_seconds"] < 2 else "missed"))
    out.append(("Galaxy tool overhead (dlhisto_segment_classic: job - core time)",
                f"{galaxy['galaxy_job_s']:.1f} s - {galaxy['core_s']:.1f} s = {galaxy['overhead_s']:.1f} s", "", ""))
    slurm = load("galaxy_slurm")
    out.append(("the same, the job run by Slurm (scripts/slurm.sh, Galaxy's CLI runner)",
                f"{slurm['galaxy_job_s']:.1f} s - {slurm['core_s']:.1f} s = {slurm['overhead_s']:.1f} s", "", ""))
    cohort = load("cohort")
    runs = {int(n): r["seconds"] for n, r in cohort["runs"].items()}
    out.append((f"he_slide_nuclei_classic through Slurm, 1 / 2 / 4 slides of {cohort['slide_megapixels']:.1f} Mpx at "
                f"once on {cohort['cores']} cores: wall time (per slide)",
                " / ".join(f"{runs[n]:.0f} s ({runs[n] / n:.0f})" for n in sorted(runs)),
                "flat per slide until the cores are full", ""))
    out.append((f"paper estimate, 100 slides on {cohort['nodes']} nodes x {cohort['cores_per_node']} cores: these "
                f"regions / whole slides of {cohort['slide_gigapixels']:g} Gpx",
                f"{cohort['estimate_region_s'] / 60:.1f} min / {cohort['estimate_whole_slides_s'] / 3600:.1f} h", "", ""))
    return out


def main() -> None:
    figures, results = Path(sys.argv[1]), Path(sys.argv[2])
    table = rows(figures)
    header = ("measurement", "figure", "goal", "")
    widths = [max(len(r[i]) for r in table + [header]) for i in range(4)]
    for row in [header] + table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    lines = [f"# Benchmark results\n\n`benchmarks/run`, {date.today().isoformat()}, on {machine()}.\n",
             "Every figure below comes from that one run (the scripts and what they measure: "
             "`benchmarks/README.md`).\n",
             "| measurement | figure | goal | |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in table]
    results.write_text("\n".join(lines) + "\n")
    print(f"\nwritten to {results}")


if __name__ == "__main__":
    main()
