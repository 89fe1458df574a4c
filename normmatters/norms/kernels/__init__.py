"""Fused Lp batch-norm kernels: which one runs, and the CPU extension's build and fallback.

- CUDA tensors: the Triton kernels (``triton_lp.py``) when Triton imports, else the Python path.
- CPU tensors: the C++ extension (``cpu_lp.h``, ``cpu_lp_forward.cpp``, ``cpu_lp_backward.cpp``),
  compiled with PyTorch's own tooling (``torch.utils.cpp_extension.load``, which needs ninja) on
  first use, about a minute, then cached under ``$TORCH_EXTENSIONS_DIR`` or
  ``~/.cache/normmatters/torch_extensions`` in a directory named after the sources and the CPU
  (the build uses -march=native). Without a compiler or ninja, or when the build fails, one
  warning is printed and the Python fused path (``fused.py``) runs instead.

``NM_KERNELS=python`` forces the Python path (for comparisons); ``NM_KERNELS=native`` makes a
missing kernel an error instead of a warning (CI of the kernels themselves).
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import sys
import warnings
from pathlib import Path

_HERE = Path(__file__).resolve().parent
SOURCES = ("cpu_lp.h", "cpu_lp_forward.cpp", "cpu_lp_backward.cpp")
_cpu_module = None
_cpu_failed = False
_triton = None
_triton_failed = False


def _mode() -> str:
    mode = os.environ.get("NM_KERNELS", "auto").strip().lower()
    if mode not in ("auto", "python", "native"):
        raise ValueError(f"NM_KERNELS={mode!r} is invalid; valid: auto, python, native")
    return mode


def _cpu_tag() -> str:
    """The build uses -march=native, so a cached build is keyed by the CPU it was built for."""
    flags = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features", "model name")):
                flags += line
    except OSError:
        flags += platform.processor()
    src = "".join((_HERE / s).read_text() for s in SOURCES)
    return hashlib.sha1((flags + src).encode()).hexdigest()[:10]


def _build_dir() -> Path:
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "normmatters" / "torch_extensions"
    path = base / f"nm_cpu_lp_{_cpu_tag()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _fail(what: str, err: Exception) -> None:
    if _mode() == "native":
        raise RuntimeError(f"{what} unavailable (NM_KERNELS=native): {err}") from err
    first = str(err).splitlines()[0] if str(err) else ""
    warnings.warn(f"normmatters: {what} unavailable ({type(err).__name__}: {first}); using the slower Python fused "
                  "path", RuntimeWarning, stacklevel=3)


def _find_ninja() -> None:
    """torch runs `ninja` from PATH; pip installs it next to the interpreter, which is not on PATH
    when a virtual environment's python is run without activating it."""
    here = Path(sys.executable).parent
    if shutil.which("ninja") is None and (here / "ninja").exists():
        os.environ["PATH"] = f"{here}{os.pathsep}{os.environ.get('PATH', '')}"


def cpu_module():
    """The compiled CPU extension, or None (Python fallback); builds once per process and cache dir."""
    global _cpu_module, _cpu_failed
    if _mode() == "python":
        return None
    if _cpu_module is not None or _cpu_failed:
        return _cpu_module
    try:
        from torch.utils.cpp_extension import load

        _find_ninja()
        native = "-march=native" if platform.machine() in ("x86_64", "AMD64") else "-mcpu=native"
        _cpu_module = load(name="nm_cpu_lp", sources=[str(_HERE / s) for s in SOURCES if s.endswith(".cpp")],
                           extra_cflags=["-O3", "-fopenmp", native], extra_ldflags=["-fopenmp"],
                           build_directory=str(_build_dir()), verbose=False)
    except Exception as err:  # no compiler, no ninja, a build error: never fatal
        _cpu_failed = True
        _fail("the C++ CPU kernels", err)
    return _cpu_module


def triton_module():
    """The Triton kernels module, or None when Triton cannot be imported."""
    global _triton, _triton_failed
    if _mode() == "python":
        return None
    if _triton is not None or _triton_failed:
        return _triton
    try:
        from . import triton_lp
        _triton = triton_lp
    except Exception as err:
        _triton_failed = True
        _fail("the Triton GPU kernels", err)
    return _triton


def backend(device_type: str) -> str:
    """'cpp', 'triton' or 'python': what runs a fused norm on this device type."""
    if device_type == "cpu":
        return "cpp" if cpu_module() is not None else "python"
    if device_type == "cuda":
        return "triton" if triton_module() is not None else "python"
    return "python"
