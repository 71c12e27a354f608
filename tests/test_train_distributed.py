"""Data-parallel training: launcher detection, replicas that stay identical, 2 ranks = 1 rank, keyed resume.

The 2-rank runs launch ``mpiexec -n 2`` (``LDB_HPC_MPIEXEC``, else the one beside the interpreter) through
subprocess, so one pytest summary line comes back; they are skipped when mpiexec or mpi4py is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from safetensors.torch import load_file
from test_io_structure import feature_pdb
from test_training_set import write_training_set

from ldb_hpc.chem import residues as rc
from ldb_hpc.errors import InputError
from ldb_hpc.io.training_set import read_training_set
from ldb_hpc.model import ldb as ldb_module
from ldb_hpc.model.ldb import LDBConfig, LDBModel
from ldb_hpc.model.networks import VectorQuantizer
from ldb_hpc.model.train import TrainConfig
from ldb_hpc.model.train_data import MixedSampler, WindowSampler
from ldb_hpc.runtime import comm as comm_mod
from ldb_hpc.runtime.train_setup import load_validation, rendezvous, run_training, training_device

MPIEXEC = Path(os.environ.get("LDB_HPC_MPIEXEC") or Path(sys.executable).parent / "mpiexec")
needs_mpi = pytest.mark.skipif(
    not MPIEXEC.exists() or subprocess.run([sys.executable, "-c", "import mpi4py"]).returncode != 0,
    reason="needs mpiexec (LDB_HPC_MPIEXEC) and mpi4py")
LAUNCHER_VARS = tuple(v for pair in comm_mod._LAUNCH_VARS for v in pair) + comm_mod._LOCAL_RANK_VARS + (
    "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "SLURM_NTASKS", "SLURM_PROCID", "LDB_HPC_MPI")
# A tiny model; no latent dropout, so a step's only randomness is the data.
TINY = dict(dim=16, edge_dim=8, layers=1, knn=6, latent_dim=3, n_codes=32, hidden=32, denoiser_hidden=32,
            steps=4, null_latent_p=0.0)
# Each rank's process: run_training, then dump this rank's replica (parameters and buffers).
WORKER = """
import json, sys
from safetensors.torch import save_file
from ldb_hpc.model.train import TrainConfig
from ldb_hpc.runtime.train_setup import run_training
args = json.loads(sys.argv[1])
if args["sealed"]:
    sys.path.insert(0, args["tests"])
    import ldb_hpc.model.ldb, test_train_distributed
    ldb_hpc.model.ldb.featurize = test_train_distributed.sealed_featurize
result = run_training(TrainConfig(**args["cfg"]))
state = {k: v.detach().clone().contiguous() for k, v in result.model.state_dict().items()}
save_file(state, args["dump"] + f"/rank{result.rank}.safetensors")
"""


@pytest.fixture
def no_launcher(monkeypatch):
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def make_training_file(path: Path, lengths=(48, 40)) -> Path:
    """Helix chains whose residue types repeat every 4 residues: every 16-residue window has the same
    composition, so every rank's loss has the same normalisers and averaged gradients equal one rank's."""
    from ldb_hpc.model.ideal import backmap_ideal

    cycle = torch.tensor([rc.RESTYPE_INDEX[n] for n in ("ALA", "LEU", "SER", "LYS")])
    proteins = []
    for chain, L in enumerate(lengths):
        k = torch.arange(L, dtype=torch.float32)
        ang = torch.deg2rad(100.0 * k)
        ca = torch.stack([2.3 * torch.cos(ang), 2.3 * torch.sin(ang), 1.5 * k], -1)
        ca = ca + 0.05 * torch.randn(ca.shape, generator=torch.Generator().manual_seed(chain))
        rt = cycle[torch.arange(L) % 4]
        seg = torch.zeros(L, dtype=torch.long)
        proteins.append((backmap_ideal(ca, rt, seg).numpy(), np.asarray(rc.SLOT_MASK)[rt.numpy()], rt.numpy(),
                         seg.numpy()))
    return write_training_set(path, proteins)  # a file per chain: segment ids 0, 1, ...


def config(data, out, **kw) -> TrainConfig:
    base = dict(stage="tokenizer", data=str(data), out=str(out), steps=3, windows=4, crop=16, lr=2e-3, seed=3,
                log_every=1, save_every=100, threads=1, architecture=TINY)
    return TrainConfig(**(base | kw))


def sealed_featurize(ca, restype, segment, k=16):
    """The featurizer with its shifted node features (residue offsets −2..+2) cut at segment boundaries.

    ``featurize`` masks those shifts only at the ends of the array, so a residue at the end of a training window
    also sees the virtual angles of the window packed after it: one rank's share of a batch then differs from
    the same windows inside the whole batch by more than rounding. Tests that compare 2 ranks with 1 use this.
    """
    from ldb_hpc.model import features

    g = features.featurize(ca, restype, segment, k)
    L = segment.shape[0]
    for j, off in enumerate(features.OFFSETS):
        same = segment[(torch.arange(L) + off).clamp(0, L - 1)] == segment
        g.node[..., rc.NUM_RESTYPES + 6 * j:rc.NUM_RESTYPES + 6 * (j + 1)] *= same[:, None].to(g.node.dtype)
    return g


def run_two_ranks(tmp_path, cfg: TrainConfig, sealed: bool = False) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS
           and not k.startswith(("PMI_", "PMIX_", "OMPI_", "MPI_", "SLURM_", "LDB_HPC_TEST_"))}
    env.update(PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    dump = tmp_path / "dump"
    dump.mkdir()
    args = json.dumps({"cfg": cfg.__dict__, "dump": str(dump), "sealed": sealed, "tests": str(REPO / "tests")})
    proc = subprocess.run([str(MPIEXEC), "-n", "2", sys.executable, "-c", WORKER, args], env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [load_file(dump / f"rank{r}.safetensors") for r in range(2)]


# ----------------------------------------------------------------------------------------------------------
# launcher detection


@pytest.mark.parametrize("env, expected", [
    ({}, ("serial", 0, 1, 0)),
    ({"SLURM_NTASKS": "4", "SLURM_PROCID": "0"}, ("serial", 0, 1, 0)),  # a batch script, outside srun
    ({"WORLD_SIZE": "2", "RANK": "1"}, ("serial", 0, 1, 0)),  # no rendezvous address: not torchrun
    ({"SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "3", "SLURM_LOCALID": "1"}, ("mpi", 3, 4, 1)),
    ({"PMI_SIZE": "2", "PMI_RANK": "1", "MPI_LOCALRANKID": "1"}, ("mpi", 1, 2, 1)),
    ({"OMPI_COMM_WORLD_SIZE": "3", "OMPI_COMM_WORLD_RANK": "2", "PMIX_RANK": "2"}, ("mpi", 2, 3, 0)),
    ({"PMI_SIZE": "2", "PMI_RANK": "1", "LDB_HPC_MPI": "0"}, ("serial", 0, 1, 0)),
    ({"PMI_SIZE": "1", "PMI_RANK": "0"}, ("serial", 0, 1, 0)),
    # srun starting torchrun: torchrun's numbering describes the process.
    ({"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "n0", "MASTER_PORT": "29500",
      "SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1"}, ("torchrun", 5, 8, 1)),
])
def test_detect_launch(no_launcher, env, expected):
    for k, v in env.items():
        no_launcher.setenv(k, v)
    launch = comm_mod.detect_launch()
    assert (launch.kind, launch.rank, launch.size, launch.local_rank) == expected
    if launch.kind != "torchrun":
        assert (comm_mod.launched_rank(), comm_mod.launched_size()) == (launch.rank, launch.size)


class _FakeComm:
    rank, size, local_rank = 0, 2, 0

    def bcast(self, obj, root=0):
        return obj


def test_rendezvous_address(no_launcher):
    import socket

    addr = rendezvous(comm_mod.Launch("mpi", 0, 2), _FakeComm())
    host, port = addr.removeprefix("tcp://").rsplit(":", 1)
    assert host == socket.gethostname() and int(port) > 0  # rank 0's host, never a guessed 127.0.0.1
    no_launcher.setenv("MASTER_ADDR", "node7")
    no_launcher.setenv("MASTER_PORT", "29511")
    assert rendezvous(comm_mod.Launch("mpi", 1, 2), _FakeComm()) == "tcp://node7:29511"  # the job script's
    assert rendezvous(comm_mod.Launch("torchrun", 1, 2)) == "env://"
    assert training_device("cpu") == torch.device("cpu")
    with pytest.raises(InputError, match="--device"):
        training_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA"):
            training_device("cuda")


# ----------------------------------------------------------------------------------------------------------
# pieces


def test_split_batch_shares_out_one_ranks_batch(tmp_path):
    data = read_training_set(str(make_training_file(tmp_path / "train.h5")))
    alone = WindowSampler(data, 4, 16, seed=5).batch(7)
    parts = [WindowSampler(data, 4, 16, seed=5, rank=r, world=2, split=True).batch(7) for r in range(2)]
    # Windows 0, 2 on rank 0 and 1, 3 on rank 1, with the very coordinates they have in the 1-rank batch.
    def windows(batch, ws):  # pos, mask, restype of windows ws (16 residues each)
        idx = torch.cat([torch.arange(16 * w, 16 * (w + 1)) for w in ws])
        return batch[0][:, idx], batch[1][:, idx], batch[2][idx]

    for r in range(2):
        assert all(torch.equal(a, b) for a, b in zip(parts[r][:3], windows(alone, [r, r + 2])))
    # Independent (default) draws differ between ranks and between steps; split mode equals them at 1 rank.
    own = [WindowSampler(data, 4, 16, seed=5, rank=r, world=2).batch(7) for r in range(2)]
    assert not torch.equal(own[0][0], own[1][0]) and torch.equal(own[0][0], alone[0])
    assert not torch.equal(WindowSampler(data, 4, 16, seed=5).batch(8)[0], alone[0])
    with pytest.raises(InputError, match="at least 2 windows"):
        WindowSampler(data, 1, 16, seed=5, rank=0, world=2, split=True)


def test_mixed_sampler_packs_both_sets_apart(tmp_path, no_launcher, run_cli):
    """--extra-data: each batch is data's windows as they are, then the second set's own windows moved past them,
    with segment ids after data's; a run trains on both; the options go together."""
    main = read_training_set(str(make_training_file(tmp_path / "train.h5")))
    extra = read_training_set(str(make_training_file(tmp_path / "thermal.h5", lengths=(30,))))
    alone = WindowSampler(main, 2, 16, seed=5).batch(7)
    mixed = MixedSampler(WindowSampler(main, 2, 16, seed=5), WindowSampler(extra, 3, 16, seed=5)).batch(7)
    pos, mask, rt, seg = mixed
    assert pos.shape[1] == 5 * 16 and all(torch.equal(a, b[..., :32] if a.dim() == 1 else b[:, :32])
                                          for a, b in zip(alone, (pos, mask, rt, seg)))
    ca = pos[0, :, 1]
    assert (ca[32:, 0] > ca[:32, 0].max() + 500).all()  # the extra windows sit past the main ones
    assert set(seg[32:].tolist()).isdisjoint(seg[:32].tolist())
    own = WindowSampler(extra, 3, 16, seed=5).batch(7, stream=16)  # the second set's own keyed stream
    assert torch.equal(rt[32:], own[2]) and torch.equal(mask[:, 32:], own[1])
    assert torch.allclose(pos[0, 32:][mask[0, 32:]], (own[0][0] + torch.tensor([2000.0, 0, 0]))[own[1][0]])
    result = run_training(config(tmp_path / "train.h5", tmp_path / "run", extra_data=str(tmp_path / "thermal.h5"),
                                 extra_windows=2))
    assert result.step == 3 and np.isfinite(result.metrics["loss"])
    with pytest.raises(InputError, match="extra windows"):
        run_training(config(tmp_path / "train.h5", tmp_path / "run2", extra_windows=2))
    code, _, err = run_cli("train", "refine", "--data", str(tmp_path / "train.h5"), "--out", str(tmp_path / "r3"),
                            "--init", str(tmp_path / "run" / "model"), "--extra-data", str(tmp_path / "thermal.h5"))
    assert code != 0 and "--extra-data and --extra-windows" in err


def test_validation_structures_from_a_training_set(tmp_path):
    """--valid H5: every chain of a training set (thermal frames of the validation proteins) is one structure."""
    path = make_training_file(tmp_path / "frames.h5", lengths=(48, 40, 20))
    data = read_training_set(str(path))
    structures = load_validation(str(path))
    assert [s[2].shape[0] for s in structures] == [48, 40, 20]
    pos, mask, rt, seg = structures[1]
    assert pos.shape == (1, 40, 14, 3) and mask.shape == (1, 40, 14)
    assert torch.equal(pos[0], torch.from_numpy(data.positions[48:88])) and torch.equal(rt, torch.from_numpy(
        data.restype[48:88]))


def test_vq_statistics_and_restarts_go_through_the_injected_collectives():
    torch.manual_seed(0)
    z = torch.randn(50, 3) * 0.1 + 5.0  # far from every code: one or two are used, the rest die
    sent = torch.full((1, 3), 7.0)
    a = VectorQuantizer(8, 3, decay=0.5, restart_threshold=1.0)
    b = VectorQuantizer(8, 3, decay=0.5, restart_threshold=1.0, all_reduce_fn=lambda t: t.mul_(2),  # a twin rank
                        broadcast_fn=lambda t: sent.expand_as(t).clone())  # what rank 0 sends
    b.load_state_dict(a.state_dict())
    a.train(), b.train()
    mask = torch.ones(50, dtype=torch.bool)
    used = a.nearest(z).unique()
    a(z, mask)
    b(z, mask)
    restarted = b.ema_count == 1.0
    assert restarted.sum() >= 8 - len(used) and not restarted[used].any()
    assert torch.equal(b.codebook[restarted], sent.expand(int(restarted.sum()), 3))  # at the broadcast vectors
    assert not torch.equal(a.codebook[a.ema_count == 1.0], sent.expand(int((a.ema_count == 1.0).sum()), 3))
    torch.testing.assert_close(b.ema_count[used] - 0.5, 2 * (a.ema_count[used] - 0.5))  # the twin's counts too


# ----------------------------------------------------------------------------------------------------------
# training runs


def test_state_file_loads_without_pickles_and_resumes_exactly(tmp_path, no_launcher):
    data = make_training_file(tmp_path / "train.h5")
    cfg = dict(steps=4, save_every=2, architecture=TINY | {"null_latent_p": 0.3})
    straight = run_training(config(data, tmp_path / "a", **cfg))
    # The same run, killed during step 3 (after the state file of step 2), then run again.
    loss, calls = LDBModel.tokenizer_loss, []

    def dies_at_step_3(self, *args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return loss(self, *args, **kw)

    no_launcher.setattr(LDBModel, "tokenizer_loss", dies_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        run_training(config(data, tmp_path / "b", **cfg))
    no_launcher.setattr(LDBModel, "tokenizer_loss", loss)
    st = torch.load(tmp_path / "b" / "train_state.pt", weights_only=True)
    assert st["step"] == 2 and st["data"] == {"seed": 3, "split_batch": False, "world": 1}
    resumed = run_training(config(data, tmp_path / "b", **cfg))
    assert resumed.step == 4
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # keyed draws: a resume continues exactly
    # A state file with pickled objects (older ldb-hpc: a numpy Generator) is refused, not unpickled.
    st["rng"] = [np.random.default_rng(0)]
    torch.save(st, tmp_path / "b" / "train_state.pt")
    with pytest.raises(InputError, match="cannot resume"):
        run_training(config(data, tmp_path / "b", steps=5))


def test_launcher_variables_set_by_hand_do_not_rendezvous(tmp_path, no_launcher, run_cli):
    data = make_training_file(tmp_path / "train.h5")
    for k, v in {"SLURM_NTASKS": "2", "SLURM_PROCID": "0", "WORLD_SIZE": "2", "RANK": "0"}.items():
        no_launcher.setenv(k, v)

    def refuse(*a, **kw):
        raise AssertionError("tried to set up a process group")

    no_launcher.setattr(torch.distributed, "init_process_group", refuse)
    (tmp_path / "valid").mkdir()
    (tmp_path / "valid" / "feat.pdb").write_text(feature_pdb())
    code, out, err = run_cli("train", "tokenizer", "--data", data, "--out", tmp_path / "t", "--steps", 1,
                             "--windows", 2, "--crop", 16, "--latent-dim", 3, "--valid", tmp_path / "valid")
    assert code == 0, err
    assert "trained tokenizer" in out and (tmp_path / "t" / "model").is_dir()
    assert "step 1 validation {'valid_rmsd'" in err  # read by the runtime, evaluated by the model layer


@needs_mpi
def test_two_ranks_stay_identical(tmp_path):
    """Independent windows per rank and latent dropout drawn per rank: the replicas still end bitwise equal."""
    data = make_training_file(tmp_path / "train.h5")
    ranks = run_two_ranks(tmp_path, config(data, tmp_path / "run", architecture=TINY | {"null_latent_p": 0.3}))
    assert ranks[0].keys() == ranks[1].keys() and "vq.ema_sum" in ranks[0]
    assert not [k for k in ranks[0] if not torch.equal(ranks[0][k], ranks[1][k])]
    saved = load_file(tmp_path / "run" / "model" / "weights.safetensors")
    assert all(torch.equal(saved[k], ranks[0][k]) for k in saved if k in ranks[0])


@needs_mpi
def test_two_ranks_split_batch_equal_one_rank(tmp_path, no_launcher):
    """--split-batch on 2 ranks = 1 rank with the same options: the same windows, averaged gradients, VQ statistics
    summed over ranks. What remains is rounding, and the loss's 0.02 × norm term, which also averages over the
    (unmasked) links between packed windows: a rank's batch has 31 links where the whole one has 63."""
    data = make_training_file(tmp_path / "train.h5")
    no_launcher.setattr(ldb_module, "featurize", sealed_featurize)
    ranks = run_two_ranks(tmp_path, config(data, tmp_path / "two", split_batch=True), sealed=True)
    assert not [k for k in ranks[0] if not torch.equal(ranks[0][k], ranks[1][k])]
    one = run_training(config(data, tmp_path / "one", split_batch=True)).model.state_dict()
    torch.manual_seed(3)
    init = LDBModel(LDBConfig(**TINY)).state_dict()  # what every rank starts from (cfg.seed 3)
    learnt = [k for k in one if not k.startswith(("vq.", "denoiser.", "latent_", "null_latent"))]
    update = sum(float((one[k] - init[k]).norm() ** 2) for k in learnt) ** 0.5
    diff = sum(float((ranks[0][k] - one[k]).norm() ** 2) for k in learnt) ** 0.5
    assert update > 0.1 and diff < 0.01 * update, (diff, update)  # another global batch: about 0.2 × update
    torch.testing.assert_close(ranks[0]["vq.ema_count"], one["vq.ema_count"], rtol=1e-6, atol=1e-6)
    assert not torch.equal(one["vq.ema_count"], init["vq.ema_count"])
    for k in ("vq.ema_sum", "vq.codebook"):  # another global batch: about 1 and 0.2 × the change
        assert float((ranks[0][k] - one[k]).norm()) < 1e-4 * float((one[k] - init[k]).norm()), k
    for k in ("null_latent", "latent_mean", "latent_std"):  # not used by this stage: untouched everywhere
        assert torch.equal(ranks[0][k], init[k]) and torch.equal(one[k], init[k])
