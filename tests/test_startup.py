"""Fast start (issue 13): nothing on the CPU path imports triton or sympy (torch.broadcast_shapes pulls in sympy
through torch.fx's symbolic shapes on first use; triton takes a third of a second even when unused)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from ldb_hpc.geometry.vectors import broadcast_shape

PROBE = """
import json, sys
from ldb_hpc.cli.main import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "loaded": sorted(m for m in ("triton", "sympy") if m in sys.modules)}))
"""


@pytest.mark.parametrize("model", [[], ["--model", "ideal"]])
def test_cpu_backmap_imports_neither_triton_nor_sympy(tmp_path, model):
    out = tmp_path / "out.h5"
    proc = subprocess.run([sys.executable, "-c", PROBE, "backmap", str(REPO / "examples" / "example.cg.h5"), "-o",
                           str(out), "--device", "cpu", "--no-progress", *model], capture_output=True, text=True,
                          timeout=300)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "loaded": []}, proc.stderr


@pytest.mark.parametrize("shapes", [[(2, 1, 3), (4, 1)], [(), (5,)], [(0, 3), (1, 3)], [(7,), (7,), (1, 7)],
                                    [(2, 3, 4), (3, 1), (1, 1, 4)], []])
def test_broadcast_shape_is_torchs(shapes):
    assert broadcast_shape(*shapes) == torch.broadcast_shapes(*shapes)


@pytest.mark.parametrize("shapes", [[(2, 3), (3, 2)], [(5,), (0,)]])
def test_broadcast_shape_refuses_what_torch_refuses(shapes):
    with pytest.raises(RuntimeError):
        torch.broadcast_shapes(*shapes)
    with pytest.raises(ValueError, match="do not broadcast"):
        broadcast_shape(*shapes)
