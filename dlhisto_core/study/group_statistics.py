"""Every readout compared between the groups of a study, as a biomarker screen is done.

Two groups: the two-sided Mann-Whitney U test (exact for small groups without ties) and the
rank-biserial correlation as effect size (from -1, every value of the first group below every
value of the second, to 1). More groups: the Kruskal-Wallis H test and epsilon squared
(H / (n - 1)). P values are corrected for the number of readouts tested by Benjamini and
Hochberg's false discovery rate (q values). The tests are scipy's own.
"""

from __future__ import annotations

import numpy as np

from ..base.errors import InputError
from .readouts import Readouts

MIN_PER_GROUP = 2
"""Fewest samples with a value in each group for a readout to be tested."""
COMPARISON_COLUMNS = ("feature", "test", "statistic", "p_value", "q_value", "effect_size", "effect_measure",
                      "n_per_group", "median_per_group")


def compare_groups(readouts: Readouts, group_column: str = "group") -> list[dict]:
    """One row per readout tested: the test, its statistic and p value, the q value, the effect
    size, and the number of samples and median of each group (in the groups' sorted order).
    Readouts with fewer than :data:`MIN_PER_GROUP` values in a group, or one value throughout,
    are left out. Sorted by p value (columns: :data:`COMPARISON_COLUMNS`)."""
    from scipy import stats

    rows = readouts.rows
    groups = sorted({row[group_column] for row in rows})
    if len(groups) < 2:
        raise InputError(f"the samples form {len(groups)} group ('{group_column}'); comparing needs two or more")
    tested = []
    for feature in readouts.features:
        values = [group_values(rows, feature, group_column, group) for group in groups]
        if min(len(v) for v in values) < MIN_PER_GROUP or np.ptp(np.concatenate(values)) == 0:
            continue
        if len(groups) == 2:
            result = stats.mannwhitneyu(values[0], values[1], alternative="two-sided")
            effect = 2 * result.statistic / (len(values[0]) * len(values[1])) - 1
            test, measure = "Mann-Whitney U", "rank-biserial"
        else:
            result = stats.kruskal(*values)
            effect = result.statistic / (sum(len(v) for v in values) - 1)
            test, measure = "Kruskal-Wallis H", "epsilon squared"
        tested.append({"feature": feature, "test": test, "statistic": float(result.statistic),
                       "p_value": float(result.pvalue), "effect_size": float(effect), "effect_measure": measure,
                       "n_per_group": ", ".join(f"{g}: {len(v)}" for g, v in zip(groups, values)),
                       "median_per_group": ", ".join(f"{g}: {np.median(v):.6g}" for g, v in zip(groups, values))})
    if tested:
        q_values = stats.false_discovery_control([row["p_value"] for row in tested], method="bh")
        for row, q in zip(tested, q_values):
            row["q_value"] = float(q)
    tested.sort(key=lambda row: (row["p_value"], row["feature"]))
    return tested


def group_values(rows: list[dict], feature: str, group_column: str, group: str) -> np.ndarray:
    """The finite values of a readout in one group."""
    values = np.array([row[feature] for row in rows if row[group_column] == group and row[feature] is not None], float)
    return values[np.isfinite(values)]
