"""Martini 3 in: a GROMACS-style system (.gro + .xtc with water and ions) backmapped to protein heavy atoms, bead
errors named, the mapping found from the bead names, side chains fitted to their beads."""

from __future__ import annotations

import json

import mdtraj as md
import numpy as np
import pytest
import torch
from conftest import assert_one_line_error
from test_model import _helix_protein
from test_training_set import write_training_set

from ldb_hpc.chem import residues as rc
from ldb_hpc.chem.cg_mappings import MARTINI_BEADS, mapping
from ldb_hpc.errors import InputError

L = 30


@pytest.fixture(scope="module")
def protein():
    pos, mask, restype, segment = _helix_protein(L)
    return pos[0].numpy(), mask[0].numpy(), restype.numpy(), segment.numpy()


def martini_system(protein, path_gro, path_xtc=None, frames=3, water=40, ions=4, drop=None, rename=None,
                   go_sites=False):
    """A Martini 3 system of the helix protein (beads as martinize2 places them) + water W + NA ions, as .gro
    (and .xtc): ``drop`` = (residue, bead) left out, ``rename`` = (residue, bead, new name)."""
    pos, mask, restype, _ = protein
    beads, _ = mapping("martini3").beads(pos, mask, restype)
    top = md.Topology()
    chain = top.add_chain()
    xyz = []
    for i, t in enumerate(restype):
        res = top.add_residue(rc.RESTYPES_3[t], chain, resSeq=i + 1)
        for name in mapping("martini3").bead_names[t]:
            if drop == (i, name):
                continue
            shown = rename[2] if rename and rename[:2] == (i, name) else name
            top.add_atom(shown, md.element.virtual, res)
            xyz.append(beads[i, MARTINI_BEADS.index(name)])
        if go_sites:
            top.add_atom("CA", md.element.virtual, res)
            xyz.append(beads[i, 0])
    rng = np.random.default_rng(0)
    for k in range(water + ions):
        res = top.add_residue("W" if k < water else "NA", chain, resSeq=L + k + 1)
        top.add_atom("W" if k < water else "NA", md.element.virtual, res)
        xyz.append(rng.uniform(-20, 20, 3))
    xyz = np.asarray(xyz, np.float32) / 10.0
    moves = np.stack([xyz + 0.01 * f for f in range(frames)])
    traj = md.Trajectory(moves, top, time=np.arange(frames) * 10.0,
                         unitcell_lengths=np.full((frames, 3), 6.0), unitcell_angles=np.full((frames, 3), 90.0))
    traj[0].save_gro(str(path_gro))
    if path_xtc is not None:
        traj.save_xtc(str(path_xtc))
    return traj


@pytest.fixture(scope="module")
def placer(protein, tmp_path_factory):
    """A tiny Martini 3 placer trained here (a few steps: what it places is checked, not how well)."""
    from ldb_hpc.cli.main import main

    tmp = tmp_path_factory.mktemp("m3")
    data = write_training_set(tmp / "train.h5", [protein])
    code = main(["train", "placement", "--cg", "martini3", "--data", str(data), "--out", str(tmp / "p"),
                 "--steps", "3", "--windows", "2", "--crop", "20", "--threads", "1"])
    assert code == 0
    return tmp / "p" / "model"


def test_a_gro_xtc_system_with_water_and_ions_backmaps_to_protein_heavy_atoms(protein, placer, tmp_path, run_cli):
    """Found as Martini from its bead names (no --cg); water and ions dropped and counted; every frame gives the
    protein's heavy atoms; mdtraj and MDAnalysis read the output; no heavy-atom pair < 1.2 Å."""
    import MDAnalysis

    martini_system(protein, tmp_path / "sys.gro", tmp_path / "sys.xtc", go_sites=True)
    out = tmp_path / "sys.aa.xtc"  # + sys.aa.top.pdb: what VMD and MDAnalysis open
    code, stdout, err = run_cli("backmap", tmp_path / "sys.xtc", "--top", tmp_path / "sys.gro", "-o", out,
                                "--model", placer, "--no-progress")
    assert code == 0, err
    assert "note: 74 particles dropped (W×40, Gō virtual site×30, NA×4)" in err
    summary = json.loads((tmp_path / "sys.aa.xtc.summary.json").read_text())
    assert summary["input_note"].startswith("74 particles dropped") and summary["close_contacts"]["rows"] == 0
    top = tmp_path / "sys.aa.top.pdb"
    traj = md.load(str(out), top=str(top))
    assert traj.n_frames == 3 and traj.n_residues == L
    assert traj.n_atoms == int(rc.SLOT_MASK[protein[2]].sum())
    assert all(a.element.symbol in ("C", "N", "O", "S") for a in traj.topology.atoms)
    u = MDAnalysis.Universe(str(top), str(out))
    assert len(u.trajectory) == 3 and len(u.atoms) == traj.n_atoms


def test_side_chains_follow_their_beads(protein, placer):
    """On the same placed backbone, the fitted side chains put their beads nearer the input's beads, and their χ1
    nearer the truth, than the C-alpha model's build without the fit (the tiny placer here places CAs roughly:
    the comparison is on the same backbone)."""
    from ldb_hpc.engine.compute import Engine
    from ldb_hpc.engine.job import Job
    from ldb_hpc.engine.sources import open_source
    from ldb_hpc.geometry.builder import measure_torsions

    pos, mask, restype, _ = protein
    traj = martini_system(protein, "/dev/null", frames=1, water=0, ions=0)
    src = open_source(traj, "martini3")
    engine = Engine(Job(model=str(placer), cg="martini3"))
    beads = src.read(0, 1).ca
    fitted = engine.rows(beads, src.residues, np.zeros(1, dtype=np.int64))[0, 0]
    bm = engine.model
    plain = bm.inner.backmap(bm.place(torch.from_numpy(beads), src.residues), src.residues,
                             torch.zeros(1, dtype=torch.long))[0, 0].numpy()
    m = mapping("martini3")
    sc = m.bead_mask(restype)
    sc[:, 0] = False

    def bead_error(x):
        got, _ = m.beads(x, rc.SLOT_MASK[restype], restype)
        return np.linalg.norm(got - beads[0], axis=-1)[sc]

    assert np.median(bead_error(fitted)) < 0.7 * np.median(bead_error(plain))
    truth, ok = measure_torsions(torch.from_numpy(pos), torch.from_numpy(restype))
    has = ok[:, 1].numpy() & (restype != rc.RESTYPE_INDEX["PRO"])

    def chi1_right(x):
        tor, _ = measure_torsions(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(restype))
        d = np.rad2deg(np.abs(np.angle(np.exp(1j * (tor[:, 1] - truth[:, 1]).numpy()))))
        return np.mean(d[has] < 40)

    assert chi1_right(fitted) > chi1_right(plain)
    assert np.abs(fitted[:, :3] - plain[:, :3]).max() < 1e-4  # N, CA, C: the backbone is not moved


@pytest.mark.parametrize("case, message", [
    ("missing", "has no bead SC2 (Martini 3 LYS has BB, SC1, SC2)"),
    ("unknown", "has a particle SC9, a bead of no known mapping"),
    ("mixed", "mixed coarse-grained mappings in one file"),
])
def test_bad_martini_input_is_one_error_line_and_nothing_written(case, message, protein, placer, tmp_path,
                                                                  run_cli):
    restype = protein[2]
    lys = int(np.nonzero(restype == rc.RESTYPE_INDEX["LYS"])[0][0])
    gro = tmp_path / "bad.gro"
    if case == "missing":
        martini_system(protein, gro, frames=1, drop=(lys, "SC2"))
    elif case == "unknown":
        martini_system(protein, gro, frames=1, rename=(lys, "SC2", "SC9"))
    else:
        traj = martini_system(protein, tmp_path / "ok.gro", frames=1)
        top = traj.topology.copy()
        res = top.add_residue("ALA", top.chain(0), resSeq=999)
        top.add_atom("CA", md.element.carbon, res)
        md.Trajectory(np.concatenate([traj.xyz, np.zeros((1, 1, 3), np.float32)], 1), top).save_gro(str(gro))
    code, _, err = run_cli("backmap", gro, "-o", tmp_path / "out.h5", "--model", placer, "--no-progress")
    assert_one_line_error(code, err, message)
    assert not list(tmp_path.glob("out.h5*"))


def test_the_martini_source_drops_and_counts_what_is_not_protein(protein, tmp_path):
    from ldb_hpc.engine.sources import detect_mapping, open_source

    martini_system(protein, tmp_path / "s.gro", water=7, ions=2)
    assert detect_mapping(str(tmp_path / "s.gro")) == "martini3"
    with open_source(str(tmp_path / "s.gro"), "martini3") as src:
        assert src.n_residues == L and src.note() == "9 particles dropped (W×7, NA×2)"
        frames = src.read(0, 1)
        assert frames.ca.shape == (1, L, len(MARTINI_BEADS), 3)
        assert int(src.residues.segment.max()) == 0
    with pytest.raises(InputError, match="no Martini protein bead"):
        _water_only(tmp_path)


def _water_only(tmp_path):
    from ldb_hpc.engine.sources import open_source

    top = md.Topology()
    ch = top.add_chain()
    top.add_atom("W", md.element.virtual, top.add_residue("W", ch))
    md.Trajectory(np.zeros((1, 1, 3), np.float32), top).save_gro(str(tmp_path / "w.gro"))
    return open_source(str(tmp_path / "w.gro"), "martini3")


def test_martini_is_one_trajectory_input(tmp_path, run_cli):
    """Several structure files are C-alpha or COM traces; Martini systems come as one trajectory (+ topology)."""
    code, _, err = run_cli("backmap", tmp_path / "a.pdb", tmp_path / "b.pdb", "--cg", "martini3", "-o", tmp_path)
    assert_one_line_error(code, err, "--cg martini3 is for one trajectory input")
