"""The Triton kernels (ldb_hpc._triton: kernels/_triton, one module per op, gathered in ldb_hpc._triton.ops)
against the pure-torch reference (ldb_hpc.ops.reference).

By default this runs in Triton's interpreter on CPU tensors: TRITON_INTERPRET=1 must be in the environment
before any @triton.jit function is defined, hence before ``triton`` or ``ldb_hpc._triton`` is imported. With
``LDB_HPC_TRITON_DEVICE=cuda`` (or ``cuda:N``; `make gpu-check` sets it) the same tests run the compiled kernels
on that GPU: no interpreter, the kernels' inputs moved to the GPU, their outputs brought back and compared with
the reference computed on the CPU (the oracle CI uses). Every output buffer the kernels write is poisoned
first (NaN / a negative sentinel), so an element a kernel forgot to write is caught even where the reference
happens to be zero. Shapes are small (the interpreter is slow) and chosen to be odd, non-power-of-two,
single-row and not multiples of the kernels' block sizes.
"""
# ruff: noqa: E402
# (the device switch below sets or clears TRITON_INTERPRET before triton is first imported)

import os

DEVICE = os.environ.get("LDB_HPC_TRITON_DEVICE", "").strip().lower() or "cpu"
if DEVICE == "cpu":
    os.environ["TRITON_INTERPRET"] = "1"  # noqa: E402 - must precede every triton import
elif DEVICE == "cuda" or DEVICE.startswith("cuda:"):
    os.environ.pop("TRITON_INTERPRET", None)  # the compiled kernels on the GPU
else:
    raise ValueError(f"LDB_HPC_TRITON_DEVICE must be cpu, cuda or cuda:N, got {DEVICE!r}")

import importlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import triton  # noqa: E402, F401 - installed with the package (make install); the interpreter runs it on CPU

from ldb_hpc.chem import residues as rc  # noqa: E402
from ldb_hpc.chem.ideal_geometry import ideal_geometry  # noqa: E402
from ldb_hpc.ops import reference as ref  # noqa: E402

INTERPRET = DEVICE == "cpu"
if not INTERPRET and not torch.cuda.is_available():
    raise RuntimeError(f"LDB_HPC_TRITON_DEVICE={DEVICE} but torch sees no CUDA device")
DEV = torch.device(DEVICE)

_kernels = importlib.import_module("ldb_hpc._triton.ops")
if _kernels.INTERPRET != INTERPRET:  # imported earlier in this process in the other mode: define the kernels again
    for _name in _kernels.MODULES:  # common first (the op modules take its switch and functions), ops last
        importlib.reload(importlib.import_module(f"ldb_hpc._triton.{_name}"))
_common = importlib.import_module("ldb_hpc._triton.common")


OPS = ("vq_nearest", "gaussian_noise", "diffusion_step", "build_atoms", "clash_flags", "clash_score", "message_mean",
       "message_mean_proj")


class _OnDevice:
    """The kernel module as the tests call it on a GPU: the ops take their tensor arguments to DEV and bring
    their tensor results back to the CPU; every other name (block sizes, ...) is the module's."""

    def __getattr__(self, name):
        attr = getattr(_kernels, name)
        if name not in OPS:
            return attr

        def call(*args):
            out = attr(*(a.to(DEV) if isinstance(a, torch.Tensor) else a for a in args))
            return tuple(o.cpu() for o in out) if isinstance(out, tuple) else out.cpu()

        return call


tops = _kernels if INTERPRET else _OnDevice()  # the default run calls the module directly
REPO = Path(__file__).resolve().parents[1]
PRO, CYS, SER = rc.RESTYPE_INDEX["PRO"], rc.RESTYPE_INDEX["CYS"], rc.RESTYPE_INDEX["SER"]


@pytest.fixture(autouse=True)
def poisoned(monkeypatch):
    """Every buffer the wrappers allocate starts as NaN (floats) or −7 (integers); returns the list of them."""
    buffers = []

    def alloc(shape, dtype, device):
        t = torch.empty(shape, dtype=dtype, device=device)
        t.fill_(float("nan") if dtype.is_floating_point else -7)
        buffers.append(t)
        return t

    monkeypatch.setattr(_common, "alloc", alloc)  # every launcher allocates through common.alloc
    return buffers


def assert_all_written(buffers):
    for t in buffers:
        left = torch.isnan(t) if t.dtype.is_floating_point else t == -7
        assert not bool(left.any()), f"{int(left.sum())} of {t.numel()} output elements never written " \
                                     f"(first at {left.nonzero()[0].tolist()})"


def assert_close_report(actual, expected, atol, rtol=0.0):
    """Elementwise |a − e| ≤ atol + rtol·|e|, naming the worst element and the relative RMS error on failure."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    err = (actual.double() - expected.double()).abs()
    bound = atol + rtol * expected.double().abs()
    bad = err > bound
    if bool(bad.any()):
        worst = int((err - bound).flatten().argmax())
        idx = np.unravel_index(worst, tuple(err.shape))
        rel_rms = float(err.pow(2).mean().sqrt() / expected.double().pow(2).mean().sqrt().clamp_min(1e-30))
        pytest.fail(f"{int(bad.sum())} elements off; worst at {idx}: {float(actual[idx])} vs "
                    f"{float(expected[idx])}; relative RMS error {rel_rms:.3g}")


def test_triton_modules_are_the_source_files():
    """ldb_hpc._triton is kernels/_triton itself (pyproject.toml maps the folder as the package): with the editable
    install every module of the package is imported from its source file, so an edit there is what runs, no
    reinstall; from an installed wheel, the package holds the same files."""
    import ldb_hpc

    src = REPO / "kernels" / "_triton"
    names = sorted(p.stem for p in src.glob("*.py"))
    assert {"__init__", "common", "ops", *_kernels.MODULES} <= set(names)
    for name in names:
        module = "ldb_hpc._triton" if name == "__init__" else f"ldb_hpc._triton.{name}"
        origin = Path(importlib.util.find_spec(module).origin).resolve()
        if Path(ldb_hpc.__file__).resolve().is_relative_to(REPO):  # editable install (make install) or a checkout
            assert origin == (src / f"{name}.py").resolve(), f"{module} is imported from {origin}, not {src}"
        else:
            assert origin.read_bytes() == (src / f"{name}.py").read_bytes(), f"installed {module} differs from {src}"


# ----------------------------------------------------------------------------------------------------
# vq_nearest


@pytest.mark.parametrize("N,D,K", [(1, 1, 1), (1, 8, 5), (7, 3, 1), (13, 8, 2 * tops.VQ_BLOCK_K + 3),
                                   (tops.VQ_BLOCK_N + 1, 5, tops.VQ_BLOCK_K), (2 * tops.VQ_BLOCK_N - 3, 8, 257)])
def test_vq_nearest_matches_reference(N, D, K, poisoned):
    g = torch.Generator().manual_seed(N * 1000 + D * 10 + K)
    z = torch.randn(N, D, generator=g)
    codebook = torch.randn(K, D, generator=g)
    idx, q = tops.vq_nearest(z, codebook)
    assert_all_written(poisoned)
    idx_ref, q_ref = ref.vq_nearest(z, codebook)
    assert idx.dtype == torch.int64 and q.shape == (N, D)
    assert torch.equal(idx, idx_ref)
    assert torch.equal(q, q_ref)


def test_vq_nearest_ties_go_to_the_lowest_index_across_blocks(poisoned):
    bk = tops.VQ_BLOCK_K
    g = torch.Generator().manual_seed(5)
    codebook = torch.randn(3 * bk + 7, 8, generator=g)
    # the same code at 5, in the next block (bk + 5) and in the last, partial block (3·bk + 2)
    codebook[bk + 5] = codebook[5]
    codebook[3 * bk + 2] = codebook[5]
    # and a tie inside one block: 2·bk + 1 == 2·bk + 9
    codebook[2 * bk + 9] = codebook[2 * bk + 1]
    z = torch.randn(9, 8, generator=g)
    z[0] = codebook[5]
    z[3] = codebook[2 * bk + 1]
    z[4] = codebook[5] + 1e-3  # near, not on, the tied code
    idx, q = tops.vq_nearest(z, codebook)
    assert_all_written(poisoned)
    assert idx[0].item() == 5 and idx[3].item() == 2 * bk + 1 and idx[4].item() == 5
    assert torch.equal(idx, ref.vq_nearest(z, codebook)[0])
    assert torch.equal(q, codebook[idx])


def test_vq_nearest_empty_batch():
    idx, q = tops.vq_nearest(torch.zeros(0, 8), torch.randn(10, 8))
    assert idx.shape == (0,) and q.shape == (0, 8)


# ----------------------------------------------------------------------------------------------------
# gaussian_noise / diffusion_step


@pytest.mark.parametrize("seed,frames,S,step,L,D", [
    (0, [0], 1, 0, 1, 1),
    (42, [0, 5, 123456789012, -3], 3, 7, 13, 5),  # frame ids past 2^32 and negative: the low 32 bits count
    (2**40 + 17, [7, 1], 2, 99, 135, 8),  # seed past 2^32
    (-1, [3], 1, -2, 1000, 3),  # > one block of elements, not a multiple of it
])
def test_gaussian_noise_is_bit_identical(seed, frames, S, step, L, D, poisoned):
    frame_ids = torch.tensor(frames, dtype=torch.int64)
    out = tops.gaussian_noise(seed, frame_ids, S, step, L, D)
    assert_all_written(poisoned)
    expected = ref.gaussian_noise(seed, frame_ids, S, step, L, D)
    assert out.dtype == torch.float32 and out.shape == (len(frames), S, L, D)
    assert torch.equal(out, expected)


def test_gaussian_noise_keys_are_independent_of_batch():
    """A frame's numbers do not depend on which other frames share its batch (the determinism promise)."""
    a = tops.gaussian_noise(9, torch.tensor([4, 11]), 2, 3, 17, 8)
    b = tops.gaussian_noise(9, torch.tensor([11]), 2, 3, 17, 8)
    assert torch.equal(a[1], b[0])
    assert not torch.equal(a[0], a[1])


def _schedule():
    return np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))


@pytest.mark.parametrize("shape,t,t_prev,eta", [
    ((1, 1, 1, 1), 999, 899, 1.0),  # noisy DDPM-like step
    ((3, 2, 11, 5), 500, 250, 0.5),
    ((2, 1, 135, 8), 500, 250, 0.0),  # deterministic DDIM: no noise drawn
    ((2, 3, 7, 8), 40, -1, 1.0),  # last step
])
def test_diffusion_step_matches_reference(shape, t, t_prev, eta, poisoned):
    g = torch.Generator().manual_seed(sum(shape) + t)
    x_t = torch.randn(shape, generator=g)
    eps = torch.randn(shape, generator=g)
    frame_ids = torch.arange(shape[0], dtype=torch.int64) * 7 + 3
    coef = ref.step_coefficients(_schedule(), t, t_prev, eta, 0.9)
    out = tops.diffusion_step(x_t, eps, coef, 1234, 5, frame_ids)
    assert_all_written(poisoned)
    expected = ref.diffusion_step(x_t, eps, coef, 1234, 5, frame_ids)
    assert_close_report(out, expected, atol=1e-6, rtol=2e-7)
    if coef[-1] != 0.0:  # the noise really is in there, and it is the reference's noise
        no_noise = ref.diffusion_step(x_t, eps, coef[:-1] + (0.0,), 1234, 5, frame_ids)
        z = ref.gaussian_noise(1234, frame_ids, shape[1], 5, shape[2], shape[3])
        assert_close_report(out - no_noise, coef[-1] * z, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------
# build_atoms


def _backbones(M: int, seed: int, degenerate: bool = False):
    """Random residues of every type (prolines included): ideal N, CA, C in random orientations around random
    CAs up to ~40 Å from the origin, slightly perturbed N; random O torsions and χ (also beyond ±π)."""
    g = torch.Generator().manual_seed(seed)
    restype = torch.randint(0, rc.NUM_RESTYPES, (M,), generator=g)
    restype[::4] = PRO
    local = torch.as_tensor(ideal_geometry().frame_local, dtype=torch.float32)[restype]  # [M, 3, 3]
    rot = torch.linalg.qr(torch.randn(M, 3, 3, generator=g))[0]
    ca = torch.randn(M, 3, generator=g) * 20
    atoms = torch.einsum("mij,mkj->mki", rot, local) + ca[:, None]
    n = atoms[:, 0] + 0.05 * torch.randn(M, 3, generator=g)
    c = atoms[:, 2].clone()
    o_torsion = (torch.rand(M, generator=g) * 2 - 1) * 4
    chi = (torch.rand(M, 4, generator=g) * 2 - 1) * 4
    if degenerate and M >= 4:
        n[0] = ca[0]  # N on CA
        c[1] = ca[1]  # C on CA
        n[2] = ca[2] - 0.9 * (c[2] - ca[2])  # N, CA, C exactly collinear
        n[3], c[3] = ca[3], ca[3]  # everything on one point
    return n, ca, c, o_torsion, chi, restype


@pytest.mark.parametrize("M,seed,degenerate", [(1, 0, False), (5, 1, True), (tops.BUILD_BLOCK_M + 3, 2, False),
                                               (67, 3, True)])
def test_build_atoms_matches_reference(M, seed, degenerate, poisoned):
    n, ca, c, o_torsion, chi, restype = _backbones(M, seed, degenerate)
    if M == 1:
        restype[0] = PRO
    out = tops.build_atoms(n, ca, c, o_torsion, chi, restype)
    assert_all_written(poisoned)
    expected = ref.build_atoms(n, ca, c, o_torsion, chi, restype)
    assert out.shape == (M, 14, 3) and out.dtype == torch.float32
    assert bool(torch.isfinite(out).all())
    # float32 rounding of coordinates up to ~60 Å (1 ulp = 3.8e-6 Å), a few NeRF steps deep
    assert_close_report(out, expected, atol=3e-5, rtol=1e-6)
    # N, CA, C are the given atoms; slots the residue type lacks are exactly zero
    assert torch.equal(out[:, 0], n) and torch.equal(out[:, 1], ca) and torch.equal(out[:, 2], c)
    absent = ~torch.as_tensor(rc.SLOT_MASK)[restype]
    assert bool((out[absent] == 0).all())


def test_build_atoms_closes_proline_rings():
    n, ca, c, o_torsion, chi, restype = _backbones(12, 7)
    restype[:] = PRO
    chi[:, 0] = torch.linspace(-0.5, 0.5, 12)  # χ1 within the search window of a closable ring; χ2 random
    out = tops.build_atoms(n, ca, c, o_torsion, chi, restype)
    geo = ideal_geometry()
    k = [i for i in range(rc.BOND_SLOTS.shape[1]) if rc.BOND_MASK[PRO, i]
         and set(rc.BOND_SLOTS[PRO, i].tolist()) == {0, 6}][0]
    cd_n = (out[:, 6] - out[:, 0]).norm(dim=-1)
    assert bool(((cd_n - float(geo.bond_length[PRO, k])).abs() < 0.1).all()), cd_n
    assert_close_report(out, ref.build_atoms(n, ca, c, o_torsion, chi, restype), atol=3e-5, rtol=1e-6)


def test_build_atoms_empty():
    z3 = torch.zeros(0, 3)
    out = tops.build_atoms(z3, z3, z3, torch.zeros(0), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert out.shape == (0, 14, 3)


# ----------------------------------------------------------------------------------------------------
# clash_flags / clash_score


def _clash_setup(R: int, k: int, M: int, seed: int):
    """R residue rows with atoms scattered ±~8 Å (so that some pairs clash), k random neighbours each, a random
    quarter of them sequence-adjacent, many Cys and Pro; M distinct query rows."""
    g = torch.Generator().manual_seed(seed)
    restype = torch.randint(0, rc.NUM_RESTYPES, (R,), generator=g)
    restype[::5] = CYS
    restype[1::6] = PRO
    pos = torch.randn(R, 14, 3, generator=g) * 4
    pos = pos * torch.as_tensor(rc.SLOT_MASK)[restype][..., None]  # absent atoms at 0, as built
    nbr = torch.randint(0, R, (R, k), generator=g)
    adjacent = torch.rand(R, k, generator=g) < 0.25
    rows = torch.randperm(R, generator=g)[:M]
    return pos, rows, nbr, adjacent, restype


CLASH_SHAPES = [(1, 1, 1), (2, 3, 2), (40, 11, 17), (29, 2 * tops.CLASH_NB + 1, 29), (6, 0, 4)]


@pytest.mark.parametrize("R,k,M", CLASH_SHAPES)
def test_clash_flags_match_reference(R, k, M, poisoned):
    pos, rows, nbr, adjacent, restype = _clash_setup(R, k, M, R + k)
    for trigger in (1.0, 2.2, 4.5):
        poisoned.clear()
        out = tops.clash_flags(pos, rows, nbr, adjacent, restype, trigger)
        assert_all_written(poisoned)
        expected = ref.clash_flags(pos, rows, nbr, adjacent, restype, trigger)
        assert out.dtype == torch.bool and torch.equal(out, expected), (trigger, out, expected)


def test_clash_flags_pair_rule_exemptions():
    """Cys SG–SG (disulfide) and an adjacent proline's CD do not count; the same distances otherwise do."""
    pos = torch.zeros(2, 14, 3)
    pos[:, :, 0] = torch.arange(14.0) * 10  # atoms far apart within a residue
    pos[1] += torch.tensor([0.0, 50.0, 0.0])  # and the two residues far apart
    nbr = torch.tensor([[1], [0]])
    rows = torch.tensor([0])

    def flagged(rt0, rt1, adjacent, slot_j):
        p = pos.clone()
        p[1, slot_j] = p[0, 5] + torch.tensor([0.0, 0.0, 1.0])  # 1 Å from residue 0's first side-chain atom
        rt = torch.tensor([rt0, rt1])
        adj = torch.tensor([[adjacent], [adjacent]])
        out = tops.clash_flags(p, rows, nbr, adj, rt, 2.2)
        assert torch.equal(out, ref.clash_flags(p, rows, nbr, adj, rt, 2.2))
        return bool(out[0])

    assert not flagged(CYS, CYS, False, 5)  # SG–SG
    assert flagged(SER, CYS, False, 5) and flagged(CYS, SER, False, 5)
    assert not flagged(SER, PRO, True, 6)  # adjacent Pro CD
    assert flagged(SER, PRO, False, 6)  # a non-adjacent Pro CD counts
    assert flagged(SER, SER, True, 1)  # adjacent residue's CA counts


@pytest.mark.parametrize("R,k,M,C", [(1, 1, 1, 1), (40, 11, 17, 9), (29, 2 * tops.CLASH_NB + 1, 3, 2),
                                     (6, 0, 4, 3)])
def test_clash_score_matches_reference(R, k, M, C, poisoned):
    pos, rows, nbr, adjacent, restype = _clash_setup(R, k, M, 100 + R + k)
    g = torch.Generator().manual_seed(C)
    cand = pos[rows][None] + torch.randn(C, M, 14, 3, generator=g) * 2
    out = tops.clash_score(cand, pos, rows, nbr, adjacent, restype, 3.0)
    assert_all_written(poisoned)
    expected = ref.clash_score(cand, pos, rows, nbr, adjacent, restype, 3.0)
    assert out.shape == (C, M) and out.dtype == torch.float32
    if k > 0 and R > 1:
        assert bool((expected > 0).any())  # the shapes really exercise the sum
    # a float32 sum of up to k·14·9 terms in another order
    assert_close_report(out, expected, atol=1e-5, rtol=1e-5)


def test_clash_empty_rows():
    pos, _, nbr, adjacent, restype = _clash_setup(5, 3, 0, 0)
    rows = torch.zeros(0, dtype=torch.long)
    assert tops.clash_flags(pos, rows, nbr, adjacent, restype, 2.2).shape == (0,)
    assert tops.clash_score(torch.zeros(4, 0, 14, 3), pos, rows, nbr, adjacent, restype, 3.0).shape == (4, 0)



@pytest.mark.parametrize("B,L,k,D", [(1, 1, 1, 1), (2, 7, 3, 5), (1, 2 * tops.MESSAGE_BLOCK_R + 3, 16, 64),
                                     (3, 11, 2, 48)])
def test_message_mean_matches_reference(B, L, k, D, poisoned):
    """Rows not a multiple of the block, widths not a power of two, k = 1 (a constexpr on the GPU), several
    frames (neighbour indices are per frame)."""
    g = torch.Generator().manual_seed(L + D)
    nj, ni = torch.randn(B, L, D, generator=g) * 3, torch.randn(B, L, D, generator=g) * 3
    edge = torch.randn(B, L, k, D, generator=g) * 3
    nbr = torch.randint(0, L, (B, L, k), generator=g)
    out = tops.message_mean(nj, ni, edge, nbr)
    assert_all_written(poisoned)
    # float32 sums of k terms in the reference's order; on the GPU exp is tl.exp (a few ulps)
    assert_close_report(out, ref.message_mean(nj, ni, edge, nbr), atol=1e-5, rtol=1e-5)


def test_message_mean_proj_matches_reference(poisoned):
    """The edge projection (a GEMM on the GPU) then the message kernel: the reference's function."""
    g = torch.Generator().manual_seed(5)
    B, L, k, E, D = 2, 13, 5, 7, 24
    nj, ni = torch.randn(B, L, D, generator=g), torch.randn(B, L, D, generator=g)
    edge, weight = torch.randn(B, L, k, E, generator=g), torch.randn(D, E, generator=g)
    nbr = torch.randint(0, L, (B, L, k), generator=g)
    out = tops.message_mean_proj(nj, ni, edge, weight, nbr)
    assert_all_written(poisoned)
    assert_close_report(out, ref.message_mean_proj(nj, ni, edge, weight, nbr), atol=1e-5, rtol=1e-5)


def test_message_mean_empty():
    assert tops.message_mean(torch.zeros(0, 5, 8), torch.zeros(0, 5, 8), torch.zeros(0, 5, 3, 8),
                             torch.zeros(0, 5, 3, dtype=torch.long)).shape == (0, 5, 8)
    nan = tops.message_mean(torch.zeros(1, 2, 4), torch.zeros(1, 2, 4), torch.zeros(1, 2, 0, 4),
                            torch.zeros(1, 2, 0, dtype=torch.long))
    assert torch.isnan(nan).all()  # torch's mean over no neighbours


# ----------------------------------------------------------------------------------------------------
# The compiled path (no GPU needed to compile)


def test_kernels_compile_for_h100_with_contract_numerics(tmp_path):
    """Every kernel goes through Triton's real compiler (front end → PTX → ptxas, sm_90) in a process without
    the interpreter: type errors the interpreter forgives, int arguments arriving as constexpr 1, and the PTX
    keeps the reference's rounding (no approximate division; no FMA in kernels that call no libdevice)."""
    import json
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "ldb_hpc._triton.aot", "--arch", "90"], capture_output=True,
                          text=True, env=env, timeout=300)
    results = {r["kernel"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert set(results) >= {"vq_kernel", "noise_kernel", "diffusion_kernel", "build_kernel", "proline_kernel",
                            "flags_kernel", "score_kernel", "message_kernel"}, proc.stderr[-2000:]
    for name, r in results.items():
        assert r["ok"], f"{name}: {r.get('error')}"
        assert r["div_full"] == 0, name
        if r["libdevice_calls"] == 0:
            assert r["fma"] == 0, name
    assert proc.returncode == 0


def test_same_noise_as_the_cpu_kernels():
    """The third implementation (C++, ldb_hpc.ops.cpu) draws the very same numbers, where it is built."""
    from ldb_hpc.ops import cpu

    frames = torch.tensor([0, 9, 2**33 + 5])
    expected = cpu.gaussian_noise(11, frames, 2, 4, 37, 8)
    assert torch.equal(tops.gaussian_noise(11, frames, 2, 4, 37, 8), expected)
