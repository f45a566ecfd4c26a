"""Scores against ground truth: pixel, object and tile metrics, the evaluate step, its report.

May import :mod:`dlhisto_core.base` and :mod:`dlhisto_core.io`. It sits below the methods it
scores, because training uses the same matching to tune an instance model's thresholds;
cross-validation, which runs the methods, is in :mod:`dlhisto_core.study`.

=============  ==================================================================================
module         holds
=============  ==================================================================================
``metrics``    matching of objects (StarDist's rules), AJI, confusion matrices, scores
``scoring``    the evaluate step in every mode, and its rows (:func:`evaluate`)
``report``     the HTML report of an evaluation
=============  ==================================================================================
"""
