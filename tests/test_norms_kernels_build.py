"""The C++ CPU kernels are built once per machine, visibly: the cache is keyed by what determines
the binary (sources, torch, Python ABI, compiler, flags, CPU), never by the checkout's or the
environment's paths, so a second clone imports the cached binary; a build prints one line; a
machine without a compiler gets one warning and the Python path."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO
from normmatters.norms import build_norm, kernels

SOURCES = REPO / "normmatters" / "norms" / "kernels"


@pytest.fixture(scope="module")
def built() -> Path:
    """The cached binary of this checkout (built now if this machine has none)."""
    if kernels.cpu_module() is None:
        pytest.skip("no C++ toolchain: the CPU kernels could not be built")
    library = kernels.cache_dir() / kernels.LIBRARY
    assert library.is_file()
    return library


def _fresh_state(monkeypatch):
    monkeypatch.setattr(kernels, "_cpu_module", None)
    monkeypatch.setattr(kernels, "_cpu_failed", False)
    monkeypatch.setattr(kernels, "_cpu_built", False)
    monkeypatch.delenv("NM_KERNELS", raising=False)


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NM_KERNELS")}
    return {**env, **extra}


def test_cache_key_is_the_sources_not_their_path(tmp_path):
    a, b = tmp_path / "clone_a", tmp_path / "elsewhere" / "clone_b"
    for where in (a, b):
        shutil.copytree(SOURCES, where, ignore=shutil.ignore_patterns("__pycache__"))
    assert kernels.cache_key(a) == kernels.cache_key(b) == kernels.cache_key()
    (b / "cpu_lp.h").write_text((b / "cpu_lp.h").read_text() + "\n// changed\n")
    assert kernels.cache_key(b) != kernels.cache_key(a)
    assert str(REPO) not in str(kernels.cache_dir()) and sys.prefix not in str(kernels.cache_dir())


@pytest.mark.parametrize("what", ["compiler", "flags", "torch"])
def test_cache_key_changes_with_what_makes_the_binary(monkeypatch, what):
    before = kernels.cache_key()
    if what == "compiler":
        monkeypatch.setattr(kernels, "_compiler_identity", lambda: "c++ (GCC) 99.0")
    elif what == "flags":
        monkeypatch.setattr(kernels, "_flags", lambda: (["-O2"], []))
    else:
        monkeypatch.setattr(torch, "__version__", "0.0.0")
    assert kernels.cache_key() != before


def test_a_second_clone_imports_the_cached_binary_without_building(built, tmp_path):
    """Another checkout of the package at another path (and no build files of its own) trains its
    first L1 step with the C++ kernels, importing the binary this checkout built."""
    clone = tmp_path / "second clone"
    shutil.copytree(REPO / "normmatters", clone / "normmatters", ignore=shutil.ignore_patterns("__pycache__"))
    stamp = built.stat().st_mtime_ns
    code = ("import torch, torch.nn as nn, normmatters\n"
            "from normmatters.norms import build_norm, kernels\n"
            "m = nn.Sequential(nn.Conv2d(3, 8, 3), build_norm('l1', 8), nn.ReLU(inplace=True))\n"
            "m(torch.randn(4, 3, 8, 8)).sum().backward()\n"
            "print(normmatters.__file__, kernels.backend('cpu'), kernels._cpu_built, kernels.cache_dir(), sep='|')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=_clean_env(PYTHONPATH=str(clone)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    where, backend, built_now, cache = proc.stdout.strip().split("|")
    assert where.startswith(str(clone)) and backend == "cpp" and built_now == "False"
    assert Path(cache) == built.parent
    assert "building" not in proc.stderr
    assert built.stat().st_mtime_ns == stamp


def test_a_build_prints_one_line_and_publishes_the_binary(built, monkeypatch, tmp_path, capsys):
    """No cached binary: cpu_module() announces the build in one line, puts the binary in the keyed
    folder, and a later process imports it from there. (torch's loader is replaced by a copy of the
    real binary, so this takes no compiler time.)"""
    import torch.utils.cpp_extension as ext

    def fake_load(name, sources, extra_cflags, extra_ldflags, build_directory, verbose):
        assert name == kernels.NAME and {Path(s).name for s in sources} == {"cpu_lp_forward.cpp", "cpu_lp_backward.cpp"}
        shutil.copyfile(built, Path(build_directory) / kernels.LIBRARY)
        return kernels._import(Path(build_directory) / kernels.LIBRARY)

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(ext, "load", fake_load)
    _fresh_state(monkeypatch)
    capsys.readouterr()  # what importing torch's loader above may have logged
    assert kernels.backend("cpu") == "cpp" and kernels._cpu_built
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("normmatters: building the C++ CPU kernels"), err
    assert (tmp_path / f"{kernels.NAME}_{kernels.cache_key()}" / kernels.LIBRARY).is_file()

    monkeypatch.setattr(ext, "load", lambda *a, **k: pytest.fail("rebuilt although the binary is cached"))
    _fresh_state(monkeypatch)
    assert kernels.backend("cpu") == "cpp" and not kernels._cpu_built
    assert capsys.readouterr().err == ""
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    build_norm("l1", 3)(x).square().sum().backward()
    assert torch.isfinite(x.grad).all()


def test_setup_without_a_compiler_warns_once_and_succeeds(tmp_path):
    """`python -m normmatters.norms.kernels` (what `make setup` runs) on a machine without a
    compiler: one warning, the Python path, exit status 0."""
    env = _clean_env(PYTHONPATH=str(REPO), TORCH_EXTENSIONS_DIR=str(tmp_path), CXX=str(tmp_path / "no-such-c++"))
    proc = subprocess.run([sys.executable, "-m", "normmatters.norms.kernels"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warned = [line for line in proc.stderr.splitlines() if "RuntimeWarning" in line]
    assert len(warned) == 1 and "the C++ CPU kernels unavailable (OSError: no C++ compiler" in warned[0], proc.stderr
    assert "runs use the Python fused path" in proc.stderr and "building" not in proc.stderr


def test_setup_finds_the_cached_binary(built):
    proc = subprocess.run([sys.executable, "-m", "normmatters.norms.kernels"], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=_clean_env(PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == f"normmatters: C++ CPU kernels ready in {built.parent}"
    assert "building" not in proc.stderr


def test_the_train_loop_loads_the_kernels_before_training(monkeypatch):
    from normmatters.norms import prepare_kernels

    calls = []
    monkeypatch.setattr(kernels, "backend", lambda device_type: calls.append(device_type) or "cpp")
    assert prepare_kernels(torch.nn.Sequential(build_norm("l2", 3)), "cpu") is None
    assert prepare_kernels(torch.nn.Sequential(build_norm("l1", 3, fused=False)), "cpu") is None
    assert prepare_kernels(torch.nn.Sequential(build_norm("topk", 3)), "cpu") == "cpp" and calls == ["cpu"]
