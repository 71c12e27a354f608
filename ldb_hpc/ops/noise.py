"""Counter-based Gaussian noise: the numbers depend only on their key, never on batch, rank or order.

Key = (seed, frame, sample, step, residue, channel). Each component is folded into a 32-bit state with an
integer hash (the "lowbias32" mixer: xor-shift / multiply rounds), two independent 32-bit words become two
uniforms in (0, 1), and Box–Muller turns them into one standard normal. The same arithmetic is easy to
reproduce bit for bit in C++ and Triton (uint32 multiply, shifts, xor), which the fused kernels do.
"""

from __future__ import annotations

import math

import torch

_M32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 integer hash on int64 tensors holding uint32 values; returns uint32 values in int64."""
    x = x & _M32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    x = x ^ (x >> 16)
    return x


def hash_key(*parts) -> torch.Tensor:
    """Fold integer tensors (broadcast) into one uint32 hash per element (int64 tensor)."""
    h = torch.zeros((), dtype=torch.int64)
    for i, p in enumerate(parts):
        p = torch.as_tensor(p, dtype=torch.int64)
        h = _mix32(h ^ _mix32((p & _M32) + (0x9E3779B9 * (i + 1) & _M32)))
    return h


def gaussian(seed: int, frame: torch.Tensor, sample: torch.Tensor, step: int, residue: torch.Tensor,
             channel: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Standard normal numbers keyed by (seed, frame, sample, step, residue, channel), broadcast together."""
    base = hash_key(seed, frame, sample, step, residue, channel)
    u1 = (_mix32(base ^ 0x68E31DA4).to(torch.float64) + 0.5) / 4294967296.0
    u2 = (_mix32(base ^ 0xB5297A4D).to(torch.float64) + 0.5) / 4294967296.0
    z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
    return z.to(dtype)


def latent_noise(seed: int, frames: torch.Tensor, samples: int, step: int, n_res: int, dim: int,
                 dtype=torch.float32) -> torch.Tensor:
    """Noise for a batch: frames [B] int64 (global indices) → [B, S, L, dim]."""
    f = frames.to(torch.int64)[:, None, None, None]
    s = torch.arange(samples, dtype=torch.int64, device=f.device)[None, :, None, None]
    r = torch.arange(n_res, dtype=torch.int64, device=f.device)[None, None, :, None]
    c = torch.arange(dim, dtype=torch.int64, device=f.device)[None, None, None, :]
    return gaussian(seed, f, s, step, r, c, dtype)
