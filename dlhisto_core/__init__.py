"""dlhisto: image analysis for digital histology, one step per Galaxy tool.

Every step of the command line (``dlhisto <step>``) and of the Galaxy tools is a function of this
package; the names below are its public API. They load lazily, so that ``import dlhisto_core``
stays fast and the deep-learning steps import PyTorch only when used.

=====================  ==========================================================================
step                   Python
=====================  ==========================================================================
preprocess             :func:`preprocess` with :class:`PreprocessOptions`; stain normalisation:
                       :mod:`dlhisto_core.stain` (``fit``, ``normalize_slide``, ``save``, ``load``)
segment_classic        :func:`segment_classic` with :class:`ClassicOptions`
auto_annotate          :func:`auto_annotate` with :class:`AutoAnnotateOptions`
pixel_classifier_*     :mod:`dlhisto_core.pixel_classifier` (``train``, ``classify_pixels``, ``save``, ``load``)
train, transfer        :func:`train`, :func:`transfer` (:mod:`dlhisto_core.training`)
predict                :func:`predict` with :class:`PredictOptions` (a package file); with a
                       loaded model (:func:`load_package`): :func:`predict_slide`
                       (segmentation) or :func:`predict_image` (regression); a package made
                       elsewhere: :func:`load_zoo_model`, then :func:`predict_zoo`
classify               :func:`classify` with :class:`ClassifyOptions`
evaluate               :func:`evaluate` (all modes, the tool's outputs); :func:`evaluate_instances`,
                       :func:`evaluate_classes`, :func:`evaluate_tile_classes` (the rows)
crossval               :func:`cross_validate` with :class:`CrossValOptions`
omero_fetch, _push     :mod:`dlhisto_core.omero`: ``connect``, then ``fetch`` or ``push``
deposit                :func:`dlhisto_core.deposit.deposit`
pretrained             :func:`pretrained_model`: dlhisto's pretrained models (:mod:`dlhisto_core.shipped_models`)
geojson_to_labels      :func:`geojson_to_labels` with :class:`ImportOptions`; the other way (the
                       ``--geojson`` output of segment_classic, the pixel classifier and predict):
                       :func:`labels_to_geojson` with :class:`ExportOptions`
=====================  ==========================================================================

Images are read with :func:`read_image` / :func:`read_labels` (or tile by tile with
:class:`TiledImageReader`) and written with :func:`write_image` / :func:`write_labels`.
:func:`limit_threads` caps the CPU threads of every library (the command line's ``--threads``).
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "image_io": ["Image", "read_image", "read_labels", "write_image", "write_labels", "TiledImageReader"],
    "preprocessing": ["preprocess", "PreprocessOptions"],
    "classic": ["segment_classic", "ClassicOptions"],
    "annotation": ["auto_annotate", "AutoAnnotateOptions"],
    "measure": ["measure_objects"],
    "training": ["train", "transfer", "fine_tune", "TrainedModel"],
    "dl_options": ["TrainOptions", "DataOptions", "TransferOptions", "PredictOptions", "ClassifyOptions"],
    "model_package": ["load_package"],
    "dl_predict": ["predict", "predict_slide", "predict_image"],
    "zoo_models": ["load_zoo_model", "predict_zoo", "ZooModel"],
    "dl_classify": ["classify"],
    "evaluation": ["evaluate", "Evaluation", "evaluate_instances", "evaluate_classes", "evaluate_tile_classes"],
    "crossval": ["cross_validate", "CrossValOptions", "AnnotatedImage"],
    "geojson": ["labels_to_geojson", "geojson_to_labels", "ExportOptions", "ImportOptions"],
    "threads": ["limit_threads"],
    "shipped_models": ["pretrained_model"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = ["__version__", *_WHERE]


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
