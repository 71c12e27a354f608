"""The pure-torch reference of every fused op: the contract the C++ (kernels/cpu) and Triton (kernels/_triton)
implementations must reproduce (indices exactly, coordinates to float32 rounding, noise to the last bits of
float32).

All tensors are contiguous, on one device; float32 unless stated; Å and radians.

- ``vq_nearest(z [N, d], codebook [K, d]) → (index [N] int64, quantized [N, d])``: the nearest code by the
  squared distance Σ_c (z_c − e_c)² accumulated in float32 in channel order; ties go to the lowest index.
- ``gaussian_noise(seed, frame_ids [B] int64, samples, step, n_res, dim) → [B, S, L, D]``: the counter-based
  normals of :mod:`ldb_hpc.ops.noise` keyed by (seed, frame, sample, step, residue, channel).
- ``diffusion_step(x_t, eps [B, S, L, D], coef, seed, step, frame_ids [B]) → x_{t_prev}``: one DDIM/DDPM update
  (the DDIM update of :mod:`ldb_hpc.model.diffusion`) with its noise drawn inside: ``coef`` = (sqrt(ᾱ_t), sqrt(1 − ᾱ_t),
  sqrt(ᾱ_prev), dir, sigma·temperature) as Python floats (:func:`step_coefficients`, float64 on the host); the
  noise is ``gaussian_noise(seed, frame_ids, S, step, L, D)`` and is only drawn when the last coefficient ≠ 0.
- ``build_atoms(n, ca, c [M, 3], o_torsion [M], chi [M, 4], restype [M] int64) → [M, 14, 3]``: every heavy atom
  of a residue from its placed N, CA, C, the N–CA–C–O torsion and χ1..χ4 with ideal geometry
  (:func:`ldb_hpc.geometry.atoms.atoms_from_backbone` for one residue per row; N, CA, C are copied exactly; proline
  rings are closed by the same grid search; absent slots are zero).
- ``clash_flags(pos [R, 14, 3], rows [M] int64, nbr [R, k] int64, adjacent [R, k] bool, restype [R] int64,
  trigger) → [M] bool``: whether residue row ``rows[m]`` has a counted pair (see :func:`pair_counts`) with one of
  its neighbour rows ``nbr[rows[m]]`` closer than ``trigger`` Å.
- ``clash_score(cand [C, M, 14, 3], pos [R, 14, 3], rows [M], nbr, adjacent, restype, contact) → [C, M]``:
  Σ relu(contact − d)² over the counted pairs between candidate side chain ``cand[c, m]`` (standing in for row
  ``rows[m]``) and the current atoms of that row's neighbours.
- ``message_mean(node_j [B, L, D], node_i [B, L, D], edge [B, L, k, D], nbr [B, L, k] int64) → [B, L, D]``: the
  per-edge part of a message-passing layer (:class:`ldb_hpc.model.networks.MPLayer`),
  mean_j silu(node_j[b, nbr[b, i, j]] + node_i[b, i] + edge[b, i, j]) with silu(x) = x / (1 + exp(−x)), summed
  over j in order and divided by k; neighbour indices are within the frame (0 ≤ nbr < L).
- ``knn(points [B, L, 3], k) → [B, L, k] int64``: for every point the k ≤ L − 1 nearest other points of its frame,
  nearest first (ties: lower index first in the kernels; torch.topk's order here).
- ``message_mean_proj(node_j, node_i, edge [B, L, k, E], weight [D, E], nbr) → [B, L, D]``: ``message_mean``
  with the per-edge term the projection ``linear(edge, weight)`` (a message-passing layer's edge weights applied to
  its edge features), which the kernels may compute per edge without writing the [B, L, k, D] projection.
"""

from __future__ import annotations

import torch

from ldb_hpc.chem import residues as rc
from ldb_hpc.geometry.atoms import atoms_from_backbone
from ldb_hpc.geometry.vectors import nearest
from ldb_hpc.ops.noise import latent_noise

_PRO = rc.RESTYPE_INDEX["PRO"]
_CYS = rc.RESTYPE_INDEX["CYS"]


def vq_nearest(z: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z [N, d], codebook [K, d] float32 → (index [N] int64, quantized [N, d] = codebook[index])."""
    if z.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=z.device), z.new_zeros((0, codebook.shape[1]))
    d2 = torch.zeros(z.shape[0], codebook.shape[0], dtype=torch.float32, device=z.device)
    for c in range(z.shape[1]):  # channel order, float32: the kernels accumulate the same way
        d2 += (z[:, c, None] - codebook[None, :, c]) ** 2
    index = d2.argmin(-1)  # first minimum
    return index, codebook[index]


def gaussian_noise(seed: int, frame_ids: torch.Tensor, samples: int, step: int, n_res: int, dim: int) -> torch.Tensor:
    """Standard normals [B, S, L, D] float32 keyed by (seed, frame_ids[b], s, step, l, c)."""
    return latent_noise(seed, frame_ids, samples, step, n_res, dim, torch.float32).to(frame_ids.device)


def step_coefficients(alphas_cumprod, t: int, t_prev: int, eta: float, temperature: float) -> tuple:
    """Host-side float64 coefficients of one DDIM update (t_prev = −1: the last step) →
    (sqrt_ab, sqrt_1mab, sqrt_ab_prev, dir_coef, noise_coef)."""
    ab = float(alphas_cumprod[t])
    ab_prev = float(alphas_cumprod[t_prev]) if t_prev >= 0 else 1.0
    sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)) ** 0.5 if t_prev >= 0 else 0.0
    dir_coef = max(1 - ab_prev - sigma ** 2, 0.0) ** 0.5
    return ab ** 0.5, (1 - ab) ** 0.5, ab_prev ** 0.5, dir_coef, sigma * temperature


def diffusion_step(x_t: torch.Tensor, eps: torch.Tensor, coef: tuple, seed: int, step: int,
                   frame_ids: torch.Tensor) -> torch.Tensor:
    """x_t, eps [B, S, L, D] float32 → x_prev [B, S, L, D]:
    x0 = (x_t − sqrt_1mab·eps) / sqrt_ab; out = sqrt_ab_prev·x0 + dir·eps (+ noise_coef·noise)."""
    sqrt_ab, sqrt_1mab, sqrt_ab_prev, dir_coef, noise_coef = coef
    x0 = (x_t - sqrt_1mab * eps) / sqrt_ab
    out = sqrt_ab_prev * x0 + dir_coef * eps
    if noise_coef != 0.0:
        B, S, L, D = x_t.shape
        out = out + noise_coef * gaussian_noise(seed, frame_ids, S, step, L, D)
    return out


def build_atoms(n: torch.Tensor, ca: torch.Tensor, c: torch.Tensor, o_torsion: torch.Tensor, chi: torch.Tensor,
                restype: torch.Tensor) -> torch.Tensor:
    """n, ca, c [M, 3] Å; o_torsion [M] rad; chi [M, 4] rad; restype [M] int64 → atom14 [M, 14, 3] Å."""
    return atoms_from_backbone(n, ca, c, o_torsion, chi, restype)


def pair_counts(restype_i: torch.Tensor, restype_j: torch.Tensor, adjacent: torch.Tensor) -> torch.Tensor:
    """Which atom pairs count for clashes: [M, k, 14, 14] bool for residues i (restype_i [M]) against their
    neighbours j (restype_j [M, k]; adjacent [M, k] bool = sequence neighbours in one segment).

    A pair counts when atom a of i is a present side-chain atom (slot ≥ 5) and atom b of j is present, except
    (1) proline CD of an adjacent j (bonded to its own N, so 1–3 / 1–4 to the previous residue) and (2) Cys SG
    against Cys SG (disulfides)."""
    dev = restype_i.device
    exists = torch.as_tensor(rc.SLOT_MASK, device=dev)
    slot = torch.arange(rc.NUM_SLOTS, device=dev)
    ex_i = exists[restype_i] & (slot >= 5)  # [M, 14]
    ex_j = exists[restype_j]  # [M, k, 14]
    ok = ex_i[:, None, :, None] & ex_j[:, :, None, :]
    pro_cd_j = (restype_j == _PRO)[..., None] & (slot == 6)
    ok &= ~(adjacent[..., None, None] & pro_cd_j[:, :, None, :])
    sg_i = (restype_i == _CYS)[:, None] & (slot == 5)
    sg_j = (restype_j == _CYS)[..., None] & (slot == 5)
    ok &= ~(sg_i[:, None, :, None] & sg_j[:, :, None, :])
    return ok


def clash_flags(pos: torch.Tensor, rows: torch.Tensor, nbr: torch.Tensor, adjacent: torch.Tensor,
                restype: torch.Tensor, trigger: float) -> torch.Tensor:
    """pos [R, 14, 3]; rows [M]; nbr [R, k] neighbour rows; adjacent [R, k]; restype [R] → [M] bool."""
    out = torch.zeros(len(rows), dtype=torch.bool, device=pos.device)
    for s0 in range(0, len(rows), 1024):  # bounded memory
        r = rows[s0:s0 + 1024]
        ok = pair_counts(restype[r], restype[nbr[r]], adjacent[r])
        d = (pos[r][:, None, :, None, :] - pos[nbr[r]][:, :, None, :, :]).norm(dim=-1)  # [m, k, 14, 14]
        out[s0:s0 + 1024] = ((d < trigger) & ok).flatten(1).any(-1)
    return out


def clash_score(cand: torch.Tensor, pos: torch.Tensor, rows: torch.Tensor, nbr: torch.Tensor, adjacent: torch.Tensor,
                restype: torch.Tensor, contact: float) -> torch.Tensor:
    """cand [C, M, 14, 3] candidate atoms of rows [M]; pos [R, 14, 3] current atoms → [C, M] float32."""
    ok = pair_counts(restype[rows], restype[nbr[rows]], adjacent[rows])  # [M, k, 14, 14]
    nb = pos[nbr[rows]]  # [M, k, 14, 3]
    d = (cand[:, :, None, :, None, :] - nb[None, :, :, None, :, :]).norm(dim=-1)  # [C, M, k, 14, 14]
    return (torch.relu(contact - d) ** 2 * ok).sum((-3, -2, -1))


def message_mean(node_j: torch.Tensor, node_i: torch.Tensor, edge: torch.Tensor, nbr: torch.Tensor) -> torch.Tensor:
    """node_j, node_i [B, L, D]; edge [B, L, k, D]; nbr [B, L, k] → [B, L, D] float32."""
    B, L, D = node_j.shape
    k = nbr.shape[-1]
    flat = (nbr + torch.arange(B, device=nbr.device).view(B, 1, 1) * L).reshape(-1)
    pre = node_j.reshape(B * L, D).index_select(0, flat).reshape(B, L, k, D) + node_i.unsqueeze(2)
    return torch.nn.functional.silu(pre + edge).mean(2)


def message_mean_proj(node_j: torch.Tensor, node_i: torch.Tensor, edge: torch.Tensor, weight: torch.Tensor,
                      nbr: torch.Tensor) -> torch.Tensor:
    """node_j, node_i [B, L, D]; edge [B, L, k, E]; weight [D, E]; nbr [B, L, k] → [B, L, D] float32."""
    return message_mean(node_j, node_i, torch.nn.functional.linear(edge, weight), nbr)



def knn(points: torch.Tensor, k: int) -> torch.Tensor:
    """points [B, L, 3]; 0 ≤ k ≤ L − 1 → [B, L, k] int64 (cdist, then topk: ldb_hpc.geometry.vectors.nearest)."""
    return nearest(points, k)
