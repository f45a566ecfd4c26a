"""Sharing results: OMERO (images and ROIs) and the BioImage Archive deposit.

May import :mod:`dlhisto_core.base` and :mod:`dlhisto_core.io`.

=================  ==============================================================================
module             holds
=================  ==============================================================================
``omero``          the OMERO client: fetch images, push label images as ROIs
``deposit``        a BioImage Archive bundle (RO-Crate) of a study's files
``bia_validate``   the Archive's own validator, run in its own environment (imports nothing)
=================  ==============================================================================
"""
