"""Code from others, run by the real dlhisto command: TorchScript and ONNX graphs are read
against an allowlist before they run, and every step runs confined (Linux Landlock), so that
even code that slips through reads and writes nothing but the step's inputs and outputs; a
native crash, a child that ignores SIGTERM, and runs writing the same outputs at once all end
in one line and whole outputs. The crafted packages are made by scripts/make_hostile_inputs.py."""

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import make_hostile_inputs as craft  # noqa: E402
from cli_checks import assert_refused  # noqa: E402

from dlhisto_core.cli import landlock  # noqa: E402

SECRET = b"secret-of-another-user-0123456789\n"

needs_landlock = pytest.mark.skipif(landlock.abi_version() == 0 and not os.environ.get("DLHISTO_CONFINEMENT_REQUIRED"),
                                    reason="this kernel has no Landlock")


def dlhisto(*args, env=None, patch="", timeout=600):
    """The real command, confined as the ``dlhisto`` entry point runs it; ``patch`` is Python run
    first, to switch a check off and show what confinement alone does."""
    code = textwrap.dedent(f"""
        import sys
        {patch}
        from dlhisto_core import cli
        sys.exit(cli.main(sys.argv[1:], confine=True))
        """)
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


NO_ALLOWLIST = ("from dlhisto_core.models import code_allowlist; code_allowlist.check_torchscript = lambda *a: None; "
                "code_allowlist.check_torchscript_archive = lambda *a: None")


@pytest.fixture
def victim(tmp_path):
    """A file of another user that the job could read and write, outside its inputs and outputs."""
    path = tmp_path / "other_user" / "dataset_42.dat"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


@pytest.fixture
def out(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def crafted(tmp_path, zoo, target, on_load=False) -> Path:
    package = tmp_path / ("writes_on_load.zip" if on_load else "reads_and_writes.zip")
    source = zoo["ts05_zmuv_halo"]
    craft.with_weights(package, source, craft.file_touching_torchscript(source, str(target), on_load))
    return package


@pytest.mark.parametrize("on_load,message", [(False, "calls aten::from_file (in forward)"),
                                             (True, "defines __setstate__, which would run as it loads")])
def test_a_torchscript_package_that_touches_files_is_refused_before_it_runs(on_load, message, zoo, victim, tmp_path,
                                                                           out, test_data):
    package = crafted(tmp_path, zoo, victim, on_load)
    result = dlhisto("predict", "--model", package, test_data / "nuclei.tif", "--probabilities", out / "p.tif")
    assert_refused(result, message)
    assert victim.read_bytes() == SECRET and list(out.iterdir()) == []


def test_the_galaxy_test_package_reads_and_writes_a_file(test_data):
    """test-data/zoo_reads_files.zip, which the predict tool's expect_failure test gives Galaxy."""
    with zipfile.ZipFile(test_data / "zoo_reads_files.zip") as archive:
        weights = io.BytesIO(archive.read("weights.torchscript"))
    with zipfile.ZipFile(weights) as torchscript:
        code = b"".join(torchscript.read(n) for n in torchscript.namelist() if n.endswith(".py"))
        data = torchscript.read(next(n for n in torchscript.namelist() if n.endswith("data.pkl")))
    assert b"torch.from_file(target, True, 16" in code and b"/etc/hostname" in data


@needs_landlock
@pytest.mark.parametrize("on_load", [False, True])
def test_confinement_alone_stops_the_read_and_the_write(on_load, zoo, victim, tmp_path, out, test_data):
    package = crafted(tmp_path, zoo, victim, on_load)
    args = ("predict", "--model", package, test_data / "nuclei.tif", "--probabilities", out / "p.tif")
    result = dlhisto(*args, patch=NO_ALLOWLIST)
    assert_refused(result, f"unable to open file <{victim}> in read-write mode: Permission denied")
    assert victim.read_bytes() == SECRET and list(out.iterdir()) == []
    # the same without confinement: the attack works, so the check above can fail
    result = dlhisto(*args, patch=NO_ALLOWLIST, env={"DLHISTO_CONFINEMENT": "off"})
    assert victim.read_bytes() == b"X" * 16 + SECRET[16:]
    assert result.returncode == (2 if on_load else 0), result.stderr  # on load: then its test output is wrong


@needs_landlock
def test_a_confined_step_reads_nothing_beside_its_inputs(tmp_path, out, test_data, victim):
    """Read from Python inside the step (as a reader's bug would): refused, the step fails cleanly."""
    patch = ("from dlhisto_core.cli import commands; step = commands.STEPS['segment_classic']; "
             f"commands.STEPS['segment_classic'] = lambda args: (open({str(victim)!r}).read(), step(args))")
    result = dlhisto("segment_classic", test_data / "nuclei.tif", "--labels", out / "l.tif", "--measurements",
                     out / "m.tsv", "--summary", out / "s.tsv", "--image-name", victim, patch=patch)  # a name: no access
    assert_refused(result, f"Permission denied: {victim}", status=3)
    assert list(out.iterdir()) == []
    result = dlhisto("segment_classic", test_data / "nuclei.tif", "--labels", out / "l.tif", "--measurements",
                     out / "m.tsv", "--summary", out / "s.tsv")
    assert result.returncode == 0 and sorted(p.name for p in out.iterdir()) == ["l.tif", "m.tsv", "s.tsv"]


def test_a_crafted_onnx_package_is_refused(zoo, tmp_path, out, test_data):
    import onnx

    source = zoo["onnx05_fixed_zmuv"]
    members = craft.members_of(source)
    weights = next(n for n in members if n.endswith(".onnx"))
    for case, message in (("custom", "calls evil.ops::ReadFile"), ("external", "is stored in another file")):
        model = onnx.load_model_from_string(members[weights])
        if case == "custom":
            model.graph.node.append(onnx.helper.make_node("ReadFile", [], ["stolen"], domain="evil.ops"))
        else:
            tensor = model.graph.initializer[0] if model.graph.initializer else None
            tensor = tensor or model.graph.initializer.add()
            tensor.data_location = onnx.TensorProto.EXTERNAL
            tensor.external_data.add(key="location", value="../../../etc/passwd")
        package = tmp_path / f"onnx_{case}.zip"
        craft.package(package, craft.rdf_of(source), {**members, weights: model.SerializeToString()})
        result = dlhisto("predict", "--model", package, test_data / "nuclei.tif", "--probabilities", out / "p.tif")
        assert_refused(result, message)
        assert list(out.iterdir()) == []


def test_a_native_crash_is_one_line_and_leaves_nothing(tmp_path, out, test_data):
    """OpenSlide aborting on a crafted slide, with the structure check that now refuses it switched off."""
    slide = tmp_path / "huge_tile.svs"
    craft.svs_huge_tile(slide, test_data / "cmu_small_region.svs")
    patch = ("from dlhisto_core.cli import commands; import openslide; commands.STEPS['segment_classic'] = "
             f"lambda args: openslide.OpenSlide({str(slide)!r}).read_region((0, 0), 0, (16, 16))")
    args = ("segment_classic", slide, "--labels", out / "l.tif", "--measurements", out / "m.tsv",
            "--summary", out / "s.tsv")
    result = dlhisto(*args, patch=patch)
    assert_refused(result, "the step crashed (SIGABRT) in native code", status=134)
    assert "failed to allocate 4398046511104 bytes" in result.stderr
    assert list(out.iterdir()) == []
    # with the check: refused before OpenSlide opens it
    result = dlhisto(*args)
    assert_refused(result, "declares an image of 1048576 x 1048576 pixels")


def test_a_step_that_ignores_sigterm_is_ended_and_leaves_nothing(tmp_path, out, test_data):
    """A native loop that never returns to Python: the child blocks SIGTERM; the parent kills it."""
    patch = ("import signal, time; from dlhisto_core.cli import commands; "
             "commands.STEPS['segment_classic'] = lambda args: (signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}), "
             "time.sleep(120))")
    code = f"import sys\n{patch}\nfrom dlhisto_core import cli\nsys.exit(cli.main(sys.argv[1:], confine=True))\n"
    process = subprocess.Popen(
        [sys.executable, "-c", code, "segment_classic", test_data / "nuclei.tif", "--labels", out / "l.tif",
         "--measurements", out / "m.tsv", "--summary", out / "s.tsv"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(list(out.glob(".*.part"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(2)  # the child is in its step
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - sent < 5
    assert process.returncode == 143 and stderr.count("\n") == 1 and "cancelled by SIGTERM" in stderr, stderr
    assert list(out.iterdir()) == []


def test_runs_writing_the_same_outputs_at_once_never_mix_them(tmp_path, test_data):
    """Three segmentations of different images into the same three paths, four times over: each
    time the label image, the measurements and the summary are those of one run."""
    out = tmp_path / "shared"
    out.mkdir()
    outputs = ["--labels", out / "labels.tif", "--measurements", out / "objects.tsv", "--summary", out / "summary.tsv"]
    images = [test_data / f"nuclei_q{k}.tif" for k in (1, 2, 3)]
    for _ in range(4):
        runs = [subprocess.Popen([sys.executable, "-m", "dlhisto_core.cli", "segment_classic", image, *outputs],
                                 stderr=subprocess.PIPE) for image in images]
        assert [run.wait(timeout=300) for run in runs] == [0, 0, 0]
        summary = (out / "summary.tsv").read_text().splitlines()[1].split("\t")
        objects = (out / "objects.tsv").read_text().splitlines()[1:]
        labels = tifffile.imread(out / "labels.tif")
        assert int(summary[1]) == len(objects) == len(np.unique(labels)) - 1  # 27, 29 and 30 objects
        assert np.mean([float(row.split("\t")[1]) for row in objects]) == pytest.approx(float(summary[2]), abs=0.01)
        assert summary[0] in {image.name for image in images}
        assert sorted(p.name for p in out.iterdir()) == ["labels.tif", "objects.tsv", "summary.tsv"]
