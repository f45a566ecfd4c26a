"""Sample classification from measured features (the "human-defined algorithm, then a
classifier" way): a regularised logistic regression or a random forest on the per-sample
readouts, scored by cross-validation at the sample level.

Each sample is one row of the readouts, so a fold never holds part of a sample. Folds are
stratified by class. Missing readouts are filled with the training folds' median; the logistic
regression sees standardised readouts. Scores are computed on the pooled out-of-fold
predictions: balanced accuracy and ROC AUC (one class against the rest, averaged, for more than
two), each with a 95 % bootstrap confidence interval over samples. The top features come from
the model fitted on every sample: the absolute standardised coefficients, or the forest's
impurity importances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..base.bounds import bounded, check_bounds, check_choices, choice
from ..base.errors import InputError
from .readouts import Readouts

METHODS = ("logistic", "forest")
BOOTSTRAP_SEED_OFFSET = 1
"""The bootstrap's random generator is seeded with the options' seed plus this."""


@dataclass
class SampleClassifierOptions:
    """How samples are classified and scored."""

    method: str = choice("logistic", METHODS)
    """logistic: L2-regularised logistic regression; forest: a random forest."""
    folds: int = bounded(4, 2, 20)
    """Cross-validation folds (at most the smallest group's size)."""
    regularisation: float = bounded(1.0, 1e-4, 1e4)
    """Logistic regression: the inverse of the L2 penalty's strength (scikit-learn's C)."""
    trees: int = bounded(300, 10, 5000)
    bootstrap: int = bounded(2000, 100, 100_000)
    """Resamples of the confidence intervals."""
    top_features: int = bounded(10, 1, 1000)
    seed: int = bounded(0, 0, 2**31 - 1)

    def __post_init__(self):
        check_bounds(self)
        check_choices(self)


@dataclass
class SampleClassification:
    """Cross-validated scores, each sample's out-of-fold prediction, the top features, and the
    model fitted on every sample."""

    classes: list[str]
    scores: list[dict]
    """Rows: score, value, ci_low, ci_high (balanced accuracy, ROC AUC)."""
    predictions: list[dict]
    """Rows: sample, group, predicted, fold, p_<class>..."""
    top_features: list[dict]
    """Rows: rank, feature, importance."""
    model: object


def classify_samples(readouts: Readouts, group_column: str = "group",
                     options: SampleClassifierOptions | None = None) -> SampleClassification:
    """Cross-validate a classifier of the samples' groups on their readouts (see the module)."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    options = options or SampleClassifierOptions()
    features, labels = readouts.matrix(), np.array([row[group_column] for row in readouts.rows])
    classes = sorted(set(labels))
    counts = [int((labels == c).sum()) for c in classes]
    if len(classes) < 2:
        raise InputError(f"the samples form one group ('{group_column}'): nothing to classify")
    folds = min(options.folds, min(counts))
    if folds < 2:
        raise InputError(f"each group needs two samples or more for cross-validation; the groups have {counts}")
    usable = ~np.all(np.isnan(features), axis=0)
    features = features[:, usable]
    names = [f for f, keep in zip(readouts.features, usable) if keep]
    probabilities = np.zeros((len(labels), len(classes)))
    fold_of = np.zeros(len(labels), int)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=options.seed)
    for fold, (train, test) in enumerate(splitter.split(features, labels), 1):
        model = _model(options).fit(features[train], labels[train])
        probabilities[test] = model.predict_proba(features[test])
        fold_of[test] = fold
    predicted = np.array(classes)[probabilities.argmax(axis=1)]

    def auc(truth, scores):
        if len(set(truth)) < len(classes):
            return np.nan
        if len(classes) == 2:
            return roc_auc_score(truth == classes[1], scores[:, 1])
        return roc_auc_score(truth, scores, multi_class="ovr", labels=classes)

    def accuracy(truth, scores):
        return balanced_accuracy_score(truth, np.array(classes)[scores.argmax(axis=1)])

    scores = [_with_interval(name, score, labels, probabilities, options)
              for name, score in (("balanced_accuracy", accuracy), ("roc_auc", auc))]
    final = _model(options).fit(features, labels)
    predictions = [{"sample": row["sample"], "group": label, "predicted": p, "fold": int(f),
                    **{f"p_{c}": float(v) for c, v in zip(classes, probs)}}
                   for row, label, p, f, probs in zip(readouts.rows, labels, predicted, fold_of, probabilities)]
    return SampleClassification(classes, scores, predictions, _top_features(final, names, options), final)


def _model(options: SampleClassifierOptions):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if options.method == "forest":
        return make_pipeline(SimpleImputer(strategy="median"), RandomForestClassifier(
            n_estimators=options.trees, random_state=options.seed, n_jobs=1))
    return make_pipeline(SimpleImputer(strategy="median"), StandardScaler(),
                         LogisticRegression(C=options.regularisation, max_iter=5000))


def _with_interval(name: str, score, labels: np.ndarray, probabilities: np.ndarray,
                   options: SampleClassifierOptions) -> dict:
    """A score of the pooled out-of-fold predictions and its 95 % bootstrap interval over samples."""
    value = score(labels, probabilities)
    generator = np.random.default_rng(options.seed + BOOTSTRAP_SEED_OFFSET)
    resampled = []
    for _ in range(options.bootstrap):
        pick = generator.integers(0, len(labels), len(labels))
        if len(set(labels[pick])) == len(set(labels)):
            resampled.append(score(labels[pick], probabilities[pick]))
    resampled = np.array(resampled, float)
    resampled = resampled[np.isfinite(resampled)]
    low, high = np.percentile(resampled, [2.5, 97.5]) if len(resampled) else (np.nan, np.nan)
    return {"score": name, "value": float(value), "ci_low": float(low), "ci_high": float(high),
            "samples": len(labels)}


def _top_features(model, names: list[str], options: SampleClassifierOptions) -> list[dict]:
    last = model[-1]
    importance = np.abs(last.coef_).mean(axis=0) if options.method == "logistic" else last.feature_importances_
    order = np.argsort(-importance, kind="stable")[:options.top_features]
    return [{"rank": rank, "feature": names[k], "importance": float(importance[k])}
            for rank, k in enumerate(order, 1)]
