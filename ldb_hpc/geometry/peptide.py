"""The peptide backbone from a CA trace: link geometry, rigid peptide units (trans and cis), settling of units
that disagree, chain-end N and C, one-residue segments (batched torch; Å, radians).

Every peptide link i→i+1 of a segment is a rigid, planar peptide unit: C(i) and O(i) relative to CA(i), N(i+1)
relative to CA(i+1), fixed in the unit's own frame (a :class:`PeptideTemplate` measured on real structures), so
its bonds are ideal by construction. What the CA trace does not fix is the unit's rotation α about the
CA(i)→CA(i+1) axis, expressed in the link frame ``R`` of :func:`link_geometry` (y towards CA(i−1), or towards
CA(i+2) at an N-terminal link). A link whose CAs are closer than :data:`CIS_MAX_CA_CA` is a cis peptide: it gets
a cis unit with the same bond lengths (:func:`cis_units`). N(i) comes from the unit before residue i, C(i) and
O(i) from the unit after it; a segment's first N and last C have no unit and are placed with ideal bond geometry
at a given ψ (resp. φ). Who chooses the angles (tables, a network) is the caller's business.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
import torch

from ldb_hpc.chem import residues as rc
from ldb_hpc.chem.ideal_geometry import ideal_geometry
from ldb_hpc.geometry import peptide_far, resident
from ldb_hpc.geometry.builder import nerf
from ldb_hpc.geometry.frames import basis_from_two_vectors
from ldb_hpc.geometry.peptide_cis import cis_units
from ldb_hpc.geometry.resident import Subset, on_device
from ldb_hpc.geometry.vectors import bond_angle, dihedral

CIS_MAX_CA_CA = 3.3  # Å: trans peptides have CA–CA 3.80 ± 0.05 Å, cis ones 2.8–3.2 Å


class LinkGeometry(NamedTuple):
    """Geometry of every link i→i+1 of a CA trace [..., L, 3] (also links between segments: see ``linked``).

    Tensors over links: frames [..., L-1, 3, 3] (axes as columns, x along CA(i)→CA(i+1)), angles [..., L-1];
    masks [L-1] bool (they depend only on the segment ids)."""

    R: torch.Tensor  # the frame α is expressed in: R_next at an N-terminal link (no CA(i−1)), else R_prev
    R_prev: torch.Tensor  # y towards CA(i−1)
    R_next: torch.Tensor  # y towards CA(i+2), seen from CA(i+1)
    has_prev: torch.Tensor  # CA(i−1) is in the link's segment
    has_next: torch.Tensor  # CA(i+2) is in the link's segment
    linked: torch.Tensor  # CA(i) and CA(i+1) are in one segment
    theta_i: torch.Tensor  # CA virtual angle at CA(i), degrees
    theta_j: torch.Tensor  # CA virtual angle at CA(i+1), degrees
    tau: torch.Tensor  # CA virtual dihedral CA(i−1)–CA(i)–CA(i+1)–CA(i+2), rad
    ca_ca: torch.Tensor  # |CA(i+1) − CA(i)|, Å


class PeptideTemplate(NamedTuple):
    """The rigid trans unit and the chain-end O torsion, as measured on real structures."""

    trans_unit: torch.Tensor  # [3, 3] Å, rows C(i), O(i) from CA(i) and N(i+1) from CA(i+1), in the unit frame
    o_torsion_end: torch.Tensor  # [] rad, N–CA–C–O of a segment's last residue


class PeptideUnits(NamedTuple):
    """Placed peptide units of every link, each [..., L-1, 3] Å."""

    c: torch.Tensor  # C(i)
    o: torch.Tensor  # O(i)
    n: torch.Tensor  # N(i+1)


class Backbone(NamedTuple):
    """Backbone atoms [..., L, 3] Å (CA is the input trace) and the N–CA–C–O torsion [..., L] rad that the atom
    builder should use (O is only meaningful where a unit follows the residue)."""

    n: torch.Tensor
    c: torch.Tensor
    o: torch.Tensor
    o_torsion: torch.Tensor


@functools.lru_cache(maxsize=1)
def _ideal_backbone() -> tuple[float, float, float]:
    """Ideal |N–CA| Å, |CA–C| Å and ∠N–CA–C rad."""
    fl = ideal_geometry().frame_local[rc.UNK]
    b_nca, b_cac = float(np.linalg.norm(fl[0])), float(np.linalg.norm(fl[2]))
    return b_nca, b_cac, float(np.arccos(fl[0, 0] / b_nca))


def _frame(origin: torch.Tensor, xpoint: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """[..., 3, 3] rotation with columns x, y, z: x along origin→xpoint, y towards ref ⟂ x (never NaN)."""
    return basis_from_two_vectors(xpoint - origin, ref - origin)


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def link_geometry(ca: torch.Tensor, segment: torch.Tensor) -> LinkGeometry:
    """The :class:`LinkGeometry` of a CA trace. ca: [..., L, 3] Å; segment: [L] int segment ids."""
    L = ca.shape[-2]
    same = segment[1:] == segment[:-1]  # [L-1]
    a, b = ca[..., :-1, :], ca[..., 1:, :]
    # CA(i−1) and CA(i+2) for link i (clamped indices; validity in has_prev/has_next).
    idx = torch.arange(L - 1, device=ca.device)
    prev = ca[..., (idx - 1).clamp_min(0), :]
    nxt = ca[..., (idx + 2).clamp_max(L - 1), :]
    has_prev = torch.zeros(L - 1, dtype=torch.bool, device=ca.device)
    has_next = torch.zeros(L - 1, dtype=torch.bool, device=ca.device)
    if L > 2:
        has_prev[1:] = same[:-1]
        has_next[:-1] = same[1:]
    has_prev &= same
    has_next &= same
    R_prev = _frame(a, b, prev)
    # At an N-terminal link the reference is CA(i+2), seen from CA(i+1).
    R_next = _frame(a, b, a + (nxt - b))
    R = torch.where((~has_prev & has_next)[:, None, None], R_next, R_prev)
    return LinkGeometry(R=R, R_prev=R_prev, R_next=R_next, has_prev=has_prev, has_next=has_next, linked=same,
                        theta_i=torch.rad2deg(bond_angle(prev, a, b)), theta_j=torch.rad2deg(bond_angle(a, b, nxt)),
                        tau=dihedral(prev, a, b, nxt), ca_ca=(b - a).norm(dim=-1))


def unit_frame(R: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Peptide-unit frame: the link frame R [..., 3, 3] turned by alpha [...] (rad) about its x axis.

    The unit's plane normal is cos α·y + sin α·z; columns (x, normal × x, normal)."""
    x, y, z = R.unbind(-1)
    normal = torch.cos(alpha)[..., None] * y + torch.sin(alpha)[..., None] * z
    return torch.stack([x, torch.linalg.cross(normal, x, dim=-1), normal], dim=-1)


def alpha_of(R: torch.Tensor, ca_i: torch.Tensor, c_i: torch.Tensor, ca_j: torch.Tensor) -> torch.Tensor:
    """Rotation α [...] rad of a measured peptide plane (CA(i), C(i), CA(i+1): [..., 3] Å) about the link axis, in
    the link frame R [..., 3, 3]."""
    normal = torch.linalg.cross(c_i - ca_i, ca_j - ca_i, dim=-1)
    return torch.atan2((normal * R[..., 2]).sum(-1), (normal * R[..., 1]).sum(-1))


def is_cis(links: LinkGeometry) -> torch.Tensor:
    """[..., L-1] bool: links that are cis peptides (CA–CA < CIS_MAX_CA_CA)."""
    return links.linked & (links.ca_ca < CIS_MAX_CA_CA)


def _settle(ca: torch.Tensor, links: LinkGeometry, alpha: torch.Tensor, unit: torch.Tensor, flagged: Subset,
            cis: torch.Tensor, units: PeptideUnits, has_cb: torch.Tensor | None, unit_cb: tuple | None = None,
            step_deg: float = 5.0) -> PeptideUnits:
    """Turn the ``flagged`` peptide units [..., L-1] to the rotation (a 5° grid around the given α; any rotation
    for cis units, within ±90° for trans ones) that gives the two residues each joins the most nearly ideal N–CA–C
    angles with their other units, keeps the 1–4 pairs N–O ≥ 2.6 Å, the carbonyl O ≥ 2.7 Å from the
    neighbouring units' O and ≥ 2.6 Å from their N (O(i)–N(i+2)), ≥ 2.7 Å from the O two units away, and O / N /
    the implied CBs clear of the O, N and CB of the non-local units with the nearest CAs (peptide_far.far_cost). A
    cis unit's α is poorly predicted (rare in training) and a wrong one folds N onto C; two sampled trans units
    can put consecutive O atoms on top of each other. Ties go to the given α.
    flagged: the units to turn, flat indices over cis's shape [..., L-1] (ldb_hpc.geometry.resident).
    unit: [..., L-1, 3, 3] the template of each link; unit_cb: peptide_far.unit_cbs of ``units`` when the caller
    has it. Returns the new units."""
    c_u, o_u, n_u = units
    a_ncac = _ideal_backbone()[2]
    idx = resident.unravel(flagged.idx, alpha.shape)  # batch indices..., link j
    flagged_shape = alpha.shape
    j = idx[-1]
    L1 = flagged_shape[-1]
    grid = torch.deg2rad(torch.arange(-180.0, 180.0, step_deg, dtype=ca.dtype, device=ca.device))  # [G]
    a = alpha[idx][:, None] + grid  # [P, G]
    too_far = ~cis.expand(flagged_shape)[idx][:, None] & (grid.abs() > math.radians(90.0))[None]  # [P, G]
    Uc = unit_frame(links.R[idx][:, None].expand(-1, len(grid), -1, -1), a)  # [P, G, 3, 3]
    ca_i, ca_j = ca[idx[:-1] + (j,)], ca[idx[:-1] + (j + 1,)]  # [P, 3]
    c_c = ca_i[:, None] + torch.einsum("pgij,pj->pgi", Uc, unit[idx][:, 0])
    o_c = ca_i[:, None] + torch.einsum("pgij,pj->pgi", Uc, unit[idx][:, 1])
    n_c = ca_j[:, None] + torch.einsum("pgij,pj->pgi", Uc, unit[idx][:, 2])
    cost = 0.05 * (1 - torch.cos(grid))[None] + too_far * 1e6
    linked = links.linked
    # The CBs the candidate backbone implies (Ala geometry for every type; Gly has none but the rule is harmless):
    # residue i gets N from the unit before and C from this one, residue i+1 the reverse.
    cb_geo = peptide_far.cb_geometry()
    k_prev, k_next = (j - 1).clamp(0, L1 - 1), (j + 1).clamp(0, L1 - 1)
    ok_prev = (j >= 1) & linked[k_prev]
    ok_next = (j + 1 < L1) & linked[k_next]
    cb_i = nerf(c_c, n_u[idx[:-1] + (k_prev,)][:, None].expand_as(c_c), ca_i[:, None].expand_as(c_c), *cb_geo)
    cb_j = nerf(c_u[idx[:-1] + (k_next,)][:, None].expand_as(n_c), n_c, ca_j[:, None].expand_as(n_c), *cb_geo)
    cost = cost + (ok_prev & ok_next)[:, None] * torch.relu(2.8 - (cb_i - cb_j).norm(dim=-1)) ** 2
    # O(i)–CB(i+1), a 1–5 pair (≥ 2.8 Å in real backbones; a proline ring beyond that CB folds onto O(i)).
    cost = cost + ok_next[:, None] * torch.relu(2.7 - (o_c - cb_j).norm(dim=-1)) ** 2
    for side in (-1, 1):  # the residue before (its N from link j−1) and after (its C from link j+1)
        k = (j + side).clamp(0, L1 - 1)
        ok = (j + side >= 0) & (j + side < L1) & linked[k]
        # Also keep the 1–4 pairs N(i)–O(i) and N(i+1)–O(i+1) apart (≥ 2.6 Å in real backbones).
        # And O(i)–N(i+2) across a residue (≥ 2.6 Å in real backbones; tight turns of a CA trace can fold one
        # unit's carbonyl onto the next unit's N): O(i−1)–N(i+1) with the unit before, O(i)–N(i+2) with the one after.
        if side < 0:
            other = n_u[idx[:-1] + (k,)]  # N(i) from the unit before
            ang = bond_angle(other[:, None], ca_i[:, None], c_c)
            near = (o_c - other[:, None]).norm(dim=-1)
            o_n = (n_c - o_u[idx[:-1] + (k,)][:, None]).norm(dim=-1)
        else:
            other = c_u[idx[:-1] + (k,)]  # C(i+1) from the unit after
            ang = bond_angle(n_c, ca_j[:, None], other[:, None])
            near = (n_c - o_u[idx[:-1] + (k,)][:, None]).norm(dim=-1)
            o_n = (o_c - n_u[idx[:-1] + (k,)][:, None]).norm(dim=-1)
        o_o = (o_c - o_u[idx[:-1] + (k,)][:, None]).norm(dim=-1)  # carbonyl O of the neighbouring unit
        cost = cost + ok[:, None] * ((ang - a_ncac) ** 2 + torch.relu(2.6 - near) ** 2 + torch.relu(2.7 - o_o) ** 2
                                     + torch.relu(2.6 - o_n) ** 2)
    for side in (-2, 2):  # O(i)–O(i+2): a tight turn can put the carbonyls two units apart on top of each other
        k, mid = (j + side).clamp(0, L1 - 1), (j + side // 2).clamp(0, L1 - 1)
        ok = (j + side >= 0) & (j + side < L1) & linked[k] & linked[mid]
        cost = cost + ok[:, None] * torch.relu(2.7 - (o_c - o_u[idx[:-1] + (k,)][:, None]).norm(dim=-1)) ** 2
    cbs = () if has_cb is None else ((cb_i, ok_prev & has_cb[j]), (cb_j, ok_next & has_cb[j + 1]))
    cost = cost + peptide_far.far_cost(ca, idx, linked, units, o_c, n_c, has_cb, cbs, unit_cb)
    best = cost.argmin(-1)
    a_best = a.gather(-1, best[:, None])[:, 0]
    U = unit_frame(links.R[idx], a_best)
    c_u, o_u, n_u = c_u.clone(), o_u.clone(), n_u.clone()
    c_u[idx] = flagged.blend(ca_i + torch.einsum("pij,pj->pi", U, unit[idx][:, 0]), c_u[idx])
    o_u[idx] = flagged.blend(ca_i + torch.einsum("pij,pj->pi", U, unit[idx][:, 1]), o_u[idx])
    n_u[idx] = flagged.blend(ca_j + torch.einsum("pij,pj->pi", U, unit[idx][:, 2]), n_u[idx])
    return PeptideUnits(c_u, o_u, n_u)


def backbone_from_angles(ca: torch.Tensor, links: LinkGeometry, alpha: torch.Tensor, psi_start: torch.Tensor,
                         phi_end: torch.Tensor, template: PeptideTemplate,
                         has_cb: torch.Tensor | None = None) -> Backbone:
    """Place N, C, O of every residue from the CA trace and the backbone angles.

    ca: [..., L, 3] Å (L ≥ 2); links: :func:`link_geometry` of it; alpha, psi_start, phi_end: [..., L-1] rad (α of
    every link; ψ used where the link starts a segment, φ where it ends one); has_cb: [L] bool, the residues with
    a CB (not glycine), where the caller knows them: settling then also keeps carbonyls off non-local CBs.
    Returns the :class:`Backbone`.
    Differentiable in the angles.
    """
    dtype = ca.dtype
    L = ca.shape[-2]
    b_nca, b_cac, a_ncac = _ideal_backbone()
    U = unit_frame(links.R, alpha)  # [..., L-1, 3, 3]
    ca_i, ca_j = ca[..., :-1, :], ca[..., 1:, :]
    # A link whose CAs are closer than CIS_MAX_CA_CA is a cis peptide (ω ≈ 0, CA–CA ≈ 2.9 Å): it gets the cis
    # unit, with the same bond lengths and angles, so its bonds stay ideal too.
    cis = is_cis(links)  # [..., L-1]
    trans_unit = on_device(template.trans_unit, ca.device)
    unit = trans_unit.to(dtype).expand(*cis.shape, 3, 3)
    selector = resident.current()
    some = selector.select("cis", cis)
    if not some.surely_empty:
        flat = unit.reshape(-1, 3, 3).clone()
        some.put(flat, cis_units(template.trans_unit, links.ca_ca.reshape(-1)[some.idx]).to(dtype))
        unit = flat.reshape(*cis.shape, 3, 3)
    units = PeptideUnits(c=ca_i + torch.einsum("...ij,...j->...i", U, unit[..., 0, :]),
                         o=ca_i + torch.einsum("...ij,...j->...i", U, unit[..., 1, :]),
                         n=ca_j + torch.einsum("...ij,...j->...i", U, unit[..., 2, :]))
    # Units to settle (twice, as a settled unit changes its neighbours' angles): cis ones; both units of a residue
    # whose N–CA–C angle is more than 20° from ideal (two units that disagree, e.g. a proline folded onto the
    # carbonyl before it); both units of consecutive carbonyls closer than 2.3 Å, or of an O(i)–N(i+2) or an
    # O(i)–O(i+2) pair closer than 2.3 Å; every unit of a non-local O–O, O–N or O–CB pair closer than 2.3 Å.
    linked = links.linked
    both = linked[1:] & linked[:-1]  # [L-2]: residues 1..L-2 have a unit on each side
    for _ in range(2):
        ncac = bond_angle(units.n[..., :-1, :], ca[..., 1:-1, :], units.c[..., 1:, :])  # [..., L-2]
        pair = both & (((ncac - a_ncac).abs() > math.radians(20.0))
                       | ((units.o[..., 1:, :] - units.o[..., :-1, :]).norm(dim=-1) < 2.3)
                       | ((units.o[..., :-1, :] - units.n[..., 1:, :]).norm(dim=-1) < 2.3))
        bad = cis
        bad = torch.cat([bad[..., :1], bad[..., 1:] | pair], -1)
        bad = torch.cat([bad[..., :-1] | pair, bad[..., -1:]], -1)
        if L > 3:  # and both units of an O(i)–O(i+2) pair closer than 2.3 Å
            pair2 = both[1:] & both[:-1] & ((units.o[..., 2:, :] - units.o[..., :-2, :]).norm(dim=-1) < 2.3)
            bad = torch.cat([bad[..., :2], bad[..., 2:] | pair2], -1)
            bad = torch.cat([bad[..., :-2] | pair2, bad[..., -2:]], -1)
        unit_cb = peptide_far.unit_cbs(ca, units, linked, has_cb) if has_cb is not None else None  # once a pass
        bad = bad | peptide_far.far_contacts(units, linked, ca, has_cb, unit_cb=unit_cb)  # every non-local contact
        flagged = selector.select("settle", bad.expand(alpha.shape))
        if flagged.surely_empty:
            break
        units = _settle(ca, links, alpha, unit, flagged, cis, units, has_cb, unit_cb)
    c_u, o_u, n_u = units
    # Chain-end atoms with ideal bond geometry: N(i) at ψ(i) for a link with no residue before it,
    # C(i+1) at φ(i+1) for a link with no residue after it.
    n_start = nerf(n_u, c_u, ca_i, b_nca, a_ncac, psi_start)
    c_end = nerf(c_u, n_u, ca_j, b_cac, a_ncac, phi_end)

    has_before = torch.zeros(L, dtype=torch.bool, device=ca.device)
    has_after = torch.zeros(L, dtype=torch.bool, device=ca.device)
    has_before[1:] = linked
    has_after[:-1] = linked
    pad = lambda x, front: torch.cat([x[..., :1, :], x] if front else [x, x[..., -1:, :]], dim=-2)  # noqa: E731
    n = torch.where(has_before[:, None], pad(n_u, True), pad(n_start, False))
    c = torch.where(has_after[:, None], pad(c_u, False), pad(c_end, True))
    o = pad(o_u, False)
    o_tors = torch.where(has_after, dihedral(n, ca, c, o), on_device(template.o_torsion_end, ca.device, dtype))
    lone = ~has_before & ~has_after
    sn, sc, so = singleton_backbone(ca)  # for one-residue segments (computed for all: no read-back of ``lone``)
    n = torch.where(lone[:, None], sn, n)
    c = torch.where(lone[:, None], sc, c)
    o = torch.where(lone[:, None], so, o)
    o_tors = torch.where(lone, dihedral(n, ca, c, o), o_tors)
    return Backbone(n, c, o, o_tors)


def singleton_backbone(ca: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backbone of one-residue segments: ideal N, C and an ideal trans O, in a fixed orientation.
    ca [..., L, 3] Å → (n, c, o) [..., L, 3] Å."""
    geo = ideal_geometry()
    fl = on_device(geo.frame_local, ca.device, ca.dtype)[rc.UNK]  # [3, 3] N, CA, C
    n = ca + fl[0]
    c = ca + fl[2]
    # O in the N–CA–C plane, anti to N, with the ideal C=O length.
    bond_o = float(geo.bond[rc.UNK, 3])
    o = c + bond_o * _unit(_unit(c - ca) - _unit(n - ca))
    return n, c, o


def backbone_phi_psi(ca: torch.Tensor, n: torch.Tensor, c: torch.Tensor,
                     segment: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """φ, ψ [..., L] rad of a built backbone (ca, n, c [..., L, 3] Å; segment [L]); NaN where the neighbour
    residue is in another segment."""
    L = ca.shape[-2]
    phi = torch.full(ca.shape[:-1], float("nan"), dtype=ca.dtype, device=ca.device)
    psi = torch.full(ca.shape[:-1], float("nan"), dtype=ca.dtype, device=ca.device)
    if L > 1:
        link = segment[1:] == segment[:-1]
        phi[..., 1:] = torch.where(link, dihedral(c[..., :-1, :], n[..., 1:, :], ca[..., 1:, :], c[..., 1:, :]),
                                   phi[..., 1:])
        psi[..., :-1] = torch.where(link, dihedral(n[..., :-1, :], ca[..., :-1, :], c[..., :-1, :], n[..., 1:, :]),
                                    psi[..., :-1])
    return phi, psi
