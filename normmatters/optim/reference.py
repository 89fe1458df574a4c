"""Per-channel weight norms of a reference (WD-on) run, read from its run directory.

The reference run's ``channels.parquet`` (written by the run logger through
:mod:`normmatters.runs`) holds, for every scale-invariant weight and output channel, the
channel's L2 norm at initialization (row 0) and at the end of every epoch e >= 1 (row e).
Which norm serves a point a fraction f in [0, 1] through the 1-based epoch e is the *timing*:

- ``end_of_epoch`` (the authors'): row e, held through the whole epoch. Their trainer sets its
  epoch counter to e-1 when epoch e starts and indexes a list whose first entry was logged at
  the end of epoch 1, so during epoch e they read the norm logged at its end.
- ``interpolate``: (1 - f) * row[e-1] + f * row[e].
- ``per_step``: the reference's norms logged every K steps (``channel_steps.parquet``, a run
  made with ``train.log_channels_every=K``), interpolated linearly in steps between the logged
  points and the epoch rows; point (e, f) is the reference after (e - 1 + f) * S of its steps.

Everything is validated when the object is built, i.e. before training starts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from normmatters import runs

TIMINGS = ("end_of_epoch", "interpolate", "per_step")


class ReferenceNorms:
    """Reference channel norms for ``params`` over epochs 0..``epochs``, validated up front.

    ``params``: {name: tensor} of the weights to match (by name and number of channels,
    i.e. ``shape[0]``). Raises ``ValueError`` (one line naming the path, param or epoch and
    what was expected) when the reference cannot serve a run of ``epochs`` epochs.
    """

    def __init__(self, run_dir: str | Path | None, params: Mapping[str, torch.Tensor], epochs: int,
                 purpose: str = "reference", timing: str = "end_of_epoch"):
        if timing not in TIMINGS:
            raise ValueError(f"{purpose}: reference_timing={timing!r} is not valid; valid: {', '.join(TIMINGS)}")
        self.timing = timing
        if run_dir is None or str(run_dir).strip() == "":
            raise ValueError(f"{purpose}: no reference run directory given (set `reference` to the "
                             "WD-on run directory whose channels.parquet holds per-channel norms)")
        if epochs is None or int(epochs) < 1:
            raise ValueError(f"{purpose}: needs `epochs` >= 1 to check the reference run, got {epochs!r}")
        path = runs.resolve_run(run_dir)
        self.path = path
        self.epochs = int(epochs)
        if not path.is_dir():
            raise ValueError(f"{purpose}: reference run directory not found: {path}")
        if not runs.has_table(path, "channels"):
            raise ValueError(f"{purpose}: reference run {path} has no channels table "
                             f"({runs.table_path(path, 'channels').name}); expected per-channel norms by epoch")
        table = runs.channel_norms(path)
        have = sorted(table)
        missing = [e for e in range(self.epochs + 1) if e not in table]
        if missing:
            span = f"{have[0]}..{have[-1]}" if have else "none"
            raise ValueError(f"{purpose}: reference run {path} lacks epoch {missing[0]} of the channel norms "
                             f"(has epochs {span}); a run of {self.epochs} epochs needs epochs 0..{self.epochs}")
        self.norms: dict[str, torch.Tensor] = {}
        for name, p in params.items():
            channels = int(p.shape[0])
            rows = []
            for e in range(self.epochs + 1):
                series = table[e].get(name)
                if series is None:
                    raise ValueError(f"{purpose}: scale-invariant param {name!r} missing from reference run "
                                     f"{path} at epoch {e} (expected {channels} channels)")
                if len(series) != channels or list(series.index) != list(range(channels)):
                    raise ValueError(f"{purpose}: param {name!r} has {len(series)} channels in reference run "
                                     f"{path} at epoch {e}; expected {channels} (channels 0..{channels - 1}, "
                                     f"shape {tuple(p.shape)})")
                rows.append(torch.as_tensor(series.to_numpy(), dtype=torch.float64))
            norms = torch.stack(rows)
            bad = ~(torch.isfinite(norms) & (norms > 0))
            if bad.any():
                e, c = (int(i) for i in bad.nonzero()[0])
                raise ValueError(f"{purpose}: reference run {path} has norm {float(norms[e, c])} for param "
                                 f"{name!r} channel {c} at epoch {e}; expected a finite positive norm")
            self.norms[name] = norms.to(device=p.device, dtype=p.dtype if p.is_floating_point() else torch.float64)
        self.positions: torch.Tensor | None = None
        if timing == "per_step":
            self._add_steps(path, params, purpose)

    def _add_steps(self, path: Path, params: Mapping[str, torch.Tensor], purpose: str) -> None:
        """Merge the per-step rows with the epoch rows into one table per param, by position in epochs."""
        if not runs.has_table(path, "channel_steps"):
            raise ValueError(f"{purpose}: reference_timing=per_step needs per-step channel norms in {path} "
                             f"({runs.table_path(path, 'channel_steps').name}); make the reference run with "
                             "train.log_channels_every=K")
        per_epoch = runs.steps_per_epoch(path)
        steps, tables = runs.channel_norm_steps(path)
        inside = [i for i, t in enumerate(steps) if 0 < t < self.epochs * per_epoch and t % per_epoch]
        positions = np.concatenate([np.arange(self.epochs + 1, dtype=np.float64),
                                    np.asarray(steps, dtype=np.float64)[inside] / per_epoch])
        order = np.argsort(positions, kind="stable")
        self.positions = torch.as_tensor(positions[order])
        for name, p in params.items():
            table = tables.get(name)
            if table is None or table.shape[1] != int(p.shape[0]) or not np.isfinite(table[inside]).all():
                raise ValueError(f"{purpose}: param {name!r} missing, incomplete or with another channel count in "
                                 f"{runs.table_path(path, 'channel_steps')} (expected {int(p.shape[0])} channels)")
            rows = torch.cat([self.norms[name].cpu().double(), torch.as_tensor(table[inside])])[torch.as_tensor(order)]
            self.norms[name] = rows.to(device=p.device, dtype=self.norms[name].dtype)

    def at(self, name: str, epoch: int, frac: float, like: torch.Tensor | None = None) -> torch.Tensor:
        """Reference norms of ``name`` (one per channel) a fraction ``frac`` into 1-based ``epoch``.

        ``like``: the weight itself; the table follows it to its device and dtype (e.g. when the
        model was moved after the hooks were built).
        """
        if not 1 <= epoch <= self.epochs:
            raise ValueError(f"reference run {self.path} serves epochs 1..{self.epochs}, asked for epoch {epoch}")
        table = self.norms[name]
        if like is not None and (table.device != like.device or table.dtype != like.dtype):
            table = self.norms[name] = table.to(device=like.device, dtype=like.dtype)
        frac = min(max(float(frac), 0.0), 1.0)
        if self.timing == "end_of_epoch":
            return table[epoch]
        if self.timing == "interpolate":
            return _lerp(table[epoch - 1], table[epoch], frac)
        pos = epoch - 1 + frac
        hi = int(torch.searchsorted(self.positions, torch.tensor(pos, dtype=torch.float64), right=False))
        if float(self.positions[hi]) == pos:
            return table[hi]
        lo_pos, hi_pos = float(self.positions[hi - 1]), float(self.positions[hi])
        return _lerp(table[hi - 1], table[hi], (pos - lo_pos) / (hi_pos - lo_pos))


def _lerp(a: torch.Tensor, b: torch.Tensor, frac: float) -> torch.Tensor:
    if frac == 0.0:
        return a
    if frac == 1.0:
        return b
    return torch.lerp(a, b, frac)
