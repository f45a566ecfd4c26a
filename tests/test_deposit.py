"""dlhisto deposit: a BioImage Archive bundle from test-data, checked by the archive's own validator."""

import csv
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

from dlhisto_core.share import deposit
from dlhisto_core.cli import main
from dlhisto_core.base.errors import InputError

VALIDATOR = os.environ.get(deposit.VALIDATOR_ENV)
needs_validator = pytest.mark.skipif(
    not VALIDATOR and not os.environ.get("DLHISTO_BIA_VALIDATOR_REQUIRED"),
    reason=f"set {deposit.VALIDATOR_ENV} (scripts/test installs bia-ro-crate-validator)")


def deposit_args(test_data, tmp_path, metadata=None):
    return ["deposit", "--metadata", str(metadata or test_data / "deposit_metadata.json"),
            "--image", str(test_data / "nuclei.tif"), "--labels", str(test_data / "nuclei_groundtruth.tif"),
            "--table", str(test_data / "stain_truth.tsv"), "--pixel-size", "0.65",
            "--bundle", str(tmp_path / "bundle.zip"), "--report", str(tmp_path / "report.json")]


@needs_validator
def test_bundle_from_test_data_passes_the_archive_validator(test_data, tmp_path, capsys):
    assert main(deposit_args(test_data, tmp_path)) == 0
    assert "bundle of 3 files accepted by bia-ro-crate-validator 0.3.1 (0 warnings)" in capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["valid"] is True and report["issues"] == {}
    with zipfile.ZipFile(tmp_path / "bundle.zip") as bundle:
        names = set(bundle.namelist())
        assert names == {"ro-crate-metadata.json", "file_list.tsv", "checksums.sha256", "images/nuclei.ome.tif",
                         "annotations/nuclei_labels.ome.tif", "analysis/stain_truth.tsv"}
        for line in bundle.read("checksums.sha256").decode().splitlines():  # every file, its true checksum
            digest, name = line.split("  ")
            assert hashlib.sha256(bundle.read(name)).hexdigest() == digest
        assert len(bundle.read("checksums.sha256").decode().splitlines()) == len(names) - 1
        rows = list(csv.DictReader(io.StringIO(bundle.read("file_list.tsv").decode()), delimiter="\t"))
        assert [(r["file_path"], r["dataset"]) for r in rows] == [
            ("images/nuclei.ome.tif", "#images"), ("annotations/nuclei_labels.ome.tif", "#annotations"),
            ("analysis/stain_truth.tsv", "#analysis")]
        assert int(rows[0]["size_in_bytes"]) == len(bundle.read("images/nuclei.ome.tif"))
        with tifffile.TiffFile(io.BytesIO(bundle.read("images/nuclei.ome.tif"))) as tif:
            assert tif.is_ome and 'PhysicalSizeX="0.65"' in tif.ome_metadata
            assert np.array_equal(tif.asarray(), tifffile.imread(test_data / "nuclei.tif"))
        crate = json.loads(bundle.read("ro-crate-metadata.json"))
    study = next(e for e in crate["@graph"] if e["@id"] == "./")
    assert study["license"] == "https://creativecommons.org/publicdomain/zero/1.0/"
    assert {"@id": "https://orcid.org/0000-0002-1825-0097"} in study["author"]


@needs_validator
def test_the_validator_catches_a_broken_crate(test_data, tmp_path):
    """The check can fail: the archive's validator refuses crates that break its profile."""
    form = deposit.read_metadata(test_data / "deposit_metadata.json", with_labels=False, with_model=False)
    files = deposit.DepositFiles(images=[(str(test_data / "nuclei.tif"), "nuclei.tif")])
    def verdict(metadata, dataset):
        crate = tmp_path / f"crate{len(list(tmp_path.iterdir()))}"
        crate.mkdir()
        (crate / "file_list.tsv").write_text("file_path\tsize_in_bytes\tdataset\ttype\tlabel\tsource_image\n"
                                             f"images/nuclei.ome.tif\t1\t{dataset}\thttp://bia/Image\tnuclei\t\n")
        (crate / "ro-crate-metadata.json").write_text(json.dumps(metadata))
        return deposit.validate(crate, VALIDATOR)

    assert verdict(deposit.crate_metadata(form, files), "#images") == {"validator": "0.3.1", "valid": True, "issues": {}}
    wrong_dataset = verdict(deposit.crate_metadata(form, files), "#nowhere")
    assert not wrong_dataset["valid"] and "#nowhere does not exist" in wrong_dataset["issues"]["ERROR"][0]
    metadata = deposit.crate_metadata(form, files)
    del next(e for e in metadata["@graph"] if e["@id"] == "./")["name"]
    unnamed = verdict(metadata, "#images")
    assert not unnamed["valid"] and "MUST have a `name` property" in unnamed["issues"]["ERROR"][0]


def test_a_missing_mandatory_field_is_named(test_data, tmp_path, capsys):
    form = json.loads((test_data / "deposit_metadata.json").read_text())
    cases = [("instrument", "", "the metadata form lacks the mandatory field 'instrument'"),
             ("organism", {"common_name": "human"}, "lacks the mandatory field 'organism.scientific_name'"),
             ("authors", [{"orcid": "0000-0002-1825-0097"}], "lacks the mandatory field 'authors[1].name'"),
             ("authors", [{"name": "A", "orcid": "1234"}], "'authors[1].orcid' is not an ORCID iD"),
             ("license", "all rights reserved", "the BioImage Archive accepts the licences CC0-1.0, CC-BY-4.0"),
             ("annotation_method", None, "lacks the mandatory field 'annotation_method'")]
    for key, value, message in cases:
        broken = {**form, key: value}
        path = tmp_path / "metadata.json"
        path.write_text(json.dumps(broken))
        assert main(deposit_args(test_data, tmp_path, path)) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
        assert not (tmp_path / "bundle.zip").exists() and not (tmp_path / "report.json").exists()


@needs_validator
def test_galaxy_dataset_names_become_safe_file_names(test_data, tmp_path):
    args = deposit_args(test_data, tmp_path) + ["--table-name", "Evaluate on data 3: scores",
                                                "--model", str(test_data / "stain_truth.tsv"),
                                                "--model-name", "stain classifier"]
    assert main(args) == 0
    with zipfile.ZipFile(tmp_path / "bundle.zip") as bundle:
        assert {"analysis/Evaluate_on_data_3__scores.tsv", "analysis/stain_classifier.zip"} <= set(bundle.namelist())


def test_images_without_pixel_size_are_refused(test_data, tmp_path, monkeypatch):
    monkeypatch.setenv(deposit.VALIDATOR_ENV, "/nonexistent/python")
    form = deposit.read_metadata(test_data / "deposit_metadata.json", with_labels=False, with_model=False)
    files = deposit.DepositFiles(images=[(str(test_data / "nuclei.tif"), "nuclei.tif")])
    with pytest.raises(InputError, match="image 'nuclei.tif' has no pixel size"):
        deposit.build(form, files, tmp_path / "b.zip", None)
    with pytest.raises(InputError, match="cannot run the BioImage Archive validator '/nonexistent/python'"):
        deposit.build(form, files, tmp_path / "b.zip", None, pixel_size=(0.65, 0.65))
    assert not list(Path(tmp_path).iterdir())


def test_upload_is_refused_unless_the_network_is_allowed(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BIA_FTP_USER", raising=False)
    assert main(["deposit_upload", str(tmp_path / "bundle.zip"), "--host", "ftp.example.org", "--folder", "x"]) == 2
    assert "uploading needs the network: add --network" in capsys.readouterr().err
    assert main(["deposit_upload", str(tmp_path / "bundle.zip"), "--host", "ftp.example.org", "--folder", "x",
                 "--network"]) == 2
    assert "set BIA_FTP_USER and BIA_FTP_PASSWORD" in capsys.readouterr().err
