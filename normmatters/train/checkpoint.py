"""End-of-epoch checkpoints, written atomically so a kill never leaves a broken file."""
from __future__ import annotations

from pathlib import Path

import torch

from normmatters import io, runs


def save(run_dir: Path, state: dict) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # through Python's file: a full disk is an OSError saying so
            torch.save(state, f)

    io.atomic_write_bytes(Path(run_dir) / runs.CHECKPOINT, write)


def load(run_dir: Path) -> dict | None:
    """The last checkpoint, or None; a ValueError (one line, naming the file) when it cannot be read."""
    path = Path(run_dir) / runs.CHECKPOINT
    return read(path) if path.exists() else None


def read(path: Path) -> dict:
    """A checkpoint file; a ValueError (one line, naming the file) when it cannot be read."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        missing = [k for k in ("epoch", "step", "model", "optimizer", "scheduler", "rng") if k not in state]
    except Exception as err:  # truncated or foreign files raise many different errors
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise ValueError(f"checkpoint {path} cannot be read ({reason}); delete it to restart this run from "
                         "epoch 1, or put back an intact copy to resume") from None
    if missing:
        raise ValueError(f"checkpoint {path} lacks {', '.join(missing)}; delete it to restart this run from epoch 1")
    return state


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
