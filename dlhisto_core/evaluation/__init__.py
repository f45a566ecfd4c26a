"""Scores against ground truth: pixel, object and tile metrics, the evaluate step, its report.

May import :mod:`dlhisto_core.base`, :mod:`dlhisto_core.io`, :mod:`dlhisto_core.imaging` and
:mod:`dlhisto_core.classic` (the classes of objects). It sits below the methods it
scores, because training uses the same matching to tune an instance model's thresholds;
cross-validation, which runs the methods, is in :mod:`dlhisto_core.study`.

=============  ==================================================================================
module         holds
=============  ==================================================================================
``metrics``    matching of objects (StarDist's rules), AJI, confusion matrices, scores
``scoring``    the evaluate step in every mode, and its rows (:func:`evaluate`)
``typed``      objects with types: per-class F1 and PQ, mPQ, confusion of the matched types
``report``     the HTML report of an evaluation
=============  ==================================================================================
"""
