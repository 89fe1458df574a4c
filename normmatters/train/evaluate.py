"""Test metrics of a trained model: a run directory (finished, diverged, interrupted or killed: its
last end-of-epoch checkpoint) or a checkpoint file beside its run's config.yaml (``scripts/eval.py``).

The model, data and precision are rebuilt from the run's own config.yaml; ``overrides``
(``key=value``, keys of that config) change what differs on this machine, e.g. ``data.path=`` for
data that moved, ``device=cpu``, ``data.test_batch_size=``.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from normmatters import models, norms, runs
from normmatters.data import build_data
from normmatters.data import check_config as check_data_config
from normmatters.train import checkpoint
from normmatters.train.build import autocast_dtype, model_from_config, pick_device


def locate(path: str | Path) -> tuple[Path, Path]:
    """(run dir, checkpoint file) of a run directory (``<dir>/<run_tag>`` without its hash is fine)
    or of a checkpoint file; one-line errors when either is missing."""
    path = Path(path)
    if path.is_file():
        run_dir, ckpt = path.parent, path
    else:
        run_dir = runs.resolve_run(path)
        ckpt = run_dir / runs.CHECKPOINT
        if not run_dir.is_dir():
            raise FileNotFoundError(f"run {str(path)!r} does not exist; valid: a run directory or a checkpoint file")
    if not (run_dir / runs.CONFIG).exists():
        raise FileNotFoundError(f"{run_dir} has no {runs.CONFIG}; valid: a run directory, or a checkpoint file "
                                "in one (the config tells which model and data to rebuild)")
    if not ckpt.exists():
        raise FileNotFoundError(f"{run_dir} has no {runs.CHECKPOINT} (a run keeps one from its first finished epoch; "
                                "the committed runs in results/ keep only their tables, whose epochs table holds "
                                "their test accuracy)")
    return run_dir, ckpt


def run_config(run_dir: Path, overrides: list[str] = ()):
    """The run's config.yaml with ``overrides`` applied; an override of a key it lacks is a ValueError."""
    cfg = OmegaConf.load(run_dir / runs.CONFIG)
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or OmegaConf.select(cfg, key, default="<missing>") == "<missing>":
            raise ValueError(f"override {item!r} is not valid; valid: key=value with a key of {run_dir / runs.CONFIG}")
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))


@torch.no_grad()
def predict(model: torch.nn.Module, loader, dtype) -> tuple[float, torch.Tensor, torch.Tensor]:
    """(summed cross-entropy, predictions, labels) over one pass of ``loader``, as the training loop
    evaluates: eval mode, the run's autocast dtype, logits in float32."""
    model.eval()
    loss, predicted, labels = 0.0, [], []
    for x, y in loader.epoch(0):
        with torch.autocast(x.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext():
            out = model(x)
        loss += float(F.cross_entropy(out.float(), y, reduction="sum"))
        predicted.append(out.argmax(1).cpu())
        labels.append(y.cpu())
    return loss, torch.cat(predicted), torch.cat(labels)


def per_class_table(predicted: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> pd.DataFrame:
    """One row per class: test images, correctly classified, accuracy in %."""
    n = len(classes)
    images = torch.bincount(labels, minlength=n)
    correct = torch.bincount(labels[predicted == labels], minlength=n)
    return pd.DataFrame({"class": classes, "images": images.tolist(), "correct": correct.tolist(),
                         "accuracy": (100 * correct / images.clamp(min=1)).tolist()})


def evaluate(path: str | Path, overrides: list[str] = (), per_class: bool = False) -> dict:
    """Test metrics of the checkpoint at ``path``: run_dir, checkpoint, status, epoch (of the
    checkpoint) and epochs (planned), data, test_images, test_loss, test_acc, and with ``per_class``
    a table per class."""
    run_dir, ckpt = locate(path)
    cfg = run_config(run_dir, overrides)
    state = checkpoint.read(ckpt)
    device = pick_device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("the run was trained with device=cuda and no CUDA device is here; add the override device=cpu")
    data_cfg = check_data_config(cfg.data)
    data = build_data(data_cfg, device, cfg.seed, progress=False)
    model = model_from_config(models.check_config(cfg.model), norms.check_config(cfg.norm, cfg.precision),
                              norms.check_weight_norm_config(cfg.weight_norm), data_cfg.num_classes)
    model.load_state_dict(state["model"])
    loss, predicted, labels = predict(model.to(device), data.test, autocast_dtype(cfg))
    metrics = {"run_dir": str(run_dir), "checkpoint": str(ckpt), "status": runs.status(run_dir),
               "epoch": int(state["epoch"]), "epochs": int(cfg.train.epochs), "data": data.label,
               "test_images": len(labels), "test_loss": loss / len(labels),
               "test_acc": 100 * float((predicted == labels).sum()) / len(labels)}
    if per_class:
        metrics["per_class"] = per_class_table(predicted, labels, data.classes)
    return metrics
