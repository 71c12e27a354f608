"""`backmap --hydrogens`: the hydrogen tables, their placement, the topology, the run, and OpenMM's verdict.

The naming and geometry conventions checked here are those of the PDB (and so of mdtraj and OpenMM, which keep
them): methylene H…2/H…3 by the IUPAC side rule, staggered methyls with H…1 anti, NH2 with H…1 cis to the
oxygen (ASN, GLN) or to NE (ARG); N-termini H H2 H3. The turning of rotatable hydrogens is tested in
tests/test_hydrogen_fit.py. Acceptance by a real tool:
OpenMM's amber14 builds a System from the output PDB as written (nothing renamed or added) and a short
LocalEnergyMinimizer run lowers the energy.
"""

from __future__ import annotations

import sys

import h5py
import numpy as np
import pytest
import torch
from conftest import REPO, assert_one_line_error
from hydrogen_cases import EXAMPLE
from hydrogen_cases import atoms_of as _atoms
from hydrogen_cases import residues_of as _residues

from ldb_hpc.chem import hydrogens as ch
from ldb_hpc.chem.residues import ATOM14, BONDS, RESTYPE_INDEX, RESTYPES_3, SLOT_INDEX
from ldb_hpc.geometry import hydrogen_fit as hf
from ldb_hpc.geometry.hydrogens import place_extra
from ldb_hpc.geometry.vectors import bond_angle, dihedral
from ldb_hpc.io.topology import aa_topology, output_topology

sys.path.insert(0, str(REPO / "benchmarks"))

# Hydrogens of a residue inside a chain at standard protonation (amber14's templates: ALA … VAL, HIE, CYS).
INTERNAL_H = {"ALA": 5, "ARG": 13, "ASN": 6, "ASP": 4, "CYS": 5, "GLN": 8, "GLU": 6, "GLY": 3, "HIS": 7, "ILE": 11,
              "LEU": 11, "LYS": 13, "MET": 9, "PHE": 9, "PRO": 7, "SER": 5, "THR": 7, "TRP": 10, "TYR": 9, "VAL": 9}


def _present(res: str, first=False, last=False, disulfide=False) -> list[str]:
    """Names of the extra atoms of one residue in the given situation."""
    residues = _residues(["GLY", res, "GLY"], [0, 1 if first else 0, 2 if last else (1 if first else 0)])
    prot = ch.Protonation(((1, 1),) if disulfide else ())
    mask = ch.extra_mask(residues.restype, residues.segment, prot)[1]
    return [n for n, m in zip(ch.EXTRA_NAMES[res], mask) if m]


@pytest.mark.parametrize("res", sorted(INTERNAL_H))
def test_every_residue_has_amber_protonation_and_unique_names(res):
    inner = _present(res)
    assert len(inner) == INTERNAL_H[res] and "OXT" not in inner
    assert len(set(inner)) == len(inner)
    n_term, c_term = _present(res, first=True), _present(res, last=True)
    assert len(set(n_term)) == len(n_term)
    if res == "PRO":
        assert not {"H", "H2", "H3"} & set(inner) and {"H2", "H3"} <= set(n_term)
    else:
        assert "H" in inner and {"H", "H2", "H3"} <= set(n_term)
        assert len(n_term) == len(inner) + 2  # NH3+ instead of the amide H
    assert c_term == inner[:0] + ["OXT"] + inner  # OXT first among the extra atoms, nothing else changes
    assert set(inner) <= set(ch.EXTRA_NAMES[res]) and all(n.startswith("H") for n in inner)
    if res == "CYS":
        assert "HG" in inner and "HG" not in _present(res, disulfide=True)
    if res == "HIS":  # HIE: Nε2-H, no Nδ1-H
        assert "HE2" in inner and "HD1" not in inner


def test_unknown_residues_are_refused():
    assert ch.check_protonatable(np.array([0, 7])) is None
    msg = ch.check_protonatable(np.array([0, RESTYPE_INDEX["UNK"]]), ["A:1", "A:2"])
    assert "A:2" in msg and "--hydrogens" in msg


def test_heavy_atoms_kept_and_absent_slots_zero(built):
    residues, heavy, full = built
    assert full.shape == (len(residues), 14 + ch.NUM_EXTRA, 3) and full.dtype == torch.float64
    assert torch.equal(full[:, :14], heavy)
    mask = torch.from_numpy(ch.extra_mask(residues.restype, residues.segment, ch.Protonation()))
    assert (full[:, 14:][~mask] == 0).all() and (full[:, 14:][mask].norm(dim=-1) > 1).all()


def test_bond_lengths_and_angles_are_ideal(built):
    residues, _, full = built
    mask = ch.extra_mask(residues.restype, residues.segment, ch.Protonation())
    i, k = np.nonzero(mask)
    rt = residues.restype[i]
    parent = full[i, ch.EXTRA_PARENT[rt, k]]
    d = (full[i, 14 + k] - parent).norm(dim=-1).numpy()
    np.testing.assert_allclose(d, ch.EXTRA_BOND[rt, k], atol=1e-9)
    # Every H–X–Y angle (Y another heavy neighbour of the parent X) lies in 80°..140° (a tetrahedron or trigonal
    # centre follows its heavy atoms, and the backbone built to fit a CA trace has N–CA–C from 92° to 133° here).
    for r in range(len(residues)):
        atoms = _atoms(residues, full, r)
        res = RESTYPES_3[residues.restype[r]]
        for k2, name in enumerate(ch.EXTRA_NAMES[res]):
            if name not in atoms or name == "OXT" or not mask[r, k2]:
                continue
            x = ATOM14[res][ch.EXTRA_PARENT[residues.restype[r], k2]]
            for a, b in BONDS[res]:
                y = b if a == x else a if b == x else None
                if y is not None:
                    ang = np.degrees(float(bond_angle(atoms[name], atoms[x], atoms[y])))
                    assert 80 <= ang <= 140, (r, res, name, x, y, ang)


# Methylene groups as reduce (MolProbity) names them: (residue, centre, chain neighbour toward CA, the other one).
CH2_CASES = [("SER", "CB", "CA", "OG", "HB"), ("CYS", "CB", "CA", "SG", "HB"), ("LYS", "CG", "CB", "CD", "HG"),
             ("LYS", "CE", "CD", "NZ", "HE"), ("ARG", "CD", "CG", "NE", "HD"), ("MET", "CG", "CB", "SD", "HG"),
             ("PRO", "CD", "CG", "N", "HD"), ("ILE", "CG1", "CB", "CD1", "HG1"), ("GLY", "CA", "N", "C", "HA"),
             ("PHE", "CB", "CA", "CG", "HB")]
METHYLS = [("ALA", ("N", "CA", "CB"), "HB"), ("LEU", ("CB", "CG", "CD1"), "HD1"), ("VAL", ("CA", "CB", "CG2"), "HG2"),
           ("THR", ("CA", "CB", "CG2"), "HG2"), ("MET", ("CG", "SD", "CE"), "HE"), ("LYS", ("CD", "CE", "NZ"), "HZ")]
NH2 = [("ASN", ("OD1", "CG", "ND2"), "HD2"), ("GLN", ("OE1", "CD", "NE2"), "HE2"), ("ARG", ("NE", "CZ", "NH1"), "HH1"),
       ("ARG", ("NE", "CZ", "NH2"), "HH2")]


def test_pdb_naming_conventions(built):
    residues, _, full = built
    seen = set()
    for r in range(len(residues)):
        res = RESTYPES_3[residues.restype[r]]
        a = _atoms(residues, full, r)
        for name, c, prev, nxt, h in CH2_CASES:
            if name == res:  # H…2 on the side of −(prev − c) × (next − c), H…3 opposite
                normal = torch.linalg.cross(a[prev] - a[c], a[nxt] - a[c])
                assert float(normal @ (a[h + "2"] - a[c])) < 0 < float(normal @ (a[h + "3"] - a[c])), (res, c)
                seen.add((res, c))
        for name, ref, h in METHYLS:  # staggered, H…1 anti, all three turned by one θ (hydrogen_fit's grid)
            if name == res:
                got = np.array([np.degrees(float(dihedral(*(a[x] for x in ref), a[f"{h}{k}"]))) for k in (1, 2, 3)])
                turn = (got - np.array([180.0, -60.0, 60.0]) + 180) % 360 - 180
                np.testing.assert_allclose(turn, turn[0], atol=1e-6)
                assert -60 - 1e-6 <= turn[0] < 60 and abs(turn[0] / 10 - round(turn[0] / 10)) < 1e-6, turn
                seen.add((res, h))
        for name, ref, h in NH2:  # planar, H…1 cis to the reference atom
            if name == res:
                assert abs(float(dihedral(*(a[x] for x in ref), a[h + "1"]))) < 1e-6
                assert abs(abs(float(dihedral(*(a[x] for x in ref), a[h + "2"]))) - np.pi) < 1e-6
                seen.add((res, h))
        if "H" in a and r > 0 and residues.segment[r] == residues.segment[r - 1]:  # amide H in the peptide plane
            c_prev = full[r - 1, SLOT_INDEX[("GLY", "C")]]
            assert abs(abs(float(dihedral(c_prev, a["CA"], a["N"], a["H"]))) - np.pi) < 1e-6
            seen.add(("amide", "H"))
    assert len(seen) == len(CH2_CASES) + len(METHYLS) + len(NH2) + 1, seen


def test_termini_and_chain_break_atoms(built):
    residues, _, full = built
    first, last = ch.termini(residues.segment)
    assert first.sum() == 2 and last.sum() == 2  # the example's chain break
    for r in np.nonzero(last)[0]:
        a = _atoms(residues, full, r)
        assert "OXT" in a
        d = float((a["OXT"] - a["C"]).norm())
        assert abs(d - ch.C_OXT) < 1e-9 and abs(float(bond_angle(a["O"], a["C"], a["OXT"])) - np.radians(120)) < 0.2
    for r in np.nonzero(first)[0]:
        a = _atoms(residues, full, r)
        assert {"H", "H2", "H3"} <= set(a) or RESTYPES_3[residues.restype[r]] == "PRO"


def _clear_device_caches():
    from ldb_hpc.geometry import hydrogens as gh

    gh._placement.cache_clear()
    hf._CACHE.clear()
    hf._layout.cache_clear()


def test_placement_stays_on_the_input_device():
    """Every tensor of place_extra, rotor turning included, is made on the input's device and nothing is read back
    to the host: run it on fake CUDA tensors (a CPU tensor meeting a CUDA one, or a data-dependent op, raises)."""
    from fake_cuda import AtenIndexing
    from torch._subclasses.fake_tensor import FakeTensorMode

    names = ["MET", "CYS", "HIS", "PRO", "LYS", "GLY", "ALA", "SER", "THR", "TYR", "VAL", "ILE", "LEU", "CYS"]
    residues = _residues(names, [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    _clear_device_caches()  # no tables cached for a real device may meet the fake one, nor the other way round
    try:
        with FakeTensorMode(allow_non_fake_inputs=True), AtenIndexing():
            pos = torch.randn(2, 1, len(residues), 14, 3, device="cuda")
            out = place_extra(pos, residues.restype, residues.segment, ch.Protonation(((1, 1),)))
            assert out.device == torch.device("cuda", 0) and out.shape == (2, 1, len(residues), 14 + ch.NUM_EXTRA, 3)
    finally:
        _clear_device_caches()


# ----------------------------------------------------------------------------------------------------------
# topology


def test_topology_with_hydrogens():
    residues = _residues(["MET", "CYS", "ALA", "PRO", "CYS", "LYS"], [0, 0, 0, 1, 1, 1])  # a chain break at PRO
    heavy, _, n_heavy = aa_topology(residues)
    assert output_topology(residues)[0] == heavy  # no protonation: the heavy topology, unchanged
    topo, atom_index, n = output_topology(residues, ch.Protonation(((1, 4),)))
    chains = topo["chains"]
    assert [c["chain_id"] for c in chains] == ["A", "A"] and [len(c["residues"]) for c in chains] == [3, 3]
    res = [r for c in chains for r in c["residues"]]
    names = [[a["name"] for a in r["atoms"]] for r in res]
    assert sum(len(x) for x in names) == n and atom_index.max() == n - 1
    assert names[0][:4] == ["N", "CA", "C", "O"] and {"H", "H2", "H3"} <= set(names[0]) and "OXT" not in names[0]
    assert "OXT" in names[2] and "OXT" in names[5] and "H" in names[2]
    assert {"H2", "H3"} <= set(names[3]) and "H" not in names[3]  # proline N-terminus after the break
    assert "HG" not in names[1] and "HG" not in names[4]  # both CYS in the disulfide
    element = {a["index"]: a["element"] for r in res for a in r["atoms"]}
    name = {a["index"]: a["name"] for r in res for a in r["atoms"]}
    bonds = np.array(topo["bonds"])
    assert len({tuple(sorted(b)) for b in bonds.tolist()}) == len(bonds)
    degree = np.bincount(bonds.ravel(), minlength=n)
    assert all(degree[i] == 1 for i in range(n) if element[i] == "H")
    assert sum(name[a] == "SG" and name[b] == "SG" for a, b in bonds) == 1
    c2, n3 = atom_index[2, SLOT_INDEX[("ALA", "C")]], atom_index[3, SLOT_INDEX[("PRO", "N")]]
    assert not any({int(a), int(b)} == {c2, n3} for a, b in bonds)  # no peptide bond across the break
    assert len(bonds) == len(heavy["bonds"]) + (n - n_heavy) + 1


# ----------------------------------------------------------------------------------------------------------
# the command, mdtraj and OpenMM


@pytest.fixture(scope="module")
def example_outputs(tmp_path_factory):
    from ldb_hpc.cli.main import main

    tmp = tmp_path_factory.mktemp("hydrogens")
    for name, extra in (("heavy.h5", ()), ("h.h5", ("--hydrogens",)), ("h.pdb", ("--hydrogens",))):
        assert main(["backmap", str(EXAMPLE), "-o", str(tmp / name), "--threads", "1", "--no-progress", *extra]) == 0
    return tmp


def test_hydrogen_output_keeps_heavy_atoms_and_mdtraj_names(example_outputs):
    import mdtraj as md

    heavy, h = md.load(str(example_outputs / "heavy.h5")), md.load(str(example_outputs / "h.h5"))
    keep = [a.index for a in h.topology.atoms if a.element.symbol != "H" and a.name != "OXT"]
    assert len(keep) == heavy.n_atoms and np.array_equal(h.xyz[:, keep], heavy.xyz)  # bitwise
    assert [(a.residue.name, a.name) for a in h.topology.atoms if a.index in set(keep)] == \
        [(a.residue.name, a.name) for a in heavy.topology.atoms]
    n_h = sum(a.element.symbol == "H" for a in h.topology.atoms)
    assert n_h > heavy.n_atoms * 0.9 and h.n_chains == 2  # the chain break is a chain boundary
    pdb = md.load_pdb(str(example_outputs / "h.pdb"), frame=0)  # mdtraj's PDB reader standardises names
    names = [(a.residue.name, a.name) for a in h.topology.atoms]
    assert [(a.residue.name, a.name) for a in pdb.topology.atoms] == names
    np.testing.assert_allclose(pdb.xyz[0], h.xyz[0], atol=1e-4)
    with h5py.File(example_outputs / "h.h5", "r") as f:
        assert "HIE" in f["ldb"].attrs["hydrogens"]


def test_openmm_amber14_accepts_and_minimises(example_outputs):
    pytest.importorskip("openmm")
    from hydrogens import openmm_check

    r = openmm_check(example_outputs / "h.pdb", iterations=50)
    assert r["renamed"] == 0 and r["system_ok"], r
    assert r["minimised"] and np.isfinite(r["e1"]) and r["e1"] < r["e0"], r


def test_disulfide_reaches_openmm(shared_data, tmp_path):
    """CASP12 T0947: its disulfide (Cys 48–214 as numbered in the file) is bonded (no HG, SG–SG in the topology and
    as CONECT in the PDB; ldb_hpc.geometry.disulfides decides and builds it), and amber14 takes the pair as CYX."""
    pytest.importorskip("openmm")
    from hydrogens import openmm_check

    from ldb_hpc.cli.main import main

    cg, out = tmp_path / "t.cg.h5", tmp_path / "t.pdb"
    assert main(["coarsen", str(shared_data / "test" / "casp12" / "T0947.pdb"), "-o", str(cg)]) == 0
    assert main(["backmap", str(cg), "-o", str(out), "--hydrogens", "--threads", "1", "--no-progress"]) == 0
    assert sum(line.startswith("CONECT") for line in out.read_text().splitlines()) == 2
    r = openmm_check(out, iterations=30)
    assert r["disulfides"] == 1 and r["renamed"] == 0 and r["system_ok"] and r["minimised"], r


def _ca_pdbs(folder, frames_per_file):
    """CA-only PDB files of example frames (one MODEL per frame), named f0.pdb, f1.pdb, ..."""
    import mdtraj as md

    t = md.load(str(EXAMPLE))
    folder.mkdir()
    for k, frames in enumerate(frames_per_file):
        t[list(frames)].save_pdb(str(folder / f"f{k}.pdb"))
    return folder


def test_many_files_with_hydrogens(tmp_path, run_cli):
    """``backmap DIR -o OUT/ --hydrogens``: each PDB and HDF5 output has the heavy atoms of the run without
    hydrogens (bitwise in HDF5), the atoms and order of the trajectory path's hydrogen topology, TER at the chain
    break, one MODEL per row, and amber14 takes the PDB as written; a file with an unknown residue fails alone."""
    import mdtraj as md
    from hydrogens import openmm_check

    src = _ca_pdbs(tmp_path / "in", [(5,), (0, 1)])
    (src / "f2.pdb").write_text((src / "f0.pdb").read_text().replace("ILE A  60", "UNK A  60"))
    outs = {}
    for name, extra in (("pdb", ["--hydrogens"]), ("h5", ["--hydrogens", "--format", "h5"]),
                        ("heavy", ["--format", "h5"])):
        outs[name] = tmp_path / name
        outs[name].mkdir()
        code, out, err = run_cli("backmap", src, "-o", f"{outs[name]}/", "--threads", 1, *extra)
        if name == "heavy":
            assert code == 0, err
        else:  # f2 fails with one error line; f0 and f1 are written
            assert code == 2 and "backmapped 2 of 3" in out, err
            assert_one_line_error(code, err, "f2.pdb: --hydrogens needs standard residues")
            assert not (outs[name] / f"f2.aa.{'pdb' if name == 'pdb' else 'h5'}").exists()
    traj = md.load(str(EXAMPLE))
    for k, rows in ((0, 1), (1, 2)):
        heavy = md.load(str(outs["heavy"] / f"f{k}.aa.h5"))
        h5 = md.load(str(outs["h5"] / f"f{k}.aa.h5"))
        pdb = md.load_pdb(str(outs["pdb"] / f"f{k}.aa.pdb"))
        assert h5.n_frames == pdb.n_frames == rows and h5.n_chains == pdb.n_chains == 2  # the chain break
        keep = [a.index for a in h5.topology.atoms if a.element.symbol != "H" and a.name != "OXT"]
        assert np.array_equal(h5.xyz[:, keep], heavy.xyz)
        assert sum(a.element.symbol == "H" for a in h5.topology.atoms) > 0.9 * heavy.n_atoms
        assert [(a.residue.name, a.name) for a in pdb.topology.atoms] == \
            [(a.residue.name, a.name) for a in h5.topology.atoms]
        np.testing.assert_allclose(pdb.xyz, h5.xyz, atol=1e-4)
        np.testing.assert_allclose(h5.xyz[:, h5.topology.select("name CA")], traj.xyz[[5] if k == 0 else [0, 1]],
                                   atol=2e-4)
    with h5py.File(outs["h5"] / "f0.aa.h5", "r") as f:
        assert "HIE" in f["ldb"].attrs["hydrogens"]
    r = openmm_check(outs["pdb"] / "f0.aa.pdb", iterations=30)
    assert r["renamed"] == 0 and r["system_ok"] and r["minimised"], r


def test_many_files_disulfide_reaches_openmm(shared_data, tmp_path, run_cli):
    """A structure file given among others gets its disulfide found on its own first row: CONECT records once,
    after the models, and amber14 takes the pair as CYX."""
    import shutil

    from hydrogens import openmm_check

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    shutil.copy(shared_data / "test" / "casp12" / "T0947.pdb", src / "T0947.pdb")
    _ca_pdbs(tmp_path / "ex", [(3,)])
    shutil.copy(tmp_path / "ex" / "f0.pdb", src / "example.pdb")
    code, _, err = run_cli("backmap", src, "-o", f"{out}/", "--hydrogens", "--threads", 1)
    assert code == 0, err
    lines = (out / "T0947.aa.pdb").read_text().splitlines()
    assert sum(line.startswith("CONECT") for line in lines) == 2 and lines[-1] == "END"
    assert not any(line.startswith("CONECT") for line in (out / "example.aa.pdb").read_text().splitlines())
    r = openmm_check(out / "T0947.aa.pdb", iterations=30)
    assert r["disulfides"] == 1 and r["renamed"] == 0 and r["system_ok"] and r["minimised"], r


def test_stdin_to_stdout_with_hydrogens(tmp_path):
    import subprocess

    import mdtraj as md

    src = _ca_pdbs(tmp_path / "in", [(3,)]) / "f0.pdb"
    p = subprocess.run([sys.executable, "-m", "ldb_hpc", "backmap", "-", "--hydrogens", "--threads", "1"],
                       input=src.read_bytes(), capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr
    (tmp_path / "aa.pdb").write_bytes(p.stdout)
    t = md.load_pdb(str(tmp_path / "aa.pdb"))
    assert t.n_residues == 135 and sum(a.element.symbol == "H" for a in t.topology.atoms) > 900
    assert sum(a.name == "OXT" for a in t.topology.atoms) == 2  # one per segment end


# ----------------------------------------------------------------------------------------------------------
# errors


def test_resume_with_other_hydrogens_is_refused(example_outputs, run_cli):
    code, _, err = run_cli("backmap", EXAMPLE, "-o", example_outputs / "heavy.h5", "--resume", "--hydrogens")
    assert_one_line_error(code, err, "--hydrogens (off vs on)")


def test_unknown_residue_is_one_error_line(tmp_path, run_cli):
    import json

    cg = tmp_path / "unk.cg.h5"
    cg.write_bytes(EXAMPLE.read_bytes())
    with h5py.File(cg, "r+") as f:
        topo = json.loads(f["topology"][()].reshape(-1)[0] if f["topology"].shape else f["topology"][()])
        topo["chains"][0]["residues"][3]["name"] = "UNK"
        del f["topology"]
        f["topology"] = json.dumps(topo)
    code, _, err = run_cli("backmap", cg, "-o", tmp_path / "out.h5", "--hydrogens")
    assert_one_line_error(code, err, "--hydrogens needs standard residues")
    assert not (tmp_path / "out.h5").exists()
