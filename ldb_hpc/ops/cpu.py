"""Launchers of the C++/OpenMP CPU kernels (the extension module ``ldb_hpc._cpu``, sources in kernels/cpu).

Each launcher has the signature of its reference op (:mod:`ldb_hpc.ops.reference`) plus an optional ``out=``
(preallocated output; tests pass outputs poisoned with NaN to catch unwritten elements). It makes inputs
contiguous with the kernel's dtypes, allocates outputs, passes the geometry tables as arrays and the thread
count of torch (``torch.get_num_threads()``), and returns torch tensors. CPU tensors only; float32 coordinates.
"""

from __future__ import annotations

import functools
import importlib

import numpy as np
import torch

from ldb_hpc.chem import residues as rc

_PRO = rc.RESTYPE_INDEX["PRO"]
_CYS = rc.RESTYPE_INDEX["CYS"]


@functools.lru_cache(maxsize=1)
def module():
    """The compiled extension (kernels/cpu, built by CMake into the package); raises ImportError when it was not
    built."""
    return importlib.import_module("ldb_hpc._cpu")


def _threads() -> int:
    return max(1, torch.get_num_threads())


# The conversions return the tensor itself when it already is what the kernel takes: on the small ops of the
# hot path (a DDIM update is ~70k floats) the launcher's overhead is as large as the arithmetic.
def _f32(x: torch.Tensor) -> torch.Tensor:
    if x.dtype is torch.float32 and not x.requires_grad and x.is_contiguous():
        return x
    return x.detach().to(torch.float32).contiguous()


def _i64(x: torch.Tensor) -> torch.Tensor:
    if isinstance(x, torch.Tensor) and x.dtype is torch.int64 and x.is_contiguous():
        return x
    return torch.as_tensor(x).detach().to(torch.int64).contiguous()


def _u8(x: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(x).detach().to(torch.bool).contiguous().view(torch.uint8)


def _check_out(out: torch.Tensor | None, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    if out is None:
        return torch.empty(shape, dtype=dtype)
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype or not out.is_contiguous() or out.device.type != "cpu":
        raise ValueError(f"out must be a contiguous CPU {dtype} tensor of shape {tuple(shape)}, "
                         f"got {out.dtype} {tuple(out.shape)}")
    return out


@functools.lru_cache(maxsize=1)
def build_tables() -> dict:
    """The builder's tables as CPU tensors: ideal geometry (float32, as the reference casts it), the Z-matrix and
    slot masks, and the proline ring-closure grid of :func:`ldb_hpc.geometry.atoms.close_proline_rings`."""
    from ldb_hpc.chem.ideal_geometry import ideal_geometry
    from ldb_hpc.geometry import atoms as ideal

    geo = ideal_geometry()
    f32 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32).contiguous()  # noqa: E731
    return dict(
        bond=f32(geo.bond), angle=f32(geo.angle), offset=f32(geo.offset),
        zm_refs=torch.as_tensor(rc.ZM_REFS, dtype=torch.int64).contiguous(),
        zm_torsion=torch.as_tensor(rc.ZM_TORSION, dtype=torch.int64).contiguous(),
        zm_mask=_u8(torch.as_tensor(rc.ZM_MASK)), slot_mask=_u8(torch.as_tensor(rc.SLOT_MASK)),
        pro=_PRO,
        pro_chi1_delta=torch.deg2rad(torch.arange(*ideal.PRO_CHI1_DELTA_DEG, dtype=torch.float32)).contiguous(),
        pro_chi2_grid=torch.deg2rad(torch.arange(*ideal.PRO_CHI2_DEG, dtype=torch.float32)).contiguous(),
        pro_cd_n_length=float(np.float32(geo.bond_length[_PRO, ideal.PRO_CD_N_BOND])),
        pro_tie_weight=float(np.float32(ideal.PRO_TIE_WEIGHT)),
    )


@functools.lru_cache(maxsize=1)
def _slot_mask() -> torch.Tensor:
    return _u8(torch.as_tensor(rc.SLOT_MASK))


def vq_nearest(z: torch.Tensor, codebook: torch.Tensor, out: tuple | None = None):
    """z [N, d], codebook [K, d] float32 → (index [N] int64, quantized [N, d] float32)."""
    N, d = z.shape
    index = _check_out(out[0] if out else None, (N,), torch.int64)
    quant = _check_out(out[1] if out else None, (N, d), torch.float32)
    module().vq_nearest(_f32(z), _f32(codebook), index, quant, _threads())
    return index, quant


def gaussian_noise(seed: int, frame_ids: torch.Tensor, samples: int, step: int, n_res: int, dim: int,
                   out: torch.Tensor | None = None) -> torch.Tensor:
    """Standard normals [B, S, L, D] float32 keyed by (seed, frame_ids[b], s, step, l, c)."""
    f = _i64(frame_ids)
    res = _check_out(out, (f.shape[0], samples, n_res, dim), torch.float32)
    module().gaussian_noise(int(seed), f, int(samples), int(step), int(n_res), int(dim), res, _threads())
    return res


def diffusion_step(x_t: torch.Tensor, eps: torch.Tensor, coef: tuple, seed: int, step: int,
                   frame_ids: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """x_t, eps [B, S, L, D] float32; coef: 5 floats of :func:`ldb_hpc.ops.reference.step_coefficients` →
    x_prev [B, S, L, D] float32."""
    res = torch.empty_like(x_t, dtype=torch.float32, memory_format=torch.contiguous_format) if out is None \
        else _check_out(out, tuple(x_t.shape), torch.float32)
    c0, c1, c2, c3, c4 = coef
    module().diffusion_step(_f32(x_t), _f32(eps), float(c0), float(c1), float(c2), float(c3), float(c4), int(seed),
                            int(step), _i64(frame_ids), res, _threads())
    return res


def build_atoms(n: torch.Tensor, ca: torch.Tensor, c: torch.Tensor, o_torsion: torch.Tensor, chi: torch.Tensor,
                restype: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """n, ca, c [M, 3] Å; o_torsion [M] rad; chi [M, 4] rad; restype [M] int64 → atom14 [M, 14, 3] Å."""
    res = _check_out(out, (restype.shape[0], rc.NUM_SLOTS, 3), torch.float32)
    t = build_tables()
    module().build_atoms(_f32(n), _f32(ca), _f32(c), _f32(o_torsion), _f32(chi), _i64(restype), t["bond"],
                         t["angle"], t["offset"], t["zm_refs"], t["zm_torsion"], t["zm_mask"], t["slot_mask"],
                         t["pro"], t["pro_chi1_delta"], t["pro_chi2_grid"], t["pro_cd_n_length"],
                         t["pro_tie_weight"], res, _threads())
    return res


def clash_flags(pos: torch.Tensor, rows: torch.Tensor, nbr: torch.Tensor, adjacent: torch.Tensor,
                restype: torch.Tensor, trigger: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """pos [R, 14, 3] Å; rows [M]; nbr [R, k]; adjacent [R, k] bool; restype [R] → [M] bool."""
    res = _check_out(out, (rows.shape[0],), torch.bool)
    module().clash_flags(_f32(pos), _i64(rows), _i64(nbr), _u8(adjacent), _i64(restype), float(trigger),
                         _slot_mask(), _PRO, _CYS, res.view(torch.uint8), _threads())
    return res


def clash_score(cand: torch.Tensor, pos: torch.Tensor, rows: torch.Tensor, nbr: torch.Tensor,
                adjacent: torch.Tensor, restype: torch.Tensor, contact: float,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """cand [C, M, 14, 3] Å candidates for rows [M]; pos [R, 14, 3] Å → [C, M] float32."""
    res = _check_out(out, (cand.shape[0], rows.shape[0]), torch.float32)
    module().clash_score(_f32(cand), _f32(pos), _i64(rows), _i64(nbr), _u8(adjacent), _i64(restype),
                         float(contact), _slot_mask(), _PRO, _CYS, res, _threads())
    return res


def message_mean(node_j: torch.Tensor, node_i: torch.Tensor, edge: torch.Tensor, nbr: torch.Tensor,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """node_j, node_i [B, L, D]; edge [B, L, k, D] float32; nbr [B, L, k] → [B, L, D] float32."""
    res = _check_out(out, tuple(node_j.shape), torch.float32)
    module().message_mean(_f32(node_j), _f32(node_i), _f32(edge), _i64(nbr), res, _threads())
    return res


def message_mean_proj(node_j: torch.Tensor, node_i: torch.Tensor, edge: torch.Tensor, weight: torch.Tensor,
                      nbr: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """node_j, node_i [B, L, D]; edge [B, L, k, E]; weight [D, E] float32; nbr [B, L, k] → [B, L, D] float32."""
    res = _check_out(out, tuple(node_j.shape), torch.float32)
    module().message_mean_proj(_f32(node_j), _f32(node_i), _f32(edge), _f32(weight.t()), _i64(nbr), res, _threads())
    return res


def knn(points: torch.Tensor, k: int) -> torch.Tensor:
    """points [B, L, 3] float32, 0 ≤ k ≤ L − 1 → [B, L, k] int64, nearest first."""
    B, L, _ = points.shape
    res = torch.empty((B, L, k), dtype=torch.int64)
    module().knn(_f32(points), res, _threads())
    return res
