"""Frames, NeRF, Z-matrix builder and torsions (ldb_hpc.geometry.frames / builder)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ldb_hpc.chem import residues as rc
from ldb_hpc.geometry.builder import (
    bond_angle,
    build_atoms,
    build_from_internal,
    dihedral,
    frame_local_of,
    measure_internal,
    measure_torsions,
    nerf,
)
from ldb_hpc.geometry.frames import (
    apply_frames,
    ca_trace_frames,
    frames_from_backbone,
    invert_apply,
    neighbour_masks,
    virtual_angles,
)

D = torch.float64


def synthetic_geometry(seed: int = 0) -> SimpleNamespace:
    """A made-up but well-formed geometry table: bonds 1.3–1.6 Å, angles 105–125°, random offsets."""
    g = np.random.default_rng(seed)
    frame_local = np.zeros((rc.NUM_RESTYPES, 3, 3))
    frame_local[:, 0] = [-0.53, 1.36, 0.0]  # N
    frame_local[:, 2] = [1.52, 0.0, 0.0]  # C
    offset = g.uniform(-math.pi, math.pi, (rc.NUM_RESTYPES, 14)) * rc.ZM_MASK
    offset[defines_channel()] = 0.0  # the slot that defines a torsion channel has offset 0 by construction
    return SimpleNamespace(frame_local=frame_local,
                           bond=g.uniform(1.3, 1.6, (rc.NUM_RESTYPES, 14)) * rc.ZM_MASK,
                           angle=np.radians(g.uniform(105, 125, (rc.NUM_RESTYPES, 14))) * rc.ZM_MASK,
                           offset=offset)


def defines_channel() -> np.ndarray:
    """[21, 14] bool: the slot's Z-matrix dihedral (a, b, c, slot) is exactly its torsion channel's atoms."""
    out = np.zeros((rc.NUM_RESTYPES, 14), bool)
    for r in range(rc.NUM_RESTYPES):
        for s in range(3, 14):
            k = rc.ZM_TORSION[r, s]
            if rc.ZM_MASK[r, s] and k >= 0:
                atoms = [0, 1, 2, 3] if k == 0 else list(rc.CHI_SLOTS[r, k - 1])
                out[r, s] = list(rc.ZM_REFS[r, s]) + [s] == atoms
    return out


def random_frames(shape, seed=0, dtype=D):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*shape, 3, 3, generator=g, dtype=dtype)
    R, _ = torch.linalg.qr(q)
    R = R * torch.sign(torch.det(R))[..., None, None]
    t = torch.randn(*shape, 3, generator=g, dtype=dtype) * 10
    return R, t


def all_types(L: int) -> torch.Tensor:
    return torch.arange(L) % rc.NUM_RESTYPES


def load_atom14(path):
    """Parse the first model of a PDB into atom14 with gemmi (independent of ldb_hpc.io)."""
    import gemmi

    st = gemmi.read_structure(str(path))
    st.remove_hydrogens()
    rt, pos, mask = [], [], []
    for ch in st[0]:
        for res in ch:
            name = rc.normalize_resname(res.name)
            if name not in rc.RESTYPE_INDEX:
                continue
            p, m = np.zeros((14, 3)), np.zeros(14, bool)
            for at in res:
                s = rc.slot_of(name, rc.normalize_atomname(name, at.name))
                if s is not None and not m[s]:
                    p[s], m[s] = (at.pos.x, at.pos.y, at.pos.z), True
            rt.append(rc.RESTYPE_INDEX[name]), pos.append(p), mask.append(m)
    return torch.tensor(np.array(rt)), torch.tensor(np.stack(pos)), torch.tensor(np.stack(mask))


# --------------------------------------------------------------------------------------------- angles


def test_dihedral_sign_convention_hand_built():
    b, c = torch.zeros(3, dtype=D), torch.tensor([0.0, 0.0, 1.0], dtype=D)
    a = torch.tensor([1.0, 0.0, 0.0], dtype=D)
    for deg in (60.0, -60.0, 120.0, 0.0):
        r = math.radians(deg)
        # d rotated by +deg about b→c (right-hand rule = clockwise seen looking along b→c).
        d = c + torch.tensor([math.cos(r), math.sin(r), 0.0], dtype=D)
        assert math.degrees(dihedral(a, b, c, d).item()) == pytest.approx(deg, abs=1e-9)
    trans = dihedral(a, b, c, c - a)
    assert abs(trans.item()) == pytest.approx(math.pi, abs=1e-9)


def test_dihedral_matches_mdtraj():
    import mdtraj

    xyz = np.random.default_rng(1).normal(size=(5, 4, 3))
    top = mdtraj.Topology()
    res = top.add_residue("ALA", top.add_chain())
    for name in ("C1", "C2", "C3", "C4"):
        top.add_atom(name, mdtraj.element.carbon, res)
    ref = mdtraj.compute_dihedrals(mdtraj.Trajectory(xyz, top), [[0, 1, 2, 3]])[:, 0]
    np.testing.assert_allclose(dihedral(*torch.tensor(xyz).unbind(-2)).numpy(), ref, atol=1e-5)


def test_bond_angle_known_values():
    o = torch.zeros(3, dtype=D)
    x, y = torch.tensor([1.0, 0, 0], dtype=D), torch.tensor([0, 2.0, 0], dtype=D)
    assert bond_angle(x, o, y).item() == pytest.approx(math.pi / 2)
    assert bond_angle(x, o, -x).item() == pytest.approx(math.pi)
    assert bond_angle(x, o, 3 * x).item() == pytest.approx(0.0, abs=1e-7)


def test_nerf_round_trip_batched():
    g = torch.Generator().manual_seed(3)
    a, b, c = (torch.randn(4, 7, 3, generator=g, dtype=D) * 3 for _ in range(3))
    bond = torch.rand(4, 7, generator=g, dtype=D) + 1.0
    angle = torch.rand(4, 7, generator=g, dtype=D) * 2.5 + 0.3
    tor = (torch.rand(4, 7, generator=g, dtype=D) * 2 - 1) * math.pi
    x = nerf(a, b, c, bond, angle, tor)
    assert x.shape == (4, 7, 3)
    torch.testing.assert_close((x - c).norm(dim=-1), bond)
    torch.testing.assert_close(bond_angle(b, c, x), angle)
    diff = torch.remainder(dihedral(a, b, c, x) - tor + math.pi, 2 * math.pi) - math.pi
    assert diff.abs().max() < 1e-9


def test_degenerate_input_is_finite_with_finite_gradients():
    p = torch.zeros(4, 3, dtype=D, requires_grad=True)  # all coincident
    q = torch.tensor([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]], dtype=D, requires_grad=True)  # collinear
    for pts in (p, q):
        outs = [dihedral(*pts.unbind(0)), bond_angle(*pts[:3].unbind(0)),
                nerf(*pts[:3].unbind(0), 1.5, 2.0, 1.0).sum()]
        for o in outs:
            assert torch.isfinite(o).all()
            (grad,) = torch.autograd.grad(o.sum(), pts)
            assert torch.isfinite(grad).all()
    # Collinear references still honour bond and angle.
    x = nerf(*q[:3].detach().unbind(0), 1.5, 2.0, 1.0)
    assert (x - q[2]).norm().item() == pytest.approx(1.5)
    assert bond_angle(q[1].detach(), q[2].detach(), x).item() == pytest.approx(2.0)


# --------------------------------------------------------------------------------------------- frames


def assert_orthonormal(R, tol=1e-5):
    eye = torch.eye(3, dtype=R.dtype).expand_as(R)
    assert torch.isfinite(R).all()
    torch.testing.assert_close(R.transpose(-1, -2) @ R, eye, atol=tol, rtol=0)
    torch.testing.assert_close(torch.det(R), torch.ones(R.shape[:-2], dtype=R.dtype), atol=tol, rtol=0)


def test_backbone_frame_convention_and_round_trip():
    g = torch.Generator().manual_seed(5)
    n, ca, c = (torch.randn(2, 6, 3, generator=g, dtype=D) for _ in range(3))
    R, t = frames_from_backbone(n, ca, c)
    assert_orthonormal(R)
    local = invert_apply(R, t, torch.stack([n, ca, c], dim=-2))
    assert local[..., 1, :].abs().max() < 1e-12  # CA at the origin
    assert local[..., 2, 1:].abs().max() < 1e-12 and (local[..., 2, 0] > 0).all()  # C on +x
    assert local[..., 0, 2].abs().max() < 1e-12 and (local[..., 0, 1] > 0).all()  # N in x–y plane, y > 0
    x = torch.randn(2, 6, 5, 3, generator=g, dtype=D)
    torch.testing.assert_close(apply_frames(R, t, invert_apply(R, t, x)), x)
    torch.testing.assert_close(R[..., :, 0], (c - ca) / (c - ca).norm(dim=-1, keepdim=True))  # axes are columns


def zigzag(L, rise=1.9, width=3.2):
    """Planar zig-zag CA trace (consecutive distance ~3.7 Å)."""
    i = torch.arange(L, dtype=D)
    return torch.stack([i * rise, (i % 2) * width, torch.zeros_like(i)], dim=-1)


def test_ca_trace_frames_interior_match_backbone_construction():
    g = torch.Generator().manual_seed(7)
    ca = torch.cumsum(torch.randn(3, 9, 3, generator=g, dtype=D) * 2.2, dim=-2)
    seg = np.zeros(9, dtype=np.int64)
    R, t = ca_trace_frames(ca, seg)
    Rb, _ = frames_from_backbone(ca[..., :-2, :], ca[..., 1:-1, :], ca[..., 2:, :])
    torch.testing.assert_close(R[..., 1:-1, :, :], Rb)
    torch.testing.assert_close(t, ca)
    assert_orthonormal(R)


def test_ca_trace_frames_end_fallback_is_exact_for_a_zigzag():
    ca = zigzag(8)
    R, _ = ca_trace_frames(ca, np.zeros(8, dtype=np.int64))
    # Ends of a regular zig-zag get the frame the chain's own continuation would give.
    longer = zigzag(10) * torch.tensor([1.0, -1.0, 1.0], dtype=D) + torch.tensor([-1.9, 3.2, 0.0], dtype=D)
    torch.testing.assert_close(longer[1:9], ca)  # one residue more on each side
    Rl, _ = ca_trace_frames(longer, np.zeros(10, dtype=np.int64))
    torch.testing.assert_close(R[0], Rl[1])
    torch.testing.assert_close(R[7], Rl[8])


def test_ca_trace_frames_breaks_short_segments_and_degenerate_traces():
    # Segments of length 1, 2, 3 and a longer one, plus a break inside one chain.
    seg = np.array([0, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3])
    g = torch.Generator().manual_seed(11)
    ca = torch.cumsum(torch.randn(2, 11, 3, generator=g), dim=-2) * 3
    R, _ = ca_trace_frames(ca, seg)
    assert R.dtype == torch.float32
    assert_orthonormal(R)
    torch.testing.assert_close(R[:, 0], torch.eye(3).expand(2, 3, 3))  # one-residue segment: identity
    # A residue's frame only depends on its own segment.
    ca2 = ca.clone()
    ca2[:, 3:6] += 50.0
    R2, _ = ca_trace_frames(ca2, seg)
    torch.testing.assert_close(R2[:, 6:], R[:, 6:])
    torch.testing.assert_close(R2[:, :3], R[:, :3])
    # Collinear and coincident traces, L = 1, L = 0.
    line = torch.stack([torch.arange(6.0), torch.zeros(6), torch.zeros(6)], -1).requires_grad_(True)
    for trace, s in ((line, np.zeros(6, int)), (torch.zeros(5, 3, requires_grad=True), np.zeros(5, int)),
                     (torch.randn(1, 3, requires_grad=True), np.zeros(1, int))):
        Rd, _ = ca_trace_frames(trace, s)
        assert_orthonormal(Rd)
        ang, mask = virtual_angles(trace, s)
        assert torch.isfinite(ang).all()
        (grad,) = torch.autograd.grad(Rd.sum() + ang.sum(), trace)
        assert torch.isfinite(grad).all()
    R0, _ = ca_trace_frames(torch.zeros(0, 3), np.zeros(0, int))
    assert R0.shape == (0, 3, 3)


def test_virtual_angles_values_and_mask():
    ca = zigzag(6)
    seg = np.array([0, 0, 0, 0, 1, 1])
    ang, mask = virtual_angles(ca.expand(2, 6, 3), seg)
    assert ang.shape == (2, 6, 2) and mask.shape == (6, 2)
    np.testing.assert_array_equal(mask[:, 0].numpy(), [False, True, True, False, False, False])
    np.testing.assert_array_equal(mask[:, 1].numpy(), [False, True, False, False, False, False])
    expected = bond_angle(ca[0], ca[1], ca[2])
    torch.testing.assert_close(ang[:, 1, 0], expected.expand(2))
    assert abs(ang[0, 1, 1].item()) == pytest.approx(math.pi)  # planar zig-zag: trans
    assert (ang[:, ~mask] == 0).all()
    m = neighbour_masks(seg)
    np.testing.assert_array_equal(m["next2"].numpy(), [True, True, False, False, False, False])


# -------------------------------------------------------------------------------------------- builder


def test_build_measure_round_trip_synthetic_all_types_batched():
    geo = synthetic_geometry()
    L = 2 * rc.NUM_RESTYPES + 1
    restype = all_types(L)
    R, t = random_frames((3, L), seed=2)
    tor = (torch.rand(3, L, 5, dtype=D) * 2 - 1) * math.pi
    x = build_atoms(R, t, tor, restype, geometry=geo)
    assert x.shape == (3, L, 14, 3) and x.dtype == D
    exists = torch.tensor(rc.SLOT_MASK)[restype]
    assert (x[:, ~exists] == 0).all()
    bond, angle, dih = measure_internal(x, restype)
    zm = torch.tensor(rc.ZM_MASK)[restype]
    torch.testing.assert_close(bond[:, zm], torch.tensor(geo.bond)[restype][zm].expand(3, -1))
    torch.testing.assert_close(angle[:, zm], torch.tensor(geo.angle)[restype][zm].expand(3, -1))
    torch.testing.assert_close(frame_local_of(x), torch.tensor(geo.frame_local)[restype].expand(3, L, 3, 3))
    rebuilt = build_from_internal(R, t, restype, bond, angle, dih, frame_local_of(x))
    assert (rebuilt - x).abs().max() < 1e-9
    # Measured torsions drive the builder back to the same atoms.
    mt, tmask = measure_torsions(x, restype)
    expect_mask = torch.tensor(np.concatenate([np.ones((21, 1), bool), rc.CHI_MASK], 1))[restype]
    assert torch.equal(tmask, expect_mask.expand(3, L, 5))
    again = build_atoms(R, t, mt, restype, geometry=geo)
    assert (again - x).abs().max() < 1e-9


def test_every_torsion_channel_has_a_defining_slot():
    # build_atoms(measure_torsions(x)) reproduces x only if each used channel is set by one slot whose
    # Z-matrix dihedral is the channel's own definition (offset 0 there).
    d = defines_channel()
    for r in range(rc.NUM_RESTYPES):
        used = set(rc.ZM_TORSION[r][rc.ZM_MASK[r]].tolist()) - {-1}
        assert used == {0} | {k + 1 for k in range(4) if rc.CHI_MASK[r, k]}
        for k in used:
            assert (d[r] & (rc.ZM_TORSION[r] == k)).sum() == 1, (rc.RESTYPES_3[r], k)


def test_torsion_channels_move_the_right_atoms():
    geo = synthetic_geometry(1)
    restype = torch.tensor([rc.RESTYPE_INDEX[n] for n in ("LYS", "PHE", "ILE")])
    R, t = random_frames((3,), seed=4)
    tor = torch.zeros(3, 5, dtype=D)
    base = build_atoms(R, t, tor, restype, geometry=geo)
    for ch in range(5):
        moved = tor.clone()
        moved[:, ch] += 0.7
        x = build_atoms(R, t, moved, restype, geometry=geo)
        delta = (x - base).norm(dim=-1) > 1e-9  # [3, 14]
        for i in range(3):
            chans = rc.ZM_TORSION[restype[i]]
            # An atom moves iff it or one of its Z-matrix ancestors uses channel ch.
            depends = np.zeros(14, bool)
            for s in range(3, 14):
                if rc.ZM_MASK[restype[i], s]:
                    depends[s] = chans[s] == ch or depends[rc.ZM_REFS[restype[i], s]].any()
            np.testing.assert_array_equal(delta[i].numpy(), depends)
        mt, mm = measure_torsions(x, restype)
        ok = mm[:, ch]
        d = torch.remainder(mt[ok, ch] - measure_torsions(base, restype)[0][ok, ch] - 0.7 + math.pi, 2 * math.pi)
        assert ((d - math.pi).abs() < 1e-9).all()


def test_odd_shapes_and_broadcast_restype():
    geo = synthetic_geometry()
    R, t = random_frames((1,), seed=8, dtype=torch.float32)
    x = build_atoms(R, t, torch.zeros(1, 5), torch.tensor([rc.RESTYPE_INDEX["TRP"]]), geometry=geo)
    assert x.shape == (1, 14, 3) and x.dtype == torch.float32 and torch.isfinite(x).all()
    R, t = random_frames((2, 3, 5), seed=9, dtype=torch.float32)
    x = build_atoms(R, t, torch.zeros(2, 3, 5, 5), torch.arange(5), geometry=geo)  # restype [L] shared
    assert x.shape == (2, 3, 5, 14, 3)
    b, a, d = measure_internal(x, torch.arange(5))
    assert b.shape == (2, 3, 5, 14)
    tor, mask = measure_torsions(x, torch.arange(5), torch.ones(5, 14, dtype=torch.bool))
    assert tor.shape == mask.shape == (2, 3, 5, 5)


def test_measure_torsions_masks_missing_atoms():
    geo = synthetic_geometry()
    restype = torch.tensor([rc.RESTYPE_INDEX["ARG"], rc.RESTYPE_INDEX["GLY"]])
    R, t = random_frames((2,), seed=1)
    x = build_atoms(R, t, torch.ones(2, 5, dtype=D), restype, geometry=geo)
    mask = torch.tensor(rc.SLOT_MASK)[restype].clone()
    mask[0, rc.SLOT_INDEX[("ARG", "CD")]] = False  # breaks χ2, χ3 and χ4 of ARG
    tor, tm = measure_torsions(x, restype, mask)
    np.testing.assert_array_equal(tm.numpy(), [[True, True, False, False, False], [True, False, False, False, False]])
    assert (tor[~tm] == 0).all()


def test_builder_gradients_are_finite_even_for_degenerate_frames():
    geo = synthetic_geometry()
    ca = torch.zeros(4, 3, requires_grad=True)  # coincident CA trace → fallback frames
    tor = torch.zeros(4, 5, requires_grad=True)
    R, t = ca_trace_frames(ca, np.zeros(4, int))
    x = build_atoms(R, t, tor, torch.tensor([0, 7, 13, 17]), geometry=geo)
    loss = (x ** 2).sum() + measure_torsions(x, torch.tensor([0, 7, 13, 17]))[0].sum()
    g_ca, g_tor = torch.autograd.grad(loss, (ca, tor))
    assert torch.isfinite(g_ca).all() and torch.isfinite(g_tor).all()
    assert g_tor.abs().sum() > 0


@pytest.mark.data
def test_round_trip_on_casp12(shared_data):
    restype, x, mask = load_atom14(shared_data / "test" / "casp12" / "T0860.pdb")
    x32 = x.float()
    bond, angle, dih = measure_internal(x32, restype)
    R, t = frames_from_backbone(x32[:, 0], x32[:, 1], x32[:, 2])
    rebuilt = build_from_internal(R, t, restype, bond, angle, dih, frame_local_of(x32))
    complete = (mask == torch.tensor(rc.SLOT_MASK)[restype]).all(-1)
    assert complete.sum() > 100
    err = (rebuilt - x32).norm(dim=-1)[complete][torch.tensor(rc.SLOT_MASK)[restype][complete]]
    assert err.max() < 1e-4
    # The real χ angles survive the torsion builder driven by this structure's own per-residue geometry.
    tor, tm = measure_torsions(x32, restype, mask)
    chi1 = rc.SLOT_INDEX[("LEU", "CG")]
    leu = (restype == rc.RESTYPE_INDEX["LEU"]) & complete
    assert tm[leu, 1].all()
    torch.testing.assert_close(tor[leu, 1], dih[leu, chi1])  # CG is placed by χ1 itself


@pytest.mark.data
def test_build_atoms_with_shipped_ideal_geometry(shared_data):
    restype, x, mask = load_atom14(shared_data / "test" / "casp12" / "T0860.pdb")
    x = x.float()
    complete = (mask == torch.tensor(rc.SLOT_MASK)[restype]).all(-1)
    R, t = frames_from_backbone(x[:, 0], x[:, 1], x[:, 2])
    tor, _ = measure_torsions(x, restype, mask)
    built = build_atoms(R, t, tor, restype)
    err = (built - x).norm(dim=-1)[complete][torch.tensor(rc.SLOT_MASK)[restype][complete]]
    # Ideal geometry with the real torsions: close to the crystal structure (not exact).
    assert err.pow(2).mean().sqrt() < 0.3


@pytest.mark.data
def test_rebuild_every_casp12_residue(shared_data):
    """Acceptance: every residue of the 24 CASP12 targets rebuilt by the atom builder from its own measured
    internal coordinates (frame + per-slot bond, angle, dihedral) is within 0.05 Å heavy-atom RMSD; with
    ideal geometry and only its own ψ/χ torsions the error stays at the measured 0.155 Å floor."""
    from ldb_hpc.io.structure import read_structure

    own, torsion_only = [], []
    for path in sorted((shared_data / "test" / "casp12").glob("*.pdb")):
        prot = read_structure(str(path))[0]
        x = torch.from_numpy(prot.positions).double()
        restype = torch.from_numpy(prot.residues.restype)
        mask = torch.from_numpy(prot.mask)
        R, t = frames_from_backbone(x[:, 0], x[:, 1], x[:, 2])
        bond, angle, dih = measure_internal(x, restype)
        rebuilt = build_from_internal(R, t, restype, bond, angle, dih, frame_local_of(x))
        # Only residues whose Z-matrix references are all present can be measured.
        complete = (mask == torch.tensor(rc.SLOT_MASK)[restype]).all(-1)
        d2 = ((rebuilt - x) ** 2).sum(-1)[complete][mask[complete]]
        own.append(float(d2.mean().sqrt()))
        tor, _ = measure_torsions(x, restype, mask)
        built = build_atoms(R, t, tor, restype)
        torsion_only.append(float(((built - x) ** 2).sum(-1)[complete][mask[complete]].mean().sqrt()))
    assert len(own) == 24
    assert max(own) <= 0.05
    assert np.mean(torsion_only) < 0.2


def test_far_carbonyl_contacts_flag_both_units_and_only_non_local_ones():
    """Backbone settling's non-local rule: units whose O lies within 2.3 Å of the O or N of a unit ≥ 3 links away
    (or of another segment) are flagged, both of them; closer units are the local rules' business; unlinked
    positions (segment breaks) are never flagged."""
    from ldb_hpc.geometry.peptide import PeptideUnits
    from ldb_hpc.geometry.peptide_far import far_contacts

    def _far_contacts(units, linked):  # CAs far from everything: no CB within reach of any O
        return far_contacts(units, linked, torch.full((*units.o.shape[:-2], L1 + 1, 3), 1000.0))

    L1 = 8
    spread = torch.arange(L1, dtype=torch.float32)[:, None] * torch.tensor([10.0, 0.0, 0.0])
    o, n = spread.clone(), spread + torch.tensor([0.0, 5.0, 0.0])
    c = spread + torch.tensor([0.0, 0.0, 5.0])
    o[5] = o[0] + torch.tensor([1.0, 0.0, 0.0])  # O(0)–O(5): non-local, 1 Å
    n[3] = o[2] + torch.tensor([0.0, 1.0, 0.0])  # O(2)–N(3): local (one link apart), not this rule's
    linked = torch.ones(L1, dtype=torch.bool)
    flags = _far_contacts(PeptideUnits(c, o, n), linked)
    assert flags.tolist() == [True, False, False, False, False, True, False, False]
    batch = _far_contacts(PeptideUnits(c.expand(3, -1, -1), o.expand(3, -1, -1), n.expand(3, -1, -1)), linked)
    assert batch.shape == (3, L1) and torch.equal(batch, flags.expand(3, -1))
    n2 = n.clone()
    n2[7] = o[1] + torch.tensor([0.0, 0.0, 2.0])  # O(1)–N(7), 2 Å: both flagged
    assert _far_contacts(PeptideUnits(c, o, n2), linked).nonzero().flatten().tolist() == [0, 1, 5, 7]
    linked[5] = False  # a segment break at link 5: no unit there
    assert _far_contacts(PeptideUnits(c, o, n), linked).nonzero().flatten().tolist() == []


def test_far_carbonyl_on_a_cb_flags_the_o_unit_and_the_two_units_that_place_the_cb():
    """An O within 2.2 Å of the CB of a residue ≥ 3 links away (the CB an Ala would have on the current backbone):
    its unit and the two units that give that residue its N and C are flagged; an O 2.3 Å from it is not, nor one
    on a glycine's would-be CB."""
    from ldb_hpc.geometry.peptide import PeptideUnits
    from ldb_hpc.geometry.peptide_far import far_contacts, unit_cbs

    L1 = 8
    g = torch.Generator().manual_seed(0)
    ca = torch.arange(L1 + 1, dtype=torch.float32)[:, None] * torch.tensor([10.0, 0.0, 0.0])
    c = ca[:-1] + torch.randn(L1, 3, generator=g).clamp(-1, 1)
    n = ca[1:] + torch.randn(L1, 3, generator=g).clamp(-1, 1)
    o = ca[:-1] + torch.tensor([0.0, 0.0, 4.0])
    linked = torch.ones(L1, dtype=torch.bool)
    has_cb = torch.ones(L1 + 1, dtype=torch.bool)
    cb, valid = unit_cbs(ca, PeptideUnits(c, o, n), linked, has_cb)
    assert valid.tolist() == [True] * (L1 - 1) + [False]
    has_cb[3] = False  # a glycine: no CB, so unit 2's residue after it is never a target
    assert unit_cbs(ca, PeptideUnits(c, o, n), linked, has_cb)[1].tolist() == [True, True, False] + [True] * 4 + [False]
    assert torch.allclose((cb[:-1] - ca[1:-1]).norm(dim=-1), torch.tensor(1.53), atol=0.02)
    assert not far_contacts(PeptideUnits(c, o, n), linked, ca, has_cb).any()
    for gap, flagged in ((1.0, [0, 5, 6]), (2.3, [])):
        o2 = o.clone()
        o2[0] = cb[5] + torch.tensor([0.0, gap, 0.0])  # O(0) on the CB of residue 6 (N from unit 5, C from unit 6)
        assert far_contacts(PeptideUnits(c, o2, n), linked, ca, has_cb).nonzero().flatten().tolist() == flagged
        assert not far_contacts(PeptideUnits(c, o2, n), linked, ca).any()  # residue types unknown: no CB rule
    o2[0] = cb[5] + torch.tensor([0.0, 1.0, 0.0])
    has_cb[6] = False  # residue 6 a glycine: its would-be CB is no target
    assert not far_contacts(PeptideUnits(c, o2, n), linked, ca, has_cb).any()
