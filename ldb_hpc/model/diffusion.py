"""The diffusion process on per-residue latents: a fixed float64 schedule, the ε-prediction loss, and the
DDPM / DDIM samplers. The process holds no weights; the denoiser is passed in as a callable.

Schedule (LDB's, never changed once released): T = 1000 training steps, betas linear 1e-4 … 0.02.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ldb_hpc.ops.noise import latent_noise


@dataclass(frozen=True)
class Schedule:
    betas: np.ndarray  # [T] float64
    alphas_cumprod: np.ndarray  # [T] float64

    @property
    def T(self) -> int:
        return len(self.betas)


def linear_schedule(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
    betas = np.linspace(beta_start, beta_end, T, dtype=np.float64)
    return Schedule(betas=betas, alphas_cumprod=np.cumprod(1.0 - betas))


def q_sample(schedule: Schedule, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(ᾱ_t) x0 + sqrt(1 − ᾱ_t) ε; x0, eps [B, S, L, D]; t [B] or [B, L] long (per residue)."""
    ab = torch.as_tensor(schedule.alphas_cumprod, dtype=x0.dtype, device=x0.device)[t]
    ab = ab.reshape(ab.shape[0], 1, -1, 1) if t.dim() == 2 else ab.reshape(-1, *([1] * (x0.dim() - 1)))
    return ab.sqrt() * x0 + (1 - ab).sqrt() * eps


def eps_loss(schedule: Schedule, denoiser, x0: torch.Tensor, cond, mask: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample ε-prediction MSE. x0 [B, 1, L, D] normalised latents; mask [B, 1, L] bool; returns [B].

    Every residue draws its own timestep (t [B, L]): a batch here is one large pseudo-protein, and one shared t
    per batch would make the loss very noisy."""
    B, _, L, _ = x0.shape
    t = torch.randint(0, schedule.T, (B, L), generator=generator, device=x0.device)
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    pred = denoiser(q_sample(schedule, x0, t, eps), t, cond)
    m = mask.to(x0.dtype)[..., None]
    return (((pred - eps) ** 2) * m).sum((1, 2)) / (m.sum((1, 2)) * x0.shape[-1]).clamp_min(1)


def sampling_timesteps(schedule: Schedule, steps: int) -> list[int]:
    """`steps` evenly spaced training timesteps, descending (T−1 … ≈0)."""
    steps = max(1, min(int(steps), schedule.T))
    ts = np.linspace(schedule.T - 1, 0, steps).round().astype(int)
    return sorted(set(ts.tolist()), reverse=True)


def ddim_step(schedule: Schedule, x_t: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int, eta: float,
              noise: torch.Tensor | None) -> torch.Tensor:
    """One DDIM update x_t → x_{t_prev} (t_prev = −1 means the end). eta = 0: deterministic; 1: DDPM-like."""
    ab = float(schedule.alphas_cumprod[t])
    ab_prev = float(schedule.alphas_cumprod[t_prev]) if t_prev >= 0 else 1.0
    x0 = (x_t - (1 - ab) ** 0.5 * eps) / ab ** 0.5
    sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)) ** 0.5 if t_prev >= 0 else 0.0
    dir_coef = max(1 - ab_prev - sigma ** 2, 0.0) ** 0.5
    out = ab_prev ** 0.5 * x0 + dir_coef * eps
    if sigma > 0 and noise is not None:
        out = out + sigma * noise
    return out


def sample(schedule: Schedule, denoiser, cond, shape: tuple, frames: torch.Tensor, seed: int, steps: int,
           temperature: float = 1.0, eta: float = 0.0, dtype=torch.float32) -> torch.Tensor:
    """Sample latents [B, S, L, D] with DDIM (eta = 0) or a stochastic variant (eta > 0).

    ``denoiser(x_t [B, S, L, D], t [B] long, cond) → ε``. The initial noise and every added noise are
    counter-based (seed, frame, sample, step, residue, channel) and scaled by ``temperature``
    (0 = the deterministic path from the mean, the "most likely" latent).
    """
    B, S, L, D = shape
    ts = sampling_timesteps(schedule, steps)
    if dtype != torch.float32:  # the fused ops are float32; other precisions take the plain torch path
        x = temperature * latent_noise(seed, frames, S, 0, L, D, dtype)
        for k, t in enumerate(ts):
            t_prev = ts[k + 1] if k + 1 < len(ts) else -1
            eps = denoiser(x, torch.full((B,), t, dtype=torch.long, device=x.device), cond)
            noise = temperature * latent_noise(seed, frames, S, k + 1, L, D, dtype) if eta > 0 else None
            x = ddim_step(schedule, x, eps, t, t_prev, eta, noise)
        return x
    from ldb_hpc import ops

    frames = torch.as_tensor(frames, dtype=torch.int64)
    # T = 0 (the default single sample) starts from the mean: no noise to draw.
    x = temperature * ops.gaussian_noise(seed, frames, S, 0, L, D) if temperature != 0 else \
        torch.zeros(B, S, L, D, dtype=torch.float32, device=frames.device)
    for k, t in enumerate(ts):
        t_prev = ts[k + 1] if k + 1 < len(ts) else -1
        eps = denoiser(x, torch.full((B,), t, dtype=torch.long, device=x.device), cond)
        coef = ops.step_coefficients(schedule.alphas_cumprod, t, t_prev, eta, temperature)
        x = ops.diffusion_step(x, eps.to(torch.float32), coef, seed, k + 1, frames)
    return x
