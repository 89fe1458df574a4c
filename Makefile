# Every target that runs code depends on `setup`, so a fresh clone needs nothing else.
PY_SYS ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true
export HYDRA_FULL_ERROR ?= 0

.PHONY: setup test test-all docs lint bench bench-train bench-gpu train reproduce-cifar verify figures notebooks clean

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

# the fast suite (a few minutes): unit tests and one end-to-end training run; tests marked `slow`
# (pyproject.toml) are left to test-all
test: setup lint
	$(PY) -m pytest -q -m "not slow" tests

# everything: every test (the fresh install from pyproject.toml too where NM_TEST_INSTALL=1, as
# .ci/run sets) and the documentation site with its links checked; what CI runs
test-all: setup lint docs
	$(PY) -m pytest -q tests

# the manual (docs/, mkdocs.yml) as a site in site/; --strict: a broken link or anchor fails
docs: setup
	$(VENV)/bin/mkdocs build --strict --quiet

# ruff's lint rules (pyproject.toml [tool.ruff]); a second or so, so CI runs it before the tests
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/nbstripout --verify notebooks/*.ipynb

bench: setup
	$(PY) -m benchmarks.norms $(ARGS)

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

# every run under results/ still matches the manifest it recorded when it finished
verify: setup
	$(PY) scripts/verify_runs.py results

figures: setup verify
	$(PY) scripts/plot.py $(if $(ARGS),$(ARGS),results --readme README.md --docs docs/results.md)

# executed copies go to outputs/notebooks/ (ignored by git): the tracked notebooks keep no outputs,
# so running them never dirties the tree
notebooks: setup figures
	mkdir -p outputs/notebooks
	$(VENV)/bin/jupyter execute notebooks/*.ipynb --output='../outputs/notebooks/{notebook_name}'

clean:
	rm -rf outputs .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
