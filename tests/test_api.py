"""The Python API (``ldb_hpc.backmap``): what the CLI writes, in memory, with the CLI's close-contact report."""

from __future__ import annotations

import dataclasses
import json
import warnings

import mdtraj as md
import numpy as np
import pytest
from conftest import REPO

import ldb_hpc
from ldb_hpc.api import CloseContactWarning
from ldb_hpc.errors import InputError

EXAMPLE = REPO / "examples" / "example.cg.h5"


@pytest.fixture(scope="module")
def example():
    return md.load(str(EXAMPLE))


def _close_contact_warnings(record):
    return [w.message for w in record if issubclass(w.category, CloseContactWarning)]


def test_api_rows_are_the_cli_rows(example, tmp_path, run_cli):
    """Frame-major rows (frame f, sample s → f·S + s) equal to what ``ldb-hpc backmap`` writes with the same seed,
    the same atoms in the same order, time copied per row; the default model leaves no close pair: no warning."""
    code, _, err = run_cli("backmap", EXAMPLE, "-o", tmp_path / "cli.h5", "--samples", 2, "--seed", 5,
                           "--threads", 1, "--no-progress")
    assert code == 0, err
    cli = md.load(str(tmp_path / "cli.h5"))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = ldb_hpc.backmap(example[:4], samples=2, seed=5)
    assert not _close_contact_warnings(record)
    assert got.n_frames == 8 and got.n_atoms == cli.n_atoms
    assert [(a.residue.name, a.name) for a in got.topology.atoms] == [(a.residue.name, a.name)
                                                                       for a in cli.topology.atoms]
    np.testing.assert_allclose(got.xyz, cli.xyz[:8], atol=1e-5)
    assert np.array_equal(got.time, np.repeat(example.time[:4], 2))
    assert not np.allclose(got.xyz[0], got.xyz[1])  # two samples of frame 0 differ


def test_api_names_rows_with_close_contacts(example, tmp_path, run_cli):
    """Rows keeping a pair < 1.2 Å are returned all the same and named in one CloseContactWarning: the same rows
    the CLI counts in its run summary (the ideal model leaves such pairs in the example)."""
    code, _, err = run_cli("backmap", EXAMPLE, "-o", tmp_path / "ideal.h5", "--model", "ideal", "--threads", 1,
                           "--no-progress")
    assert code == 0 and "warning:" in err
    summary = json.loads((tmp_path / "ideal.h5.summary.json").read_text())["close_contacts"]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = ldb_hpc.backmap(example, model="ideal")
    found = _close_contact_warnings(record)
    assert len(found) == 1 and got.n_frames == example.n_frames
    assert found[0].rows == summary["rows"] > 0
    assert [dataclasses.asdict(x) for x in found[0].named] == summary["named"]
    assert f"{summary['rows']} row(s)" in str(found[0]) and summary["named"][0]["closest"] in str(found[0])


def test_api_bad_input_is_an_input_error(example):
    with pytest.raises(InputError, match="samples must be at least 1"):
        ldb_hpc.backmap(example[:1], samples=0)
    no_ca = example[:1]
    no_ca.topology = no_ca.topology.copy()
    no_ca.topology.atom(3).name = "CB"  # residue 3 keeps a bead, but no CA
    with pytest.raises(InputError, match="every residue needs a CA atom"):
        ldb_hpc.backmap(no_ca)
    nan = example[:2]
    nan.xyz = nan.xyz.copy()
    nan.xyz[1, 7] = np.nan
    with pytest.raises(InputError, match="non-finite CA"):
        ldb_hpc.backmap(nan)


def test_api_hydrogens_are_the_cli_hydrogens(example, tmp_path, run_cli):
    """``ldb_hpc.backmap(traj, hydrogens=True)`` gives the atoms and coordinates of ``ldb-hpc backmap --hydrogens``
    with the same seed: OXT and every hydrogen in the same order, the heavy atoms those of a run without the flag."""
    code, _, err = run_cli("backmap", EXAMPLE, "-o", tmp_path / "h.h5", "--hydrogens", "--samples", 2, "--seed", 4,
                           "--no-progress")
    assert code == 0, err
    cli = md.load(str(tmp_path / "h.h5"))
    got = ldb_hpc.backmap(example, samples=2, seed=4, hydrogens=True)
    assert got.n_frames == cli.n_frames and got.n_atoms == cli.n_atoms
    assert [(a.residue.name, a.name) for a in got.topology.atoms] == [(a.residue.name, a.name)
                                                                       for a in cli.topology.atoms]
    assert sum(a.element.symbol == "H" for a in got.topology.atoms) > got.n_residues  # hydrogens are there
    assert {tuple(sorted((b[0].name, b[1].name))) for b in got.topology.bonds} >= {("C", "O"), ("CA", "HA")}
    np.testing.assert_allclose(got.xyz, cli.xyz, atol=1e-5)
    heavy = ldb_hpc.backmap(example, samples=2, seed=4)
    keep = [a.index for a in got.topology.atoms if a.element.symbol != "H" and a.name != "OXT"]
    assert np.array_equal(got.xyz[:, keep], heavy.xyz)
