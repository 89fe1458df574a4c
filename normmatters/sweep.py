"""Hydra callback: after every multirun, a summary of its jobs (overrides, status, final metrics, run dir).

Each job writes one record, ``<sweep dir>/jobs/<num>.json``, when it ends (so launchers that run
jobs in other processes work too); when the sweep ends the records become ``summary.csv`` and
``summary.md`` in the sweep directory, the table is printed, and the process exits with status 1
if any job failed or found its run directory in use by another process ("locked"), after every
job had its turn. A sweep stopped by a signal writes the summary of the jobs so far. Registered in ``configs/train.yaml``
(``hydra.callbacks.sweep_summary``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from normmatters import io, runs

COLUMNS = ["job", "overrides", "status", "test_acc", "epoch", "run_dir", "error"]


def job_record(config: DictConfig, job_return: JobReturn) -> dict[str, Any]:
    """What one job did: its error when it failed, else its run's status and final metrics (meta.json)."""
    value = job_return._return_value  # (the public property re-raises a stored exception)
    record = {"job": int(config.hydra.job.num), "overrides": " ".join(job_return.overrides or []),
              "status": None, "test_acc": None, "epoch": None, "run_dir": "", "error": ""}
    if job_return.status == JobStatus.FAILED:
        return {**record, "status": "failed", "error": f"{type(value).__name__}: {value}"}
    if isinstance(value, dict) and value.get("status") in ("failed", "locked"):
        return {**record, "status": value["status"], "error": str(value.get("error", ""))}
    record["run_dir"] = str(value.get("run_dir", "")) if isinstance(value, dict) else ""
    meta = runs.read_meta(record["run_dir"]) if record["run_dir"] else {}
    final = meta.get("final", {})
    return {**record, "status": meta.get("status"), "test_acc": final.get("test_acc"), "epoch": final.get("epoch"),
            "error": meta.get("error", "")}


def summary_table(sweep_dir: Path) -> pd.DataFrame:
    records = [json.loads(p.read_text()) for p in sorted((sweep_dir / "jobs").glob("*.json"))]
    frame = pd.DataFrame(records, columns=COLUMNS)
    return frame.sort_values("job").reset_index(drop=True)


class SweepSummary(Callback):
    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.get().mode != RunMode.MULTIRUN:
            return
        _write_record(Path(config.hydra.sweep.dir), job_record(config, job_return))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        table = write_summary(Path(config.hydra.sweep.dir))
        bad = table[table["status"].isin(["failed", "locked"])]
        if len(bad):
            print(f"{len(bad)} of {len(table)} jobs failed or found their run in use; rerunning the same command "
                  "retries them and skips the finished ones", file=sys.stderr)
            sys.exit(1)


def _write_record(sweep_dir: Path, record: dict) -> None:
    path = sweep_dir / "jobs" / f"{record['job']}.json"
    io.atomic_write_bytes(path, lambda p: Path(p).write_text(json.dumps(record, default=str)))


def write_summary(sweep_dir: Path, note: str = "") -> pd.DataFrame:
    """summary.csv and summary.md from the job records, and the table printed."""
    table = summary_table(sweep_dir)
    io.atomic_write_bytes(sweep_dir / "summary.csv", lambda p: table.to_csv(p, index=False))
    text = table.drop(columns=["error"]).to_string(index=False)
    failed = table[table["status"].isin(["failed", "locked", "interrupted"])]
    errors = "".join(f"\njob {r.job} ({r.overrides}): {r.error}" for r in failed.itertuples())
    text += errors + (f"\n{note}" if note else "")
    io.atomic_write_bytes(sweep_dir / "summary.md", lambda p: Path(p).write_text(text + "\n"))
    print(f"\nsweep summary ({sweep_dir / 'summary.csv'}):\n{text}", file=sys.stderr)
    return table


def summarize_stopped_sweep(hydra_config, err) -> None:
    """A signal stopped the sweep in a job: record that job as interrupted, then the summary of the
    jobs so far (Hydra calls no on_multirun_end then)."""
    sweep_dir = Path(hydra_config.sweep.dir)
    record = {"job": int(hydra_config.job.num), "overrides": " ".join(hydra_config.overrides.task),
              "status": "interrupted", "test_acc": None, "epoch": None,
              "run_dir": str(getattr(err, "run_dir", "") or ""), "error": str(err)}
    _write_record(sweep_dir, record)
    write_summary(sweep_dir, note=f"the sweep stopped at job {record['job']} on a signal; rerunning the same "
                                  "command resumes it and skips the finished jobs")
