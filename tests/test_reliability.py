"""Killed jobs: real `dlhisto` processes stopped with SIGKILL (as a scheduler or an out-of-memory
killer does) in the middle of their work."""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import tifffile
import torch

from dlhisto_core.models.packages import load_package


def start(*args):
    return subprocess.Popen([sys.executable, "-m", "dlhisto_core.cli", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def train_args(test_data, out, checkpoint):
    return ["train", "--image", test_data / "nuclei.tif", "--labels", test_data / "nuclei_groundtruth.tif",
            "--task", "instance", "--encoder", "mobilenet_v2", "--patch-size", "64", "--patches-per-image", "32",
            "--epochs", "3", "--batch-size", "4", "--device", "cpu", "--seed", "3", "--checkpoint", checkpoint,
            "--model", out / "model.zip", "--history", out / "history.json"]


def test_training_killed_mid_epoch_resumes_from_its_checkpoint_to_the_same_model(test_data, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir(), killed.mkdir()
    done = subprocess.run([sys.executable, "-m", "dlhisto_core.cli",
                           *map(str, train_args(test_data, straight, straight / "checkpoint.pt"))],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    job = start(*train_args(test_data, killed, killed / "checkpoint.pt"))
    began = time.monotonic()
    for line in job.stdout:  # epoch 1 ends: kill half-way through epoch 2
        if line.startswith("training on"):
            began = time.monotonic()
        if line.startswith("epoch 1/3"):
            time.sleep((time.monotonic() - began) / 2)
            job.send_signal(signal.SIGKILL)
            break
    assert job.wait() == -signal.SIGKILL
    assert not (killed / "model.zip").exists() and not (killed / "history.json").exists()
    assert (killed / "checkpoint.pt").exists()

    resumed = start(*train_args(test_data, killed, killed / "checkpoint.pt"))
    out, err = resumed.communicate()
    assert resumed.returncode == 0, err
    resumed_after = int(re.search(r"^resuming after epoch (\d+) ", out, re.M).group(1))
    assert resumed_after in (1, 2) and "epoch 3/3" in out  # killed in epoch 2 (or 3, on a busy machine)
    assert f"epoch {resumed_after}/3" not in out  # the finished epochs are not trained again
    first, _, _ = load_package(straight / "model.zip")
    second, _, _ = load_package(killed / "model.zip")
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key


def test_prediction_killed_mid_slide_leaves_no_output_in_place(test_data, nuclei_model, tmp_path):
    nuclei = tifffile.imread(test_data / "nuclei.tif")
    slide = tmp_path / "slide.tif"
    tifffile.imwrite(slide, np.tile(nuclei, (6, 6)), tile=(512, 512))  # 3072 x 3072, tiled
    out = tmp_path / "out"
    out.mkdir()
    outputs = [out / "probabilities.tif", out / "classes.tif", out / "objects.tif", out / "summary.tsv"]
    job = start("predict", slide, "--model", nuclei_model, "--probabilities", outputs[0], "--classes", outputs[1],
                "--objects", outputs[2], "--summary", outputs[3], "--device", "cpu")
    deadline = time.monotonic() + 120
    while not any(out.iterdir()) and time.monotonic() < deadline:  # the outputs are being written
        time.sleep(0.2)
    time.sleep(2)
    assert job.poll() is None, "prediction ended before it could be killed"
    job.send_signal(signal.SIGKILL)
    assert job.wait() == -signal.SIGKILL
    assert not any(path.exists() for path in outputs)
    leftovers = [p.name for p in out.iterdir()]
    assert all(name.startswith(".") and name.endswith(".part") for name in leftovers), leftovers
    assert os.path.getsize(slide) > 0
