#!/usr/bin/env python
"""Roofline of the default model: FLOPs and bytes per residue-frame, this CPU's peaks, an H100's, the floors.

1. Counts the work of one `LDBModel.sample` call on B frames of the bundled example protein (135 residues,
   the model's k = 16 neighbours and 8 DDIM steps unless told otherwise) by forward hooks on every
   ``nn.Linear``: multiply-accumulates from the actual weight shapes and rows, and the bytes of the Linear
   inputs and outputs (the activation traffic of the unfused torch implementation). Grouped by network:
   ConditionEncoder (once per frame), Denoiser (× steps), Decoder (once). Added analytically: the VQ snap
   (2·K·d FLOPs per residue for K codes of dim d) and element-wise work (LayerNorm, SiLU, neighbour means:
   estimated at 5 FLOPs per Linear output element). The atom builder and clash repair are not matmuls;
   their share is measured as time (sample with and without repair) and given as an estimate of FLOPs.
2. Compulsory bytes per residue-frame: the CA read (12 B) and the heavy atoms written (average heavy atoms per
   residue of the protein × 12 B, float32), plus the weights read once per batch divided by its
   residue-frames.
3. Peaks of this CPU, measured with torch: a square float32 matmul (GFLOP/s, 1 thread and all threads) and a
   large tensor copy (GB/s counted as read + write). H100 figures are NVIDIA's published peaks for the
   **H100 SXM5** (dense FP32 67 TFLOP/s, dense TF32 tensor core 495 TFLOP/s, HBM3 3.35 TB/s).
4. Floors: residue-frames/s = min(peak FLOP/s ÷ FLOPs per residue-frame, bandwidth ÷ bytes per residue-frame).

Rows go to benchmarks/results.csv (benchmark ``roofline``); docs/ROOFLINE.md explains them.

    python benchmarks/roofline.py [--frames 64] [--steps 8] [--smoke] [--results PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_csv import RESULTS, append_rows  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
H100_SXM = {"fp32_flops": 67e12, "tf32_flops": 495e12, "hbm_bytes_per_s": 3.35e12}
ELEMENTWISE_FLOPS_PER_OUTPUT = 5.0  # bias add + activation / norm / neighbour-mean share, an estimate
BUILDER_FLOPS_PER_ATOM = 60.0  # NeRF placement: two cross products, normalisations, a 3x3 rotation (estimate)


def count_sample(model, ca, restype, segment, steps: int, pack: bool = True) -> dict:
    """Linear MACs and activation bytes of one ``model.sample`` call, grouped by top-level network.

    ca [B, L, 3] float32 Å; restype, segment [L] int64. Returns {group: {"macs", "act_bytes", "calls"}} with
    totals over the call (not per residue-frame), plus "_param_bytes" (float32 weights of the used networks).
    """
    import torch
    from torch import nn

    from ldb_hpc.model.networks import MPLayer

    counts: dict = {}
    handles = []
    for name, mod in model.named_modules():
        group = name.split(".")[0]
        if isinstance(mod, MPLayer):
            # The message MLP's first Linear runs in split form (functional calls, no module hook): two
            # per-residue projections D → D and one per-edge projection E → D.
            def split_hook(m, inputs, out, group=group):
                h, e = inputs[0], inputs[1]
                first = m.msg[0]
                D, E = m.dim, first.in_features - 2 * m.dim
                nodes, edges = h.numel() // D, e.numel() // E
                c = counts.setdefault(group, {"macs": 0, "act_bytes": 0, "calls": 0})
                c["macs"] += 2 * nodes * D * D + edges * E * D
                c["act_bytes"] += (h.numel() + 2 * nodes * D + e.numel() + edges * D) * h.element_size()
                c["calls"] += 3

            handles.append(mod.register_forward_hook(split_hook))
            continue
        if not isinstance(mod, nn.Linear):
            continue

        def hook(m, inputs, out, group=group):
            x = inputs[0]
            rows = x.numel() // m.in_features
            c = counts.setdefault(group, {"macs": 0, "act_bytes": 0, "calls": 0})
            c["macs"] += rows * m.in_features * m.out_features
            c["act_bytes"] += (x.numel() + out.numel()) * x.element_size()
            c["calls"] += 1

        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.sample(ca, restype, segment, torch.arange(ca.shape[0]), samples=1, seed=0, steps=steps,
                         pack=pack)
    finally:
        for h in handles:
            h.remove()
    used = set(counts)
    counts["_param_bytes"] = sum(p.numel() * p.element_size() for n, p in model.named_parameters()
                                 if n.split(".")[0] in used)
    return counts


def measure_matmul(n: int, threads: int, reps: int = 5) -> float:
    """Best-of-``reps`` float32 GFLOP/s of an n×n @ n×n torch matmul on ``threads`` threads."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        c = a @ b  # warm-up
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            torch.matmul(a, b, out=c)
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    return 2.0 * n ** 3 / best / 1e9


def measure_copy(mbytes: int, threads: int, reps: int = 5) -> float:
    """Best-of-``reps`` copy bandwidth in GB/s (bytes read + bytes written) of a ``mbytes`` MiB float32 tensor."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        src = torch.rand(mbytes * (1 << 20) // 4)
        dst = torch.empty_like(src)
        dst.copy_(src)
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            dst.copy_(src)
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    return 2.0 * src.numel() * 4 / best / 1e9


def heavy_atoms_per_residue(restype) -> float:
    """Average heavy atoms per residue (atom14 slots that exist) for restype [L]; a number."""
    import numpy as np

    from ldb_hpc.chem import residues as rc

    return float(np.asarray(rc.SLOT_MASK)[np.asarray(restype)].sum(-1).mean())


def analyse(frames: int = 64, steps: int | None = None, smoke: bool = False) -> dict:
    """Everything of the roofline note as a flat dict of numbers (per residue-frame unless the key says so)."""
    import os

    import numpy as np
    import torch

    from ldb_hpc.io.cg import CGTrajectory
    from ldb_hpc.model.checkpoint import DEFAULT_MODEL_DIR, load_checkpoint

    torch.manual_seed(0)
    model = load_checkpoint(DEFAULT_MODEL_DIR)
    cfg = model.cfg
    steps = cfg.steps if steps is None else steps
    with CGTrajectory(str(REPO / "examples" / "example.cg.h5")) as cg:
        fr = cg.read(0, min(frames, cg.n_frames))
        res = cg.residues
    ca = torch.as_tensor(np.asarray(fr.ca), dtype=torch.float32)
    reps = -(-frames // ca.shape[0])
    ca = ca.repeat(reps, 1, 1)[:frames]
    restype, segment = torch.as_tensor(res.restype), torch.as_tensor(res.segment)
    B, L = ca.shape[:2]
    rf = B * L

    counts = count_sample(model, ca, restype, segment, steps)
    out = {"frames": B, "residues": L, "steps": steps, "knn": cfg.knn, "latent_dim": cfg.latent_dim,
           "n_codes": cfg.n_codes}
    groups = {"cond_encoder": "encoder", "denoiser": "denoiser", "decoder": "decoder", "sample_decoder": "decoder"}
    flops_net, act_bytes = 0.0, 0.0
    for g, c in counts.items():
        if g.startswith("_"):
            continue
        key = groups.get(g, g)
        f = 2.0 * c["macs"] / rf
        out[f"flops_{key}"] = out.get(f"flops_{key}", 0.0) + f
        out[f"act_bytes_{key}"] = out.get(f"act_bytes_{key}", 0.0) + c["act_bytes"] / rf
        flops_net += f
        act_bytes += c["act_bytes"] / rf
        out_elems = c["act_bytes"] / rf / 4.0  # in + out elements; the output half gets the element-wise work
        out["flops_elementwise"] = out.get("flops_elementwise", 0.0) + ELEMENTWISE_FLOPS_PER_OUTPUT * out_elems / 2
    out["flops_denoiser_per_step"] = out.get("flops_denoiser", 0.0) / steps
    out["flops_vq"] = 2.0 * cfg.n_codes * cfg.latent_dim
    atoms = heavy_atoms_per_residue(res.restype)
    out["heavy_atoms_per_residue"] = atoms
    out["flops_builder_est"] = BUILDER_FLOPS_PER_ATOM * 14  # every atom14 slot is placed (masked ones too)
    out["flops_linear"] = flops_net
    out["flops_total"] = flops_net + out["flops_elementwise"] + out["flops_vq"] + out["flops_builder_est"]
    out["bytes_compulsory"] = 12.0 + 12.0 * atoms + counts["_param_bytes"] / rf
    out["bytes_unfused_activations"] = act_bytes
    out["param_bytes_per_batch"] = float(counts["_param_bytes"])
    out["intensity_compulsory"] = out["flops_total"] / out["bytes_compulsory"]
    out["intensity_unfused"] = out["flops_total"] / (act_bytes + out["bytes_compulsory"])

    # Time shares on one thread: the networks vs the atom builder + clash repair.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        def timed(pack):
            model.sample(ca, restype, segment, torch.arange(B), steps=steps, pack=pack)  # warm-up
            best = float("inf")
            for _ in range(1 if smoke else 3):
                t0 = time.perf_counter()
                model.sample(ca, restype, segment, torch.arange(B), steps=steps, pack=pack)
                best = min(best, time.perf_counter() - t0)
            return best

        t_full, t_nopack = timed(True), timed(False)
    finally:
        torch.set_num_threads(old)
    out["sample_rf_per_s_1thread"] = rf / t_full
    out["sample_rf_per_s_1thread_no_repair"] = rf / t_nopack
    out["time_share_repair"] = max(0.0, 1.0 - t_nopack / t_full)

    n, mib = (512, 64) if smoke else (2048, 512)
    ncpu = os.cpu_count() or 1
    out["cpu_matmul_gflops_1thread"] = measure_matmul(n, 1)
    out["cpu_matmul_gflops_all"] = measure_matmul(n, ncpu)
    out["cpu_copy_gbs_1thread"] = measure_copy(mib, 1)
    out["cpu_copy_gbs_all"] = measure_copy(mib, ncpu)
    out["cpu_threads"] = ncpu
    # The achieved FLOP/s of the sampler on one thread (Linear + the estimated rest).
    out["sample_gflops_1thread"] = out["flops_total"] * out["sample_rf_per_s_1thread_no_repair"] / 1e9

    f, b, bu = out["flops_total"], out["bytes_compulsory"], out["bytes_compulsory"] + act_bytes
    out["floor_cpu_core_compute"] = out["cpu_matmul_gflops_1thread"] * 1e9 / f
    out["floor_cpu_core_bandwidth"] = out["cpu_copy_gbs_1thread"] * 1e9 / b
    out["floor_cpu_core_bandwidth_unfused"] = out["cpu_copy_gbs_1thread"] * 1e9 / bu
    out["floor_cpu_core"] = min(out["floor_cpu_core_compute"], out["floor_cpu_core_bandwidth_unfused"])
    out["floor_cpu_all"] = min(out["cpu_matmul_gflops_all"] * 1e9 / f, out["cpu_copy_gbs_all"] * 1e9 / bu)
    out["floor_h100_fp32"] = min(H100_SXM["fp32_flops"] / f, H100_SXM["hbm_bytes_per_s"] / b)
    out["floor_h100_tf32"] = min(H100_SXM["tf32_flops"] / f, H100_SXM["hbm_bytes_per_s"] / b)
    out["floor_h100_fp32_unfused"] = min(H100_SXM["fp32_flops"] / f, H100_SXM["hbm_bytes_per_s"] / bu)
    out["floor_h100_tf32_unfused"] = min(H100_SXM["tf32_flops"] / f, H100_SXM["hbm_bytes_per_s"] / bu)
    out["h100_fp32_flops"] = H100_SXM["fp32_flops"]
    out["h100_tf32_flops"] = H100_SXM["tf32_flops"]
    out["h100_hbm_bytes_per_s"] = H100_SXM["hbm_bytes_per_s"]
    return out


UNITS = {  # metric prefix → unit
    "flops_": "FLOP/residue-frame", "bytes_": "B/residue-frame", "act_bytes_": "B/residue-frame",
    "intensity_": "FLOP/B", "floor_": "residue-frames/s", "sample_rf_": "residue-frames/s",
    "cpu_matmul_": "GFLOP/s", "cpu_copy_": "GB/s", "time_share_": "fraction", "sample_gflops": "GFLOP/s",
    "h100_hbm": "B/s", "h100_": "FLOP/s", "param_bytes": "B", "heavy_atoms": "atoms/residue",
}


def unit_of(metric: str) -> str:
    for prefix, unit in UNITS.items():
        if metric.startswith(prefix):
            return unit
    return ""


def to_rows(out: dict) -> list[tuple]:
    """(benchmark, configuration, metric, value, unit) rows of :func:`analyse`'s result."""
    conf = (f"ldb-default|L={out['residues']}|B={out['frames']}|k={out['knn']}|steps={out['steps']}"
            f"|latent={out['latent_dim']}|codes={out['n_codes']}")
    skip = {"frames", "residues", "steps", "knn", "latent_dim", "n_codes"}
    return [("roofline", conf, k, float(v), unit_of(k)) for k, v in out.items() if k not in skip]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=64, help="frames per sample call (default 64 = backmap's batch)")
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the model's)")
    ap.add_argument("--smoke", action="store_true", help="small peak measurements, 8 frames")
    ap.add_argument("--results", default=str(RESULTS))
    args = ap.parse_args(argv)
    out = analyse(8 if args.smoke else args.frames, args.steps, args.smoke)
    rows = to_rows(out)
    append_rows(rows, args.results)
    for _, _, k, v, unit in rows:
        print(f"{k:36s} {v:14.6g} {unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
