"""The learned model shipped in the package (ldb_hpc/weights/ldb-default), used when --model is not given."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ldb_hpc.chem import residues as rc
from ldb_hpc.io.cg import CGTrajectory
from ldb_hpc.model.backmappers import LDBBackmapper, default_model_path, load_backmapper


@pytest.fixture(scope="module")
def frames(repo_root):
    with CGTrajectory(str(repo_root / "examples" / "example.cg.h5")) as cg:
        return cg.residues, torch.from_numpy(cg.read(0, 6).ca)


def test_default_is_the_shipped_ldb_model():
    path = default_model_path()
    assert path is not None and (path / "weights.safetensors").stat().st_size < 8 * 2 ** 20
    model = load_backmapper(None)
    assert isinstance(model, LDBBackmapper) and model.name == "ldb-default"
    assert model.hash == json.loads((path / "config.json").read_text())["hash"]


def test_seeded_samples_are_reproducible_and_distinct(frames):
    residues, ca = frames
    model = load_backmapper(None)
    idx = torch.arange(6)
    a = model.backmap(ca, residues, idx, samples=3, seed=11)
    b = model.backmap(ca, residues, idx, samples=3, seed=11)
    c = model.backmap(ca, residues, idx, samples=3, seed=12)
    assert torch.equal(a, b)  # bitwise identical for the same seed
    assert not torch.equal(a, c)
    assert (a[:, 0] - a[:, 1]).abs().max() > 0.1  # ensemble members differ (the model's ensemble temperature)
    # The batch does not matter: frames 2..3 alone give the same numbers.
    torch.testing.assert_close(model.backmap(ca[2:4], residues, idx[2:4], samples=3, seed=11), a[2:4],
                               rtol=0, atol=1e-4)
    exists = torch.as_tensor(rc.SLOT_MASK)[torch.as_tensor(residues.restype)]
    assert bool(((a.abs().sum(-1) > 0) == exists).all()) and torch.isfinite(a).all()
    # One sample defaults to temperature 0: the deterministic "most likely" structure, whatever the seed.
    torch.testing.assert_close(model.backmap(ca, residues, idx, samples=1, seed=1),
                               model.backmap(ca, residues, idx, samples=1, seed=2), rtol=0, atol=0)


@pytest.fixture(scope="module")
def casp12_runs(shared_data):
    """The shipped model on every CASP12 CA trace: one default sample and a 10-sample ensemble (default
    temperature), with the per-row DESIGN.md metrics. {(target, 'single'|'ensemble'): metrics dict}."""
    from ldb_hpc.geometry import metrics
    from ldb_hpc.io.structure import read_structure

    model = load_backmapper(None)
    out = {}
    for path in sorted((shared_data / "test" / "casp12").glob("*.pdb")):
        prot = read_structure(str(path))[0]
        res = prot.residues
        ca = torch.from_numpy(prot.positions[:, 1])[None]
        for kind, samples in (("single", 1), ("ensemble", 10)):
            x = model.backmap(ca, res, torch.zeros(1, dtype=torch.long), samples=samples, seed=3)[0]  # [S, L, 14, 3]
            m = prot.mask & rc.SLOT_MASK[res.restype]
            topo = metrics.build_topology(res.restype, res.segment, rc.SLOT_MASK[res.restype], *_ideal_bonds())
            xs = x.numpy()
            out[(path.stem, kind)] = {
                "rmsd": np.sqrt((((xs - prot.positions[None]) ** 2).sum(-1)[:, m]).mean(-1)),  # [S]
                "bond_outliers": metrics.bond_outliers(xs, topo),
                "chi1": metrics.chi_accuracy(xs, prot.positions[None], rc.SLOT_MASK[res.restype], prot.mask,
                                             res.restype)[0],
                **metrics.pair_metrics(xs, topo),
            }
            if samples > 1:  # mean heavy-atom RMSD between the members, over all pairs
                d = np.sqrt((((xs[:, None] - xs[None]) ** 2).sum(-1)[:, :, m]).mean(-1))
                out[(path.stem, kind)]["pairwise"] = d[np.triu_indices(samples, 1)].mean()
    return out


@pytest.mark.data
@pytest.mark.slow
def test_casp12_accuracy_regression(casp12_runs):
    """Where the shipped model stood when it was trained (docs/MODEL.md), with the default settings on the CASP12
    CA traces: single-sample mean heavy-atom RMSD ≤ 1.24 Å (issue 12's bar 1.25; 1.232 now) and χ1 ≥ 71 % (the
    bar; 71.3 % now, 69.9 % before χ1 was moved into its rotamer well), bond outliers < 0.5 %; ensemble mean RMSD
    over samples ≤ 1.27 Å (issue 12's bar 1.30; 1.244 when shipped), members 0.5 Å apart on average or more (the
    bar; 0.57 when shipped)."""
    single = [v for (t, k), v in casp12_runs.items() if k == "single"]
    ens = [v for (t, k), v in casp12_runs.items() if k == "ensemble"]
    assert np.mean([v["rmsd"][0] for v in single]) <= RMSD_SINGLE
    assert np.nanmean([v["chi1"][0] for v in single]) >= 0.71  # χ1 within 40°
    assert np.mean([v["bond_outliers"].mean() for v in single + ens]) < 0.005
    assert np.mean([v["rmsd"].mean() for v in ens]) <= 1.27
    assert all(np.ptp(v["rmsd"]) > 0 for v in ens)  # ensemble members differ
    assert np.mean([v["pairwise"] for v in ens]) >= 0.5


@pytest.mark.data
@pytest.mark.slow
def test_casp12_no_heavy_atom_pair_below_1_2_in_any_sample(casp12_runs):
    """The chemistry bar of every sample: no non-bonded heavy-atom pair closer than 1.2 Å (clash repair,
    backbone settling), pairs < 2.0 Å per 1000 atoms at most 1.0 (issue 12's bar; 0.42 when shipped, PULCHRA 14–17)."""
    bad = {(t, k): v["clash_1.2"].tolist() for (t, k), v in casp12_runs.items() if (v["clash_1.2"] > 0).any()}
    assert not bad
    assert np.mean([v["clash_2.0"].mean() for v in casp12_runs.values()]) <= 1.0


RMSD_SINGLE = 1.24  # the shipped model measures 1.232 Å (docs/MODEL.md); with the repair's old order 1.296 Å


def _ideal_bonds():
    from ldb_hpc.chem.ideal_geometry import ideal_geometry

    g = ideal_geometry()
    return g.bond_length, g.peptide_bond


@pytest.mark.data
def test_casp12_tokenizer_round_trip(shared_data):
    """The tokenizer's reconstruction with the encoder's own codes: ≤ 0.5 Å heavy-atom RMSD on CASP12 (0.36 Å when
    shipped; the stage-3 networks do not touch the tokenizer)."""
    from ldb_hpc.io.structure import read_structure
    from ldb_hpc.model.checkpoint import load_checkpoint

    model = load_checkpoint(default_model_path()).eval()
    rmsd = []
    for path in sorted((shared_data / "test" / "casp12").glob("*.pdb")):
        prot = read_structure(str(path))[0]
        pos, mask = torch.from_numpy(prot.positions)[None].float(), torch.from_numpy(prot.mask)[None]
        rt, seg = torch.from_numpy(prot.residues.restype), torch.from_numpy(prot.residues.segment)
        with torch.no_grad():
            x = model.reconstruct(pos, mask, rt, seg)[0]
        m = mask[0] & torch.as_tensor(rc.SLOT_MASK)[rt]
        rmsd.append(float(((x - pos[0]) ** 2).sum(-1)[m].mean().sqrt()))
    assert np.mean(rmsd) <= 0.5


@pytest.mark.data
@pytest.mark.slow
def test_pfam40_single_sample_rmsd(shared_data):
    """The model-selection set (valid/pfam40): mean single-sample heavy-atom RMSD ≤ 1.23 Å (issue 12's bar is
    1.27 Å; the shipped model measures 1.216 Å, the one before it 1.264 Å)."""
    from ldb_hpc.model.checkpoint import load_checkpoint
    from ldb_hpc.runtime.train_setup import load_validation

    model = load_checkpoint(default_model_path()).eval()
    assert (model.cfg.sample_extra_layers, model.cfg.context_extra_layers) == (6, 2)  # the deepened stage 3
    rmsd = []
    for pos, mask, rt, seg in load_validation(str(shared_data / "valid" / "pfam40")):
        x = model.sample(pos[..., 1, :], rt, seg, torch.zeros(1, dtype=torch.long))[0, 0]
        m = mask[0] & torch.as_tensor(rc.SLOT_MASK)[rt]
        rmsd.append(float(((x - pos[0]) ** 2).sum(-1)[m].mean().sqrt()))
    assert len(rmsd) == 40
    assert np.mean(rmsd) <= 1.23


@pytest.mark.data
def test_chain_start_n_is_turned_off_a_proline_ring(shared_data, monkeypatch):
    """T0892 starts with Ser–cis-Pro: in two of ten seed-0 samples the predicted chain-start ψ put Ser1 N 1.16 Å
    from Pro2 CG, which no side-chain move can fix. The rescue turns that N about CA–C: no pair < 1.2 Å remains,
    and without the turn the pair is there (so this case exercises it)."""
    from ldb_hpc.geometry import metrics
    from ldb_hpc.io.structure import read_structure
    from ldb_hpc.model import rescue as rescue_mod

    prot = read_structure(str(shared_data / "test" / "casp12" / "T0892.pdb"))[0]
    res = prot.residues
    ca = torch.from_numpy(prot.positions[:, 1])[None]
    topo = metrics.build_topology(res.restype, res.segment, rc.SLOT_MASK[res.restype], *_ideal_bonds())
    model = load_backmapper(None)

    def close_pairs() -> float:
        x = model.backmap(ca, res, torch.zeros(1, dtype=torch.long), samples=10, seed=0)[0].numpy()
        return float(metrics.pair_metrics(x, topo)["clash_1.2"].sum())

    assert close_pairs() == 0
    monkeypatch.setattr(rescue_mod, "_turn_chain_start_n", lambda *args, **kwargs: None)
    assert close_pairs() > 0


@pytest.mark.data
def test_settling_keeps_carbonyls_two_units_apart(shared_data):
    """PED00151 model 26 (frame 25), seed-0 ensemble: a tight turn of the disordered trace put O(41) and O(43)
    1.13 Å apart in two of ten samples until backbone settling learned to flag and turn O(i)–O(i+2) pairs."""
    from ldb_hpc.geometry import metrics
    from ldb_hpc.io.structure import read_structure

    prot = read_structure(str(shared_data / "test" / "ped" / "PED00151.pdb"), models=25)[0]
    res = prot.residues
    topo = metrics.build_topology(res.restype, res.segment, rc.SLOT_MASK[res.restype], *_ideal_bonds())
    x = load_backmapper(None).backmap(torch.from_numpy(prot.positions[:, 1])[None], res, torch.tensor([25]),
                                 samples=10, seed=0)[0].numpy()
    assert float(metrics.pair_metrics(x, topo)["clash_1.2"].sum()) == 0


@pytest.mark.data
def test_settling_keeps_non_local_carbonyls_apart(shared_data, monkeypatch):
    """T0921, seed-3 ensemble at the model's temperature: two sampled peptide rotations put the carbonyl O of Phe7
    and Asn130 1.2 Å apart (a contact no local rule and no side-chain move can see) until backbone settling learned
    to flag units with a non-local O–O / O–N contact and to keep every turned unit clear of such contacts; without
    the rule (both halves) the pair is there."""
    from ldb_hpc.geometry import metrics, peptide_far
    from ldb_hpc.io.structure import read_structure

    prot = read_structure(str(shared_data / "test" / "casp12" / "T0921.pdb"))[0]
    res = prot.residues
    topo = metrics.build_topology(res.restype, res.segment, rc.SLOT_MASK[res.restype], *_ideal_bonds())
    ca = torch.from_numpy(prot.positions[:, 1])[None]
    model = load_backmapper(None)

    def close_pairs() -> float:
        x = model.backmap(ca, res, torch.zeros(1, dtype=torch.long), samples=10, seed=3)[0].numpy()
        return float(metrics.pair_metrics(x, topo)["clash_1.2"].sum())

    assert close_pairs() == 0
    monkeypatch.setattr(peptide_far, "far_contacts", lambda units, linked, *a, **kw: torch.zeros_like(
        units.o[..., 0], dtype=torch.bool))
    monkeypatch.setattr(peptide_far, "far_cost", lambda ca, idx, linked, units, o_c, *a: torch.zeros_like(o_c[..., 0]))
    assert close_pairs() > 0


def test_settling_keeps_a_carbonyl_off_a_non_local_cb(frames, repo_root, monkeypatch):
    """Frame 12,131 of `ldb-hpc synth --frames 100000 --from examples/example.cg.h5` (seed 0, at bfaed07; its CA
    trace is tests/data/example_synth_frame12131.npy): the synthetic dynamics pressed CA(186)–CA(195) to 4.7 Å and
    the default model put O(186) 1.18 Å from CB(195), two backbone atoms no side-chain move can clear (1 of 8 such
    rows in the 100,000). Backbone settling now flags a carbonyl within 2.2 Å of a non-local non-glycine CB and keeps
    turned units 2.4 Å off such CBs: the pair ends well apart; without that rule it is back under 1.5 Å."""
    from ldb_hpc.geometry import peptide_far

    residues, _ = frames
    ca = torch.from_numpy(np.load(repo_root / "tests" / "data" / "example_synth_frame12131.npy"))[None]
    numbers = list(np.asarray(residues.resseq))
    o_186, cb_195 = numbers.index(186), numbers.index(195)
    model = load_backmapper(None)

    def gap() -> float:
        x = model.backmap(ca, residues, torch.tensor([12131]), samples=1, seed=0)[0, 0]
        return float((x[o_186, 3] - x[cb_195, 4]).norm())

    assert gap() >= peptide_far.O_CB_MIN
    monkeypatch.setattr(peptide_far, "O_CB_FLAG", 0.0)
    monkeypatch.setattr(peptide_far, "O_CB_MIN", 0.0)
    assert gap() < 1.5
