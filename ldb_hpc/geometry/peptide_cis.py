"""Cis peptide units (ω = 0) for links whose CA–CA distance is too short for a trans one: the trans template's
bond lengths kept, ∠CA–C–N and ∠C–N–CA opened or closed together so that the unit spans the link
(:func:`cis_units`; used by :mod:`ldb_hpc.geometry.peptide`)."""

from __future__ import annotations

import math

import numpy as np
import torch

from ldb_hpc.geometry import resident
from ldb_hpc.geometry.resident import on_device

TRANS_CA_CA = 3.80  # Å, the trans template's CA–CA distance (mean over the training set)


@resident.table_cache(maxsize=4)
def _cis_internal(trans_unit: torch.Tensor) -> tuple:
    """Bond lengths and angles (float64) of the trans template [3, 3]: |CA–C|, |C–N|, |N–CA|, |C–O|, ∠CA–C–N,
    ∠C–N–CA, ∠CA–C–O, and the side of C (sign of its y)."""
    t = trans_unit.to(torch.float64)
    c, o, n_rel = t[0], t[1], t[2]
    ca_j = torch.tensor([TRANS_CA_CA, 0.0, 0.0], dtype=torch.float64, device=t.device)
    n = ca_j + n_rel

    def ang(a, b, cc):
        u, v = a - b, cc - b
        return torch.arccos((u @ v) / (u.norm() * v.norm()))

    zero = torch.zeros(3, dtype=torch.float64, device=t.device)
    return (c.norm(), (n - c).norm(), n_rel.norm(), (o - c).norm(), ang(zero, c, n), ang(c, n, ca_j),
            ang(zero, c, o), float(c[1]))


_SIGNS = np.array([1.0, -1.0])


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
    from CA(i+1), in the unit frame, C on the same side of the axis as in the trans template [3, 3] Å).

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
    sgn = on_device(_SIGNS, d.device, torch.float64)
    c2, o2, n2 = (torch.where(flip, v * sgn, v) for v in (c2, o2, n2))
    z = torch.zeros_like(d)[:, None]
    return torch.stack([torch.cat([v, z], -1) for v in (c2, o2, n2)], -2).to(trans_unit.dtype)
