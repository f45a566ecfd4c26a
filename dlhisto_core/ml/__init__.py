"""Machine learning on hand-made features: the ilastik-style pixel classifier.

May import :mod:`dlhisto_core.base`, :mod:`dlhisto_core.io`, :mod:`dlhisto_core.imaging` and
:mod:`dlhisto_core.classic` (objects of the class maps).

=====================  ==========================================================================
module                 holds
=====================  ==========================================================================
``pixel_classifier``   random forest on the filter bank: train, classify pixels, save, load
``classifier_schema``  what a classifier's ``classifier.json`` must hold
=====================  ==========================================================================
"""
