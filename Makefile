# Every target that runs code depends on `setup`, so a fresh clone needs nothing else.
PY_SYS ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true
export HYDRA_FULL_ERROR ?= 0

.PHONY: setup test bench bench-train bench-gpu train reproduce-cifar figures notebooks clean

KERNELS := $(VENV)/.kernels
KERNEL_SOURCES := $(wildcard normmatters/norms/kernels/*.cpp normmatters/norms/kernels/*.h)

setup: $(STAMP) $(KERNELS)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PY_SYS) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# the C++ CPU kernels, built here once per machine and PyTorch so that no run pays for it (a second
# clone finds them in ~/.cache/normmatters); without a compiler: one warning, runs use the Python path
$(KERNELS): $(STAMP) $(KERNEL_SOURCES)
	$(PY) -m normmatters.norms.kernels
	touch $(KERNELS)

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) -m normmatters.bench.norms $(ARGS)

bench-train: setup
	$(PY) scripts/bench_train.py $(ARGS)

# the prepared GPU measurement (about 8 minutes; writes results/bench/gpu-<card>-<date>.md)
bench-gpu: setup
	$(PY) scripts/bench_gpu.py $(ARGS)

train: setup
	$(PY) scripts/train.py $(ARGS)

# every CIFAR experiment (PAPER.md §2, §3-5), then their figures and REPORT.md; paper profile with CUDA,
# cpu otherwise (ARGS="--profile cpu --seeds 0-3 --dry-run ..." to choose)
reproduce-cifar: setup
	$(PY) scripts/reproduce.py --experiment wd_vgg11,norms_cifar,half_precision_probe,float_formats $(ARGS)

figures: setup
	$(PY) scripts/plot.py $(ARGS)

notebooks: setup figures
	$(VENV)/bin/jupyter execute --inplace notebooks/*.ipynb

clean:
	rm -rf outputs .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
