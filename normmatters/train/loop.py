"""The training loop: seeded, resumable at epoch boundaries, logging weight-norm dynamics."""
from __future__ import annotations

import contextlib
import math
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from normmatters import io, runs
from normmatters.data import build_data
from normmatters.dynamics import AngleProbe, channel_norm_rows, layer_rows, scale_invariant_weights
from normmatters.norms import check_norm_inputs, prepare_kernels
from normmatters.norms.precision_probe import PrecisionProbe
from normmatters.optim import build_optimizer, build_scheduler, build_step_hooks
from normmatters.norms.sync_batchnorm import convert_sync
from normmatters.train import checkpoint, distributed
from normmatters.train.denormals import flushing_denormals
from normmatters.train.build import autocast_dtype, device_settings, model_from_config, pick_device
from normmatters.train.logger import RunLogger
from normmatters.train.resume import resume_command
from normmatters.train.signals import RunInterrupted, StopOnSignal
from normmatters.train.validate import Checked, validate



@dataclass
class Run:
    """Everything one run's epochs share."""
    cfg: object
    model: torch.nn.Module
    forward: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    hooks: list
    data: object
    logger: RunLogger
    device: torch.device
    weights: dict = field(default_factory=dict)
    step: int = 0
    ranks: distributed.Ranks = distributed.SINGLE
    eval_forward: object = None  # the forward of evaluation (never DDP: ranks evaluate unequal shares)
    precision_probe: PrecisionProbe | None = None  # train.log_precision: half-precision hazards per layer

    def autocast(self):
        dtype = autocast_dtype(self.cfg)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def lrs(self) -> dict[str, float]:
        by_id = {id(p): g["lr"] for g in self.optimizer.param_groups for p in g["params"]}
        return {name: by_id[id(w)] for name, w in self.weights.items()}

    def scheduled_lr(self) -> float:
        groups = [g for g in self.optimizer.param_groups if g.get("scheduled", True)]
        return (groups or self.optimizer.param_groups)[0]["lr"]


def train(cfg) -> dict:
    """Train one run described by a composed config; returns its final metrics.

    Everything that can be checked is checked before the run directory is touched. A finished run
    is returned as it is; an interrupted or failed one resumes from its last end-of-epoch checkpoint.
    SIGINT/SIGTERM stop the run after the current step (status `interrupted`, RunInterrupted raised);
    an exception marks it `failed` and propagates.
    """
    checked = validate(cfg)
    ranks = distributed.from_env()
    config = _plain_config(cfg)
    if ranks.parallel:  # per-device statistics make it another run than one process's
        config["world_size"] = ranks.world
    elif config["train"].get("sync_norm"):  # one process has no other ranks: the very run without it
        print("train.sync_norm=true has no effect in one process (no torchrun); training the run without it",
              file=sys.stderr)
        config["train"]["sync_norm"] = None
    run_dir = runs.run_dir_for(config)
    config["run_dir"] = str(run_dir)
    if ranks.main:
        print(f"run directory: {run_dir}" + (f" ({ranks.world} processes)" if ranks.parallel else ""), flush=True)
    # one process per run directory (rank 0 speaks for a torchrun job): held until the run ends
    lock = runs.RunLock(run_dir, wait=bool(cfg.get("wait_for_lock"))) if ranks.main else contextlib.nullcontext()
    with lock:
        return _train_locked(cfg, checked, ranks, config, run_dir)


def _train_locked(cfg, checked: Checked, ranks: distributed.Ranks, config: dict, run_dir: Path) -> dict:
    done = runs.existing_result(run_dir, config)
    if done is not None:
        print(f"{run_dir} is already {done['status']}; not re-running it", file=sys.stderr)
        return {**done, "run_dir": str(run_dir)}
    state = checkpoint.load(run_dir)  # a corrupt checkpoint stops us before anything is written
    if state is not None:  # and so does a damaged table: a read error leaves the run's record as it was
        for name in runs.TABLES:
            if runs.has_table(run_dir, name):
                runs.read_table(run_dir, name)
    device = distributed.device_for(ranks, pick_device(cfg.device))
    # as early as we can: torch sets the calling thread, and only intra-op threads started later inherit it
    with flushing_denormals(bool(cfg.train.get("flush_denormal"))):
        started = distributed.start(ranks, device)
        try:
            distributed.barrier(ranks)  # every rank has read the run dir before rank 0 writes to it
            run = _setup(cfg, checked, run_dir, config, fresh=state is None, ranks=ranks, device=device)
            with StopOnSignal() as stop:
                try:
                    return {**_epochs(run, state, stop), "run_dir": str(run_dir)}
                except KeyboardInterrupt:  # a second Ctrl-C: stop at once, but say so and keep the record right
                    _interrupt(run, len(run.logger.rows["epochs"]) + 1, signal.SIGINT, at_once=True)
                except runs.UnreadableRunFile:
                    raise  # a read error leaves the run's record as it was
                except Exception as err:
                    _mark_failed(run_dir, err, ranks)
                    raise
        finally:
            distributed.stop(started)


def _mark_failed(run_dir: Path, err: Exception, ranks: distributed.Ranks) -> None:
    if not ranks.main:
        return
    reason = str(err).splitlines()[0] if str(err) else ""
    try:
        runs.write_meta(run_dir, status="failed", error=f"{type(err).__name__}: {reason}"[:300])
    except io.WriteFailed:  # the disk that failed the run may refuse this too; the error still says why
        pass


def _epochs(run: Run, state: dict | None, stop: StopOnSignal) -> dict:
    cfg = run.cfg
    start = 1
    if state is not None:
        start = _restore(run, state) + 1
        if run.ranks.main:
            print(f"resuming {run.logger.run_dir} after epoch {start - 1}", file=sys.stderr)
    elif run.ranks.main:
        run.logger.add("channels", channel_norm_rows(run.weights, epoch=0, step=0))
    for epoch in range(start, cfg.train.epochs + 1):
        row = _train_epoch(run, epoch, stop)
        if distributed.any_(stop.requested, run.ranks, run.device):  # every rank stops at the same step
            _interrupt(run, epoch, stop.signum or signal.SIGTERM)
        if row is None:
            return _stop(run, "diverged", epoch)
        row.update(_evaluate(run))
        if run.ranks.main:
            run.logger.add("channels", channel_norm_rows(run.weights, epoch=epoch, step=run.step))
            run.logger.log_epoch(run.step, row)
            run.logger.flush()  # tables first: a kill before the checkpoint only repeats this epoch
            checkpoint.save(run.logger.run_dir, _state(run, epoch))
            print(f"epoch {epoch}/{cfg.train.epochs}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.2f}  "
                  f"test loss {row['test_loss']:.4f} acc {row['test_acc']:.2f}  {row['images_per_s']:.0f} img/s",
                  file=sys.stderr)
    return _stop(run, "finished", cfg.train.epochs)


def _interrupt(run: Run, epoch: int, signum: int, at_once: bool = False) -> None:
    name = signal.Signals(signum).name + (" twice" if at_once else "")
    if run.ranks.main:
        runs.write_meta(run.logger.run_dir, status="interrupted",
                        interrupted={"signal": name, "epoch": epoch, "step": run.step})
    run.logger.finish({"status": "interrupted", "epoch": epoch})
    how = "at once" if at_once else ""
    message = (f"{name}: stopped {how + ' ' if how else ''}during epoch {epoch} (step {run.step}); "
               f"{run.logger.run_dir} is marked interrupted "
               f"and resumes after epoch {epoch - 1} with: {resume_command()}")
    print(message, file=sys.stderr)
    stopped = RunInterrupted(signum, message)
    stopped.run_dir = str(run.logger.run_dir)
    raise stopped


def _plain_config(cfg) -> dict:
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    return config


def _commits(run_dir: Path, fresh: bool) -> dict:
    """git_commit: the commit the run started with; resumed_with: every other commit that later resumed it."""
    meta, now = runs.read_meta(run_dir), _git_commit()
    if fresh:
        return {"git_commit": now, **({"resumed_with": []} if meta.get("resumed_with") else {})}
    first = meta.get("git_commit") or now
    later = [c for c in meta.get("resumed_with", []) if c != first]
    if now != first and now not in later:
        later.append(now)
    return {"git_commit": first, **({"resumed_with": later} if later else {})}


def _setup(cfg, checked: Checked, run_dir: Path, config: dict, fresh: bool = True,
           ranks: distributed.Ranks = distributed.SINGLE,
           device: torch.device | None = None) -> Run:
    device = device or pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = model_from_config(checked.model, checked.norm, checked.weight_norm, checked.data.num_classes).to(device)
    prepare_kernels(model, device)  # a first C++ build (one line, about a minute) before any progress bar
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    sync = bool(cfg.train.get("sync_norm")) and ranks.parallel
    if sync:
        model = convert_sync(model)
    optimizer = build_optimizer(model, checked.optim)
    hooks = build_step_hooks(checked.optim, model, optimizer)  # checks any reference run before data loads
    data = build_data(checked.data, device, cfg.seed, progress=cfg.train.progress and ranks.main, rank=ranks.rank,
                      world=ranks.world)
    check_norm_inputs(model, data.test, cfg.data.batch_size if sync else data.train.rank_batch)
    scheduler = build_scheduler(optimizer, checked.optim, len(data.train), cfg.train.epochs)
    scaling = cfg.precision.autocast == "float16" and cfg.precision.get("loss_scaling") is not False
    scaler = torch.amp.GradScaler(device.type, enabled=scaling)
    settings = device_settings(device)
    if ranks.main:
        _start_run_dir(cfg, run_dir, config, fresh, data, device, ranks, settings)
    logger = RunLogger(run_dir, cfg.wandb, cfg.run_tag, cfg.name, config, write=ranks.main)
    compiled = torch.compile if cfg.train.compile else (lambda m: m)
    forward = compiled(distributed.wrap(model, ranks, device))
    watch = cfg.train.get("log_precision")
    return Run(cfg, model, forward, optimizer, scheduler, scaler, hooks, data, logger, device,
               weights=scale_invariant_weights(model),
               precision_probe=PrecisionProbe(model, getattr(torch, watch)) if watch else None,
               ranks=ranks, eval_forward=compiled(model) if ranks.parallel else forward)


def _start_run_dir(cfg, run_dir: Path, config: dict, fresh: bool, data, device, ranks, settings: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    runs.remove_stale_temps(run_dir)  # under the run's lock (taken in train)
    if not (run_dir / runs.CONFIG).exists():
        text = OmegaConf.to_yaml(OmegaConf.create(config))
        io.atomic_write_bytes(run_dir / runs.CONFIG, lambda p: Path(p).write_text(text))
    parallel = {"world_size": ranks.world, "sync_norm": bool(cfg.train.get("sync_norm"))} if ranks.parallel else {}
    runs.write_meta(run_dir, status="running", **_commits(run_dir, fresh), data_label=data.label,
                    num_train=data.num_train, num_test=data.num_test, profile=cfg.get("profile_name"),
                    seed=cfg.seed, device=str(device), torch=torch.__version__, threads=torch.get_num_threads(),
                    hardware=_hardware(device),
                    name=cfg.name, run_tag=cfg.run_tag, **settings, **parallel)


def _hardware(device: torch.device) -> str:
    """The card, or the CPU's kernel level: float rounding (so a seed's trajectory) can differ between them."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} CPU, {torch.backends.cpu.get_cpu_capability()} kernels"


def _git_commit() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _train_epoch(run: Run, epoch: int, stop: StopOnSignal) -> dict | None:
    """One epoch of SGD; returns the epoch row, or None when the loss stops being finite or a stop
    was requested (the caller tells the two apart)."""
    cfg, model = run.cfg, run.model
    model.train()
    for hook in run.hooks:
        hook.on_epoch_start(epoch)
    steps = len(run.data.train)
    probe = AngleProbe(run.weights)
    total = torch.zeros(3, device=run.device)    # loss sum, correct, seen (kept on device: no sync)
    window = torch.zeros(3, device=run.device)
    epoch_lr = run.scheduled_lr()
    stops = cfg.train.get("stop_on_nonfinite") is not False  # false: train on through NaN (the authors' loop)
    start = time.perf_counter()
    tty = sys.stderr.isatty()
    bar = tqdm(run.data.train.epoch(epoch), total=steps, desc=f"epoch {epoch}/{cfg.train.epochs}",
               disable=not (cfg.train.progress and tty and run.ranks.main), leave=False, dynamic_ncols=True)
    for i, (x, y) in enumerate(bar):
        logged = (run.step + 1) % cfg.train.log_every == 0
        lr = run.scheduled_lr()
        with run.autocast():
            out = run.forward(x)
            loss = F.cross_entropy(out.float(), y)
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        if cfg.train.grad_clip is not None:
            run.scaler.unscale_(run.optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        for hook in run.hooks:
            hook.before_step(i, steps)
        if logged:
            probe.before()
            lrs = run.lrs()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        for hook in run.hooks:
            hook.after_step()
        run.scheduler.step()
        run.step += 1
        every = cfg.train.get("log_channels_every")
        if every and run.step % every == 0 and run.ranks.main:
            run.logger.add("channel_steps", channel_norm_rows(run.weights, epoch=epoch, step=run.step))
        batch = torch.stack([loss.detach().float() * len(y), (out.argmax(1) == y).sum().float(),
                             torch.tensor(float(len(y)), device=run.device)])
        total += batch
        window += batch
        if logged and run.precision_probe is not None and run.ranks.main:
            run.logger.add("precision", run.precision_probe.rows(epoch=epoch, step=run.step))
        if logged:
            angles = probe.after()
            w_loss, w_correct, w_seen = distributed.sum_(window, run.ranks).tolist()
            window.zero_()
            if not math.isfinite(w_loss) and stops:
                return None
            row = {"step": run.step, "epoch": epoch, "lr": lr, "loss": w_loss / w_seen, "acc": 100 * w_correct / w_seen}
            if run.ranks.main:
                run.logger.log_step(run.step, row, layer_rows(run.weights, lrs, epoch, run.step, angles))
            img_s = total[2].item() * run.ranks.world / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['acc']:.1f}", img_s=f"{img_s:.0f}")
            if cfg.train.progress and not tty and run.ranks.main:  # a log file gets a line per logged step, not a bar
                print(f"epoch {epoch} step {i + 1}/{steps}  loss {row['loss']:.4f} acc {row['acc']:.2f}  "
                      f"{img_s:.0f} img/s", file=sys.stderr)
        if (logged or not run.ranks.parallel) and distributed.any_(stop.requested, run.ranks, run.device):
            return None  # (several ranks agree at logged steps, so that all stop at the same one)
    loss_sum, correct, seen = distributed.sum_(total, run.ranks).tolist()
    if not math.isfinite(loss_sum) and stops:
        return None
    seconds = time.perf_counter() - start
    return {"epoch": epoch, "step": run.step, "lr": epoch_lr, "train_loss": loss_sum / seen,
            "train_acc": 100 * correct / seen, "seconds": seconds, "images_per_s": seen / seconds}


@torch.no_grad()
def _evaluate(run: Run) -> dict:
    """Test loss and accuracy; several ranks each evaluate their share with rank 0's running statistics."""
    distributed.share_buffers(run.model, run.ranks)
    run.model.eval()
    total = torch.zeros(3, device=run.device)
    for x, y in run.data.test.epoch(0):
        with run.autocast():
            out = run.eval_forward(x)
        total += torch.stack([F.cross_entropy(out.float(), y, reduction="sum"), (out.argmax(1) == y).sum().float(),
                              torch.tensor(float(len(y)), device=run.device)])
    run.model.train()
    loss_sum, correct, seen = distributed.sum_(total, run.ranks).tolist()
    return {"test_loss": loss_sum / seen, "test_acc": 100 * correct / seen}


def _state(run: Run, epoch: int) -> dict:
    return {"epoch": epoch, "step": run.step, "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict(), "rng": checkpoint.rng_state()}


def _restore(run: Run, state: dict) -> int:
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    checkpoint.set_rng_state(state["rng"])
    run.step = state["step"]
    run.logger.resume_from(state["epoch"])
    return state["epoch"]


def _stop(run: Run, status: str, epoch: int) -> dict:
    epochs = run.logger.rows["epochs"]
    final = {"status": status, "epoch": epoch, **(epochs[-1] if epochs else {}), "step": run.step}
    if status == "diverged" and run.ranks.main:
        print(f"run diverged at epoch {epoch}, step {run.step} (loss not finite); "
              f"marked diverged in {run.logger.run_dir / runs.META}", file=sys.stderr)
    if run.ranks.main:  # tables first, then the record that they are final, with their manifest
        run.logger.flush()
        runs.write_meta(run.logger.run_dir, status=status, final=final,
                        **{runs.MANIFEST_KEY: runs.manifest(run.logger.run_dir)})
    run.logger.finish(final, flush=False)
    return final
