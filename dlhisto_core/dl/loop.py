"""Training loop for segmentation networks: loss choice, validation split, early stopping, a
checkpoint after every epoch that a killed run resumes from, and a reproducible result for a
given seed on the CPU.

Reproducibility does not rely on saved random states: the weights are initialised from the
seed (``build_model(spec, seed)``), the shuffling of epoch e uses a generator seeded with (seed, e), and each augmentation
one seeded with (seed, epoch, patch). A run resumed from the checkpoint of epoch e therefore
continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import segmentation_models_pytorch as smp
import torch
from torch import nn

from .patches import PatchDataset, count_patches
from .precision import pick_device
from ..models.networks import set_frozen_stages_to_eval
from ..base.errors import InputError
from .options import REGRESSION_LOSSES, SEGMENTATION_LOSSES, TrainOptions, default_loss
from ..io.outputs import atomic_output
from .precision import Precision, network_precision
from ..base.threads import cpu_threads
from ..models.packages import save_torch

METRICS = {"classification": "accuracy", "regression": "psnr"}
"""The validation score of each task that is not scored by the Dice of its classes."""


@dataclass
class TrainState:
    """What a checkpoint holds besides the weights and the optimizer."""

    epoch: int = 0
    """Epochs completed."""
    best_score: float = -math.inf
    """Best validation score: mean Dice of the foreground classes, accuracy for tile classes,
    PSNR (dB, over the normalised target range of 0 to 1) for regression, or the instance F1 of
    a scorer (``train``)."""
    best_epoch: int = 0
    best_loss: float = math.inf
    """Validation loss of the best epoch: of two epochs with the same score (tile accuracy often
    reaches 1 early), the one with the lower loss is the better model."""
    metric: str = "dice"
    history: list[dict] = field(default_factory=list)


def split_indices(n: int, validation_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Shuffled train / validation indices; at least one patch in each."""
    if n < 2:
        raise InputError(f"need at least 2 patches to train and validate, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(max(1, round(n * validation_fraction)), n - 1)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


def learning_rate_at(epoch: int, options: TrainOptions) -> float:
    """The learning rate of epoch 1..E: ``options.learning_rate`` decayed along half a cosine
    (Loshchilov and Hutter 2017, without restarts), so that the last epochs refine."""
    return options.learning_rate * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / options.epochs))


def make_loss(name: str | None, task: str) -> Callable:
    """The loss function ``name`` (None: :func:`default_loss`) for ``task``; tile classes always
    train with cross-entropy."""
    if task == "classification":
        return nn.CrossEntropyLoss()
    name = name or default_loss(task)
    if task == "regression":
        if name not in REGRESSION_LOSSES:
            raise InputError(f"regression trains with the loss {' or '.join(REGRESSION_LOSSES)}, not '{name}'")
        return nn.L1Loss() if name == "l1" else nn.MSELoss()
    if name not in SEGMENTATION_LOSSES:
        raise InputError(f"segmentation trains with the loss {', '.join(SEGMENTATION_LOSSES)}, not '{name}'")
    ce = nn.CrossEntropyLoss()
    dice = smp.losses.DiceLoss(mode="multiclass", from_logits=True)
    if name == "ce":
        return ce
    if name == "dice":
        return dice
    return lambda logits, target: ce(logits, target) + dice(logits, target)


def dice_per_class(logits: torch.Tensor, target: torch.Tensor, out_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Intersections and (prediction + truth) sizes per class, to sum over a validation set."""
    predicted = logits.argmax(dim=1)
    inter, total = np.zeros(out_channels), np.zeros(out_channels)
    for k in range(out_channels):
        p, t = predicted == k, target == k
        inter[k] += (p & t).sum().item()
        total[k] += p.sum().item() + t.sum().item()
    return inter, total


def fit(model: nn.Module, patches: str | os.PathLike, out_channels: int, options: TrainOptions,
        checkpoint: str | os.PathLike, log: Callable[[str], None] = print,
        split: tuple[Sequence[int], Sequence[int]] | None = None,
        scorer: Callable[[nn.Module], float] | None = None) -> TrainState:
    """Train ``model`` on the patches, resuming from ``checkpoint`` if it holds a compatible run.
    ``split`` gives the (training, validation) patch indices; by default a seeded random split
    by ``options.validation_fraction``. ``scorer``, if given, scores the model after each epoch
    instead of the validation patches (the instance F1 on whole validation images); the
    patches still give the validation loss.

    After every epoch the checkpoint is rewritten (atomically) with the weights, the optimizer,
    the best weights so far and the history. The returned state's model is the best one (highest
    validation Dice, background excluded when there are several classes).
    """
    device = pick_device(options.device)
    train_idx, val_idx = split or split_indices(count_patches(patches), options.validation_fraction, options.seed)
    if len(train_idx) < 2:  # batch normalisation cannot train on one patch
        raise InputError(f"{len(train_idx)} patch(es) left for training after the validation split; "
                         "give more images or patches per image")
    train_set = PatchDataset(patches, train_idx, augment=options.augment, seed=options.seed,
                             strong=options.strong_augment)
    val_set = PatchDataset(patches, val_idx)
    loss_fn = make_loss(options.loss, train_set.task)
    model.to(device)
    precision = network_precision(options.precision, device)
    scaler = precision.grad_scaler()
    log(f"training on {device} ({precision.name}): {len(train_idx)} patches, {len(val_idx)} for validation")
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=options.learning_rate, weight_decay=1e-4)
    state, best_weights = TrainState(metric="f1" if scorer else METRICS.get(train_set.task, "dice")), None
    checkpoint = Path(checkpoint)
    if checkpoint.is_file():
        state, best_weights = _resume(checkpoint, model, optimizer, log)
    stalled = state.epoch - state.best_epoch
    while state.epoch < options.epochs and stalled < options.patience:
        epoch = state.epoch + 1
        started = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(epoch, options)
        train_loss = _train_epoch(model, train_set, optimizer, loss_fn, options, epoch, device, scaler)
        val_loss, score = _validate(model, val_set, loss_fn, out_channels, options.batch_size, precision)
        score = scorer(model) if scorer else score
        if not math.isfinite(score):
            raise InputError(f"training diverged at epoch {epoch} (validation {state.metric} {score}); "
                             "try a lower learning rate")
        record = {"epoch": epoch, "learning_rate": learning_rate_at(epoch, options), "train_loss": train_loss, "val_loss": val_loss, f"val_{state.metric}": score,
                  "seconds": time.perf_counter() - started}
        state.history.append(record)
        state.epoch = epoch
        if score > state.best_score or (score == state.best_score and val_loss < state.best_loss):
            state.best_score, state.best_epoch, state.best_loss = score, epoch, val_loss
            best_weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        stalled = epoch - state.best_epoch
        _save_checkpoint(checkpoint, model, optimizer, state, best_weights)
        log(f"epoch {epoch}/{options.epochs}  train loss {train_loss:.4f}  val loss {val_loss:.4f}  "
            f"val {state.metric} {score:.4f}  {record['seconds']:.1f} s")
    if stalled >= options.patience:
        log(f"early stop: no better validation {state.metric} since epoch {state.best_epoch}")
    model.load_state_dict(best_weights)
    return state


def _train_epoch(model, dataset, optimizer, loss_fn, options, epoch, device, scaler=None) -> float:
    """One epoch over the training patches; the mean loss. ``scaler`` carries float16's loss
    scale from epoch to epoch (:meth:`precision.Precision.grad_scaler`)."""
    precision = network_precision(options.precision, device)
    scaler = precision.grad_scaler() if scaler is None else scaler
    model.train()
    set_frozen_stages_to_eval(model)
    dataset.epoch = epoch
    generator = torch.Generator().manual_seed(options.seed * 100003 + epoch)
    loader = torch.utils.data.DataLoader(dataset, batch_size=options.batch_size, shuffle=True,
                                         generator=generator, drop_last=len(dataset) > options.batch_size,
                                         num_workers=loader_workers(device), pin_memory=device.type == "cuda")
    total, count = 0.0, 0
    for images, targets in loader:
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast():
            loss = loss_fn(model(images), targets)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total += loss.item() * len(images)
        count += len(images)
    return total / count


def loader_workers(device: torch.device) -> int:
    """Processes that read and augment patches while the network trains: on a GPU, up to 4 of
    the job's cores but one (``--threads``, Galaxy's GALAXY_SLOTS); none on a CPU, whose cores
    all run the network (reading and augmenting take about 2 % of a CPU epoch: benchmarks/dl_training.py)."""
    if device.type != "cuda":
        return 0
    return min(4, max(0, (cpu_threads() or os.cpu_count() or 1) - 1))


@torch.no_grad()
def _validate(model, dataset, loss_fn, out_channels, batch_size, precision: Precision) -> tuple[float, float]:
    """Validation loss and score: mean Dice over the foreground classes (segmentation), accuracy
    (tile classes) or PSNR over the normalised range 0..1 (regression)."""
    model.eval()
    device = precision.device
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    total, count, correct, squared_error, values = 0.0, 0, 0, 0.0, 0
    inter, sizes = np.zeros(out_channels), np.zeros(out_channels)
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device)
        with precision.autocast():
            outputs = model(images).float()
        total += loss_fn(outputs, targets).item() * len(images)
        count += len(images)
        if dataset.task == "classification":
            correct += (outputs.argmax(dim=1) == targets).sum().item()
        elif dataset.task == "regression":
            squared_error += torch.sum((outputs - targets) ** 2).item()
            values += targets.numel()
        else:
            i, s = dice_per_class(outputs, targets, out_channels)
            inter, sizes = inter + i, sizes + s
    if dataset.task == "classification":
        return total / count, correct / count
    if dataset.task == "regression":
        return total / count, float(10 * np.log10(1 / max(squared_error / values, 1e-12)))
    classes = range(1, out_channels) if out_channels > 1 else range(out_channels)
    per_class = [2 * inter[k] / sizes[k] for k in classes if sizes[k] > 0]
    return total / count, float(np.mean(per_class)) if per_class else 0.0


def _save_checkpoint(path: Path, model, optimizer, state: TrainState, best_weights) -> None:
    with atomic_output(path) as tmp:
        save_torch({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "best_model": best_weights, "state": json.dumps(asdict(state))}, tmp)


def _resume(path: Path, model, optimizer, log) -> tuple[TrainState, dict]:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state = TrainState(**json.loads(saved["state"]))
    except Exception as exc:
        raise InputError(f"the checkpoint '{path.name}' does not fit this training run ({type(exc).__name__})") from exc
    log(f"resuming after epoch {state.epoch} (best validation {state.metric} {state.best_score:.4f} "
        f"at epoch {state.best_epoch})")
    return state, saved["best_model"]


def write_history(state: TrainState, json_path: str | os.PathLike | None, png_path: str | os.PathLike | None,
                  title: str = "training") -> None:
    """The per-epoch history as JSON and as a training-curve PNG (losses, validation score)."""
    if json_path:
        with atomic_output(json_path) as tmp:
            tmp.write_text(json.dumps({"best_epoch": state.best_epoch, f"best_val_{state.metric}": state.best_score,
                                       "epochs": state.history}, indent=2))
    if png_path:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
        epochs = [h["epoch"] for h in state.history]
        figure, loss_axis = plt.subplots(figsize=(6, 4), dpi=100)
        loss_axis.plot(epochs, [h["train_loss"] for h in state.history], label="train loss", color="tab:blue")
        loss_axis.plot(epochs, [h["val_loss"] for h in state.history], label="validation loss", color="tab:orange")
        loss_axis.set_xlabel("epoch")
        loss_axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        loss_axis.set_ylabel("loss")
        score_axis = loss_axis.twinx()
        metric = {"dice": "Dice", "psnr": "PSNR (dB)", "f1": "instance F1"}.get(state.metric, state.metric)
        score_axis.plot(epochs, [h[f"val_{state.metric}"] for h in state.history], label=f"validation {metric}",
                       color="tab:green")
        score_axis.set_ylabel(metric)
        if state.metric != "psnr":
            score_axis.set_ylim(0, 1)
        unfrozen = [h["epoch"] for h in state.history if h.get("phase") == "fine-tune"]
        if unfrozen:
            score_axis.axvline(unfrozen[0] - 0.5, color="black", linestyle="--", label="encoder unfrozen")
        if state.best_epoch:
            score_axis.axvline(state.best_epoch, color="grey", linestyle=":", label=f"best (epoch {state.best_epoch})")
        handles = loss_axis.get_legend_handles_labels()[0] + score_axis.get_legend_handles_labels()[0]
        loss_axis.legend(handles, [h.get_label() for h in handles], loc="center right", fontsize=8)
        loss_axis.set_title(title, parse_math=False)  # the model's name is text, never TeX
        figure.tight_layout()
        with atomic_output(png_path) as tmp:
            figure.savefig(tmp, format="png")
        plt.close(figure)


def join_phases(first: TrainState, second: TrainState) -> TrainState:
    """One history for a two-phase (frozen, then fine-tuned) run; epochs numbered on."""
    history = [{**h, "phase": "frozen"} for h in first.history]
    history += [{**h, "epoch": h["epoch"] + first.epoch, "phase": "fine-tune"} for h in second.history]
    best = second if second.best_score >= first.best_score else first
    offset = first.epoch if best is second else 0
    return TrainState(epoch=first.epoch + second.epoch, best_score=best.best_score,
                      best_epoch=best.best_epoch + offset, best_loss=best.best_loss, metric=first.metric,
                      history=history)
