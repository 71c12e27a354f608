"""``ldb-hpc synth`` and the elastic-network dynamics of :mod:`ldb_hpc.synth`."""

from __future__ import annotations

import os

import mdtraj as md
import numpy as np
import pytest
from conftest import assert_one_line_error

from ldb_hpc.chem.protein import Protein, Residues
from ldb_hpc.chem.residues import NUM_SLOTS, RESTYPE_INDEX
from ldb_hpc.io.cg import CGTrajectory
from ldb_hpc.io.pdb import write_pdb
from ldb_hpc.synth import brownian_chunks, brownian_frames, elastic_network


def _helix(n: int, chain: str = "A") -> np.ndarray:
    """[n, 3] Å: CA positions of an ideal α-helix (1.5 Å rise, 100° per residue, radius 2.3 Å; CA–CA ≈ 3.8 Å)."""
    t = np.deg2rad(100.0) * np.arange(n)
    return np.stack([2.3 * np.cos(t), 2.3 * np.sin(t), 1.5 * np.arange(n)], -1)


@pytest.fixture
def two_chain_pdb(tmp_path):
    """A CA-only PDB: chain A (12 residues) and chain B (9 residues) side by side."""
    names = ["ALA", "GLY", "SER", "LYS", "LEU", "GLU", "VAL", "PHE", "TRP", "ARG", "ASP", "PRO"]
    ca = np.concatenate([_helix(12), _helix(9) + [9.0, 0.0, 0.0]])
    n = len(ca)
    resname = np.array(names + names[:9], dtype=object)
    chain = np.array(["A"] * 12 + ["B"] * 9, dtype=object)
    residues = Residues([RESTYPE_INDEX[r] for r in resname], resname, chain,
                        np.r_[np.arange(1, 13), np.arange(1, 10)], [""] * n, [0] * 12 + [1] * 9)
    pos = np.zeros((n, NUM_SLOTS, 3), np.float32)
    pos[:, 1] = ca
    mask = np.zeros((n, NUM_SLOTS), bool)
    mask[:, 1] = True
    path = tmp_path / "two.pdb"
    write_pdb(Protein(residues, pos, mask, "two"), path)
    return path


def test_synth_from_pdb_frames_chains_and_ca_ca(two_chain_pdb, tmp_path, run_cli):
    out = tmp_path / "big.h5"
    code, stdout, err = run_cli("synth", "--frames", 250, "--from", two_chain_pdb, "-o", out, "--chunk", 64)
    assert code == 0, err
    assert "250 frames, 21 residues" in stdout
    traj = md.load(str(out))
    assert traj.n_frames == 250 and traj.n_atoms == 21
    assert [c.n_residues for c in traj.topology.chains] == [12, 9]
    assert {a.name for a in traj.topology.atoms} == {"CA"}
    np.testing.assert_allclose(traj.time, np.arange(250) * 10.0)
    ca = traj.xyz * 10.0  # Å
    links = np.r_[np.arange(11), np.arange(12, 20)]  # within each chain
    cc = np.linalg.norm(ca[:, links + 1] - ca[:, links], axis=-1)
    assert abs(cc.mean() - 3.8) < 0.1 and cc.min() > 3.0 and cc.max() < 4.6
    # It moves: later frames differ from the first, but the structure stays folded (no drift / blow-up).
    rmsd = np.sqrt(((ca - ca[0]) ** 2).sum(-1).mean(-1))
    assert rmsd[-1] > 0.2 and rmsd.max() < 5.0
    with CGTrajectory(str(out)) as cg:
        assert int(cg.residues.segment.max()) + 1 == 2  # the chain break is kept


def test_same_seed_same_frames_for_any_chunk(tmp_path, run_cli, repo_root):
    src = repo_root / "examples" / "example.cg.h5"
    xyz = {}
    for chunk in (7, 1000):
        out = tmp_path / f"c{chunk}.h5"
        code, _, err = run_cli("synth", "--frames", 30, "--from", src, "-o", out, "--chunk", chunk,
                               "--seed", 5, "--steps", 5)
        assert code == 0, err
        xyz[chunk] = md.load(str(out)).xyz
    np.testing.assert_array_equal(xyz[7], xyz[1000])
    out = tmp_path / "other_seed.h5"
    assert run_cli("synth", "--frames", 30, "--from", src, "-o", out, "--seed", 6, "--steps", 5)[0] == 0
    assert np.abs(md.load(str(out)).xyz - xyz[7]).max() > 1e-3


def test_frames_are_written_chunk_by_chunk(tmp_path, run_cli, repo_root, monkeypatch):
    from ldb_hpc.io.cg import CGWriter

    sizes = []
    original = CGWriter.append

    def spy(self, ca, *a, **k):
        sizes.append(len(ca))
        return original(self, ca, *a, **k)

    monkeypatch.setattr(CGWriter, "append", spy)
    out = tmp_path / "chunks.h5"
    code, _, err = run_cli("synth", "--frames", 45, "--from", repo_root / "examples" / "example.cg.h5",
                           "-o", out, "--chunk", 20, "--steps", 2)
    assert code == 0, err
    assert sizes == [20, 20, 5]
    assert md.load(str(out)).n_frames == 45


def test_chunks_generator_matches_whole_and_keeps_centre():
    ca0 = _helix(15)
    residues = Residues([0] * 15, ["ALA"] * 15, ["A"] * 15, np.arange(15), [""] * 15, [0] * 15)
    pairs, rest, k = elastic_network(ca0, residues, cutoff=10.0)
    assert (pairs[:, 0] < pairs[:, 1]).all()
    assert (k[pairs[:, 1] == pairs[:, 0] + 1] == 100.0).all() and (k[pairs[:, 1] > pairs[:, 0] + 1] == 1.0).all()
    np.testing.assert_allclose(rest, np.linalg.norm(ca0[pairs[:, 1]] - ca0[pairs[:, 0]], axis=-1))
    whole = brownian_frames(ca0, pairs, rest, k, frames=11, steps=3, seed=1)
    parts = list(brownian_chunks(ca0, pairs, rest, k, frames=11, steps=3, seed=1, chunk=4))
    assert [len(p) for p in parts] == [4, 4, 3]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    np.testing.assert_allclose(whole.mean(axis=1), np.broadcast_to(ca0.mean(0), (11, 3)), atol=1e-4)


def test_network_blocks_equal_full_matrix(monkeypatch):
    """The row-blocked distance computation (memory O(block·L)) gives the same springs as one block."""
    import ldb_hpc.synth as synth

    rng = np.random.default_rng(0)
    ca0 = np.cumsum(rng.normal(size=(40, 3)) * 2.2, axis=0)
    residues = Residues([0] * 40, ["ALA"] * 40, ["A"] * 40, np.arange(40), [""] * 40, [0] * 20 + [1] * 20)
    full = elastic_network(ca0, residues)
    monkeypatch.setattr(synth, "_ROW_BLOCK", 7)
    blocked = elastic_network(ca0, residues)
    for a, b in zip(full, blocked):
        np.testing.assert_array_equal(a, b)
    # No stiff spring across the segment break (19 → 20).
    i, j = full[0][:, 0], full[0][:, 1]
    assert not ((i == 19) & (j == 20) & (full[2] == 100.0)).any()


@pytest.mark.parametrize("args, message", [
    (["--frames", 0], "--frames must be at least 1"),
    (["--frames", 5, "--chunk", 0], "--chunk must be at least 1"),
    (["--frames", 5, "--steps", 0], "--steps must be at least 1"),
    (["--frames", 5, "--dt-ps", -1], "--dt-ps must be positive"),
])
def test_bad_numbers_one_line_error(args, message, tmp_path, run_cli, repo_root):
    out = tmp_path / "x.h5"
    code, _, err = run_cli("synth", *args, "--from", repo_root / "examples" / "example.cg.h5", "-o", out)
    assert_one_line_error(code, err, message)
    assert not out.exists()


def test_bad_sources_and_outputs(tmp_path, run_cli, repo_root, two_chain_pdb):
    out = tmp_path / "x.h5"
    code, _, err = run_cli("synth", "--frames", 3, "--from", tmp_path / "missing.pdb", "-o", out)
    assert_one_line_error(code, err, "missing.pdb")
    junk = tmp_path / "junk.pdb"
    junk.write_text("this is not a structure\n")
    code, _, err = run_cli("synth", "--frames", 3, "--from", junk, "-o", out)
    assert_one_line_error(code, err)
    bad_h5 = tmp_path / "trunc.h5"
    bad_h5.write_bytes((repo_root / "examples" / "example.cg.h5").read_bytes()[:5000])
    code, _, err = run_cli("synth", "--frames", 3, "--from", bad_h5, "-o", out)
    assert_one_line_error(code, err)
    assert not out.exists()
    # An existing output is left untouched without --overwrite; the input is never the output.
    out.write_bytes(b"keep me")
    code, _, err = run_cli("synth", "--frames", 3, "--from", two_chain_pdb, "-o", out)
    assert_one_line_error(code, err, "output exists")
    assert out.read_bytes() == b"keep me"
    code, _, err = run_cli("synth", "--frames", 3, "--from", two_chain_pdb, "-o", two_chain_pdb, "--overwrite")
    assert_one_line_error(code, err, "overwrite the input")
    code, _, err = run_cli("synth", "--frames", 3, "--from", two_chain_pdb, "-o", tmp_path / "no" / "x.h5")
    assert_one_line_error(code, err, "does not exist")
    assert run_cli("synth", "--frames", 3, "--from", two_chain_pdb, "-o", out, "--overwrite")[0] == 0
    assert md.load(str(out)).n_frames == 3
    assert not [p for p in os.listdir(tmp_path) if ".tmp." in p]  # no temp file left behind
