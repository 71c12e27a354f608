"""``--model ideal``: a non-learned backmapper, the baseline every learned model is compared with.

Backbone by geometric rules. Every peptide link i→i+1 of a segment gets a local frame from the CA trace
(origin CA(i), x along CA(i)→CA(i+1), y towards CA(i−1) — or, at an N-terminal link, from CA(i+2)). The
positions of N(i), C(i), O(i), N(i+1), C(i+1), O(i+1) in that frame are looked up in a table of mean
positions measured on ../shared/data/train, binned by the CA virtual angles θ(i), θ(i+1) and the virtual
dihedral τ(i) (10° and 15° bins; sparse bins fall back to coarser ones). N(i) comes from the link before
residue i, C(i) and O(i) from the link after it; at segment ends the one link there gives all three; a
one-residue segment gets the mean residue geometry in an arbitrary orientation.

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
# Link atoms, in the order of the tables' second-to-last axis.
LINK_ATOMS = ("N_i", "C_i", "O_i", "N_j", "C_j", "O_j")
# Backbone regions for rotamers: 0 α, 1 β, 2 left-handed (φ > 0), 3 any (φ or ψ undefined).
N_REGIONS = 4


# ----------------------------------------------------------------------------------------------------
# CA-trace geometry shared by fitting and inference


def _frame(origin: torch.Tensor, xpoint: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """[..., 3, 3] rotation with columns x, y, z: x along origin→xpoint, y towards ref ⟂ x (never NaN)."""
    return basis_from_two_vectors(xpoint - origin, ref - origin)


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
                theta_i=theta_i, theta_j=theta_j, tau=tau, linked=same)


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


def fit_tables(n: np.ndarray, ca: np.ndarray, c: np.ndarray, o: np.ndarray, present: np.ndarray,
               segment: np.ndarray, restype: np.ndarray, chi: np.ndarray, chi_mask: np.ndarray) -> dict:
    """Fit the backbone link tables and the rotamer modes.

    n, ca, c, o: [L, 3] Å backbone atoms of all training residues in chain order; present: [L] bool
    (all four present); segment: [L]; restype: [L]; chi: [L, 4] radians with chi_mask [L, 4].
    Returns a dict of numpy arrays (the contents of ideal.npz).
    """
    T = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float64)  # noqa: E731
    n_, ca_, c_, o_ = T(n), T(ca), T(c), T(o)
    seg = torch.as_tensor(segment)
    g = _link_geometry(ca_, seg)
    ok = g["linked"] & torch.as_tensor(present[:-1] & present[1:])
    atoms = torch.stack([n_[:-1], c_[:-1], o_[:-1], n_[1:], c_[1:], o_[1:]], dim=-2)  # [L-1, 6, 3]
    rel = atoms - ca_[:-1, None, :]

    def local(R):  # [L-1, 6, 3] in the link frame
        return torch.einsum("lji,lkj->lki", R, rel)

    loc_prev, loc_next = local(g["R_prev"]), local(g["R_next"])
    tb_i, tb_j, ub = _theta_bin(g["theta_i"]), _theta_bin(g["theta_j"]), _tau_bin(g["tau"])

    def binned_mean(values, keys, n_bins, sel):
        sums = torch.zeros(n_bins, 6, 3, dtype=torch.float64)
        cnt = torch.zeros(n_bins, dtype=torch.float64)
        sums.index_add_(0, keys[sel], values[sel])
        cnt.index_add_(0, keys[sel], torch.ones(int(sel.sum()), dtype=torch.float64))
        return sums, cnt

    full_sel = ok & g["has_prev"] & g["has_next"]
    # Full: (θi, θj, τ) with fallbacks to τ only and to the global mean.
    key_full = (tb_i * N_THETA + tb_j) * N_TAU + ub
    s_full, c_full = binned_mean(loc_prev, key_full, N_THETA * N_THETA * N_TAU, full_sel)
    s_tau, c_tau = binned_mean(loc_prev, ub, N_TAU, full_sel)
    s_all, c_all = loc_prev[full_sel].sum(0), float(full_sel.sum())
    mean_all = s_all / max(c_all, 1.0)
    tau_mean = torch.where(c_tau[:, None, None] >= MIN_COUNT, s_tau / c_tau.clamp_min(1)[:, None, None], mean_all)
    full = torch.where(c_full[:, None, None] >= MIN_COUNT, s_full / c_full.clamp_min(1)[:, None, None],
                       tau_mean.repeat(N_THETA * N_THETA, 1, 1))
    # N-terminal links (no CA(i−1)): frame towards CA(i+2), binned by θ(i+1).
    sel = ok & g["has_next"]
    s, cn = binned_mean(loc_next, tb_j, N_THETA, sel)
    m = loc_next[sel].mean(0)
    noprev = torch.where(cn[:, None, None] >= MIN_COUNT, s / cn.clamp_min(1)[:, None, None], m)
    # C-terminal links (no CA(i+2)): frame towards CA(i−1), binned by θ(i).
    sel = ok & g["has_prev"]
    s, cn = binned_mean(loc_prev, tb_i, N_THETA, sel)
    m_prev = loc_prev[sel].mean(0)
    nonext = torch.where(cn[:, None, None] >= MIN_COUNT, s / cn.clamp_min(1)[:, None, None], m_prev)
    # Two-residue segments: the orientation about x is unknown; any mean placement will do.
    none = m_prev

    # Rotamer modes per (restype, region).
    phi = torch.full((len(ca),), float("nan"), dtype=torch.float64)
    psi = torch.full((len(ca),), float("nan"), dtype=torch.float64)
    lk = g["linked"] & torch.as_tensor(present[:-1] & present[1:])
    phi_v = dihedral(c_[:-1], n_[1:], ca_[1:], c_[1:])
    psi_v = dihedral(n_[:-1], ca_[:-1], c_[:-1], n_[1:])
    phi[1:] = torch.where(lk, phi_v, phi[1:])
    psi[:-1] = torch.where(lk, psi_v, psi[:-1])
    region = _region(phi, psi).numpy()
    rot = np.zeros((rc.NUM_RESTYPES, N_REGIONS, 4))
    for r in range(rc.NUM_RESTYPES):
        for reg in range(N_REGIONS):
            sel = (restype == r) if reg == N_REGIONS - 1 else (restype == r) & (region == reg)
            rot[r, reg] = _rotamer_mode(chi[sel], chi_mask[sel], rc.CHI_MASK[r])
    return dict(link_full=full.reshape(N_THETA, N_THETA, N_TAU, 6, 3).numpy(), link_noprev=noprev.numpy(),
                link_nonext=nonext.numpy(), link_none=none.numpy(), rotamer=rot,
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


def backbone_from_trace(ca: torch.Tensor, segment: torch.Tensor, tables: dict | None = None):
    """Place N, C, O of every residue from the CA trace.

    ca: [..., L, 3] Å; segment: [L] int. Returns (n, c, o), each [..., L, 3] Å; CA is unchanged.
    """
    tables = tables or load_tables()
    dtype = ca.dtype
    L = ca.shape[-2]
    if L == 1:
        return _singletons(ca, torch.ones(1, dtype=torch.bool))
    g = _link_geometry(ca, segment)
    hp, hn = g["has_prev"], g["has_next"]
    tb_i, tb_j, ub = _theta_bin(g["theta_i"]), _theta_bin(g["theta_j"]), _tau_bin(g["tau"])
    full = tables["link_full"].to(dtype)[tb_i, tb_j, ub]  # [..., L-1, 6, 3]
    noprev = tables["link_noprev"].to(dtype)[tb_j]
    nonext = tables["link_nonext"].to(dtype)[tb_i]
    none = tables["link_none"].to(dtype).expand_as(full)
    loc = torch.where((hp & hn)[:, None, None], full,
                      torch.where(hn[:, None, None], noprev, torch.where(hp[:, None, None], nonext, none)))
    R = torch.where(hp[:, None, None], g["R_prev"], torch.where(hn[:, None, None], g["R_next"], g["R_prev"]))
    atoms = torch.einsum("...lij,...lkj->...lki", R, loc) + ca[..., :-1, None, :]  # [..., L-1, 6, 3]
    linked = g["linked"]
    has_before = torch.zeros(L, dtype=torch.bool, device=ca.device)
    has_after = torch.zeros(L, dtype=torch.bool, device=ca.device)
    has_before[1:] = linked
    has_after[:-1] = linked
    # Per residue: from the link before (index i−1, atoms j) or after (index i, atoms i).
    after = torch.cat([atoms[..., :, 0:3, :], atoms[..., -1:, 0:3, :]], dim=-3)   # residue i as link-start
    before = torch.cat([atoms[..., :1, 3:6, :], atoms[..., :, 3:6, :]], dim=-3)   # residue i as link-end
    n = torch.where(has_before[:, None], before[..., 0, :], after[..., 0, :])
    c = torch.where(has_after[:, None], after[..., 1, :], before[..., 1, :])
    o = torch.where(has_after[:, None], after[..., 2, :], before[..., 2, :])
    lone = ~has_before & ~has_after
    if bool(lone.any()):
        sn, sc, so = _singletons(ca, lone)
        n = torch.where(lone[:, None], sn, n)
        c = torch.where(lone[:, None], sc, c)
        o = torch.where(lone[:, None], so, o)
    return n, c, o


def _singletons(ca: torch.Tensor, lone: torch.Tensor):
    """Backbone of one-residue segments: ideal N, C and an ideal trans O, in a fixed orientation."""
    from ldb_hpc.chem.ideal import ideal_geometry

    geo = ideal_geometry()
    fl = torch.as_tensor(geo.frame_local[rc.UNK], dtype=ca.dtype)  # [3, 3] N, CA, C
    n = ca + fl[0]
    c = ca + fl[2]
    # O in the N–CA–C plane, anti to N, with the ideal C=O length.
    bond_o = float(geo.bond[rc.UNK, 3])
    u = (c - ca) / (c - ca).norm(dim=-1, keepdim=True) - (n - ca) / (n - ca).norm(dim=-1, keepdim=True)
    o = c + bond_o * u / u.norm(dim=-1, keepdim=True)
    return n, c, o


def backmap_ideal(ca: torch.Tensor, restype: torch.Tensor, segment: torch.Tensor,
                  tables: dict | None = None) -> torch.Tensor:
    """Backmap CA traces with the non-learned baseline.

    ca: [..., L, 3] Å (float32 or float64); restype: [L] long; segment: [L] long.
    Returns atom14 positions [..., L, 14, 3] Å; every slot of each residue type is filled.
    """
    from ldb_hpc.chem.ideal import ideal_geometry
    from ldb_hpc.geometry.builder import build_from_internal
    from ldb_hpc.geometry.frames import frames_from_backbone

    tables = tables or load_tables()
    n, c, o = backbone_from_trace(ca, segment, tables)
    R, t = frames_from_backbone(n, ca, c)
    # The frame keeps the placed N and C exactly: their local coordinates are passed per residue.
    frame_local = torch.einsum("...ji,...kj->...ki", R, torch.stack([n, ca, c], dim=-2) - t[..., None, :])
    # Torsions: O from its placed position, χ from the rotamer table by backbone region.
    torsions = torch.zeros(ca.shape[:-1] + (rc.NUM_TORSIONS,), dtype=ca.dtype, device=ca.device)
    torsions[..., rc.PSI] = dihedral(n, ca, c, o)
    L = ca.shape[-2]
    phi = torch.full(ca.shape[:-1], float("nan"), dtype=ca.dtype, device=ca.device)
    psi = torch.full(ca.shape[:-1], float("nan"), dtype=ca.dtype, device=ca.device)
    if L > 1:
        link = segment[1:] == segment[:-1]
        phi[..., 1:] = torch.where(link, dihedral(c[..., :-1, :], n[..., 1:, :], ca[..., 1:, :], c[..., 1:, :]),
                                   phi[..., 1:])
        psi[..., :-1] = torch.where(link, dihedral(n[..., :-1, :], ca[..., :-1, :], c[..., :-1, :], n[..., 1:, :]),
                                    psi[..., :-1])
    region = _region(phi, psi)
    rot = tables["rotamer"].to(ca.dtype)[restype.expand(region.shape), region]  # [..., L, 4]
    torsions[..., 1:] = rot
    geo = ideal_geometry()
    dev = ca.device
    zt = torch.as_tensor(rc.ZM_TORSION, device=dev)[restype]  # [L, 14]
    offset = torch.as_tensor(geo.offset, dtype=ca.dtype, device=dev)[restype]
    tors_slot = torch.gather(torsions, -1, zt.clamp_min(0).expand(torsions.shape[:-1] + (rc.NUM_SLOTS,)))
    dih = offset + torch.where(zt >= 0, tors_slot, torch.zeros_like(tors_slot))
    bond = torch.as_tensor(geo.bond, dtype=ca.dtype, device=dev)[restype].expand_as(dih)
    angle = torch.as_tensor(geo.angle, dtype=ca.dtype, device=dev)[restype].expand_as(dih)
    return build_from_internal(R, t, restype.expand(ca.shape[:-1]), bond, angle, dih, frame_local)
