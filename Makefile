# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv in the repo when it is
# missing and install the project into it (torch 2.13.0 CPU build from local disk; no CUDA download).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.ldb-hpc-installed
TEST_STAMP := $(VENV)/.ldb-hpc-test-installed
DEMO_OUT := build/demo

.PHONY: demo test install clean-venv help

help:
	@echo "make demo   create .venv, install, backmap the bundled example, print a summary"
	@echo "make test   install test dependencies and run the whole test suite"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip "setuptools>=77" wheel

$(STAMP): pyproject.toml CMakeLists.txt | $(PY)
	$(PIP) install --quiet torch==2.13.0 triton==3.8.0
	$(PIP) install --quiet "scikit-build-core>=0.10" numpy h5py mdtraj tables gemmi safetensors tqdm mpi4py mpich
	$(PIP) install --quiet --no-build-isolation -e .
	@touch $@

install: $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PIP) install --quiet "pytest>=7" "pytest-xdist>=3"
	@touch $@

demo: $(STAMP)
	@mkdir -p $(DEMO_OUT)
	$(VENV)/bin/ldb-hpc backmap examples/example.cg.h5 -o $(DEMO_OUT)/example.aa.h5 --overwrite --no-progress
	@$(PY) -c "import mdtraj as md; t = md.load('$(DEMO_OUT)/example.aa.h5'); \
	print('mdtraj.load($(DEMO_OUT)/example.aa.h5):', t); \
	print('residues:', t.n_residues, ' heavy atoms per frame:', t.n_atoms, ' bonds:', t.topology.n_bonds)"

test: $(TEST_STAMP)
	$(PY) -m pytest -q -n 2 tests

clean-venv:
	rm -rf $(VENV)
