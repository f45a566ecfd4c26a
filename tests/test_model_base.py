"""The facility's model base (dlhisto_core.models.model_base): the data manager's row for a package,
checked as predict loads it, and the JSON Galaxy's data managers return."""

import hashlib
import json

import pytest

from dlhisto_core.cli import main
from dlhisto_core.base.errors import InputError
from dlhisto_core.models.model_base import COLUMNS, describe_package


def test_a_row_describes_dlhisto_and_foreign_packages(nuclei_model, zoo):
    assert describe_package(nuclei_model, model_id="nuclei") == {
        "value": "nuclei", "name": "dlhisto test nuclei U-Net", "task": "instance", "channels": 1, "pixel_size": None,
        "description": describe_package(nuclei_model)["description"]}
    assert describe_package(nuclei_model.with_name("stain_classifier.zip"))["task"] == "classification"
    foreign = describe_package(zoo["onnx04_range_pointwise"])
    assert (foreign["value"], foreign["task"], foreign["channels"]) == ("dlhisto_test_onnx_v0-4", "bioimage.io", 3)
    with pytest.raises(InputError, match="the model id 'Nuclei HE' must be 1-64 lower-case letters"):
        describe_package(nuclei_model, model_id="Nuclei HE")


def test_the_data_manager_job_installs_the_package_and_returns_the_row(zoo, tmp_path, capsys):
    """As Galaxy runs it: the output file holds the job's parameters (with the folder to fill),
    and is replaced by the row; the package is copied into the folder named by its id."""
    params = tmp_path / "out_file.json"
    params.write_text(json.dumps({"param_dict": {}, "output_data": [{"extra_files_path": str(tmp_path / "files")}]}))
    assert main(["install_model", "--model", str(zoo["ts05_zmuv_halo"]), "--id", "zoo_ts05",
                 "--data-manager-json", str(params)]) == 0
    assert "goes into the model base as 'zoo_ts05' (bioimage.io, 1 channel(s), 0.5 µm)" in capsys.readouterr().out
    row = json.loads(params.read_text())["data_tables"]["dlhisto_models"][0]
    assert list(row) == list(COLUMNS) and all(isinstance(v, str) for v in row.values())
    assert (row["path"], row["pixel_size"], row["channels"]) == ("zoo_ts05", "0.5", "1")
    assert (tmp_path / "files" / "zoo_ts05" / "model.zip").read_bytes() == zoo["ts05_zmuv_halo"].read_bytes()


def test_a_package_that_fails_its_check_is_not_installed(test_data, tmp_path, capsys):
    params = tmp_path / "out_file.json"
    params.write_text(json.dumps({"output_data": [{"extra_files_path": str(tmp_path / "files")}]}))
    assert main(["install_model", "--model", str(test_data / "nuclei_classifier.zip"),
                 "--data-manager-json", str(params)]) == 2
    assert "'nuclei_classifier.zip' is not a bioimage.io model package" in capsys.readouterr().err
    assert not (tmp_path / "files").exists() and "data_tables" not in params.read_text()


def test_an_evaluation_goes_into_the_model_card_and_the_name(nuclei_model, zoo, test_data, tmp_path):
    """Evaluate's table (the classic pipeline's labels of the nuclei image against its ground
    truth): a dlhisto package gets it in its model card, checked again by bioimageio.spec, and
    the row's name shows the pooled F1 and panoptic quality at IoU 0.5; a package made elsewhere
    keeps its own card, its name shows the figures too."""
    import zipfile

    import yaml

    from dlhisto_core.models.model_base import install
    from dlhisto_core.models.cards import EVALUATION_HEADING
    from dlhisto_core.models.packages import load_package

    evaluation = test_data / "nuclei_evaluation.tsv"
    row = install(nuclei_model, tmp_path / "files", tmp_path / "row.json", model_id="nuclei", evaluation=evaluation)
    assert row["name"] == "dlhisto test nuclei U-Net: f1 0.624, panoptic_quality 0.455 (all, threshold 0.5)"
    installed = tmp_path / "files" / "nuclei" / "model.zip"
    with zipfile.ZipFile(installed) as archive:
        card = archive.read("README.md").decode()
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
        assert set(archive.namelist()) == set(zipfile.ZipFile(nuclei_model).namelist())
    assert card.count(EVALUATION_HEADING) == 1 and "- training data: 1 image(s): nuclei.tif" in card
    assert "| all | 0.5 | 74 | 38 | 51 | 0.660714 | 0.592 | 0.624473 |" in card
    assert rdf["documentation"]["sha256"] == hashlib.sha256(card.encode()).hexdigest()
    load_package(installed)  # still dlhisto's package, its weights untouched
    again = install(installed, tmp_path / "again", tmp_path / "row2.json", model_id="again", evaluation=evaluation)
    assert zipfile.ZipFile(tmp_path / "again" / "again" / "model.zip").read("README.md").decode().count(
        EVALUATION_HEADING) == 1 and again["name"] == row["name"]  # replaced, not added twice
    foreign = install(zoo["ts05_zmuv_halo"], tmp_path / "files", tmp_path / "row3.json", model_id="zoo",
                      evaluation=evaluation)
    assert foreign["name"].endswith(": f1 0.624, panoptic_quality 0.455 (all, threshold 0.5)")
    assert (tmp_path / "files" / "zoo" / "model.zip").read_bytes() == zoo["ts05_zmuv_halo"].read_bytes()
    with pytest.raises(InputError, match="'not_an_image.txt' is not an evaluation table"):
        install(nuclei_model, tmp_path / "x", tmp_path / "row4.json", evaluation=test_data / "not_an_image.txt")
