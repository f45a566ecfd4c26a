"""The cohort step: from the tables the slide steps wrote for each sample of a study to one row
per sample, the groups compared readout by readout, the samples classified from their readouts
with cross-validation, and one HTML report of it all (:func:`compare_samples`)."""

from __future__ import annotations

import html
import os
from dataclasses import dataclass

import numpy as np

from ..evaluation.pages import figure, paragraph, svg, table, write_page
from ..io.tables import write_table
from .group_statistics import COMPARISON_COLUMNS, compare_groups, group_values
from .readouts import Readouts, sample_readouts
from .sample_classifier import SampleClassification, SampleClassifierOptions, classify_samples

BOX_PLOTS = 24
"""Readouts drawn as box plots in the report: those with the smallest p values."""
SCORE_COLUMNS = ("score", "value", "ci_low", "ci_high", "samples")


@dataclass
class Cohort:
    """What the cohort step found."""

    readouts: Readouts
    comparison: list[dict]
    classification: SampleClassification


def compare_samples(tables: list[tuple[str | os.PathLike, str]], sheet: str | os.PathLike,
                    sheet_name: str | None = None, group_column: str = "group",
                    options: SampleClassifierOptions | None = None) -> Cohort:
    """Readouts per sample (:func:`readouts.sample_readouts`), the groups compared
    (:func:`group_statistics.compare_groups`) and the samples classified
    (:func:`sample_classifier.classify_samples`)."""
    readouts = sample_readouts(tables, sheet, sheet_name, group_column)
    return Cohort(readouts, compare_groups(readouts, group_column),
                  classify_samples(readouts, group_column, options))


def write_cohort(cohort: Cohort, readouts_path=None, comparison_path=None, classification_path=None,
                 report_path=None, group_column: str = "group") -> None:
    """The step's outputs: the readouts, the comparison and the classification (scores, then
    each sample's out-of-fold prediction, then the top features) as tables, and the report."""
    if readouts_path:
        write_table(readouts_path, cohort.readouts.rows, cohort.readouts.columns)
    if comparison_path:
        write_table(comparison_path, cohort.comparison, COMPARISON_COLUMNS)
    if classification_path:
        write_table(classification_path, _classification_rows(cohort.classification), _CLASSIFICATION_COLUMNS)
    if report_path:
        cohort_report(report_path, cohort, group_column)


_CLASSIFICATION_COLUMNS = ("section", "name", "value", "ci_low", "ci_high", "group", "predicted", "fold")


def _classification_rows(result: SampleClassification) -> list[dict]:
    rows = [{"section": "score", "name": s["score"], "value": s["value"], "ci_low": s["ci_low"],
             "ci_high": s["ci_high"]} for s in result.scores]
    rows += [{"section": "sample", "name": p["sample"], "value": p[f"p_{p['predicted']}"], "group": p["group"],
              "predicted": p["predicted"], "fold": p["fold"]} for p in result.predictions]
    rows += [{"section": "top feature", "name": t["feature"], "value": t["importance"]} for t in result.top_features]
    return rows


def cohort_report(path, cohort: Cohort, group_column: str = "group") -> None:
    """One self-contained page: the classification's scores, predictions and top features, the
    comparison of every readout, and box plots of the readouts that differ most."""
    readouts, result = cohort.readouts, cohort.classification
    groups = sorted({row[group_column] for row in readouts.rows})
    sizes = ", ".join(f"{g}: {sum(r[group_column] == g for r in readouts.rows)}" for g in groups)
    scores = {s["score"]: s for s in result.scores}
    sections = [
        paragraph(f"{len(readouts.rows)} samples in {len(groups)} groups ({sizes}), {len(readouts.features)} readouts "
                  f"per sample, {len(cohort.comparison)} of them compared."),
        "<h2>Samples classified from their readouts</h2>",
        paragraph(f"Cross-validated at the sample level: balanced accuracy {scores['balanced_accuracy']['value']:.3g} "
                  f"(95 % CI {scores['balanced_accuracy']['ci_low']:.3g}-{scores['balanced_accuracy']['ci_high']:.3g}), "
                  f"ROC AUC {scores['roc_auc']['value']:.3g} (95 % CI {scores['roc_auc']['ci_low']:.3g}-"
                  f"{scores['roc_auc']['ci_high']:.3g}); intervals by bootstrap over samples."),
        table(result.scores, SCORE_COLUMNS, "scores"),
        table(result.predictions, ("sample", "group", "predicted", "fold", *(f"p_{c}" for c in result.classes)),
              "predictions"),
        "<h3>Top features</h3>", table(result.top_features, ("rank", "feature", "importance"), "top-features"),
        "<h2>Groups compared, readout by readout</h2>",
        paragraph("Two-sided Mann-Whitney U (two groups) or Kruskal-Wallis H (more), Benjamini-Hochberg q values "
                  "over all readouts tested; rank-biserial correlation or epsilon squared as effect size."),
        table(cohort.comparison, COMPARISON_COLUMNS, "comparison"),
        f"<h2>The {min(BOX_PLOTS, len(cohort.comparison))} readouts that differ most</h2>",
    ]
    for row in cohort.comparison[:BOX_PLOTS]:
        sections.append(figure(_box_plot(readouts, row["feature"], groups, group_column),
                               f"{html.escape(row['feature'])}: p {row['p_value']:.3g}, q {row['q_value']:.3g}"))
    write_page(path, f"Cohort of {len(readouts.rows)} samples", sections, "cohort")


def _box_plot(readouts: Readouts, feature: str, groups: list[str], group_column: str) -> str:
    import matplotlib.pyplot as plt

    values = [group_values(readouts.rows, feature, group_column, group) for group in groups]
    fig, ax = plt.subplots(figsize=(1.2 * len(groups) + 1.6, 3))
    ax.boxplot(values, widths=0.5)
    for k, shown in enumerate(values, 1):
        ax.plot(np.full(len(shown), k), shown, "o", color="#1f77b4", alpha=0.7)
    ax.set_xticks(range(1, len(groups) + 1))
    ax.set_xticklabels(groups, parse_math=False)
    ax.set_title(feature, fontsize=9, parse_math=False)
    return svg(fig)
