#!/usr/bin/env bash
# Build the second virtual environment, .venv-mpio, with parallel HDF5 (`h5py.get_config().mpi` is True):
# Debian's Open MPI and HDF5-openmpi, then h5py and mpi4py compiled from source against them (not the PyPI
# mpich wheel), torch 2.13.0 CPU and the project (editable). `make test` runs tests/test_mpio*.py with it.
# Usage: scripts/ci/mpio_venv.sh VENV_DIR [PYTHON]. Idempotent; about 2-3 minutes from scratch on 2 cores.
set -euo pipefail
VENV=${1:?usage: mpio_venv.sh VENV_DIR [PYTHON]}
PYTHON=${2:-python3}
cd "$(dirname "$0")/../.."
bash scripts/ci/apt.sh openmpi-bin libopenmpi-dev libhdf5-openmpi-dev pkg-config build-essential

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet)
"${PIP[@]}" --upgrade pip "setuptools>=77" wheel
"${PIP[@]}" numpy "cython>=3" pkgconfig "scikit-build-core>=0.10" nanobind "pytest>=7" "pytest-xdist>=3"
# Compiled against Debian's Open MPI / HDF5, never the mpich or h5py wheels; h5py's build imports mpi4py.
if ! "$VENV/bin/python" -c "import mpi4py" 2>/dev/null; then
    env CC=mpicc "${PIP[@]}" --no-binary=mpi4py --no-build-isolation --no-cache-dir mpi4py
fi
if ! "$VENV/bin/python" -c "import h5py, sys; sys.exit(0 if h5py.get_config().mpi else 1)" 2>/dev/null; then
    env HDF5_MPI=ON CC=mpicc HDF5_PKGCONFIG_NAME=hdf5-openmpi \
        "${PIP[@]}" --no-binary=h5py --no-build-isolation --no-cache-dir --force-reinstall --no-deps h5py
    "${PIP[@]}" --no-build-isolation h5py  # its pure-Python dependencies (numpy), h5py itself stays
fi
"${PIP[@]}" torch==2.13.0 mdtraj tables gemmi safetensors tqdm vermouth
"${PIP[@]}" --no-build-isolation --no-deps -e .

# mpiexec of this venv: Open MPI's, allowed to run as root and to oversubscribe the 2 cores.
cat > "$VENV/bin/mpiexec" <<'WRAP'
#!/bin/sh
# Open MPI launcher for .venv-mpio (made by scripts/ci/mpio_venv.sh).
if [ "$(id -u)" -eq 0 ]; then set -- --allow-run-as-root "$@"; fi
exec /usr/bin/mpiexec.openmpi --oversubscribe "$@"
WRAP
chmod +x "$VENV/bin/mpiexec"

"$VENV/bin/python" - <<'PY'
import h5py, mpi4py
from mpi4py import MPI
assert h5py.get_config().mpi, "h5py was built without MPI"
lib = MPI.Get_library_version().split("\n")[0]
assert "Open MPI" in lib, f"mpi4py is not linked against Open MPI: {lib}"
print(f"parallel h5py {h5py.__version__} (HDF5 {h5py.version.hdf5_version}), mpi4py {mpi4py.__version__} on {lib}")
PY
