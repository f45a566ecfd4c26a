"""bioimage.io model packages: written valid, run by bioimageio.core, loaded without running code."""

import io
import pickle
import zipfile

import numpy as np
import pytest
import torch
import yaml

from dlhisto_core.models.spec import ModelSpec
from dlhisto_core.models.networks import build_model
from dlhisto_core.base.errors import InputError
from dlhisto_core.io.images import read_image
from dlhisto_core.models.packages import PackageInfo, export_package, load_package, read_state_dict


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    from conftest import TEST_DATA
    spec = ModelSpec("instance", 3, 1, encoder="resnet18")
    model = build_model(spec, seed=0)
    info = PackageInfo(name="dlhisto test nuclei", description="Untrained U-Net for the package tests.",
                       class_names=["background", "interior", "boundary"], channel_names=["nuclei"],
                       authors=["dlhisto tests"], training={"epochs": 0})
    patch = read_image(TEST_DATA / "nuclei.tif").data[:64, :96][None].astype(np.float32)
    path = tmp_path_factory.mktemp("package") / "model.zip"
    export_package(model, spec, info, patch, path)
    return path, model, spec


def test_package_passes_bioimageio_core_test_model(package):
    from bioimageio.core import test_model
    summary = test_model(package[0])
    failed = [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.status == "failed"]
    assert summary.status == "passed", failed


def test_package_holds_both_weight_formats_and_the_dlhisto_description(package):
    path, _, spec = package
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
    assert {"rdf.yaml", "weights.pt", "model.torchscript", "test_input.npy", "test_output.npy", "README.md"} <= names
    assert rdf["inputs"][0]["preprocessing"][0]["id"] == "scale_range"
    assert rdf["outputs"][0]["axes"][1]["channel_names"] == ["background", "interior", "boundary"]
    assert rdf["config"]["dlhisto"]["model"] == spec.to_dict()


def test_loaded_package_predicts_like_the_original(package):
    path, model, spec = package
    loaded, loaded_spec, _ = load_package(path)
    assert loaded_spec == spec
    x = torch.randn(1, 1, 64, 64)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_state_dicts_load_from_torch_and_safetensors_files(package, tmp_path):
    from safetensors.torch import save_file
    _, model, _ = package
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    torch.save(state, tmp_path / "w.pth")
    save_file(state, tmp_path / "w.safetensors")
    for name in ("w.pth", "w.safetensors"):
        loaded = read_state_dict(tmp_path / name, name)
        assert torch.equal(loaded["encoder.conv1.weight"], state["encoder.conv1.weight"])


class Payload:
    """Unpickling this would run code; a safe loader must refuse it."""

    def __reduce__(self):
        return (print, ("pwned",))


def test_malicious_pickle_is_refused_not_executed(tmp_path, capsys):
    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"weight": Payload()}))
    buffer = io.BytesIO()
    torch.save({"weight": Payload()}, buffer)
    (tmp_path / "evil_torch.pth").write_bytes(buffer.getvalue())
    for name in ("evil.pth", "evil_torch.pth"):
        with pytest.raises(InputError, match="holds Python objects besides tensors and is refused"):
            read_state_dict(tmp_path / name, name)
    assert "pwned" not in capsys.readouterr().out


def test_foreign_or_broken_packages_are_refused(package, tmp_path, test_data):
    with pytest.raises(InputError, match="not a bioimage.io model package"):
        load_package(test_data / "nuclei_classifier.zip")
    path = package[0]
    with zipfile.ZipFile(path) as archive:
        files = {n: archive.read(n) for n in archive.namelist()}
    rdf = yaml.safe_load(files["rdf.yaml"])
    del rdf["config"]
    files["rdf.yaml"] = yaml.safe_dump(rdf).encode()
    with zipfile.ZipFile(tmp_path / "foreign.zip", "w") as archive:
        for n, data in files.items():
            archive.writestr(n, data)
    with pytest.raises(InputError, match="not one made by dlhisto"):
        load_package(tmp_path / "foreign.zip")
