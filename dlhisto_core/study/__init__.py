"""Studies over many images: k-fold cross-validation of every method, and cohorts (samples in
groups: their readouts, the groups compared, the samples classified).

Above every method it runs (:mod:`segmentation`, :mod:`ml`, :mod:`dl`) and the scores and pages it
reports (:mod:`evaluation`).

=====================  ==========================================================================
module                 holds
=====================  ==========================================================================
``crossval``           k-fold cross-validation of classic, pixel classifier and U-Net (:func:`cross_validate`)
``readouts``           the slide steps' tables of a study as one row of readouts per sample, with its sheet
``group_statistics``   every readout compared between groups (Mann-Whitney U, Kruskal-Wallis, BH q values)
``sample_classifier``  samples classified from their readouts, cross-validated at the sample level
``cohort``             the cohort step: the three above, their tables and the HTML report
=====================  ==========================================================================
"""
