"""``--model ideal``: a non-learned backmapper, the baseline every learned model is compared with.

Backbone by geometric rules. Every peptide link i→i+1 of a segment is a rigid, planar trans peptide unit
(C(i), O(i), N(i+1) at their mean positions relative to the two CAs, measured on ../shared/data/train), so
its bonds are ideal by construction. What the CA trace does not fix is the unit's rotation α about the
CA(i)→CA(i+1) axis; it is read from a table of circular means measured on the training set, binned by
the CA virtual angles θ(i), θ(i+1) and the virtual dihedral τ(i) (10° and 15° bins; sparse bins fall back
to τ alone, then to the global mean). The reference direction for α is CA(i−1) (or, at an N-terminal link,
CA(i+2)), so chain ends use their own tables. N(i) comes from the unit before residue i and C(i), O(i) from
the unit after it. A segment's first N and last C have no unit: they are placed with ideal bond geometry
at the mean ψ (resp. φ) of their bin; the last O at the mean N–CA–C–O torsion. A one-residue segment gets
the mean residue geometry in an arbitrary orientation.

Side chains: the atom builder places CB and every side-chain atom with ideal internal geometry and the
most common rotamer of the residue type in its backbone region (α, β, left-handed from φ/ψ of the built
backbone; "any" where φ or ψ is undefined), measured on the training set.

Tables: ``ldb_hpc/weights/ideal.npz``, written by ``scripts/fit_ideal_model.py`` (``fit_tables``).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch

from ldb_hpc.chem import residues as rc
from ldb_hpc.geometry.builder import bond_angle, dihedral
from ldb_hpc.geometry.frames import basis_from_two_vectors

TABLE_FILE = Path(__file__).resolve().parents[1] / "weights" / "ideal.npz"

THETA_MIN, THETA_STEP, N_THETA = 70.0, 10.0, 9  # degrees
N_TAU = 24  # 15° bins over [-180, 180)
MIN_COUNT = 8  # a bin with fewer samples falls back to a coarser table
# Backbone regions for rotamers: 0 α, 1 β, 2 left-handed (φ > 0), 3 any (φ or ψ undefined).
N_REGIONS = 4


# ----------------------------------------------------------------------------------------------------
# CA-trace geometry shared by fitting and inference


def _frame(origin: torch.Tensor, xpoint: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """[..., 3, 3] rotation with columns x, y, z: x along origin→xpoint, y towards ref ⟂ x (never NaN)."""
    return basis_from_two_vectors(xpoint - origin, ref - origin)


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def _angle(a, b, c) -> torch.Tensor:
    """Angle a–b–c in degrees, [...]."""
    return torch.rad2deg(bond_angle(a, b, c))


def _link_geometry(ca: torch.Tensor, segment: torch.Tensor):
    """Frames and bins of every link i→i+1 (also between segments; callers mask those).

    ca: [..., L, 3] Å; segment: [L]. Returns dict of tensors over links [..., L-1]:
    R_prev [..., L-1, 3, 3] (y towards CA(i−1)), R_next (y towards CA(i+2)), has_prev, has_next [L-1] bool,
    theta_i, theta_j (deg), tau (rad), linked [L-1] bool.
    """
    L = ca.shape[-2]
    same = segment[1:] == segment[:-1]  # [L-1]
    a, b = ca[..., :-1, :], ca[..., 1:, :]
    # CA(i−1) and CA(i+2) for link i (clamped indices; validity in has_prev/has_next).
    idx = torch.arange(L - 1, device=ca.device)
    prev_idx = (idx - 1).clamp_min(0)
    next_idx = (idx + 2).clamp_max(L - 1)
    prev = ca[..., prev_idx, :]
    nxt = ca[..., next_idx, :]
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
    theta_i = _angle(prev, a, b)
    theta_j = _angle(a, b, nxt)
    tau = dihedral(prev, a, b, nxt)
    return dict(R_prev=R_prev, R_next=R_next, has_prev=has_prev, has_next=has_next,
                theta_i=theta_i, theta_j=theta_j, tau=tau, linked=same, ca_ca=(b - a).norm(dim=-1))


def _theta_bin(theta: torch.Tensor) -> torch.Tensor:
    return ((theta - THETA_MIN) / THETA_STEP).floor().long().clamp(0, N_THETA - 1)


def _tau_bin(tau: torch.Tensor) -> torch.Tensor:
    return ((tau + math.pi) / (2 * math.pi / N_TAU)).floor().long().remainder(N_TAU)


# ----------------------------------------------------------------------------------------------------
# Tables


@functools.lru_cache(maxsize=2)
def load_tables(path: str | None = None) -> dict[str, torch.Tensor]:
    """The fitted tables as float32 tensors (see module docstring)."""
    with np.load(path or TABLE_FILE) as data:
        return {k: torch.from_numpy(np.asarray(data[k], dtype=np.float32)) for k in data.files}


def _unit_frame(R: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Peptide-unit frame: the link frame R [..., 3, 3] turned by alpha [...] (rad) about its x axis.

    The unit's plane normal is cos α·y + sin α·z; columns (x, normal × x, normal).
    """
    x, y, z = R.unbind(-1)
    normal = torch.cos(alpha)[..., None] * y + torch.sin(alpha)[..., None] * z
    return torch.stack([x, torch.linalg.cross(normal, x, dim=-1), normal], dim=-1)


def _alpha_of(R: torch.Tensor, ca_i, c_i, ca_j) -> torch.Tensor:
    """Rotation α of the measured peptide plane about the link axis, in the link frame R. [...] rad."""
    normal = torch.linalg.cross(c_i - ca_i, ca_j - ca_i, dim=-1)
    return torch.atan2((normal * R[..., 2]).sum(-1), (normal * R[..., 1]).sum(-1))


def _circ_binned(values: torch.Tensor, keys: torch.Tensor, n_bins: int, sel: torch.Tensor, fallback):
    """Circular mean of angles per bin; bins with < MIN_COUNT samples take ``fallback`` ([n_bins] or scalar)."""
    k = keys[sel]
    sin = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, k, torch.sin(values[sel]))
    cos = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, k, torch.cos(values[sel]))
    cnt = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, k, torch.ones_like(values[sel]))
    fallback = torch.as_tensor(fallback, dtype=torch.float64).expand(n_bins)
    return torch.where(cnt >= MIN_COUNT, torch.atan2(sin, cos), fallback), cnt


def _circ_mean(x: torch.Tensor) -> torch.Tensor:
    return torch.atan2(torch.sin(x).mean(), torch.cos(x).mean())


def fit_tables(n: np.ndarray, ca: np.ndarray, c: np.ndarray, o: np.ndarray, present: np.ndarray,
               segment: np.ndarray, restype: np.ndarray, chi: np.ndarray, chi_mask: np.ndarray) -> dict:
    """Fit the peptide unit, the α / ψ / φ tables and the rotamer modes.

    n, ca, c, o: [L, 3] Å backbone atoms of all training residues in chain order; present: [L] bool
    (all four present); segment: [L]; restype: [L]; chi: [L, 4] radians with chi_mask [L, 4].
    Returns a dict of numpy arrays (the contents of ideal.npz).
    """
    T = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float64)  # noqa: E731
    n_, ca_, c_, o_ = T(n), T(ca), T(c), T(o)
    g = _link_geometry(ca_, torch.as_tensor(segment))
    ca_i, ca_j = ca_[:-1], ca_[1:]
    d_caca = (ca_j - ca_i).norm(dim=-1)
    # Trans peptides only (cis ones have CA–CA ≈ 2.9 Å) with all five unit atoms present.
    ok = g["linked"] & torch.as_tensor(present[:-1] & present[1:]) & (d_caca > 3.6) & (d_caca < 4.0)

    # The rigid unit, in its own frame (x along CA(i)→CA(i+1), z the plane normal).
    own = _unit_frame(g["R_prev"], _alpha_of(g["R_prev"], ca_i, c_[:-1], ca_j))
    local = lambda R, x, origin: torch.einsum("lji,lj->li", R, x - origin)  # noqa: E731
    unit_c = local(own, c_[:-1], ca_i)[ok].mean(0)
    unit_o = local(own, o_[:-1], ca_i)[ok].mean(0)
    unit_n = local(own, n_[1:], ca_j)[ok].mean(0)  # relative to CA(i+1)

    tb_i, tb_j, ub = _theta_bin(g["theta_i"]), _theta_bin(g["theta_j"]), _tau_bin(g["tau"])
    alpha_prev = _alpha_of(g["R_prev"], ca_i, c_[:-1], ca_j)
    alpha_next = _alpha_of(g["R_next"], ca_i, c_[:-1], ca_j)
    full_sel = ok & g["has_prev"] & g["has_next"]
    a_all = _circ_mean(alpha_prev[full_sel])
    a_tau, _ = _circ_binned(alpha_prev, ub, N_TAU, full_sel, a_all)
    key_full = (tb_i * N_THETA + tb_j) * N_TAU + ub
    a_full, c_full = _circ_binned(alpha_prev, key_full, N_THETA * N_THETA * N_TAU, full_sel,
                                  a_tau.repeat(N_THETA * N_THETA))
    sel = ok & g["has_next"]
    a_noprev, _ = _circ_binned(alpha_next, tb_j, N_THETA, sel, _circ_mean(alpha_next[sel]))
    sel = ok & g["has_prev"]
    a_nonext, _ = _circ_binned(alpha_prev, tb_i, N_THETA, sel, _circ_mean(alpha_prev[sel]))

    # Cis peptides: their rotation is tightly set by the trace (circular R ≈ 0.95); binned by τ alone.
    cis_ok = g["linked"] & torch.as_tensor(present[:-1] & present[1:]) & (d_caca < CIS_MAX_CA_CA)
    sel = cis_ok & g["has_prev"] & g["has_next"]
    a_cis, _ = _circ_binned(alpha_prev, ub, N_TAU, sel, _circ_mean(alpha_prev[cis_ok & g["has_prev"]]))
    a_cis_noprev = _circ_mean(alpha_next[cis_ok & g["has_next"] & ~g["has_prev"]]) \
        if bool((cis_ok & g["has_next"] & ~g["has_prev"]).any()) else _circ_mean(alpha_next[cis_ok])
    a_cis_nonext = _circ_mean(alpha_prev[cis_ok & g["has_prev"]])

    # Chain ends: ψ of the residue that starts a link with no CA(i−1), binned like a_noprev; φ of the
    # residue that ends a link with no CA(i+2), binned like a_nonext; the N–CA–C–O torsion of C-termini.
    psi = dihedral(n_[:-1], ca_i, c_[:-1], n_[1:])
    phi = dihedral(c_[:-1], n_[1:], ca_j, c_[1:])
    sel = ok & g["has_next"]
    psi_start, _ = _circ_binned(psi, tb_j, N_THETA, sel, _circ_mean(psi[sel]))
    sel = ok & g["has_prev"]
    phi_end, _ = _circ_binned(phi, tb_i, N_THETA, sel, _circ_mean(phi[sel]))
    o_tors = dihedral(n_, ca_, c_, o_)
    last = torch.ones(len(ca_), dtype=torch.bool)
    last[:-1] = ~g["linked"]
    o_end = _circ_mean(o_tors[last & torch.as_tensor(present)])

    # Rotamer modes per (restype, region).
    phi_r = torch.full((len(ca_),), float("nan"), dtype=torch.float64)
    psi_r = torch.full((len(ca_),), float("nan"), dtype=torch.float64)
    lk = g["linked"] & torch.as_tensor(present[:-1] & present[1:])
    phi_r[1:] = torch.where(lk, phi, phi_r[1:])
    psi_r[:-1] = torch.where(lk, psi, psi_r[:-1])
    region = _region(phi_r, psi_r).numpy()
    rot = np.zeros((rc.NUM_RESTYPES, N_REGIONS, 4))
    for r in range(rc.NUM_RESTYPES):
        for reg in range(N_REGIONS):
            sel = (restype == r) if reg == N_REGIONS - 1 else (restype == r) & (region == reg)
            rot[r, reg] = _rotamer_mode(chi[sel], chi_mask[sel], rc.CHI_MASK[r])
    return dict(unit=torch.stack([unit_c, unit_o, unit_n]).numpy(),
                alpha_full=a_full.reshape(N_THETA, N_THETA, N_TAU).numpy(), alpha_noprev=a_noprev.numpy(),
                alpha_nonext=a_nonext.numpy(), psi_start=psi_start.numpy(), phi_end=phi_end.numpy(),
                o_torsion_end=np.array(float(o_end)), rotamer=rot, alpha_cis=a_cis.numpy(),
                alpha_cis_ends=np.array([float(a_cis_noprev), float(a_cis_nonext)]),
                counts_full=c_full.reshape(N_THETA, N_THETA, N_TAU).numpy())


def _region(phi: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """Backbone region per residue: 0 α, 1 β, 2 left-handed, 3 undefined (NaN φ or ψ)."""
    deg_phi, deg_psi = torch.rad2deg(phi), torch.rad2deg(psi)
    region = torch.where(deg_phi > 0, 2, torch.where((deg_psi > -100) & (deg_psi < 50), 0, 1))
    return torch.where(torch.isnan(phi) | torch.isnan(psi), 3, region)


def _rotamer_mode(chi: np.ndarray, chi_mask: np.ndarray, defined: np.ndarray) -> np.ndarray:
    """Most common joint rotamer: χ1 mode, then χ2 mode among those near it, and so on. [4] radians."""
    out = np.zeros(4)
    keep = np.ones(len(chi), dtype=bool)
    for k in range(4):
        if not defined[k]:
            break
        sel = keep & chi_mask[:, k]
        if sel.sum() < 5:
            break
        x = chi[sel, k]
        hist, edges = np.histogram(x, bins=36, range=(-np.pi, np.pi))
        smooth = hist + 0.5 * (np.roll(hist, 1) + np.roll(hist, -1))
        centre = edges[np.argmax(smooth)] + np.pi / 36
        near = np.abs(np.angle(np.exp(1j * (x - centre)))) < np.deg2rad(30)
        out[k] = np.arctan2(np.sin(x[near]).mean(), np.cos(x[near]).mean())
        d = np.abs(np.angle(np.exp(1j * (chi[:, k] - out[k]))))
        keep &= chi_mask[:, k] & (d < np.deg2rad(30))
    return out


# ----------------------------------------------------------------------------------------------------
# Inference


def link_frames(ca: torch.Tensor, segment: torch.Tensor) -> dict:
    """Link geometry of a CA trace plus the reference frame ``R`` [..., L-1, 3, 3] in which each link's
    peptide rotation α is expressed (towards CA(i−1), or towards CA(i+2) at an N-terminal link)."""
    g = _link_geometry(ca, segment)
    g["R"] = torch.where((~g["has_prev"] & g["has_next"])[:, None, None], g["R_next"], g["R_prev"])
    return g


def trace_angles(g: dict, tables: dict, dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tabulated backbone angles of every link: (α, ψ of a segment start, φ of a segment end), each
    [..., L-1] rad, from the link geometry ``g`` of :func:`link_frames`."""
    hp, hn = g["has_prev"], g["has_next"]
    tb_i, tb_j, ub = _theta_bin(g["theta_i"]), _theta_bin(g["theta_j"]), _tau_bin(g["tau"])
    alpha = torch.where(hp & hn, tables["alpha_full"].to(dtype)[tb_i, tb_j, ub],
                        torch.where(hn, tables["alpha_noprev"].to(dtype)[tb_j],
                                    torch.where(hp, tables["alpha_nonext"].to(dtype)[tb_i],
                                                torch.zeros((), dtype=dtype))))
    alpha = torch.where(is_cis(g), cis_alpha(g, tables, dtype), alpha)
    return alpha, tables["psi_start"].to(dtype)[tb_j], tables["phi_end"].to(dtype)[tb_i]


def is_cis(g: dict) -> torch.Tensor:
    """[..., L-1] bool: links of :func:`link_frames` that are cis peptides (CA–CA < CIS_MAX_CA_CA)."""
    return g["linked"] & (g["ca_ca"] < CIS_MAX_CA_CA)


def cis_alpha(g: dict, tables: dict, dtype) -> torch.Tensor:
    """The tabulated rotation α [..., L-1] rad of a cis unit (meaningful where :func:`is_cis`)."""
    hp, hn = g["has_prev"], g["has_next"]
    ends = tables["alpha_cis_ends"].to(dtype)
    return torch.where(hp & hn, tables["alpha_cis"].to(dtype)[_tau_bin(g["tau"])],
                       torch.where(hp, ends[1], ends[0]))


CIS_MAX_CA_CA = 3.3  # Å: trans peptides have CA–CA 3.80 ± 0.05 Å, cis ones 2.8–3.2 Å
_TRANS_CA_CA = 3.80  # Å, the trans template's CA–CA distance (mean over the training set)


def _cis_internal(trans_unit: torch.Tensor) -> tuple:
    """Bond lengths and angles (float64) of the trans template [3, 3]: |CA–C|, |C–N|, |N–CA|, |C–O|, ∠CA–C–N,
    ∠C–N–CA, ∠CA–C–O."""
    t = trans_unit.to(torch.float64)
    c, o, n_rel = t[0], t[1], t[2]
    ca_j = torch.tensor([_TRANS_CA_CA, 0.0, 0.0], dtype=torch.float64)
    n = ca_j + n_rel

    def ang(a, b, cc):
        u, v = a - b, cc - b
        return torch.arccos((u @ v) / (u.norm() * v.norm()))

    zero = torch.zeros(3, dtype=torch.float64)
    return (c.norm(), (n - c).norm(), n_rel.norm(), (o - c).norm(), ang(zero, c, n), ang(c, n, ca_j),
            ang(zero, c, o), float(c[1]))


def _cis_plane(geo: tuple, delta: torch.Tensor):
    """2-D cis units (ω = 0) with ∠CA–C–N and ∠C–N–CA both opened by delta [n] rad (∠CA–C–O by −delta/2):
    C at the origin. Returns (ca_i, n, o, ca_j), each [n, 2]."""
    b_cac, b_cn, b_nca, b_co, t1, t2, t_o, _ = geo
    pi = math.pi
    ang = lambda a: torch.stack([torch.cos(a), torch.sin(a)], dim=-1)  # noqa: E731
    ca_i = b_cac * ang(torch.full_like(delta, pi))
    n = b_cn * ang(pi - (t1 + delta))
    o = b_co * ang(pi + t_o - delta / 2)
    # CA(j): the N→C direction turned by ∠C–N–CA towards CA(i)'s side (cis).
    to_c = ang(-(t1 + delta))  # unit vector N → C
    a = -(t2 + delta)
    rot = torch.stack([torch.stack([torch.cos(a), -torch.sin(a)], -1), torch.stack([torch.sin(a), torch.cos(a)], -1)],
                      -2)
    ca_j = n + b_nca * torch.einsum("nij,nj->ni", rot, to_c)
    return ca_i, n, o, ca_j


def cis_units(trans_unit: torch.Tensor, ca_ca: torch.Tensor) -> torch.Tensor:
    """Cis peptide units for links of CA–CA distance ca_ca [n] Å → [n, 3, 3] (rows C(i), O(i) from CA(i), N(i+1)
    from CA(i+1), in the unit frame, C on the same side of the axis as in the trans template).

    Bond lengths are the trans template's and ω = 0; the two backbone angles ∠CA–C–N and ∠C–N–CA open (or
    close) by the same amount so that the unit spans exactly the given distance (bisection, clamped to ±25°)."""
    geo = _cis_internal(trans_unit)
    d = ca_ca.detach().to(torch.float64)
    lo = torch.full_like(d, -math.radians(25.0))
    hi = torch.full_like(d, math.radians(25.0))
    for _ in range(30):  # CA–CA grows with delta
        mid = (lo + hi) / 2
        ca_i, _, _, ca_j = _cis_plane(geo, mid)
        longer = (ca_j - ca_i).norm(dim=-1) > d
        hi = torch.where(longer, mid, hi)
        lo = torch.where(longer, lo, mid)
    ca_i, n, o, ca_j = _cis_plane(geo, (lo + hi) / 2)
    ex = (ca_j - ca_i) / (ca_j - ca_i).norm(dim=-1, keepdim=True)
    ey = torch.stack([-ex[:, 1], ex[:, 0]], -1)
    loc = lambda p, origin: torch.stack([((p - origin) * ex).sum(-1), ((p - origin) * ey).sum(-1)], -1)  # noqa: E731
    c2, o2, n2 = loc(torch.zeros_like(ca_i), ca_i), loc(o, ca_i), loc(n, ca_j)
    flip = (c2[:, 1] * geo[7] < 0)[:, None]
    sgn = torch.tensor([1.0, -1.0], dtype=torch.float64)
    c2, o2, n2 = (torch.where(flip, v * sgn, v) for v in (c2, o2, n2))
    z = torch.zeros_like(d)[:, None]
    return torch.stack([torch.cat([v, z], -1) for v in (c2, o2, n2)], -2).to(trans_unit.dtype)


def _settle_links(ca, g, alpha, unit, links, cis, c_u, o_u, n_u, a_ncac: float, step_deg: float = 5.0):
    """Turn the flagged peptide units ``links`` [..., L-1] to the rotation (a 5° grid around the given α; any
    rotation for cis units, within ±90° for trans ones) that gives the two residues each joins the most nearly
    ideal N–CA–C angles with their other units, keeps the 1–4 pairs N–O ≥ 2.6 Å and the carbonyl O ≥ 2.7 Å from
    the neighbouring units' O. A cis unit's α is poorly predicted (rare in training) and a wrong one folds N onto
    C; two sampled trans units can put consecutive O atoms on top of each other. Ties go to the given α.
    Returns new (c_u, o_u, n_u)."""
    idx = links.nonzero(as_tuple=True)  # batch indices..., link j
    j = idx[-1]
    L1 = links.shape[-1]
    grid = torch.deg2rad(torch.arange(-180.0, 180.0, step_deg, dtype=ca.dtype, device=ca.device))  # [G]
    a = alpha[idx][:, None] + grid  # [P, G]
    too_far = ~cis.expand(links.shape)[idx][:, None] & (grid.abs() > math.radians(90.0))[None]  # [P, G]
    Uc = _unit_frame(g["R"][idx][:, None].expand(-1, len(grid), -1, -1), a)  # [P, G, 3, 3]
    ca_i, ca_j = ca[idx[:-1] + (j,)], ca[idx[:-1] + (j + 1,)]  # [P, 3]
    c_c = ca_i[:, None] + torch.einsum("pgij,pj->pgi", Uc, unit[idx][:, 0])
    o_c = ca_i[:, None] + torch.einsum("pgij,pj->pgi", Uc, unit[idx][:, 1])
    n_c = ca_j[:, None] + torch.einsum("pgij,pj->pgi", Uc, unit[idx][:, 2])
    cost = 0.05 * (1 - torch.cos(grid))[None] + too_far * 1e6
    linked = g["linked"]
    # The CBs the candidate backbone implies (Ala geometry for every type; Gly has none but the rule is harmless):
    # residue i gets N from the unit before and C from this one, residue i+1 the reverse.
    from ldb_hpc.chem.ideal import ideal_geometry
    from ldb_hpc.geometry.builder import nerf

    geo = ideal_geometry()
    ala = rc.RESTYPE_INDEX["ALA"]
    cb_geo = (float(geo.bond[ala, 4]), float(geo.angle[ala, 4]), float(geo.offset[ala, 4]))
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
        if side < 0:
            other = n_u[idx[:-1] + (k,)]  # N(i) from the unit before
            ang = bond_angle(other[:, None], ca_i[:, None], c_c)
            near = (o_c - other[:, None]).norm(dim=-1)
        else:
            other = c_u[idx[:-1] + (k,)]  # C(i+1) from the unit after
            ang = bond_angle(n_c, ca_j[:, None], other[:, None])
            near = (n_c - o_u[idx[:-1] + (k,)][:, None]).norm(dim=-1)
        o_o = (o_c - o_u[idx[:-1] + (k,)][:, None]).norm(dim=-1)  # carbonyl O of the neighbouring unit
        cost = cost + ok[:, None] * ((ang - a_ncac) ** 2 + torch.relu(2.6 - near) ** 2 + torch.relu(2.7 - o_o) ** 2)
    best = cost.argmin(-1)
    a_best = a.gather(-1, best[:, None])[:, 0]
    U = _unit_frame(g["R"][idx], a_best)
    c_u, o_u, n_u = c_u.clone(), o_u.clone(), n_u.clone()
    c_u[idx] = ca_i + torch.einsum("pij,pj->pi", U, unit[idx][:, 0])
    o_u[idx] = ca_i + torch.einsum("pij,pj->pi", U, unit[idx][:, 1])
    n_u[idx] = ca_j + torch.einsum("pij,pj->pi", U, unit[idx][:, 2])
    return c_u, o_u, n_u


def backbone_from_angles(ca: torch.Tensor, g: dict, alpha: torch.Tensor, psi_start: torch.Tensor,
                         phi_end: torch.Tensor, tables: dict):
    """Place N, C, O of every residue from the CA trace and the backbone angles.

    ca: [..., L, 3] Å (L ≥ 2); g: :func:`link_frames` of it; alpha, psi_start, phi_end: [..., L-1] rad (α of every
    link; ψ used where the link starts a segment, φ where it ends one). Returns (n, c, o, o_torsion): n, c, o
    [..., L, 3] Å (CA unchanged; o only meaningful where a unit follows the residue) and o_torsion [..., L] rad,
    the N–CA–C–O torsion the atom builder should use. Differentiable in the angles.
    """
    from ldb_hpc.chem.ideal import ideal_geometry
    from ldb_hpc.geometry.builder import nerf

    dtype = ca.dtype
    L = ca.shape[-2]
    fl = ideal_geometry().frame_local[rc.UNK]
    b_nca, b_cac = float(np.linalg.norm(fl[0])), float(np.linalg.norm(fl[2]))
    a_ncac = float(np.arccos(fl[0, 0] / b_nca))
    U = _unit_frame(g["R"], alpha)  # [..., L-1, 3, 3]
    ca_i, ca_j = ca[..., :-1, :], ca[..., 1:, :]
    # A link whose CAs are closer than CIS_MAX_CA_CA is a cis peptide (ω ≈ 0, CA–CA ≈ 2.9 Å): it gets the cis
    # unit, with the same bond lengths and angles, so its bonds stay ideal too.
    cis = is_cis(g)  # [..., L-1]
    unit = tables["unit"].to(dtype).expand(*cis.shape, 3, 3)
    if bool(cis.any()):
        unit = unit.clone()
        unit[cis] = cis_units(tables["unit"], g["ca_ca"][cis]).to(dtype)
    c_u = ca_i + torch.einsum("...ij,...j->...i", U, unit[..., 0, :])
    o_u = ca_i + torch.einsum("...ij,...j->...i", U, unit[..., 1, :])
    n_u = ca_j + torch.einsum("...ij,...j->...i", U, unit[..., 2, :])
    # Units to settle (twice, as a settled unit changes its neighbours' angles): cis ones; both units of a residue
    # whose N–CA–C angle is more than 20° from ideal (two units that disagree, e.g. a proline folded onto the
    # carbonyl before it); both units of consecutive carbonyls closer than 2.3 Å.
    linked = g["linked"]
    both = linked[1:] & linked[:-1]  # [L-2]: residues 1..L-2 have a unit on each side
    for _ in range(2):
        ncac = bond_angle(n_u[..., :-1, :], ca[..., 1:-1, :], c_u[..., 1:, :])  # [..., L-2], residues 1..L-2
        pair = both & (((ncac - a_ncac).abs() > math.radians(20.0))
                       | ((o_u[..., 1:, :] - o_u[..., :-1, :]).norm(dim=-1) < 2.3))
        bad = cis
        bad = torch.cat([bad[..., :1], bad[..., 1:] | pair], -1)
        bad = torch.cat([bad[..., :-1] | pair, bad[..., -1:]], -1)
        if not bool(bad.any()):
            break
        c_u, o_u, n_u = _settle_links(ca, g, alpha, unit, bad, cis, c_u, o_u, n_u, a_ncac)
    # Chain-end atoms with ideal bond geometry: N(i) at ψ(i) for a link with no residue before it,
    # C(i+1) at φ(i+1) for a link with no residue after it.
    n_start = nerf(n_u, c_u, ca_i, b_nca, a_ncac, psi_start)
    c_end = nerf(c_u, n_u, ca_j, b_cac, a_ncac, phi_end)

    linked = g["linked"]
    has_before = torch.zeros(L, dtype=torch.bool, device=ca.device)
    has_after = torch.zeros(L, dtype=torch.bool, device=ca.device)
    has_before[1:] = linked
    has_after[:-1] = linked
    pad = lambda x, front: torch.cat([x[..., :1, :], x] if front else [x, x[..., -1:, :]], dim=-2)  # noqa: E731
    n = torch.where(has_before[:, None], pad(n_u, True), pad(n_start, False))
    c = torch.where(has_after[:, None], pad(c_u, False), pad(c_end, True))
    o = pad(o_u, False)
    o_tors = torch.where(has_after, dihedral(n, ca, c, o), tables["o_torsion_end"].to(dtype))
    lone = ~has_before & ~has_after
    if bool(lone.any()):
        sn, sc, so = _singletons(ca)
        n = torch.where(lone[:, None], sn, n)
        c = torch.where(lone[:, None], sc, c)
        o = torch.where(lone[:, None], so, o)
        o_tors = torch.where(lone, dihedral(n, ca, c, o), o_tors)
    return n, c, o, o_tors


def backbone_from_trace(ca: torch.Tensor, segment: torch.Tensor, tables: dict | None = None):
    """Place N, C, O of every residue from the CA trace with the tabulated angles.

    ca: [..., L, 3] Å; segment: [L] int. Returns (n, c, o, o_torsion) as :func:`backbone_from_angles`.
    """
    tables = tables or load_tables()
    if ca.shape[-2] == 1:
        n, c, o = _singletons(ca)
        return n, c, o, dihedral(n, ca, c, o)
    g = link_frames(ca, segment)
    return backbone_from_angles(ca, g, *trace_angles(g, tables, ca.dtype), tables)


def _singletons(ca: torch.Tensor):
    """Backbone of one-residue segments: ideal N, C and an ideal trans O, in a fixed orientation."""
    from ldb_hpc.chem.ideal import ideal_geometry

    geo = ideal_geometry()
    fl = torch.as_tensor(geo.frame_local[rc.UNK], dtype=ca.dtype)  # [3, 3] N, CA, C
    n = ca + fl[0]
    c = ca + fl[2]
    # O in the N–CA–C plane, anti to N, with the ideal C=O length.
    bond_o = float(geo.bond[rc.UNK, 3])
    o = c + bond_o * _unit(_unit(c - ca) - _unit(n - ca))
    return n, c, o


def backbone_phi_psi(ca, n, c, segment) -> tuple[torch.Tensor, torch.Tensor]:
    """φ, ψ [..., L] rad of a built backbone (NaN where the neighbour residue is in another segment)."""
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


def atoms_from_backbone(ca, n, c, o_torsion, chi, restype) -> torch.Tensor:
    """All heavy atoms from a placed backbone and side-chain torsions.

    ca, n, c: [..., L, 3] Å; o_torsion: [..., L] rad (N–CA–C–O); chi: [..., L, 4] rad (χ1..χ4; unused channels
    ignored); restype: [L] long. N, CA, C stay where they are (to float32 rounding); every other atom gets ideal
    geometry. Returns [..., L, 14, 3] Å.

    Float32 input without autograd runs the fused kernel of :func:`ldb_hpc.ops.build_atoms` (C++ on CPU,
    Triton on CUDA) when that backend is not the reference; otherwise :func:`atoms_from_backbone_torch`.
    """
    args = (ca, n, c, o_torsion, chi)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in args)
    if not needs_grad and all(t.dtype == torch.float32 for t in args):
        from ldb_hpc import ops

        if ops.backend(ca.device) != "reference":
            lead = torch.broadcast_shapes(ca.shape[:-1], n.shape[:-1], c.shape[:-1], o_torsion.shape,
                                          chi.shape[:-1], restype.shape)
            flat = lambda x, k: x.expand(*lead, *k).reshape(-1, *k)  # noqa: E731
            pos = ops.build_atoms(flat(n, (3,)), flat(ca, (3,)), flat(c, (3,)), flat(o_torsion, ()),
                                  flat(chi, (4,)), flat(restype.to(torch.int64), ()))
            return pos.reshape(*lead, rc.NUM_SLOTS, 3)
    return atoms_from_backbone_torch(ca, n, c, o_torsion, chi, restype)


def atoms_from_backbone_torch(ca, n, c, o_torsion, chi, restype) -> torch.Tensor:
    """The pure-torch (differentiable) :func:`atoms_from_backbone`; same shapes and units."""
    from ldb_hpc.geometry.builder import build_atoms
    from ldb_hpc.geometry.frames import frames_from_backbone

    R, t = frames_from_backbone(n, ca, c)
    # The frame keeps the placed N and C exactly: their local coordinates are passed per residue.
    frame_local = torch.einsum("...ji,...kj->...ki", R, torch.stack([n, ca, c], dim=-2) - t[..., None, :])
    torsions = torch.cat([o_torsion[..., None], chi], dim=-1)
    pos = build_atoms(R, t, torsions, restype.expand(ca.shape[:-1]), frame_local=frame_local)
    return close_proline_rings(pos, restype, chi)


_PRO = rc.RESTYPE_INDEX["PRO"]
_PRO_CD_N = [k for k in range(rc.BOND_SLOTS.shape[1]) if rc.BOND_MASK[_PRO, k]
             and set(rc.BOND_SLOTS[_PRO, k].tolist()) == {0, 6}][0]
PRO_CD_N_BOND = _PRO_CD_N  # index of the Pro CD–N bond in BOND_SLOTS / ideal bond_length
# Proline ring closure grid (torch.arange arguments, degrees) and the weight that breaks ties towards the given χ1;
# shared with the fused kernels (ldb_hpc.ops).
PRO_CHI1_DELTA_DEG = (-40.0, 41.0, 4.0)
PRO_CHI2_DEG = (-50.0, 51.0, 2.0)
PRO_TIE_WEIGHT = 1e-3


def close_proline_rings(pos: torch.Tensor, restype: torch.Tensor, chi: torch.Tensor) -> torch.Tensor:
    """Close every proline ring: its CD must bond to its own N, which χ1/χ2 from a network or a table need not
    ensure. A grid of χ1 (±40° around the given value, 4° steps) × χ2 (−50°..50°, 2° steps) is searched for the
    pair whose CD–N distance is nearest the ideal length (ties broken towards the given χ1); CG and CD move there.
    pos [..., L, 14, 3] Å; restype [L]; chi [..., L, 4] rad. Returns the new positions (others unchanged)."""
    from ldb_hpc.chem.ideal import ideal_geometry
    from ldb_hpc.geometry.builder import nerf

    pro = (restype == _PRO).nonzero().flatten()
    if pro.numel() == 0:
        return pos
    geo = ideal_geometry()
    dt, dev = pos.dtype, pos.device
    p = pos[..., pro, :, :]  # [..., P, 14, 3]
    n, ca, cb = p[..., 0, :], p[..., 1, :], p[..., 4, :]
    c1 = chi[..., pro, 0, None] + torch.deg2rad(torch.arange(*PRO_CHI1_DELTA_DEG, dtype=dt, device=dev))  # [..., P, 21]
    cg = nerf(n[..., None, :], ca[..., None, :], cb[..., None, :], float(geo.bond[_PRO, 5]),
              float(geo.angle[_PRO, 5]), float(geo.offset[_PRO, 5]) + c1)  # [..., P, 21, 3]
    c2 = torch.deg2rad(torch.arange(*PRO_CHI2_DEG, dtype=dt, device=dev))  # [51]
    cd = nerf(ca[..., None, None, :], cb[..., None, None, :], cg[..., None, :], float(geo.bond[_PRO, 6]),
              float(geo.angle[_PRO, 6]), float(geo.offset[_PRO, 6]) + c2)  # [..., P, 21, 51, 3]
    err = ((cd - n[..., None, None, :]).norm(dim=-1) - float(geo.bond_length[_PRO, _PRO_CD_N])).abs()
    err = err + PRO_TIE_WEIGHT * (c1 - chi[..., pro, 0, None]).abs()[..., None]
    best = err.flatten(-2).argmin(-1)  # [..., P]
    i1 = (best // c2.numel())[..., None, None].expand(*best.shape, 1, 3)
    new_cg = cg.gather(-2, i1).squeeze(-2)
    new_cd = cd.flatten(-3, -2).gather(-2, best[..., None, None].expand(*best.shape, 1, 3)).squeeze(-2)
    pos = pos.clone()
    pos[..., pro, 5, :] = new_cg
    pos[..., pro, 6, :] = new_cd
    return pos


def backmap_ideal(ca: torch.Tensor, restype: torch.Tensor, segment: torch.Tensor,
                  tables: dict | None = None) -> torch.Tensor:
    """Backmap CA traces with the non-learned baseline.

    ca: [..., L, 3] Å (float32 or float64); restype: [L] long; segment: [L] long.
    Returns atom14 positions [..., L, 14, 3] Å; every slot of each residue type is filled.
    """
    tables = tables or load_tables()
    n, c, o, o_tors = backbone_from_trace(ca, segment, tables)
    # χ from the rotamer table by the backbone region of the built backbone.
    region = _region(*backbone_phi_psi(ca, n, c, segment))
    chi = tables["rotamer"].to(ca.dtype)[restype.expand(region.shape), region]  # [..., L, 4]
    return atoms_from_backbone(ca, n, c, o_tors, chi, restype)
