"""The run-directory format, defined once.

A run directory holds:

    config.yaml      the resolved Hydra config
    meta.json        status (running|finished|diverged|interrupted|failed), git commit, data label, profile,
                     seed, wandb id
    epochs.parquet   one row per epoch: train/test loss and accuracy, lr, seconds, images/s
    steps.parquet    one row per logged step (every train.log_every): train loss/accuracy, lr
    layers.parquet   one row per (logged step, scale-invariant weight): norm, effective step, angle
    channels.parquet one row per (epoch, weight, output channel): the channel's L2 norm
    channel_steps.parquet  optional (train.log_channels_every=K): the same every K steps
    precision.parquet optional (train.log_precision=float16|bfloat16): per norm layer and logged step,
                     counts of values whose square would overflow/underflow in that float, of channels
                     whose one-pass variance would be off, of gradients that would underflow
    checkpoint.pt    latest end-of-epoch state (not part of results/)
    wandb/           the wandb (offline) run
    .lock            while a process works on the run: its flock, pid, host and start time

One process per run directory: :class:`RunLock` (held for the whole run, released by the OS when
the process dies). A done run's meta.json holds a manifest (size and sha256 of config.yaml and every
table); :func:`read_table` and :func:`verify_run` refuse a file that no longer matches it.

The logger writes through this module; the LR correction and the plots read through it.
Tables are rewritten whole and atomically (temp file, fsync, rename), so a killed process never
leaves half a file; files get the user's umask; stale temp files are removed on the next start, by
the lock's holder only (:mod:`normmatters.io`).

Identity: two configs are the same run when they agree on every key but the location and
volatile ones (``NOT_IDENTITY``: where the run, its data and caches live, the device, wandb's
mode, progress bars); a path under ``out_root`` counts relative to it. So a moved or copied run
directory still resumes, and is still skipped when finished.

Naming: a run lives in ``<out_root>/<name>/<run_tag>-<hash>``, the hash being 8 hex digits of its
identity (:func:`config_hash`), so runs that differ in any setting that changes the result never
share a directory, while the readable ``run_tag`` says what the run is. ``run_dir=<path>`` names a
directory explicitly instead. A reference to another run may leave the hash out
(:func:`resolve_run`).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from normmatters import io
from normmatters.io import atomic_write_bytes

CONFIG = "config.yaml"
META = "meta.json"
CHECKPOINT = "checkpoint.pt"
TABLES = ("epochs", "steps", "layers", "channels", "channel_steps", "precision")
STATUSES = ("running", "finished", "diverged", "interrupted", "failed")
DONE = ("finished", "diverged")
# Keys that say where things are or how a run reports, not what it computes.
NOT_IDENTITY = ("out_root", "run_dir", "device", "wait_for_lock", "wandb", "train.progress", "data.path", "data.cache_dir",
                "data.download_root", "hydra")


def table_path(run_dir: str | Path, name: str) -> Path:
    if name not in TABLES:
        raise ValueError(f"unknown run table {name!r}; valid: {', '.join(TABLES)}")
    return Path(run_dir) / f"{name}.parquet"


def write_table(run_dir: str | Path, name: str, frame: pd.DataFrame) -> None:
    atomic_write_bytes(table_path(run_dir, name), lambda p: frame.to_parquet(p, index=False))


class UnreadableRunFile(ValueError):
    """A run file that exists but cannot be read, or no longer matches the run's manifest. Reading
    never changes a run's record: the run stays as it was."""


def _unreadable(path: Path, err: BaseException) -> UnreadableRunFile:
    reason = (str(err).splitlines() or [""])[0][:160] or type(err).__name__
    return UnreadableRunFile(f"{path} cannot be read ({reason}); put back an intact copy, or delete the run "
                             "directory to run it again")


def read_table(run_dir: str | Path, name: str) -> pd.DataFrame:
    """A run table; a finished run's is first checked against its manifest (:func:`verify_run`)."""
    path = table_path(run_dir, name)
    if not path.exists():
        raise FileNotFoundError(f"run table not found: {path} (is {run_dir} a normmatters run directory?)")
    recorded = read_meta(run_dir).get(MANIFEST_KEY, {})
    if path.name in recorded:
        problem = _mismatch(path, recorded[path.name])
        if problem:
            raise UnreadableRunFile(problem)
    try:
        return pd.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - pyarrow reports a damaged file in many ways
        raise _unreadable(path, err) from None


def has_table(run_dir: str | Path, name: str) -> bool:
    return table_path(run_dir, name).exists()


def read_meta(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / META
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise _unreadable(path, err) from None
    if not isinstance(meta, dict):
        raise UnreadableRunFile(f"{path} cannot be read (not a JSON object); put back an intact copy")
    return meta


def read_config(run_dir: str | Path) -> dict:
    """The run's resolved config (config.yaml) as a plain dict."""
    from omegaconf import OmegaConf

    path = Path(run_dir) / CONFIG
    try:
        config = OmegaConf.to_container(OmegaConf.load(path))
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - YAML and OmegaConf errors alike
        raise _unreadable(path, err) from None
    if not isinstance(config, dict):
        raise UnreadableRunFile(f"{path} cannot be read (not a mapping); put back an intact copy")
    return config


def write_meta(run_dir: str | Path, **updates: Any) -> dict[str, Any]:
    """Merge `updates` into meta.json (atomically) and return the new contents."""
    if "status" in updates and updates["status"] not in STATUSES:
        raise ValueError(f"bad run status {updates['status']!r}; valid: {', '.join(STATUSES)}")
    meta = {**read_meta(run_dir), **updates}
    text = json.dumps(meta, indent=2, sort_keys=True, default=str)
    atomic_write_bytes(Path(run_dir) / META, lambda p: Path(p).write_text(text))
    return meta


def status(run_dir: str | Path) -> str | None:
    return read_meta(run_dir).get("status")


def is_finished(run_dir: str | Path) -> bool:
    return status(run_dir) in ("finished", "diverged")


# ---- one process per run directory ------------------------------------------------------------

LOCK = ".lock"  # holds the holder's pid, host and start time while a process works on the run
_HELD: set[Path] = set()  # run directories whose lock this process holds


class RunLocked(Exception):
    """Another process holds the run directory's lock; exit status 75 (EX_TEMPFAIL: try again later)."""
    exit_code = 75


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"pid {info['pid']} on {info['host']} (since {info['started']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


class RunLock:
    """An exclusive ``flock`` on ``<run_dir>/.lock``, held for the whole run. The OS releases it
    when the process dies (kill -9 too), so no lock is ever stale. ``wait=False``: a second process
    gets :class:`RunLocked` naming the holder; ``wait=True``: it waits for the holder to end.
    Directories the lock had to create are removed again when the run left nothing in them."""

    def __init__(self, run_dir: str | Path, wait: bool = False):
        self.run_dir, self.wait = Path(run_dir), wait
        self.path = self.run_dir / LOCK
        self._fd: int | None = None
        self._created: list[Path] = []

    def __enter__(self) -> RunLock:
        self._created = [p for p in (self.run_dir, *self.run_dir.parents) if not p.exists()]
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._acquire()
        except BaseException:
            self._remove_created()
            raise
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(info).encode(), 0)
        return self

    def _acquire(self) -> None:
        waited = False
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not self.wait:
                    os.close(fd)
                    raise RunLocked(f"{self.run_dir} is in use by {_holder(self.path)}; not starting a second "
                                    "process on it (add wait_for_lock=true, or --wait, to wait for it)") from None
                if not waited:
                    print(f"waiting for {self.run_dir}, in use by {_holder(self.path)}", flush=True)
                    waited = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:  # the holder removes the file as it lets go: ours must still be the one at the path
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                _HELD.add(self.run_dir.resolve())
                return
            os.close(fd)

    def __exit__(self, *exc) -> None:
        if self._fd is None:
            return
        _HELD.discard(self.run_dir.resolve())
        self.path.unlink(missing_ok=True)  # while still held: see _acquire
        os.close(self._fd)
        self._fd = None
        self._remove_created()

    def _remove_created(self) -> None:
        for directory in self._created:  # innermost first; only if nothing was written there
            try:
                directory.rmdir()
            except OSError:
                break



def remove_stale_temps(run_dir: str | Path) -> list[Path]:
    """Delete the temp files killed writers left in a run directory; only the lock's holder may."""
    if Path(run_dir).resolve() not in _HELD:
        raise RuntimeError(f"removing temp files in {run_dir} needs its lock (runs.RunLock)")
    return io.remove_stale_temps(run_dir)


def locked_by(run_dir: str | Path) -> str | None:
    """Who holds the run directory's lock right now ("pid ... on ..."), or None."""
    path = Path(run_dir) / LOCK
    return _holder(path) if io.lock_free(path, fcntl.LOCK_SH) is False else None


# ---- the manifest: a finished run can prove its files are intact -------------------------------

MANIFEST_KEY = "manifest"


def _digest(path: Path) -> dict:
    with open(path, "rb") as f:
        return {"bytes": path.stat().st_size, "sha256": hashlib.file_digest(f, "sha256").hexdigest()}


def manifest_files(run_dir: str | Path) -> list[Path]:
    """What a manifest covers: the config and every table (not meta.json, the checkpoint or wandb/)."""
    run_dir = Path(run_dir)
    return [p for p in [run_dir / CONFIG, *(table_path(run_dir, t) for t in TABLES)] if p.exists()]


def manifest(run_dir: str | Path) -> dict[str, dict]:
    """{file name: {"bytes": size, "sha256": hex digest}} of the run's files as they are now."""
    return {p.name: _digest(p) for p in manifest_files(run_dir)}


def _mismatch(path: Path, recorded: dict) -> str | None:
    if not path.exists():
        return f"{path} is missing (the run's manifest in {META} lists it)"
    now = _digest(path)
    if now != recorded:
        what = "size" if now["bytes"] != recorded.get("bytes") else "sha256"
        return (f"{path} no longer matches the run's manifest ({what} differs: {now['bytes']} bytes now, "
                f"{recorded.get('bytes')} recorded); put back the original file")
    return None


def record_manifest(run_dir: str | Path) -> dict:
    """Write the manifest of a done run's files as they are now into its meta.json."""
    return write_meta(run_dir, **{MANIFEST_KEY: manifest(run_dir)})


def verify_run(run_dir: str | Path) -> list[str]:
    """One line per problem: a done run (finished/diverged) whose files are missing, changed, not in
    its manifest, or that has no manifest; a run that is not done. Empty when the run is intact."""
    run_dir = Path(run_dir)
    try:
        meta = read_meta(run_dir)
    except UnreadableRunFile as err:
        return [str(err)]
    if meta.get("status") not in DONE:
        return [f"{run_dir / META}: status {meta.get('status')!r}, not a done run ({'/'.join(DONE)})"]
    recorded = meta.get(MANIFEST_KEY)
    if not isinstance(recorded, dict):
        return [f"{run_dir / META} has no manifest; record one with: python scripts/verify_runs.py --record "
                f"{run_dir}"]
    problems = [_mismatch(run_dir / name, digest) for name, digest in sorted(recorded.items())]
    problems += [f"{p} is not in the run's manifest" for p in manifest_files(run_dir) if p.name not in recorded]
    return [p for p in problems if p]


def channel_norms(run_dir: str | Path) -> dict[int, dict[str, pd.Series]]:
    """Per-channel weight norms of a run: {epoch: {param name: norms indexed by channel}}.

    Epoch 0 holds the norms at initialization; epoch e the norms at the end of epoch e.
    """
    frame = read_table(run_dir, "channels")
    out: dict[int, dict[str, pd.Series]] = {}
    for (epoch, param), group in frame.groupby(["epoch", "param"], sort=True):
        out.setdefault(int(epoch), {})[str(param)] = group.set_index("channel")["norm"].sort_index()
    return out


def channel_norm_steps(run_dir: str | Path) -> tuple[list[int], dict[str, np.ndarray]]:
    """Per-step channel norms of a run logged with ``train.log_channels_every``:
    (global steps after which they were taken, {param name: array (steps, channels)})."""
    frame = read_table(run_dir, "channel_steps")
    steps = sorted(int(s) for s in frame["step"].unique())
    out = {}
    for param, group in frame.groupby("param", sort=True):
        table = group.pivot(index="step", columns="channel", values="norm").sort_index()
        out[str(param)] = table.reindex(steps).to_numpy(dtype=np.float64)
    return steps, out


def steps_per_epoch(run_dir: str | Path) -> int:
    """Optimizer steps in one epoch of a run, from its epochs table (global step at the end of epoch 1)."""
    frame = read_table(run_dir, "epochs")
    first = frame[frame["epoch"] == 1]
    if first.empty:
        raise ValueError(f"run {run_dir} has no epoch-1 row in its epochs table; cannot tell its steps per epoch")
    return int(first["step"].iloc[0])


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def identity(config: dict) -> dict:
    """The flattened config minus location and volatile keys, paths under out_root made relative to it."""
    flat = _flatten(config)
    root = str(flat.get("out_root", "")).rstrip("/")
    out = {}
    for key, value in flat.items():
        if any(key == k or key.startswith(k + ".") for k in NOT_IDENTITY):
            continue
        if root and isinstance(value, str) and value.startswith(root + "/"):
            value = "<out_root>/" + value[len(root) + 1:]
        out[key] = value
    return out


def _canonical(value):
    """1 and 1.0 are one setting (YAML writes either); so are absent and null."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


HASH_LEN = 8
_NAMED = ("name", "run_tag")  # already in the path, readable


def config_hash(config: dict) -> str:
    """8 hex digits of the run's identity: equal for configs :func:`config_differences` calls equal."""
    ident = {k: _canonical(v) for k, v in identity(config).items() if v is not None and k not in _NAMED}
    text = json.dumps(ident, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:HASH_LEN]


def run_dir_for(config: dict) -> Path:
    """Where the run of a resolved config lives: its ``run_dir`` when set, else
    ``<out_root>/<name>/<run_tag>-<config_hash>``."""
    if config.get("run_dir"):
        return Path(config["run_dir"])
    return Path(str(config["out_root"])) / str(config["name"]) / f"{config['run_tag']}-{config_hash(config)}"


def _hashed(name: str, prefix: str) -> bool:
    return name.startswith(prefix + "-") and re.fullmatch(f"[0-9a-f]{{{HASH_LEN}}}", name[len(prefix) + 1:]) is not None


def resolve_run(path: str | Path) -> Path:
    """A run directory named in full, or by ``<dir>/<run_tag>`` without its hash when exactly one run
    there has that tag. Several: a ValueError naming them. None: ``path`` as given (callers say it is missing)."""
    path = Path(path)
    if (path / CONFIG).exists() or not path.parent.is_dir():
        return path
    found = sorted(p for p in path.parent.iterdir() if _hashed(p.name, path.name) and (p / CONFIG).exists())
    if len(found) > 1:
        raise ValueError(f"{path} matches {len(found)} runs ({', '.join(p.name for p in found)}); "
                         "name the one you mean in full")
    return found[0] if found else path


def config_differences(saved: dict, now: dict) -> list[str]:
    """Keys whose values make ``saved`` and ``now`` different runs (absent and null are the same)."""
    a, b = identity(saved), identity(now)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def existing_result(run_dir: str | Path, config: dict) -> dict | None:
    """The final metrics of a run already done in ``run_dir``; None when there is none yet or it is
    to be resumed; a ValueError when the directory holds a run of another config."""
    if not (Path(run_dir) / CONFIG).exists():
        return None
    differ = config_differences(read_config(run_dir), config)
    if differ:
        raise ValueError(f"{run_dir} already holds a run with another config (differs in: {', '.join(differ[:5])}); "
                         "choose another name=, run_tag= or out_root=, or delete that directory")
    meta = read_meta(run_dir)
    if meta.get("status") in DONE:
        return {"status": meta["status"], **meta.get("final", {})}
    return None


def find_runs(root: str | Path) -> list[Path]:
    """Every run directory (one with a config.yaml and a meta.json) under ``root``, sorted."""
    return sorted(p.parent for p in Path(root).rglob(CONFIG) if (p.parent / META).exists())


def load_runs(paths: str | Path | list, table: str = "epochs") -> pd.DataFrame:
    """One tidy frame of many runs: the rows of each run's ``table`` with its run_dir, status and
    every identity key of its config (dotted names, e.g. ``optim.lr``) as columns.
    ``paths``: a directory to search (see :func:`find_runs`) or a list of run directories."""
    dirs = find_runs(paths) if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    tables, configs = [], []
    for run_dir in dirs:
        if not has_table(run_dir, table):
            continue
        config = identity(read_config(run_dir))
        tables.append(read_table(run_dir, table).assign(run_dir=str(run_dir)))
        configs.append({"run_dir": str(run_dir), "status": status(run_dir),
                        **{k: v for k, v in config.items() if not isinstance(v, list)}})
    if not tables:
        raise ValueError(f"no run with a {table} table in {paths}")
    rows = pd.concat(tables, ignore_index=True)
    keys = pd.DataFrame(configs, dtype=object)  # one row per run; merged, so no all-null frame is concatenated
    keys = keys[[c for c in keys.columns if c == "run_dir" or c not in rows.columns]]
    return rows.merge(keys.infer_objects(), on="run_dir", how="left")
