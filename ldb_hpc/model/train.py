"""Training of the LDB stages on a ``ldb-hpc prepare`` training set, data-parallel through injected collectives.

A batch is one "pseudo-protein": several windows of consecutive residues from random training chains, each
moved 1000 Å away from the others and given its own segment ids, so the k-NN graph never links windows and
one batched code path serves training and inference (the samplers: :mod:`ldb_hpc.model.train_data`). The training
set comes in opened (:class:`TrainingData`: the runtime reads it with ``ldb_hpc.io.training_set``); this module
never opens a file of it.

Data parallelism never branches on rank here: :func:`train` takes a collectives object (``rank``, ``world``,
``all_reduce_sum``, ``all_reduce_mean``, ``broadcast``; :class:`SerialCollectives` by default) and the
runtime (``ldb_hpc.runtime.train_setup``) hands it one backed by torch.distributed. Replicas stay bitwise
identical: every rank builds the model from ``cfg.seed`` and takes rank 0's parameters and buffers (codebook
and EMA statistics included) before the first step; gradients are averaged; the VQ sums its EMA statistics
over ranks and restarts dead codes at rank 0's draw. Each rank draws its own windows.

Random draws are keyed, not streamed: the windows of step s on rank r come from a generator seeded with
(seed, s, r) and torch is reseeded from (seed, s, r) before the step, so the state file holds no random
state (it loads with ``weights_only=True``) and a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ldb_hpc.errors import InputError
from ldb_hpc.model.stages import Stage
from ldb_hpc.model.train_data import (
    STATS_STREAM,
    TORCH_STREAM,
    MixedSampler,
    TrainingData,
    WindowSampler,
    keyed_seed,
)


@dataclass
class TrainConfig:
    stage: Stage  # a CLI word or stored string is parsed into the enum on construction
    data: str  # the training set's path (the runtime opens it; train() receives it opened)
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
    split_batch: bool = False  # `windows` is the global batch, shared out over the ranks (see WindowSampler)
    architecture: dict | None = None  # tokenizer: LDBConfig fields of the new model (e.g. a small one)
    sample_extra_layers: int = 0  # refine: message-passing layers of the sampling encoder beyond the tokenizer's
    context_extra_layers: int = 0  # refine: gated message-passing layers over the sampled codes beyond 2
    ca_noise: float = 0.0  # refine: Gaussian noise on the input CA trace, σ ~ U(0, ca_noise) Å per batch
    chi_modes: bool = False  # refine: add (and train) the χ1 mode head
    chi_mode_p: float | None = None  # stored in the model: build χ1 in the head's well where it is this sure
    cg: str = "ca"  # placement: the coarse-grained mapping whose beads the placer reads (com, martini3)
    extra_data: str | None = None  # a second training set (e.g. thermal MD frames), read like data
    extra_windows: int = 0  # windows per batch from extra_data, beside the `windows` from data

    def __post_init__(self):
        self.stage = Stage.parse(self.stage)


@dataclass
class TrainResult:
    metrics: dict  # the last logged losses (rank 0; empty elsewhere and when nothing was left to do)
    model: torch.nn.Module  # this rank's replica after the last step
    step: int
    rank: int


class SerialCollectives:
    """The collectives of one process: identities. Tensors are reduced in place and returned."""

    rank = 0
    world = 1

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def all_reduce_mean(self, tensors: list) -> list:
        return tensors

    def broadcast(self, tensors: list, src: int = 0) -> list:
        return tensors


@torch.no_grad()
def validate(model, structures, stage: Stage) -> dict:
    """Mean heavy-atom RMSD over validation structures: the tokenizer round trip (stages 1 and 3) and the
    default single sample (stages 2 and 3)."""
    from ldb_hpc.chem.residues import SLOT_MASK

    model.eval()
    rmsd = {"valid_rmsd": [], "valid_roundtrip": []}
    for pos, mask, rt, seg in structures:
        m = mask & torch.as_tensor(SLOT_MASK)[rt]
        runs = []
        if stage is not Stage.DIFFUSION:
            runs.append(("valid_roundtrip", model.reconstruct(pos, mask, rt, seg)))
        if stage is not Stage.TOKENIZER:
            runs.append(("valid_rmsd", model.sample(pos[..., 1, :], rt, seg, torch.zeros(1, dtype=torch.long))[:, 0]))
        for key, x in runs:
            rmsd[key].append(float((((x - pos) ** 2).sum(-1)[m]).mean().sqrt()))
    model.train()
    if stage is Stage.TOKENIZER:  # the round trip is stage 1's validation figure
        rmsd["valid_rmsd"] = rmsd.pop("valid_roundtrip")
    return {k: float(np.mean(v)) for k, v in rmsd.items() if v}


# ----------------------------------------------------------------------------------------------------------
# loop


def _build_model(cfg: TrainConfig):
    """The stage's model (new, or from cfg.init) with requires_grad set on what this stage learns."""
    from ldb_hpc.model.checkpoint import load_checkpoint
    from ldb_hpc.model.ldb import LDBConfig, LDBModel

    if cfg.stage is not Stage.TOKENIZER:
        if not cfg.init:
            what = "TOKENIZER_DIR (the stage-1" if cfg.stage is Stage.DIFFUSION else "DIFFUSION_DIR (the stage-2"
            raise InputError(f"train {cfg.stage.value} needs --init {what} checkpoint)")
        model = load_checkpoint(cfg.init)
        if cfg.stage is Stage.REFINE:
            model.add_sample_decoder(cfg.sample_extra_layers, cfg.context_extra_layers)
            if cfg.chi_modes:
                model.add_chi_modes()
        learn = (("denoiser.",) if cfg.stage is Stage.DIFFUSION
                 else ("sample_decoder.", "sample_encoder.", "sample_context.", "sample_chi_head."))
    else:
        arch = dict(cfg.architecture or {}) | ({"latent_dim": cfg.latent_dim} if cfg.latent_dim else {})
        model = LDBModel(LDBConfig(**arch))
        learn = None
    model.train()
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(learn) if learn else not name.startswith("denoiser."))
    if cfg.ensemble_temperature is not None:
        model.cfg.temperature = float(cfg.ensemble_temperature)
    if cfg.chi_mode_p is not None:
        model.cfg.chi_mode_p = float(cfg.chi_mode_p)
    return model


def load_train_state(path: Path, device) -> dict:
    """A training state file (plain tensors and values only: nothing pickled is loaded)."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise InputError(f"cannot resume from {path}: it does not load as plain tensors and values (written by an "
                         f"older ldb-hpc with pickled random state?); remove it to start over ({exc})") from None


def start_run(cfg: TrainConfig, data: TrainingData, collectives, device, extra: TrainingData | None = None):
    """What every training loop starts from: (collectives, rank, world, device, this rank's sampler, the run
    folder, created). The sampler is a WindowSampler of ``data``, or with ``extra`` (cfg.extra_windows > 0) a
    MixedSampler of both."""
    coll = collectives or SerialCollectives()
    rank, world, device = coll.rank, coll.world, torch.device(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    sampler = WindowSampler(data, cfg.windows, cfg.crop, cfg.seed, rank, world, cfg.split_batch)
    if (extra is not None) != (cfg.extra_windows > 0):
        raise InputError("a second training set needs extra windows per batch, and extra windows need the set")
    if extra is not None:
        sampler = MixedSampler(sampler, WindowSampler(extra, cfg.extra_windows, cfg.crop, cfg.seed, rank, world,
                                                      cfg.split_batch))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    return coll, rank, world, device, sampler, out


def optimizer_state(cfg: TrainConfig, model, params: list, state_file: Path, device, rank: int):
    """AdamW with warm-up then cosine decay over cfg.steps, and where a run left off: (optimizer, scheduler, first
    step, history), resumed from ``state_file`` when it exists (the model's weights too)."""
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    warmup = max(1, cfg.steps // 50)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg.steps))) + 0.02)
    start, history = 0, []
    if state_file.exists():
        st = load_train_state(state_file, device)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        start, history = int(st["step"]), list(st.get("history", []))
        if rank == 0:
            print(f"resuming {cfg.stage.value} at step {start}", file=sys.stderr)
    return opt, sched, start, history


def _average_gradients(params: list, coll) -> None:
    """Mean gradient over the ranks in one all-reduce. A parameter without a gradient on every rank keeps none
    (as in a serial step); one with a gradient on some ranks only counts zeros on the others."""
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    had = torch.tensor([p.grad is not None for p in params], dtype=grads[0].dtype, device=grads[0].device)
    coll.all_reduce_mean([*grads, had])
    for p, g, h in zip(params, grads, had.tolist()):
        p.grad = g if h > 0 else None


def train(cfg: TrainConfig, data: TrainingData, collectives=None, device: str | torch.device = "cpu",
          valid: list | None = None, extra: TrainingData | None = None) -> TrainResult:
    """Run (or resume) one training stage on this rank's ``device``; checkpoints go to cfg.out (rank 0).

    ``data``: the training set of cfg.data, opened by the caller (the same arrays on every rank).
    ``collectives``: ``rank``, ``world``, ``all_reduce_sum(t) -> t``, ``all_reduce_mean(tensors)``,
    ``broadcast(tensors, src=0)`` (in place); :class:`SerialCollectives` when None. ``valid``: validation
    structures (pos [1, L, 14, 3] Å, mask [1, L, 14], restype [L], segment [L]), evaluated on rank 0 every
    cfg.valid_every steps (the runtime reads them from cfg.valid). ``extra``: the training set of cfg.extra_data,
    opened likewise; cfg.extra_windows of each batch's windows come from it.
    """
    from ldb_hpc.model.checkpoint import save_checkpoint

    coll, rank, world, device, sampler, out = start_run(cfg, data, collectives, device, extra)
    state_file = out / "train_state.pt"

    torch.manual_seed(cfg.seed)  # the same initial model on every rank (rank 0's is broadcast all the same)
    model = _build_model(cfg).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt, sched, start, history = optimizer_state(cfg, model, params, state_file, device, rank)
    with torch.no_grad():
        coll.broadcast([t.detach() for t in (*model.parameters(), *model.buffers())], src=0)
    serial_fns = model.vq.all_reduce_fn, model.vq.broadcast_fn
    model.vq.all_reduce_fn = coll.all_reduce_sum
    model.vq.broadcast_fn = lambda t: coll.broadcast([t], src=0)[0]
    if start == 0 and cfg.stage is Stage.DIFFUSION:
        _latent_stats(model, sampler, coll, device)

    valid = [tuple(t.to(device) for t in s) for s in valid or []] if rank == 0 else []
    t0, residues, last = time.perf_counter(), 0, {}
    for step in range(start, cfg.steps):
        torch.manual_seed(int(keyed_seed(cfg.seed, TORCH_STREAM, step, rank).generate_state(1, np.uint64)[0] >> 1))
        pos, mask, rt, seg = (t.to(device) for t in sampler.batch(step))
        if cfg.stage is Stage.TOKENIZER:
            losses = model.tokenizer_loss(pos, mask, rt, seg, clash_weight=cfg.clash_weight)
        elif cfg.stage is Stage.REFINE:
            losses = model.refine_loss(pos, mask, rt, seg, ca_noise=cfg.ca_noise)
        else:
            losses = model.diffusion_loss(pos, mask, rt, seg)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        _average_gradients(params, coll)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        residues += pos.shape[1] * world
        if rank == 0 and ((step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps):
            rate = residues / (time.perf_counter() - t0)
            last = {k: round(float(v.detach()), 4) for k, v in losses.items() if torch.is_tensor(v) and v.dim() == 0}
            print(f"[{cfg.stage.value}] step {step + 1}/{cfg.steps} "
                  + " ".join(f"{k} {v:.4f}" for k, v in last.items())
                  + f" lr {sched.get_last_lr()[0]:.2e} {rate:,.0f} residues/s", file=sys.stderr, flush=True)
            history.append({"step": step + 1, **last, "residues_per_s": round(rate, 1)})
        if rank == 0 and valid and ((step + 1) % cfg.valid_every == 0 or step + 1 == cfg.steps):
            v = validate(model, valid, cfg.stage)
            print(f"[{cfg.stage.value}] step {step + 1} validation {v}", file=sys.stderr, flush=True)
            history.append({"step": step + 1, **v})
        if rank == 0 and ((step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps):
            tmp = state_file.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "step": step + 1, "history": history,
                        "data": {"seed": cfg.seed, "split_batch": cfg.split_batch, "world": world}}, tmp)
            os.replace(tmp, state_file)
            save_checkpoint(model, out / "model", metadata={"stage": cfg.stage.value, "step": step + 1,
                                                        "history": history[-20:]})
    if rank == 0:
        (out / "history.json").write_text(json.dumps(history, indent=1) + "\n")
    model.vq.all_reduce_fn, model.vq.broadcast_fn = serial_fns  # the replica outlives the process group
    return TrainResult(metrics=last, model=model, step=max(start, cfg.steps), rank=rank)


@torch.no_grad()
def _latent_stats(model, data: WindowSampler, coll, device, batches: int = 30) -> None:
    """Per-channel mean/std of the tokenizer's continuous latents (the diffusion works on normalised latents)."""
    zs = []
    for i in range(batches):
        pos, mask, rt, seg = (t.to(device) for t in data.batch(i, stream=STATS_STREAM))
        z, _, _ = model.encode_latents(pos, mask, rt, seg)
        zs.append(z[mask[..., 1]])
    z = torch.cat(zs)
    stats = torch.stack([z.sum(0), (z ** 2).sum(0), torch.full_like(z[0], z.shape[0])])
    coll.all_reduce_sum(stats)
    mean = stats[0] / stats[2]
    std = (stats[1] / stats[2] - mean ** 2).clamp_min(1e-8).sqrt()
    model.latent_mean.copy_(mean)
    model.latent_std.copy_(std)
    if coll.rank == 0:
        print(f"latent mean {mean.tolist()} std {std.tolist()}", file=sys.stderr)
