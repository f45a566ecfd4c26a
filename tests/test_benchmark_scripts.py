"""Every benchmark script runs on a tiny input and writes its figures (they are run by hand or by
benchmarks/run, not by the test command, so an API change could otherwise break them unseen).
The figures themselves are not checked here: benchmarks/ measures, the tests do not time."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(p.stem for p in BENCHMARKS.glob("*.py") if p.stem not in ("summarize", "stardist_baseline"))
"""summarize.py takes a folder of figures; stardist_baseline.py runs in StarDist's environment
(accuracy.py makes it)."""

TINY = {
    "accuracy": ["--methods", "classic", "--work", "{tmp}/work"],
    "cell_types": ["--nuclei", "200", "--bare-nuclei", "200", "--json", "{tmp}/figures.json"],
    "dl_predict": ["--size", "512", "--tile-size", "128", "--overlap", "0", "--repeats", "1", "--memory-sizes", "600",
                   "--json", "{tmp}/figures.json"],
    "dl_training": ["--patch-size", "64", "--patches", "8", "--batch-size", "4", "--epochs", "1", "--rounds", "1",
                    "--skip-full", "--json", "{tmp}/figures.json"],
    "geojson_export": ["--nuclei", "200", "--json", "{tmp}/figures.json"],
    "pixel_classifier": ["--size", "256", "--tile-size", "128", "--json", "{tmp}/figures.json"],
    "precision": ["--skip-shipped", "--json", "{tmp}/figures.json"],
    "restoration": ["--epochs", "1", "--json", "{tmp}/figures.json"],
    "segment_classic_vs_skimage": ["--repeats", "1", "--json", "{tmp}/figures.json"],
    "slide_reading": ["--repeats", "1", "--json", "{tmp}/figures.json"],
    "viewer": ["--gigapixels", "0.01", "--bare-gigapixels", "0.005", "--json", "{tmp}/figures.json"],
    "zoo_predict": ["--size", "256", "--tile-size", "128", "--repeats", "1", "--json", "{tmp}/figures.json"],
}
"""Arguments that make each benchmark's work tiny (seconds)."""

HELP_ONLY = {
    "galaxy_overhead": "needs a running Galaxy",
    "slurm_cohort": "needs a Slurm cluster",
    "transfer_vs_scratch": "needs mnfinder's training data and minutes of training at its smallest",
}
"""Benchmarks that cannot run here on a tiny input: only their arguments are built."""


def test_every_benchmark_is_run_or_said_why_not():
    assert sorted([*TINY, *HELP_ONLY]) == SCRIPTS


@pytest.mark.parametrize("script", sorted(TINY))
def test_the_benchmark_runs_on_a_tiny_input(script, tmp_path):
    args = [a.format(tmp=tmp_path) for a in TINY[script]]
    done = subprocess.run([sys.executable, str(BENCHMARKS / f"{script}.py"), *args], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    if (tmp_path / "figures.json").exists():
        assert json.loads((tmp_path / "figures.json").read_text())
    else:  # accuracy.py keeps one row per method
        assert json.loads((tmp_path / "work" / "rows" / "classic.json").read_text())


@pytest.mark.parametrize("script", sorted(HELP_ONLY))
def test_the_benchmark_script_starts(script):
    done = subprocess.run([sys.executable, str(BENCHMARKS / f"{script}.py"), "--help"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage:")
