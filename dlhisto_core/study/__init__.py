"""Studies over many images: k-fold cross-validation of every method.

Above every method it runs (:mod:`segmentation`, :mod:`ml`, :mod:`dl`) and the scores it reports
(:mod:`scoring`).

=============  ==================================================================================
module         holds
=============  ==================================================================================
``crossval``   k-fold cross-validation of classic, pixel classifier and U-Net (:func:`cross_validate`)
=============  ==================================================================================
"""
