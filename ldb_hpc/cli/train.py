"""``ldb-hpc train tokenizer|diffusion|refine|placement``: train the LDB stages and the CA placers of other
coarse-grained mappings (data-parallel under torchrun/srun/mpiexec, set up by ldb_hpc.runtime.train_setup)."""

from __future__ import annotations

import argparse

from ldb_hpc.engine.devices import DEVICE_HELP
from ldb_hpc.model.stages import Stage

EPILOG = """examples:
  ldb-hpc prepare ../shared/data/train -o train.h5 --manifest ../shared/data/MANIFEST.tsv
  ldb-hpc train tokenizer --data train.h5 --out runs/tok --steps 3000 --valid ../shared/data/valid/pfam40
  ldb-hpc train diffusion --data train.h5 --init runs/tok/model --out runs/diff --steps 3000
  ldb-hpc train refine --data train.h5 --init runs/diff/model --out runs/refine --steps 3000 --lr 5e-4
  ldb-hpc train placement --cg com --data train.h5 --out runs/place-com --steps 6000   # CAs from COM beads
  torchrun --nproc-per-node 2 -m ldb_hpc train tokenizer --data train.h5 --out runs/tok   # data-parallel
  mpiexec -n 4 ldb-hpc train tokenizer --data train.h5 --out runs/tok --split-batch --windows 8
  srun -n 8 ldb-hpc train tokenizer --data train.h5 --out runs/tok --device cuda            # on SLURM
Rerunning the same command resumes from OUT/train_state.pt; the model is written to OUT/model.
Data-parallel ranks start from rank 0's weights and stay identical; by default each rank draws --windows
windows per step (the batch grows with the ranks), with --split-batch they share --windows out.
"""


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train the tokenizer or the latent diffusion model",
                       description="Train one stage of the Latent Diffusion Backmapping model.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=Stage.words())
    p.add_argument("--data", required=True, help="training HDF5 from `ldb-hpc prepare`")
    p.add_argument("--out", required=True, help="run directory (checkpoints, history, the model)")
    p.add_argument("--init", help="diffusion: the tokenizer model directory; refine: the diffusion model directory")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--windows", type=int, default=8, help="chain windows per batch (default 8)")
    p.add_argument("--crop", type=int, default=96, help="residues per window (default 96)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", metavar="DEV",
                   help=f"where each rank trains: {DEVICE_HELP} (default auto)")
    p.add_argument("--split-batch", action="store_true",
                   help="--windows is the global batch, shared out over the ranks (rank r takes windows r, r+N, "
                        "…): N ranks then train as one rank with the same options does")
    p.add_argument("--valid", help="folder of validation structures (e.g. ../shared/data/valid/pfam40), or a "
                        "training-set HDF5 whose chains are the validation structures (e.g. thermal frames)")
    p.add_argument("--valid-every", type=int, default=500)
    p.add_argument("--save-every", type=int, default=250)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--threads", type=int, default=None, help="torch threads per process")
    p.add_argument("--clash-weight", type=float, default=1.0)
    p.add_argument("--latent-dim", type=int, default=None, help="tokenizer: latent channels per residue (default 4)")
    p.add_argument("--ensemble-temperature", type=float, default=None,
                   help="store this sampling temperature in the model as the default for --samples > 1 "
                        "(default: keep the initial model's, 1.0 for a new one)")
    p.add_argument("--sample-extra-layers", type=int, default=0, metavar="N",
                   help="refine: message-passing layers of the sampling encoder beyond the tokenizer's 3 (default 0); "
                        "added layers start as the identity, so a trained --init model can be deepened")
    p.add_argument("--context-extra-layers", type=int, default=0, metavar="N",
                   help="refine: message-passing layers over the sampled codes beyond 2 (default 0)")
    p.add_argument("--ca-noise", type=float, default=0.0, metavar="A",
                   help="refine: Gaussian noise on the input CA trace, its σ drawn per batch from U(0, A) Å, so that "
                        "thermal MD traces are in distribution (default 0)")
    p.add_argument("--cg", default=None, choices=("com", "martini3"),
                   help="placement: the coarse-grained mapping whose beads place the CAs (residue centre of mass or "
                        "Martini 3; ldb_hpc.chem.cg_mappings)")
    p.add_argument("--dim", type=int, default=None, metavar="D",
                   help="placement: width of the placer's message passing (default 96)")
    p.add_argument("--layers", type=int, default=None, metavar="N",
                   help="placement: message-passing layers per round (default 5)")
    p.add_argument("--chi-modes", action="store_true",
                   help="refine: add a head that classifies each residue's χ1 well (g+, t, g−) and train it")
    p.add_argument("--chi-mode-p", type=float, default=None, metavar="P",
                   help="store in the model: build χ1 in the head's well wherever the head is at least P sure "
                        "(1 = never; default: keep the initial model's)")
    p.add_argument("--extra-data", default=None, metavar="H5",
                   help="a second training set in the same layout (e.g. thermal MD frames from "
                        "scripts/thermal_frames.py); each batch takes --extra-windows windows from it")
    p.add_argument("--extra-windows", type=int, default=0, metavar="N",
                   help="windows per batch from --extra-data, beside the --windows from --data (default 0)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ldb_hpc.errors import InputError
    from ldb_hpc.model.train import TrainConfig
    from ldb_hpc.runtime.train_setup import run_training

    if args.ensemble_temperature is not None and not (0.0 <= args.ensemble_temperature <= 10.0):
        raise InputError(f"--ensemble-temperature must be between 0 and 10, got {args.ensemble_temperature}")
    if args.latent_dim is not None and args.latent_dim < 1:
        raise InputError("--latent-dim must be at least 1")
    for name in ("steps", "windows", "crop", "valid_every", "save_every", "log_every"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1")
    if args.seed < 0:
        raise InputError("--seed must be 0 or more")
    if args.sample_extra_layers < 0 or args.context_extra_layers < 0:
        raise InputError("--sample-extra-layers and --context-extra-layers must be 0 or more")
    if not (0.0 <= args.ca_noise <= 2.0):
        raise InputError(f"--ca-noise must be between 0 and 2 Å, got {args.ca_noise}")
    if args.chi_mode_p is not None and not (0.0 < args.chi_mode_p <= 1.0):
        raise InputError(f"--chi-mode-p must be in (0, 1], got {args.chi_mode_p}")
    stage = Stage.parse(args.stage)
    if stage is not Stage.REFINE and (args.sample_extra_layers or args.context_extra_layers or args.ca_noise
                                      or args.chi_modes or args.chi_mode_p is not None):
        raise InputError("--sample-extra-layers, --context-extra-layers, --ca-noise, --chi-modes and --chi-mode-p "
                         "apply to `train refine` only")
    if (stage is Stage.PLACEMENT) != (args.cg is not None):
        raise InputError("`train placement` needs --cg com|martini3, and --cg applies to it only")
    if (args.extra_data is None) != (args.extra_windows == 0) or args.extra_windows < 0:
        raise InputError("--extra-data and --extra-windows (at least 1) go together")
    if args.extra_data is not None and stage is Stage.PLACEMENT:
        raise InputError("--extra-data applies to the LDB stages (tokenizer, diffusion, refine), not placement")
    placer = {k: v for k, v in (("dim", args.dim), ("layers", args.layers)) if v is not None}
    if any(v < 1 for v in placer.values()) or (placer and stage is not Stage.PLACEMENT):
        raise InputError("--dim and --layers (at least 1) apply to `train placement` only")
    cfg = TrainConfig(stage=stage, data=args.data, out=args.out, init=args.init, steps=args.steps,
                      windows=args.windows, crop=args.crop, lr=args.lr, seed=args.seed, valid=args.valid,
                      valid_every=args.valid_every, save_every=args.save_every, log_every=args.log_every,
                      threads=args.threads, clash_weight=args.clash_weight, latent_dim=args.latent_dim,
                      ensemble_temperature=args.ensemble_temperature, split_batch=args.split_batch,
                      sample_extra_layers=args.sample_extra_layers, context_extra_layers=args.context_extra_layers,
                      ca_noise=args.ca_noise, chi_modes=args.chi_modes, chi_mode_p=args.chi_mode_p,
                      cg=args.cg or "ca", architecture=placer or None, extra_data=args.extra_data,
                      extra_windows=args.extra_windows)
    result = run_training(cfg, device=args.device)
    if result.rank == 0:
        print(f"trained {stage.value}: {result.metrics} -> {args.out}/model")
    return 0
