"""The training system end to end: real Hydra, real runs of scripts/train.py, real files, wandb offline."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import CONFIGS, REPO, run_dir_of
from normmatters import runs
from normmatters.cli import run_or_exit
from normmatters.train import train

GROUPS = sorted(p.name for p in CONFIGS.iterdir() if p.is_dir() and p.name != "experiment")  # experiment files, not a group


def tiny(data: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.path={data}", f"out_root={out}", f"data.cache_dir={out}/cache", "profile=smoke",
            "model=resnet20", "data.batch_size=32", "data.test_batch_size=64", "train.progress=false",
            "data.train_subset=null", *extra]


def run_script(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONHASHSEED": "0"}
    return subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, **kwargs)


@pytest.mark.parametrize("group", GROUPS)
def test_every_config_of_every_group_composes(compose, group):
    options = sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))
    assert options, f"configs/{group} is empty"
    for option in options:
        cfg = compose([f"{group}={option}"])
        assert str(run_dir_of(cfg)).startswith(cfg.out_root)
        assert cfg.model.name and cfg.norm.kind and cfg.data.name


def test_profiles_change_scale(compose):
    paper, cpu = compose(["profile=paper"]), compose(["profile=cpu"])
    assert (paper.model.width, paper.data.train_subset, paper.train.epochs) == (1.0, None, 80)
    assert (cpu.model.width, cpu.data.train_subset, cpu.train.epochs) == (0.25, 20000, 30)
    assert list(cpu.optim.milestones) == [7, 15, 22]


@pytest.fixture(scope="module")
def finished_run(tiny_cifar, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    proc = run_script(tiny(tiny_cifar, out, "train.epochs=3", "name=e2e"))
    assert proc.returncode == 0, proc.stderr
    run_dirs = list((out / "e2e").iterdir())
    assert len(run_dirs) == 1
    return run_dirs[0], proc


def test_end_to_end_run_writes_tables(finished_run):
    run_dir, proc = finished_run
    assert "epoch 3/3" in proc.stderr
    epochs = runs.read_table(run_dir, "epochs")
    assert list(epochs["epoch"]) == [1, 2, 3]
    assert {"train_loss", "train_acc", "test_loss", "test_acc", "lr", "images_per_s"} <= set(epochs.columns)
    assert epochs["test_acc"].between(0, 100).all() and (epochs["train_loss"] > 0).all()
    assert epochs["lr"].iloc[0] == pytest.approx(0.1) and epochs["lr"].iloc[-1] == pytest.approx(0.01)
    layers = runs.read_table(run_dir, "layers")
    assert {"param", "norm", "channel_norm_mean", "eff_step", "angle", "lr"} <= set(layers.columns)
    assert (layers["norm"] > 0).all() and (layers["eff_step"] > 0).all() and (layers["angle"] > 0).all()
    assert not layers["param"].str.startswith("classifier").any()
    channels = runs.read_table(run_dir, "channels")
    assert sorted(channels["epoch"].unique()) == [0, 1, 2, 3]
    assert (channels["norm"] > 0).all()
    norms = runs.channel_norms(run_dir)
    assert set(norms[0]) == set(layers["param"])
    steps = runs.read_table(run_dir, "steps")
    assert {"loss", "acc", "lr"} <= set(steps.columns) and len(steps) > 0


def test_run_records_provenance_and_wandb_offline(finished_run):
    run_dir, _ = finished_run
    meta = runs.read_meta(run_dir)
    assert meta["status"] == "finished" and meta["seed"] == 0 and meta["profile"] == "smoke"
    assert meta["num_train"] == 240 and meta["num_test"] == 80 and meta["data_label"]
    assert meta["git_commit"] and meta["final"]["epoch"] == 3
    assert meta["threads"] >= 1 and meta["torch"]  # bit-identical metrics hold per thread count
    assert meta["hardware"].endswith(f"CPU, {torch.backends.cpu.get_cpu_capability()} kernels")  # ... and per kernel level
    assert (run_dir / "config.yaml").read_text().count("resnet20") >= 1
    wandb_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 1 and meta["wandb_id"] in wandb_runs[0].name
    assert list(wandb_runs[0].glob("*.wandb"))


def test_finished_run_is_not_rerun(finished_run, tiny_cifar):
    run_dir, _ = finished_run
    before = (run_dir / "epochs.parquet").stat().st_mtime_ns
    out = run_dir.parents[1]
    proc = run_script(tiny(tiny_cifar, out, "train.epochs=3", "name=e2e"))
    assert proc.returncode == 0 and "already finished" in proc.stderr
    assert (run_dir / "epochs.parquet").stat().st_mtime_ns == before


@pytest.mark.slow
def test_killed_run_resumes_to_identical_metrics(finished_run, tiny_cifar, tmp_path):
    reference, _ = finished_run
    args = tiny(tiny_cifar, tmp_path, "train.epochs=3", "name=e2e")
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "train.py"), *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = tmp_path / "e2e" / reference.name
    deadline = time.time() + 300
    while not (run_dir / runs.CHECKPOINT).exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # somewhere in epoch 2
    proc.wait()
    assert runs.status(run_dir) == "running", "the run finished before it could be killed"
    runs.write_meta(run_dir, git_commit="0" * 40)  # as if it had started at another commit
    resumed = run_script(args)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    meta = runs.read_meta(run_dir)  # provenance: the start commit, and the one that resumed it
    assert meta["git_commit"] == "0" * 40 and meta["resumed_with"] == [runs.read_meta(reference)["git_commit"]]
    pd.testing.assert_frame_equal(
        runs.read_table(run_dir, "epochs").drop(columns=["seconds", "images_per_s"]),
        runs.read_table(reference, "epochs").drop(columns=["seconds", "images_per_s"]))
    pd.testing.assert_frame_equal(runs.read_table(run_dir, "channels"), runs.read_table(reference, "channels"))


@pytest.mark.slow
def test_sigterm_marks_the_run_interrupted_and_it_resumes_to_identical_metrics(finished_run, tiny_cifar,
                                                                               tmp_path):
    """The data comes from the DATA variable, as with `DATA=... make ...`: the printed resume command
    must carry it and the interpreter that ran, and running it as printed finishes the same run."""
    reference, _ = finished_run
    args = [a for a in tiny(tiny_cifar, tmp_path, "train.epochs=3", "name=e2e") if not a.startswith("data.path=")]
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONHASHSEED": "0", "DATA": str(tiny_cifar)}
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "train.py"), *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "e2e" / reference.name
    deadline = time.time() + 300
    while not (run_dir / runs.CHECKPOINT).exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)  # somewhere in epoch 2
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert runs.status(run_dir) == "interrupted", "the run finished before it could be stopped"
    last = err.strip().splitlines()[-1]
    assert last.startswith("SIGTERM: stopped during epoch") and "resumes after epoch" in last and "train.py" in last
    command = last.split(" with: ", 1)[1]
    assert command.startswith(f"DATA={tiny_cifar} {sys.executable} "), command
    del env["DATA"]  # a fresh shell: only what the command says
    resumed = subprocess.run(["bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr and runs.status(run_dir) == "finished"
    pd.testing.assert_frame_equal(
        runs.read_table(run_dir, "epochs").drop(columns=["seconds", "images_per_s"]),
        runs.read_table(reference, "epochs").drop(columns=["seconds", "images_per_s"]))


def test_corrupt_checkpoint_is_one_line(finished_run, tiny_cifar, tmp_path):
    reference, _ = finished_run
    run_dir = tmp_path / "e2e" / reference.name
    shutil.copytree(reference, run_dir)
    runs.write_meta(run_dir, status="interrupted")
    data = (reference / runs.CHECKPOINT).read_bytes()
    (run_dir / runs.CHECKPOINT).write_bytes(data[: len(data) // 3])
    proc = run_script(tiny(tiny_cifar, tmp_path, "train.epochs=3", "name=e2e"))
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err.startswith("error: checkpoint ") and "delete it" in err and "\n" not in err
    assert runs.status(run_dir) == "interrupted"  # nothing was rewritten


def test_moved_run_directory_is_still_skipped_and_files_are_readable(finished_run, tiny_cifar, tmp_path):
    reference, _ = finished_run
    moved = tmp_path / "elsewhere"
    shutil.copytree(reference.parent.parent, moved)  # another out_root, and another data cache
    before = (moved / "e2e" / reference.name / "epochs.parquet").stat().st_mtime_ns
    proc = run_script(tiny(tiny_cifar, moved, "train.epochs=3", "name=e2e", f"data.cache_dir={tmp_path}/cache2"))
    assert proc.returncode == 0, proc.stderr
    assert "already finished" in proc.stderr
    assert (moved / "e2e" / reference.name / "epochs.parquet").stat().st_mtime_ns == before
    for name in (runs.CONFIG, runs.META, "epochs.parquet"):  # the user's umask, not mkstemp's 0600
        mode = (reference / name).stat().st_mode & 0o777
        assert mode == 0o666 & ~current_umask(), (name, oct(mode))


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_stale_temp_files_are_removed_on_the_next_start(tiny_cifar, tmp_path, compose):
    cfg = compose(tiny(tiny_cifar, tmp_path, "train.epochs=1", "wandb.mode=disabled"))
    stale = Path(run_dir_of(cfg)) / ".epochs.parquet.abc123.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half")
    train(cfg)
    assert not stale.exists() and runs.status(run_dir_of(cfg)) == "finished"


def test_same_seed_is_bit_identical_in_process(tiny_cifar, tmp_path, compose):
    finals = []
    for sub in ("a", "b"):
        cfg = compose(tiny(tiny_cifar, tmp_path / sub, "train.epochs=1", "wandb.mode=disabled",
                           "model=vgg11", "norm=l1"))
        finals.append(train(cfg))
    for key in ("train_loss", "test_loss", "test_acc"):
        assert finals[0][key] == finals[1][key]


def subnormals_flushed() -> bool:
    return (torch.tensor([1e-40]) * 1.0).item() == 0.0


def test_flush_denormal_holds_for_the_run_only(tiny_cifar, tmp_path, compose):
    torch.set_flush_denormal(False)  # conftest turns it on for the whole process
    try:
        assert not subnormals_flushed()
        cfg = compose(tiny(tiny_cifar, tmp_path, "train.epochs=1", "wandb.mode=disabled", "train.flush_denormal=true"))
        assert train(cfg)["status"] == "finished"
        assert not subnormals_flushed()  # the next run of this process gets exact IEEE arithmetic again
    finally:
        torch.set_flush_denormal(True)


def test_other_config_in_same_run_dir_is_refused(finished_run, tiny_cifar, compose):
    run_dir, _ = finished_run
    cfg = compose(tiny(tiny_cifar, run_dir.parents[1], "train.epochs=3", "name=e2e", f"run_dir={run_dir}",
                       "optim.momentum=0.5"))
    with pytest.raises(ValueError, match="another config .*optim.momentum"):
        train(cfg)


def test_diverged_run_is_marked_not_crashed(tiny_cifar, tmp_path, compose):
    cfg = compose(tiny(tiny_cifar, tmp_path, "optim.lr=1e30", "wandb.mode=disabled", "train.epochs=2"))
    final = train(cfg)
    assert final["status"] == "diverged"
    assert runs.status(run_dir_of(cfg)) == "diverged"
    assert train(cfg)["status"] == "diverged"  # and it is not re-run


def test_unwritable_output_dir(tiny_cifar, tmp_path, compose, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cfg = compose([*tiny(tiny_cifar, blocker / "out"), "wandb.mode=disabled"])
    with pytest.raises(SystemExit):
        run_or_exit(train, cfg)
    assert "not writable" in capsys.readouterr().err


@pytest.mark.parametrize("problem", ["empty", "corrupt"])
def test_bad_data_root(tmp_path, compose, capsys, problem):
    from conftest import make_image_folder

    root = make_image_folder(tmp_path / "data", train_per_class=2, test_per_class=1)
    if problem == "empty":
        for f in root.rglob("*.png"):
            f.unlink()
    else:
        (root / "train" / "cat" / "0001.png").write_bytes(b"not an image")
    cfg = compose([*tiny(root, tmp_path / "out"), "wandb.mode=disabled"])
    with pytest.raises(SystemExit):
        run_or_exit(train, cfg)
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    if problem == "corrupt":
        assert "0001.png" in err
    assert not (tmp_path / "out" / "train").exists()


def test_unknown_group_option_fails_in_script(tmp_path):
    proc = run_script(["model=resnet7", f"out_root={tmp_path}"])
    assert proc.returncode != 0
    assert "resnet7" in proc.stderr and "Available options" in proc.stderr


@pytest.mark.slow
def test_multirun_sweep_with_basic_launcher(tiny_cifar, tmp_path):
    proc = run_script(["-m", *tiny(tiny_cifar, tmp_path, "train.epochs=1", "name=sweep"), "norm=l2,l1"])
    assert proc.returncode == 0, proc.stderr
    run_dirs = sorted(p.name for p in (tmp_path / "sweep").iterdir())
    assert len(run_dirs) == 2 and any("_l1_" in d for d in run_dirs) and any("_l2_" in d for d in run_dirs)
    for d in run_dirs:
        assert runs.status(tmp_path / "sweep" / d) == "finished"


@pytest.mark.slow
def test_sweep_goes_on_after_a_failing_job_and_summarizes(tiny_cifar, tmp_path):
    proc = run_script(["-m", *tiny(tiny_cifar, tmp_path, "train.epochs=1", "name=sweep"), "optim.lr=0.1,-1,0.05"])
    assert proc.returncode == 1, proc.stderr
    finished = sorted((tmp_path / "sweep").iterdir())
    assert len(finished) == 2 and all(runs.status(d) == "finished" for d in finished)
    (sweep_dir,) = (tmp_path / "multirun").iterdir()
    summary = pd.read_csv(sweep_dir / "summary.csv")
    assert summary["status"].tolist() == ["finished", "failed", "finished"]
    assert "optim.lr=-1" in summary.loc[1, "overrides"] and "optim.lr=-1" in summary.loc[1, "error"]
    assert "1 of 3 jobs failed" in proc.stderr and "sweep summary" in proc.stderr
    # rerun: finished jobs are skipped, the failed one is tried again (and fails again)
    again = run_script(["-m", *tiny(tiny_cifar, tmp_path, "train.epochs=1", "name=sweep"), "optim.lr=0.1,-1,0.05"])
    assert again.returncode == 1 and again.stderr.count("already finished") == 2


def test_slurm_launcher_config_composes(tmp_path):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    assert "submitit" in cfg.hydra.launcher._target_ and cfg.hydra.launcher.partition == "gpu"


@pytest.mark.parametrize("extra", [["train.channels_last=true"], ["precision=bf16"],
                                   ["precision=norm_fp16", "norm=l1"], ["weight_norm=bwn", "norm=mean"]])
def test_training_options_run(tiny_cifar, tmp_path, compose, extra):
    cfg = compose(tiny(tiny_cifar, tmp_path, "train.epochs=1", "wandb.mode=disabled", *extra))
    final = train(cfg)
    assert final["status"] == "finished" and final["train_loss"] > 0
    assert (runs.read_table(run_dir_of(cfg), "channels")["norm"] > 0).all()


def test_per_step_channel_norms_are_logged_on_request(tiny_cifar, tmp_path, compose):
    cfg = compose(tiny(tiny_cifar, tmp_path, "train.epochs=2", "wandb.mode=disabled", "train.log_channels_every=3"))
    train(cfg)
    frame = runs.read_table(run_dir_of(cfg), "channel_steps")
    total = int(runs.read_table(run_dir_of(cfg), "epochs")["step"].max())
    assert sorted(frame["step"].unique()) == list(range(3, total + 1, 3))
    steps, tables = runs.channel_norm_steps(run_dir_of(cfg))
    epoch_rows = runs.channel_norms(run_dir_of(cfg))
    for name, table in tables.items():  # at the last step, the per-step row is the end-of-run row
        if total % 3 == 0:
            assert table[-1].tolist() == pytest.approx(epoch_rows[2][name].tolist(), rel=1e-6)
        assert table.shape == (len(steps), len(epoch_rows[0][name]))


@pytest.mark.slow
@pytest.mark.compile
def test_compiled_training_matches_eager_closely(tiny_cifar, tmp_path, compose):
    finals = {}
    for flag in ("false", "true"):
        cfg = compose(tiny(tiny_cifar, tmp_path / flag, "train.epochs=1", "wandb.mode=disabled", "norm=l1",
                           "optim.lr=0.01", f"train.compile={flag}"))
        finals[flag] = train(cfg)
    assert finals["true"]["status"] == "finished"
    assert finals["true"]["train_loss"] == pytest.approx(finals["false"]["train_loss"], rel=1e-2)
