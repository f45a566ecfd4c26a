"""Classic image analysis: segmentation, objects and their measurements, registration,
labels made from a marker image.

May import :mod:`dlhisto_core.base`, :mod:`dlhisto_core.io` and :mod:`dlhisto_core.imaging`.

==================  =============================================================================
module              holds
==================  =============================================================================
``segmentation``    smooth, threshold, size filter, watershed (:func:`segment_classic`)
``tiled_objects``   objects of a mask of any size, labelled and measured strip by strip
``measure``         per-object measurements (regionprops names, µm when known)
``registration``    a marker image registered onto the reference image
``annotation``      labels from a marker image (:func:`auto_annotate`)
==================  =============================================================================
"""
