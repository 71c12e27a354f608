"""``ldb-hpc synth`` and the dynamics of :mod:`ldb_hpc.synth`: the protein-like CA model (its forces against its
energy, the acceptance bounds on every frame, the neighbour list, determinism) and the elastic network alone."""

from __future__ import annotations

import dataclasses
import os

import mdtraj as md
import numpy as np
import pytest
from conftest import assert_one_line_error

from ldb_hpc.chem.protein import Protein, Residues
from ldb_hpc.chem.residues import NUM_SLOTS, RESTYPE_INDEX
from ldb_hpc.io.cg import CGTrajectory
from ldb_hpc.io.pdb import write_pdb
from ldb_hpc.synth import (
    CORE,
    TAU_WIDTH,
    THETA_MAX,
    THETA_MIN,
    THETA_WIDTH,
    SimulationStats,
    brownian_chunks,
    brownian_frames,
    ca_model,
    elastic_network,
    load_reference,
    potential_energy,
    simulate_chunks,
    simulate_frames,
    virtual_angles,
    virtual_dihedrals,
)


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
    assert "250 frames, 21 residues" in stdout and "CA(i)-CA(i+2) min" in stdout
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
    import ldb_hpc.synth.dynamics as synth

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


# ----------------------------------------------------------------------------------------------------
# The protein-like CA model


def _kabsch_rmsd(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """[F, L, 3], [L, 3] Å → [F] Å: RMSD after optimal superposition."""
    xc, y = x - x.mean(1, keepdims=True), ref - ref.mean(0)
    u, s, vt = np.linalg.svd(np.einsum("fli,lj->fij", xc, y))
    s[:, -1] *= np.sign(np.linalg.det(u @ vt))
    return np.sqrt(np.maximum((xc ** 2).sum((1, 2)) + (y ** 2).sum() - 2 * s.sum(-1), 0) / len(ref))


def _nonbonded_min(x: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """[F, L, 3] Å → [F]: the shortest CA–CA distance between non-bonded beads (|i−j| ≥ 3, or two segments)."""
    n = x.shape[1]
    i, j = np.triu_indices(n, 1)
    keep = (segment[i] != segment[j]) | (j - i >= 3)
    return np.linalg.norm(x[:, j[keep]] - x[:, i[keep]], axis=-1).min(-1)


def test_example_frames_stay_protein_like(repo_root):
    """Acceptance on the bundled example (135 residues, two segments, real contacts at 4.1–4.4 Å): in every
    frame CA(i)–CA(i+2) ≥ 4.4 Å, non-bonded CA–CA ≥ 3.8 Å, virtual bonds within 0.45 Å of the reference's own
    (mean 3.8 ± 0.05), angles within 8° of their range, dihedrals within 50° of the reference's own, RMSD ≤ 2 Å;
    and in median the angles and dihedrals stay as near the reference's own as those of two real structures of one
    protein (2.6° / 3.9° between bound and unbound structures; 4.9° / 7.0° with free flat bottoms)."""
    residues, ca0 = load_reference(str(repo_root / "examples" / "example.cg.h5"))
    model = ca_model(ca0, residues)
    stats = SimulationStats()
    x = np.concatenate(list(simulate_chunks(model, 400, 5, seed=3, chunk=100, stats=stats))).astype(np.float64)
    assert stats.steps == 2000 and stats.separations > 0  # the hard cores did act
    link = residues.peptide_links()
    in3 = link[:-1] & link[1:]
    in4 = in3[:-1] & in3[1:]
    d13 = np.linalg.norm(x[:, 2:] - x[:, :-2], axis=-1)[:, in3]
    assert d13.min() >= 4.4
    assert _nonbonded_min(x, residues.segment).min() >= 3.8
    bond = np.linalg.norm(x[:, 1:] - x[:, :-1], axis=-1)[:, link]
    bond0 = np.linalg.norm(ca0[1:] - ca0[:-1], axis=-1)[link]
    assert np.abs(bond - bond0).max() < 0.45 and abs(bond.mean() - 3.8) < 0.05
    theta = virtual_angles(x)[:, in3]
    slack = np.deg2rad(8.0)
    assert (theta >= model.theta_lo[in3] - slack).all() and (theta <= model.theta_hi[in3] + slack).all()
    dtau = np.abs((virtual_dihedrals(x) - model.tau0 + np.pi) % (2 * np.pi) - np.pi)[:, in4]
    assert dtau.max() < TAU_WIDTH + np.deg2rad(20.0)
    assert np.median(np.abs(theta - virtual_angles(ca0)[in3])) < np.deg2rad(3.5)
    assert np.median(dtau) < np.deg2rad(5.0)
    rmsd = _kabsch_rmsd(x, ca0)
    assert rmsd.max() < 2.0 and rmsd[-1] > 0.3  # it moves, and stays near the fold


def _chain(n: int, seed: int) -> np.ndarray:
    """[n, 3] Å: a random compact-ish CA chain, 3.8 Å bonds, angles near 110° (no restraint holds it there)."""
    rng = np.random.default_rng(seed)
    x = [np.zeros(3), np.array([3.8, 0.0, 0.0])]
    d = np.array([1.0, 0.0, 0.0])
    for _ in range(n - 2):
        r = rng.normal(size=3)
        r -= r.dot(d) * d
        d = np.cos(np.deg2rad(70.0)) * d + np.sin(np.deg2rad(70.0)) * r / np.linalg.norm(r)
        x.append(x[-1] + 3.8 * d)
    return np.array(x)


def test_forces_are_minus_the_gradient_of_the_energy():
    """The fast forces (dense slices, flat bottoms, a segment break) against central differences of the
    loop-clear potential_energy, with every kind of term active."""
    from ldb_hpc.synth.dynamics import _Forces

    ca0 = _chain(14, 1)
    residues = Residues([0] * 14, ["ALA"] * 14, ["A"] * 14, np.arange(14), [""] * 14, [0] * 8 + [1] * 6)
    model = ca_model(ca0, residues)
    theta0 = virtual_angles(ca0)  # narrow angle ranges, so that angles leave them on both sides
    inside = model.theta_hi < np.pi
    model = dataclasses.replace(model, theta_lo=np.where(inside, theta0 - 0.05, 0.0),
                                theta_hi=np.where(inside, theta0 + 0.05, np.pi))
    x = ca0 + np.random.default_rng(2).normal(size=ca0.shape) * 0.7
    theta, dtau = virtual_angles(x), (virtual_dihedrals(x) - model.tau0 + np.pi) % (2 * np.pi) - np.pi
    assert (theta < model.theta_lo).sum() >= 2 and (theta > model.theta_hi).sum() >= 2
    assert (np.abs(dtau) > model.tau_width).sum() >= 2
    forces = _Forces(model)
    forces.build(x)
    forces.core[:] = 0.0  # no hard-core moves: compare forces at exactly this x
    f = forces(x.copy())
    g, h = np.zeros_like(x), 1e-6
    for a in range(len(x)):
        for c in range(3):
            xp, xm = x.copy(), x.copy()
            xp[a, c] += h
            xm[a, c] -= h
            g[a, c] = -(potential_energy(model, xp) - potential_energy(model, xm)) / (2 * h)
    np.testing.assert_allclose(f, g, atol=1e-5 * np.abs(g).max())
    # A restraint that spans the break (triple 6-7-8, quad 5..8) is empty.
    assert not inside[6] and model.tau_width[5] == np.pi


def test_model_ranges_take_in_the_reference():
    ca0 = _helix(10)
    residues = Residues([0] * 10, ["ALA"] * 10, ["A"] * 10, np.arange(10), [""] * 10, [0] * 10)
    model = ca_model(ca0, residues)
    theta0 = virtual_angles(ca0)  # 91°: the range is 91 ± 13.6°, inside [79.6°, 153.2°]
    np.testing.assert_allclose(model.theta_lo, np.maximum(THETA_MIN, theta0 - THETA_WIDTH))
    np.testing.assert_allclose(model.theta_hi, np.minimum(THETA_MAX, theta0 + THETA_WIDTH))
    bent = np.pi - 0.2  # 168.5°, beyond THETA_MAX: the range runs from 13.6° below it up to it
    odd = ca_model(np.array([[0.0, 0, 0], [3.8, 0, 0], [3.8 + 3.8 * np.cos(0.2), 3.8 * np.sin(0.2), 0]]),
                   residues.select(slice(0, 3)))
    assert odd.theta_lo[0] == pytest.approx(bent - THETA_WIDTH) and odd.theta_hi[0] == pytest.approx(bent)
    np.testing.assert_allclose(model.tau0, virtual_dihedrals(ca0))
    assert potential_energy(model, ca0) == pytest.approx(0.0, abs=1e-9)  # the reference is at rest


def test_same_seed_same_frames_any_chunk_and_any_skin(monkeypatch):
    """Bit-identical frames for any chunk size, and for any neighbour-list skin: the list never misses a pair
    (the extra pairs of a larger skin add exact zeros) and rebuilds depend only on the state."""
    import ldb_hpc.synth.dynamics as synth

    ca0 = _chain(30, 3)
    residues = Residues([0] * 30, ["ALA"] * 30, ["A"] * 30, np.arange(30), [""] * 30, [0] * 16 + [1] * 14)
    model = ca_model(ca0, residues)
    whole = simulate_frames(model, 60, 4, seed=9)
    parts = list(simulate_chunks(model, 60, 4, seed=9, chunk=7))
    assert [len(p) for p in parts] == [7] * 8 + [4]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    for skin in (0.3, 30.0):  # rebuilt almost every step / holding every pair
        monkeypatch.setattr(synth, "SKIN", skin)
        stats = SimulationStats()
        np.testing.assert_array_equal(np.concatenate(list(simulate_chunks(model, 60, 4, seed=9, stats=stats))),
                                      whole)
        assert (stats.builds > 20) == (skin < 1.0)
    assert np.abs(simulate_frames(model, 60, 4, seed=10) - whole).max() > 1e-3
    np.testing.assert_allclose(whole.mean(axis=1), np.broadcast_to(ca0.mean(0), (60, 3)), atol=1e-4)


def test_neighbour_list_blocks_equal_one_block(monkeypatch):
    import ldb_hpc.synth.dynamics as synth

    ca0 = _chain(50, 4)
    residues = Residues([0] * 50, ["ALA"] * 50, ["A"] * 50, np.arange(50), [""] * 50, [0] * 25 + [1] * 25)
    model = ca_model(ca0, residues)
    full = synth._close_nonbonded(model, ca0, 9.0)
    monkeypatch.setattr(synth, "_PAIR_BLOCK", 100)  # two rows at a time
    np.testing.assert_array_equal(synth._close_nonbonded(model, ca0, 9.0), full)
    i, j = np.triu_indices(50, 1)
    d = np.linalg.norm(ca0[j] - ca0[i], axis=-1)
    keep = (d < 9.0) & model.nonbonded(i, j)
    np.testing.assert_array_equal(full, np.stack([i[keep], j[keep]], -1))
    same = residues.segment[full[:, 0]] == residues.segment[full[:, 1]]
    assert (full[same, 1] - full[same, 0] >= 3).all() and (full[~same, 1] - full[~same, 0] < 3).any()


def test_large_protein_memory_is_linear(monkeypatch):
    """3,000 residues (a chain folded back on itself): the pair list holds O(L) pairs and a few frames run, the
    hard core holding in every frame; the neighbour list is built in blocks (memory O(block + pairs))."""
    import ldb_hpc.synth.dynamics as synth

    n = 3000
    ca0 = np.concatenate([_helix(n // 2), _helix(n // 2)[::-1] + [9.0, 0.0, 0.0]])
    residues = Residues([0] * n, ["ALA"] * n, ["A"] * n, np.arange(n), [""] * n, [0] * (n // 2) + [1] * (n // 2))
    model = ca_model(ca0, residues)
    forces = synth._Forces(model)
    forces.build(ca0)
    assert len(forces.i) < 60 * n
    x = simulate_frames(model, 3, 2, seed=1)
    assert _nonbonded_min(x[:, ::7].astype(np.float64), residues.segment[::7]).min() >= CORE - 1e-3


def test_regularise_moves_a_distorted_trace_into_range_and_a_real_one_barely(repo_root):
    """Frame 0 of the example (a frame of the old network-only dynamics: CA(i)–CA(i+3) down to 4.09 Å, angles up
    to 166°) comes out with every local distance at or above its 1st percentile in real structures, its angles in
    their 1st–99th percentile range (within 2.5°) and 3.80 Å virtual bonds, within 0.3 Å RMSD; an ideal helix stays
    put."""
    from ldb_hpc.synth.dynamics import REG_BOND, REG_NEAR, REG_THETA, regularise

    residues, ca0 = load_reference(str(repo_root / "examples" / "example.cg.h5"))
    x = regularise(ca0, residues)
    link = residues.peptide_links()
    seg = residues.segment
    for k, floor in enumerate(REG_NEAR, start=2):
        same = seg[k:] == seg[:-k]
        assert np.linalg.norm(ca0[k:] - ca0[:-k], axis=-1)[same].min() < floor - 0.25  # distorted below each floor
        assert np.linalg.norm(x[k:] - x[:-k], axis=-1)[same].min() >= floor - 1e-3
    theta = virtual_angles(x)[link[:-1] & link[1:]]
    slack = np.deg2rad(2.5)  # the walls are stiff, not hard, and the pulls toward the reference's own angles resist
    assert theta.min() >= REG_THETA[0] - slack and theta.max() <= REG_THETA[1] + slack
    bond = np.linalg.norm(x[1:] - x[:-1], axis=-1)[link]
    assert np.abs(bond - REG_BOND).max() < 0.05
    assert 0.05 < np.sqrt(((x - ca0) ** 2).sum(-1).mean()) < 0.3

    helix = _helix(20)
    one = Residues([0] * 20, ["ALA"] * 20, ["A"] * 20, np.arange(20), [""] * 20, [0] * 20)
    assert np.abs(regularise(helix, one) - helix).max() < 0.05
