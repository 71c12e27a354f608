"""The C++/OpenMP CPU kernels (ldb_hpc._cpu via ldb_hpc.ops.cpu) against the pure-torch reference
(ldb_hpc.ops.reference), the dispatch of ldb_hpc.ops, and backmap end to end with default vs reference kernels.

Agreement: indices and flags exactly; noise and diffusion updates bit for bit (float32); coordinates to float32
rounding (a few ulps of |x| ≤ 60 Å); clash scores to float32 summation rounding.
"""

from __future__ import annotations

import math

import pytest
import torch

from ldb_hpc import ops
from ldb_hpc.chem import residues as rc
from ldb_hpc.errors import InputError
from ldb_hpc.model.diffusion import linear_schedule
from ldb_hpc.ops import cpu
from ldb_hpc.ops import reference as ref

cpu.module()  # the extension is always built with the package (make install): fail here, not skip, when it is not

_PRO = rc.RESTYPE_INDEX["PRO"]
_CYS = rc.RESTYPE_INDEX["CYS"]


@pytest.fixture(autouse=True)
def _default_kernels(monkeypatch):
    monkeypatch.delenv(ops.ENV_VAR, raising=False)


def _worst(a: torch.Tensor, b: torch.Tensor) -> str:
    d = (a.double() - b.double()).abs()
    i = int(d.flatten().argmax())
    return f"max |Δ| {float(d.max()):.3g} at flat index {i}: {float(a.flatten()[i])} vs {float(b.flatten()[i])}"


# ---------------------------------------------------------------------------------------------------- vq_nearest

@pytest.mark.parametrize("N,K,d", [(1, 1, 1), (1, 4096, 8), (7, 5, 13), (257, 1000, 3), (1031, 4099, 8)])
def test_vq_nearest_matches_reference(N, K, d):
    g = torch.Generator().manual_seed(N * 7 + K)
    z = torch.randn(N, d, generator=g)
    codebook = torch.randn(K, d, generator=g)
    i_ref, q_ref = ref.vq_nearest(z, codebook)
    i_cpu, q_cpu = cpu.vq_nearest(z, codebook)
    assert i_cpu.dtype == torch.int64 and torch.equal(i_cpu, i_ref)
    assert torch.equal(q_cpu, q_ref)


def test_vq_nearest_ties_go_to_the_lowest_index_and_empty_input():
    codebook = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [2.0, 2.0], [0.0, 0.0]])
    z = torch.tensor([[0.0, 0.0], [0.5, 0.0], [9.0, 9.0]])  # exact tie of codes 1, 2, 4; exact tie 0 / 1
    idx, q = cpu.vq_nearest(z, codebook)
    assert idx.tolist() == ref.vq_nearest(z, codebook)[0].tolist() == [1, 0, 3]
    assert torch.equal(q, codebook[idx])
    idx, q = ops.vq_nearest(torch.zeros(0, 2), codebook)
    assert idx.shape == (0,) and q.shape == (0, 2)


# ------------------------------------------------------------------------------------------------------- noise

@pytest.mark.parametrize("seed,frames,S,step,L,D", [
    (0, [0], 1, 0, 1, 1),
    (12345, [0, 5, 123456789, -3, 2 ** 40 + 1], 3, 7, 37, 5),
    (2 ** 40 + 7, list(range(64)), 1, 9, 135, 8),
    (-1, [2 ** 31, 2 ** 32 - 1], 2, 100, 3, 17),
])
def test_gaussian_noise_is_bit_identical(seed, frames, S, step, L, D):
    """Bit-identical float32 (the uint32 hash is exact; float64 log/cos of glibc and of torch agree to ≤ 1 ulp
    in float64, which never showed after rounding to float32 on these inputs)."""
    f = torch.tensor(frames, dtype=torch.int64)
    a = ref.gaussian_noise(seed, f, S, step, L, D)
    b = cpu.gaussian_noise(seed, f, S, step, L, D)
    assert b.shape == (len(frames), S, L, D) and b.dtype == torch.float32
    assert torch.equal(a, b), _worst(a, b)
    assert b.numel() < 100 or 0.8 < float(b.std()) < 1.2


@pytest.mark.parametrize("t,t_prev,eta,temp", [(999, 856, 0.0, 1.0), (500, 300, 1.0, 0.7), (10, -1, 1.0, 1.0),
                                               (400, 399, 0.5, 0.0)])
def test_diffusion_step_is_bit_identical(t, t_prev, eta, temp):
    g = torch.Generator().manual_seed(t)
    x = torch.randn(5, 3, 37, 5, generator=g)
    eps = torch.randn(5, 3, 37, 5, generator=g)
    frames = torch.tensor([4, 0, 77, 2 ** 33, 1])
    coef = ref.step_coefficients(linear_schedule().alphas_cumprod, t, t_prev, eta, temp)
    a = ref.diffusion_step(x, eps, coef, 9, 4, frames)
    b = cpu.diffusion_step(x, eps, coef, 9, 4, frames)
    assert torch.equal(a, b), _worst(a, b)
    if coef[4] != 0.0:  # the noise matters: another seed changes the update
        assert not torch.equal(b, cpu.diffusion_step(x, eps, coef, 10, 4, frames))


# ------------------------------------------------------------------------------------------------- build_atoms

def _backbones(M: int, seed: int):
    """Random residues: N and C at ideal bond lengths from CA in random directions, random torsions, every
    residue type (prolines included)."""
    g = torch.Generator().manual_seed(seed)
    ca = torch.randn(M, 3, generator=g) * 20
    unit = lambda v: v / v.norm(dim=-1, keepdim=True)  # noqa: E731
    n = ca + 1.46 * unit(torch.randn(M, 3, generator=g))
    c = ca + 1.52 * unit(torch.randn(M, 3, generator=g))
    o_t = (torch.rand(M, generator=g) * 2 - 1) * math.pi
    chi = (torch.rand(M, 4, generator=g) * 2 - 1) * math.pi
    restype = torch.arange(M) % rc.NUM_RESTYPES
    return n, ca, c, o_t, chi, restype[torch.randperm(M, generator=g)]


@pytest.mark.parametrize("M", [1, 2, 21, 333, 1025])
def test_build_atoms_matches_reference(M):
    n, ca, c, o_t, chi, restype = _backbones(M, M)
    if M == 1:
        restype = torch.tensor([_PRO])
    a = ref.build_atoms(n, ca, c, o_t, chi, restype)
    b = cpu.build_atoms(n, ca, c, o_t, chi, restype)
    assert b.shape == (M, 14, 3)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-4, msg=lambda m: m + "\n" + _worst(b, a))
    exists = torch.as_tensor(rc.SLOT_MASK)[restype]
    assert bool((b[~exists] == 0).all()) and bool((b[exists].abs().sum(-1) > 0).all())
    # The kernel keeps N, CA, C where they were (to rounding).
    torch.testing.assert_close(b[:, :3], torch.stack([n, ca, c], 1), rtol=0, atol=1e-4)


def test_build_atoms_degenerate_backbones_stay_finite_and_agree():
    """Coincident and collinear N, CA, C take the frame fallbacks of the reference."""
    ca = torch.tensor([[1.0, 2.0, 3.0]] * 4)
    n = ca + torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 1.46, 0.0]])
    c = ca + torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [1.5, 0.0, 0.0], [0.0, 0.0, 0.0]])
    o_t, chi = torch.full((4,), 2.0), torch.full((4, 4), -1.0)
    restype = torch.tensor([rc.RESTYPE_INDEX["TRP"], _PRO, rc.RESTYPE_INDEX["ARG"], rc.RESTYPE_INDEX["LYS"]])
    a = ref.build_atoms(n, ca, c, o_t, chi, restype)
    b = cpu.build_atoms(n, ca, c, o_t, chi, restype)
    assert torch.isfinite(b).all()
    torch.testing.assert_close(b, a, rtol=0, atol=1e-4)


def test_atoms_from_backbone_uses_the_kernel_only_without_autograd(monkeypatch):
    from ldb_hpc import ops
    from ldb_hpc.geometry import atoms

    n, ca, c, o_t, chi, restype = _backbones(42, 3)
    calls = []
    real = cpu.build_atoms
    monkeypatch.setattr(cpu, "build_atoms", lambda *a, **k: calls.append(1) or real(*a, **k))
    # Batched [2, L] like the model, restype [L]: the kernel path equals the torch path.
    ca2, n2, c2 = (torch.stack([x, x + 1.0]) for x in (ca, n, c))
    fast = ops.atoms_from_backbone(n2, ca2, c2, torch.stack([o_t, o_t]), torch.stack([chi, -chi]), restype)
    assert len(calls) == 1
    slow = atoms.atoms_from_backbone(n2, ca2, c2, torch.stack([o_t, o_t]), torch.stack([chi, -chi]), restype)
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-4)
    # one order everywhere, the chemical one of build_atoms: N, CA, C come back in slots 0, 1, 2 on both paths
    for out in (fast, slow):
        torch.testing.assert_close(out[..., :3, :], torch.stack([n2, ca2, c2], dim=-2), rtol=0, atol=1e-4)
    # Training: an input that needs a gradient keeps the differentiable torch path.
    chi_g = chi.clone().requires_grad_(True)
    out = ops.atoms_from_backbone(n, ca, c, o_t, chi_g, restype)
    assert len(calls) == 1 and out.requires_grad
    out.sum().backward()
    assert chi_g.grad is not None and torch.isfinite(chi_g.grad).all()


# ---------------------------------------------------------------------------------------------------- clashes

def _packed_scene(B: int, L: int, k: int, seed: int):
    """Random compact chains with atoms scattered around each CA (plenty of close pairs), as repack sees them:
    flat rows B·L, neighbour rows from the k nearest CAs, adjacency within one segment."""
    from ldb_hpc.model.features import knn

    g = torch.Generator().manual_seed(seed)
    ca = torch.cumsum(torch.randn(B, L, 3, generator=g) * 2.2, 1)
    restype = torch.randint(0, rc.NUM_RESTYPES, (L,), generator=g)
    restype[: min(L, 4)] = torch.tensor([_CYS, _PRO, _CYS, _PRO])[: min(L, 4)]
    pos = ca[:, :, None, :] + torch.randn(B, L, 14, 3, generator=g) * 2.0
    pos = pos * torch.as_tensor(rc.SLOT_MASK)[restype][None, :, :, None]
    nbr = knn(ca, k)
    i = torch.arange(L)[None, :, None]
    adjacent = (nbr - i).abs() == 1
    k = nbr.shape[-1]
    nbr_flat = (nbr + (torch.arange(B) * L)[:, None, None]).reshape(B * L, k)
    return pos.reshape(B * L, 14, 3), nbr_flat, adjacent.reshape(B * L, k), restype.repeat(B)


@pytest.mark.parametrize("B,L,k,n_rows", [(1, 2, 1, 1), (1, 3, 2, 3), (2, 37, 7, 50), (3, 101, 28, 257)])
def test_clash_flags_match_reference(B, L, k, n_rows):
    pos, nbr, adjacent, restype = _packed_scene(B, L, k, seed=L)
    rows = torch.randperm(B * L, generator=torch.Generator().manual_seed(1))[:n_rows]
    for trigger in (1.0, 2.2, 3.5):
        a = ref.clash_flags(pos, rows, nbr, adjacent, restype, trigger)
        b = cpu.clash_flags(pos, rows, nbr, adjacent, restype, trigger)
        assert b.dtype == torch.bool and torch.equal(a, b), (trigger, a.int().tolist(), b.int().tolist())
    assert 0 < int(b.sum()) or n_rows < 3  # the scene does have clashes


@pytest.mark.parametrize("C,B,L,k,n_rows",
                         [(1, 1, 2, 1, 1), (9, 2, 37, 7, 50), (9, 3, 101, 28, 129), (4, 1, 64, 28, 0)])
def test_clash_score_matches_reference(C, B, L, k, n_rows):
    pos, nbr, adjacent, restype = _packed_scene(B, L, k, seed=L + 1)
    g = torch.Generator().manual_seed(2)
    rows = torch.randperm(B * L, generator=g)[:n_rows]
    cand = pos[rows][None] + torch.randn(C, n_rows, 14, 3, generator=g) * 0.7  # absent slots hold junk: ignored
    a = ref.clash_score(cand, pos, rows, nbr, adjacent, restype, 3.0)
    b = cpu.clash_score(cand, pos, rows, nbr, adjacent, restype, 3.0)
    assert b.shape == (C, n_rows) and b.dtype == torch.float32
    torch.testing.assert_close(b, a, rtol=2e-5, atol=1e-5, msg=lambda m: m + "\n" + _worst(b, a))
    assert n_rows == 0 or float(b.max()) > 0


def test_pair_rules_are_the_reference_rules():
    """Exactly one neighbour atom within range: counts or not per pair_counts (Pro CD of a sequence neighbour,
    Cys SG–SG, backbone atoms of the residue itself)."""
    pos = torch.zeros(2, 14, 3)
    pos[0, :, 0] = torch.arange(14) * 10.0  # atoms of row 0 far apart from each other
    pos[1] = 1000.0
    cases = []
    for rt_i, slot_i, rt_j, slot_j, adjacent in [(_CYS, 5, _CYS, 5, False),
                                                 (_CYS, 5, rc.RESTYPE_INDEX["SER"], 5, False),
                                                 (_CYS, 5, _PRO, 6, True), (_CYS, 5, _PRO, 6, False),
                                                 (_CYS, 1, _PRO, 5, False)]:
        p = pos.clone()
        p[1, slot_j] = p[0, slot_i] + torch.tensor([0.0, 0.5, 0.0])
        restype = torch.tensor([rt_i, rt_j])
        args = (p, torch.tensor([0]), torch.tensor([[1], [0]]), torch.tensor([[adjacent], [adjacent]]), restype)
        flag = cpu.clash_flags(*args, 2.0)
        assert torch.equal(flag, ref.clash_flags(*args, 2.0))
        score = cpu.clash_score(p[None, :1], *args, 3.0)
        torch.testing.assert_close(score, ref.clash_score(p[None, :1], *args, 3.0))
        cases.append(bool(flag))
    assert cases == [False, True, False, True, False]


# -------------------------------------------------------------------------------------------------- message_mean

def _message_inputs(B, L, k, D, seed):
    g = torch.Generator().manual_seed(seed)
    nj, ni = torch.randn(B, L, D, generator=g) * 3, torch.randn(B, L, D, generator=g) * 3
    edge = torch.randn(B, L, k, D, generator=g) * 3
    return nj, ni, edge, torch.randint(0, L, (B, L, k), generator=g)


@pytest.mark.parametrize("B,L,k,D", [(1, 1, 1, 1), (2, 7, 3, 5), (3, 41, 16, 64), (2, 30, 16, 13), (1, 9, 9, 67)])
def test_message_mean_matches_reference(B, L, k, D):
    """Every width (the vector loops' tails: D = 1, 5, 13, 67), frames offset their neighbour indices, SiLU over
    both signs: agrees with the torch reference to float32 rounding."""
    args = _message_inputs(B, L, k, D, seed=B * 100 + L)
    a, b = ref.message_mean(*args), cpu.message_mean(*args)
    assert b.shape == (B, L, D) and b.dtype == torch.float32
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=lambda m: m + "\n" + _worst(b, a))
    if B > 1:  # a frame reads its own rows: the same indices on another frame give another result
        swapped = cpu.message_mean(args[0].flip(0), *args[1:])
        assert not torch.allclose(swapped, b)


def test_message_mean_is_the_layer_it_replaces():
    """An MPLayer without autograd (the fused op) computes what it computes with autograd (gather, SiLU, mean in
    torch), to float rounding; empty neighbour lists give torch's mean of nothing (NaN)."""
    from ldb_hpc.model.networks import MPLayer

    torch.manual_seed(0)
    layer = MPLayer(64, 32)
    h, e = torch.randn(3, 25, 64), torch.randn(3, 25, 16, 32)
    nbr = torch.randint(0, 25, (3, 25, 16))
    with torch.no_grad():
        fused = layer(h, e, nbr)
    plain = layer(h, e, nbr).detach()
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    nj, ni, edge, _ = _message_inputs(2, 4, 0, 8, seed=1)
    assert torch.isnan(cpu.message_mean(nj, ni, edge, torch.zeros(2, 4, 0, dtype=torch.long))).all()


@pytest.mark.parametrize("B,L,k,E,D", [(1, 1, 1, 1, 1), (2, 7, 3, 5, 5), (3, 41, 16, 32, 64), (2, 30, 6, 7, 13),
                                       (1, 9, 9, 32, 67), (2, 12, 5, 3, 130)])
def test_message_mean_proj_matches_reference(B, L, k, E, D):
    """The per-edge projection fused in: every width (64-channel blocks and their tails: D = 1, 5, 13, 67, 130),
    neighbour counts that are not a multiple of the four edges a load of the weights serves (k = 1, 3, 5, 6, 9),
    frames offset their neighbour indices; a non-contiguous weight (the layer's slice of its first Linear)."""
    g = torch.Generator().manual_seed(B * 1000 + L * 10 + k)
    nj, ni = torch.randn(B, L, D, generator=g) * 3, torch.randn(B, L, D, generator=g) * 3
    edge = torch.randn(B, L, k, E, generator=g)
    weight = torch.randn(D, 2 * D + E, generator=g)[:, 2 * D:] * 0.5
    nbr = torch.randint(0, L, (B, L, k), generator=g)
    a, b = ref.message_mean_proj(nj, ni, edge, weight, nbr), cpu.message_mean_proj(nj, ni, edge, weight, nbr)
    assert b.shape == (B, L, D) and b.dtype == torch.float32
    torch.testing.assert_close(b, a, rtol=1e-5, atol=2e-6, msg=lambda m: m + "\n" + _worst(b, a))
    if k > 1:  # every edge's own features count: swapping two edges' features changes the result
        swapped = cpu.message_mean_proj(nj, ni, edge.roll(1, dims=2), weight, nbr)
        assert not torch.allclose(swapped, b)
    nan = torch.full((B, L, D), float("nan"))
    assert torch.equal(cpu.message_mean_proj(nj, ni, edge, weight, nbr, out=nan), b)  # every element written
    with pytest.raises(ValueError, match="weight_t"):
        cpu.message_mean_proj(nj, ni, edge, weight[:, :-1] if E > 1 else weight.repeat(1, 2), nbr)
    with pytest.raises(IndexError, match="nbr"):
        cpu.message_mean_proj(nj, ni, edge, weight, nbr.clone().fill_(L))


# ----------------------------------------------------------------------------------------------------------- knn

@pytest.mark.parametrize("B,L,k", [(1, 2, 1), (3, 17, 5), (2, 135, 16), (1, 40, 39), (2, 6, 0)])
def test_knn_matches_reference(B, L, k):
    """The nearest k other points of each point of its own frame, nearest first, as cdist + topk give them
    (random points: no ties); k = 0 and k = L − 1 at the edges."""
    g = torch.Generator().manual_seed(L * 10 + k)
    pts = torch.randn(B, L, 3, generator=g) * 10
    got = cpu.knn(pts, k)
    assert got.shape == (B, L, k) and got.dtype == torch.int64
    assert torch.equal(got, ref.knn(pts, k))
    if B > 1 and k:  # frames are separate: another frame's points give another graph
        assert not torch.equal(cpu.knn(torch.cat([pts[1:], pts[:1]]), k)[0], got[0])


def test_knn_ties_go_to_the_lower_index_and_bad_k_is_refused():
    """Equidistant neighbours (points on a line at unit spacing): the lower index first, the point itself never."""
    line = torch.arange(7, dtype=torch.float32)[None, :, None] * torch.tensor([1.0, 0.0, 0.0])
    got = cpu.knn(line, 4)[0]
    assert got[3].tolist() == [2, 4, 1, 5]
    assert got[0].tolist() == [1, 2, 3, 4]
    assert all(i not in row for i, row in enumerate(got.tolist()))
    with pytest.raises(ValueError, match="at most L - 1"):
        cpu.knn(line, 7)
    assert ops.knn(line, 99).shape == (1, 7, 6)  # ops.knn clips k to L − 1


# -------------------------------------------------------------------------------------------- poisoned outputs

def test_every_output_element_is_written():
    """Outputs pre-filled with NaN / sentinels come back equal to freshly allocated ones."""
    nan = lambda *s: torch.full(s, float("nan"))  # noqa: E731
    z, cb = torch.randn(33, 8), torch.randn(300, 8)
    idx = torch.full((33,), -7, dtype=torch.int64)
    i, q = cpu.vq_nearest(z, cb, out=(idx, nan(33, 8)))
    assert torch.equal(i, ref.vq_nearest(z, cb)[0]) and torch.equal(q, cb[i])
    f = torch.tensor([3, 1, 4])
    assert torch.equal(cpu.gaussian_noise(5, f, 2, 1, 11, 3, out=nan(3, 2, 11, 3)),
                       ref.gaussian_noise(5, f, 2, 1, 11, 3))
    x, e = torch.randn(3, 2, 11, 3), torch.randn(3, 2, 11, 3)
    coef = ref.step_coefficients(linear_schedule().alphas_cumprod, 700, 600, 1.0, 1.0)
    assert torch.equal(cpu.diffusion_step(x, e, coef, 1, 2, f, out=nan(3, 2, 11, 3)),
                       ref.diffusion_step(x, e, coef, 1, 2, f))
    bb = _backbones(45, 0)
    got = cpu.build_atoms(*bb, out=nan(45, 14, 3))
    assert torch.isfinite(got).all() and torch.equal(got, cpu.build_atoms(*bb))
    pos, nbr, adjacent, restype = _packed_scene(2, 30, 9, seed=5)
    rows = torch.arange(0, 60, 3)
    flags = torch.empty(len(rows), dtype=torch.bool)
    flags.view(torch.uint8).fill_(0xAB)  # neither True nor False
    got = cpu.clash_flags(pos, rows, nbr, adjacent, restype, 2.2, out=flags)
    assert set(got.view(torch.uint8).tolist()) <= {0, 1}
    assert torch.equal(got, ref.clash_flags(pos, rows, nbr, adjacent, restype, 2.2))
    cand = pos[rows][None].repeat(3, 1, 1, 1)
    got = cpu.clash_score(cand, pos, rows, nbr, adjacent, restype, 3.0, out=nan(3, len(rows)))
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, ref.clash_score(cand, pos, rows, nbr, adjacent, restype, 3.0), rtol=2e-5, atol=1e-5)
    args = _message_inputs(2, 19, 5, 11, seed=3)
    got = cpu.message_mean(*args, out=nan(2, 19, 11))
    assert torch.isfinite(got).all() and torch.equal(got, cpu.message_mean(*args))


def test_bad_indices_raise_instead_of_reading_out_of_bounds():
    pos, nbr, adjacent, restype = _packed_scene(1, 10, 3, seed=0)
    with pytest.raises(IndexError, match="nbr"):
        cpu.clash_flags(pos, torch.tensor([0]), nbr.clone().fill_(10), adjacent, restype, 2.0)
    with pytest.raises(IndexError, match="rows"):
        cpu.clash_score(pos[None, :1], pos, torch.tensor([-1]), nbr, adjacent, restype, 3.0)
    n, ca, c, o_t, chi, _ = _backbones(3, 0)
    with pytest.raises(IndexError, match="restype"):
        cpu.build_atoms(n, ca, c, o_t, chi, torch.tensor([0, 21, 1]))
    nj, ni, edge, nbr = _message_inputs(2, 6, 3, 4, seed=0)
    for bad in (6, -1):
        with pytest.raises(IndexError, match="nbr"):
            cpu.message_mean(nj, ni, edge, nbr.clone().index_fill_(2, torch.tensor([1]), bad))
    with pytest.raises(ValueError, match="edge"):
        cpu.message_mean(nj, ni, edge[:, :, :2], nbr)
    with pytest.raises(ValueError, match="out must be"):
        cpu.build_atoms(n, ca, c, o_t, chi, torch.tensor([0, 2, 1]), out=torch.empty(3, 14, 3, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------------- dispatch

def test_default_backend_is_cpu_and_env_forces_one(monkeypatch):
    assert "cpu" in ops.available_backends() and ops.available_backends()[0] == "reference"
    assert ops.backend("cpu") == "cpu" and ops.backend(torch.device("meta")) == "reference"
    monkeypatch.setenv(ops.ENV_VAR, "reference")
    assert ops.backend("cpu") == "reference"
    monkeypatch.setenv(ops.ENV_VAR, " CPU ")
    assert ops.backend("cpu") == "cpu"
    with pytest.raises(InputError, match="CPU tensors only"):
        ops.backend(torch.device("cuda"))  # a device object needs no GPU
    monkeypatch.setenv(ops.ENV_VAR, "cuda-fast")
    with pytest.raises(InputError, match="not a kernel backend") as e:
        ops.vq_nearest(torch.zeros(1, 2), torch.zeros(3, 2))
    assert "\n" not in str(e.value)


def test_ops_route_to_the_forced_backend(monkeypatch):
    calls = []
    real = cpu.clash_flags
    monkeypatch.setattr(cpu, "clash_flags", lambda *a, **k: calls.append(1) or real(*a, **k))
    pos, nbr, adjacent, restype = _packed_scene(1, 20, 5, seed=4)
    rows = torch.arange(20)
    a = ops.clash_flags(pos, rows, nbr, adjacent, restype, 2.2)
    assert len(calls) == 1
    monkeypatch.setenv(ops.ENV_VAR, "reference")
    b = ops.clash_flags(pos, rows, nbr, adjacent, restype, 2.2)
    assert len(calls) == 1 and torch.equal(a, b)
    # float64 coordinates are not the kernels' contract: they take the reference even by default.
    monkeypatch.delenv(ops.ENV_VAR)
    ops.clash_flags(pos.double(), rows, nbr, adjacent, restype, 2.2)
    assert len(calls) == 1


# -------------------------------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def example_frames(repo_root):
    from ldb_hpc.io.cg import CGTrajectory

    with CGTrajectory(str(repo_root / "examples" / "example.cg.h5")) as cg:
        return cg.residues, torch.from_numpy(cg.read(0, 3).ca)


@pytest.mark.parametrize("spec,samples", [(None, 2), ("ideal", 1)])
def test_backmap_default_kernels_equal_reference(example_frames, monkeypatch, spec, samples):
    """The shipped model (and the ideal baseline) with the default kernels — every C++ op on the path — gives the
    same atoms as LDB_HPC_KERNELS=reference, within 1e-3 Å."""
    from ldb_hpc.model.backmappers import load_backmapper

    residues, ca = example_frames
    model = load_backmapper(spec)
    idx = torch.arange(ca.shape[0])
    used = set()
    for name in ("vq_nearest", "gaussian_noise", "diffusion_step", "build_atoms", "clash_flags", "clash_score",
                 "message_mean_proj", "knn"):
        real = getattr(cpu, name)
        monkeypatch.setattr(cpu, name, lambda *a, _r=real, _n=name, **k: used.add(_n) or _r(*a, **k))
    fast = model.backmap(ca, residues, idx, samples=samples, seed=3)
    if spec is None:
        assert used >= {"vq_nearest", "gaussian_noise", "diffusion_step", "build_atoms", "clash_flags",
                        "message_mean_proj", "knn"}, used
    else:
        assert "build_atoms" in used
    monkeypatch.setenv(ops.ENV_VAR, "reference")
    slow = model.backmap(ca, residues, idx, samples=samples, seed=3)
    assert fast.shape == slow.shape
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-3, msg=lambda m: m + "\n" + _worst(fast, slow))
