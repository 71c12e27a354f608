# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv in the repo when it is
# missing and install the project into it (torch 2.13.0 CPU build from local disk; no CUDA download).
# `make test` also builds .venv-mpio (parallel h5py + mpi4py compiled against Debian's Open MPI and
# HDF5-openmpi, installed with apt) and starts a one-node SLURM cluster (slurm-wlm, munge) for the
# duration of the tests; see docs/HPC.md. Debian packages are installed as root, once.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.ldb-hpc-installed
TEST_STAMP := $(VENV)/.ldb-hpc-test-installed
DEMO_OUT := build/demo
MPIO_VENV  := .venv-mpio
MPIO_STAMP := $(MPIO_VENV)/.ldb-hpc-mpio-installed
NOW = $$(date +%s)

.PHONY: demo test install install-mpio slurm-up slurm-down bench-runtime clean-venv help

help:
	@echo "make demo   create .venv, install, backmap the bundled example, print a summary"
	@echo "make test   install test dependencies and run the whole test suite"
	@echo "            (serial, MPI at 2 ranks, parallel HDF5 in $(MPIO_VENV), a local one-node SLURM)"
	@echo "make install-mpio     build $(MPIO_VENV) only (parallel h5py, mpi4py on Open MPI)"
	@echo "make slurm-up / slurm-down   start / stop the local test SLURM cluster"
	@echo "make bench-runtime    memory and MPI-scaling benchmark of backmap (benchmarks/runtime)"
	@echo "make bench-million    1,000,000 frames on 2 ranks, --model ideal and the default model: wall, RSS"
	@echo "                      per rank over time, output size, verify, flagged rows (~1 h; benchmarks/million.py;"
	@echo "                      MILLION_ARGS=--smoke: a minute, into build/bench-million-smoke; --resume goes on)"
	@echo "make bench            all benchmarks + report (benchmarks/README.md, README table; <= 30 min);"
	@echo "                      make bench BENCH_ARGS=--smoke: tiny size into build/bench-smoke (< 2 min)"
	@echo "make bench-startup    start-up (one-frame backmap vs python -c 'import torch') and a folder of 1,000 CASP-sized"
	@echo "                      CA PDBs in one backmap call vs PULCHRA one process per structure (~5 min;"
	@echo "                      benchmarks/startup.py; STARTUP_ARGS=--smoke: a minute); rows to benchmarks/results.csv"
	@echo "make gpu-check PYTHON=/path/to/python3   on a GPU node, no network (< 8 min with the build): a venv on that"
	@echo "                      python's own torch + triton, the rest from WHEELHOUSE (pip --no-index), the C++ build,"
	@echo "                      then benchmarks/gpu_check.py: one PASS/FAIL verdict (docs/HPC.md, GPU node runbook);"
	@echo "                      GPU_CHECK_ARGS='--device cpu': the small CPU variant CI runs; '--append-results': CSV rows"
	@echo "make wheelhouse [WHEEL_PY=3.12 WHEEL_ARCH=x86_64 WHEEL_GLIBC=2.28]   where there is network: the wheel folder"
	@echo "                      gpu-check installs from (build/wheelhouse/cp312-x86_64)"
	@echo "make triton-aot       compile every Triton kernel for sm_90 without a GPU, with .venv's (pinned) triton and"
	@echo "                      with $(TRITON_OLD) (a throwaway venv over .venv), + the interpreter tests under $(TRITON_OLD)"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip "setuptools>=77" wheel

# C++ sources only: kernels/_triton is imported in place by the editable install (an edit needs no reinstall)
KERNEL_SOURCES := $(wildcard kernels/cpu/*.cpp kernels/cpu/*.h kernels/cpu/CMakeLists.txt)

$(STAMP): pyproject.toml CMakeLists.txt $(KERNEL_SOURCES) | $(PY)
	@echo "make: installing into $(VENV)"; t0=$(NOW); \
	$(PIP) install --quiet torch==2.13.0 triton==3.8.0 && \
	$(PIP) install --quiet "scikit-build-core>=0.10" nanobind numpy h5py mdtraj tables gemmi safetensors tqdm vermouth mpi4py mpich && \
	$(PIP) install --quiet --no-build-isolation -e . && \
	echo "ci-time: install-venv $$(( $(NOW) - t0 )) s"
	@touch $@

install: $(STAMP)

$(TEST_STAMP): $(STAMP) Makefile  # the test-install line below is part of what it stamps
	$(PIP) install --quiet "pytest>=7" "pytest-xdist>=3" matplotlib pypulchra "import-linter>=2.1" "ruff>=0.6" \
		"MDAnalysis>=2.7" "netCDF4>=1.6" "openmm>=8.1" "pdbfixer>=1.12"
	bash scripts/ci/apt.sh --no-recommends gromacs
	$(MAKE) --no-print-directory wheelhouse PYTHON=$(PY)  # tests/test_gpu_check.py installs from it offline
	@# matplotlib, pypulchra: the bench smoke test; import-linter, ruff: tests/test_code_quality.py;
	@# MDAnalysis, netCDF4: tests/test_export.py reads every output format back (netCDF4 writes .nc streamed);
	@# openmm: tests/test_hydrogens.py and benchmarks/hydrogens.py (amber14 takes --hydrogens output; not a runtime dependency)
	@# pdbfixer: tests/test_bench_simready.py and benchmarks/simulation_ready.py (the protonated references);
	@# gromacs (Debian's): tests/test_simulation_ready.py (pdb2gmx links exactly the reference's disulfides)
	@touch $@

# Parallel HDF5 venv: ~5 minutes from scratch on 2 cores (mpi4py and h5py are compiled).
$(MPIO_STAMP): pyproject.toml CMakeLists.txt scripts/ci/mpio_venv.sh $(KERNEL_SOURCES)
	@echo "make: building $(MPIO_VENV) (parallel h5py, mpi4py on Open MPI)"; t0=$(NOW); \
	bash scripts/ci/mpio_venv.sh $(MPIO_VENV) $(PYTHON) && \
	echo "ci-time: install-venv-mpio $$(( $(NOW) - t0 )) s"
	@touch $@

install-mpio: $(MPIO_STAMP)

slurm-up:
	bash scripts/ci/slurm.sh start
	@bash scripts/ci/slurm.sh env

slurm-down:
	bash scripts/ci/slurm.sh stop

bench-runtime: $(STAMP)
	$(PY) benchmarks/runtime/bench_runtime.py

# A million frames, measured (benchmarks/million.py): long (~1 h on 2 idle cores, ~2.2 GB of output per run in
# build/bench-million, deleted after); rows go to benchmarks/results.csv, the table to benchmarks/README.md.
.PHONY: bench-million
bench-million: $(STAMP)
	@$(PY) -c "import matplotlib" 2>/dev/null || $(PIP) install --quiet matplotlib
	$(PY) benchmarks/million.py $(MILLION_ARGS)

# Benchmarks and their report (benchmarks/bench_all.py); matplotlib (plots) and pypulchra (the PULCHRA
# baseline) are benchmark-only dependencies, not the package's.
.PHONY: bench
bench: $(STAMP)
	@$(PY) -c "import matplotlib, pypulchra" 2>/dev/null || $(PIP) install --quiet matplotlib pypulchra
	$(PY) benchmarks/bench_all.py $(BENCH_ARGS)

# Start-up and folder throughput (benchmarks/startup.py, issue 13): needs ../shared/data/test/casp12 and pypulchra.
.PHONY: bench-startup
bench-startup: $(STAMP)
	@$(PY) -c "import pypulchra" 2>/dev/null || $(PIP) install --quiet pypulchra
	$(PY) benchmarks/startup.py $(STARTUP_ARGS)

# The GPU check (benchmarks/gpu_check.py) on a GPU node with no network, on PYTHON's own torch and triton:
# scripts/gpu/offline_env.py makes GPU_ENV (a venv over PYTHON's site-packages), installs the rest from WHEELHOUSE
# with pip --no-index and builds the project (-e .); gpu_check.py then runs in it. No .venv, nothing downloaded.
# WHEELHOUSE comes from `make wheelhouse` on a machine with network (scripts/gpu/wheelhouse.py; CI makes one in
# the test install step). docs/HPC.md, "GPU node runbook".
WHEEL_TAG   = $(shell $(PYTHON) -c 'import platform, sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}-{platform.machine()}")')
WHEELHOUSE ?= build/wheelhouse/$(WHEEL_TAG)
GPU_ENV    ?= build/gpu-check-env
.PHONY: gpu-check wheelhouse triton-aot
gpu-check:
	$(PYTHON) scripts/gpu/offline_env.py --wheelhouse $(WHEELHOUSE) --env $(GPU_ENV)
	$(GPU_ENV)/bin/python benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

# WHEEL_PY / WHEEL_ARCH / WHEEL_GLIBC: the GPU node's Python X.Y, CPU and glibc (default: PYTHON's and this machine's)
wheelhouse:
	$(PYTHON) scripts/gpu/wheelhouse.py $(if $(WHEEL_PY),--python $(WHEEL_PY)) $(if $(WHEEL_ARCH),--arch $(WHEEL_ARCH)) \
		$(if $(WHEEL_GLIBC),--glibc $(WHEEL_GLIBC)) $(if $(WHEEL_DEST),--dest $(WHEEL_DEST))

# Ahead-of-time compilation of the Triton kernels for sm_90 (scripts/gpu/triton_aot.py; no GPU, no CUDA driver: the
# ptxas of the triton wheel) with the pinned triton in .venv and with TRITON_OLD in build/triton-venvs/TRITON_OLD
# (triton only, over .venv's packages: scripts/gpu/triton_venv.sh), where the interpreter tests run too.
# TRITON_OLD_EXTRA: triton 3.6's interpreter calls int() on 1-element arrays, which numpy 2.4 refuses.
TRITON_OLD ?= 3.6.0
TRITON_OLD_EXTRA ?= "numpy<2.3"
triton-aot: $(STAMP)
	$(PY) scripts/gpu/triton_aot.py --arch 90
	bash scripts/gpu/triton_venv.sh $(TRITON_OLD) $(TRITON_OLD_EXTRA)
	build/triton-venvs/$(TRITON_OLD)/bin/python scripts/gpu/triton_aot.py --arch 90
	build/triton-venvs/$(TRITON_OLD)/bin/python -m pytest -q -n 0 -p no:cacheprovider tests/test_ops_triton.py

demo: $(STAMP)
	@mkdir -p $(DEMO_OUT)
	$(VENV)/bin/ldb-hpc backmap examples/example.cg.h5 -o $(DEMO_OUT)/example.aa.h5 --overwrite --no-progress
	@$(PY) -c "import mdtraj as md; t = md.load('$(DEMO_OUT)/example.aa.h5'); \
	print('mdtraj.load($(DEMO_OUT)/example.aa.h5):', t); \
	print('residues:', t.n_residues, ' heavy atoms per frame:', t.n_atoms, ' bonds:', t.topology.n_bonds)"

test: $(TEST_STAMP) $(MPIO_STAMP)
	bash scripts/ci/test.sh

clean-venv:
	rm -rf $(VENV) $(MPIO_VENV)
