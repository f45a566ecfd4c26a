"""Deep learning: training networks and running them over images and slides.

May import every sub-package below it (:mod:`base`, :mod:`io`, :mod:`imaging`, :mod:`segmentation`,
:mod:`scoring`, :mod:`models`).

==================  =============================================================================
module              holds
==================  =============================================================================
``options``         the options of train, transfer, predict and classify (no PyTorch)
``patches``         training patches: sampling into HDF5, targets, the dataset that draws them
``augmentation``    what a patch may become: flips, elastic, colour; scale, stain, intensity, halos
``loop``            the resumable, reproducible training loop
``training``        the train and transfer steps (:func:`train`, :func:`transfer`)
``precision``       device, mixed precision, the network as inference runs it
``engine``          the one engine every model runs on: windows, batches, blending, background
``prediction``      whole-slide prediction with a package (:func:`predict`)
``foreign``         packages made elsewhere on the same engine (:func:`predict_zoo`)
``instances``       objects from an instance model's probabilities; tuning their thresholds
``classification``  tile classification (:func:`classify`)
==================  =============================================================================
"""
