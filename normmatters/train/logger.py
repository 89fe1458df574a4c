"""Run logger: keeps the rows of each run table, writes them through `runs`, mirrors to wandb."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

import pandas as pd

from normmatters import runs

ROW_TABLES = runs.TABLES


class RunLogger:
    """write=False (every rank but 0 of a data-parallel run): keeps the rows, writes nothing."""

    def __init__(self, run_dir: Path, wandb_cfg, run_name: str, group: str, config: dict, write: bool = True):
        self.run_dir = Path(run_dir)
        self.write = write
        self.rows: dict[str, list[dict]] = {name: [] for name in ROW_TABLES}
        self.wandb = self._start_wandb(wandb_cfg, run_name, group, config) if write else None

    def _start_wandb(self, wandb_cfg, run_name, group, config):
        if wandb_cfg.mode == "disabled":
            return None
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        # our own id: wandb.util.generate_id is gone from recent wandb releases
        run_id = runs.read_meta(self.run_dir).get("wandb_id") or secrets.token_hex(4)
        runs.write_meta(self.run_dir, wandb_id=run_id)
        settings = wandb.Settings(console="off", silent=True, x_disable_stats=True,
                                  x_save_requirements=False, disable_git=True)
        return wandb.init(project=wandb_cfg.project, entity=wandb_cfg.entity, mode=wandb_cfg.mode,
                          dir=str(self.run_dir), id=run_id, resume="allow", name=run_name, group=group,
                          job_type=wandb_cfg.get("job_type"),
                          config=config, settings=settings)

    def resume_from(self, epoch: int) -> None:
        """Reload tables written before a restart, keeping only rows up to the checkpointed epoch."""
        for name in ROW_TABLES:
            if runs.has_table(self.run_dir, name):
                frame = runs.read_table(self.run_dir, name)
                self.rows[name] = frame[frame["epoch"] <= epoch].to_dict("records")

    def add(self, table: str, rows: list[dict]) -> None:
        self.rows[table].extend(rows)

    def log_step(self, step: int, row: dict, layer_rows: list[dict]) -> None:
        self.add("steps", [row])
        self.add("layers", layer_rows)
        if self.wandb is not None:
            payload = {f"train/{k}": v for k, v in row.items() if k not in ("step", "epoch")}
            for r in layer_rows:
                for key in ("norm", "eff_step", "angle"):
                    payload[f"layers/{r['param']}/{key}"] = r[key]
            self.wandb.log(payload, step=step)

    def log_epoch(self, step: int, row: dict) -> None:
        self.add("epochs", [row])
        if self.wandb is not None:
            self.wandb.log({f"epoch/{k}": v for k, v in row.items()}, step=step)

    def flush(self) -> None:
        if not self.write:
            return
        for name, rows in self.rows.items():
            if rows:
                runs.write_table(self.run_dir, name, pd.DataFrame(rows))

    def finish(self, summary: dict, flush: bool = True) -> None:
        if flush:
            self.flush()
        if self.wandb is not None:
            self.wandb.summary.update(summary)
            self.wandb.finish()
            self.wandb = None
