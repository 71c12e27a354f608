#!/usr/bin/env bash
# The whole test suite, as `make test` runs it (after the Makefile has built .venv and .venv-mpio):
#   1. a one-node SLURM cluster (scripts/ci/slurm.sh start; stopped again on exit, whatever happens);
#   2. pytest -n 2 over tests/ with .venv (serial, MPI at 2 ranks with the mpich wheel's mpiexec, SLURM, and the
#      code checks of tests/test_code_quality.py: ruff, import-linter's layer contracts, no cycles);
#   3. pytest over tests/test_mpio*.py with .venv-mpio (parallel h5py on Debian's Open MPI).
# Exit status: non-zero when any step failed. Step times go to stdout and to build/ci-times.tsv.
set -uo pipefail
cd "$(dirname "$0")/../.."
VENV=${VENV:-.venv}
MPIO_VENV=${MPIO_VENV:-.venv-mpio}
TIMES=build/ci-times.tsv
mkdir -p build

step() {  # step NAME CMD...: run CMD, record its wall time; returns CMD's status
    local name=$1 start rc tenths
    shift
    start=$(date +%s%N)
    "$@"
    rc=$?
    tenths=$(( ($(date +%s%N) - start) / 100000000 ))
    printf '%s\t%d.%d\t%s\n' "$name" $((tenths / 10)) $((tenths % 10)) "$rc" >> "$TIMES"
    echo "ci-time: $name $((tenths / 10)).$((tenths % 10)) s (exit $rc)"
    return $rc
}

status=0
if step slurm-start bash scripts/ci/slurm.sh start; then
    trap 'bash scripts/ci/slurm.sh stop' EXIT
    trap 'exit 143' TERM INT  # so that the EXIT trap stops the daemons on a kill too
    eval "$(bash scripts/ci/slurm.sh env)"
    export LDB_HPC_SLURM=up
else
    echo "test.sh: the local SLURM cluster did not start; its tests will be skipped and the run fails" >&2
    status=1
fi

# Every skip condition of the suite is something this script provides: under LDB_HPC_STRICT=1 a skip fails.
export LDB_HPC_STRICT=1

# MPI launchers for the tests: each venv's own (mpich wheel in .venv, Open MPI wrapper in .venv-mpio).
export LDB_HPC_MPIEXEC=$PWD/$VENV/bin/mpiexec
step pytest-main "$VENV/bin/python" -m pytest -q -n 2 -p no:cacheprovider tests --ignore-glob='tests/test_mpio*' \
    || status=1

shopt -s nullglob
mpio_tests=(tests/test_mpio*.py)
if [ ${#mpio_tests[@]} -gt 0 ]; then
    export LDB_HPC_MPIEXEC=$PWD/$MPIO_VENV/bin/mpiexec
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
    step pytest-mpio "$MPIO_VENV/bin/python" -m pytest -q -p no:cacheprovider "${mpio_tests[@]}" || status=1
else
    echo "test.sh: no tests/test_mpio*.py yet; the parallel-HDF5 venv was built and checked only"
fi
exit $status
