"""scripts/md_error_analysis.py on hand-made frames whose split of the error is known."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest


@pytest.fixture(scope="module")
def mea(repo_root):
    spec = importlib.util.spec_from_file_location("md_error_analysis", repo_root / "scripts" / "md_error_analysis.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


NAMES = ("N", "CA", "C", "O", "CB", "CG")
ATOMS = {0: {k: j for j, k in enumerate(NAMES)}}


def _frames(F, rng, cg_jitter):
    base = np.array([[-0.5, 1.4, 0.0], [0, 0, 0], [1.5, 0, 0], [2.1, 1.0, 0.2], [-0.5, -0.8, 1.2], [-0.2, -2.2, 1.6]])
    x = np.repeat(base[None], F, 0)
    x[:, 5] += cg_jitter * rng.standard_normal((F, 3))
    return x


def test_bias_spreads_and_bounds(mea):
    rng = np.random.default_rng(0)
    F = 6
    ref = _frames(F, rng, 0.0)
    pred = ref.copy()
    pred[:, 5] += np.array([0.6, 0.0, 0.0])  # the same wrong CG in every frame: all bias, no spread
    out = mea.analyse(pred, ref, ATOMS, ATOMS)
    assert out["sample 0"] == pytest.approx(0.6 / np.sqrt(6))
    assert out["bias"] == pytest.approx(out["side chain"]) and out["reference spread"] == pytest.approx(0.0)
    assert out["prediction spread"] == pytest.approx(0.0, abs=1e-12)
    # A prediction that flips between two places, right in half of the frames: no single choice is better than
    # the right one, which the medoid over frames finds when it is the majority.
    flip = ref.copy()
    flip[::3, 5] += np.array([0.0, 2.0, 0.0])
    out = mea.analyse(flip, ref, ATOMS, ATOMS)
    assert out["prediction spread"] > 0 and out["medoid over frames"] == pytest.approx(0.0, abs=1e-9)
    assert out["residues"][0][0] == 0
    # Two samples per frame, the second one right: best of samples is exact, sample 0 is not.
    two = np.stack([pred, ref], 1).reshape(2 * F, 6, 3)
    out = mea.analyse(two, ref, ATOMS, ATOMS, samples=2)
    assert out["best of samples"] == pytest.approx(0.0) and out["sample 0"] > 0.2
    with pytest.raises(ValueError, match="predicted rows"):
        mea.analyse(two, ref, ATOMS, ATOMS, samples=3)
