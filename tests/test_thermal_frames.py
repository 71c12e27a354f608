"""scripts/thermal_frames.py on a generated 8-residue peptide (no ../shared data): a few MD steps, the frames read
back as a training set with every atom in its atom14 slot, and a rerun that skips the work its state records."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import numpy as np
import pytest
import torch

from ldb_hpc.chem.protein import Protein, Residues
from ldb_hpc.chem.residues import RESTYPE_INDEX, RESTYPES_3, SLOT_MASK
from ldb_hpc.errors import InputError
from ldb_hpc.io.pdb import protein_to_pdb_string
from ldb_hpc.io.training_set import read_training_set
from ldb_hpc.model.ideal import backmap_ideal

pytest.importorskip("openmm")  # a test dependency (pyproject [test]); never imported by ldb_hpc

SEQUENCE = ("GLY", "SER", "HIS", "CYS", "LYS", "LEU", "ASP", "ALA")
# A few steps only: the point is the plumbing, not the physics.
TINY = dict(equil_ps=0.01, every_ps=0.01, frames=2, min_res=5, min_iterations=50, cutoff_nm=0.0)


@pytest.fixture(scope="module")
def tf(repo_root):
    spec = importlib.util.spec_from_file_location("thermal_frames", repo_root / "scripts" / "thermal_frames.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["thermal_frames"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _peptide(names, drop=None, gap_after=None) -> Protein:
    """An α-helical peptide built by the ideal model from a helical CA trace (complete heavy atoms); drop:
    (residue, slot) to leave out; gap_after: residues after this one are moved 12 Å away (a chain break)."""
    k = np.arange(len(names))
    ca = np.stack([2.3 * np.cos(np.deg2rad(100.0) * k), 2.3 * np.sin(np.deg2rad(100.0) * k), 1.5 * k], -1)
    restype = torch.tensor([RESTYPE_INDEX[n] for n in names])
    pos = backmap_ideal(torch.tensor(ca, dtype=torch.float64), restype, torch.zeros(len(names), dtype=torch.long))
    pos = pos.numpy()
    if gap_after is not None:
        pos[gap_after + 1:] += np.array([12.0, 0.0, 0.0])
    mask = SLOT_MASK[restype.numpy()].copy()
    if drop is not None:
        mask[drop] = False
    res = Residues(restype.numpy(), np.asarray(names), np.full(len(names), "A"), k + 1, np.full(len(names), ""),
                   np.zeros(len(names), np.int64))
    return Protein(res, pos.astype(np.float32) * mask[..., None], mask)


def _write(path, protein):
    path.write_text(protein_to_pdb_string(protein))
    return str(path)


def test_frames_read_back_in_slots_and_rerun_skips(tf, tmp_path, monkeypatch):
    inputs = tmp_path / "in"
    inputs.mkdir()
    _write(inputs / "pep.pdb", _peptide(SEQUENCE))
    _write(inputs / "short.pdb", _peptide(SEQUENCE[:3]))
    out = tmp_path / "out"
    settings = tf.SimSettings(**TINY)
    state = tf.run([str(inputs)], str(out), settings, fixer="modeller")

    key = os.path.abspath(inputs / "pep.pdb")
    assert list(state.done) == [key] and not state.failed
    assert "3 residues" in state.skipped[os.path.abspath(inputs / "short.pdb")]  # recorded, with the reason
    ts = read_training_set(str(out / "thermal.h5"))
    n = len(SEQUENCE)
    assert len(ts) == 2 * n and ts.chains.files == [f"{key}#frame00", f"{key}#frame01"]
    assert [RESTYPES_3[r] for r in ts.restype[:n]] == list(SEQUENCE)
    assert (ts.mask == SLOT_MASK[ts.restype]).all()  # every slot of every residue filled
    pos = ts.positions
    for a, b, ideal in ((0, 1, 1.458), (1, 2, 1.525)):  # N–CA, CA–C
        d = np.linalg.norm(pos[:, a] - pos[:, b], axis=-1)
        assert np.abs(d - ideal).max() < 0.1, (a, b, d)
    peptide = np.linalg.norm(pos[1:n, 0] - pos[: n - 1, 2], axis=-1)  # C–N within frame 0
    assert np.abs(peptide - 1.33).max() < 0.1
    sg_cb = np.linalg.norm(pos[:n][3, 5] - pos[:n][3, 4])  # CYS SG in slot 5, bonded to CB
    assert abs(sg_cb - 1.81) < 0.1
    assert not np.allclose(pos[:n], pos[n:])  # two different frames
    shard = out / "shards" / state.done[key].shard
    assert read_training_set(str(shard)).positions.shape == pos.shape
    raw = json.loads((out / "state.json").read_text())
    assert raw["done"][key]["frames"] == 2 and raw["settings"]["frames"] == 2

    # A rerun does nothing: every input is done or skipped (process_file would raise if called).
    mtime = (out / "thermal.h5").stat().st_mtime_ns

    def boom(*a, **k):
        raise AssertionError("rerun processed an input again")

    monkeypatch.setattr(tf, "process_file", boom)
    again = tf.run([str(inputs)], str(out), settings, fixer="modeller")
    assert list(again.done) == [key] and (out / "thermal.h5").stat().st_mtime_ns == mtime
    with pytest.raises(InputError, match="settings differ"):  # a mixed set is refused
        tf.run([str(inputs)], str(out), tf.SimSettings(**{**TINY, "temperature_k": 350.0}))


def test_missing_heavy_atom_completed_or_named(tf, tmp_path):
    """A side-chain atom missing from the input: PDBFixer rebuilds it; without PDBFixer the input is skipped with
    the reason named (never silently)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    _write(inputs / "gap.pdb", _peptide(SEQUENCE, drop=(4, 8)))  # LYS NZ
    state = tf.run([str(inputs)], str(tmp_path / "out"), tf.SimSettings(**TINY))
    key = os.path.abspath(inputs / "gap.pdb")
    if tf._have_pdbfixer():
        assert key in state.done, state
        ts = read_training_set(str(tmp_path / "out" / "thermal.h5"))
        nz = np.linalg.norm(ts.positions[4, 8] - ts.positions[4, 7])  # LYS CE–NZ
        assert ts.mask[4, 8] and abs(nz - 1.49) < 0.1
    else:
        assert "PDBFixer is not installed" in state.skipped[key]


def test_chain_break_stays_a_break(tf, tmp_path):
    """Two pieces of one chain 12 Å apart are simulated as separate chains: no peptide bond is made across."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    _write(inputs / "broken.pdb", _peptide(SEQUENCE, gap_after=3))
    state = tf.run([str(inputs)], str(tmp_path / "out"), tf.SimSettings(**TINY), fixer="modeller")
    assert len(state.done) == 1, state
    ts = read_training_set(str(tmp_path / "out" / "thermal.h5"))
    assert ts.segment[:8].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert np.linalg.norm(ts.positions[4, 0] - ts.positions[3, 2]) > 5.0  # C(3)–N(4) never bonded


def test_seed_is_per_input_and_nonzero(tf):
    a, b = tf.input_seed(0, "x.pdb"), tf.input_seed(0, "y.pdb")
    assert a != b and a == tf.input_seed(0, "x.pdb") and min(a, b) > 0 and tf.input_seed(1, "x.pdb") != a


def test_same_seed_same_frames(tf, tmp_path):
    """Completion (PDBFixer / Modeller place atoms with Python's random) and MD are both seeded: equal frames."""
    path = _write(tmp_path / "pep.pdb", _peptide(SEQUENCE, drop=(4, 8) if tf._have_pdbfixer() else None))
    settings = tf.SimSettings(**TINY)
    a, b = (tf.process_file(path, "pep", settings) for _ in range(2))
    assert np.array_equal(np.stack([f.positions for f in a.frames]), np.stack([f.positions for f in b.frames]))


def test_without_pdbfixer_missing_atoms_are_a_named_skip(tf, tmp_path, monkeypatch):
    monkeypatch.setattr(tf, "_have_pdbfixer", lambda: False)
    inputs = tmp_path / "in"
    inputs.mkdir()
    _write(inputs / "gap.pdb", _peptide(SEQUENCE, drop=(4, 8)))
    state = tf.run([str(inputs)], str(tmp_path / "out"), tf.SimSettings(**TINY))
    assert "1 heavy atoms missing and PDBFixer is not installed" in state.skipped[os.path.abspath(inputs / "gap.pdb")]
    assert not state.done and not (tmp_path / "out" / "thermal.h5").exists()


def test_several_runs_merge_into_one_set(tf, tmp_path, capsys):
    """`merge A B --to FILE`: the done inputs of runs that differ only in which inputs they take become one set
    (an input done in both once); other simulation settings, or several runs without --to, are refused."""
    dirs = {}
    for name, seq, extra in (("a", SEQUENCE, {}), ("b", SEQUENCE[2:], {"max_res": 50, "seed": 4})):
        (tmp_path / name).mkdir()
        path = _write(tmp_path / name / f"{name}.pdb", _peptide(seq))
        dirs[name] = str(tmp_path / f"run_{name}")
        tf.run([path], dirs[name], tf.SimSettings(**TINY, **extra), fixer="modeller")
    dest = tmp_path / "all.h5"
    assert tf.main(["merge", dirs["a"], dirs["b"], dirs["a"], "--to", str(dest)]) == 0
    ts = read_training_set(str(dest))
    assert [f.rsplit("/", 1)[-1] for f in ts.chains.files] == ["a.pdb#frame00", "a.pdb#frame01", "b.pdb#frame00",
                                                               "b.pdb#frame01"]
    assert len(ts) == 2 * len(SEQUENCE) + 2 * len(SEQUENCE[2:])
    capsys.readouterr()
    assert tf.main(["merge", dirs["a"], dirs["b"]]) == 2 and "--to" in capsys.readouterr().err
    hot = str(tmp_path / "run_hot")
    tf.run([str(tmp_path / "a" / "a.pdb")], hot, tf.SimSettings(**{**TINY, "temperature_k": 350.0}), fixer="modeller")
    assert tf.main(["merge", dirs["a"], hot, "--to", str(tmp_path / "x.h5")]) == 2
    assert "other simulation settings" in capsys.readouterr().err and not (tmp_path / "x.h5").exists()
