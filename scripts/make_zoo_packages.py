"""bioimage.io packages made the way the model zoo's are, for the tests of foreign models
(tests/test_zoo_models.py, the predict tool's tests): built with bioimageio.spec's own description classes (spec 0.4 and
0.5), TorchScript and ONNX weights, with and without halo, different pre- and postprocessing,
and small networks that are not smp U-Nets. Each package's test output is its network's output
on its test input, so that bioimageio.core's ``test_model`` passes it.

| package | spec | weights | input | preprocessing | network | halo | postprocessing |
|---|---|---|---|---|---|---|---|
| ts05_zmuv_halo | 0.5 | TorchScript | grey, 64 + 16k | zero_mean_unit_variance | 3 convolutions (5, 5, 3) | 8 | sigmoid |
| onnx04_range_pointwise | 0.4 | ONNX | RGB, 32 + 16k | scale_range 1-99.8 % per channel, per dataset (the image) | 1x1 convolutions, softmax | 0 | none |
| ts04_linear_fixed | 0.4 | TorchScript | grey, fixed 96 | scale_linear + clip | 2 dilated convolutions | 12 | clip |
| onnx05_fixed_zmuv | 0.5 | ONNX | RGB, 64 + 32k | fixed_zero_mean_unit_variance per channel | residual block | 8 | clip |
| ts05_output_stats | 0.5 | TorchScript | grey, 32 + 16k | scale_range | 1x1 convolutions, 2 channels out | 0 | scale_range per channel, scale_mean_variance to the input (statistics of the whole output) |
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import torch

PACKAGES = ("ts05_zmuv_halo", "onnx04_range_pointwise", "ts04_linear_fixed", "onnx05_fixed_zmuv", "ts05_output_stats")
DATA = Path(__file__).resolve().parent.parent / "test-data"
ZOO = DATA / "zoo"
"""Where the packages are made (git-ignored): zoo/<name>.zip."""
GALAXY_IMAGES = {"ts05_zmuv_halo": "nuclei.tif", "onnx04_range_pointwise": "ihc.png", "ts04_linear_fixed": "nuclei.tif",
                 "onnx05_fixed_zmuv": "ihc.png", "ts05_output_stats": "nuclei.tif"}
"""The image of each package's predict tool test; the output expected, written next to the package
as zoo/<package>_expected.tif, is bioimageio.core's prediction, or for ts05_output_stats (which
bioimageio.core 0.11.0 cannot run) the spec's formulas in numpy (:func:`output_stats_formulas`)."""
CITE_DOI = "10.5281/zenodo.5764892"


class ThreeConvolutions(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = torch.nn.Conv2d(1, 8, 5, padding=2), torch.nn.Conv2d(8, 8, 5, padding=2)
        self.c3 = torch.nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, x):
        return self.c3(torch.relu(self.c2(torch.relu(self.c1(x)))))


class Pointwise(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = torch.nn.Conv2d(3, 16, 1), torch.nn.Conv2d(16, 3, 1)

    def forward(self, x):
        return torch.softmax(self.c2(torch.relu(self.c1(x))), dim=1)


class Dilated(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(1, 4, 3, padding=4, dilation=4)
        self.c2 = torch.nn.Conv2d(4, 1, 3, padding=4, dilation=4)

    def forward(self, x):
        return self.c2(torch.tanh(self.c1(x)))


class GreyPointwise(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = torch.nn.Conv2d(1, 8, 1), torch.nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.c2(torch.tanh(self.c1(x)))


class Residual(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        return x + self.c2(torch.relu(self.c1(x)))


def build_all(folder: Path) -> dict[str, Path]:
    """Every test package, as zips in ``folder``: made once per folder and version of this script."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp, version = folder / "made_by.sha256", hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    if not stamp.is_file() or stamp.read_text() != version:
        for old in folder.glob("*.zip"):
            old.unlink()
        for old in folder.glob("*_expected.tif"):
            old.unlink()
    made = {name: (folder / f"{name}.zip") if (folder / f"{name}.zip").is_file() else BUILDERS[name](folder)
            for name in PACKAGES}
    stamp.write_text(version)
    return made


def _test_pair(work: Path, network: torch.nn.Module, test_input: np.ndarray, preprocess, postprocess=lambda y: y):
    """Save the test input and the network's output on it (pre- and postprocessed) as .npy."""
    with torch.no_grad():
        output = network(torch.from_numpy(preprocess(test_input).astype(np.float32))).numpy()
    np.save(work / "test_input.npy", test_input.astype(np.float32))
    np.save(work / "test_output.npy", postprocess(output).astype(np.float32))
    (work / "README.md").write_text("# A dlhisto test package\n\nA small untrained network, for tests only.\n")


def _torchscript(network: torch.nn.Module, path: Path) -> None:
    torch.jit.script(network.eval()).save(str(path))


def _onnx(network: torch.nn.Module, example: np.ndarray, path: Path) -> None:
    buffer = io.BytesIO()
    dims = {0: "batch", 2: "y", 3: "x"}
    torch.onnx.export(network.eval(), (torch.from_numpy(example),), buffer, dynamo=False, input_names=["input"],
                      output_names=["output"], dynamic_axes={"input": dims, "output": dims}, opset_version=17)
    path.write_bytes(buffer.getvalue())


def _rng_image(shape, seed: int, scale: float = 100.0) -> np.ndarray:
    from scipy import ndimage as ndi
    noise = np.random.default_rng(seed).random(shape).astype(np.float32)
    return (ndi.gaussian_filter(noise, sigma=(0, 0, 2, 2)) * scale).astype(np.float32)


def _work_folder(folder: Path, name: str, seed: int) -> Path:
    """The folder a package's files are written to before they are zipped; the seed of its network."""
    torch.manual_seed(seed)
    work = folder / name
    work.mkdir(exist_ok=True)
    return work


def _about(spec, work: Path) -> dict:
    """Authors, citation, licence and documentation, the same for every test package (either spec)."""
    v05 = spec.__name__.endswith("v0_5")
    return {"authors": [spec.Author(name="dlhisto tests")], "cite": [spec.CiteEntry(text="dlhisto", doi=CITE_DOI)],
            "license": spec.LicenseId("MIT") if v05 else "MIT",
            "documentation": spec.FileDescr(source=work / "README.md") if v05 else work / "README.md"}


def _save(description, folder: Path, name: str) -> Path:
    from bioimageio.spec import save_bioimageio_package
    return save_bioimageio_package(description, output_path=folder / f"{name}.zip")


def ts05_zmuv_halo(folder: Path) -> Path:
    from bioimageio.spec.model import v0_5 as spec

    work = _work_folder(folder, "ts05_zmuv_halo", seed=0)
    network = ThreeConvolutions().eval()
    image = _rng_image((1, 1, 128, 128), 0)
    _test_pair(work, network, image, lambda x: (x - x.mean()) / (x.std() + 1e-6), lambda y: 1 / (1 + np.exp(-y)))
    _torchscript(network, work / "weights.torchscript")
    space = [spec.SpaceInputAxis(id=spec.AxisId(a), size=spec.ParameterizedSize(min=64, step=16), scale=0.5,
                                 unit="micrometer") for a in ("y", "x")]
    inputs = spec.InputTensorDescr(
        id=spec.TensorId("raw"), axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=[spec.Identifier("raw")]),
                                       *space],
        test_tensor=spec.FileDescr(source=work / "test_input.npy"), data=spec.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=[spec.ZeroMeanUnitVarianceDescr(kwargs=spec.ZeroMeanUnitVarianceKwargs(
            axes=[spec.AxisId("channel"), spec.AxisId("y"), spec.AxisId("x")]))])
    outputs = spec.OutputTensorDescr(
        id=spec.TensorId("probability"),
        axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=[spec.Identifier("foreground")]),
              *[spec.SpaceOutputAxisWithHalo(id=spec.AxisId(a), halo=8, scale=0.5, unit="micrometer",
                                             size=spec.SizeReference(tensor_id=spec.TensorId("raw"),
                                                                     axis_id=spec.AxisId(a))) for a in ("y", "x")]],
        test_tensor=spec.FileDescr(source=work / "test_output.npy"), data=spec.IntervalOrRatioDataDescr(type="float32"),
        postprocessing=[spec.SigmoidDescr()])
    description = spec.ModelDescr(
        name="dlhisto test TorchScript v0-5", description="three convolutions, halo 8, zero mean unit variance",
        **_about(spec, work),
        inputs=[inputs], outputs=[outputs],
        weights=spec.WeightsDescr(torchscript=spec.TorchscriptWeightsDescr(
            source=work / "weights.torchscript", pytorch_version=spec.Version(torch.__version__.split("+")[0]))))
    return _save(description, folder, "ts05_zmuv_halo")


def onnx04_range_pointwise(folder: Path) -> Path:
    from bioimageio.spec.model import v0_4 as spec

    work = _work_folder(folder, "onnx04_range_pointwise", seed=1)
    network = Pointwise().eval()
    image = _rng_image((1, 3, 96, 128), 1, 255)

    def scale_range(x):
        low = np.percentile(x, 1, axis=(2, 3), keepdims=True)
        high = np.percentile(x, 99.8, axis=(2, 3), keepdims=True)
        return (x - low) / (high - low + 1e-6)
    _test_pair(work, network, image, scale_range)
    _onnx(network, image, work / "weights.onnx")
    description = spec.ModelDescr(
        name="dlhisto test ONNX v0-4", description="pointwise network, no halo, scale_range per channel and dataset",
        **_about(spec, work), timestamp="2026-12-03T00:00:00",
        inputs=[spec.InputTensorDescr(
            name="image", axes="bcyx", data_type="float32",
            shape=spec.ParameterizedInputShape(min=[1, 3, 32, 32], step=[0, 0, 16, 16]),
            preprocessing=[spec.ScaleRangeDescr(kwargs=spec.ScaleRangeKwargs(
                mode="per_dataset", axes="yx", min_percentile=1, max_percentile=99.8))])],
        outputs=[spec.OutputTensorDescr(
            name="classes", axes="bcyx", data_type="float32",
            shape=spec.ImplicitOutputShape(reference_tensor="image", scale=[1, 1, 1, 1], offset=[0, 0, 0, 0]))],
        test_inputs=[work / "test_input.npy"], test_outputs=[work / "test_output.npy"],
        weights=spec.WeightsDescr(onnx=spec.OnnxWeightsDescr(source=work / "weights.onnx", opset_version=17)))
    return _save(description, folder, "onnx04_range_pointwise")


def ts04_linear_fixed(folder: Path) -> Path:
    from bioimageio.spec.model import v0_4 as spec

    work = _work_folder(folder, "ts04_linear_fixed", seed=2)
    network = Dilated().eval()
    image = _rng_image((1, 1, 96, 96), 2, 1000)
    _test_pair(work, network, image, lambda x: np.clip(x * 0.004 - 1, -1, 2), lambda y: np.clip(y, -0.5, 0.5))
    _torchscript(network, work / "weights.torchscript")
    description = spec.ModelDescr(
        name="dlhisto test TorchScript v0-4", description="dilated convolutions on fixed 96 px windows, halo 12",
        **_about(spec, work), timestamp="2026-12-03T00:00:00",
        inputs=[spec.InputTensorDescr(
            name="raw", axes="bcyx", data_type="float32", shape=[1, 1, 96, 96],
            preprocessing=[spec.ScaleLinearDescr(kwargs=spec.ScaleLinearKwargs(gain=0.004, offset=-1)),
                           spec.ClipDescr(kwargs=spec.ClipKwargs(min=-1, max=2))])],
        outputs=[spec.OutputTensorDescr(
            name="restored", axes="bcyx", data_type="float32", halo=[0, 0, 12, 12],
            shape=spec.ImplicitOutputShape(reference_tensor="raw", scale=[1, 1, 1, 1], offset=[0, 0, 0, 0]),
            postprocessing=[spec.ClipDescr(kwargs=spec.ClipKwargs(min=-0.5, max=0.5))])],
        test_inputs=[work / "test_input.npy"], test_outputs=[work / "test_output.npy"],
        weights=spec.WeightsDescr(torchscript=spec.TorchscriptWeightsDescr(
            source=work / "weights.torchscript", pytorch_version=torch.__version__.split("+")[0])))
    return _save(description, folder, "ts04_linear_fixed")


def onnx05_fixed_zmuv(folder: Path) -> Path:
    from bioimageio.spec.model import v0_5 as spec

    work = _work_folder(folder, "onnx05_fixed_zmuv", seed=3)
    network = Residual().eval()
    image = _rng_image((1, 3, 128, 96), 3, 255)
    mean, std = np.array([180.0, 120.0, 170.0]), np.array([40.0, 50.0, 35.0])
    _test_pair(work, network, image, lambda x: (x - mean[None, :, None, None]) / (std[None, :, None, None] + 1e-6),
               lambda y: np.clip(y, -3, 3))
    _onnx(network, image, work / "weights.onnx")
    space = [spec.SpaceInputAxis(id=spec.AxisId(a), size=spec.ParameterizedSize(min=64, step=32)) for a in ("y", "x")]
    names = [spec.Identifier(n) for n in ("red", "green", "blue")]
    inputs = spec.InputTensorDescr(
        id=spec.TensorId("rgb"), axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=names), *space],
        test_tensor=spec.FileDescr(source=work / "test_input.npy"), data=spec.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=[spec.FixedZeroMeanUnitVarianceDescr(kwargs=spec.FixedZeroMeanUnitVarianceAlongAxisKwargs(
            mean=mean.tolist(), std=std.tolist(), axis=spec.AxisId("channel")))])
    outputs = spec.OutputTensorDescr(
        id=spec.TensorId("normalised"),
        axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=names),
              *[spec.SpaceOutputAxisWithHalo(id=spec.AxisId(a), halo=8, size=spec.SizeReference(
                  tensor_id=spec.TensorId("rgb"), axis_id=spec.AxisId(a))) for a in ("y", "x")]],
        test_tensor=spec.FileDescr(source=work / "test_output.npy"), data=spec.IntervalOrRatioDataDescr(type="float32"),
        postprocessing=[spec.ClipDescr(kwargs=spec.ClipKwargs(min=-3, max=3))])
    description = spec.ModelDescr(
        name="dlhisto test ONNX v0-5", description="a residual block on RGB, fixed mean and spread per channel",
        **_about(spec, work),
        inputs=[inputs], outputs=[outputs],
        weights=spec.WeightsDescr(onnx=spec.OnnxWeightsDescr(source=work / "weights.onnx", opset_version=17)))
    return _save(description, folder, "onnx05_fixed_zmuv")


def ts05_output_stats(folder: Path) -> Path:
    from bioimageio.spec.model import v0_5 as spec

    work = _work_folder(folder, "ts05_output_stats", seed=4)
    network = GreyPointwise().eval()
    image = _rng_image((1, 1, 64, 96), 4, 1000)

    def scale_range(x, low, high):
        lo, hi = np.percentile(x, low, axis=(2, 3), keepdims=True), np.percentile(x, high, axis=(2, 3), keepdims=True)
        return (x - lo) / (hi - lo + 1e-6)
    reference = scale_range(image, 1, 99)  # the input after its preprocessing

    def postprocess(y):
        y = scale_range(y, 5, 95)
        return (y - y.mean()) / (y.std() + 1e-6) * (reference.std() + 1e-6) + reference.mean()
    _test_pair(work, network, image, lambda x: scale_range(x, 1, 99), postprocess)
    _torchscript(network, work / "weights.torchscript")
    raw = spec.TensorId("raw")
    space = [spec.SpaceInputAxis(id=spec.AxisId(a), size=spec.ParameterizedSize(min=32, step=16)) for a in ("y", "x")]
    every_axis = [spec.AxisId("channel"), spec.AxisId("y"), spec.AxisId("x")]
    inputs = spec.InputTensorDescr(
        id=raw, axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=[spec.Identifier("raw")]), *space],
        test_tensor=spec.FileDescr(source=work / "test_input.npy"), data=spec.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=[spec.ScaleRangeDescr(kwargs=spec.ScaleRangeKwargs(
            axes=[spec.AxisId("y"), spec.AxisId("x")], min_percentile=1, max_percentile=99))])
    outputs = spec.OutputTensorDescr(
        id=spec.TensorId("maps"),
        axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=[spec.Identifier("a"), spec.Identifier("b")]),
              *[spec.SpaceOutputAxis(id=spec.AxisId(a), size=spec.SizeReference(tensor_id=raw, axis_id=spec.AxisId(a)))
                for a in ("y", "x")]],
        test_tensor=spec.FileDescr(source=work / "test_output.npy"), data=spec.IntervalOrRatioDataDescr(type="float32"),
        postprocessing=[
            spec.ScaleRangeDescr(kwargs=spec.ScaleRangeKwargs(axes=[spec.AxisId("y"), spec.AxisId("x")],
                                                              min_percentile=5, max_percentile=95)),
            spec.ScaleMeanVarianceDescr(kwargs=spec.ScaleMeanVarianceKwargs(reference_tensor=raw, axes=every_axis))])
    description = spec.ModelDescr(
        name="dlhisto test output statistics", description="pointwise network whose output is scaled with statistics "
        "of the whole output and of the input",
        **_about(spec, work),
        inputs=[inputs], outputs=[outputs],
        weights=spec.WeightsDescr(torchscript=spec.TorchscriptWeightsDescr(
            source=work / "weights.torchscript", pytorch_version=spec.Version(torch.__version__.split("+")[0]))))
    return _save(description, folder, "ts05_output_stats")


BUILDERS = {name: globals()[name] for name in PACKAGES}


def core_prediction(package: Path, pixels: np.ndarray) -> np.ndarray:
    """bioimageio.core's prediction of ``package`` on (Y, X[, C]) pixels, as (Y, X[, C]) float32:
    the whole image at once, or blocked for a model of fixed size."""
    from bioimageio.core import create_prediction_pipeline, predict
    from bioimageio.core.digest_spec import create_sample_for_model
    from bioimageio.spec import load_model_description

    description = load_model_description(package, perform_io_checks=False, format_version="latest")
    tensor = pixels[None, None] if pixels.ndim == 2 else np.transpose(pixels, (2, 0, 1))[None]
    tensor = tensor.astype(np.float32)
    if all(isinstance(axis.size, int) for axis in description.inputs[0].axes if axis.type == "space"):
        sample = create_sample_for_model(description, inputs={description.inputs[0].id: tensor}, sample_id="image")
        with create_prediction_pipeline(description) as pipeline:
            result = pipeline.predict_sample_with_blocking(sample)
    else:
        result = predict(model=description, inputs=tensor)
    output = next(iter(result.members.values())).data.to_numpy()[0]
    return (output[0] if output.shape[0] == 1 else np.transpose(output, (1, 2, 0))).astype(np.float32)


def output_stats_formulas(image: np.ndarray, folder: Path = ZOO) -> np.ndarray:
    """What ts05_output_stats gives for a grey image by the spec's formulas, in numpy: scale_range
    1-99 % of the input, the network, scale_range 5-95 % of each output channel, then
    scale_mean_variance to the pre-processed input over every axis (statistics of the whole output)."""
    def scale_range(x, low, high):
        lo, hi = np.percentile(x, low, axis=(0, 1)), np.percentile(x, high, axis=(0, 1))
        return (x - lo) / (hi - lo + 1e-6)
    network = torch.jit.load(str(folder / "ts05_output_stats" / "weights.torchscript")).eval()
    raw = scale_range(image.astype(np.float64), 1, 99)
    with torch.no_grad():
        output = network(torch.from_numpy(raw[None, None].astype(np.float32)))[0].numpy().transpose(1, 2, 0)
    output = scale_range(output.astype(np.float64), 5, 95)
    return ((output - output.mean()) / (output.std() + 1e-6) * (raw.std() + 1e-6) + raw.mean()).astype(np.float32)


def write_expected_outputs(made: dict[str, Path]) -> list[Path]:
    """zoo/<package>_expected.tif for each package of :data:`GALAXY_IMAGES` (once per build)."""
    import tifffile

    from dlhisto_core.io.images import read_image

    written = []
    for name, image in GALAXY_IMAGES.items():
        target = made[name].with_name(f"{name}_expected.tif")
        if not target.is_file():
            pixels = read_image(DATA / image).data
            expected = output_stats_formulas(pixels) if name == "ts05_output_stats" else \
                core_prediction(made[name], pixels)
            tifffile.imwrite(target, expected, photometric="minisblack")
        written.append(target)
    return written


if __name__ == "__main__":
    made = build_all(ZOO)
    print(*made.values(), *write_expected_outputs(made))
