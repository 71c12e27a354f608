"""Disulfides (issue 20): decided from the backbone, built at the bond's geometry, kept apart when unbonded, written
as bonds, and judged by one clash rule without exemption.

Geometry tests use Cys residues built here with ideal internal geometry: a pair related by a two-fold axis that
puts SG–SG at 2.04 Å, CB–SG–SG at 104° and χ3 near 90° (a disulfide), and four Cys whose SG atoms sit at the
corners of a tetrahedron 2.33 Å from its centre (a Zn(Cys)4 site; coordinates from a seeded search, written out
below), one pair of which could also close a disulfide.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ldb_hpc.chem import residues as rc
from ldb_hpc.chem.protein import Residues
from ldb_hpc.engine.compute import parse_disulfide_list
from ldb_hpc.errors import InputError
from ldb_hpc.geometry import disulfides as ds
from ldb_hpc.geometry import metrics
from ldb_hpc.geometry.vectors import bond_angle, dihedral
from ldb_hpc.io.cg import CGWriter

CYS = rc.RESTYPE_INDEX["CYS"]


def _nerf(a, b, c, bond, angle, torsion):
    """The point d with |cd| = bond, angle bcd = angle and dihedral abcd = torsion (degrees)."""
    angle, torsion = np.radians(angle), np.radians(torsion)
    bc = (c - b) / np.linalg.norm(c - b)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    return c + bond * (-np.cos(angle) * bc + np.sin(angle) * np.cos(torsion) * m + np.sin(angle) * np.sin(torsion) * n)


def _cys(chi1=-60.0) -> np.ndarray:
    x = np.zeros((14, 3))
    x[0], x[1], x[2] = [-0.525, 1.363, 0.0], [0.0, 0.0, 0.0], [1.526, 0.0, 0.0]
    x[3] = _nerf(x[0], x[1], x[2], 1.23, 120.5, 150.0)
    x[4] = _nerf(x[2], x[0], x[1], 1.53, 110.5, -122.5)
    x[5] = _nerf(x[0], x[1], x[4], 1.81, 114.0, chi1)
    return x


def _rot(axis, deg) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    t = np.radians(deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def _chi3(x) -> float:
    t = torch.as_tensor(x)
    return float(torch.rad2deg(dihedral(t[0, 4], t[0, 5], t[1, 5], t[1, 4])))


def _bonded_pair() -> np.ndarray:
    """Two Cys [2, 14, 3] at a disulfide's geometry (a two-fold axis through the SG–SG midpoint)."""
    a = _cys()
    e = (a[4] - a[5]) / np.linalg.norm(a[4] - a[5])
    w = np.cross(e, [0.3, 0.5, 0.8])
    w /= np.linalg.norm(w)
    u = np.cos(np.radians(104)) * e + np.sin(np.radians(104)) * w
    mid = a[5] + 1.02 * u
    best = None
    for theta in range(0, 360, 2):
        axis = _rot(u, theta) @ np.cross(u, w)
        b = (_rot(axis, 180) @ (a - mid).T).T + mid
        miss = abs(abs(_chi3(np.stack([a, b]))) - 90)
        if best is None or miss < best[0]:
            best = (miss, b)
    return np.stack([a, best[1]]).astype(np.float32)


# N, CA, C, O, CB, SG of four Cys around a metal at the origin (SG 2.33 Å from it, SG–SG 3.80 Å)
_METAL = [[[0.047, 3.05, 4.846], [0.652, 2.978, 3.519], [-0.053, 3.915, 2.542], [0.564, 4.422, 1.607],
           [0.616, 1.543, 2.99], [1.345, 1.345, 1.345]],
          [[-0.197, -5.024, -2.312], [0.242, -3.645, -2.512], [1.311, -3.562, -3.598], [1.419, -2.552, -4.292],
           [0.774, -3.057, -1.204], [1.345, -1.345, -1.345]],
          [[-0.747, 0.03, -5.187], [-1.23, 0.008, -3.809], [-2.749, -0.131, -3.762], [-3.295, -0.698, -2.817],
           [-0.795, 1.274, -3.068], [-1.345, 1.345, -1.345]],
          [[-5.147, -0.228, 2.417], [-4.05, -1.123, 2.057], [-3.809, -2.162, 3.148], [-3.372, -3.276, 2.864],
           [-2.77, -0.325, 1.8], [-1.345, -1.345, 1.345]]]


def _metal_site() -> torch.Tensor:
    x = np.zeros((4, 14, 3), np.float32)
    x[:, :6] = _METAL
    return torch.from_numpy(x)


def _moved_apart(pos: torch.Tensor) -> torch.Tensor:
    """The pair with the second Cys moved 3 Å further along CA–CA (CA–CA beyond any disulfide's reach)."""
    out = pos.clone()
    v = pos[1, 1] - pos[0, 1]
    out[1] += 3.0 * v / v.norm()
    return out


def _ss(pos, i=0, j=1) -> float:
    return float((pos[..., i, 5, :] - pos[..., j, 5, :]).norm(dim=-1).max())


def test_a_disulfide_geometry_is_decided_bonded_and_a_distant_pair_is_not():
    pos = torch.from_numpy(_bonded_pair())
    assert abs(_ss(pos) - 2.04) < 1e-3 and abs(abs(_chi3(pos.numpy())) - 90) < 5
    assert ds.decide(pos, [CYS, CYS]) == [(0, 1)]
    assert ds.decide(_moved_apart(pos), [CYS, CYS]) == []
    assert ds.decide(pos, [CYS, rc.RESTYPE_INDEX["SER"]]) == []  # only Cys bond


def test_a_metal_site_is_not_a_disulfide_although_one_pair_could_close():
    pos = _metal_site()
    pairs = torch.tensor([[i, j] for i in range(4) for j in range(i + 1, 4)])
    cost = ds.pair_costs(pos[None], pairs)[0]
    assert float(cost.min()) <= ds.COST_MAX  # without the metal-site rule one pair would bond
    assert ds.decide(pos, [CYS] * 4) == []
    # the same four with that pair moved away are no longer a site; nothing else changes the decision
    assert (torch.cdist(pos[:, 5], pos[:, 5]) + 9 * torch.eye(4)).min() > 3.7


def test_build_closes_a_bond_from_any_side_chain_turn_and_moves_nothing_else():
    pos = torch.from_numpy(_bonded_pair())
    turned = pos.clone()
    for r, delta in ((0, 130.0), (1, -100.0)):  # turn each SG far from the bond about its CA–CB axis
        ca, cb, sg = turned[r, 1].numpy(), turned[r, 4].numpy(), turned[r, 5].numpy()
        turned[r, 5] = torch.from_numpy((_rot(cb - ca, delta) @ (sg - cb) + cb).astype(np.float32))
    assert _ss(turned) > 3.0
    rows = turned[None, None].repeat(2, 3, 1, 1, 1)  # [frames, samples, L, 14, 3]
    out = ds.build(rows, [CYS, CYS], [(0, 1)])
    assert out.shape == rows.shape
    d = (out[..., 0, 5, :] - out[..., 1, 5, :]).norm(dim=-1)
    assert ((d > 1.95) & (d < 2.15)).all(), d
    flat = out.reshape(-1, 2, 14, 3)
    for a, b in ((0, 1), (1, 0)):
        angle = torch.rad2deg(bond_angle(flat[:, a, 4], flat[:, a, 5], flat[:, b, 5]))
        assert ((angle - 104).abs() < 10).all(), angle
    chi3 = torch.rad2deg(dihedral(flat[:, 0, 4], flat[:, 0, 5], flat[:, 1, 5], flat[:, 1, 4])).abs()
    assert ((chi3 - 90).abs() < 30).all(), chi3
    keep = torch.ones(14, dtype=torch.bool)
    keep[5] = False
    assert torch.equal(out[..., keep, :], rows[..., keep, :])  # only SG moved
    cb_sg = (out[..., 5, :] - out[..., 4, :]).norm(dim=-1)
    assert torch.allclose(cb_sg, (rows[..., 5, :] - rows[..., 4, :]).norm(dim=-1), atol=1e-4)


def test_unbonded_cys_are_turned_apart():
    pos = torch.from_numpy(_bonded_pair())[None]
    assert _ss(pos) < 2.1
    out = ds.build(pos, [CYS, CYS], [])
    assert _ss(out) >= ds.APART
    metal = _metal_site()[None]
    out = ds.build(metal, [CYS] * 4, [])  # SG–SG 3.8 Å already: nothing to do
    assert torch.equal(out, metal)


def test_rows_that_disagree_with_the_topology_are_flagged():
    pos = torch.from_numpy(_bonded_pair())
    rows = torch.stack([pos, _moved_apart(pos)])
    assert ds.disagreements(rows, [CYS, CYS], [(0, 1)]).tolist() == [False, True]
    assert ds.disagreements(rows, [CYS, CYS], []).tolist() == [True, False]


def _two_cys_topology(disulfides=()):
    return metrics.build_topology([CYS, CYS], [0, 1], rc.SLOT_MASK[[CYS, CYS]], disulfides=disulfides)


@pytest.mark.parametrize("d, bonded, clash, extra", [(2.04, True, False, False), (2.04, False, False, True),
                                                     (1.1, True, True, True), (1.1, False, True, True),
                                                     (2.6, True, False, False)])
def test_one_clash_rule_for_sg_pairs(d, bonded, clash, extra):
    """An SG–SG pair is a bond only when the topology bonds it and it lies at 1.9–2.2 Å; a pair below 1.2 Å is a
    clash whether the topology bonds it or not. The bond graph compares the SG–SG contact with the topology (at
    1.1 Å the squeezed pair also brings each CB within bonding distance of the other SG: extra contacts)."""
    pair = _bonded_pair()
    v = (pair[1, 5] - pair[0, 5]) / np.linalg.norm(pair[1, 5] - pair[0, 5])
    pair[1, :6] += (d - 2.04) * v  # the second Cys moved rigidly along SG–SG
    pos = pair[None]
    topo = _two_cys_topology([(0, 1)] if bonded else [])
    row, a, b, dist = metrics.clashing_pairs(pos, topo, 1.2)
    assert (len(row) > 0) == clash
    sg_pair = (len(row) == 1) and (a[0], b[0]) == (5, 14 + 5)
    assert sg_pair == clash  # the SG–SG pair is the clash
    pm = metrics.pair_metrics(pos, topo)
    assert (pm["graph_extra"][0] > 0) == extra
    assert pm["graph_missing"][0] == 0


def test_disulfide_lists_name_cys_pairs_or_fail_in_one_line():
    names = ["CYS", "ALA", "CYS", "CYS"]
    res = Residues([rc.RESTYPE_INDEX[n] for n in names], names, ["A", "A", "B", "B"], [5, 6, 1, 2], [""] * 4,
                   [0, 0, 1, 1])
    assert parse_disulfide_list("B:2-A:5", res) == [(0, 3)]
    assert res.with_disulfides([(3, 0)]).disulfides == ((0, 3),)
    assert res.with_disulfides([(0, 3)]).select([0, 1, 3]).disulfides == ((0, 2),)
    assert res.with_disulfides([(0, 3)]).select([1, 2, 3]).disulfides == ()
    for text, why in (("A:6-B:1", "ALA, not CYS"), ("A:5-C:1", "C:1 is not in the input"),
                      ("A:5", "not CHAIN:RESNUM-CHAIN:RESNUM"), ("A:5-B:1,A:5-B:2", "in two bonds")):
        with pytest.raises(InputError, match=why):
            parse_disulfide_list(text, res)


# -- the whole command ------------------------------------------------------------------------------------------
N_RES = 24


def _helix(n: int, phase: float = 0.0) -> np.ndarray:
    t = np.deg2rad(100.0) * np.arange(n) + phase
    return np.stack([2.3 * np.cos(t), 2.3 * np.sin(t), 1.5 * np.arange(n)], -1)


def _facing_cys_trace(path, frames: int = 2) -> str:
    """Two helices with axes 10 Å apart whose residues 19 (A:19, B:43), both CYS, face each other at CA–CA 5.4 Å, the
    second helix turned by −30° and shifted 0.75 Å along its axis so that the backbone the model builds can close a
    disulfide (best geometric cost about 0.2; the untwisted pair costs 5.8, beyond ``COST_MAX``)."""
    ca = np.concatenate([_helix(N_RES), _helix(N_RES, np.pi - np.radians(30)) + [10.0, 0.0, 0.75]])
    seq = ["LEU", "GLU", "ARG", "ALA", "LYS", "TRP", "ALA", "ILE", "GLN", "TYR", "MET", "ASP"]
    names = [seq[i % len(seq)] for i in range(2 * N_RES)]
    names[18] = names[N_RES + 18] = "CYS"
    residues = Residues([rc.RESTYPE_INDEX[n] for n in names], names, ["A"] * N_RES + ["B"] * N_RES,
                        np.arange(1, 2 * N_RES + 1), [""] * (2 * N_RES), [0] * N_RES + [1] * N_RES)
    x = ca[None] + np.random.default_rng(0).normal(scale=0.05, size=(frames, *ca.shape))
    with CGWriter(str(path), residues, overwrite=True) as w:
        w.append(x.astype(np.float32), np.arange(frames) * 1.0)
    return str(path)


def _sg_sg(path) -> np.ndarray:
    import mdtraj as md

    t = md.load(str(path))
    sg = t.topology.select("name SG")
    return np.linalg.norm(t.xyz[:, sg[0]] - t.xyz[:, sg[1]], axis=-1) * 10, t


@pytest.mark.parametrize("rule", ["auto", "A:19-B:43"])
def test_backmap_builds_and_bonds_the_disulfide(rule, tmp_path, run_cli):
    src = _facing_cys_trace(tmp_path / "in.h5")
    out = tmp_path / "out.h5"
    code, _, err = run_cli("backmap", src, "-o", out, "--samples", 2, "--disulfides", rule, "--no-progress")
    assert code == 0, err
    d, traj = _sg_sg(out)
    assert ((d > 1.95) & (d < 2.15)).all(), d
    bonds = {tuple(sorted((a.name, b.name))) for a, b in traj.topology.bonds if a.residue.name == "CYS"
             and b.residue.name == "CYS" and a.residue != b.residue}
    assert bonds == {("SG", "SG")}
    summary = json.loads((tmp_path / "out.h5.summary.json").read_text())
    assert summary["disulfides"]["names"] == ["A:19-B:43"] and summary["disulfides"]["count"] == 1
    assert summary["disulfides"]["rule"] == ("auto" if rule == "auto" else "list")
    assert summary["close_contacts"]["rows"] == 0


def test_backmap_without_disulfides_keeps_the_sg_apart_and_hydrogenates_both(tmp_path, run_cli):
    src = _facing_cys_trace(tmp_path / "in.h5", frames=1)
    out = tmp_path / "out.pdb"
    code, _, err = run_cli("backmap", src, "-o", out, "--disulfides", "none", "--hydrogens", "--no-progress")
    assert code == 0, err
    d, traj = _sg_sg(out)
    assert (d >= ds.APART).all(), d
    assert "SSBOND" not in out.read_text()
    assert len(traj.topology.select("resname CYS and name HG")) == 2
    summary = json.loads((tmp_path / "out.pdb.summary.json").read_text())
    assert summary["disulfides"]["count"] == 0 and summary["disulfides"]["rule"] == "none"


def test_a_bad_disulfide_list_is_one_error_line(tmp_path, run_cli):
    from conftest import assert_one_line_error

    src = _facing_cys_trace(tmp_path / "in.h5", frames=1)
    code, _, err = run_cli("backmap", src, "-o", tmp_path / "o.h5", "--disulfides", "A:18-B:43", "--no-progress")
    assert_one_line_error(code, err, "A:18 is")
    assert not (tmp_path / "o.h5").exists()
