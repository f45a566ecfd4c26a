"""Machine learning on hand-made features: the ilastik-style pixel classifier and the
QuPath-style object classifier.

May import :mod:`dlhisto_core.base`, :mod:`dlhisto_core.io`, :mod:`dlhisto_core.imaging` and
:mod:`dlhisto_core.classic` (objects of the class maps).

=====================  ==========================================================================
module                 holds
=====================  ==========================================================================
``pixel_classifier``   random forest on the filter bank: train, classify pixels, save, load
``object_classifier``  random forest on object features: train, classify objects (cell types)
``forest_files``       the classifiers' zip files: a checked description and a forest never unpickled
``classifier_schema``  what a classifier's ``classifier.json`` must hold
=====================  ==========================================================================
"""
