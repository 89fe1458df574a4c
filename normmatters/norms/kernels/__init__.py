"""Fused Lp batch-norm kernels: which one runs (``forward``, ``backward``), and the CPU extension's
build, cache and fallback. Three backends with one interface, the code path given as an id of
``kinds.KERNELS``:

- CUDA tensors: the Triton kernels (``triton_lp.py``) when Triton imports, else the Python path.
- CPU tensors: the C++ extension (``cpu_lp.h``, ``cpu_lp_forward.cpp``, ``cpu_lp_backward.cpp``),
  built with PyTorch's own tooling (``torch.utils.cpp_extension.load``, which needs ninja) once per
  machine: ``make setup`` builds it (``python -m normmatters.norms.kernels``), and a process that
  finds none builds it on first use, printing one line (about a minute). Its code-path ids come
  from ``kinds.KERNELS`` as compile-time defines (part of the flags, hence of the cache key).
- Anything else, or when those are unavailable: PyTorch ops (``python_lp.py``).

The cache: ``$TORCH_EXTENSIONS_DIR`` or ``~/.cache/normmatters/torch_extensions``, one folder per
binary, ``nm_cpu_lp_<key>``, the key a hash of what determines the binary and nothing else: the
sources' contents, PyTorch's version (and C++ ABI), Python's extension ABI, the compiler's
identity (``$CXX --version``), the flags (with the code-path ids) and the CPU (the build uses -march=native). Not the paths
of the checkout or of the virtual environment: a second clone, or a fresh environment with the same
PyTorch, imports the cached ``nm_cpu_lp.so`` directly. (torch's own cache would rebuild it there:
its build files, which it checks, name the include paths of the environment that built it.)
Without a compiler or ninja, or when the build fails, one warning is printed and the Python fused
path (``python_lp.py``) runs instead.

``NM_KERNELS=python`` forces the Python path (for comparisons); ``NM_KERNELS=native`` makes a
missing kernel an error instead of a warning (CI of the kernels themselves).
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import sysconfig
import warnings
from pathlib import Path

from ..kinds import KERNELS
from . import python_lp

_HERE = Path(__file__).resolve().parent
SOURCES = ("cpu_lp.h", "cpu_lp_forward.cpp", "cpu_lp_backward.cpp")
NAME = "nm_cpu_lp"
LIBRARY = NAME + ".so"  # the cached binary, in its keyed folder
_cpu_module = None
_cpu_failed = False
_cpu_built = False  # whether this process compiled the extension (False: imported from the cache)
_triton = None
_triton_failed = False


def _mode() -> str:
    mode = os.environ.get("NM_KERNELS", "auto").strip().lower()
    if mode not in ("auto", "python", "native"):
        raise ValueError(f"NM_KERNELS={mode!r} is invalid; valid: auto, python, native")
    return mode


def _flags() -> tuple[list[str], list[str]]:
    native = "-march=native" if platform.machine() in ("x86_64", "AMD64") else "-mcpu=native"
    ids = [f"-DNMLP_KERNEL_{name}={value}" for name, value in KERNELS.items()]  # cpu_lp.h's enum
    return ["-O3", "-fopenmp", native, *ids], ["-fopenmp"]


def _cpu_identity() -> str:
    """-march=native: the binary is specific to the CPU's features."""
    text = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features", "model name")):
                return text + line  # every core lists the same; the first is enough
    except OSError:
        pass
    return text + platform.processor()


def _compiler_identity() -> str:
    """What `$CXX --version` prints (torch's loader compiles with $CXX, default c++)."""
    cxx = os.environ.get("CXX", "c++")
    try:
        done = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30)
        return f"{cxx}: {done.stdout}"
    except (OSError, subprocess.SubprocessError):
        return f"{cxx}: none"


def cache_key(sources_dir: Path = _HERE) -> str:
    """Hash of what determines the binary (sources, torch, Python ABI, compiler, flags, CPU); no paths."""
    import torch

    cflags, ldflags = _flags()
    parts = [(sources_dir / s).read_bytes() for s in SOURCES]
    parts += [str(x).encode() for x in (
        torch.__version__, torch.version.git_version, torch._C._GLIBCXX_USE_CXX11_ABI,
        sysconfig.get_config_var("EXT_SUFFIX"), sys.implementation.cache_tag,
        _compiler_identity(), cflags, ldflags, _cpu_identity())]
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "little") + part)
    return digest.hexdigest()[:16]


def cache_root() -> Path:
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    return Path(root) if root else Path.home() / ".cache" / "normmatters" / "torch_extensions"


def cache_dir() -> Path:
    """The folder of this machine's binary: cache_root()/nm_cpu_lp_<cache_key()>."""
    return cache_root() / f"{NAME}_{cache_key()}"


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


def _import(library: Path):
    spec = importlib.util.spec_from_file_location(NAME, library)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(folder: Path):
    """Compile into folder/build (torch's loader, which locks it against a concurrent build), then
    publish folder/nm_cpu_lp.so atomically; returns the module torch's loader imported."""
    quiet = logging.getLogger("torch.utils.cpp_extension")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its import warns of a missing CUDA runtime: irrelevant to a CPU build
    try:
        from torch.utils.cpp_extension import load
    finally:
        quiet.setLevel(level)

    _find_ninja()
    cxx = os.environ.get("CXX", "c++")
    for tool, what in ((shlex.split(cxx)[0] if cxx.strip() else "c++", "C++ compiler"), ("ninja", "ninja")):
        if shutil.which(tool) is None:  # the one warning, without announcing a build that cannot run
            raise OSError(f"no {what} ({tool} not found)")
    build = folder / "build"
    build.mkdir(parents=True, exist_ok=True)
    print(f"normmatters: building the C++ CPU kernels, once for this machine and PyTorch (about a minute), "
          f"into {folder}", file=sys.stderr, flush=True)
    cflags, ldflags = _flags()
    module = load(name=NAME, sources=[str(_HERE / s) for s in SOURCES if s.endswith(".cpp")],
                  extra_cflags=cflags, extra_ldflags=ldflags, build_directory=str(build), verbose=False)
    temp = folder / f".{LIBRARY}.{os.getpid()}.tmp"
    shutil.copyfile(build / LIBRARY, temp)
    os.replace(temp, folder / LIBRARY)
    return module


def cpu_module():
    """The compiled CPU extension, or None (Python fallback): imported from the cache, or built once
    (per machine, torch, compiler and sources) and cached; never fatal outside NM_KERNELS=native."""
    global _cpu_module, _cpu_failed, _cpu_built
    if _mode() == "python":
        return None
    if _cpu_module is not None or _cpu_failed:
        return _cpu_module
    try:
        folder = cache_dir()
        library = folder / LIBRARY
        if library.exists():
            try:
                _cpu_module = _import(library)
                return _cpu_module
            except ImportError:  # a damaged file: build it again
                library.unlink(missing_ok=True)
        _cpu_module = _build(folder)
        _cpu_built = True
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


def _module(device_type: str):
    which = backend(device_type)
    return cpu_module() if which == "cpp" else triton_module() if which == "triton" else python_lp


def forward(xv, weight, bias, kernel: int, eps: float, constant: float, k: int, batch: int, out=None):
    """(y, mean, scale, aux, idx) of code path ``kernel`` on a canonical view (``lp_ops.py``), by the
    backend of its device; y is ``out`` when given."""
    return tuple(_module(xv.device.type).forward(xv, weight, bias, kernel, eps, constant, k, batch, out))


def backward(dy, xv, mu, scale, weight, aux, idx, kernel: int, eps: float, constant: float, k: int, batch: int):
    """(dx, dweight, dbias) of ``forward``'s output gradient dy (dweight None without weight)."""
    module = _module(dy.device.type)
    return tuple(module.backward(dy, xv, mu, scale, weight, aux, idx, kernel, eps, constant, k, batch))
