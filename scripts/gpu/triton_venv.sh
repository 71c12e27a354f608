#!/usr/bin/env bash
# A throwaway venv with another triton over .venv's packages: build/triton-venvs/VERSION (make triton-aot).
#   bash scripts/gpu/triton_venv.sh 3.6.0 ["numpy<2.3" ...]   # then build/triton-venvs/3.6.0/bin/python
# Only triton is installed, from the registry, once, with the extra requirements given (make triton-aot adds
# numpy<2.3: triton 3.6's interpreter calls int() on 1-element arrays, which numpy 2.4 refuses). torch 2.13.0,
# numpy, pytest and the editable project come from .venv through a .pth file read after the venv's own
# site-packages, so this venv's packages shadow .venv's. Same interpreter as .venv (the project's C++ extension is
# reused as built). Idempotent: an existing venv with that triton is kept.
set -euo pipefail
cd "$(dirname "$0")/../.."
version=${1:?usage: triton_venv.sh TRITON_VERSION [REQUIREMENT ...]}
shift
base=${VENV:-.venv}
dest=build/triton-venvs/$version
if [ -x "$dest/bin/python" ] && [ "$("$dest/bin/python" -c 'import torch, ldb_hpc, triton; print(triton.__version__)' 2>/dev/null)" = "$version" ]; then
    echo "triton_venv: $dest has triton $version"
    exit 0
fi
home=$("$base/bin/python" -c 'import sys; print(sys._base_executable)')
rm -rf "$dest"
"$home" -m venv "$dest"
"$dest/bin/python" -m pip install --quiet --disable-pip-version-check "triton==$version" "$@"
site=$("$base/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
own=$("$dest/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "import site; site.addsitedir('$site')" > "$own/zz-over-$(basename "$base").pth"
"$dest/bin/python" -c "import triton, torch, ldb_hpc; assert triton.__version__ == '$version', triton.__file__; \
print('triton_venv: $dest: triton', triton.__version__, '+ torch', torch.__version__, 'and ldb_hpc of $base')"
