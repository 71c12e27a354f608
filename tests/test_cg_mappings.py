"""Coarse-grained mappings (ldb_hpc.chem.cg_mappings), ``coarsen --cg com``, the COM source's segments, the refusal
of a COM trace passed as C-alphas, and the CA placer (ldb_hpc.model.placement): its training, files and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error
from test_model import _helix_protein
from test_training_set import write_training_set

from ldb_hpc.chem import residues as rc
from ldb_hpc.chem.cg_mappings import MARTINI_BEADS, MASS, mapping, parse_map_atoms
from ldb_hpc.errors import InputError


def test_com_is_the_mass_weighted_centre_of_the_atoms_present():
    pos, mask, restype, _ = _helix_protein(12)
    pos, mask, restype = pos[0].numpy(), mask[0].numpy().copy(), restype.numpy()
    mask[3, 6:] = False  # a residue with missing side-chain atoms
    beads, placed = mapping("com").beads(pos, mask, restype)
    assert beads.shape == (12, 1, 3) and placed.all()
    for i in (0, 3, 7):
        t = restype[i]
        m = rc.SLOT_MASK[t] & mask[i]
        w = np.array([MASS[e] for e in rc.SLOT_ELEMENT[t][m]])
        np.testing.assert_allclose(beads[i, 0], (w[:, None] * pos[i][m]).sum(0) / w.sum(), atol=1e-4)
    tb, tp = mapping("com").beads(torch.from_numpy(pos), torch.from_numpy(mask), restype)
    np.testing.assert_allclose(tb.numpy(), beads, atol=1e-4)  # numpy and torch agree
    ca, _ = mapping("ca").beads(pos, mask, restype)
    np.testing.assert_allclose(ca[:, 0], pos[:, 1], atol=1e-6)


def test_martini3_beads_come_from_vermouths_mapping_files():
    """The bead table is read from the vermouth package's martini3001 files, not typed here: Martini 3 gives
    ALA BB+SC1, GLY BB only, LYS two side-chain beads, TRP five; PHE's ring atoms CD1/CD2 are shared between
    beads by the times they are listed; ``!`` marks atoms that add no weight."""
    m = mapping("martini3")
    names = dict(zip(rc.RESTYPES_3, m.bead_names))
    assert names["GLY"] == ("BB",) and names["ALA"] == ("BB", "SC1") and names["LYS"] == ("BB", "SC1", "SC2")
    assert names["TRP"] == MARTINI_BEADS and len(names["TYR"]) == 5
    phe, slot = rc.RESTYPE_INDEX["PHE"], rc.ATOM14["PHE"].index("CD1")
    # "CD1 SC1 SC2 SC2": a third of its mass to SC1, two thirds to SC2 (vermouth counts each listing)
    assert m.weights[phe, 1, slot] == pytest.approx(MASS["C"] / 3)
    assert m.weights[phe, 2, slot] == pytest.approx(2 * MASS["C"] / 3)
    assert set(np.nonzero(m.weights[rc.RESTYPE_INDEX["GLY"], 0])[0]) == {0, 1, 2, 3}  # BB = N, CA, C, O
    parsed = parse_map_atoms("[ atoms ]\n 1 N BB\n 2 HA !BB\n 3 CG SC1 SC2 ; shared\n[ chiral ]\n CB CA N C\n")
    assert parsed == [("N", ["BB"]), ("HA", ["!BB"]), ("CG", ["SC1", "SC2"])]


def test_coarsen_com_then_backmap_as_ca_is_refused(shared_data, tmp_path, run_cli):
    """``coarsen --cg com`` writes the COM of each residue (named CA, as CALVADOS does); handing that trace to the
    C-alpha path is one error line naming --cg com, and nothing is written."""
    from ldb_hpc.engine.sources import open_source
    from ldb_hpc.io.structure import read_structure

    ref = shared_data / "test" / "casp12" / "T0922.pdb"
    com = tmp_path / "t.com.h5"
    code, out, err = run_cli("coarsen", ref, "--cg", "com", "-o", com)
    assert code == 0, err
    protein = read_structure(str(ref))
    protein = protein[0] if isinstance(protein, list) else protein
    expect, _ = mapping("com").beads(protein.positions, protein.mask, protein.residues.restype)
    with open_source(str(com), "com") as src:
        np.testing.assert_allclose(src.read(0, 1).ca[0], expect[:, 0], atol=1e-3)
        assert src.residues.segment.max() == 0  # one chain, no break at COM spacing
    with pytest.raises(InputError, match="pass --cg com"):
        open_source(str(com), "ca")
    code, _, err = run_cli("backmap", com, "-o", tmp_path / "x.h5", "--no-progress")
    assert_one_line_error(code, err, "not spaced as C-alphas")
    assert not list(tmp_path.glob("x.h5*"))
    ca = tmp_path / "t.ca.h5"
    assert run_cli("coarsen", ref, "-o", ca)[0] == 0
    with open_source(str(ca), "ca") as src:  # a real C-alpha trace passes the check
        assert src.n_frames == 1


def test_a_placer_trains_resumes_and_feeds_the_ca_model(tmp_path, run_cli):
    """`ldb-hpc train placement --cg com` on a tiny set: the CA error falls, the run resumes, the placer files
    carry a hash that an edit breaks, and `backmap --cg com --model DIR` places CAs then builds every atom."""
    from ldb_hpc.engine.compute import Engine
    from ldb_hpc.engine.job import Job
    from ldb_hpc.model.placement import PlacedBackmapper, load_placer

    pos, mask, restype, segment = _helix_protein(40)
    data = write_training_set(tmp_path / "train.h5", [(pos[0].numpy(), mask[0].numpy(), restype.numpy(),
                                                      segment.numpy())])
    out = tmp_path / "place"
    args = ["train", "placement", "--cg", "com", "--data", data, "--out", out, "--windows", 2, "--crop", 24,
            "--log-every", 1, "--save-every", 5, "--lr", 3e-3, "--threads", 1]
    code, _, err = run_cli(*args, "--steps", 5)
    assert code == 0, err
    code, _, err = run_cli(*args, "--steps", 40)
    assert code == 0 and "resuming placement at step 5" in err, err
    hist = [h for h in json.loads((out / "history.json").read_text()) if "ca_rmsd" in h]
    assert hist[-1]["ca_rmsd"] < hist[0]["ca_rmsd"]
    placer, config = load_placer(out / "model")
    assert placer.cfg.cg == "com" and config["ca_model"] == "ldb-default"
    beads, _ = mapping("com").beads(pos[0].numpy(), mask[0].numpy(), restype.numpy())
    from ldb_hpc.chem.protein import Residues

    res = Residues(restype.numpy(), np.array([rc.RESTYPES_3[t] for t in restype]), np.array(["A"] * 40),
                   np.arange(1, 41), np.array([""] * 40), segment.numpy())
    engine = Engine(Job(model=str(out / "model"), cg="com"))
    assert isinstance(engine.model, PlacedBackmapper)
    rows = engine.rows(beads[None, :, 0], res, np.zeros(1, dtype=np.int64))
    assert rows.shape == (1, 1, 40, 14, 3) and np.isfinite(rows).all()
    placed = engine.model.place(torch.from_numpy(beads[None]), res)[0].numpy()
    np.testing.assert_allclose(rows[0, 0, :, 1], placed, atol=1e-4)  # the CA model keeps the placed CAs
    with pytest.raises(InputError, match="reads com beads, not C-alphas; pass --cg com"):
        Engine(Job(model=str(out / "model")))
    with pytest.raises(InputError, match="--model ideal reads C-alpha traces"):
        Engine(Job(model="ideal", cg="com"))
    weights = out / "model" / "placer.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(InputError, match="do not match the hash"):
        load_placer(out / "model")
    code, _, err = run_cli("train", "placement", "--data", data, "--out", tmp_path / "p2", "--steps", 1)
    assert_one_line_error(code, err, "needs --cg com|martini3")


def test_com_runs_keep_every_guarantee_of_the_ca_path(tmp_path, run_cli, monkeypatch):
    """A COM trajectory through the whole command: rows independent of --batch-frames, the seed decides the
    samples, an interrupted-then-resumed run equals one run, --hydrogens adds OXT and hydrogens, and the summary
    records the mapping in its provenance."""
    import mdtraj as md
    from test_runtime import make_cg

    from ldb_hpc.model.placement import BeadPlacer, PlacerConfig, save_placer

    torch.manual_seed(0)
    placer_dir = tmp_path / "placer"
    save_placer(BeadPlacer(PlacerConfig(cg="com", dim=16, layers=1, rounds=1)), placer_dir, "ldb-default")
    aa = tmp_path / "aa.h5"
    assert run_cli("backmap", make_cg(tmp_path / "ca.h5", n_frames=6), "-o", aa, "--no-progress")[0] == 0
    com = tmp_path / "com.h5"
    assert run_cli("coarsen", aa, "--cg", "com", "-o", com)[0] == 0
    common = ["--cg", "com", "--model", placer_dir, "--no-progress", "--samples", 2, "--seed", 4]
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    assert run_cli("backmap", com, "-o", a, "--batch-frames", 4, *common)[0] == 0
    assert run_cli("backmap", com, "-o", b, "--batch-frames", 1, *common)[0] == 0
    ta, tb = md.load(str(a)), md.load(str(b))
    assert ta.n_frames == 12 and np.abs(ta.xyz - tb.xyz).max() < 1e-4
    assert np.abs(ta.xyz[0] - ta.xyz[1]).max() > 0.01  # two samples of frame 0 differ
    h = tmp_path / "h.h5"
    code, _, err = run_cli("backmap", com, "-o", h, "--hydrogens", *common)
    assert code == 0, err
    th = md.load(str(h))
    assert th.n_atoms > ta.n_atoms and any(x.element.symbol == "H" for x in th.topology.atoms)
    heavy = [x.index for x in th.topology.atoms if x.element.symbol != "H" and x.name != "OXT"]
    assert np.abs(th.xyz[:, heavy] - ta.xyz).max() < 1e-4
    summary = json.loads((tmp_path / "a.h5.summary.json").read_text())
    assert summary["model"]["name"] == "placer" and summary["rows"] == 12
    r = tmp_path / "r.h5"
    monkeypatch.setenv("LDB_HPC_TEST_FAIL_RANK", "0")  # the last chunk fails: the run stops unpublished
    code, _, err = run_cli("backmap", com, "-o", r, "--batch-frames", 4, *common)
    assert code == 1 and not r.exists()
    monkeypatch.delenv("LDB_HPC_TEST_FAIL_RANK")
    code, _, err = run_cli("backmap", com, "-o", r, "--batch-frames", 4, "--resume", *common)
    assert code == 0, err
    assert np.array_equal(md.load(str(r)).xyz, ta.xyz)  # resumed = uninterrupted
