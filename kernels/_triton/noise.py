"""gaussian_noise and diffusion_step in Triton: the counter-based noise of ``ldb_hpc.ops.noise``, bit for bit,
and the DDIM update that draws it inside the kernel (contract: ``ldb_hpc.ops.reference``).

One program per block of ``NOISE_BLOCK`` elements of the flat [B, S, L, D] tensor. The hash is uint32
arithmetic (wrapping multiply, logical shifts); Box–Muller runs in float64 with 2π read from a float64 tensor.
Numerics: :mod:`ldb_hpc._triton.common`.
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from ldb_hpc._triton import common  # common.alloc: looked up per call (tests replace it)
from ldb_hpc._triton.common import LAUNCH, check_device, f32, i64
from ldb_hpc._triton.common import cos as _cos
from ldb_hpc._triton.common import log as _log

NOISE_BLOCK = 1024  # elements per program

_M32 = 0xFFFFFFFF
# Per-part additive constants of ldb_hpc.ops.noise.hash_key (part i adds 0x9E3779B9·(i+1) mod 2^32).
_H0 = tl.constexpr((0x9E3779B9 * 1) & _M32)
_H1 = tl.constexpr((0x9E3779B9 * 2) & _M32)
_H2 = tl.constexpr((0x9E3779B9 * 3) & _M32)
_H3 = tl.constexpr((0x9E3779B9 * 4) & _M32)
_H4 = tl.constexpr((0x9E3779B9 * 5) & _M32)
_H5 = tl.constexpr((0x9E3779B9 * 6) & _M32)


@triton.jit
def _mix32(x):
    """lowbias32 on uint32: xor-shifts are logical, products wrap mod 2^32."""
    x = x ^ (x >> 16)
    x = x * 0x7FEB352D
    x = x ^ (x >> 15)
    x = x * 0x846CA68B
    x = x ^ (x >> 16)
    return x


@triton.jit
def _normal(seed, frame, sample, step, residue, channel, two_pi):
    """One standard normal per element from uint32 key parts; Box–Muller in float64, rounded to float32."""
    h = _mix32(_mix32(seed + _H0))  # h = 0 before the first part, and 0 ^ y = y
    h = _mix32(h ^ _mix32(frame + _H1))
    h = _mix32(h ^ _mix32(sample + _H2))
    h = _mix32(h ^ _mix32(step + _H3))
    h = _mix32(h ^ _mix32(residue + _H4))
    h = _mix32(h ^ _mix32(channel + _H5))
    u1 = (_mix32(h ^ 0x68E31DA4).to(tl.float64) + 0.5) / 4294967296.0
    u2 = (_mix32(h ^ 0xB5297A4D).to(tl.float64) + 0.5) / 4294967296.0
    z = tl.sqrt(-2.0 * _log(u1)) * _cos(two_pi * u2)
    return z.to(tl.float32)


@triton.jit
def _noise_at(offs, mask, frames_ptr, const_ptr, seed, step, S, L, D):
    """Noise of the flat [B, S, L, D] positions ``offs`` (int64)."""
    c = offs % D
    t = offs // D
    r = t % L
    t = t // L
    s = t % S
    b = t // S
    f = tl.load(frames_ptr + b, mask=mask, other=0)
    two_pi = tl.load(const_ptr)
    # tl.cast, not .to: an int argument equal to 1 arrives as a constexpr
    return _normal(tl.cast(seed, tl.uint32), f.to(tl.uint32), s.to(tl.uint32), tl.cast(step, tl.uint32),
                   r.to(tl.uint32), c.to(tl.uint32), two_pi)


@functools.lru_cache(maxsize=8)
def _two_pi(device: torch.device) -> torch.Tensor:
    return torch.tensor([2.0 * math.pi], dtype=torch.float64, device=device)  # the reference's 2.0 * math.pi


@triton.jit
def noise_kernel(frames_ptr, const_ptr, out_ptr, seed, step, total, S, L, D, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    z = _noise_at(offs, mask, frames_ptr, const_ptr, seed, step, S, L, D)
    tl.store(out_ptr + offs, z, mask=mask)


def gaussian_noise(seed: int, frame_ids: torch.Tensor, samples: int, step: int, n_res: int, dim: int) -> torch.Tensor:
    """Standard normals [B, S, L, D] float32 keyed by (seed, frame_ids[b], s, step, l, c), bit-identical to
    :func:`ldb_hpc.ops.noise.latent_noise`. frame_ids [B] int64 (global frame indices)."""
    dev = check_device(frame_ids)
    frames = i64(frame_ids)
    shape = (frames.shape[0], int(samples), int(n_res), int(dim))
    out = common.alloc(shape, torch.float32, dev)
    total = out.numel()
    if total == 0:
        return out
    noise_kernel[(triton.cdiv(total, NOISE_BLOCK),)](frames, _two_pi(dev), out, int(seed) & _M32,
                                                    int(step) & _M32, total, shape[1], shape[2], shape[3],
                                                    BLOCK=NOISE_BLOCK, **LAUNCH)
    return out


@triton.jit
def diffusion_kernel(x_ptr, eps_ptr, out_ptr, frames_ptr, const_ptr, c_ab, c_1mab, c_abp, c_dir, c_noise,
                     seed, step, total, S, L, D, HAS_NOISE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    e = tl.load(eps_ptr + offs, mask=mask, other=0.0)
    # the reference's op order, one rounding per op: x0 = (x − c·ε)/a; out = b·x0 + d·ε (+ σ·z)
    x0 = tl.div_rn(x - c_1mab * e, c_ab)
    out = c_abp * x0 + c_dir * e
    if HAS_NOISE:
        z = _noise_at(offs, mask, frames_ptr, const_ptr, seed, step, S, L, D)
        out = out + c_noise * z
    tl.store(out_ptr + offs, out, mask=mask)


def diffusion_step(x_t: torch.Tensor, eps: torch.Tensor, coef: tuple, seed: int, step: int,
                   frame_ids: torch.Tensor) -> torch.Tensor:
    """x_t, eps [B, S, L, D] float32 → x_prev [B, S, L, D] (one DDIM update, noise drawn in the kernel).

    coef = (sqrt_ab, sqrt_1mab, sqrt_ab_prev, dir, noise_coef) host floats (reference.step_coefficients);
    frame_ids [B] int64. Noise only when noise_coef ≠ 0."""
    dev = check_device(x_t, eps, frame_ids)
    x_t, eps, frames = f32(x_t), f32(eps), i64(frame_ids)
    if eps.shape != x_t.shape or x_t.dim() != 4 or frames.shape != (x_t.shape[0],):
        raise ValueError(f"diffusion_step: x_t {tuple(x_t.shape)}, eps {tuple(eps.shape)}, "
                         f"frame_ids {tuple(frames.shape)} do not match")
    sqrt_ab, sqrt_1mab, sqrt_ab_prev, dir_coef, noise_coef = (float(v) for v in coef)
    out = common.alloc(x_t.shape, torch.float32, dev)
    total = out.numel()
    if total == 0:
        return out
    B, S, L, D = x_t.shape
    diffusion_kernel[(triton.cdiv(total, NOISE_BLOCK),)](
        x_t, eps, out, frames, _two_pi(dev), sqrt_ab, sqrt_1mab, sqrt_ab_prev, dir_coef, noise_coef,
        int(seed) & _M32, int(step) & _M32, total, S, L, D, HAS_NOISE=noise_coef != 0.0, BLOCK=NOISE_BLOCK,
        **LAUNCH)
    return out
