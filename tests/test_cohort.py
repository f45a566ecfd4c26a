"""Cohorts: readouts per sample, groups compared, samples classified, on eight real samples in
two groups (histolytics' tumour nest and stroma crops, four quadrants each; their nuclei counts
and tissue tiles made by the pretrained models: test-data/README.md)."""

import json
import subprocess
import sys
from itertools import combinations
from math import comb
from pathlib import Path

import numpy as np
import pytest

from dlhisto_core.base.errors import InputError
from dlhisto_core.study.cohort import compare_samples, write_cohort
from dlhisto_core.study.group_statistics import compare_groups
from dlhisto_core.study.readouts import sample_readouts
from dlhisto_core.study.sample_classifier import SampleClassifierOptions, classify_samples

DATA = Path(__file__).resolve().parent.parent / "test-data"
SAMPLES = [f"{group}_{k}" for group in ("nest", "stroma") for k in range(1, 5)]
TABLES = [(DATA / f"cohort_{kind}_{s}.tsv", f"cohort_{kind}_{s}.tsv") for kind in ("counts", "tiles") for s in SAMPLES]
SHEET = DATA / "cohort_samples.tsv"


def table_value(path: Path, column: str, **where) -> float:
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    for line in lines[1:]:
        row = dict(zip(header, line.split("\t")))
        if all(row[k] == v for k, v in where.items()):
            return float(row[column])
    raise KeyError(where)


def test_readouts_are_the_tables_values_one_row_per_sample():
    readouts = sample_readouts(TABLES, SHEET)
    assert [row["sample"] for row in readouts.rows] == SAMPLES
    assert readouts.sheet_columns == ["sample", "group", "quadrant"]
    for row in readouts.rows:
        counts = DATA / f"cohort_counts_{row['sample']}.tsv"
        assert row["density_per_mm2:whole image:all"] == table_value(counts, "density_per_mm2", region="whole image")
        tiles = [line.split("\t")[5] for line in (DATA / f"cohort_tiles_{row['sample']}.tsv").read_text().splitlines()[1:]]
        tissue = [t for t in tiles if t != "background"]
        assert row["tissue_tiles"] == len(tissue)
        assert row["tile_fraction:tumour"] == pytest.approx(tissue.count("tumour") / len(tissue))
        assert row["tile_fraction:stroma"] + row["tile_fraction:tumour"] == pytest.approx(1)
    stroma_1 = readouts.rows[4]
    assert stroma_1["tile_fraction:tumour"] == 0 and stroma_1["count:tumour:all"] == 0  # none there: 0, not unknown
    assert stroma_1["density_per_mm2:tumour:all"] is None  # no tumour area: no density


def mann_whitney_by_hand(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """U of the first group (pairs it wins, ties halved) and, when there are no ties, the exact
    two-sided p value by enumerating every split of the pooled values."""
    u = sum((x > y) + 0.5 * (x == y) for x in a for y in b)
    pooled = np.concatenate([a, b])
    if len(np.unique(pooled)) < len(pooled):
        return u, float("nan")
    splits = [sum((x > y) for x in pooled[list(first)] for y in np.delete(pooled, list(first)))
              for first in combinations(range(len(pooled)), len(a))]
    centre = len(a) * len(b) / 2
    p = sum(abs(s - centre) >= abs(u - centre) for s in splits) / comb(len(pooled), len(a))
    return u, p


def benjamini_hochberg_by_hand(p: list[float]) -> list[float]:
    order = np.argsort(p)
    ranked = np.array(p)[order] * len(p) / np.arange(1, len(p) + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1].clip(max=1)
    result = np.empty(len(p))
    result[order] = q
    return result.tolist()


def test_two_groups_are_compared_as_mann_whitney_and_benjamini_hochberg_say():
    readouts = sample_readouts(TABLES, SHEET)
    tested = compare_groups(readouts)
    assert len(tested) == 10  # 12 readouts; the whole image's area is the same in every sample
    for row in tested:
        values = {g: np.array([r[row["feature"]] for r in readouts.rows if r["group"] == g], float)
                  for g in ("nest", "stroma")}
        u, p = mann_whitney_by_hand(values["nest"], values["stroma"])
        assert row["statistic"] == u and row["effect_size"] == pytest.approx(2 * u / 16 - 1)
        if not np.isnan(p):  # no ties: the exact p value
            assert row["p_value"] == pytest.approx(p)
    assert [r["q_value"] for r in tested] == pytest.approx(benjamini_hochberg_by_hand([r["p_value"] for r in tested]))
    density = next(r for r in tested if r["feature"] == "density_per_mm2:whole image:all")
    assert (density["statistic"], density["p_value"]) == (16, pytest.approx(2 / 70))


def test_more_groups_are_compared_by_kruskal_wallis(tmp_path):
    sheet = tmp_path / "three.tsv"
    sheet.write_text("sample\tgroup\n" + "".join(f"{s}\t{'nest' if s < 'stroma' else 'stroma_' + str(k < 7)}\n"
                                                 for k, s in enumerate(SAMPLES, 1)))
    readouts = sample_readouts(TABLES, sheet)
    row = next(r for r in compare_groups(readouts) if r["feature"] == "density_per_mm2:whole image:all")
    values = np.array([r["density_per_mm2:whole image:all"] for r in readouts.rows])
    groups = np.array([r["group"] for r in readouts.rows])
    ranks = values.argsort().argsort() + 1.0  # no ties
    n = len(values)
    h = 12 / (n * (n + 1)) * sum(ranks[groups == g].sum() ** 2 / (groups == g).sum() for g in set(groups)) - 3 * (n + 1)
    assert row["test"] == "Kruskal-Wallis H" and row["statistic"] == pytest.approx(h)
    assert row["effect_size"] == pytest.approx(h / (n - 1)) and row["n_per_group"] == "nest: 4, stroma_False: 2, stroma_True: 2"


@pytest.mark.parametrize("method", ["logistic", "forest"])
def test_samples_are_cross_validated_whole_and_each_fold_holds_both_groups(method):
    readouts = sample_readouts(TABLES, SHEET)
    result = classify_samples(readouts, options=SampleClassifierOptions(method=method, bootstrap=200))
    folds = {}
    for prediction in result.predictions:
        folds.setdefault(prediction["fold"], []).append(prediction["group"])
    assert sorted(p["sample"] for p in result.predictions) == SAMPLES  # every sample predicted once, out of fold
    assert sorted(folds) == [1, 2, 3, 4] and all(sorted(g) == ["nest", "stroma"] for g in folds.values())
    scores = {s["score"]: s for s in result.scores}
    assert scores["balanced_accuracy"]["value"] >= 0.75 and scores["roc_auc"]["value"] >= 0.75
    assert scores["roc_auc"]["ci_low"] <= scores["roc_auc"]["value"] <= scores["roc_auc"]["ci_high"]
    assert len(result.top_features) == 10


def test_shuffled_groups_score_no_better_than_chance_on_average():
    """A control: labels that mean nothing give a balanced accuracy around one half."""
    readouts = sample_readouts(TABLES, SHEET)
    rng = np.random.default_rng(0)
    accuracies = []
    for _ in range(10):
        shuffled = rng.permutation([row["group"] for row in readouts.rows])
        for row, group in zip(readouts.rows, shuffled):
            row["group"] = group
        result = classify_samples(readouts, options=SampleClassifierOptions(bootstrap=100))
        accuracies.append(result.scores[0]["value"])
    assert np.mean(accuracies) < 0.7


@pytest.mark.parametrize("sheet_text, message", [
    ("sample\tcondition\nnest_1\tA\n", "has no 'group' column"),
    ("sample\tgroup\nnest_1\tA\nnest_1\tB\n", "lists the sample 'nest_1' twice"),
    ("sample\tgroup\n" + "".join(f"{s}\tA\n" for s in SAMPLES) + "nest_9\tB\n", "no table was given for the samples nest_9"),
    ("sample\tgroup\nnest_1\tA\n", "holds the sample 'nest_2', which the sample sheet"),
])
def test_a_sheet_that_does_not_fit_the_tables_is_refused(tmp_path, sheet_text, message):
    sheet = tmp_path / "sheet.tsv"
    sheet.write_text(sheet_text)
    with pytest.raises(InputError, match=message):
        sample_readouts(TABLES, sheet)


def test_the_api_and_the_command_write_the_same_tables_and_a_report(tmp_path):
    cohort = compare_samples(TABLES, SHEET, options=SampleClassifierOptions(bootstrap=200))
    write_cohort(cohort, tmp_path / "r.tsv", tmp_path / "c.tsv", tmp_path / "k.tsv", tmp_path / "report.html")
    command = [str(Path(sys.executable).parent / "dlhisto"), "cohort", "--sample-sheet", str(SHEET), "--bootstrap", "200",
               "--readouts", str(tmp_path / "r2.tsv"), "--comparison", str(tmp_path / "c2.tsv"),
               "--classification", str(tmp_path / "k2.tsv"), "--report", str(tmp_path / "report2.html")]
    for path, _ in TABLES:
        command += ["--table", str(path)]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("8 samples, 12 readouts, 7 differ between groups at q < 0.05")
    for name in ("r", "c", "k"):
        assert (tmp_path / f"{name}.tsv").read_text() == (tmp_path / f"{name}2.tsv").read_text()
    page = (tmp_path / "report.html").read_text()
    assert page.count("<svg") == 10 and "8 samples in 2 groups (nest: 4, stroma: 4)" in page
    assert json.dumps("density_per_mm2:whole image:all")[1:-1] in page
