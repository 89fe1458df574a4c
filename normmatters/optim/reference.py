"""Per-channel weight norms of a reference (WD-on) run, read from its run directory.

The reference run's ``channels.parquet`` (written by the run logger through
:mod:`normmatters.runs`) holds, for every scale-invariant weight and output channel, the
channel's L2 norm at initialization (epoch 0) and at the end of every epoch e >= 1.
During the 1-based epoch e, a fraction f in [0, 1] of the way through it, the reference norm is
interpolated linearly between the rows of epochs e-1 and e:

    ||w_ref||(e, f) = (1 - f) * ||w_ref||[e-1] + f * ||w_ref||[e]

Everything is validated when the object is built, i.e. before training starts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from normmatters import runs


class ReferenceNorms:
    """Reference channel norms for ``params`` over epochs 0..``epochs``, validated up front.

    ``params``: {name: tensor} of the weights to match (by name and number of channels,
    i.e. ``shape[0]``). Raises ``ValueError`` (one line naming the path, param or epoch and
    what was expected) when the reference cannot serve a run of ``epochs`` epochs.
    """

    def __init__(self, run_dir: str | Path | None, params: Mapping[str, torch.Tensor], epochs: int,
                 purpose: str = "reference"):
        if run_dir is None or str(run_dir).strip() == "":
            raise ValueError(f"{purpose}: no reference run directory given (set `reference` to the "
                             "WD-on run directory whose channels.parquet holds per-channel norms)")
        if epochs is None or int(epochs) < 1:
            raise ValueError(f"{purpose}: needs `epochs` >= 1 to check the reference run, got {epochs!r}")
        path = Path(run_dir)
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
        if frac == 0.0:
            return table[epoch - 1]
        if frac == 1.0:
            return table[epoch]
        return torch.lerp(table[epoch - 1], table[epoch], frac)
