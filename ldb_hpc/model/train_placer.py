"""``ldb-hpc train placement --cg com|martini3``: train a :class:`~ldb_hpc.model.placement.BeadPlacer`.

Batches are the C-alpha model's (:class:`~ldb_hpc.model.train.WindowSampler`: windows of real chains), coarsened
on the fly with the mapping (ldb_hpc.chem.cg_mappings, over the atoms present); the loss is the mean squared CA
error of every round (the last one counting most) plus the error of consecutive CA–CA distances, so the trace the
CA model receives keeps its 3.8 Å links. Resumable from OUT/train_state.pt; the placer goes to OUT/model.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import torch

from ldb_hpc.chem.cg_mappings import mapping
from ldb_hpc.model.placement import BeadPlacer, PlacerConfig, save_placer
from ldb_hpc.model.train import TrainResult, optimizer_state, start_run


def placement_loss(placer: BeadPlacer, pos, mask, restype, segment) -> dict:
    """pos [B, L, 14, 3] Å, mask [B, L, 14] → {'loss', 'ca_rmsd' (last round, Å), 'link_err' (Å)}."""
    cg = mapping(placer.cfg.cg)
    beads, placed = cg.beads(pos, mask, restype)  # [B, L, NB, 3], [B, L, NB]
    ok = mask[..., 1] & placed[..., 0]  # the CA and the first bead exist
    bead_mask = placed[0] & torch.as_tensor(cg.bead_mask(restype.cpu().numpy()), device=pos.device)
    rounds = placer(beads, bead_mask, restype, segment, all_rounds=True)
    true = pos[..., 1, :]
    okf = ok.to(pos.dtype)
    n = okf.sum().clamp_min(1.0)
    mse = [(((ca - true) ** 2).sum(-1) * okf).sum() / n for ca in rounds]
    weights = [0.5 ** (len(rounds) - 1 - k) for k in range(len(rounds))]
    last = rounds[-1]
    link = ok[:, 1:] & ok[:, :-1] & (segment[1:] == segment[:-1])
    d_pred = (last[:, 1:] - last[:, :-1]).norm(dim=-1)
    d_true = (true[:, 1:] - true[:, :-1]).norm(dim=-1)
    lf = link.to(pos.dtype)
    link_err = (((d_pred - d_true) ** 2) * lf).sum() / lf.sum().clamp_min(1.0)
    loss = sum(w * m for w, m in zip(weights, mse)) + link_err
    return {"loss": loss, "ca_rmsd": mse[-1].detach().sqrt(), "link_err": link_err.detach().sqrt()}


@torch.no_grad()
def validate_placer(placer: BeadPlacer, structures) -> dict:
    """Mean CA RMSD (Å) over validation structures (pos [1, L, 14, 3], mask [1, L, 14], restype, segment)."""
    placer.eval()
    out = [float(placement_loss(placer, *s)["ca_rmsd"]) for s in structures]
    placer.train()
    return {"valid_ca_rmsd": float(np.mean(out))}


def train_placer(cfg, data, collectives=None, device="cpu", valid=None) -> TrainResult:
    """Run (or resume) placement training for ``cfg`` (a TrainConfig with ``cg``); see the module docstring."""
    coll, rank, world, device, sampler, out = start_run(cfg, data, collectives, device)
    state_file = out / "train_state.pt"
    torch.manual_seed(cfg.seed)
    placer = BeadPlacer(PlacerConfig(cg=cfg.cg, **(cfg.architecture or {}))).to(device)
    params = list(placer.parameters())
    opt, sched, start, history = optimizer_state(cfg, placer, params, state_file, device, rank)
    with torch.no_grad():
        coll.broadcast([t.detach() for t in placer.parameters()], src=0)
    valid = [tuple(t.to(device) for t in s) for s in valid or []] if rank == 0 else []
    t0, residues, last = time.perf_counter(), 0, {}
    for step in range(start, cfg.steps):
        pos, mask, rt, seg = (t.to(device) for t in sampler.batch(step))
        losses = placement_loss(placer, pos, mask, rt, seg)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        coll.all_reduce_mean([p.grad for p in params if p.grad is not None])
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        residues += pos.shape[1] * world
        if rank == 0 and ((step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps):
            last = {k: round(float(v.detach()), 4) for k, v in losses.items()}
            rate = residues / (time.perf_counter() - t0)
            print(f"[placement {cfg.cg}] step {step + 1}/{cfg.steps} "
                  + " ".join(f"{k} {v:.4f}" for k, v in last.items())
                  + f" lr {sched.get_last_lr()[0]:.2e} {rate:,.0f} residues/s", file=sys.stderr, flush=True)
            history.append({"step": step + 1, **last, "residues_per_s": round(rate, 1)})
        if rank == 0 and valid and ((step + 1) % cfg.valid_every == 0 or step + 1 == cfg.steps):
            v = validate_placer(placer, valid)
            print(f"[placement {cfg.cg}] step {step + 1} validation {v}", file=sys.stderr, flush=True)
            history.append({"step": step + 1, **v})
        if rank == 0 and ((step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps):
            tmp = state_file.with_suffix(".tmp")
            torch.save({"model": placer.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "step": step + 1, "history": history}, tmp)
            os.replace(tmp, state_file)
            save_placer(placer, out / "model", ca_model=cfg.init or "ldb-default",
                        metadata={"stage": "placement", "step": step + 1, "history": history[-20:]})
    if rank == 0:
        (out / "history.json").write_text(json.dumps(history, indent=1) + "\n")
    return TrainResult(metrics=last, model=placer, step=max(start, cfg.steps), rank=rank)
