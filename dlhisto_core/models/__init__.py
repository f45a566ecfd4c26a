"""What a model is and how it is shared: networks, bioimage.io packages (ours and others'),
model cards, the facility's model base and dlhisto's pretrained models.

May import :mod:`dlhisto_core.base`, :mod:`dlhisto_core.io` and :mod:`dlhisto_core.imaging`
(a package records its stain reference). What is done with a model (training, prediction)
is in :mod:`dlhisto_core.dl`, above.

==================  =============================================================================
module              holds
==================  =============================================================================
``spec``            what a dlhisto network is, without PyTorch (:class:`ModelSpec`)
``networks``        smp U-Nets and tile classifiers, encoder freezing, weight loading
``packages``        dlhisto's bioimage.io packages: export, safe loading, checks
``schemas``         what a package's ``rdf.yaml`` must hold
``cards``           a package's README: what, on what, how good
``zoo``             packages made elsewhere (TorchScript, ONNX, smp state dicts) as windowed models
``code_allowlist``  the operators a foreign TorchScript or ONNX graph may run
``model_base``      the rows of the facility's model base
``shipped``         dlhisto's pretrained models (``weights/``), made into packages on demand
``pretrained``      ImageNet encoder weights from registry packages
==================  =============================================================================
"""
