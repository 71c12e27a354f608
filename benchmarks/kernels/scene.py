"""The inputs of every fused op at backmap's sizes, shared by the CPU and the Triton kernel benchmarks."""

from __future__ import annotations

import math

import torch

D_LATENT, K_CODES, K_CLASH, N_CAND = 8, 4096, 28, 9  # latent dim, codebook size, clash neighbours, candidates
D_NET, K_GRAPH = 64, 16  # network width and neighbours of the CA graph (message passing)


def scene(B: int, L: int, flagged_share: float, dev: torch.device) -> dict:
    """Inputs of every op for B frames of an L-residue compact chain (a random walk of 3.8 Å steps, so that
    kNN neighbourhoods and clashes look like backmap's), as {op: (args, size label)}."""
    from ldb_hpc.chem import residues as rc
    from ldb_hpc.model.diffusion import linear_schedule
    from ldb_hpc.model.features import knn
    from ldb_hpc.ops import reference

    g = torch.Generator().manual_seed(0)
    step = torch.randn(B, L, 3, generator=g)
    ca = torch.cumsum(3.8 * step / step.norm(dim=-1, keepdim=True), 1)
    restype = torch.randint(0, rc.NUM_RESTYPES, (L,), generator=g)
    unit = lambda v: v / v.norm(dim=-1, keepdim=True)  # noqa: E731
    M = B * L
    n = ca.reshape(M, 3) + 1.46 * unit(torch.randn(M, 3, generator=g))
    c = ca.reshape(M, 3) + 1.52 * unit(torch.randn(M, 3, generator=g))
    o_t = (torch.rand(M, generator=g) * 2 - 1) * math.pi
    chi = (torch.rand(M, 4, generator=g) * 2 - 1) * math.pi
    rt_flat = restype.repeat(B)
    pos = reference.build_atoms(n, ca.reshape(M, 3), c, o_t, chi, rt_flat)
    nbr = knn(ca, min(K_CLASH, L - 1))
    k = nbr.shape[-1]
    adjacent = ((nbr - torch.arange(L)[None, :, None]).abs() == 1).reshape(M, k)
    nbr_flat = (nbr + (torch.arange(B) * L)[:, None, None]).reshape(M, k)
    rows = torch.arange(M)
    flagged = rows[torch.randperm(M, generator=g)[:max(1, int(flagged_share * M))]]  # repack scores these only
    cand = pos[flagged][None].repeat(N_CAND, 1, 1, 1) + 0.3 * torch.randn(N_CAND, len(flagged), 14, 3, generator=g)
    coef = reference.step_coefficients(linear_schedule().alphas_cumprod, 500, 375, 1.0, 1.0)
    coef0 = reference.step_coefficients(linear_schedule().alphas_cumprod, 500, 375, 0.0, 1.0)  # backmap's DDIM
    x, eps = torch.randn(B, 1, L, D_LATENT, generator=g), torch.randn(B, 1, L, D_LATENT, generator=g)
    z, codebook = torch.randn(M, D_LATENT, generator=g), torch.randn(K_CODES, D_LATENT, generator=g)
    to = lambda *ts: tuple(t.to(dev) if torch.is_tensor(t) else t for t in ts)  # noqa: E731
    frames = torch.arange(B)
    k_net = min(K_GRAPH, L - 1)
    node_j, node_i = torch.randn(B, L, D_NET, generator=g), torch.randn(B, L, D_NET, generator=g)
    edge = torch.randn(B, L, k_net, D_NET, generator=g)
    return {
        "vq_nearest": (to(z, codebook), f"N={M} K={K_CODES} d={D_LATENT}"),
        "gaussian_noise": (to(7, frames, 1, 3, L, D_LATENT), f"B={B} S=1 L={L} D={D_LATENT}"),
        "diffusion_step": (to(x, eps, coef, 7, 3, frames), f"B={B} S=1 L={L} D={D_LATENT} eta=1"),
        "diffusion_step@eta0": (to(x, eps, coef0, 7, 3, frames), f"B={B} S=1 L={L} D={D_LATENT} eta=0"),
        "build_atoms": (to(n, ca.reshape(M, 3), c, o_t, chi, rt_flat), f"M={M}"),
        "clash_flags": (to(pos, rows, nbr_flat, adjacent, rt_flat, 2.2), f"R={M} M={M} k={k}"),
        "clash_score": (to(cand, pos, flagged, nbr_flat, adjacent, rt_flat, 3.0),
                        f"C={N_CAND} M={len(flagged)} k={k}"),
        "message_mean": (to(node_j, node_i, edge, knn(ca, k_net)), f"B={B} L={L} k={k_net} D={D_NET}"),
    }
