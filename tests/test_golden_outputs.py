"""Bitwise regression guard: `ldb-hpc backmap` outputs whose digests were recorded before a refactor.

A refactor that must not change behaviour (issue 10: the atom builder moved below the models, one all-atom
layout, layer contracts) is checked here: the coordinates, times, provenance rows and topology of the output on
the bundled example and on three CASP12 targets hash to the digests recorded at commit cc0f764, before it (they
held unchanged through the refactor's commits). The three example digests were regenerated once since, on purpose,
when backbone settling learned to keep O(i)–N(i+2) apart (it removes the example's pairs closer than 1.2 Å; the
CASP12 digests did not move).

A deliberate change of the model's outputs (a new model, a builder fix) changes these digests: regenerate them
with ``python tests/test_golden_outputs.py`` and say so in the commit message.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

# (case, input: "example" or a CASP12 target, extra backmap options) → sha256 of the output (see _digest).
GOLDEN = {
    "T0862-ensemble": "05d44d25c90e9d30b3d81f6f28dac4feffbdc4816c59c435fbfb0dc9d80ab661",
    "T0872-default": "38aef377da80a830c843ee162194109d40c8335db7a09689509e219be5f3bfe3",
    "T0922-default": "875765537fa875f94dd5c7fec9b41e1e1c59b89d72cb43e4c193c601b28e8438",
    "example-default": "e1fe8e3be648643853061b6be8c75b33ce4d505ec23ecae1e8405a398656a8b2",
    "example-ensemble": "8bbf6df5cdde4d894711c4522a2fd487ff0694a9458a01ea1c5777ad661ed0ed",
    "example-ideal": "e304920b6c51763ced613ec37ae0e319b4a97e1dbbba981dbbc3d1834cfd2bd4",
}

CASES = {
    "example-default": ("example", ()),
    "example-ideal": ("example", ("--model", "ideal")),
    "example-ensemble": ("example", ("--samples", "3", "--seed", "7", "--batch-frames", "4")),
    "T0922-default": ("T0922", ()),
    "T0872-default": ("T0872", ()),
    "T0862-ensemble": ("T0862", ("--samples", "2", "--seed", "3")),
}


def _digest(path: str) -> str:
    """sha256 over the datasets a user reads: coordinates (float32 bytes), time, cell, /ldb/cg_frame and /ldb/sample,
    and the topology JSON. Attributes (version, date, input path) are left out."""
    import h5py
    import numpy as np

    h = hashlib.sha256()
    with h5py.File(path, "r") as f:
        for name in ("coordinates", "time", "cell_lengths", "cell_angles", "ldb/cg_frame", "ldb/sample"):
            if name in f:
                data = np.ascontiguousarray(f[name][...])
                h.update(name.encode() + str(data.dtype).encode() + str(data.shape).encode())
                h.update(data.tobytes())
        h.update(np.asarray(f["topology"][...]).tobytes())
    return h.hexdigest()


def _run(case: str, tmp: Path, shared: Path | None, repo: Path) -> str:
    from ldb_hpc.cli.main import main

    source, extra = CASES[case]
    if source == "example":
        cg = repo / "examples" / "example.cg.h5"
    else:
        if shared is None:
            pytest.skip("shared data not found")
        cg = tmp / f"{source}.cg.h5"
        if not cg.exists():
            code = main(["coarsen", str(shared / "test" / "casp12" / f"{source}.pdb"), "-o", str(cg)])
            assert code == 0
    out = tmp / f"{case}.aa.h5"
    code = main(["backmap", str(cg), "-o", str(out), "--threads", "1", "--no-progress", "--overwrite", *extra])
    assert code == 0
    return _digest(str(out))


@pytest.mark.parametrize("case", sorted(CASES))
def test_backmap_output_is_bitwise_unchanged(case, tmp_path, repo_root, request):
    shared = None
    if CASES[case][0] != "example":
        shared = request.getfixturevalue("shared_data")
    assert _run(case, tmp_path, shared, repo_root) == GOLDEN[case], \
        f"{case}: backmap output differs from the recorded digest"


if __name__ == "__main__":  # regenerate: python tests/test_golden_outputs.py
    import tempfile

    repo = Path(__file__).resolve().parents[1]
    shared = repo.parent / "shared" / "data"
    with tempfile.TemporaryDirectory() as d:
        for name in sorted(CASES):
            print(f'    "{name}": "{_run(name, Path(d), shared, repo)}",', file=sys.stdout, flush=True)
