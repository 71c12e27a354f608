"""``--model ideal``: a non-learned backmapper, the baseline every learned model is compared with.

The backbone is built by :mod:`ldb_hpc.geometry.peptide` (rigid trans/cis peptide units, settling, chain ends)
from angles read off tables of circular means measured on the training set: each link's rotation α about the
CA(i)→CA(i+1) axis binned by the CA virtual angles θ(i), θ(i+1) and dihedral τ(i) (10° and 15° bins; sparse bins
fall back to τ alone, then to the global mean; chain-end links have their own tables), and the ψ / φ of
segment-start / segment-end residues.

Side chains: the atom builder places CB and every side-chain atom with ideal internal geometry and the
most common rotamer of the residue type in its backbone region (α, β, left-handed from φ/ψ of the built
backbone; "any" where φ or ψ is undefined), measured on the training set.

Tables: ``ldb_hpc/weights/ideal.npz``, written by ``scripts/fit_ideal_model.py`` (``fit_tables``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ldb_hpc import ops
from ldb_hpc.chem import residues as rc
from ldb_hpc.geometry import resident
from ldb_hpc.geometry.peptide import (
    CIS_MAX_CA_CA,
    Backbone,
    LinkGeometry,
    PeptideTemplate,
    alpha_of,
    backbone_from_angles,
    backbone_phi_psi,
    is_cis,
    link_geometry,
    singleton_backbone,
    unit_frame,
)
from ldb_hpc.geometry.vectors import dihedral

TABLE_FILE = Path(__file__).resolve().parents[1] / "weights" / "ideal.npz"

THETA_MIN, THETA_STEP, N_THETA = 70.0, 10.0, 9  # degrees
N_TAU = 24  # 15° bins over [-180, 180)
MIN_COUNT = 8  # a bin with fewer samples falls back to a coarser table
# Backbone regions for rotamers: 0 α, 1 β, 2 left-handed (φ > 0), 3 any (φ or ψ undefined).
N_REGIONS = 4


# ----------------------------------------------------------------------------------------------------
# Bins of the link geometry


def _theta_bin(theta: torch.Tensor) -> torch.Tensor:
    return ((theta - THETA_MIN) / THETA_STEP).floor().long().clamp(0, N_THETA - 1)


def _tau_bin(tau: torch.Tensor) -> torch.Tensor:
    return ((tau + math.pi) / (2 * math.pi / N_TAU)).floor().long().remainder(N_TAU)


# ----------------------------------------------------------------------------------------------------
# Tables


@resident.table_cache(maxsize=2)
def load_tables(path: str | None = None) -> dict[str, torch.Tensor]:
    """The fitted tables as float32 tensors (see module docstring)."""
    with np.load(path or TABLE_FILE) as data:
        return {k: torch.from_numpy(np.asarray(data[k], dtype=np.float32)) for k in data.files}


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
    g = link_geometry(ca_, torch.as_tensor(segment))
    ca_i, ca_j = ca_[:-1], ca_[1:]
    d_caca = (ca_j - ca_i).norm(dim=-1)
    # Trans peptides only (cis ones have CA–CA ≈ 2.9 Å) with all five unit atoms present.
    ok = g.linked & torch.as_tensor(present[:-1] & present[1:]) & (d_caca > 3.6) & (d_caca < 4.0)

    # The rigid unit, in its own frame (x along CA(i)→CA(i+1), z the plane normal).
    own = unit_frame(g.R_prev, alpha_of(g.R_prev, ca_i, c_[:-1], ca_j))
    local = lambda R, x, origin: torch.einsum("lji,lj->li", R, x - origin)  # noqa: E731
    unit_c = local(own, c_[:-1], ca_i)[ok].mean(0)
    unit_o = local(own, o_[:-1], ca_i)[ok].mean(0)
    unit_n = local(own, n_[1:], ca_j)[ok].mean(0)  # relative to CA(i+1)

    tb_i, tb_j, ub = _theta_bin(g.theta_i), _theta_bin(g.theta_j), _tau_bin(g.tau)
    alpha_prev = alpha_of(g.R_prev, ca_i, c_[:-1], ca_j)
    alpha_next = alpha_of(g.R_next, ca_i, c_[:-1], ca_j)
    full_sel = ok & g.has_prev & g.has_next
    a_all = _circ_mean(alpha_prev[full_sel])
    a_tau, _ = _circ_binned(alpha_prev, ub, N_TAU, full_sel, a_all)
    key_full = (tb_i * N_THETA + tb_j) * N_TAU + ub
    a_full, c_full = _circ_binned(alpha_prev, key_full, N_THETA * N_THETA * N_TAU, full_sel,
                                  a_tau.repeat(N_THETA * N_THETA))
    sel = ok & g.has_next
    a_noprev, _ = _circ_binned(alpha_next, tb_j, N_THETA, sel, _circ_mean(alpha_next[sel]))
    sel = ok & g.has_prev
    a_nonext, _ = _circ_binned(alpha_prev, tb_i, N_THETA, sel, _circ_mean(alpha_prev[sel]))

    # Cis peptides: their rotation is tightly set by the trace (circular R ≈ 0.95); binned by τ alone.
    cis_ok = g.linked & torch.as_tensor(present[:-1] & present[1:]) & (d_caca < CIS_MAX_CA_CA)
    sel = cis_ok & g.has_prev & g.has_next
    a_cis, _ = _circ_binned(alpha_prev, ub, N_TAU, sel, _circ_mean(alpha_prev[cis_ok & g.has_prev]))
    a_cis_noprev = _circ_mean(alpha_next[cis_ok & g.has_next & ~g.has_prev]) \
        if bool((cis_ok & g.has_next & ~g.has_prev).any()) else _circ_mean(alpha_next[cis_ok])
    a_cis_nonext = _circ_mean(alpha_prev[cis_ok & g.has_prev])

    # Chain ends: ψ of the residue that starts a link with no CA(i−1), binned like a_noprev; φ of the
    # residue that ends a link with no CA(i+2), binned like a_nonext; the N–CA–C–O torsion of C-termini.
    psi = dihedral(n_[:-1], ca_i, c_[:-1], n_[1:])
    phi = dihedral(c_[:-1], n_[1:], ca_j, c_[1:])
    sel = ok & g.has_next
    psi_start, _ = _circ_binned(psi, tb_j, N_THETA, sel, _circ_mean(psi[sel]))
    sel = ok & g.has_prev
    phi_end, _ = _circ_binned(phi, tb_i, N_THETA, sel, _circ_mean(phi[sel]))
    o_tors = dihedral(n_, ca_, c_, o_)
    last = torch.ones(len(ca_), dtype=torch.bool)
    last[:-1] = ~g.linked
    o_end = _circ_mean(o_tors[last & torch.as_tensor(present)])

    # Rotamer modes per (restype, region).
    phi_r = torch.full((len(ca_),), float("nan"), dtype=torch.float64)
    psi_r = torch.full((len(ca_),), float("nan"), dtype=torch.float64)
    lk = g.linked & torch.as_tensor(present[:-1] & present[1:])
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


def peptide_template(tables: dict) -> PeptideTemplate:
    """The peptide unit and chain-end O torsion stored in the tables (shared with the learned model)."""
    return PeptideTemplate(trans_unit=tables["unit"], o_torsion_end=tables["o_torsion_end"])


def trace_angles(g: LinkGeometry, tables: dict, dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tabulated backbone angles of every link: (α, ψ of a segment start, φ of a segment end), each
    [..., L-1] rad, from the link geometry ``g`` of :func:`ldb_hpc.geometry.peptide.link_geometry`."""
    hp, hn = g.has_prev, g.has_next
    tb_i, tb_j, ub = _theta_bin(g.theta_i), _theta_bin(g.theta_j), _tau_bin(g.tau)
    alpha = torch.where(hp & hn, tables["alpha_full"].to(dtype)[tb_i, tb_j, ub],
                        torch.where(hn, tables["alpha_noprev"].to(dtype)[tb_j],
                                    torch.where(hp, tables["alpha_nonext"].to(dtype)[tb_i],
                                                torch.zeros((), dtype=dtype))))
    alpha = torch.where(is_cis(g), cis_alpha(g, tables, dtype), alpha)
    return alpha, tables["psi_start"].to(dtype)[tb_j], tables["phi_end"].to(dtype)[tb_i]


def cis_alpha(g: LinkGeometry, tables: dict, dtype) -> torch.Tensor:
    """The tabulated rotation α [..., L-1] rad of a cis unit (meaningful where ``is_cis``)."""
    hp, hn = g.has_prev, g.has_next
    ends = tables["alpha_cis_ends"].to(dtype)
    return torch.where(hp & hn, tables["alpha_cis"].to(dtype)[_tau_bin(g.tau)],
                       torch.where(hp, ends[1], ends[0]))


def backbone_from_trace(ca: torch.Tensor, segment: torch.Tensor, tables: dict | None = None) -> Backbone:
    """Place N, C, O of every residue from the CA trace with the tabulated angles.

    ca: [..., L, 3] Å; segment: [L] int. Returns the :class:`ldb_hpc.geometry.peptide.Backbone`.
    """
    tables = tables or load_tables()
    if ca.shape[-2] == 1:
        n, c, o = singleton_backbone(ca)
        return Backbone(n, c, o, dihedral(n, ca, c, o))
    g = link_geometry(ca, segment)
    return backbone_from_angles(ca, g, *trace_angles(g, tables, ca.dtype), peptide_template(tables))


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
    return ops.atoms_from_backbone(n, ca, c, o_tors, chi, restype)
