"""The LDB model: noise, schedule and samplers, VQ, checkpoints, losses and a tiny training run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_training_set import write_training_set

from ldb_hpc.chem import residues as rc
from ldb_hpc.errors import InputError
from ldb_hpc.model import diffusion as diff
from ldb_hpc.model.checkpoint import load_checkpoint, save_checkpoint
from ldb_hpc.model.ldb import LDBConfig, LDBModel
from ldb_hpc.model.networks import VectorQuantizer
from ldb_hpc.model.stages import Stage
from ldb_hpc.model.targets import true_angles
from ldb_hpc.ops.noise import gaussian, latent_noise

SMALL = LDBConfig(dim=16, edge_dim=8, layers=1, knn=6, latent_dim=3, n_codes=32, hidden=32, denoiser_hidden=32,
                  steps=4)


def _helix_protein(L: int = 24, seed: int = 0):
    """A synthetic all-atom protein: the ideal model's reconstruction of a perturbed helix trace."""
    from ldb_hpc.model.ideal import backmap_ideal

    k = torch.arange(L, dtype=torch.float32)
    ang = torch.deg2rad(100.0 * k)
    ca = torch.stack([2.3 * torch.cos(ang), 2.3 * torch.sin(ang), 1.5 * k], -1)
    ca = ca + 0.05 * torch.randn(ca.shape, generator=torch.Generator().manual_seed(seed))
    restype = torch.arange(L) % 20
    segment = torch.zeros(L, dtype=torch.long)
    pos = backmap_ideal(ca, restype, segment)
    mask = torch.as_tensor(rc.SLOT_MASK)[restype]
    return pos[None], mask[None], restype, segment


def test_counter_noise_is_keyed_not_ordered():
    a = latent_noise(7, torch.arange(10), 3, 2, 50, 4)
    b = latent_noise(7, torch.tensor([4, 5]), 3, 2, 50, 4)
    assert torch.equal(a[4:6], b)  # the same frame gets the same numbers in any batch
    assert not torch.equal(latent_noise(8, torch.arange(10), 3, 2, 50, 4), a)  # another seed, other numbers
    assert not torch.equal(a[:, 0], a[:, 1])  # samples differ
    z = gaussian(0, torch.arange(200000), 0, 0, 0, 0)
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01
    assert abs(float((z[1:] * z[:-1]).mean())) < 0.01  # consecutive keys uncorrelated


def test_schedule_and_ddim_recover_a_point_mass():
    s = diff.linear_schedule()
    assert s.T == 1000 and s.betas[0] == pytest.approx(1e-4) and s.betas[-1] == pytest.approx(0.02)
    assert np.all(np.diff(s.alphas_cumprod) < 0)
    target = torch.tensor([0.7, -1.2, 0.3])

    def oracle(x, t, cond):  # the exact ε for data concentrated at `target`
        ab = torch.as_tensor(s.alphas_cumprod, dtype=x.dtype)[t].reshape(-1, 1, 1, 1)
        return (x - ab.sqrt() * target) / (1 - ab).sqrt()

    for temperature, eta in ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0)):
        x = diff.sample(s, oracle, None, (2, 3, 5, 3), torch.arange(2), seed=1, steps=10,
                        temperature=temperature, eta=eta)
        torch.testing.assert_close(x, target.expand_as(x), atol=1e-3, rtol=0)
    assert diff.sampling_timesteps(s, 4) == [999, 666, 333, 0]


def test_vq_round_trip_and_ema():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 3)
    codes = vq.codebook.clone()
    idx = torch.randint(0, 16, (40,))
    vq.eval()
    q, got, loss = vq(codes[idx], torch.ones(40, dtype=torch.bool))
    assert torch.equal(got, idx) and torch.equal(vq.decode(got), q) and float(loss) == 0.0
    # Training: EMA pulls the used codes towards the data.
    vq.train()
    data = torch.randn(500, 3) * 0.1 + 3.0
    for _ in range(50):
        vq(data, torch.ones(500, dtype=torch.bool))
    assert float((vq.codebook[vq.nearest(data)] - data).norm(dim=-1).mean()) < 0.2


def test_true_angles_round_trip_through_the_builder():
    """Decoding the true angles of a structure reproduces it (the decoder's parametrisation is complete)."""
    pos, mask, restype, segment = _helix_protein()
    model = LDBModel(SMALL)
    t = true_angles(pos, mask, restype, segment)
    unit = lambda a: torch.stack([torch.cos(a), torch.sin(a)], -1)  # noqa: E731
    L = pos.shape[1]
    psi = torch.zeros(1, L)
    phi = torch.zeros(1, L)
    psi[:, :-1], phi[:, 1:] = t["psi"], t["phi"]
    out = {"alpha": unit(t["alpha"]), "chi": unit(t["chi"]), "psi": unit(psi), "phi": unit(phi)}
    x = model.build(pos[..., 1, :], restype, segment, out)
    err = ((x - pos) ** 2).sum(-1)[mask].mean().sqrt()
    assert float(err) < 0.05


def test_tiny_training_lowers_the_loss_and_checkpoints_round_trip(tmp_path):
    torch.manual_seed(0)
    model = LDBModel(SMALL)
    batch = _helix_protein(32)
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if not n.startswith("denoiser.")], lr=3e-3)
    first = None
    for _ in range(40):
        loss = model.tokenizer_loss(*batch)["loss"]
        first = float(loss) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.7 * first
    digest = save_checkpoint(model, tmp_path / "m")
    loaded = load_checkpoint(tmp_path / "m")
    assert loaded.hash == digest
    ca = batch[0][..., 1, :]
    a = model.eval().sample(ca, batch[2], batch[3], torch.tensor([3]), samples=2, seed=4)
    b = loaded.sample(ca, batch[2], batch[3], torch.tensor([3]), samples=2, seed=4)
    assert torch.equal(a, b)  # same weights, same seed: bitwise identical
    c = loaded.sample(ca, batch[2], batch[3], torch.tensor([3]), samples=2, seed=5)
    assert not torch.equal(a, c)  # another seed: other samples
    assert torch.isfinite(a).all() and a.shape == (1, 2, 32, 14, 3)
    exists = torch.as_tensor(rc.SLOT_MASK)[batch[2]]
    assert bool(((a.abs().sum(-1) > 0) == exists).all())  # every heavy atom of every residue


def test_checkpoint_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not an ldb-hpc model"):
        load_checkpoint(tmp_path / "empty")
    save_checkpoint(LDBModel(SMALL), tmp_path / "m")
    w = tmp_path / "m" / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-5] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(InputError, match="do not match the hash"):
        load_checkpoint(tmp_path / "m")
    save_checkpoint(LDBModel(SMALL), tmp_path / "m2")
    cfg = json.loads((tmp_path / "m2" / "config.json").read_text())
    cfg["architecture"]["not_a_field"] = 1
    cfg.pop("hash")
    (tmp_path / "m2" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="incompatible"):
        load_checkpoint(tmp_path / "m2")


def test_train_cli_runs_and_resumes(tmp_path, run_cli):
    """`ldb-hpc train tokenizer` on a tiny prepared file, then a resumed continuation, then stage 2."""
    pos, mask, restype, segment = _helix_protein(40)
    data = write_training_set(tmp_path / "train.h5", [(pos[0].numpy(), mask[0].numpy(), restype.numpy(),
                                                      segment.numpy())])
    out = tmp_path / "tok"
    args = ["train", "tokenizer", "--data", data, "--out", out, "--windows", 2, "--crop", 16, "--log-every", 1,
            "--save-every", 2, "--latent-dim", 3]
    code, _, err = run_cli(*args, "--steps", 2)
    assert code == 0, err
    code, _, err = run_cli(*args, "--steps", 4)
    assert code == 0, err
    assert "resuming tokenizer at step 2" in err
    hist = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in hist if "loss" in h] == [1, 2, 3, 4]
    code, _, err = run_cli("train", "diffusion", "--data", data, "--init", out / "model", "--out", tmp_path / "d",
                           "--steps", 2, "--windows", 2, "--crop", 16)
    assert code == 0, err
    diffusion_model = load_checkpoint(tmp_path / "d" / "model")
    assert diffusion_model.latent_std.min() > 0 and diffusion_model.cfg.latent_dim == 3
    # The stage goes into config.json as its word and comes back as the enum.
    assert json.loads((out / "model" / "config.json").read_text())["metadata"]["stage"] == "tokenizer"
    assert load_checkpoint(out / "model").stage is Stage.TOKENIZER and diffusion_model.stage is Stage.DIFFUSION
    code, _, err = run_cli("train", "diffusion", "--data", data, "--out", tmp_path / "e", "--steps", 1)
    assert code == 2 and "--init" in err
    # Stage 3 (refine): a sampling decoder is added (a copy of the tokenizer's decoder) and only it learns; the
    # tokenizer (encoder, codebook, decoder) and the denoiser are kept as they were.
    code, _, err = run_cli("train", "refine", "--data", data, "--init", tmp_path / "d" / "model", "--out",
                           tmp_path / "r", "--steps", 2, "--windows", 2, "--crop", 16, "--lr", 0.05,
                           "--ensemble-temperature", 0.5)
    assert code == 0, err
    refined = load_checkpoint(tmp_path / "r" / "model")
    assert refined.cfg.temperature == 0.5 and diffusion_model.cfg.temperature == 1.0
    before, after = diffusion_model.state_dict(), refined.state_dict()
    new = {k for k in after if k.startswith(("sample_decoder.", "sample_encoder.", "sample_context."))}
    assert set(after) - set(before) == new and any(k.startswith("sample_encoder.") for k in new)
    assert not {k for k in before if not torch.equal(before[k], after[k])}
    assert any(not torch.equal(after["sample_" + k], before[k]) for k in before if k.startswith("decoder."))
    assert refined.cfg.sample_decoder and not diffusion_model.cfg.sample_decoder
    # A trained stage 3 deepened (gated layers that start as the identity) and trained on noisy CA traces.
    code, _, err = run_cli("train", "refine", "--data", data, "--init", tmp_path / "r" / "model", "--out",
                           tmp_path / "deep", "--steps", 2, "--windows", 2, "--crop", 16, "--lr", 0.05,
                           "--sample-extra-layers", 2, "--context-extra-layers", 1, "--ca-noise", 0.2,
                           "--chi-modes", "--chi-mode-p", 0.6, "--log-every", 1)
    assert code == 0, err
    deep = load_checkpoint(tmp_path / "deep" / "model")
    assert deep.cfg.chi_modes and deep.cfg.chi_mode_p == 0.6 and deep.sample_chi_head.weight.abs().sum() > 0
    assert "chi1_ce" in err
    assert (deep.cfg.sample_extra_layers, deep.cfg.context_extra_layers) == (2, 1)
    assert len(deep.sample_encoder.layers) == refined.cfg.layers + 2 and len(deep.sample_context.layers) == 3
    gates = [layer.gate for layer in [*deep.sample_encoder.layers[-2:], deep.sample_context.layers[-1]]]
    assert all(float(g.detach()) != 0 for g in gates)  # they learned
    code, _, err = run_cli("train", "tokenizer", "--data", data, "--out", tmp_path / "t2", "--ca-noise", 0.1)
    assert code == 2 and "train refine" in err


def test_chi_mode_head_moves_chi1_only_where_sure_and_in_another_well():
    from ldb_hpc.model.rotamers import chi1_well, chi_from_modes

    deg = torch.deg2rad
    chi = deg(torch.tensor([[70.0, 10, 0, 0], [170.0, 20, 0, 0], [-50.0, 30, 0, 0], [100.0, 40, 0, 0]]))
    assert chi1_well(chi[:, 0]).tolist() == [0, 1, 2, 0]
    sure_t = torch.tensor([0.0, 5.0, 0.0])  # p(t) ≈ 0.987
    logits = torch.stack([sure_t, sure_t, torch.zeros(3), sure_t])
    got = torch.rad2deg(chi_from_modes(chi, logits, 0.9))
    # row 0: sure of t, χ1 in g+ → 180°; row 1: already in t → kept; row 2: unsure → kept; row 3 → 180°
    torch.testing.assert_close(got[:, 0].abs(), torch.tensor([180.0, 170.0, 50.0, 180.0]))
    torch.testing.assert_close(got[:, 1:], torch.rad2deg(chi[:, 1:]))
    assert torch.equal(chi_from_modes(chi, logits, 0.999), chi)  # never sure enough: nothing moves


def test_deepening_stage_3_starts_from_the_same_function():
    """add_sample_decoder(extra) on a model that has stage 3 appends gated layers: the same samples as before,
    bit for bit, and a checkpoint of the deeper model loads with its architecture."""
    torch.manual_seed(0)
    model = LDBModel(LDBConfig(**(SMALL.to_dict() | {"latent_dim": 3})))
    model.add_sample_decoder()
    with torch.no_grad():  # a stage 3 that is not at its initial values
        for p in [*model.sample_encoder.parameters(), *model.sample_context.parameters()]:
            p.add_(0.1 * torch.randn_like(p))
    pos, mask, restype, segment = _helix_protein(20)
    frames = torch.zeros(1, dtype=torch.long)
    # --ca-noise: the networks see (and the atoms are built on) a perturbed trace; the targets stay the true ones.
    clean, noisy = (model.refine_loss(pos, mask, restype, segment, generator=torch.Generator().manual_seed(5),
                                      ca_noise=a)["rmsd"] for a in (0.0, 1.0))
    assert float(noisy) > float(clean)
    before = model.sample(pos[..., 1, :], restype, segment, frames)
    model.add_sample_decoder(extra_layers=2, context_extra_layers=1)
    assert torch.equal(model.sample(pos[..., 1, :], restype, segment, frames), before)
    model.add_sample_decoder(extra_layers=1)  # never shrinks
    assert model.cfg.sample_extra_layers == 2
    with torch.no_grad():
        model.sample_encoder.layers[-1].gate.fill_(0.5)
    assert not torch.equal(model.sample(pos[..., 1, :], restype, segment, frames), before)


def test_message_passing_layer_equals_the_concatenated_form():
    """MPLayer evaluates msg(Linear→SiLU→Linear) per edge in split form (per-residue projections, the second Linear
    after the mean): the same function as MLP([h_i, h_j, e_ij]) averaged over neighbours, gradients included."""
    from ldb_hpc.model.features import gather_nodes
    from ldb_hpc.model.networks import MPLayer

    torch.manual_seed(0)
    layer = MPLayer(16, 8).double()
    h = torch.randn(2, 11, 16, dtype=torch.float64, requires_grad=True)
    e = torch.randn(2, 11, 5, 8, dtype=torch.float64)
    nbr = torch.randint(0, 11, (2, 11, 5))
    hj = gather_nodes(h, nbr)
    m = layer.msg(torch.cat([h.unsqueeze(2).expand_as(hj), hj, e], dim=-1)).mean(2)
    expected = layer.norm(h + layer.upd(torch.cat([h, m], dim=-1)))
    got = layer(h, e, nbr)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    g1, = torch.autograd.grad(got.square().sum(), h)
    g2, = torch.autograd.grad(expected.square().sum(), h)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-10)



def test_staggered_chi1_moves_chi1_into_its_nearest_well():
    """Ser, Cys, Thr and Val get the centre of the χ1 well (60°, 180°, −60°) nearest to the regressed χ1; Arg, Asp,
    Gln, Glu, Leu and Lys get χ1 clamped to within 25° of that centre; other types and the other χ keep their
    values exactly."""
    import math

    from ldb_hpc.model.rotamers import NEAR_WELL_CHI1, NEAR_WELL_DEG, STAGGERED_CHI1, staggered_chi1

    names = ["SER", "CYS", "THR", "VAL", "LEU", "LYS", "ALA", "SER", "GLU", "PHE", "ARG"]
    restype = torch.tensor([rc.RESTYPE_INDEX[n] for n in names])
    chi = torch.deg2rad(torch.tensor([[119.0, 10, 20, 30], [121.0, 0, 0, 0], [-100.0, 5, 0, 0], [-170.0, 0, 0, 0],
                                      [119.0, 40, 0, 0], [0.0, 0, 0, 0], [90.0, 0, 0, 0], [10.0, 0, 0, 0],
                                      [-75.0, 1, 2, 0], [119.0, 0, 0, 0], [-150.0, 1, 2, 3]]))
    out = staggered_chi1(chi[None].repeat(2, 1, 1), restype)  # batched [B, L, 4]
    expected = torch.deg2rad(torch.tensor([60.0, 180.0, -60.0, 180.0, 85.0, 35.0]))
    assert torch.allclose(out[:, :6, 0], expected.expand(2, -1), atol=1e-6)  # Leu 119° → 85°, Lys 0° → 35°
    assert torch.allclose(out[:, 7, 0], torch.full((2,), math.radians(60.0)), atol=1e-6)
    assert torch.allclose(torch.remainder(out[:, 10, 0], 2 * math.pi), torch.full((2,), math.radians(205.0)))
    for i in (6, 8, 9):  # Ala, a Glu already within 25° of −60°, Phe: untouched
        assert torch.equal(out[:, i], chi[None, i].expand(2, -1))
    assert torch.equal(out[..., 1:], chi[None, :, 1:].expand(2, -1, -1))
    assert set(STAGGERED_CHI1) == {"SER", "CYS", "THR", "VAL"}
    assert set(NEAR_WELL_CHI1) == {"ARG", "ASP", "GLN", "GLU", "LEU", "LYS"} and NEAR_WELL_DEG == 25.0


def test_settle_chi1_refits_the_distal_chi_behind_a_moved_chi1():
    """After χ1 moves into its well, χ2..χ4 are re-fitted so that each χ's fourth atom sits as near to where the
    regression's own build put it as the new upstream atoms allow (no other χ value does better), the output's
    measured χ are the returned ones, and residues whose χ1 did not move keep their atoms bit for bit."""
    import math

    from ldb_hpc import ops
    from ldb_hpc.geometry.builder import measure_torsions
    from ldb_hpc.model.rotamers import settle_chi1

    torch.manual_seed(0)
    names = ["LYS", "ARG", "GLU", "LEU", "PHE", "LYS"]
    restype = torch.tensor([rc.RESTYPE_INDEX[n] for n in names])
    L = len(names)
    ca = torch.arange(L, dtype=torch.float32)[:, None] * torch.tensor([3.8, 0.0, 0.0])
    n = ca + torch.tensor([-0.5, 1.35, 0.0])
    c = ca + torch.tensor([1.2, 0.6, 0.4])
    o_t = torch.full((L,), 2.5)
    chi = torch.deg2rad(torch.tensor([[10.0, 170, 160, 175], [-120.0, 80, -170, 100], [150.0, -70, 30, 0],
                                      [0.0, 150, 0, 0], [0.0, 90, 0, 0], [-65.0, 170, 180, 170]]))
    backbone = (ca[None], n[None], c[None], o_t[None])
    pos = ops.atoms_from_backbone(n[None], ca[None], c[None], o_t[None], chi[None], restype)
    got, chi_new = settle_chi1(pos, backbone, chi[None], restype)
    moved = torch.tensor([True, True, True, True, False, False])  # Phe is not clamped; the last Lys is within 25°
    assert torch.equal(got[0, ~moved], pos[0, ~moved]) and torch.equal(chi_new[0, ~moved], chi[~moved])
    assert bool((chi_new[0, moved, 0] != chi[moved, 0]).all())
    measured, ok = measure_torsions(got.double(), restype[None])
    d = torch.remainder(measured[0, :, 1:] - chi_new[0].double() + math.pi, 2 * math.pi) - math.pi
    assert float(d[ok[0, :, 1:]].abs().max()) < 1e-3
    # χ2 of the moved Lys (row 0): its CD is nearer to the original CD than with any other χ2 on a 5° grid.
    cd = rc.SLOT_INDEX[("LYS", "CD")]
    best = (got[0, 0, cd] - pos[0, 0, cd]).norm()
    grid = chi_new[0].repeat(72, 1, 1)
    grid[:, 0, 1] = torch.deg2rad(torch.arange(72.0) * 5)
    others = ops.atoms_from_backbone(n, ca, c, o_t, grid, restype)[:, 0, cd]
    assert float(best) <= float((others - pos[0, 0, cd]).norm(dim=-1).min()) + 1e-4


def test_sampling_builds_short_side_chains_at_staggered_chi1(repo_root):
    """The default model's samples (before clash repair) have the χ1 of every Ser, Cys, Thr and Val at a well
    centre, those of Arg, Asp, Gln, Glu, Leu and Lys within 25° of one; the other types keep their regressed χ1."""
    from ldb_hpc.geometry.builder import measure_torsions
    from ldb_hpc.io.cg import CGTrajectory
    from ldb_hpc.model.backmappers import default_model_path
    from ldb_hpc.model.rotamers import NEAR_WELL_CHI1, NEAR_WELL_DEG, STAGGERED_CHI1

    with CGTrajectory(str(repo_root / "examples" / "example.cg.h5")) as cg:
        res, ca = cg.residues, torch.from_numpy(cg.read(0, 2).ca)
    model = load_checkpoint(default_model_path()).eval()
    rt = torch.as_tensor(res.restype)
    x = model.sample(ca, rt, torch.as_tensor(res.segment), torch.arange(2), pack=False)[:, 0]
    chi1 = measure_torsions(x.double(), rt.expand(2, -1))[0][..., 1]
    sel = torch.isin(rt, torch.tensor([rc.RESTYPE_INDEX[t] for t in STAGGERED_CHI1]))
    assert int(sel.sum()) >= 5
    off = torch.remainder(torch.rad2deg(chi1), 120.0) - 60.0  # signed distance to the nearest well (60, 180, −60)
    assert float(off[:, sel].abs().max()) < 0.1, off[:, sel]
    near = torch.isin(rt, torch.tensor([rc.RESTYPE_INDEX[t] for t in NEAR_WELL_CHI1]))
    assert int(near.sum()) >= 5 and float(off[:, near].abs().max()) <= NEAR_WELL_DEG + 1e-3
    has_chi1 = (rt != rc.RESTYPE_INDEX["GLY"]) & (rt != rc.RESTYPE_INDEX["ALA"])
    assert float(off[:, ~sel & ~near & has_chi1].abs().max()) > 30.0
