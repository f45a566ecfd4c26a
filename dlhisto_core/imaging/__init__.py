"""Pixels made ready for analysis: stains, filters, intensity scaling, filter banks.

May import :mod:`dlhisto_core.base` and :mod:`dlhisto_core.io`.

=================  ==============================================================================
module             holds
=================  ==============================================================================
``stain``          stain normalisation of H&E and IHC (Macenko, Reinhard), slide by slide
``preprocessing``  the preprocess step: smoothing, background, channel choice
``intensity``      each channel stretched between two percentiles (networks and filters)
``features``       the multi-scale filter bank of the pixel classifier (ilastik's set)
=================  ==============================================================================
"""
