"""Vector primitives of the geometry layer (batched torch; Å, radians), finite for degenerate input.

* ``dihedral(a, b, c, d)`` follows IUPAC: looking along b→c, a positive angle is a clockwise rotation of the far
  bond c–d relative to the near bond b–a (right-hand rule about b→c); range (−π, π]; cis = 0, trans = ±π.
* ``bond_angle(a, b, c)`` is the angle at b, in [0, π].

Gradients are finite everywhere (coincident or collinear atoms included).
"""

from __future__ import annotations

import torch

_TINY = 1e-12


def safe_norm(v: torch.Tensor, dim: int = -1, keepdim: bool = False) -> torch.Tensor:
    """Euclidean norm with a finite gradient at 0 (the squared norm is clamped to 1e-24)."""
    return torch.sqrt(torch.clamp((v * v).sum(dim=dim, keepdim=keepdim), min=_TINY * _TINY))


def safe_atan2(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """atan2 with a finite gradient at (0, 0), where it returns 0."""
    small = (x * x + y * y) < 1e-30
    return torch.atan2(torch.where(small, torch.zeros_like(y), y), torch.where(small, torch.ones_like(x), x))


def dot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u * v).sum(-1)


def dihedral(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Dihedral angle a–b–c–d, IUPAC sign. a, b, c, d: [..., 3] Å (broadcast). Returns [...] radians in (−π, π]."""
    b1 = c - b
    b1n = b1 / safe_norm(b1, keepdim=True)
    v = (a - b) - dot(a - b, b1n).unsqueeze(-1) * b1n
    w = (d - c) - dot(d - c, b1n).unsqueeze(-1) * b1n
    return safe_atan2(dot(torch.linalg.cross(b1n, v, dim=-1), w), dot(v, w))


def bond_angle(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Angle a–b–c at b. a, b, c: [..., 3] Å (broadcast). Returns [...] radians in [0, π]."""
    u, v = a - b, c - b
    return safe_atan2(safe_norm(torch.linalg.cross(u, v, dim=-1)), dot(u, v))


def broadcast_shape(*shapes) -> torch.Size:
    """The shape the given shapes broadcast to (numpy's rules): ``torch.broadcast_shapes`` without its first-call
    import of the symbolic-shape machinery (sympy, about a second of start-up). Raises ValueError when they do not
    broadcast."""
    ndim = max((len(s) for s in shapes), default=0)
    out = [1] * ndim
    for shape in shapes:
        for i, d in enumerate(shape, ndim - len(shape)):
            d = int(d)
            if d != 1:
                if out[i] not in (1, d):
                    raise ValueError(f"shapes {[tuple(s) for s in shapes]} do not broadcast")
                out[i] = d
    return torch.Size(out)


def nearest(points: torch.Tensor, k: int, block: int = 1024) -> torch.Tensor:
    """[B, L, k] int64: for every point of points [B, L, 3] its k ≤ L − 1 nearest other points of the same frame,
    nearest first (torch.cdist, then topk; row blocks bound memory to [B, block, L])."""
    B, L, _ = points.shape
    out = [torch.zeros(B, 0, k, dtype=torch.long, device=points.device)]
    for s in range(0, L, block):
        d = torch.cdist(points[:, s:s + block], points)
        rows = torch.arange(s, min(s + block, L), device=points.device)
        d[:, torch.arange(len(rows), device=points.device), rows] = float("inf")
        out.append(d.topk(k, dim=-1, largest=False).indices)
    return torch.cat(out, dim=1)
