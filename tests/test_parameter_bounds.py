"""Every numeric parameter of every step, given a value outside what the step can do (negative,
zero, NaN, infinite, absurdly large) ends with exit status 2 and one line naming the parameter,
and writes nothing; never an internal error, a traceback or a hang. The few values of that grid
that a step can do (ACCEPTED, each with what it means) must work instead.

The steps run in-process (``commands.main``), so that the whole grid takes seconds, not minutes.
"""

import argparse

import numpy as np
import pytest
import tifffile

from dlhisto_core import cli
from dlhisto_core.cli.parser import build_parser

BAD_FLOATS = ["nan", "inf", "-1", "1e12"]
BAD_INTS = ["-1", "0", "1000000000000"]
NOT_ONLY_NUMBERS = {"--normalize": 2}  # options taking several numbers: how many


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, test_data, nuclei_model):
    folder = tmp_path_factory.mktemp("bounds")
    image = tifffile.imread(test_data / "nuclei.tif")[:96, :96]
    labels = tifffile.imread(test_data / "nuclei_groundtruth.tif")[:96, :96]
    corner = tifffile.imread(test_data / "nuclei.tif")[:128, 32:160]  # the scribbles mark both classes here
    scribbles = tifffile.imread(test_data / "nuclei_scribbles.tif")[:128, 32:160]
    for name, data in [("image.tif", image), ("labels.tif", labels), ("corner.tif", corner), ("scribbles.tif", scribbles),
                       ("image2.tif", image[::-1].copy()), ("labels2.tif", labels[::-1].copy())]:
        tifffile.imwrite(folder / name, data)
    tifffile.imwrite(folder / "rgb.tif", np.stack([image // 256] * 3, axis=-1).astype(np.uint8))
    return {"in": folder, "data": test_data, "model": nuclei_model}


TRAINING = ["--image", "{in}/image.tif", "--labels", "{in}/labels.tif", "--patch-size", "32", "--patches-per-image",
            "4", "--epochs", "1", "--batch-size", "2", "--device", "cpu", "--model", "{out}/m.zip"]
STEPS = {
    "preprocess": ["{in}/image.tif", "{out}/o.tif", "--channel", "1"],
    "segment_classic": ["{in}/image.tif", "--labels", "{out}/l.tif", "--measurements", "{out}/m.tsv",
                        "--summary", "{out}/s.tsv"],
    "auto_annotate": ["{in}/image.tif", "{in}/image.tif", "--reference-channel", "bright",
                      "--method", "phase", "--labels", "{out}/l.tif", "--report", "{out}/r.tsv"],
    "pixel_classifier_train": ["--image", "{in}/corner.tif", "--annotation", "{in}/scribbles.tif",
                               "--classifier", "{out}/c.zip", "--trees", "3"],
    "pixel_classifier_predict": ["{in}/image.tif", "--classifier", "{data}/nuclei_classifier.zip",
                                 "--probabilities", "{out}/p.tif", "--classes", "{out}/c.tif", "--objects-class", "1",
                                 "--objects", "{out}/o.tif", "--measurements", "{out}/m.tsv", "--summary",
                                 "{out}/s.tsv", "--tile-size", "64"],
    "train": TRAINING,
    "transfer": [*TRAINING, "--pretrained", "{model}", "--finetune-epochs", "1"],
    "predict": ["{in}/image.tif", "--model", "{model}", "--classes", "{out}/c.tif", "--tile-size", "64",
                "--overlap", "0", "--device", "cpu"],
    "classify": ["--image", "{in}/rgb.tif", "--model", "{data}/stain_classifier.zip", "--table", "{out}/t.tsv",
                 "--device", "cpu"],
    "crossval": ["--image", "{in}/image.tif", "--labels", "{in}/labels.tif", "--image", "{in}/image2.tif",
                 "--labels", "{in}/labels2.tif", "--method", "classic", "--folds", "2", "--sigmas", "2",
                 "--table", "{out}/t.tsv"],
}


def numeric_options(step: str) -> list[tuple[str, type]]:
    parser = build_parser()
    steps = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [(a.option_strings[0], a.type) for a in steps.choices[step]._actions
            if a.type in (int, float) and a.option_strings]


CASES = [(step, option, value) for step in STEPS for option, kind in numeric_options(step)
         for value in (BAD_FLOATS if kind is float else BAD_INTS)]


def test_every_step_with_numeric_options_is_covered():
    covered = {step for step, _, _ in CASES}
    assert covered == set(STEPS)
    assert len(CASES) > 150


ACCEPTED = {
    ("segment_classic", "--manual-threshold", "-1"): "a threshold in the image's units: every pixel is foreground",
    ("segment_classic", "--manual-threshold", "1e12"): "a threshold in the image's units: no pixel is foreground",
    ("segment_classic", "--min-area", "0"): "every object kept",
    ("auto_annotate", "--min-area", "0"): "every object kept",
    ("pixel_classifier_predict", "--min-area", "0"): "every object kept",
    ("predict", "--min-area", "0"): "every object kept",
    ("crossval", "--min-area", "0"): "every object kept",
    ("pixel_classifier_train", "--seed", "0"): "a seed",
    ("train", "--seed", "0"): "a seed",
    ("transfer", "--seed", "0"): "a seed",
    ("crossval", "--seed", "0"): "a seed",
    ("transfer", "--freeze-stages", "0"): "no encoder stage frozen",
    ("transfer", "--finetune-epochs", "0"): "no second phase",
    ("predict", "--overlap", "0"): "windows side by side",
}
"""The values of the grid that a step can do, and what they mean: they must work."""
REFUSED = [case for case in CASES if case not in ACCEPTED]


def run_step(step: str, option: str, value: str, inputs, out) -> int:
    """The exit status of the step with ``option value`` added to its arguments."""
    argv = [a.format(out=out, **inputs) for a in STEPS[step]]
    argv += [option, *[value] * NOT_ONLY_NUMBERS.get(option, 1)]
    try:
        return cli.main([step, *argv])
    except SystemExit as exc:  # argparse: a value that is not a number of that kind
        return exc.code


def test_every_accepted_value_is_in_the_grid():
    assert set(ACCEPTED) <= set(CASES)


@pytest.mark.parametrize("step,option,value", REFUSED, ids=[f"{s} {o} {v}" for s, o, v in REFUSED])
def test_out_of_range_numbers_are_refused_in_one_line(step, option, value, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    status = run_step(step, option, value, inputs, out)
    captured = capsys.readouterr()
    assert status == 2, captured.err
    assert captured.err.count("\n") == 1 and "internal error" not in captured.err, captured.err
    assert "unrecognized arguments" not in captured.err and "arguments are required" not in captured.err, captured.err
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("step,option,value", list(ACCEPTED), ids=[f"{s} {o} {v}" for s, o, v in ACCEPTED])
def test_values_at_the_edge_that_a_step_can_do_work(step, option, value, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    status = run_step(step, option, value, inputs, out)
    assert status == 0, capsys.readouterr().err
    assert list(out.iterdir()) != []
