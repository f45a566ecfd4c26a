"""Every benchmark script still imports and builds its arguments (they are run by hand or by
benchmarks/run, not by the test command, so an API change could otherwise break them unseen)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py")
                 if p.name not in ("summarize.py", "stardist_baseline.py"))
"""summarize.py takes a folder of figures; stardist_baseline.py runs in StarDist's environment
(accuracy.py makes it)."""


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_the_benchmark_script_starts(script):
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage:")
