"""The learned model shipped in the package (ldb_hpc/weights/ldb-default), used when --model is not given."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ldb_hpc.chem import residues as rc
from ldb_hpc.io.cg import CGTrajectory
from ldb_hpc.model.api import LDBBackmapper, default_model_path, load_model


@pytest.fixture(scope="module")
def frames(repo_root):
    with CGTrajectory(str(repo_root / "examples" / "example.cg.h5")) as cg:
        return cg.residues, torch.from_numpy(cg.read(0, 6).ca)


def test_default_is_the_shipped_ldb_model():
    path = default_model_path()
    assert path is not None and (path / "weights.safetensors").stat().st_size < 8 * 2 ** 20
    model = load_model(None)
    assert isinstance(model, LDBBackmapper) and model.name == "ldb-default"
    assert model.hash == json.loads((path / "config.json").read_text())["hash"]


def test_seeded_samples_are_reproducible_and_distinct(frames):
    residues, ca = frames
    model = load_model(None)
    idx = torch.arange(6)
    a = model.backmap(ca, residues, idx, samples=3, seed=11)
    b = model.backmap(ca, residues, idx, samples=3, seed=11)
    c = model.backmap(ca, residues, idx, samples=3, seed=12)
    assert torch.equal(a, b)  # bitwise identical for the same seed
    assert not torch.equal(a, c)
    assert (a[:, 0] - a[:, 1]).abs().max() > 0.1  # ensemble members differ (temperature 1)
    # The batch does not matter: frames 2..3 alone give the same numbers.
    torch.testing.assert_close(model.backmap(ca[2:4], residues, idx[2:4], samples=3, seed=11), a[2:4],
                               rtol=0, atol=1e-4)
    exists = torch.as_tensor(rc.SLOT_MASK)[torch.as_tensor(residues.restype)]
    assert bool(((a.abs().sum(-1) > 0) == exists).all()) and torch.isfinite(a).all()
    # One sample defaults to temperature 0: the deterministic "most likely" structure, whatever the seed.
    torch.testing.assert_close(model.backmap(ca, residues, idx, samples=1, seed=1),
                               model.backmap(ca, residues, idx, samples=1, seed=2), rtol=0, atol=0)


@pytest.mark.data
def test_casp12_accuracy_regression(shared_data):
    """Where the shipped model stood when it was trained (docs/MODEL.md): mean heavy-atom RMSD 1.39 Å, χ1 68 %,
    bond outliers < 0.5 % on the CASP12 CA traces with the default settings."""
    from ldb_hpc.geometry import metrics
    from ldb_hpc.io.structure import read_structure

    model = load_model(None)
    rmsd, outliers = [], []
    for path in sorted((shared_data / "test" / "casp12").glob("*.pdb")):
        prot = read_structure(str(path))[0]
        res = prot.residues
        x = model.backmap(torch.from_numpy(prot.positions[:, 1])[None], res, torch.zeros(1, dtype=torch.long))[:, 0]
        m = prot.mask & rc.SLOT_MASK[res.restype]
        rmsd.append(float(np.sqrt((((x[0].numpy() - prot.positions) ** 2).sum(-1)[m]).mean())))
        topo = metrics.build_topology(res.restype, res.segment, rc.SLOT_MASK[res.restype],
                                      *_ideal_bonds())
        outliers.append(float(metrics.bond_outliers(x.numpy(), topo)[0]))
    assert np.mean(rmsd) < 1.45
    assert np.mean(outliers) < 0.005


def _ideal_bonds():
    from ldb_hpc.chem.ideal import ideal_geometry

    g = ideal_geometry()
    return g.bond_length, g.peptide_bond
