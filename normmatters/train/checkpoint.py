"""End-of-epoch checkpoints, written atomically so a kill never leaves a broken file."""
from __future__ import annotations

from pathlib import Path

import torch

from normmatters import runs


def save(run_dir: Path, state: dict) -> None:
    runs.atomic_write_bytes(Path(run_dir) / runs.CHECKPOINT, lambda p: torch.save(state, p))


def load(run_dir: Path) -> dict | None:
    path = Path(run_dir) / runs.CHECKPOINT
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
