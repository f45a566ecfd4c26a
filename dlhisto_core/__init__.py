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
object_classifier_*    :mod:`dlhisto_core.object_classifier` (``read_object_classes``, ``train``,
                       ``classify_objects``, ``save``, ``load``): cell types from measurements
count_cells            :func:`count_cells` with :class:`CountOptions`: cells per type and region
train, transfer        :func:`train`, :func:`transfer` (:mod:`dlhisto_core.dl.training`)
predict                :func:`predict` with :class:`PredictOptions` (a package file); with a
                       loaded model (:func:`load_package`): :func:`predict_slide`
                       (segmentation) or :func:`predict_image` (regression); a package made
                       elsewhere: :func:`load_zoo_model`, then :func:`predict_zoo`
classify               :func:`classify` with :class:`ClassifyOptions`
evaluate               :func:`evaluate` (all modes, typed cells too, the tool's outputs); :func:`evaluate_instances`,
                       :func:`evaluate_classes`, :func:`evaluate_tile_classes` (the rows)
view                   :func:`make_viewer` with :class:`ViewOptions`: a zoomable page of a slide
                       with objects, regions and heatmaps over it
crossval               :func:`cross_validate` with :class:`CrossValOptions`
cohort                 :func:`compare_samples` with :class:`SampleClassifierOptions` (then
                       :func:`write_cohort`): readouts per sample, groups compared, samples classified
omero_fetch, _push     :mod:`dlhisto_core.omero`: ``connect``, then ``fetch`` or ``push``
deposit                :func:`dlhisto_core.deposit.deposit`
pretrained             :func:`pretrained_model`: dlhisto's pretrained models (:mod:`dlhisto_core.models.shipped`)
geojson_to_labels      :func:`geojson_to_labels` with :class:`ImportOptions`; the other way (the
                       ``--geojson`` output of segment_classic, the pixel classifier and predict):
                       :func:`labels_to_geojson` with :class:`ExportOptions`
=====================  ==========================================================================

Images are read with :func:`read_image` / :func:`read_labels` (or tile by tile with
:class:`TiledImageReader`) and written with :func:`write_image` / :func:`write_labels`.
:func:`limit_threads` caps the CPU threads of every library (the command line's ``--threads``).

The code lives in sub-packages by concern, each importing only those below it: ``base``, ``io``,
``imaging``, ``classic``, ``evaluation``, ``ml``, ``models``, ``dl``, ``share``, ``view``, ``study``,
``cli``
(each ``__init__`` says what it holds).
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "io.images": ["Image", "read_image", "read_labels"],
    "io.readers": ["TiledImageReader"],
    "io.writers": ["write_image", "write_labels"],
    "imaging.preprocessing": ["preprocess", "PreprocessOptions"],
    "classic.segmentation": ["segment_classic", "ClassicOptions"],
    "classic.annotation": ["auto_annotate", "AutoAnnotateOptions"],
    "classic.measure": ["measure_objects"],
    "classic.cell_counts": ["count_cells", "CountOptions"],
    "dl.training": ["train", "transfer", "fine_tune", "TrainedModel"],
    "dl.options": ["TrainOptions", "DataOptions", "TransferOptions", "PredictOptions", "ClassifyOptions"],
    "models.packages": ["load_package"],
    "dl.prediction": ["predict", "predict_slide", "predict_image"],
    "models.zoo": ["load_zoo_model", "ZooModel"],
    "dl.foreign": ["predict_zoo"],
    "dl.classification": ["classify"],
    "evaluation.scoring": ["evaluate", "Evaluation", "evaluate_instances", "evaluate_classes", "evaluate_tile_classes"],
    "study.crossval": ["cross_validate", "CrossValOptions", "AnnotatedImage"],
    "study.cohort": ["compare_samples", "write_cohort"],
    "study.sample_classifier": ["SampleClassifierOptions"],
    "view.page": ["make_viewer"],
    "view.layers": ["ViewOptions"],
    "io.geojson": ["labels_to_geojson", "geojson_to_labels", "ExportOptions", "ImportOptions"],
    "base.threads": ["limit_threads"],
    "models.shipped": ["pretrained_model"],
}
_MODULES = {"stain": "imaging.stain", "pixel_classifier": "ml.pixel_classifier",
            "object_classifier": "ml.object_classifier", "omero": "share.omero",
            "deposit": "share.deposit"}
"""Steps whose API is a module of several functions, under a short public name."""
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = ["__version__", *_WHERE, *_MODULES]


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    if name in _MODULES:
        return importlib.import_module(f".{_MODULES[name]}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
