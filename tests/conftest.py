"""Shared fixtures: tiny synthetic image-folder data and a Hydra config composer."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn
from normmatters.data.synthetic import CIFAR10_CLASSES, make_image_folder  # noqa: F401 (tests import it)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
CLASSES = CIFAR10_CLASSES

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# Tiny runs at paper learning rates reach subnormal floats, on which x86 CPUs (and oneDNN's 1x1
# convolution backward in particular) slow down by orders of magnitude: flush them to zero.
torch.set_flush_denormal(True)


class SmallBNNet(nn.Module):
    """conv-BN-ReLU ×2 and a linear classifier: two scale-invariant weights, for optimizer tests."""
    classifier_name = "fc"

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


@pytest.fixture(scope="session")
def tiny_cifar(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("tiny_cifar"), train_per_class=24, test_per_class=8)


@pytest.fixture
def compose():
    """compose(overrides) -> the config scripts/train.py would see."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    def _compose(overrides=()):
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            return hydra_compose(config_name="train", overrides=list(overrides))

    return _compose


def run_dir_of(cfg) -> Path:
    """Where scripts/train.py puts the run of a composed config (the naming rule of normmatters.runs)."""
    from omegaconf import OmegaConf

    from normmatters import runs

    return runs.run_dir_for(OmegaConf.to_container(cfg, resolve=True))


def hooked_step(model, opt, hooks, x, y, k: int, steps: int) -> None:
    """One optimizer step as the training loop takes it: backward, every hook's before_step(k, steps),
    the step, every hook's after_step."""
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    for h in hooks:
        h.before_step(k, steps)
    opt.step()
    for h in hooks:
        h.after_step()


def execute_notebook(name: str, where=None, variable: str = "NORMMATTERS_EXPERIMENT"):
    """Run notebooks/<name> as a user would (from the repository root), on ``where`` when given (the
    notebook reads it from ``variable``), else on the committed results; returns the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    if where is not None:
        os.environ[variable] = str(where)
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    finally:
        os.environ.pop(variable, None)
    return nb


def notebook_outputs(nb, mime: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if mime in o.get("data", {})]
