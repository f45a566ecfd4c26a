"""Classic image analysis: segmentation, objects and their measurements, registration,
labels made from a marker image, cells counted per type and region.

May import :mod:`dlhisto_core.base`, :mod:`dlhisto_core.io` and :mod:`dlhisto_core.imaging`.

==================  =============================================================================
module              holds
==================  =============================================================================
``segmentation``    smooth, threshold, size filter, watershed (:func:`segment_classic`)
``tiled_objects``   objects of a mask of any size, labelled and measured strip by strip
``measure``         per-object measurements (regionprops names, µm when known)
``object_features`` features of every object for cell types: shape, stains in and around, neighbours
``object_classes``  the classes users give objects: tables, type maps, QuPath GeoJSON
``cell_counts``     cells per type and region: counts, fractions, densities (:func:`count_cells`)
``registration``    a marker image registered onto the reference image
``annotation``      labels from a marker image (:func:`auto_annotate`)
==================  =============================================================================
"""
