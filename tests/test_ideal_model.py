"""The non-learned baseline backmapper (--model ideal)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ldb_hpc.chem import residues as rc
from ldb_hpc.chem.ideal_geometry import ideal_geometry
from ldb_hpc.model.ideal import backbone_from_trace, backmap_ideal, load_tables


def _helix_trace(n: int, seed: int = 0) -> torch.Tensor:
    """An ideal α-helix CA trace (rise 1.5 Å, 100°/residue, radius 2.3 Å), lightly perturbed; [n, 3] Å."""
    k = torch.arange(n, dtype=torch.float64)
    ang = torch.deg2rad(100.0 * k)
    ca = torch.stack([2.3 * torch.cos(ang), 2.3 * torch.sin(ang), 1.5 * k], dim=-1)
    g = torch.Generator().manual_seed(seed)
    return ca + 0.05 * torch.randn(ca.shape, generator=g, dtype=torch.float64)


def _bond_lengths(pos: torch.Tensor, restype: torch.Tensor):
    """Intra-residue bond lengths [L, 15] and their ideal values, masked."""
    pairs = torch.as_tensor(rc.BOND_SLOTS)[restype]  # [L, 15, 2]
    mask = torch.as_tensor(rc.BOND_MASK)[restype]
    a = pos.gather(-2, pairs[..., 0:1].expand(*pairs.shape[:-1], 3))
    b = pos.gather(-2, pairs[..., 1:2].expand(*pairs.shape[:-1], 3))
    ideal = torch.as_tensor(ideal_geometry().bond_length, dtype=pos.dtype)[restype]
    return (a - b).norm(dim=-1), ideal, mask


def _every_slot_filled(pos: torch.Tensor, restype: torch.Tensor) -> bool:
    exists = torch.as_tensor(rc.SLOT_MASK)[restype]
    nonzero = pos.abs().sum(-1) > 0
    return bool((nonzero == exists).all())


@pytest.mark.parametrize("segments",
                         [[0] * 20, [0] * 7 + [1] * 13, [0] * 10 + [1] + [2] * 9, [0, 0, 1, 1, 2] + [3] * 15])
def test_every_atom_of_every_residue_with_sane_bonds(segments):
    L = len(segments)
    ca = _helix_trace(L)
    seg = torch.tensor(segments)
    # Break the trace physically where the segment changes, as a real chain break would.
    ca = ca + 10.0 * seg[:, None].double() * torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    restype = torch.arange(L) % 20  # every standard type
    pos = backmap_ideal(ca, restype, seg)
    assert pos.shape == (L, 14, 3)
    assert torch.isfinite(pos).all()
    assert _every_slot_filled(pos, restype)
    assert torch.allclose(pos[:, 1], ca)  # CA is given, never moved
    d, ideal, mask = _bond_lengths(pos, restype)
    assert (d - ideal)[mask].abs().max() < 0.1
    # Peptide bonds inside segments have a sane length; none is drawn across a break.
    link = seg[1:] == seg[:-1]
    pep = (pos[1:, 0] - pos[:-1, 2]).norm(dim=-1)[link]
    assert (pep - ideal_geometry().peptide_bond).abs().max() < 0.15


def test_batch_of_frames_equals_frame_by_frame():
    L = 25
    seg = torch.tensor([0] * 12 + [1] * 13)
    restype = torch.arange(L) % 20
    frames = torch.stack([_helix_trace(L, seed=s) for s in range(3)]).float()
    batched = backmap_ideal(frames, restype, seg)
    single = torch.stack([backmap_ideal(f, restype, seg) for f in frames])
    assert batched.shape == (3, L, 14, 3)
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-5)


def test_degenerate_traces_give_finite_atoms():
    restype = torch.tensor([7, 0, 1])
    for ca in (torch.zeros(3, 3), torch.tensor([[0.0, 0, 0], [3.8, 0, 0], [7.6, 0, 0]])):
        pos = backmap_ideal(ca.double(), restype, torch.zeros(3, dtype=torch.long))
        assert torch.isfinite(pos).all()
    one = backmap_ideal(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([19]), torch.zeros(1, dtype=torch.long))
    assert one.shape == (1, 14, 3) and torch.isfinite(one).all() and _every_slot_filled(one, torch.tensor([19]))


def test_backbone_follows_the_trace():
    """N and C sit at bonded distance from their own CA, whatever the segment layout."""
    ca = _helix_trace(12)
    seg = torch.tensor([0] * 5 + [1] * 7)
    n, c, o, o_tors = backbone_from_trace(ca, seg, load_tables())
    assert ((n - ca).norm(dim=-1) - 1.46).abs().max() < 0.1
    assert ((c - ca).norm(dim=-1) - 1.525).abs().max() < 0.1
    assert torch.isfinite(o_tors).all()
    # Inside a segment the peptide unit is planar: C(i), O(i), N(i+1), CA(i), CA(i+1) in one plane.
    link = seg[1:] == seg[:-1]
    normal = torch.linalg.cross(c[:-1] - ca[:-1], ca[1:] - ca[:-1], dim=-1)
    normal = normal / normal.norm(dim=-1, keepdim=True)
    off_plane = ((o[:-1] - ca[:-1]) * normal).sum(-1).abs()
    assert off_plane[link].max() < 0.05
    assert ((o[:-1] - c[:-1]).norm(dim=-1)[link] - 1.23).abs().max() < 0.05


@pytest.mark.data
def test_casp12_accuracy_regression(shared_data):
    """Heavy-atom RMSD of the baseline on CASP12 stays where it was measured (1.63 Å heavy, 0.37 Å backbone)."""
    from ldb_hpc.io.structure import read_structure

    rmsd, rmsd_bb = [], []
    for path in sorted((shared_data / "test" / "casp12").glob("*.pdb")):
        prot = read_structure(str(path))[0]
        pos = torch.from_numpy(prot.positions)
        mask = torch.from_numpy(prot.mask)
        out = backmap_ideal(pos[:, 1], torch.from_numpy(prot.residues.restype),
                            torch.from_numpy(prot.residues.segment))
        assert _every_slot_filled(out, torch.from_numpy(prot.residues.restype))
        d2 = ((out - pos) ** 2).sum(-1)
        rmsd.append(float(d2[mask].mean().sqrt()))
        rmsd_bb.append(float(d2[:, :4][mask[:, :4]].mean().sqrt()))
    assert len(rmsd) == 24
    assert np.mean(rmsd) < 1.75
    assert np.mean(rmsd_bb) < 0.45


@pytest.mark.parametrize("ca_ca", [2.80, 2.95, 3.20])
def test_cis_peptide_units_keep_ideal_bonds(ca_ca):
    """A link with CAs 2.8–3.2 Å apart is a cis peptide: its C–N, CA–C, N–CA and C=O stay at the trans template's
    lengths, ω ≈ 0, and the unit spans the given CA–CA distance (a trans unit there puts C and N ~0.9 Å apart)."""
    from ldb_hpc.geometry.peptide_cis import TRANS_CA_CA, cis_units
    from ldb_hpc.geometry.vectors import dihedral

    trans = load_tables()["unit"].to(torch.float64)
    u = cis_units(trans, torch.tensor([ca_ca], dtype=torch.float64))[0]
    ca_i, ca_j = torch.zeros(3, dtype=torch.float64), torch.tensor([ca_ca, 0.0, 0.0], dtype=torch.float64)
    c, o, n = ca_i + u[0], ca_i + u[1], ca_j + u[2]
    ca_jt = torch.tensor([TRANS_CA_CA, 0.0, 0.0], dtype=torch.float64)
    ref = {"C-N": (ca_jt + trans[2] - trans[0]).norm(), "CA-C": trans[0].norm(), "N-CA": trans[2].norm(),
           "C-O": (trans[1] - trans[0]).norm()}
    got = {"C-N": (n - c).norm(), "CA-C": c.norm(), "N-CA": (ca_j - n).norm(), "C-O": (o - c).norm()}
    for k in ref:
        assert abs(float(got[k] - ref[k])) < 1e-3, k
    assert abs(float(dihedral(ca_i, c, n, ca_j))) < 1e-3  # ω = 0
    assert float(c[1]) * float(trans[0, 1]) > 0  # C on the template's side of the axis (the α convention)


def test_cis_link_in_a_trace_gets_a_cis_unit():
    """In a whole trace, the backbone built across a 2.9 Å link has a C–N peptide bond near ideal."""
    ca = _helix_trace(12).clone()
    shift = ca[6] - ca[5]
    ca[6:] -= shift * (1 - 2.9 / float(shift.norm()))  # residues 6.. move so that CA5–CA6 = 2.9 Å
    n, c, o, _ = backbone_from_trace(ca, torch.zeros(12, dtype=torch.long))
    assert abs(float((n[6] - c[5]).norm()) - ideal_geometry().peptide_bond) < 0.03
