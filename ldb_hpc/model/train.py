"""Training of the two LDB stages on a ``ldb-hpc prepare`` HDF5 (data-parallel with torch.distributed).

A batch is one "pseudo-protein": several windows of consecutive residues from random training chains, each
moved 1000 Å away from the others and given its own segment ids, so the k-NN graph never links windows and
one batched code path serves training and inference. Every rank draws its own windows (seeded by rank);
gradients are averaged with all_reduce (gloo on CPU, nccl on GPU); rank 0 logs, validates and checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from ldb_hpc.errors import InputError


@dataclass
class TrainConfig:
    stage: str  # "tokenizer" | "diffusion" | "refine"
    data: str
    out: str
    init: str | None = None  # stage 2: the tokenizer checkpoint
    steps: int = 3000
    windows: int = 8
    crop: int = 96
    lr: float = 2e-3
    seed: int = 0
    log_every: int = 50
    save_every: int = 250
    valid_every: int = 500
    valid: str | None = None  # folder of validation structures (valid/pfam40)
    threads: int | None = None
    clash_weight: float = 1.0
    latent_dim: int | None = None  # tokenizer: latent channels per residue (default: LDBConfig's)
    ensemble_temperature: float | None = None  # stored in the model: the default temperature of --samples > 1


# ----------------------------------------------------------------------------------------------------------
# distributed


def init_distributed() -> tuple[int, int]:
    """(rank, world) from torchrun, srun or mpiexec environments; initialises torch.distributed when world > 1."""
    env = os.environ
    rank = int(env.get("RANK", env.get("SLURM_PROCID", env.get("PMI_RANK", env.get("OMPI_COMM_WORLD_RANK", 0)))))
    world = int(env.get("WORLD_SIZE", env.get("SLURM_NTASKS", env.get("PMI_SIZE",
                                                                      env.get("OMPI_COMM_WORLD_SIZE", 1)))))
    if world > 1 and not torch.distributed.is_initialized():
        env.setdefault("MASTER_ADDR", "127.0.0.1")
        env.setdefault("MASTER_PORT", "29533")
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend, rank=rank, world_size=world)
    return rank, world


def _all_reduce_mean(tensors, world: int) -> None:
    if world > 1:
        for t in tensors:
            torch.distributed.all_reduce(t)
            t /= world


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(t)
    return t


# ----------------------------------------------------------------------------------------------------------
# data


class WindowSampler:
    """Random windows of consecutive residues from the chains of a training HDF5, packed into one pseudo-protein."""

    def __init__(self, path: str, windows: int, crop: int, seed: int):
        if not os.path.exists(path):
            raise InputError(f"training data not found: {path} (make it with `ldb-hpc prepare`)")
        try:
            with h5py.File(path, "r") as f:
                self.pos = f["positions"][:]
                self.mask = f["mask"][:].astype(bool)
                self.restype = f["restype"][:].astype(np.int64)
                self.segment = f["segment"][:].astype(np.int64)
                offset = f["chains/offset"][:].astype(np.int64)
                count = f["chains/count"][:].astype(np.int64)
        except (OSError, KeyError) as exc:
            raise InputError(f"not a training file from `ldb-hpc prepare`: {path} ({exc})") from None
        keep = count >= 8
        self.offset, self.count = offset[keep], count[keep]
        self.weights = self.count / self.count.sum()
        self.windows, self.crop = windows, crop
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return int(self.count.sum())

    def next(self):
        """(pos [1, N, 14, 3] Å, mask [1, N, 14], restype [N], segment [N])."""
        chains = self.rng.choice(len(self.offset), size=self.windows, p=self.weights)
        pos, mask, rt, seg = [], [], [], []
        next_seg = 0
        for w, c in enumerate(chains):
            n = int(self.count[c])
            length = min(self.crop, n)
            start = int(self.offset[c]) + int(self.rng.integers(0, n - length + 1))
            sl = slice(start, start + length)
            p = self.pos[sl].astype(np.float32)
            m = self.mask[sl]
            centre = p[:, 1].mean(0)
            p = np.where(m[..., None], p - centre + np.array([1000.0 * w, 0.0, 0.0], np.float32), 0.0)
            s = self.segment[sl]
            s = np.cumsum(np.r_[True, s[1:] != s[:-1]]) - 1 + next_seg
            next_seg = int(s[-1]) + 1
            pos.append(p), mask.append(m), rt.append(self.restype[sl]), seg.append(s)
        return (torch.from_numpy(np.concatenate(pos))[None], torch.from_numpy(np.concatenate(mask))[None],
                torch.from_numpy(np.concatenate(rt)), torch.from_numpy(np.concatenate(seg)))


def load_validation(folder: str | None):
    """Validation structures (atom14, first model) from a folder of PDB/mmCIF files: list of tuples."""
    if not folder:
        return []
    from ldb_hpc.io.structure import read_structure
    from ldb_hpc.io.training import collect_structure_files

    out = []
    for path in collect_structure_files([folder]):
        prot = read_structure(path, keep_unknown=True)[0]
        out.append((torch.from_numpy(prot.positions)[None], torch.from_numpy(prot.mask)[None],
                    torch.from_numpy(prot.residues.restype), torch.from_numpy(prot.residues.segment)))
    return out


@torch.no_grad()
def validate(model, structures, stage: str) -> dict:
    """Mean heavy-atom RMSD over validation structures: the tokenizer round trip (stages 1 and 3) and the
    default single sample (stages 2 and 3)."""
    from ldb_hpc.chem.residues import SLOT_MASK

    model.eval()
    rmsd = {"valid_rmsd": [], "valid_roundtrip": []}
    for pos, mask, rt, seg in structures:
        m = mask & torch.as_tensor(SLOT_MASK)[rt]
        runs = []
        if stage != "diffusion":
            runs.append(("valid_roundtrip", model.reconstruct(pos, mask, rt, seg)))
        if stage != "tokenizer":
            runs.append(("valid_rmsd", model.sample(pos[..., 1, :], rt, seg, torch.zeros(1, dtype=torch.long))[:, 0]))
        for key, x in runs:
            rmsd[key].append(float((((x - pos) ** 2).sum(-1)[m]).mean().sqrt()))
    model.train()
    if stage == "tokenizer":  # the round trip is stage 1's validation figure
        rmsd["valid_rmsd"] = rmsd.pop("valid_roundtrip")
    return {k: float(np.mean(v)) for k, v in rmsd.items() if v}


# ----------------------------------------------------------------------------------------------------------
# loop


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) one training stage; returns the final metrics. Checkpoints go to cfg.out."""
    from ldb_hpc.model.checkpoint import load_model, save_model
    from ldb_hpc.model.ldb import LDBModel

    rank, world = init_distributed()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + 1000 * rank)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    state_file = out / "train_state.pt"

    if cfg.stage in ("diffusion", "refine"):
        if not cfg.init:
            what = "TOKENIZER_DIR (the stage-1" if cfg.stage == "diffusion" else "DIFFUSION_DIR (the stage-2"
            raise InputError(f"train {cfg.stage} needs --init {what} checkpoint)")
        model = load_model(cfg.init)
        if cfg.stage == "refine":
            model.add_sample_decoder()
        model.train()
        learn = ("denoiser.",) if cfg.stage == "diffusion" else ("sample_decoder.", "sample_encoder.", "sample_context.")
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(learn))
    else:
        from ldb_hpc.model.ldb import LDBConfig

        model = LDBModel(LDBConfig(**({"latent_dim": cfg.latent_dim} if cfg.latent_dim else {})))
        for name, p in model.named_parameters():
            p.requires_grad_(not name.startswith("denoiser."))
    if cfg.ensemble_temperature is not None:
        model.cfg.temperature = float(cfg.ensemble_temperature)
    model.vq.all_reduce_fn = _all_reduce_sum
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    warmup = max(1, cfg.steps // 50)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg.steps))) + 0.02)
    data = WindowSampler(cfg.data, cfg.windows, cfg.crop, cfg.seed + 7919 * rank)
    start = 0
    history = []
    if state_file.exists():
        st = torch.load(state_file, weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        data.rng = st["rng"][rank] if isinstance(st["rng"], list) and len(st["rng"]) > rank else data.rng
        start, history = st["step"], st.get("history", [])
        if rank == 0:
            print(f"resuming {cfg.stage} at step {start}", file=sys.stderr)
    elif cfg.stage == "diffusion":
        _latent_stats(model, data, rank, world)

    valid = load_validation(cfg.valid) if rank == 0 else []
    t0, residues, last = time.perf_counter(), 0, {}
    for step in range(start, cfg.steps):
        pos, mask, rt, seg = data.next()
        if cfg.stage == "tokenizer":
            losses = model.tokenizer_loss(pos, mask, rt, seg, clash_weight=cfg.clash_weight)
        elif cfg.stage == "refine":
            losses = model.refine_loss(pos, mask, rt, seg)
        else:
            losses = model.diffusion_loss(pos, mask, rt, seg)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        _all_reduce_mean([p.grad for p in params if p.grad is not None], world)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        residues += pos.shape[1] * world
        if rank == 0 and ((step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps):
            rate = residues / (time.perf_counter() - t0)
            last = {k: round(float(v.detach()), 4) for k, v in losses.items() if torch.is_tensor(v) and v.dim() == 0}
            print(f"[{cfg.stage}] step {step + 1}/{cfg.steps} " + " ".join(f"{k} {v:.4f}" for k, v in last.items())
                  + f" lr {sched.get_last_lr()[0]:.2e} {rate:,.0f} residues/s", file=sys.stderr, flush=True)
            history.append({"step": step + 1, **last, "residues_per_s": round(rate, 1)})
        if rank == 0 and valid and ((step + 1) % cfg.valid_every == 0 or step + 1 == cfg.steps):
            v = validate(model, valid, cfg.stage)
            print(f"[{cfg.stage}] step {step + 1} validation {v}", file=sys.stderr, flush=True)
            history.append({"step": step + 1, **v})
        if rank == 0 and ((step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps):
            tmp = state_file.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "rng": [data.rng], "step": step + 1, "history": history}, tmp)
            os.replace(tmp, state_file)
            save_model(model, out / "model", metadata={"stage": cfg.stage, "step": step + 1,
                                                        "history": history[-20:]})
    if rank == 0:
        (out / "history.json").write_text(json.dumps(history, indent=1) + "\n")
    return last


@torch.no_grad()
def _latent_stats(model, data: WindowSampler, rank: int, world: int, batches: int = 30) -> None:
    """Per-channel mean/std of the tokenizer's continuous latents (the diffusion works on normalised latents)."""
    zs = []
    for _ in range(batches):
        pos, mask, rt, seg = data.next()
        z, _, _ = model.encode_latents(pos, mask, rt, seg)
        zs.append(z[mask[..., 1]])
    z = torch.cat(zs)
    stats = torch.stack([z.sum(0), (z ** 2).sum(0), torch.full_like(z[0], z.shape[0])])
    _all_reduce_sum(stats)
    mean = stats[0] / stats[2]
    std = (stats[1] / stats[2] - mean ** 2).clamp_min(1e-8).sqrt()
    model.latent_mean.copy_(mean)
    model.latent_std.copy_(std)
    if rank == 0:
        print(f"latent mean {mean.tolist()} std {std.tolist()}", file=sys.stderr)
