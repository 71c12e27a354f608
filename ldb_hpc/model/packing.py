"""Clash repair after decoding: residues whose side chain clashes get the best of a few χ1/χ2 alternatives.

The decoder places each side chain from its own latent and the CA context; neighbouring side chains sampled
independently can still overlap. For every residue with an atom pair closer than ``trigger`` Å to another
residue, the 9 rotations of (χ1, χ2) by {0, ±120°} are rebuilt (ideal geometry) and scored against the current
atoms of its k nearest residues with Σ relu(3 Å − d)²; the lowest score wins (the decoded rotamer is kept unless
another is clearly better). Three rounds, vectorised over the flagged residues only, so clash-free frames cost one
scoring pass.
"""

from __future__ import annotations

import math

import torch

from ldb_hpc.chem import residues as rc
from ldb_hpc.model.features import gather_nodes, knn

_DELTAS = torch.tensor([(a, b) for a in (0.0, 120.0, -120.0) for b in (0.0, 120.0, -120.0)]) * math.pi / 180.0
_CONTACT = 3.0  # Å, soft-repulsion radius of the score
_KEEP_BONUS = 0.05  # the decoded rotamer wins ties


def _pair_ok(restype_i, restype_j, adjacent, dev):
    """[M, k, 14, 14] pairs that count: present atoms, side chain (slot ≥ 5) of i against anything of j; for
    sequence neighbours Pro CD is exempt (it is bonded to its own N); Cys SG–SG is exempt (disulfides)."""
    exists = torch.as_tensor(rc.SLOT_MASK, device=dev)
    ex_i = exists[restype_i]  # [M, 14]
    ex_j = exists[restype_j]  # [M, k, 14]
    deep_i = ex_i.clone()
    deep_i[:, :5] = False
    ok = deep_i[:, None, :, None] & ex_j[:, :, None, :]
    pro = rc.RESTYPE_INDEX["PRO"]
    pro_cd_j = (restype_j == pro)[..., None] & (torch.arange(rc.NUM_SLOTS, device=dev) == 6)
    ok &= ~(adjacent[..., None, None] & pro_cd_j[:, :, None, :])
    cys = rc.RESTYPE_INDEX["CYS"]
    sg_i = (restype_i == cys)[:, None] & (torch.arange(rc.NUM_SLOTS, device=dev) == 5)
    sg_j = (restype_j == cys)[..., None] & (torch.arange(rc.NUM_SLOTS, device=dev) == 5)
    ok &= ~(sg_i[:, None, :, None] & sg_j[:, :, None, :])
    return ok


def _score(sc: torch.Tensor, nb: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """sc [..., M, 14, 3] candidate atoms; nb [M, k, 14, 3] neighbour atoms; ok [M, k, 14, 14] → [..., M]."""
    d = (sc[..., :, None, :, None, :] - nb[:, :, None, :, :]).norm(dim=-1)  # [..., M, k, 14, 14]
    return (torch.relu(_CONTACT - d) ** 2 * ok).sum((-3, -2, -1))


def repack(pos: torch.Tensor, ca, n, c, o_torsion, chi, restype, segment, rounds: int = 3, k: int = 12,
           trigger: float = 2.2) -> torch.Tensor:
    """Repair side-chain clashes. pos [B, L, 14, 3] Å (built from ca, n, c [B, L, 3], o_torsion [B, L],
    chi [B, L, 4]); restype, segment [L]. Returns new positions (only side chains of clashing residues move)."""
    from ldb_hpc.model.ideal import atoms_from_backbone

    B, L = pos.shape[:2]
    if L < 2:
        return pos
    dev = pos.device
    nbr = knn(ca, k)  # [B, L, k]
    k = nbr.shape[-1]
    i_idx = torch.arange(L, device=dev)[None, :, None]
    adjacent = ((nbr - i_idx).abs() == 1) & (segment[nbr] == segment[i_idx])
    n_chi = torch.as_tensor(rc.CHI_MASK, device=dev)[restype].sum(-1)  # [L]
    movable = (n_chi > 0) & (restype != rc.RESTYPE_INDEX["PRO"])
    chi = chi.clone()
    pos = pos.clone()
    for _ in range(rounds):
        nb_all = gather_nodes(pos.reshape(B, L, -1), nbr).reshape(B, L, k, rc.NUM_SLOTS, 3)
        rt_j = restype[nbr]  # [B, L, k]
        ok_all = _pair_ok(restype.expand(B, L).reshape(-1), rt_j.reshape(-1, k), adjacent.reshape(-1, k), dev)
        flat_pos = pos.reshape(B * L, rc.NUM_SLOTS, 3)
        nb_flat = nb_all.reshape(B * L, k, rc.NUM_SLOTS, 3)
        # Which residues clash now (a pair closer than the trigger)? Chunked: bounded memory for big batches.
        clash = torch.zeros(B * L, dtype=torch.bool, device=dev)
        for s0 in range(0, B * L, 1024):
            sl = slice(s0, s0 + 1024)
            d = (flat_pos[sl, None, :, None, :] - nb_flat[sl, :, None, :, :]).norm(dim=-1)
            clash[sl] = ((d < trigger) & ok_all[sl]).flatten(1).any(-1)
        clash &= movable.repeat(B)
        sel = clash.nonzero().flatten()
        if sel.numel() == 0:
            break
        b_idx, l_idx = sel // L, sel % L
        rt = restype[l_idx]
        cand_chi = chi[b_idx, l_idx][None].repeat(len(_DELTAS), 1, 1)  # [K, M, 4]
        deltas = _DELTAS.to(dev, pos.dtype)
        has2 = (n_chi[l_idx] >= 2).to(pos.dtype)
        cand_chi[..., 0] += deltas[:, None, 0]
        cand_chi[..., 1] += deltas[:, None, 1] * has2
        atoms = atoms_from_backbone(ca[b_idx, l_idx].expand(len(deltas), -1, -1),
                                    n[b_idx, l_idx].expand(len(deltas), -1, -1),
                                    c[b_idx, l_idx].expand(len(deltas), -1, -1),
                                    o_torsion[b_idx, l_idx].expand(len(deltas), -1), cand_chi, rt)  # [K, M, 14, 3]
        ok = ok_all[sel]
        score = _score(atoms, nb_flat[sel], ok)  # [K, M]
        score[0] -= _KEEP_BONUS
        # Candidates that only rotate χ2 of one-χ residues duplicate candidate 0..2; harmless.
        best = score.argmin(0)  # [M]
        chosen = atoms[best, torch.arange(len(sel), device=dev)]
        upd = pos[b_idx, l_idx].clone()
        upd[:, 5:] = chosen[:, 5:]
        pos[b_idx, l_idx] = upd
        chi[b_idx, l_idx] = cand_chi[best, torch.arange(len(sel), device=dev)]
    return pos
