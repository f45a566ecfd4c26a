"""Files in and out: images, slides, tables, GeoJSON; every file from a user checked before use.

May import :mod:`dlhisto_core.base` only.

=================  ==============================================================================
module             holds
=================  ==============================================================================
``images``         whole images: TIFF / OME-TIFF, PNG, JPEG, label images (:func:`read_image`)
``readers``        region readers of one level (TIFF tiles, arrays, resampled to a pixel size)
``slides``         scanner slides through OpenSlide, pyramid levels; :func:`image_reader` opens
                   a file, a reader or an array behind one protocol
``writers``        TIFF / OME-TIFF, tiled and pyramidal, label images
``pixel_size``     pixel sizes read, converted to µm and checked; labels put onto another pixel grid
``tiff_structure`` a TIFF's headers checked before any decoder reads them
``tiling``         tiles in TIFF order, worked on in parallel
``tables``         tab-separated tables written and read
``geojson``        QuPath GeoJSON: labels out as outlines, annotations in as labels
``rings``          polygon rings rasterised by scanlines
``untrusted``      bounded reading of zips, YAML and JSON from users
``metadata``       metadata from others' files checked against a schema
``inputs``         inputs as (path, name) pairs, paired by name
``outputs``        outputs written whole and together, or not at all
=================  ==============================================================================
"""
