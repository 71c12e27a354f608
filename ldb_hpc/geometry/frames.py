"""Residue frames from backbone atoms or from a C-alpha trace (batched torch; Å, radians).

Frame convention (fixed; every model, kernel and test relies on it):

* origin ``t`` = CA;
* x axis = unit(C − CA);
* y axis = unit component of (N − CA) orthogonal to x;
* z axis = x × y (right-handed);
* ``R [..., 3, 3]`` holds the axes as COLUMNS, so ``global = R @ local + t`` and ``local = Rᵀ (global − t)``.

In local coordinates CA is the origin, C lies on +x and N lies in the x–y plane with y > 0.

CA-trace frames use the same construction with the neighbouring C-alpha atoms standing in for the backbone
atoms: C ← CA(i+1), N ← CA(i−1) (neighbours taken within the residue's segment only). Fallbacks, so that every
residue gets a valid orthonormal frame and nothing is ever NaN:

* first residue of a segment (no CA(i−1)): the missing neighbour is the point reflection of CA(i+2) through
  the midpoint of CA(i)–CA(i+1), i.e. CA(i) + CA(i+1) − CA(i+2) (exact for a planar zig-zag chain);
* last residue (no CA(i+1)): likewise CA(i) + CA(i−1) − CA(i−2);
* two-residue segment: x along the bond (towards the other residue for the first, continuing the chain
  direction for the second), y from the fixed global axis least aligned with x;
* one-residue segment: the identity rotation;
* degenerate input (coincident or collinear atoms): a zero-length x direction becomes global +x, a y
  direction that is (nearly) parallel to x is replaced by the global axis least aligned with x.
"""

from __future__ import annotations

import numpy as np
import torch

from ldb_hpc.geometry.vectors import bond_angle, dihedral, safe_norm

# |y component| below this fraction of |y hint| counts as collinear (sin θ < 1e-3, θ < 0.06°).
_COLLINEAR = 1e-3


def _least_aligned_axis(x: torch.Tensor) -> torch.Tensor:
    """[..., 3] → the global unit axis (e_x, e_y or e_z) with the smallest |component| of x, [..., 3]."""
    k = x.abs().argmin(dim=-1)
    return (k[..., None] == torch.arange(3, device=x.device)).to(x.dtype)  # one-hot without one_hot's range check


def basis_from_two_vectors(x_vec: torch.Tensor, y_hint: torch.Tensor) -> torch.Tensor:
    """Right-handed orthonormal basis from a primary direction and a hint for the second axis.

    x_vec, y_hint: [..., 3] (any units). Returns R [..., 3, 3] with columns
    ex = unit(x_vec), ey = unit(y_hint − (y_hint·ex) ex), ez = ex × ey. Degenerate input falls back as
    described in the module docstring; the result is always orthonormal and finite, and so are gradients.
    """
    x_vec, y_hint = torch.broadcast_tensors(x_vec, y_hint)
    xn = safe_norm(x_vec, keepdim=True)
    ex_fallback = torch.zeros_like(x_vec)
    ex_fallback[..., 0] = 1.0
    ex = torch.where(xn > 1e-6, x_vec / xn, ex_fallback)

    y = y_hint - (y_hint * ex).sum(-1, keepdim=True) * ex
    yn = safe_norm(y, keepdim=True)
    hint_n = safe_norm(y_hint, keepdim=True)
    axis = _least_aligned_axis(ex.detach())
    y_fb = axis - (axis * ex).sum(-1, keepdim=True) * ex  # |y_fb| >= sqrt(2/3)
    bad = (yn <= _COLLINEAR * hint_n) | (hint_n < 1e-6)
    y = torch.where(bad, y_fb, y)
    ey = y / safe_norm(y, keepdim=True)
    ez = torch.linalg.cross(ex, ey, dim=-1)
    return torch.stack([ex, ey, ez], dim=-1)


def frames_from_backbone(n: torch.Tensor, ca: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Residue frames from backbone atoms.

    n, ca, c: [..., 3] positions in Å. Returns (R [..., 3, 3] axes as columns, t [..., 3] = CA in Å).
    """
    return basis_from_two_vectors(c - ca, n - ca), ca


def apply_frames(R: torch.Tensor, t: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """Local → global coordinates: R [..., 3, 3], t [..., 3], local [..., k, 3] (Å) → [..., k, 3] (Å)."""
    return torch.einsum("...ij,...kj->...ki", R, local) + t.unsqueeze(-2)


def invert_apply(R: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Global → local coordinates: R [..., 3, 3], t [..., 3], x [..., k, 3] (Å) → Rᵀ (x − t) [..., k, 3] (Å)."""
    return torch.einsum("...ji,...kj->...ki", R, x - t.unsqueeze(-2))


def _segment_tensor(segment, length: int, device) -> torch.Tensor:
    seg = torch.as_tensor(np.asarray(segment) if not torch.is_tensor(segment) else segment, device=device)
    if seg.shape != (length,):
        raise ValueError(f"segment has shape {tuple(seg.shape)}, expected ({length},)")
    return seg.long()


def neighbour_masks(segment, length: int | None = None, device=None) -> dict[str, torch.Tensor]:
    """Which sequence neighbours of each residue exist within its segment.

    segment: [L] int segment ids. Returns bool [L] tensors 'prev', 'next', 'prev2', 'next2': residue i−1, i+1,
    i−2, i+2 exists and belongs to the same segment as i (segments are contiguous runs).
    """
    seg = _segment_tensor(segment, len(segment) if length is None else length, device)
    if seg.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.bool, device=seg.device)
        return {"prev": empty, "next": empty, "prev2": empty, "next2": empty}
    same = seg[1:] == seg[:-1]  # [L-1]: i and i+1 joined
    f = torch.zeros(1, dtype=torch.bool, device=seg.device)
    prev = torch.cat([f, same])
    nxt = torch.cat([same, f])
    prev2 = prev & torch.cat([f, prev[:-1]])
    next2 = nxt & torch.cat([nxt[1:], f])
    return {"prev": prev, "next": nxt, "prev2": prev2, "next2": next2}


def _shift(x: torch.Tensor, k: int) -> torch.Tensor:
    """x[..., i + k, :] along the residue axis (dim −2), clamped at the ends (masked by the caller)."""
    L = x.shape[-2]
    idx = torch.clamp(torch.arange(L, device=x.device) + k, 0, max(L - 1, 0))
    return x.index_select(-2, idx)


def ca_trace_frames(ca: torch.Tensor, segment) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames from a C-alpha trace alone (see the module docstring for the construction and fallbacks).

    ca: [..., L, 3] positions in Å; segment: [L] int segment ids (numpy or torch; chain breaks split
    segments). Returns (R [..., L, 3, 3], t [..., L, 3] = CA). Always orthonormal and finite.
    """
    L = ca.shape[-2]
    m = neighbour_masks(segment, L, ca.device)
    col = {k: v.unsqueeze(-1) for k, v in m.items()}  # [L, 1] broadcast over xyz and batch dims
    p1, n1, p2, n2 = _shift(ca, -1), _shift(ca, 1), _shift(ca, -2), _shift(ca, 2)
    zero = torch.zeros_like(ca)
    # Direction to the (possibly virtual) next residue.
    x_vec = torch.where(col["next"], n1 - ca,
                        torch.where(col["prev2"], p1 - p2, torch.where(col["prev"], ca - p1, zero)))
    # Direction to the (possibly virtual) previous residue.
    y_hint = torch.where(col["prev"], p1 - ca, torch.where(col["next2"], n1 - n2, zero))
    return basis_from_two_vectors(x_vec, y_hint), ca


def virtual_angles(ca: torch.Tensor, segment) -> tuple[torch.Tensor, torch.Tensor]:
    """C-alpha virtual bond angle and dihedral per residue.

    ca: [..., L, 3] Å; segment: [L] int. Returns (angles [..., L, 2] radians, mask [L, 2] bool):
    channel 0 = angle CA(i−1)–CA(i)–CA(i+1) in [0, π], valid when both neighbours are in i's segment;
    channel 1 = dihedral CA(i−1)–CA(i)–CA(i+1)–CA(i+2) in (−π, π], valid when all four are in i's segment.
    Invalid entries are 0. Finite for any input, including coincident and collinear atoms.
    """
    L = ca.shape[-2]
    m = neighbour_masks(segment, L, ca.device)
    p1, n1, n2 = _shift(ca, -1), _shift(ca, 1), _shift(ca, 2)
    ang_ok = m["prev"] & m["next"]
    dih_ok = ang_ok & m["next2"]
    ang = torch.where(ang_ok, bond_angle(p1, ca, n1), torch.zeros((), dtype=ca.dtype, device=ca.device))
    dih = torch.where(dih_ok, dihedral(p1, ca, n1, n2), torch.zeros((), dtype=ca.dtype, device=ca.device))
    return torch.stack([ang, dih], dim=-1), torch.stack([ang_ok, dih_ok], dim=-1)
