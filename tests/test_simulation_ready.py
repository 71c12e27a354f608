"""Issue 20's acceptance by the tools an MD user runs next, on the CASP12 targets that hold a disulfide (T0892,
T0897, T0941, T0947) and on T0898, whose four Cys hold a metal site and no disulfide:

* OpenMM: amber14's ``createSystem`` takes every ``--hydrogens`` output as written, with each disulfide bonded
  (its two Cys matched as CYX);
* GROMACS (Debian's 2022; ``make test`` installs it): ``gmx pdb2gmx -ignh`` links exactly the reference's
  disulfides ("Linking CYS-…") and no other pair, from the heavy-atom output and from the ``--hydrogens`` one, for
  an AMBER (amber99sb-ildn) and a CHARMM (charmm27) force field. ``-ignh`` is needed: our hydrogens carry PDB
  names, which the GROMACS force fields' residue entries do not all use (README, docs/DISULFIDES.md).

References' disulfides are their Cys pairs with SG–SG ≤ 2.3 Å, numbered as in the file.
"""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

TARGETS = ["T0892", "T0897", "T0898", "T0941", "T0947"]


def _reference_links(path) -> set[tuple[int, int]]:
    from ldb_hpc.chem.residues import RESTYPE_INDEX
    from ldb_hpc.io.structure import read_structure

    p = read_structure(str(path))[0]
    cys = [i for i in range(len(p)) if p.residues.restype[i] == RESTYPE_INDEX["CYS"] and p.mask[i, 5]]
    return {(int(p.residues.resseq[i]), int(p.residues.resseq[j])) for i in cys for j in cys
            if i < j and np.linalg.norm(p.positions[i, 5] - p.positions[j, 5]) <= 2.3}


@pytest.fixture(scope="module")
def outputs(shared_data, tmp_path_factory):
    from ldb_hpc.cli.main import main

    tmp = tmp_path_factory.mktemp("ready")
    out = {}
    for t in TARGETS:
        ref = shared_data / "test" / "casp12" / f"{t}.pdb"
        cg = tmp / f"{t}.cg.h5"
        assert main(["coarsen", str(ref), "-o", str(cg)]) == 0
        for kind, extra in (("heavy", []), ("H", ["--hydrogens"])):
            pdb = tmp / f"{t}.{kind}.pdb"
            assert main(["backmap", str(cg), "-o", str(pdb), "--threads", "1", "--no-progress", *extra]) == 0
            out[t, kind] = pdb
        out[t, "ref"] = _reference_links(ref)
    return out


@pytest.mark.data
@pytest.mark.parametrize("target", TARGETS)
def test_openmm_amber14_takes_every_output_with_its_disulfides_as_cyx(outputs, target):
    import openmm.app as app

    pdb = app.PDBFile(str(outputs[target, "H"]))
    ff = app.ForceField("amber14-all.xml")
    ss = [(a.residue.id, b.residue.id) for a, b in pdb.topology.bonds() if a.name == b.name == "SG"]
    assert {tuple(sorted(map(int, p))) for p in ss} == outputs[target, "ref"]
    ff.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff)  # raises on any unmatched residue
    templates = ff.getMatchingTemplates(pdb.topology)
    assert sum(t.name == "CYX" for t in templates) == 2 * len(outputs[target, "ref"])


@pytest.mark.data
@pytest.mark.parametrize("ff", ["amber99sb-ildn", "charmm27"])
@pytest.mark.parametrize("kind", ["heavy", "H"])
@pytest.mark.parametrize("target", TARGETS)
def test_pdb2gmx_links_exactly_the_reference_disulfides(outputs, target, kind, ff):
    from simulation_ready import pdb2gmx_links

    gmx = shutil.which("gmx")
    if gmx is None:
        pytest.skip("GROMACS (gmx) is not installed; make test installs Debian's gromacs")
    r = pdb2gmx_links(outputs[target, kind], gmx, ff)
    assert r["rc"] == 0, r["error"]
    links = {tuple(sorted((n1, n2))) for res1, n1, res2, n2 in r["links"] if res1 == res2 == "CYS"}
    assert links == outputs[target, "ref"] and len(r["links"]) == len(links), r["links"]
