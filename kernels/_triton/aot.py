"""Compile every Triton kernel of ldb_hpc._triton (the op modules of :mod:`ldb_hpc._triton.ops`) for an NVIDIA
architecture without a GPU.

Triton's front end, its MLIR passes, LLVM's NVPTX back end and the bundled ``ptxas`` all run on the host, so
this checks on a CPU-only machine what the interpreter cannot: that the kernels type-check and lower the way
the compiler (not numpy) sees them, and that the generated PTX keeps the numerics the contract needs (no
fused multiply-adds in our own arithmetic, IEEE divisions). Must run in a process without
``TRITON_INTERPRET``. Signatures are those the launchers beside the kernels produce (int64 indices, float32
coordinates, int32 tables); the launchers' int arguments equal to 1 arrive as constexpr, which is exercised
for ``step`` / ``seed`` / ``S`` / ``k`` (and both ways for message_mean's ``k``).

    python -m ldb_hpc._triton.aot [--arch 90]    # prints one JSON object per kernel
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from ldb_hpc.chem import residues as rc


def _jobs() -> dict:
    """{report name: (kernel, signature, constexpr values)}: every kernel, some in two specialisations."""
    from ldb_hpc._triton import build, clash, message, noise, vq

    P32, P64, PI64, PI32, PU8, PI8 = "*fp32", "*fp64", "*i64", "*i32", "*u8", "*i8"
    c = "constexpr"
    clash_c = dict(PRO=rc.RESTYPE_INDEX["PRO"], CYS=rc.RESTYPE_INDEX["CYS"], NSLOT=14, NB=clash.CLASH_NB, BLOCK_S=16)
    message_sig = dict(nj_ptr=P32, ni_ptr=P32, e_ptr=P32, nbr_ptr=PI64, out_ptr=P32, R="i32", L="i32", k=c,
                       kf="fp32", D=c, BLOCK_D=c, BLOCK_R=c)
    diffusion_sig = dict(x_ptr=P32, eps_ptr=P32, out_ptr=P32, frames_ptr=PI64, const_ptr=P64, c_ab="fp32",
                         c_1mab="fp32", c_abp="fp32", c_dir="fp32", c_noise="fp32", seed=c, step="i32", total="i32",
                         S=c, L="i32", D="i32", HAS_NOISE=c, BLOCK=c)
    return {
        "vq_kernel": (vq.vq_kernel,
                      dict(z_ptr=P32, cb_ptr=P32, idx_ptr=PI64, q_ptr=P32, N="i32", K="i32", D=c, BLOCK_D=c,
                           BLOCK_N=c, BLOCK_K=c),
                      dict(D=8, BLOCK_D=8, BLOCK_N=vq.VQ_BLOCK_N, BLOCK_K=vq.VQ_BLOCK_K)),
        "noise_kernel": (noise.noise_kernel,
                         dict(frames_ptr=PI64, const_ptr=P64, out_ptr=P32, seed="i64", step=c, total="i32", S="i32",
                              L="i32", D="i32", BLOCK=c),
                         dict(step=1, BLOCK=noise.NOISE_BLOCK)),
        "diffusion_kernel": (noise.diffusion_kernel, diffusion_sig,
                             dict(seed=1, S=1, HAS_NOISE=True, BLOCK=noise.NOISE_BLOCK)),
        "diffusion_kernel[no noise]": (noise.diffusion_kernel, diffusion_sig,
                                       dict(seed=1, S=1, HAS_NOISE=False, BLOCK=noise.NOISE_BLOCK)),
        "build_kernel": (build.build_kernel,
                         dict(n_ptr=P32, ca_ptr=P32, c_ptr=P32, otor_ptr=P32, chi_ptr=P32, rt_ptr=PI64, out_ptr=P32,
                              refs_ptr=PI32, chan_ptr=PI32, keep_ptr=PI32, bond_ptr=P32, cos_ptr=P32, sin_ptr=P32,
                              offset_ptr=P32, M="i32", NSLOT=c, BLOCK_M=c, BLOCK_S=c),
                         dict(NSLOT=14, BLOCK_M=build.BUILD_BLOCK_M, BLOCK_S=16)),
        "proline_kernel": (build.proline_kernel,
                           dict(chi_ptr=P32, rt_ptr=PI64, out_ptr=P32, par_ptr=P32, g1_ptr=P32, g2_ptr=P32, PRO=c,
                                NSLOT=c, N1=c, N2=c, B1=c, B2=c),
                           dict(PRO=rc.RESTYPE_INDEX["PRO"], NSLOT=14, N1=21, N2=51, B1=32, B2=64)),
        "flags_kernel": (clash.flags_kernel,
                         dict(pos_ptr=P32, rows_ptr=PI64, nbr_ptr=PI64, adj_ptr=PU8, rt_ptr=PI64, exists_ptr=PI32,
                              out_ptr=PI8, k="i32", trigger="fp32", **{k: c for k in clash_c}), clash_c),
        "score_kernel": (clash.score_kernel,
                         dict(cand_ptr=P32, pos_ptr=P32, rows_ptr=PI64, nbr_ptr=PI64, adj_ptr=PU8, rt_ptr=PI64,
                              exists_ptr=PI32, out_ptr=P32, M="i32", k=c, contact="fp32", **{k: c for k in clash_c}),
                         dict(k=1, **clash_c)),
        "message_kernel": (message.message_kernel, message_sig,
                           dict(k=1, D=64, BLOCK_D=64, BLOCK_R=message.MESSAGE_BLOCK_R)),
        "message_kernel[k > 1, D not a power of 2]": (message.message_kernel, dict(message_sig, k="i32"),
                                                      dict(D=48, BLOCK_D=64, BLOCK_R=message.MESSAGE_BLOCK_R)),
    }


def compile_kernels(arch: int = 90) -> dict[str, dict]:
    """Compile each kernel for sm_<arch>. Returns {name: {"ok", "seconds", "error", PTX instruction counts}}:
    ``fma`` (fma.rn.*; our kernels' own arithmetic has none, libdevice's sin/cos/log have some), ``div_full``
    (approximate division: must be 0), ``cubin_bytes``."""
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("unset TRITON_INTERPRET to compile the kernels")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    target = GPUTarget("cuda", arch, 32)
    out = {}
    for name, (fn, sig, const) in _jobs().items():
        t0 = time.perf_counter()
        try:
            names = list(sig)
            src = ASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v for k, v in const.items()})
            kernel = triton.compile(src, target=target, options=dict(enable_fp_fusion=False))
            ptx = kernel.asm["ptx"]
            out[name] = dict(ok=True, seconds=time.perf_counter() - t0, fma=ptx.count("fma.rn"),
                             div_full=ptx.count("div.full"), libdevice_calls=ptx.count("__nv_"),
                             cubin_bytes=len(kernel.asm.get("cubin", b"")))
        except Exception as e:  # noqa: BLE001 - report every kernel, not only the first failure
            out[name] = dict(ok=False, seconds=time.perf_counter() - t0, error=f"{type(e).__name__}: {e}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Compile the Triton kernels for an NVIDIA architecture, no GPU needed.")
    ap.add_argument("--arch", type=int, default=90, help="compute capability × 10 (default 90: H100)")
    args = ap.parse_args(argv)
    res = compile_kernels(args.arch)
    for name, r in res.items():
        print(json.dumps(dict(kernel=name, **r)))
    return 0 if all(r["ok"] for r in res.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
