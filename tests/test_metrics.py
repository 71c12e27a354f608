"""Structural metrics (ldb_hpc.geometry.metrics) against brute-force oracles and hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_geometry import load_atom14, synthetic_geometry

from ldb_hpc.chem import residues as rc
from ldb_hpc.geometry.builder import build_atoms
from ldb_hpc.geometry.frames import ca_trace_frames
from ldb_hpc.geometry.metrics import (
    aggregate,
    bond_outliers,
    build_topology,
    chi_accuracy,
    chi_by_residue_type,
    clashing_pairs,
    close_pairs,
    diversity,
    evaluate_frames,
    ideal_bonds_from,
    pair_metrics,
    rmsd,
)


def random_protein(L=30, seed=0, compact=2.0, restype=None, torsions=None):
    """Atom14 positions [L, 14, 3] (float64) from a random-walk CA trace; compact < 3.8 folds it tightly."""
    g = np.random.default_rng(seed)
    steps = g.normal(size=(L, 3))
    steps *= 3.8 / np.linalg.norm(steps, axis=1, keepdims=True)
    ca = torch.tensor(np.cumsum(steps, 0) * compact / 3.8)
    restype = torch.tensor(g.integers(0, 20, L) if restype is None else restype)
    R, t = ca_trace_frames(ca, np.zeros(L, int))
    tor = torch.tensor(g.uniform(-math.pi, math.pi, (L, 5))) if torsions is None else torsions
    return build_atoms(R, t, tor, restype, geometry=synthetic_geometry()).numpy(), restype.numpy()


def oracle_pairs(x, mask, restype, segment):
    """Brute force over all atom pairs:
    (clash<1.2, clash<2.0, covalent contacts that are not bonds, stretched bonds)."""
    L = len(restype)
    names = [(i, a) for i in range(L) for a in rc.ATOM14[rc.RESTYPES_3[restype[i]]]]
    index = {k: n for n, k in enumerate(names)}
    n = len(names)
    adj = np.zeros((n, n), bool)
    for i in range(L):
        res = rc.RESTYPES_3[restype[i]]
        for a, b in rc.BONDS[res]:
            adj[index[(i, a)], index[(i, b)]] = adj[index[(i, b)], index[(i, a)]] = True
        if i + 1 < L and segment[i] == segment[i + 1]:
            adj[index[(i, "C")], index[(i + 1, "N")]] = adj[index[(i + 1, "N")], index[(i, "C")]] = True
    two = (adj.astype(int) @ adj.astype(int)) > 0
    pos = np.array([x[i, rc.slot_of(rc.RESTYPES_3[restype[i]], a)] for i, a in names])
    present = np.array([mask[i, rc.slot_of(rc.RESTYPES_3[restype[i]], a)] for i, a in names])
    elem = np.array([rc.COVALENT_RADIUS[a[0]] for _, a in names])
    sg = np.array([rc.RESTYPES_3[restype[i]] == "CYS" and a == "SG" for i, a in names])
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    iu = np.triu_indices(n, 1)
    ok = present[iu[0]] & present[iu[1]]
    dd, bonded, near = d[iu][ok], adj[iu][ok], (two[iu] & ~adj[iu])[ok]
    cov = dd < 1.3 * (elem[iu[0]] + elem[iu[1]])[ok]
    ss = (sg[iu[0]] & sg[iu[1]])[ok] & cov
    nb = ~bonded & ~near & ~ss
    return (int((nb & (dd < 1.2)).sum()), int((nb & (dd < 2.0)).sum()), int((cov & ~bonded & ~ss).sum()),
            int((bonded & ~cov).sum()), int(present.sum()))


@pytest.mark.parametrize("max_floats", [1 << 22, 3000])
def test_clashes_and_graph_match_brute_force(max_floats, monkeypatch):
    x, restype = random_protein(L=40, seed=3, compact=1.25)  # CA–CA off the cutoffs
    mask = rc.SLOT_MASK[restype].copy()
    g = np.random.default_rng(0)
    mask[g.random(mask.shape) < 0.1] = False
    mask[:, :3] = True
    segment = np.array([0] * 15 + [1] * 25)
    import ldb_hpc.geometry.metrics as M

    orig = M.close_pairs
    monkeypatch.setattr(M, "close_pairs", lambda p, m, c: orig(p, m, c, max_floats=max_floats))
    topo = build_topology(restype, segment, mask)
    out = pair_metrics(x[None].astype(np.float32), topo)
    c12, c20, extra, missing, n_atoms = oracle_pairs(x, mask, restype, segment)
    assert c20 > 0 and extra > 0  # the compact random protein does clash
    assert out["clash_1.2"][0] == pytest.approx(c12 * 1000 / n_atoms)
    assert out["clash_2.0"][0] == pytest.approx(c20 * 1000 / n_atoms)
    assert out["graph_extra"][0] == extra and out["graph_missing"][0] == missing
    assert out["graph_valid"][0] == float(extra == 0 and missing == 0)


def test_close_pairs_chunking_is_exact_and_counts_each_pair_once():
    x, restype = random_protein(L=60, seed=5, compact=1.5)
    mask = rc.SLOT_MASK[restype]
    xs = np.stack([x, x + 0.01]).astype(np.float32)
    big = close_pairs(xs, mask, 2.5)
    small = close_pairs(xs, mask, 2.5, max_floats=500)
    key = lambda p: set(zip(p[0].tolist(), p[1].tolist(), p[2].tolist()))
    assert key(big) == key(small) and len(big[0]) == len(key(big))
    assert (big[1] < big[2]).all()
    flat = x.reshape(-1, 3)[mask.reshape(-1)]
    idx = np.nonzero(mask.reshape(-1))[0]
    d = np.linalg.norm(flat[:, None] - flat[None], axis=-1)
    i, j = np.nonzero(np.triu(d < 2.5, 1))
    assert key(big) >= {(0, int(idx[a]), int(idx[b])) for a, b in zip(i, j)}
    assert (big[0] == 0).sum() == len(i)


def test_rmsd_without_superposition_and_masks():
    x, restype = random_protein(L=12, seed=1)
    mask = rc.SLOT_MASK[restype]
    shifted = x + np.array([0.3, 0.4, 0.0])
    np.testing.assert_allclose(rmsd(np.stack([x, shifted]), x[None], mask), [0.0, 0.5], atol=1e-12)
    moved = x.copy()
    moved[:, 4:] += 2.0  # side chains only
    assert rmsd(moved[None], x[None], mask, slots=(0, 1, 2, 3))[0] == pytest.approx(0.0)
    assert rmsd(moved[None], x[None], mask)[0] > 1.0
    only_bb = mask.copy()
    only_bb[:, 4:] = False
    assert rmsd(moved[None], x[None], only_bb)[0] == pytest.approx(0.0)


def test_bond_outliers_counts_stretched_bonds():
    names = [n for n in rc.RESTYPES_3[:20]]
    restype = np.array([rc.RESTYPE_INDEX[n] for n in names])
    x, _ = random_protein(L=20, seed=2, compact=3.8, restype=restype)
    mask = rc.SLOT_MASK[restype]
    segment = np.arange(20)  # no peptide bonds: every ideal value is this structure's own length
    ideal, pep = ideal_bonds_from(x, mask, restype, segment)
    assert math.isnan(pep)
    topo = build_topology(restype, segment, mask, ideal, 1.33)
    assert bond_outliers(x[None], topo)[0] == 0.0
    ala = rc.RESTYPE_INDEX["ALA"]
    y = np.stack([x.copy(), x.copy()])
    u = x[ala, 4] - x[ala, 1]
    y[0, ala, 4] += 0.05 * u / np.linalg.norm(u)  # within tolerance
    y[1, ala, 4] += 0.15 * u / np.linalg.norm(u)  # CA–CB now an outlier
    n_bonds = int(rc.BOND_MASK[restype].sum())
    np.testing.assert_allclose(bond_outliers(y, topo), [0.0, 1.0 / n_bonds])
    # Peptide bonds are part of the topology within a segment only.
    two = np.array([0, 0] + list(range(1, 19)))
    t2 = build_topology(restype, two, mask, ideal, float(np.linalg.norm(x[0, 2] - x[1, 0])) + 0.2)
    assert bond_outliers(x[None], t2)[0] == pytest.approx(1.0 / (n_bonds + 1))
    with pytest.raises(ValueError):
        bond_outliers(x[None], build_topology(restype, segment, mask))


def test_chi_accuracy_tolerance_and_pi_periodicity():
    names = ["LEU", "LEU", "ASP", "PHE", "SER", "GLY"]
    restype = np.array([rc.RESTYPE_INDEX[n] for n in names])
    tor = torch.zeros(6, 5, dtype=torch.float64)
    ref, _ = random_protein(L=6, seed=4, compact=3.8, restype=restype, torsions=tor)
    delta = torch.zeros(6, 5, dtype=torch.float64)
    delta[0, 1] = math.radians(30)  # χ1 within 40°
    delta[1, 1] = math.radians(50)  # χ1 off
    delta[2, 2] = math.pi  # ASP χ2 flipped: same (π-periodic)
    delta[3, 2] = math.pi  # PHE χ2 flipped: same
    delta[0, 2] = math.pi  # LEU χ2 flipped: wrong (not periodic)
    delta[4, 1] = math.radians(-39)
    pred, _ = random_protein(L=6, seed=4, compact=3.8, restype=restype, torsions=tor + delta)
    mask = rc.SLOT_MASK[restype]
    c1, c12 = chi_accuracy(np.stack([ref, pred]), ref[None], mask, mask, restype)
    # χ1 residues: LEU, LEU, ASP, PHE, SER → 4/5 good; χ1+χ2 residues: LEU, LEU, ASP, PHE → ASP, PHE good.
    np.testing.assert_allclose(c1, [1.0, 0.8])
    np.testing.assert_allclose(c12, [1.0, 0.5])
    # Missing atoms remove residues from the counts; no χ at all → NaN.
    m2 = mask.copy()
    m2[1, rc.SLOT_INDEX[("LEU", "CG")]] = False
    c1, _ = chi_accuracy(pred[None], ref[None], m2, mask, restype)
    assert c1[0] == pytest.approx(1.0)
    gly = np.array([rc.RESTYPE_INDEX["GLY"]] * 2)
    c1, c12 = chi_accuracy(ref[None, 4:], ref[None, 4:], rc.SLOT_MASK[gly], rc.SLOT_MASK[gly], gly)
    assert np.isnan(c1[0]) and np.isnan(c12[0])


def test_diversity_definition():
    x, restype = random_protein(L=8, seed=6)
    mask = rc.SLOT_MASK[restype]
    a = np.array([0.4, 0.0, 0.0])
    pred = np.stack([x + a, x - a, x + 2 * a, x + 2 * a])  # two frames × two samples
    out = diversity(pred, np.stack([x, x]), mask, samples=2)
    np.testing.assert_allclose(out["rmsd_ref"], [0.4, 0.8])
    np.testing.assert_allclose(out["rmsd_gen"], [0.8, 0.0], atol=1e-12)
    np.testing.assert_allclose(out["div"], [1 - 0.8 / 0.4, 1.0])
    with pytest.raises(ValueError):
        diversity(pred, x[None], mask, samples=3)


def test_evaluate_frames_maps_rows_to_reference_frames():
    x, restype = random_protein(L=10, seed=7)
    y = x + np.array([5.0, 0, 0])
    mask = rc.SLOT_MASK[restype]
    segment = np.zeros(10, int)
    ideal, pep = ideal_bonds_from(x, mask, restype, segment)
    pred = np.stack([x, x, y, y])
    out = evaluate_frames(pred, np.stack([x, y]), restype, segment, mask, mask, samples=2, ideal_bond=ideal,
                          ideal_peptide=pep, chunk=3)
    np.testing.assert_allclose(out["rmsd"], 0.0, atol=1e-6)
    np.testing.assert_allclose(out["rmsd_gen"], 0.0, atol=1e-6)
    assert out["rmsd"].shape == (4,) and out["div"].shape == (2,)
    np.testing.assert_allclose(out["chi1_accuracy"], 1.0)
    # One reference frame serves every row.
    one = evaluate_frames(pred, x, restype, segment, mask, mask, samples=1, ideal_bond=ideal, ideal_peptide=pep)
    np.testing.assert_allclose(one["rmsd"], [0, 0, 5, 5], atol=1e-5)
    assert "div" not in one
    agg = aggregate(one)
    assert agg["rmsd"] == pytest.approx(2.5, abs=1e-5)
    with pytest.raises(ValueError):
        evaluate_frames(pred, np.stack([x, y, x]), restype, segment, mask, mask, samples=2, ideal_bond=ideal,
                        ideal_peptide=pep)


def test_aggregate_ignores_nan():
    agg = aggregate({"a": np.array([1.0, np.nan, 3.0]), "b": np.array([np.nan])})
    assert agg["a"] == 2.0 and math.isnan(agg["b"])


@pytest.mark.data
def test_real_structure_against_itself_and_perturbed(shared_data):
    restype, x, mask = load_atom14(shared_data / "test" / "casp12" / "T0869.pdb")
    from ldb_hpc.chem.protein import segments_from_ca

    restype, x, mask = restype.numpy(), x.numpy().astype(np.float32), mask.numpy()
    segment = segments_from_ca(np.array(["A"] * len(restype), dtype=object), x[:, 1], mask[:, 1])
    ideal, pep = ideal_bonds_from(x, mask, restype, segment)
    noise = np.random.default_rng(0).normal(0, 0.2, x.shape).astype(np.float32) * mask[..., None]
    out = evaluate_frames(np.stack([x, x + noise]), x, restype, segment, mask, mask, ideal_bond=ideal,
                          ideal_peptide=pep)
    assert out["rmsd"][0] == 0.0 and out["clash_1.2"][0] == 0.0 and out["clash_2.0"][0] == 0.0
    assert out["bond_outliers"][0] == 0.0 and out["graph_valid"][0] == 1.0
    assert out["chi1_accuracy"][0] == 1.0 and out["chi12_accuracy"][0] == 1.0
    assert out["rmsd"][1] == pytest.approx(0.2 * math.sqrt(3), rel=0.05)
    assert out["bond_outliers"][1] > 0.3 and out["graph_valid"][1] == 0.0


def test_large_protein_runs_in_bounded_chunks():
    x, restype = random_protein(L=1200, seed=9, compact=3.8)
    mask = rc.SLOT_MASK[restype]
    a = close_pairs(x[None].astype(np.float32), mask, 2.0)
    b = close_pairs(x[None].astype(np.float32), mask, 2.0, max_floats=1 << 16)
    assert len(a[0]) == len(b[0]) > 0
    assert set(zip(a[1].tolist(), a[2].tolist())) == set(zip(b[1].tolist(), b[2].tolist()))


def test_chi_by_residue_type_pools_rows_per_type():
    """One LEU of three has its χ1 turned by 120° in one of two rows: LEU 5/6, every other type 1.0, counts add up
    to the per-row χ1 denominators, and the pooled shares agree with chi_accuracy."""
    L = 12
    restype = np.array([rc.RESTYPE_INDEX[x] for x in ["LEU", "SER", "LEU", "PHE", "GLY", "LEU", "ASP", "VAL",
                                                       "ALA", "LYS", "TRP", "THR"]])
    g = np.random.default_rng(3)
    tor = torch.tensor(g.uniform(-math.pi, math.pi, (L, 5)))
    ref, _ = random_protein(L, seed=2, restype=restype, torsions=tor)
    tor2 = tor.clone()
    tor2[2, 1] += 2 * math.pi / 3
    moved, _ = random_protein(L, seed=2, restype=restype, torsions=tor2)
    pred = np.stack([ref, moved])
    mask = rc.SLOT_MASK[restype]
    by = chi_by_residue_type(pred, ref[None], mask, mask, restype)
    assert by["LEU"]["n1"] == 6 and by["LEU"]["chi1"] == pytest.approx(5 / 6)
    assert "GLY" not in by and "ALA" not in by  # no χ1
    assert all(v["chi1"] == 1.0 for k, v in by.items() if k != "LEU")
    assert by["SER"]["chi12"] is None and by["PHE"]["n12"] == 2
    c1, _ = chi_accuracy(pred, ref[None], mask, mask, restype)
    assert sum(v["n1"] for v in by.values()) == 2 * 10
    assert sum(v["chi1"] * v["n1"] for v in by.values()) == pytest.approx((c1 * 10).sum())


def test_clashing_pairs_are_the_nonbonded_ones():
    x, restype = random_protein(L=25, seed=4, compact=2.0)
    mask = rc.SLOT_MASK[restype]
    topo = build_topology(restype, np.zeros(25, int), mask)
    row, a, b, d = clashing_pairs(x[None], topo, 2.0)
    assert (d < 2.0).all() and (a < b).all()
    per_1000 = pair_metrics(x[None], topo)["clash_2.0"][0]
    assert len(row) == pytest.approx(per_1000 * mask.sum() / 1000.0)
