"""Results seen over the slide: a zoomable viewer page with switchable overlays.

May import :mod:`dlhisto_core.base`, :mod:`dlhisto_core.io` and :mod:`dlhisto_core.imaging`.

=================  ==============================================================================
module             holds
=================  ==============================================================================
``tiles``          Deep Zoom tile pyramids, made once, strip by strip, in bounded memory
``layers``         overlays as tiles: objects outlined and regions filled in their classes'
                   colours, heatmaps; the objects' outlines and measurements for clicks
``page``           the viewer's page (:func:`make_viewer`): slide, layers, legend, scale bar
``assets``         the pinned npm packages the page uses, vendored by the install step
=================  ==============================================================================
"""
