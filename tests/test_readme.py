"""The README's "From Python" example runs as printed and gives a usable model."""

import os
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_from_python_example_trains_predicts_and_scores(tmp_path, capsys, monkeypatch):
    section = README.read_text(encoding="utf-8").split("## From Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) < 15
    monkeypatch.chdir(tmp_path)
    os.symlink(README.parent / "test-data", tmp_path / "test-data")
    exec(compile(code, "README.md", "exec"), {})
    found, total, f1 = re.search(r"(\d+) of (\d+) nuclei found, F1 ([\d.]+)", capsys.readouterr().out).groups()
    assert int(total) == 29  # the annotated nuclei of quadrant 4
    assert float(f1) > 0.5
    assert (tmp_path / "nuclei_unet.zip").stat().st_size > 1_000_000
    assert (tmp_path / "q4_objects.tif").is_file()


def test_the_cell_types_example_counts_the_held_out_nuclei(tmp_path, capsys, monkeypatch):
    section = README.read_text(encoding="utf-8").split("## From Python", 1)[1]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[1]
    monkeypatch.chdir(tmp_path)
    os.symlink(README.parent / "test-data", tmp_path / "test-data")
    exec(compile(code, "README.md", "exec"), {})
    rows = [line.rsplit(" ", 2) for line in capsys.readouterr().out.splitlines()]
    counts = {tuple(region_type.rsplit(" ", 1)): int(count) for region_type, count, _ in rows}
    assert counts[("whole image", "all")] == 599
    assert counts[("Left half", "all")] + counts[("Right half", "all")] == 599
    assert sum(counts[("whole image", t)] for t in ("connective", "inflammatory", "neoplastic")) == 599
