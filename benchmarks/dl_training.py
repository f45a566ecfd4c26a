"""Training throughput (samples/s) of dlhisto's training loop against a bare PyTorch loop.

Patches (instance task: background / interior / boundary) are sampled with
``patches.sample_patches`` from the bundled DSB2018 nuclei image into an HDF5 file, and split
with ``loop.split_indices`` as ``loop.fit`` does; only the training part is used.

- dlhisto: ``loop._train_epoch`` called directly (the per-epoch loop of ``loop.fit``:
  ``PatchDataset`` read through a ``DataLoader``, AdamW, loss ``ce_dice``), so that validation and
  the checkpoint written after each epoch are not timed. Measured with augmentation on (what
  ``loop.fit`` does by default) and off.
- bare PyTorch: the same network built with the same seed, the same training patches already in
  memory as one tensor, the same batch size, AdamW (same learning rate and weight decay), the same
  loss ``loop.make_loss("ce_dice", task)``, a random permutation per epoch; no augmentation, no
  validation, no checkpoint.
- for information: the whole ``loop.fit`` (validation and checkpoint included), counting
  only the training samples, and the data loading alone (the DataLoader of ``_train_epoch``
  iterated without the network).

Each run starts from a fresh network, trains one warm-up epoch, then times ``--epochs`` epochs;
the loops run in turn, ``--rounds`` times, and the median round of each is printed.
Both loops drop the last incomplete batch, so they see the same number of samples per epoch.
The ratio dlhisto / bare is in samples/s: below 1 means dlhisto is slower.

Usage: .venv/bin/python benchmarks/dl_training.py [--encoder mobilenet_v2] [--epochs 5] [--rounds 3]
       [--patch-size 128] [--patches 64] [--batch-size 8]
"""

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import h5py
import torch

from dlhisto_core.dl import loop, precision
from dlhisto_core.dl.patches import PatchDataset, sample_patches
from dlhisto_core.models import networks
from dlhisto_core.dl.options import TrainOptions
from dlhisto_core.models.spec import ENCODERS, ModelSpec

TEST_DATA = Path(__file__).resolve().parent.parent / "test-data"


def dlhisto_epochs(spec, patches, train_idx, options, epochs: int, augment: bool) -> tuple[int, float]:
    """Samples and seconds of ``epochs`` epochs of loop._train_epoch after one warm-up epoch."""
    model = networks.build_model(spec, seed=options.seed)
    device = precision.pick_device(options.device)
    model.to(device)
    dataset = PatchDataset(patches.path, train_idx, augment=augment, seed=options.seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=options.learning_rate, weight_decay=1e-4)
    loss_fn = loop.make_loss(options.loss, spec.task)
    loop._train_epoch(model, dataset, optimizer, loss_fn, options, 1, device)  # warm-up
    per_epoch = (len(dataset) // options.batch_size) * options.batch_size if len(dataset) > options.batch_size \
        else len(dataset)
    start = time.perf_counter()
    for epoch in range(2, epochs + 2):
        loop._train_epoch(model, dataset, optimizer, loss_fn, options, epoch, device)
    return per_epoch * epochs, time.perf_counter() - start


def bare_epochs(spec, patches, train_idx, options, epochs: int) -> tuple[int, float]:
    """The textbook loop over tensors in memory."""
    model = networks.build_model(spec, seed=options.seed)
    device = precision.pick_device(options.device)
    model.to(device)
    with h5py.File(patches.path, "r") as h5:
        images = torch.from_numpy(h5["images"][...][train_idx])
        targets = torch.from_numpy(h5["targets"][...][train_idx]).long()
    images, targets = images.to(device), targets.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.learning_rate, weight_decay=1e-4)
    loss_fn = loop.make_loss(options.loss, spec.task)
    batch = options.batch_size
    n_batches = len(images) // batch if len(images) > batch else 1

    def epoch(seed: int) -> int:
        model.train()
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
        seen = 0
        for b in range(n_batches):
            index = order[b * batch:(b + 1) * batch]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(images[index]), targets[index])
            loss.backward()
            optimizer.step()
            seen += len(index)
        return seen

    epoch(1)  # warm-up
    start = time.perf_counter()
    samples = sum(epoch(e) for e in range(2, epochs + 2))
    return samples, time.perf_counter() - start


def full_train(spec, patches, options, epochs: int, work: Path) -> tuple[int, float]:
    """loop.fit as run by `dlhisto train`: training seconds + validation + checkpoint per epoch
    (the first epoch is the warm-up and is left out)."""
    model = networks.build_model(spec, seed=options.seed)
    checkpoint = work / "checkpoint.pt"
    checkpoint.unlink(missing_ok=True)  # a left-over checkpoint would be resumed
    state = loop.fit(model, patches.path, patches.out_channels,
                           dataclasses.replace(options, epochs=epochs + 1, patience=epochs + 2),
                           checkpoint, log=lambda _: None)
    train_idx, _ = loop.split_indices(patches.n_patches, options.validation_fraction, options.seed)
    n = len(train_idx)
    per_epoch = (n // options.batch_size) * options.batch_size if n > options.batch_size else n
    return per_epoch * epochs, sum(h["seconds"] for h in state.history[1:])


def data_only(patches, train_idx, options, epochs: int) -> tuple[int, float]:
    """The DataLoader of _train_epoch (augmentation on) iterated without any network."""
    dataset = PatchDataset(patches.path, train_idx, augment=True, seed=options.seed)
    samples, start = 0, time.perf_counter()
    for epoch in range(2, epochs + 2):
        dataset.epoch = epoch
        loader = torch.utils.data.DataLoader(dataset, batch_size=options.batch_size, shuffle=True,
                                             generator=torch.Generator().manual_seed(epoch), drop_last=True)
        for images, _ in loader:
            samples += len(images)
    return samples, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", choices=ENCODERS, default="mobilenet_v2")
    parser.add_argument("--architecture", choices=list(networks.ARCHITECTURES), default="unet")
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--patches", type=int, default=64, help="patches sampled from the image (80%% train)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs, after one warm-up epoch")
    parser.add_argument("--rounds", type=int, default=3, help="repeat every measurement; the median is printed")
    parser.add_argument("--skip-full", action="store_true", help="skip the whole loop.fit measurement")
    parser.add_argument("--json", help="also write the samples/s to this JSON file (benchmarks/run)")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count())

    with tempfile.TemporaryDirectory(prefix="dl-training-bench-") as tmp:
        work = Path(tmp)
        patches = sample_patches([(TEST_DATA / "nuclei.tif", TEST_DATA / "nuclei_groundtruth.tif")],
                                         work / "patches.h5", "instance", args.patch_size, args.patches, seed=0)
        spec = ModelSpec("instance", patches.out_channels, patches.n_channels, args.architecture, args.encoder)
        options = TrainOptions(batch_size=args.batch_size, loss="ce_dice", seed=0, device="cpu")
        train_idx, _ = loop.split_indices(patches.n_patches, options.validation_fraction, options.seed)
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
              f"({torch.get_num_threads()} threads), CPU; {spec.architecture} {spec.encoder}, "
              f"{len(train_idx)} training patches of {args.patch_size} px, batch {args.batch_size}, "
              f"{args.epochs} timed epochs after 1 warm-up")
        print(f"{'loop':<52} {'samples':>8} {'s':>8} {'samples/s':>10}   (median of {args.rounds} rounds; min-max)")
        measurements = {
            "bare": ("bare PyTorch (tensors in memory, no augmentation)",
                     lambda: bare_epochs(spec, patches, train_idx, options, args.epochs)),
            "aug": ("dlhisto _train_epoch, augmentation on (default)",
                    lambda: dlhisto_epochs(spec, patches, train_idx, options, args.epochs, augment=True)),
            "noaug": ("dlhisto _train_epoch, augmentation off",
                      lambda: dlhisto_epochs(spec, patches, train_idx, options, args.epochs, augment=False)),
            "full": ("dlhisto fit() incl. validation + checkpoint",
                     lambda: full_train(spec, patches, options, args.epochs, work)),
            "data": ("data loading + augmentation only (no network)",
                     lambda: data_only(patches, train_idx, options, args.epochs)),
        }
        if args.skip_full:
            del measurements["full"]
        results = {key: [] for key in measurements}
        for _ in range(args.rounds):  # rounds interleave the loops, so that a slow spell hits all of them
            for key, (_, run) in measurements.items():
                results[key].append(run())
        rates = {}
        for key, (label, _) in measurements.items():
            per_round = sorted(results[key], key=lambda r: r[0] / r[1])
            samples, seconds = per_round[len(per_round) // 2]
            rates[key] = samples / seconds
            low, high = per_round[0][0] / per_round[0][1], per_round[-1][0] / per_round[-1][1]
            print(f"{label:<52} {samples:>8} {seconds:>8.2f} {rates[key]:>10.2f}   ({low:.2f}-{high:.2f})")
        print(f"ratio dlhisto/bare (samples/s): augmentation on {rates['aug'] / rates['bare']:.2f}, "
              f"off {rates['noaug'] / rates['bare']:.2f}"
              + (f", whole fit() {rates['full'] / rates['bare']:.2f}" if "full" in rates else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(rates))

if __name__ == "__main__":
    main()
